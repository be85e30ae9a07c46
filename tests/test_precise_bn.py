"""Precise BatchNorm (jpg_jax/precise_bn.py): re-estimated statistics make evaluation normalise as training
does, and a run validates and checkpoints with them."""

import jax
import numpy as np
import pytest

from configs import jpg
from jpg_jax import input_pipeline as ip
from jpg_jax import mining
from jpg_jax import parallel
from jpg_jax import precise_bn
from jpg_jax import steps
from jpg_jax.models import jpg as jpg_lib


def test_sample_is_fixed_whole_batches():
  a = precise_bn.sample(range(100), 3, 8, seed=1)
  assert a == precise_bn.sample(range(100), 3, 8, seed=1) and len(a) == 24 == len(set(a))
  assert len(precise_bn.sample(range(10), 3, 8, seed=1)) == 24   # with replacement where too few


def test_statistics_of_the_current_weights_replace_stale_ones(tiny_synthetic):
  """Running statistics far off (as after fast weight changes): evaluation-mode grids differ from the
  training-mode grids of the same cases; after precise BN they agree."""
  data_dir, _ = tiny_synthetic
  config = jpg.get_config("smoke")
  config.unlock()
  config.dataset.data_dir = data_dir
  config.model.extractor_batch = "joint"   # one set of statistics for both views, as evaluation has
  config.train.precise_bn_batches = 60
  config.lock()
  data = ip.load_data(config)
  model = steps.create_model(config, data.vocab, None, stage=2)
  variables = jax.jit(lambda k: steps.init_variables(model, config, k))(jax.random.key(0))
  stale = dict(variables, batch_stats=jax.tree_util.tree_map_with_path(
      lambda p, x: x * 4.0 + 1.0 if "var" in jax.tree_util.keystr(p) else x + 0.5, variables["batch_stats"]))
  state = {"params": variables["params"], "batch_stats": stale["batch_stats"]}
  mesh = parallel.make_mesh()
  targets = mining.targets(config, data.vocab)
  fixed = precise_bn.PreciseBN(config, model, data, targets, mesh, None, seed=0)(state)

  images = ip.case_images(data.sources["train"], np.arange(48), config)   # every training case, as one batch
  grids = lambda v, train: model.apply(v, images, train, method=jpg_lib.JPG.extract, mutable=["batch_stats"])[0]
  batch_mode = grids(variables, True)
  error = lambda v: float(np.abs(grids(v, False) - batch_mode).mean() / np.abs(batch_mode).mean())
  # Here (random weights, batches of 8 cases against one of 48): 1.0 stale, 0.19 re-estimated, 1.17 at init.
  assert error(stale) > 0.5
  assert error({"params": variables["params"], "batch_stats": fixed["batch_stats"]}) < 0.25 * error(stale)
  assert jax.tree.structure(fixed) == jax.tree.structure(state)
