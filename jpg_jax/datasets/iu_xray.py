"""TFDS builder for IU X-Ray (Demner-Fushman et al., 2016), as R2Gen and the JPG paper use it.

Builder configs:

* ``iu_xray/paper`` (the default config's): the split the paper describes (Sec. 4.1, Li et al.'s
  70/10/20): every report with FINDINGS and MeSH terms (``No Indexing`` counts as none) and at least two
  images, 70/10/20 by patient with a fixed seed (Li et al.'s own split is not public). 2,019 / 288 / 578
  reports; the paper's Table 1 gives 2,770 / 395 / 790, 70/10/20 of every report of the archive
  (``--mode=stats`` prints both).
* ``iu_xray/r2gen`` (``:r2gen_split``): R2Gen's split (``annotation.json``: 2,069 / 296 / 590 reports, two
  views each), the split R2Gen and CMN reported on.

Sources, looked for in this order:

1. the manual dir (``dataset.manual_dir`` / ``DownloadConfig(manual_dir=...)``), holding
   ``NLMCXR_reports.tgz`` (always needed: the MeSH terms come from the report XMLs) and the images as
   either Open-i's ``NLMCXR_png.tgz`` / an extracted ``NLMCXR_png/`` folder, or R2Gen's
   ``images/CXRxxxx_IM-xxxx/{0,1}.png``; ``iu_xray/r2gen`` also needs R2Gen's ``annotation.json`` there;
2. otherwise, only with ``dataset.download=True`` (the builder's ``allow_download``), Open-i's archives,
   fetched by the TFDS download manager. With downloading off, a missing manual dir or file fails at once,
   naming it.

``NLMCXR_png.tgz`` is extracted with Python's ``tarfile`` and its ``data`` filter (TFDS's extractor needs
TensorFlow), into ``<data_dir>/downloads/extracted/NLMCXR_png``; a member that would land outside that
folder (``../``, an absolute path, a link out) refuses the archive.

With Open-i's flat PNGs, view 0 (frontal) and view 1 (lateral) are the report's first and second
``parentImage`` in XML order, which is how R2Gen's ``0.png`` / ``1.png`` line up with them.

Bad input: reports without FINDINGS or MeSH are excluded and counted (``info.metadata['excluded']`` and the
log); a missing or undecodable image raises ``BadImageError`` naming the file and the report (images are
made 8-bit grey by ``common.to_grey8``'s rule: 16-bit and float images scaled by their range), unless the
config has ``skip_bad_images=True`` (``iu_xray/r2gen_skip_bad``, ``iu_xray/paper_skip_bad``), which skips that
report and counts it in ``info.metadata['skipped']``.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import tarfile

import tensorflow_datasets as tfds
from etils import epath

from jpg_jax import errors
from jpg_jax.datasets import common
from jpg_jax.datasets import openi

_MANUAL = f"""\
Put these in the manual dir (default: <data_dir>/downloads/manual/):
  * {openi.REPORTS_ARCHIVE}   (Open-i: {openi.REPORTS_URL})
  * the images, either {openi.IMAGES_ARCHIVE} (Open-i: {openi.IMAGES_URL}) or its extracted folder
    NLMCXR_png/, or R2Gen's folder layout images/CXRxxxx_IM-xxxx/0.png, 1.png
  * for iu_xray/r2gen: R2Gen's annotation.json (the iu_xray folder R2Gen's README points to)
"""


@dataclasses.dataclass
class IuXrayConfig(tfds.core.BuilderConfig):
  split_source: str = "r2gen"          # 'r2gen' | 'paper'
  skip_bad_images: bool = False
  split_seed: int = 0                   # 'paper' only


def _configs():
  out = []
  for source, desc in (("r2gen", "R2Gen's split (annotation.json)"),
                       ("paper", "every report with FINDINGS and MeSH, 70/10/20 by patient")):
    out.append(IuXrayConfig(name=source, description=desc, split_source=source))
    out.append(IuXrayConfig(name=f"{source}_skip_bad", description=desc + "; bad images skipped",
                            split_source=source, skip_bad_images=True))
  return out


class IuXray(tfds.core.GeneratorBasedBuilder):
  """IU X-Ray: two views, FINDINGS, IMPRESSION, INDICATION and MeSH major terms per report."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  VIEWS = common.VIEWS
  REPORT_CLEANING = "iu_xray"
  BUILDER_CONFIGS = _configs()
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL

  def __init__(self, *, allow_download: bool = True, **kwargs):
    self._allow_download = allow_download
    super().__init__(**kwargs)

  def needs_manual_dir(self) -> bool:
    return True

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__, features=common.report_features(),
        homepage="https://openi.nlm.nih.gov/", metadata=tfds.core.MetadataDict(),
        citation="Demner-Fushman et al., Preparing a collection of radiology examinations for "
                 "distribution and retrieval, JAMIA 2016.")

  # ---------------------------------------------------------------------------------------- sources
  def _manual_files(self, dl_manager) -> epath.Path | None:
    manual = getattr(dl_manager, "_manual_dir", None)
    if manual is None:
      return None
    manual = epath.Path(manual)
    if not manual.exists():
      if self._allow_download:
        return None
      raise errors.MissingFileError(
          f"The manual dir {manual} (dataset.manual_dir) does not exist: "
          f"{self.name}/{self.builder_config.name} is built from Open-i's {openi.REPORTS_ARCHIVE} and the "
          f"images there (data/README.md); create it, point --config.dataset.manual_dir at it, or set "
          f"--config.dataset.download=True.")
    return manual

  def _fetch(self, dl_manager, manual, url: str, what: str, extract: bool) -> epath.Path:
    if not self._allow_download:
      raise errors.MissingFileError(
          f"{what} is not in the manual dir {manual} and downloading is off: put Open-i's {what} there "
          f"(data/README.md) or set --config.dataset.download=True.")
    try:
      return epath.Path(dl_manager.download_and_extract(url) if extract else dl_manager.download(url))
    except Exception as e:
      raise errors.MissingFileError(f"{what} is not in the manual dir {manual} and could not be downloaded "
                                    f"from {url} ({e}).") from e

  def _split_generators(self, dl_manager):
    cfg = self.builder_config
    manual = self._manual_files(dl_manager)
    has = lambda name: manual is not None and (manual / name).exists()

    reports_path = (manual / openi.REPORTS_ARCHIVE if has(openi.REPORTS_ARCHIVE) else
                    self._fetch(dl_manager, manual, openi.REPORTS_URL, openi.REPORTS_ARCHIVE, extract=False))
    reports = openi.read_reports_archive(reports_path)

    if has("images"):
      images = _R2GenImages(manual / "images")
    elif has("NLMCXR_png"):
      images = _OpeniImages(manual / "NLMCXR_png")
    elif has(openi.IMAGES_ARCHIVE):
      images = _OpeniImages(extract_archive(manual / openi.IMAGES_ARCHIVE,
                                            epath.Path(dl_manager.download_dir) / "extracted" / "NLMCXR_png"))
    else:
      images = _OpeniImages(self._fetch(dl_manager, manual, openi.IMAGES_URL, openi.IMAGES_ARCHIVE,
                                        extract=True))

    splits, excluded = make_splits(cfg, reports, manual)

    self._skipped = collections.Counter()
    self.info.metadata["excluded"] = dict(excluded)
    self.info.metadata["skipped"] = self._skipped  # Filled while the examples are written.
    logging.info("iu_xray/%s: %s; excluded %s", cfg.name,
                 {k: len(v) for k, v in splits.items()}, dict(excluded))
    return {name: self._generate_examples(items, images) for name, items in splits.items() if items}

  def _generate_examples(self, items, images):
    for example_id, report in items:
      try:
        views = images.views(example_id, report)
        pngs = [common.read_grayscale_png(p, example_id) for p in views]
      except common.BadImageError as e:
        if not self.builder_config.skip_bad_images:
          raise
        logging.warning("Skipping report %s: %s", example_id, e)
        self._skipped["bad_image"] += 1
        continue
      yield example_id, {
          "id": example_id, "patient_id": report.uid,
          "frontal": pngs[0], "lateral": pngs[1],
          "findings": report.findings, "impression": report.impression,
          "indication": report.indication, "mesh": list(report.mesh_major),
      }


def extract_archive(archive: epath.Path, target: epath.Path) -> epath.Path:
  """``archive`` (a tar, possibly gzipped) extracted into ``target`` with ``tarfile``'s ``data`` filter,
  once (a ``.complete`` marker); returns ``target``. Members that would land outside ``target``, links
  out of it and device files refuse the archive (``InputError`` naming it and the member)."""
  archive, target = epath.Path(archive), epath.Path(target)
  marker = target / ".complete"
  if marker.exists():
    return target
  if not hasattr(tarfile, "data_filter"):   # Python 3.10.12 / 3.11.4 and later
    raise errors.UserError(f"Extracting {archive} safely needs tarfile's data filter (Python >= 3.10.12 or "
                           f">= 3.11.4); extract it yourself into {archive.parent / 'NLMCXR_png'}.")
  partial = target.parent / (target.name + ".partial")
  partial.rmtree(missing_ok=True)
  partial.mkdir(parents=True)
  logging.info("Extracting %s into %s.", archive, target)
  try:
    with tarfile.open(archive, mode="r:*") as tar:
      tar.extractall(partial, filter="data")
  except tarfile.FilterError as e:
    partial.rmtree()
    raise errors.InputError(f"{archive} is refused: its member {e.tarinfo.name!r} is unsafe to extract "
                            f"into {target} ({type(e).__name__}: {e}).") from None
  except (tarfile.TarError, EOFError, OSError) as e:
    partial.rmtree()
    raise errors.InputError(f"{archive} cannot be extracted ({type(e).__name__}: {e}); download it "
                            f"again.") from None
  target.rmtree(missing_ok=True)   # an extraction cut short before its marker
  partial.rename(target)
  marker.write_text(str(archive))
  return target


def find_annotation(manual: epath.Path | None) -> epath.Path:
  """R2Gen's annotation.json (also accepted under the name r2gen_annotation.json)."""
  for name in ("annotation.json", "r2gen_annotation.json"):
    if manual is not None and (manual / name).exists():
      return manual / name
  raise errors.MissingFileError(f"iu_xray/r2gen needs R2Gen's annotation.json in the manual dir {manual} "
                                f"(the iu_xray folder R2Gen's README points to; data/README.md).")


def make_splits(cfg: IuXrayConfig, reports: dict[str, openi.Report], manual: epath.Path | None):
  """{split: [(example id, Report)]} and the exclusion counts, for either split source."""
  if cfg.split_source == "r2gen":
    path = find_annotation(manual)
    return r2gen_splits(common.read_r2gen_annotation(path), reports, path)
  if cfg.split_source == "paper":
    return paper_splits(reports, cfg.split_seed)
  raise ValueError(f"Unknown split_source {cfg.split_source!r}.")


def splits_from_sources(config_name: str, manual_dir) -> tuple[dict, collections.Counter]:
  """The splits straight from the report archive (and annotation) in ``manual_dir``, without images.

  ``--mode=stats`` uses this to print Table 1 before (or without) building the image dataset.
  """
  manual = epath.Path(manual_dir)
  cfg = next(c for c in IuXray.BUILDER_CONFIGS if c.name == config_name)
  if not (manual / openi.REPORTS_ARCHIVE).exists():
    raise errors.MissingFileError(f"{manual / openi.REPORTS_ARCHIVE} is missing: put Open-i's "
                                  f"{openi.REPORTS_ARCHIVE} in the manual dir (data/README.md).")
  return make_splits(cfg, openi.read_reports_archive(manual / openi.REPORTS_ARCHIVE), manual)


class _R2GenImages:
  """R2Gen's layout: images/<CXRuid_IM-xxxx>/0.png (frontal) and 1.png (lateral)."""

  def __init__(self, root: epath.Path):
    self.root = root

  def views(self, example_id, report):
    return [self.root / example_id / "0.png", self.root / example_id / "1.png"]


class _OpeniImages:
  """Open-i's flat folder of <parentImage id>.png files (possibly one folder down after extraction)."""

  def __init__(self, root: epath.Path):
    subdirs = [p for p in root.iterdir() if p.is_dir()] if root.exists() else []
    self.root = subdirs[0] if len(subdirs) == 1 and not any(root.glob("*.png")) else root

  def views(self, example_id, report):
    if len(report.image_ids) < 2:
      raise common.BadImageError(f"Report {example_id} has {len(report.image_ids)} image(s), needs two.")
    return [self.root / f"{i}.png" for i in report.image_ids[:2]]


def r2gen_splits(annotation: dict, reports: dict[str, openi.Report], path="annotation.json"):
  """R2Gen's split, keyed by R2Gen's ids; reports missing from the archive or unusable are counted.
  An annotation without a split, or with an entry without an IU X-Ray ``id``, raises ``InputError``
  naming ``path``, the split and the entry."""
  splits, excluded = {}, collections.Counter()
  for split in ("train", "val", "test"):
    if not isinstance(annotation, dict) or not isinstance(annotation.get(split), list):
      raise errors.InputError(f"{path} has no {split!r} list of entries: is it R2Gen's annotation.json?")
    items = []
    for k, entry in enumerate(annotation[split]):
      try:
        uid = openi.uid_from_r2gen_id(entry["id"])
      except (KeyError, TypeError, ValueError) as e:
        raise errors.InputError(f"{path}: entry {k} of {split!r} has no IU X-Ray 'id' like "
                                f"'CXR2384_IM-0942' ({type(e).__name__}: {e}).") from None
      report = reports.get(uid)
      reason = "no_xml" if report is None else openi.exclusion_reason(report)
      if reason:
        excluded[reason] += 1
      else:
        items.append((entry["id"], report))
    splits[split] = items
  return splits, excluded


def paper_splits(reports: dict[str, openi.Report], seed: int):
  """Sec. 4.1: reports with FINDINGS and MeSH (and two images), 70/10/20 by patient."""
  kept, excluded = openi.select_reports(reports.values(), exclude_no_indexing=True, min_images=2)
  by_uid = {r.uid: r for r in kept}
  ids = openi.split_by_patient(list(by_uid), seed=seed)
  # The example id is R2Gen's form of the id: the first image id without its view suffix.
  return ({s: [(by_uid[u].image_ids[0].rsplit("-", 1)[0], by_uid[u]) for u in uids]
           for s, uids in ids.items()}, excluded)
