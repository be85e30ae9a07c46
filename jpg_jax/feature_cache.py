"""Patch grids of a frozen visual extractor, computed once per split and read instead of the images.

Sec. 3.2 lets the visual extractor be any CNN; when it does not train in a stage (``model.frozen_extractor``:
a pretrained extractor held fixed in both stages; ``train.stage2_extractor='frozen'``: stage 1's extractor
held fixed in stage 2), its output for a case is a fixed function of the case's images, so the run computes
every split's grids (B, V, h, w, d_x) once (``JPG.extract`` in evaluation mode, on evaluation-time views:
no random crop or flip) and the stage trains, validates and tests on them with ``cached_features=True``
(the ResNet is skipped: the synthetic default's stage-2 step is several times faster; README, Performance).

A cache is a folder named by ``cache_key``: a digest of the extractor's parameters and statistics, of the
image options that made the views, and of the dataset, so a changed extractor, image size or dataset is
never read from a stale cache: it gets a new folder. ``load_or_compute`` reads a split's ``<split>.npy``
where it is complete and computes (and, on process 0, writes: to a temporary name, then renamed) it
otherwise. Every process gathers the whole split's grids (``evaluators.common.SplitPredictions``), so
every host can serve its share of any batch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import jax
import numpy as np
from absl import logging
from etils import epath

from jpg_jax import input_pipeline as ip
from jpg_jax.evaluators import common
from jpg_jax.models import jpg as jpg_lib

EXTRACTOR = "visual_extractor"


def _host_array(x) -> np.ndarray:
  """A replicated (possibly multi-host) array's value on this host."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    x = x.addressable_data(0)
  return np.asarray(x)


def cache_key(config, variables: dict) -> str:
  """A digest of what the grids depend on: the extractor's parameters and statistics (every leaf's path,
  dtype, shape and bytes), the extractor's architecture, the evaluation views' options and the dataset."""
  h = hashlib.sha256()
  d, m = config.dataset, config.model
  h.update(json.dumps({"dataset": d.name, "image_size": d.image_size, "depth": m.resnet_depth,
                       "width": m.resnet_width, "extractor_batch": m.extractor_batch,
                       "dtype": config.compute_dtype}, sort_keys=True).encode())
  for collection in ("params", "batch_stats"):
    tree = variables.get(collection, {}).get(EXTRACTOR, {})
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
      value = _host_array(leaf)
      h.update(f"{collection}{jax.tree_util.keystr(path)}{value.dtype}{value.shape}".encode())
      h.update(np.ascontiguousarray(value).tobytes())
  return h.hexdigest()[:24]


class GridSource:
  """A split's patch grids in place of its image source: ``source[i]`` is ``{"grids": (V, h, w, d_x)}``,
  which ``input_pipeline.case_views`` passes through unchanged."""

  def __init__(self, grids: np.ndarray):
    self.grids = grids

  def __len__(self) -> int:
    return len(self.grids)

  def __getitem__(self, index: int) -> dict:
    return {"grids": self.grids[int(index)]}


def compute(config, model: jpg_lib.JPG, variables: dict, data: ip.Data, split: str, mesh) -> np.ndarray:
  """The grids of every case of ``split`` (N, V, h, w, d_x), float32, in the split's order. ``model``
  takes images (not ``cached_features``); ``variables`` hold its extractor."""
  if model.cached_features:
    raise ValueError("compute() runs the extractor: pass the model that takes images.")
  extract = jax.jit(lambda v, batch: {"grids": model.apply(v, batch["images"], False,
                                                           method=jpg_lib.JPG.extract)})
  targets = ip.Targets(data.vocab, config.dataset.max_seq_length, config.model.label_steps)
  out = common.SplitPredictions(extract, config, data, split, targets, mesh)(variables)
  grids = np.empty_like(out["grids"])
  grids[out["index"]] = out["grids"]
  return grids.astype(np.float32)


def load_or_compute(config, model: jpg_lib.JPG, variables: dict, data: ip.Data, mesh,
                    directory) -> dict[str, np.ndarray]:
  """Every split's grids from ``directory/<cache_key>/<split>.npy``, computing the missing ones."""
  folder = epath.Path(directory) / cache_key(config, variables)
  out, read = {}, []
  for split in data.sources:
    path = folder / f"{split}.npy"
    if path.exists():
      grids = np.load(os.fspath(path), mmap_mode="r")
      if len(grids) == len(data.index[split]):
        out[split] = grids
        read.append(split)
        continue
      logging.warning("%s holds %d cases, the split %d: computing it again.", path, len(grids),
                      len(data.index[split]))
    out[split] = compute(config, model, variables, data, split, mesh)
    if jax.process_index() == 0:
      folder.mkdir(parents=True, exist_ok=True)
      tmp = folder / f".{split}.npy.tmp-{os.getpid()}"
      with tmp.open("wb") as f:
        np.save(f, out[split])
      tmp.rename(path)
      logging.debug("Patch grids of %s (%s) written to %s.", split, out[split].shape, path)
  computed = [s for s in out if s not in read]
  done = "; ".join(f"{verb} {', '.join(splits)}" for verb, splits in (("read", read), ("computed", computed))
                   if splits)
  logging.info("Patch grids of the frozen extractor: %s in %s.", done, folder)
  return out


def cached_data(data: ip.Data, grids: dict[str, np.ndarray]) -> ip.Data:
  """``data`` whose sources yield the grids instead of the images (the text index is the same)."""
  return dataclasses.replace(data, sources={s: GridSource(g) for s, g in grids.items()})


def dataset_cache_dir(config) -> epath.Path:
  """Where a frozen pretrained extractor's caches live, shared by the runs on a dataset: beside it."""
  return epath.Path(config.dataset.data_dir) / "jpg_jax_features" / config.dataset.name.replace("/", "_")

