"""The learnability probe (jpg_jax/probe.py): its AUC, its targets, and a short run."""

import math

import numpy as np
import pytest

from configs import jpg
from jpg_jax import probe


def test_auc_is_the_share_of_correctly_ordered_pairs():
  rng = np.random.default_rng(0)
  scores = rng.integers(0, 5, 60).astype(float)   # many ties
  labels = rng.random(60) < 0.3
  pos, neg = scores[labels], scores[~labels]
  pairs = (pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean()
  assert probe.auc(scores, labels) == pytest.approx(pairs)
  assert probe.auc(np.arange(4.0), np.array([0, 0, 1, 1])) == 1.0
  assert math.isnan(probe.auc(np.arange(3.0), np.zeros(3)))


def test_kind_targets_from_mesh_terms():
  y = probe.kind_targets(["Cardiomegaly/mild", "Opacity/lung/base/left", "normal"])
  assert y.sum() == 2 and y[probe.KINDS.index("cardiomegaly")] == 1 and y[probe.KINDS.index("opacity")] == 1


def test_a_short_probe_run_reports_an_auc_per_kind(tiny_synthetic):
  config = jpg.get_config("smoke")
  config.unlock()
  config.dataset.data_dir = tiny_synthetic[0]
  config.lock()
  lines = []
  (evaluation,) = probe.run(config, steps=2, eval_every=2, batch_size=8, learning_rate=1e-3, log=lines.append)
  assert evaluation["step"] == 2 and set(evaluation["auc"]) == set(probe.KINDS)
  assert all(math.isnan(v) or 0 <= v <= 1 for v in evaluation["auc"].values())
  assert 0 <= evaluation["mean_auc"] <= 1 and any("mean test AUC" in l for l in lines)
