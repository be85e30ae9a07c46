"""TFDS builder for MIMIC-CXR (Johnson et al., 2019) in R2Gen's layout, one image per example as R2Gen reads it.

MIMIC-CXR is credentialed: its images and reports come from PhysioNet under the PhysioNet Credentialed
Health Data License 1.5.0 (a signed data use agreement and CITI training), which forbids redistribution,
so nothing here downloads it. R2Gen's preprocessed copy (the ``mimic_cxr`` folder R2Gen's README points to,
given to credentialed users) is what the builder reads from the manual dir (``dataset.manual_dir``):

  annotation.json       {"train" | "val" | "test": [{"id", "study_id", "subject_id", "report",
                                                    "image_path": ["p10/p10000032/s5.../<dicom>.jpg", ...],
                                                    "split"}, ...]}
  images/<image_path>   the JPEGs of MIMIC-CXR-JPG

As R2Gen (``MimiccxrSingleImageDataset``): an example is an annotation entry, its one view is the entry's
``image_path[0]`` (the feature ``image``; R2Gen's entries are single images, so a study can give several
examples), its text is ``report`` (the FINDINGS section R2Gen extracted), cleaned at read time by R2Gen's
``clean_report_mimic_cxr`` (``jpg_jax.text``), and its patient is ``subject_id``. The split is R2Gen's.

Labels. MIMIC-CXR has no MeSH annotation, and JPG's labels (Sec. 3.4) are built from each report's terms.
The builder writes, in the ``mesh`` feature, the CheXpert observations that ``jpg_jax.findings`` reads as
POSITIVE in the report, as one-part terms (``Pleural Effusion``), with "No Finding" written ``normal``
(the term of IU X-Ray's normal cases, which stage 1 and mining treat specially). Uncertain and negative
mentions are not terms (CheXpert's "U-Zeros" reading). The labeler reads the report as written, whose
``,`` and ``;`` end its negation scopes; the CheXpert CE scores of a run read the cleaned reports (the
model writes cleaned text, and R2GenCMN's ``compute_ce.py`` labels what the model and the references
decode to), where those marks are gone, so a report's terms and its CE reference can differ on a few
reports ("no pneumothorax; small left pleural effusion"). Stage 1's simple patterns are then the reports with
one observation; the mined labels are sequences of observations. ``info.metadata['labeler']`` records the
labeler that wrote them (``chexpert.LABELER_VERSION``): a dataset built by an older labeler is rebuilt by
deleting its folder.

Builder configs:

* ``r2gen``: R2Gen's split; each image reduced at build time so that its longer side is at most
  ``max_side`` = 512 (JPEG draft decoding, then bilinear), which keeps the shorter side above the 256 that
  training resizes to for the radiographs' aspect ratios and stores about 3% of a 2,500 x 3,000
  radiograph's pixels (the built size on MIMIC-CXR is not measured here). The difference from R2Gen's pixels: the image reaches 256 or 224 through JPEG's DCT scaling and
  PIL's ``thumbnail`` (a box reduction, then bilinear) to 512 first, where R2Gen resizes it once.
* ``r2gen_full``: the images at their own size (``max_side`` = 0), R2Gen's pixels exactly.
* ``r2gen_skip_bad``: as ``r2gen``, but a missing or undecodable image skips its example (counted in
  ``info.metadata['skipped']``) instead of stopping the build with ``BadImageError`` naming the file.

An entry without ``image_path`` or ``report`` raises ``InputError`` naming the annotation, split and entry.
Every other entry is an example, as in R2Gen, whose splits this keeps to the entry: one with an empty report
too (its cleaned report is ``' .'``; it is counted in ``info.metadata['empty_reports']``).
"""

from __future__ import annotations

import collections
import dataclasses
import logging

import tensorflow_datasets as tfds
from etils import epath

from jpg_jax import chexpert
from jpg_jax import errors
from jpg_jax.datasets import common

VIEWS = ("image",)
SPLITS = ("train", "val", "test")

_MANUAL = """\
MIMIC-CXR is credentialed (PhysioNet Credentialed Health Data License 1.5.0: no redistribution). Put R2Gen's
preprocessed mimic_cxr folder in the manual dir (default: data/mimic_cxr):
  * annotation.json (R2Gen's split: train / val / test entries with id, subject_id, report, image_path)
  * images/p1x/p1xxxxxxx/sxxxxxxxx/<dicom id>.jpg (MIMIC-CXR-JPG's files under the entries' image_path)
See data/README.md.
"""


@dataclasses.dataclass
class MimicCxrConfig(tfds.core.BuilderConfig):
  max_side: int = 512            # longer side of the stored images at most this (0: as they are)
  skip_bad_images: bool = False


class MimicCxr(tfds.core.GeneratorBasedBuilder):
  """MIMIC-CXR: one image, the FINDINGS and the positive CheXpert observations per example (R2Gen's split)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [
      MimicCxrConfig(name="r2gen", description="R2Gen's split, images at most 512 px on their longer side"),
      MimicCxrConfig(name="r2gen_full", description="R2Gen's split, images at their own size", max_side=0),
      MimicCxrConfig(name="r2gen_skip_bad", description="as r2gen; bad images skipped", skip_bad_images=True),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL
  VIEWS = VIEWS
  REPORT_CLEANING = "mimic_cxr"
  DOWNLOADABLE = False   # credentialed: dataset.download cannot fetch it

  def __init__(self, *, allow_download: bool = False, **kwargs):
    del allow_download   # credentialed: never downloaded
    super().__init__(**kwargs)

  def needs_manual_dir(self) -> bool:
    return True

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__, features=common.report_features(VIEWS),
        homepage="https://physionet.org/content/mimic-cxr-jpg/", metadata=tfds.core.MetadataDict(),
        citation="Johnson et al., MIMIC-CXR, a de-identified publicly available database of chest "
                 "radiographs with free-text reports, Scientific Data 2019.")

  def _split_generators(self, dl_manager):
    manual = getattr(dl_manager, "_manual_dir", None)
    manual = epath.Path(manual) if manual is not None else None
    if manual is None or not manual.is_dir():
      raise errors.MissingFileError(f"The manual dir {manual} (dataset.manual_dir) does not exist: "
                                    f"mimic_cxr is built from R2Gen's files there.\n{_MANUAL}")
    annotation = read_annotation(manual / "annotation.json")
    splits, empty = entries_by_split(annotation, manual / "annotation.json")
    self._skipped = collections.Counter()
    self.info.metadata.update(empty_reports=dict(empty), skipped=self._skipped,
                              labeler=chexpert.LABELER_VERSION)
    logging.info("mimic_cxr/%s: %s; empty reports (kept, as R2Gen) %s", self.builder_config.name,
                 {k: len(v) for k, v in splits.items()}, dict(empty))
    return {s: self._generate_examples(items, manual / "images") for s, items in splits.items() if items}

  def _generate_examples(self, items, images: epath.Path):
    cfg = self.builder_config
    for entry in items:
      example_id = str(entry["id"])
      try:
        png = common.read_grayscale_png(images / entry["image_path"][0], example_id, cfg.max_side or None)
      except common.BadImageError as e:
        if not cfg.skip_bad_images:
          raise
        logging.warning("Skipping example %s: %s", example_id, e)
        self._skipped["bad_image"] += 1
        continue
      yield example_id, {
          "id": example_id, "patient_id": str(entry.get("subject_id", "")), "image": png,
          "findings": entry["report"], "impression": "", "indication": "",
          "mesh": list(report_terms(entry["report"])),
      }


def report_terms(report: str) -> tuple[str, ...]:
  """The report's positive CheXpert observations as terms, ``normal`` for No Finding (module docstring)."""
  found = chexpert.positives(report)
  return tuple("normal" if o == "No Finding" else o for o in chexpert.OBSERVATIONS if o in found)


def read_annotation(path: epath.Path) -> dict:
  if not path.exists():
    raise errors.MissingFileError(f"{path} is missing: mimic_cxr needs R2Gen's annotation.json in the manual "
                                  f"dir.\n{_MANUAL}")
  return common.read_r2gen_annotation(path)


def entries_by_split(annotation, path="annotation.json") -> tuple[dict[str, list[dict]], collections.Counter]:
  """R2Gen's entries per split, checked, and the number of empty reports per split (kept, as R2Gen does)."""
  splits, empty = {}, collections.Counter()
  for split in SPLITS:
    if not isinstance(annotation, dict) or not isinstance(annotation.get(split), list):
      raise errors.InputError(f"{path} has no {split!r} list of entries: is it R2Gen's MIMIC-CXR annotation.json?")
    kept = []
    for k, entry in enumerate(annotation[split]):
      ok = (isinstance(entry, dict) and "id" in entry and isinstance(entry.get("report"), str)
            and isinstance(entry.get("image_path"), list) and entry["image_path"])
      if not ok:
        raise errors.InputError(f"{path}: entry {k} of {split!r} needs an 'id', a 'report' and a non-empty "
                                f"'image_path' list, as R2Gen's MIMIC-CXR annotation has: {str(entry)[:200]}")
      if not entry["report"].strip():
        empty[split] += 1
      kept.append(entry)
    splits[split] = kept
  return splits, empty
