"""Learnability probe (issue G2): can the config's extractor learn the findings from these images at all?

The command is ``python -m jpg_jax.tools.probe --config=configs/jpg.py:synthetic [--steps=264]``.

Trains only the visual extractor (the config's ResNet, from its init or ``resnet_checkpoint``) and a
linear multi-label classifier of the 12 synthetic finding kinds (each view's grid average-pooled, the
maximum over the two views) with Adam on the train split, the images as training reads them (random
crops where the config has them), and prints the test AUC of every kind. High AUCs after a budget in
which JPG's stage 1 tells no pattern apart say that JPG's training loses the signal, not that the images
are too hard for the budget. A case's true kinds come from its MeSH terms (``synthetic_findings``), so the
probe runs on the synthetic datasets (``templates``, ``tiny``, ``iu_reports``).
"""

from __future__ import annotations

import functools
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jpg_jax import input_pipeline as ip
from jpg_jax import parallel
from jpg_jax import train as train_lib
from jpg_jax.datasets import synthetic_findings as sf
from jpg_jax.models import resnet

KINDS = tuple(sorted(sf.KINDS))


class FindingProbe(nn.Module):
  """(B, V, H, W, 3) -> (B, 12) finding-kind logits: the shared extractor per view (as JPG runs it),
  global average pool, maximum over views, one dense layer."""
  depth: int
  width: int = 64

  @nn.compact
  def __call__(self, images, train: bool = False):
    extractor = resnet.ResNet(self.depth, width=self.width, name="visual_extractor")
    pooled = jnp.stack([extractor(images[:, v], train).mean(axis=(1, 2)) for v in range(images.shape[1])], 1)
    return nn.Dense(len(KINDS), name="classifier")(pooled.max(axis=1))


def kind_targets(mesh_terms) -> np.ndarray:
  """Multi-hot over ``KINDS`` of a case's MeSH terms."""
  kinds = {f.kind for f in sf.findings_from_terms(mesh_terms)}
  return np.array([k in kinds for k in KINDS], np.float32)


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
  """Area under the ROC curve (the rank statistic, ties averaged); nan where one class is absent."""
  labels = labels.astype(bool)
  positives, negatives = labels.sum(), (~labels).sum()
  if not positives or not negatives:
    return float("nan")
  order = np.argsort(scores, kind="mergesort")
  ranks = np.empty(len(scores))
  sorted_scores = scores[order]
  i = 0
  while i < len(scores):   # average ranks over ties
    j = i
    while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
      j += 1
    ranks[order[i:j + 1]] = (i + j) / 2 + 1
    i = j + 1
  return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def run(config, steps: int, eval_every: int, batch_size: int, learning_rate: float, log=print) -> list[dict]:
  """Trains the probe; returns the test evaluations: ``{"step", "mean_auc", "auc": {kind: AUC}}``."""
  data = ip.load_data(config)
  train_index, test_index = data.index["train"], data.index["test"]
  y_train = np.stack([kind_targets(m) for m in train_index.mesh])
  y_test = np.stack([kind_targets(m) for m in test_index.mesh])
  model = FindingProbe(config.model.resnet_depth, config.model.resnet_width)
  size = config.dataset.image_size
  variables = model.init(jax.random.key(config.seed), jnp.zeros((1, ip.num_views(config), size, size, 3)))
  variables = train_lib.with_pretrained_extractor(dict(variables), config, parallel.make_mesh())
  params, batch_stats = variables["params"], variables["batch_stats"]
  optimizer = optax.adam(learning_rate)
  opt_state = optimizer.init(params)

  @jax.jit
  def train_step(params, batch_stats, opt_state, images, targets):
    def loss_fn(p):
      logits, updates = model.apply({"params": p, "batch_stats": batch_stats}, images, True,
                                    mutable=["batch_stats"])
      return optax.sigmoid_binary_cross_entropy(logits, targets).mean(), updates["batch_stats"]
    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_stats, opt_state, loss

  predict = jax.jit(functools.partial(model.apply, train=False))

  def evaluate(step: int) -> dict:
    scores = []
    for start in range(0, len(test_index), config.train.eval_batch_size):
      idx = np.arange(start, min(start + config.train.eval_batch_size, len(test_index)))
      scores.append(np.asarray(predict({"params": params, "batch_stats": batch_stats},
                                       ip.case_images(data.sources["test"], idx, config))))
    scores = np.concatenate(scores)
    per_kind = {k: auc(scores[:, j], y_test[:, j]) for j, k in enumerate(KINDS)}
    mean = float(np.nanmean(list(per_kind.values())))
    log(f"step {step}: mean test AUC {mean:.3f}; " + ", ".join(f"{k} {v:.3f}" for k, v in per_kind.items()))
    return {"step": step, "mean_auc": mean, "auc": per_kind}

  rng = np.random.default_rng(config.seed)
  evaluations, start = [], time.time()
  for step in range(1, steps + 1):
    idx = rng.choice(len(train_index), batch_size, replace=False)
    params, batch_stats, opt_state, loss = train_step(
        params, batch_stats, opt_state, ip.case_images(data.sources["train"], idx, config, rng), y_train[idx])
    if step % eval_every == 0 or step == steps:
      log(f"step {step}: train loss {float(loss):.4f} ({time.time() - start:.0f} s)")
      evaluations.append(evaluate(step))
  return evaluations
