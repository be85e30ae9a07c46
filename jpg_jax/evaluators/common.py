"""Running a jitted prediction function over every example of a split, data parallel on all hosts."""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils

from jpg_jax import input_pipeline as ip
from jpg_jax import parallel


def gather(x) -> np.ndarray:
  """A global array as one host numpy array (all processes take part)."""
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


class SplitPredictions:
  """``predict(variables, batch) -> dict`` (jitted by the caller, once) over one split.

  The split is read in order and padded to whole global batches (``ip.eval_dataset``), each host reading
  its share; ``__call__`` returns host arrays of the real examples only, with ``index`` (the position in
  the split) beside the outputs, so that every example is scored exactly once whatever the batch and
  device count.
  """

  def __init__(self, predict: Callable, config, data: ip.Data, split: str, targets: ip.Targets, mesh):
    self.predict, self.split, self.mesh = predict, split, mesh
    self.index = data.index[split]
    self.targets, self._source = targets, data.sources[split]
    self._batch = config.train.eval_batch_size
    parallel.local_batch_size(self._batch, mesh, "train.eval_batch_size")   # divides, or a clear error
    self._image = ip.image_options(config, train=False)

  def batches(self):
    ds = ip.eval_dataset(self._source, self.index, self.targets, global_batch_size=self._batch,
                         image=self._image, process_index=jax.process_index(),
                         process_count=jax.process_count())
    for batch in ds:
      yield parallel.global_batch(batch, self.mesh)

  def __call__(self, variables) -> dict:
    outs, index, mask = [], [], []
    for batch in self.batches():
      outs.append({k: gather(v) for k, v in self.predict(variables, batch).items()})
      index.append(gather(batch["index"]))
      mask.append(gather(batch["mask"]))
    keep = np.concatenate(mask) > 0
    result = {k: np.concatenate([o[k] for o in outs])[keep] for k in outs[0]}
    result["index"] = np.concatenate(index)[keep]
    return result

