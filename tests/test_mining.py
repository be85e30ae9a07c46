"""Stage 1's class balance, mining and stage 2's targets (Sec. 3.4; jpg_jax/mining.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import jpg
from jpg_jax import input_pipeline as ip
from jpg_jax import labels
from jpg_jax import mining
from jpg_jax import parallel
from jpg_jax import text

NORMAL = ["normal"]
GRANULOMA = ["Calcified Granuloma/lung/upper lobe/right"]
OPACITY = ["Opacity/lung/base/left"]


def _index(mesh):
  n = len(mesh)
  return ip.SplitIndex([f"r{i}" for i in range(n)], [f"p{i}" for i in range(n)], ["the lungs are clear ."] * n,
                       mesh)


def _patterns():
  return labels.LabelSet([("normal",), ("calcified_granuloma", "lung"), ("opacity", "lung")], None,
                         ["normal", "calcified_granuloma", "lung", "upper_lobe", "right", "opacity", "base",
                          "left"])


def test_mined_labels_agree_with_their_reports_and_contradicting_ones_never_become_targets():
  index = _index([GRANULOMA, GRANULOMA, OPACITY, NORMAL, NORMAL, OPACITY])
  granuloma = ("calcified_granuloma", "lung", "upper_lobe", "right")
  generated = {"r0": granuloma, "r1": granuloma, "r2": granuloma,   # r2 is an opacity: contradicts
               "r3": ("normal",), "r4": granuloma, "r5": ("opacity", "lung", "base", "left")}
  terms = dict(zip(index.ids, index.mesh))
  mined = mining.mine_labels(generated, terms, 10, _patterns(), "agreeing")
  # The granuloma label agrees with 2 reports (not 4: r2 and r4 contradict it).
  assert mined.labels == [granuloma, ("normal",), ("opacity", "lung", "base", "left")]
  assert mined.counts[granuloma] == 2
  assigned = mining.stage2_assigned(index, generated, mined, _patterns(), "agreeing")
  for rid, terms_of in terms.items():
    assert labels.agrees(assigned[rid], terms_of), rid
  assert assigned["r2"] == ("opacity", "lung", "base", "left")   # its ground truth, not the generated label
  assert assigned["r4"] == ("normal",)
  summary = mining.mining_summary(generated, terms, mined, min_mined=10)
  assert summary["agreeing"] == 4 and summary["mined"] == 3 and "fewer than" in summary["warning"]


def test_mining_with_no_agreeing_label_falls_back_on_the_patterns_and_says_so(tmp_path):
  config = jpg.get_config("smoke,tuned")
  index = _index([GRANULOMA, OPACITY, NORMAL])
  wrong = ("opacity", "lung", "base", "right")   # agrees with none of the three
  label_set, assigned, summary = mining.mine(config, index, {rid: wrong for rid in index.ids}, _patterns())
  assert label_set == _patterns() and summary["mined"] == 0 and "No label was mined" in summary["warning"]
  assert assigned == {"r0": ("calcified_granuloma", "lung"), "r1": ("opacity", "lung"), "r2": ("normal",)}
  assert label_set.tokens == _patterns().tokens   # the GRU's vocabulary carries over
  mining.write_mined(tmp_path / "labels", label_set, summary)
  assert labels.LabelSet.load(tmp_path / "labels" / "mined.json") == label_set
  assert (tmp_path / "labels" / "mined.txt").read_text().startswith("# 3 context-aware labels mined (agreeing) from 3")


def test_ground_truth_falls_back_on_the_stage1_pattern_then_none():
  index = _index([["Calcified Granuloma/lung/base/left"], ["Cardiomegaly/mild"]])
  mined = labels.LabelSet([("calcified_granuloma", "lung", "upper_lobe")])
  assigned = mining.stage2_assigned(index, {}, mined, _patterns(), "agreeing")
  assert assigned == {"r0": ("calcified_granuloma", "lung")}
  assert mining.stage2_assigned(index, {}, mined, _patterns(), "paper") == {}   # the paper: no ground truth


def test_paper_mining_keeps_the_most_frequent_outputs_and_teaches_them_as_generated():
  """Sec. 3.4: the stage-1 GRU's outputs over the training set, the most frequent unique ones kept
  whatever they say; a case is re-trained on its generated label where that was mined, else on none."""
  index = _index([GRANULOMA, GRANULOMA, OPACITY, NORMAL, NORMAL, OPACITY])
  granuloma = ("calcified_granuloma", "lung", "upper_lobe", "right")
  opacity = ("opacity", "lung", "base", "left")
  generated = {"r0": granuloma, "r1": granuloma, "r2": granuloma, "r3": ("normal",), "r4": granuloma,
               "r5": opacity}
  terms = dict(zip(index.ids, index.mesh))
  mined = mining.mine_labels(generated, terms, 2, _patterns(), "paper")
  assert mined.labels == [granuloma, ("normal",)] and mined.counts[granuloma] == 4   # r2, r4 count too
  assert mined.tokens == _patterns().tokens
  assigned = mining.stage2_assigned(index, generated, mined, _patterns(), "paper")
  assert assigned == {"r0": granuloma, "r1": granuloma, "r2": granuloma, "r3": ("normal",), "r4": granuloma}
  config = jpg.get_config("smoke")
  assert config.labels.mining == "paper"
  label_set, assigned2, summary = mining.mine(config, index, generated, _patterns())
  assert summary["mining"] == "paper" and summary["agreeing"] == 4 and summary["mined"] == 3
  assert assigned2["r5"] == opacity and assigned2["r2"] == granuloma
  with pytest.raises(ValueError, match="mining"):
    mining.mine_labels(generated, terms, 2, _patterns(), "nonsense")


def test_head_training_targets_equal_evaluation_truth():
  index = _index([GRANULOMA, OPACITY, NORMAL])
  vocab = text.Vocabulary(["the", "lungs", "are", "clear", "."])
  mined = labels.LabelSet([("normal",), ("opacity", "lung", "base", "left")], None, _patterns().vocab.idx2token.values())
  generated = {"r0": ("normal",), "r1": ("opacity", "lung", "base", "left"), "r2": ("normal",)}
  assigned = mining.stage2_assigned(index, generated, mined, _patterns(), "agreeing")
  train = ip.Targets(vocab, 10, 5, mined, assigned)
  evaluation = ip.Targets(vocab, 10, 5, mined)
  for i in range(len(index)):
    np.testing.assert_array_equal(train(index, i)["label_targets"], evaluation(index, i)["label_targets"])
    np.testing.assert_array_equal(train(index, i)["label_targets"], mined.multi_hot(index.mesh[i]))
  assert train(index, 0)["label_targets"].sum() == 0   # a granuloma report is not taught "normal"


def test_normal_dropout_is_deterministic_per_seed_and_epoch_and_keeps_the_rest():
  indices = list(range(40))
  normals = list(range(0, 40, 2))
  a = ip.epoch_order(indices, normals, 0.25, seed=3, epoch=0)
  assert len(a) == ip.epoch_size(indices, normals, 0.25) == 25
  assert set(range(1, 40, 2)) <= set(a.tolist()) and len(set(a.tolist()) & set(normals)) == 5
  np.testing.assert_array_equal(a, ip.epoch_order(indices, normals, 0.25, seed=3, epoch=0))
  b = ip.epoch_order(indices, normals, 0.25, seed=3, epoch=1)
  assert set(a.tolist()) != set(b.tolist())
  c = ip.epoch_order(indices, normals, 0.25, seed=4, epoch=0)
  assert a.tolist() != c.tolist()


def test_normal_dropout_stream_is_the_same_on_any_number_of_hosts(tiny_synthetic):
  data_dir, _ = tiny_synthetic
  config = jpg.get_config("smoke")
  source = ip.open_split(config.dataset.name, "train", data_dir)
  index = ip.SplitIndex.read(source)
  targets = ip.Targets(text.Vocabulary.build(index.reports, 1), 40, 5)
  normals = [i for i in range(len(index)) if not labels.is_indexed(index.mesh[i]) or
             labels.simple_pattern(index.mesh[i]) == labels.NORMAL]
  opts = ip.ImageOptions(32, 36, False)
  kw = dict(seed=1, image=opts, droppable=normals, keep=0.5)
  one = ip.train_dataset(source, index, targets, batch_size=8, **kw)
  two = [ip.train_dataset(source, index, targets, batch_size=4, process_index=p, process_count=2, **kw)
         for p in range(2)]
  for step in range(8):   # several epochs
    whole = one[step]["index"]
    np.testing.assert_array_equal(whole, np.concatenate([two[0][step]["index"], two[1][step]["index"]]))
    np.testing.assert_array_equal(one[step]["images"][:4], two[0][step]["images"])


def test_carry_over_starts_the_class_layer_afresh_and_refuses_other_shape_changes():
  mesh = parallel.make_mesh(jax.devices()[:1])
  s1 = {"params": {"labeler": {"classifier": {"kernel": jnp.ones((4, 3))}, "gru": {"w": jnp.ones((2,))}},
                   "encoder": {"w": jnp.full((2,), 7.0)}}, "batch_stats": {"labeler": {"bn": {"mean": jnp.ones(2)}}}}
  s2 = {"params": {"labeler": {"classifier": {"kernel": jnp.zeros((4, 3))}, "gru": {"w": jnp.zeros((2,))}},
                   "encoder": {"w": jnp.zeros((2,))}}, "batch_stats": {"labeler": {"bn": {"mean": jnp.zeros(2)}}},
        "step": jnp.zeros((), jnp.int32)}
  import optax
  new = mining.carry_over(s2, s1, optax.sgd(0.1), mesh)
  assert float(new["params"]["labeler"]["classifier"]["kernel"].sum()) == 0.0   # same shape, still fresh
  assert float(new["params"]["encoder"]["w"][0]) == 7.0
  assert float(new["batch_stats"]["labeler"]["bn"]["mean"][0]) == 1.0
  s2["params"]["encoder"]["w"] = jnp.zeros((3,))
  with pytest.raises(ValueError, match="encoder/w"):
    mining.carry_over(s2, s1, optax.sgd(0.1), mesh)
