"""jpg-jax's TFDS builders (importing this module registers them) and how configs open them."""

from __future__ import annotations

from jpg_jax.datasets.iu_xray import IuXray  # noqa: F401  (registers iu_xray)
from jpg_jax.datasets.mimic_cxr import MimicCxr  # noqa: F401  (registers mimic_cxr)
from jpg_jax.datasets.synthetic_cxr import SyntheticCxr  # noqa: F401  (registers synthetic_cxr)

import contextlib
import io
import time

import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from jpg_jax import errors


def _builder_class(name: str):
  family = name.split("/")[0].split(":")[0]
  try:
    return tfds.builder_cls(family)
  except Exception as e:   # TFDS raises DatasetNotFoundError (a subclass of several) for unknown names
    raise errors.UserError(f"Unknown dataset {name!r} (dataset.name): jpg-jax builds iu_xray/*, mimic_cxr/* and "
                           f"synthetic_cxr/* ({type(e).__name__}).") from None


def views(name: str) -> tuple[str, ...]:
  """The image features of one example of dataset ``name``, in the order the model reads them (its V):
  ``('frontal', 'lateral')`` for iu_xray and synthetic_cxr, ``('image',)`` for mimic_cxr."""
  return tuple(_builder_class(name).VIEWS)


def report_cleaning(name: str) -> str:
  """The R2Gen report cleaning of dataset ``name`` (``jpg_jax.text.clean_report``): 'iu_xray' or 'mimic_cxr'."""
  return _builder_class(name).REPORT_CLEANING


def get_builder(name: str, data_dir: str, **kwargs) -> tfds.core.DatasetBuilder:
  """``name`` like ``'iu_xray/r2gen'`` or ``'synthetic_cxr/templates'``."""
  return tfds.builder(name, data_dir=data_dir, file_format="array_record", **kwargs)


def prepare(name: str, data_dir: str, manual_dir: str | None = None, download: bool = False,
            **kwargs) -> tfds.core.DatasetBuilder:
  """Builds the dataset if needed (a no-op when it is already there) and returns its builder.

  ``download`` (``dataset.download``) lets the builders fetch sources missing from ``manual_dir`` from
  Open-i; without it, a dataset built from the manual dir whose manual dir is missing fails at once,
  naming it.
  """
  builder = get_builder(name, data_dir, allow_download=download, **kwargs)
  if (manual_dir and not download and not builder.is_prepared() and builder.needs_manual_dir()
      and not epath.Path(manual_dir).is_dir()):
    remedy = ("create it, point --config.dataset.manual_dir at it, or set --config.dataset.download=True"
              if getattr(builder, "DOWNLOADABLE", True) else
              "create it and put the files there, or point --config.dataset.manual_dir at it")
    raise errors.MissingFileError(
        f"The manual dir {manual_dir} (dataset.manual_dir) does not exist: {name} is built from the files "
        f"there (data/README.md); {remedy}.")
  if builder.is_prepared():
    return builder
  # One line before and after instead of TFDS's bars (one per split and per shuffle); --verbosity=1
  # keeps them.
  verbose = logging.get_verbosity() >= logging.DEBUG
  if not verbose:
    tfds.disable_progress_bar()
  logging.info("Building %s in %s (once; later runs read it) ...", name, data_dir)
  start = time.time()
  # TFDS also prints two lines of its own (where the dataset goes, that it is there).
  try:
    with contextlib.redirect_stdout(io.StringIO()) if not verbose else contextlib.nullcontext():
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None)
  finally:
    if not verbose:
      tfds.enable_progress_bar()
  logging.info("Built %s in %.0f s: %s.", name, time.time() - start,
               ", ".join(f"{split} {info.num_examples}" for split, info in builder.info.splits.items()))
  return builder
