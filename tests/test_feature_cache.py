"""Cached patch grids of a frozen extractor (jpg_jax/feature_cache.py): keyed by what they depend on, never
read stale, and a run on them trains as the run on the images does."""

import json

import jax
import numpy as np
import pytest

from configs import jpg
from jpg_jax import checkpointing
from jpg_jax import config_checks
from jpg_jax import feature_cache
from jpg_jax import input_pipeline as ip
from jpg_jax import parallel
from jpg_jax import steps
from jpg_jax import train


def _config(data_dir, *variants, **model):
  config = jpg.get_config(",".join(("smoke",) + variants))
  config.unlock()
  config.dataset.data_dir = data_dir
  config.dataset.resize_size = config.dataset.image_size   # training's crop is the whole (square) view
  config.model.update(model)
  config.lock()
  return config


@pytest.fixture(scope="module")
def frozen(tiny_synthetic):
  """The smoke BASE model with a frozen extractor, its initial variables and its data."""
  data_dir, _ = tiny_synthetic
  config = _config(data_dir, "base", frozen_extractor=True)
  data = ip.load_data(config)
  model = steps.create_model(config, data.vocab, None)
  variables = jax.jit(lambda k: steps.init_variables(model, config, k))(jax.random.key(0))
  return config, model, variables, data


def test_the_key_names_the_extractor_and_the_views_only(frozen):
  config, _, variables, _ = frozen
  key = feature_cache.cache_key(config, variables)
  assert key == feature_cache.cache_key(config, jax.tree.map(np.array, variables))
  other_decoder = jax.tree_util.tree_map_with_path(
      lambda p, x: x + 1 if "decoder" in jax.tree_util.keystr(p) else x, variables)
  assert feature_cache.cache_key(config, other_decoder) == key
  nudged = jax.tree_util.tree_map_with_path(
      lambda p, x: x.at[(0,) * x.ndim].add(1e-3) if "conv1" in jax.tree_util.keystr(p) else x, variables)
  assert feature_cache.cache_key(config, nudged) != key
  stats = dict(variables, batch_stats=jax.tree.map(lambda x: x * 2, variables["batch_stats"]))
  assert feature_cache.cache_key(config, stats) != key
  bigger = _config(config.dataset.data_dir, "base", frozen_extractor=True)
  bigger.unlock()
  bigger.dataset.image_size = bigger.dataset.resize_size = 64
  assert feature_cache.cache_key(bigger, variables) != key


def test_grids_are_the_extractor_on_the_evaluation_views_and_are_computed_once(frozen, tmp_path, monkeypatch):
  config, model, variables, data = frozen
  mesh = parallel.make_mesh()
  grids = feature_cache.load_or_compute(config, model, variables, data, mesh, tmp_path)
  assert set(grids) == set(data.sources)
  images = ip.case_images(data.sources["val"], [0, 5], config)
  expected = model.apply(variables, images, False, method=model.extract)
  np.testing.assert_allclose(grids["val"][[0, 5]], expected, rtol=1e-5, atol=1e-5)
  (folder,) = tmp_path.iterdir()
  assert folder.name == feature_cache.cache_key(config, variables)
  assert sorted(p.name for p in folder.iterdir()) == ["test.npy", "train.npy", "val.npy"]

  def no_compute(*args, **kwargs):
    raise AssertionError("computed again")
  monkeypatch.setattr(feature_cache, "compute", no_compute)
  again = feature_cache.load_or_compute(config, model, variables, data, mesh, tmp_path)
  np.testing.assert_array_equal(again["train"], grids["train"])
  # Another extractor is never served the old grids: its key names another folder, which is computed.
  other = dict(variables, batch_stats=jax.tree.map(lambda x: x + 0.5, variables["batch_stats"]))
  with pytest.raises(AssertionError, match="computed again"):
    feature_cache.load_or_compute(config, model, other, data, mesh, tmp_path)
  # A cache of the wrong length (another build of the split) is computed again, not read.
  np.save(folder / "val.npy", grids["val"][:3])
  with pytest.raises(AssertionError, match="computed again"):
    feature_cache.load_or_compute(config, model, variables, data, mesh, tmp_path)


def _losses(workdir):
  return {h["step"]: h["stage2/train_loss"] for h in map(json.loads, (workdir / "logs" / "history.jsonl")
                                                          .read_text().splitlines()) if "stage2/train_loss" in h}


def test_a_frozen_extractor_trains_alike_on_images_and_on_cached_grids(tiny_synthetic, tmp_path):
  """BASE with a frozen extractor, 4 steps on the images and 4 on the cache: the same losses (the training
  crop is the whole view, so the cache's evaluation views are the images training reads)."""
  data_dir, _ = tiny_synthetic
  losses = {}
  for cached in (False, True):
    config = _config(data_dir, "base", frozen_extractor=True, cached_features=cached)
    config.unlock()
    config.train.log_every_steps = 1
    config.lock()
    workdir = tmp_path / str(cached)
    with pytest.raises(checkpointing.Preempted):
      train.train_and_evaluate(config, str(workdir), hooks=[lambda stage, step: step == 4])
    losses[cached] = _losses(workdir)
  assert sorted(losses[True]) == [1, 2, 3, 4] and sorted(losses[False]) == [1, 2, 3, 4]
  for step in range(1, 5):
    assert losses[True][step] == pytest.approx(losses[False][step], rel=1e-5), step
  cache_dir = feature_cache.dataset_cache_dir(config)   # a pretrained extractor's cache: beside the dataset
  assert [p.name for p in cache_dir.iterdir()] and not (tmp_path / "True" / "features").exists()


def test_a_stage_reads_features_where_its_extractor_is_frozen():
  """``cached_features`` applies to the stages whose extractor does not train; it is no error elsewhere
  (``:synthetic,base`` keeps the synthetic default's setting, and BASE's extractor trains)."""
  config = jpg.get_config("smoke")
  config.unlock()
  config.model.cached_features = True
  assert not steps.reads_features(config, 1) and not steps.reads_features(config, 2)
  config.train.stage2_extractor = "frozen"
  assert steps.reads_features(config, 2) and not steps.reads_features(config, 1)
  config.model.use_labeler = False   # BASE has no stage 1 whose extractor stage 2 could keep
  assert not steps.extractor_frozen(config, 2) and not steps.reads_features(config, 2)
  config.model.frozen_extractor = True
  assert steps.reads_features(config, 1) and steps.reads_features(config, 2)
  assert not config_checks.problems(config)

