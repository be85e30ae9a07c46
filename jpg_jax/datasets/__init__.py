"""jpg-jax's TFDS builders (importing this module registers them) and how configs open them."""

from __future__ import annotations

from jpg_jax.datasets.iu_xray import IuXray  # noqa: F401  (registers iu_xray)
from jpg_jax.datasets.synthetic_cxr import SyntheticCxr  # noqa: F401  (registers synthetic_cxr)

import tensorflow_datasets as tfds


def get_builder(name: str, data_dir: str, **kwargs) -> tfds.core.DatasetBuilder:
  """``name`` like ``'iu_xray/r2gen'`` or ``'synthetic_cxr/templates'``."""
  return tfds.builder(name, data_dir=data_dir, file_format="array_record", **kwargs)


def prepare(name: str, data_dir: str, manual_dir: str | None = None, **kwargs) -> tfds.core.DatasetBuilder:
  """Builds the dataset if needed (a no-op when it is already there) and returns its builder."""
  builder = get_builder(name, data_dir, **kwargs)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None)
  return builder
