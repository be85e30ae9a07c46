"""TFDS builder ``synthetic_cxr``: the embedded default dataset, learnable and needing no download.

Two-view chest-radiograph-like images are rendered procedurally (``synthetic_render``), each finding drawn
where its MeSH-style term says (lobe, side, severity). Text sources, as builder configs:

* ``templates`` (default): findings sampled per case; FINDINGS composed from them in a radiologist's order
  with phrasing variety; MeSH terms written from the same findings (``normal`` for normal cases).
* ``iu_reports``: the real IU X-Ray reports and MeSH terms (``NLMCXR_reports.tgz`` in the manual dir, or
  downloaded); each report's images are rendered from its own terms, so real text is conditioned on
  visible findings. Split 70/10/20 by patient as ``iu_xray/paper``.

Everything is deterministic given ``seed``: case ``i`` of split ``s`` uses ``np.random.default_rng((seed,
s, i))``.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from jpg_jax import errors
from jpg_jax.datasets import common
from jpg_jax.datasets import openi
from jpg_jax.datasets import synthetic_findings as sf
from jpg_jax.datasets import synthetic_render

_SPLITS = ("train", "val", "test")


@dataclasses.dataclass
class SyntheticCxrConfig(tfds.core.BuilderConfig):
  text_source: str = "templates"   # 'templates' | 'iu_reports'
  num_train: int = 1000             # 'templates' only; iu_reports uses every usable report.
  num_val: int = 150
  num_test: int = 150
  image_size: int = 128
  seed: int = 0


class SyntheticCxr(tfds.core.GeneratorBasedBuilder):
  """Procedurally rendered chest radiographs with reports and MeSH terms."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  VIEWS = common.VIEWS
  REPORT_CLEANING = "iu_xray"
  BUILDER_CONFIGS = [
      SyntheticCxrConfig(name="templates", description="Template reports, no download."),
      SyntheticCxrConfig(name="iu_reports", description="Real IU X-Ray reports, rendered images.",
                         text_source="iu_reports"),
      SyntheticCxrConfig(name="tiny", description="A few cases for tests.", num_train=48, num_val=12,
                         num_test=12, image_size=64),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"iu_reports only: put {openi.REPORTS_ARCHIVE} in the manual dir."

  def __init__(self, *, allow_download: bool = True, **kwargs):
    self._allow_download = allow_download
    super().__init__(**kwargs)

  def needs_manual_dir(self) -> bool:
    return self.builder_config.text_source == "iu_reports"

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, description=__doc__, features=common.report_features(),
                                 metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    cfg = self.builder_config
    if cfg.text_source == "templates":
      sizes = (cfg.num_train, cfg.num_val, cfg.num_test)
      return {s: self._generate_examples(k, template_cases(cfg.seed, k, n))
              for k, (s, n) in enumerate(zip(_SPLITS, sizes))}
    if cfg.text_source != "iu_reports":
      raise ValueError(f"Unknown text_source {cfg.text_source!r}.")
    manual = epath.Path(getattr(dl_manager, "_manual_dir", None) or "/nonexistent")
    path = manual / openi.REPORTS_ARCHIVE
    if not path.exists():
      if not self._allow_download:
        raise errors.MissingFileError(
            f"synthetic_cxr/iu_reports needs {path}: put Open-i's {openi.REPORTS_ARCHIVE} in the manual dir "
            f"(dataset.manual_dir; data/README.md) or set --config.dataset.download=True.")
      try:
        path = epath.Path(dl_manager.download(openi.REPORTS_URL))
      except Exception as e:
        raise errors.MissingFileError(f"synthetic_cxr/iu_reports needs {openi.REPORTS_ARCHIVE} in the manual "
                                      f"dir {manual} or a download from {openi.REPORTS_URL} ({e}).") from e
    reports = openi.read_reports_archive(path)
    kept, excluded = openi.select_reports(reports.values(), exclude_no_indexing=True)
    self.info.metadata["excluded"] = dict(excluded)
    logging.info("synthetic_cxr/iu_reports: %d reports kept, excluded %s", len(kept), dict(excluded))
    by_uid = {r.uid: r for r in kept}
    splits = openi.split_by_patient(list(by_uid), seed=cfg.seed)
    return {s: self._generate_examples(k, report_cases([by_uid[u] for u in splits[s]]))
            for k, s in enumerate(_SPLITS)}

  def _generate_examples(self, split_index, cases):
    """Renders each case; ``cases`` yields (example_id, patient_id, findings, text, mesh, extra)."""
    cfg = self.builder_config
    for i, (example_id, patient_id, findings, text, mesh, extra) in enumerate(cases):
      rng = np.random.default_rng((cfg.seed, split_index, i))
      frontal, lateral = synthetic_render.render_case(findings, cfg.image_size, rng)
      yield example_id, {
          "id": example_id, "patient_id": patient_id,
          "frontal": common.encode_png(frontal), "lateral": common.encode_png(lateral),
          "findings": text, "mesh": list(mesh), "impression": extra.get("impression", ""),
          "indication": extra.get("indication", ""),
      }


def template_cases(seed: int, split_index: int, n: int):
  for i in range(n):
    rng = np.random.default_rng((seed, split_index, i, 1))
    findings = sf.sample_findings(rng)
    example_id = f"SYN{split_index}{i:06d}"
    yield (example_id, example_id, findings, sf.report_from_findings(findings, rng),
           [f.mesh_term for f in findings] or ["normal"], {})


def report_cases(reports):
  for r in reports:
    yield (f"SYN-CXR{r.uid}", r.uid, sf.findings_from_terms(r.mesh_major), r.findings, r.mesh_major,
           {"impression": r.impression, "indication": r.indication})
