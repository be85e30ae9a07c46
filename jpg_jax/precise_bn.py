"""BatchNorm statistics re-estimated for the current weights before each validation ("precise BN": Wu and
Johnson 2021, "Rethinking 'Batch' in BatchNorm", Sec. 3).

Evaluation normalises with running averages (momentum 0.9, torch's 0.1) of the statistics of past training
batches. While the weights change quickly those averages trail them: in the synthetic default's stage 1
(ResNet-18 from scratch, learning rate 5e-4) a checkpoint whose training label loss is 0.72 scores a label
NLL of 1.63 on the training cases themselves in evaluation mode, and 0.62 once its statistics are
re-estimated with its own weights (README, design notes). Validation then picks checkpoints by the lag of
their statistics as much as by their weights, and mining labels the training set with them.

``train.precise_bn_batches`` = K > 0: before each validation the stage runs K batches of its own training
cases (a fixed sample, evaluation-time views, no gradient) through every BatchNorm layer in training mode
(``JPG.batch_norm_layers``), so the running statistics become those of the current weights (the weight of
the old ones falls to 0.9^K, or 0.81^K where a layer runs twice a step, once per view), and the state,
checkpoint and validation carry them. Training goes on from them. 0 (the paper config: R2Gen's way) is off.
A frozen extractor's statistics stay as they are (its BatchNorm uses its running statistics).
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import numpy as np

from jpg_jax import input_pipeline as ip
from jpg_jax import parallel
from jpg_jax.models import jpg as jpg_lib


def forward(variables: dict, batch: dict, *, model: jpg_lib.JPG) -> dict:
  """The batch statistics after one training-mode pass of ``batch`` through the BatchNorm layers."""
  _, updates = model.apply(variables, batch["images"], method=jpg_lib.JPG.batch_norm_layers,
                           rngs={"dropout": jax.random.key(0)}, mutable=["batch_stats"])
  return updates["batch_stats"]


def sample(indices: Sequence[int], num_batches: int, global_batch: int, seed: int) -> list[int]:
  """A fixed sample of ``num_batches`` global batches of ``indices``, drawn without replacement where
  there are enough of them."""
  indices = np.asarray(list(indices), np.int64)
  size = num_batches * global_batch
  return np.random.default_rng(seed).choice(indices, size, replace=size > len(indices)).tolist()


class PreciseBN:
  """``state -> state`` whose batch statistics are re-estimated with its weights (module docstring)."""

  def __init__(self, config, model: jpg_lib.JPG, data: ip.Data, targets: ip.Targets, mesh,
               indices: Sequence[int] | None, seed: int):
    t = config.train
    train_index = data.index["train"]
    indices = range(len(train_index)) if indices is None else indices
    self._dataset = ip.eval_dataset(
        data.sources["train"], train_index, targets, global_batch_size=t.batch_size,
        image=ip.image_options(config, train=False), indices=sample(indices, t.precise_bn_batches, t.batch_size, seed),
        process_index=jax.process_index(), process_count=jax.process_count())
    replicated, sharded = parallel.replicated(mesh), parallel.data_sharded(mesh)
    self._forward = jax.jit(functools.partial(forward, model=model), in_shardings=(replicated, sharded),
                            out_shardings=replicated)
    self.mesh = mesh

  def __call__(self, state: dict) -> dict:
    stats = state["batch_stats"]
    for batch in self._dataset:
      stats = self._forward({"params": state["params"], "batch_stats": stats},
                            parallel.global_batch(batch, self.mesh))
    return dict(state, batch_stats=stats)
