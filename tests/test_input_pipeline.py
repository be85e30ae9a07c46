import numpy as np
import pytest
from PIL import Image

from jpg_jax import input_pipeline as ip
from jpg_jax import labels
from jpg_jax import text


@pytest.fixture(scope="module")
def split(tiny_synthetic):
  data_dir, _ = tiny_synthetic
  source = ip.open_split("synthetic_cxr/tiny", "train", data_dir)
  index = ip.SplitIndex.read(source)
  vocab = text.Vocabulary.build(index.reports, threshold=1)
  patterns, kept, counts = labels.select_simple_patterns(index.mesh, num_patterns=5, depth=2)
  targets = ip.Targets(vocab, 60, 5, labels.LabelSet(patterns, counts))
  return source, index, targets, kept


IMG = ip.ImageOptions(image_size=48, resize_size=56, random_flip=True)


def _batches(ds, n):
  it = ip.to_iter(ds)
  return [next(it) for _ in range(n)]


def test_train_batches_static_shapes_and_targets(split):
  source, index, targets, _ = split
  (b,) = _batches(ip.train_dataset(source, index, targets, batch_size=8, seed=0, image=IMG), 1)
  assert b["images"].shape == (8, 2, 48, 48, 3) and b["images"].dtype == np.float32
  assert b["report_ids"].shape == (8, 60) and b["report_ids"].dtype == np.int32
  assert b["label_ids"].shape == (8, 6) and b["label_targets"].shape == (8, 5)
  assert (b["mask"] == 1).all()
  for row, i in enumerate(b["index"]):
    ids, mask = targets.vocab.encode_padded(index.reports[i], 60)
    np.testing.assert_array_equal(b["report_ids"][row], ids)
    np.testing.assert_array_equal(b["report_mask"][row], mask)
  # ImageNet normalisation of grey images: all three channels equal, values around zero.
  np.testing.assert_allclose(b["images"][..., 0] * ip.IMAGENET_STD[0] + ip.IMAGENET_MEAN[0],
                             b["images"][..., 2] * ip.IMAGENET_STD[2] + ip.IMAGENET_MEAN[2], atol=1e-5)


def test_train_is_deterministic_and_reshuffles_each_epoch(split):
  source, index, targets, _ = split
  make = lambda seed: ip.train_dataset(source, index, targets, batch_size=8, seed=seed, image=IMG)
  a, b, c = _batches(make(0), 12), _batches(make(0), 12), _batches(make(1), 12)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["index"], y["index"])
    np.testing.assert_array_equal(x["images"], y["images"])
  assert any((x["index"] != y["index"]).any() for x, y in zip(a, c))
  epoch = len(index) // 8   # 48 examples: 6 batches an epoch
  first = np.concatenate([x["index"] for x in a[:epoch]])
  second = np.concatenate([x["index"] for x in a[epoch:2 * epoch]])
  assert sorted(first) == list(range(len(index))) == sorted(second)
  assert (first != second).any()


def test_iterator_state_resumes_exactly(split):
  source, index, targets, _ = split
  ds = ip.train_dataset(source, index, targets, batch_size=8, seed=0, image=IMG)
  it = ip.to_iter(ds)
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(2)]
  again = ip.to_iter(ds)
  again.set_state(state)
  for e in expected:
    got = next(again)
    np.testing.assert_array_equal(got["index"], e["index"])
    np.testing.assert_array_equal(got["images"], e["images"])


def test_host_slices_make_the_single_host_batches(split):
  """2 hosts x 4 examples give, step by step, the same 8 examples (images included) as 1 host x 8."""
  source, index, targets, kept = split
  make = lambda h, n, b: ip.train_dataset(source, index, targets, batch_size=b, seed=0, image=IMG,
                                          indices=kept, process_index=h, process_count=n)
  single = _batches(make(0, 1, 8), 4)
  hosts = [_batches(make(h, 2, 4), 4) for h in range(2)]
  for step, whole in enumerate(single):
    for key in ("index", "images", "report_ids"):
      np.testing.assert_array_equal(np.concatenate([hosts[0][step][key], hosts[1][step][key]]), whole[key])
  seen = np.concatenate([b["index"] for b in single])
  assert set(seen.tolist()) <= set(kept)
  with pytest.raises(ValueError, match="fewer than the global batch"):
    make(0, 2, len(kept))


@pytest.mark.parametrize("hosts", [1, 2])
def test_eval_pads_and_masks_without_dropping_or_duplicating(split, hosts):
  source, index, targets, _ = split
  global_batch = 20   # 48 examples -> 60 slots, 12 of them padding
  seen = []
  for h in range(hosts):
    ds = ip.eval_dataset(source, index, targets, global_batch_size=global_batch, image=IMG,
                         process_index=h, process_count=hosts)
    batches = list(ds)
    assert len(batches) == 3 and all(b["images"].shape[0] == global_batch // hosts for b in batches)
    for b in batches:
      seen += b["index"][b["mask"] == 1].tolist()
  assert sorted(seen) == list(range(len(index)))


def test_eval_views_are_deterministic_resizes(split):
  source, index, targets, _ = split
  (b,) = list(ip.eval_dataset(source, index, targets, global_batch_size=48, image=IMG))[:1]
  raw = source[int(b["index"][0])]["frontal"]
  img = Image.open(__import__("io").BytesIO(raw)).convert("L").resize((48, 48), Image.BILINEAR)
  np.testing.assert_allclose(b["images"][0, 0], ip.normalise(img), atol=1e-6)


def test_resize_shorter_keeps_aspect():
  img = Image.new("L", (300, 200))
  assert ip.resize_shorter(img, 256).size == (384, 256)
  assert ip.resize_shorter(Image.new("L", (200, 300)), 256).size == (256, 384)


def test_assigned_labels_set_the_gru_target_and_never_the_heads(split):
  source, index, targets, _ = split
  label = targets.label_set.labels[1]
  t = ip.Targets(targets.vocab, 60, 5, targets.label_set, assigned={index.ids[0]: label})
  out = t(index, 0)
  assert targets.label_set.decode_sequence(out["label_ids"][1:]) == label
  # The head's target is the report's own terms, whatever the assignment (training = evaluation truth).
  np.testing.assert_array_equal(out["label_targets"], targets.label_set.multi_hot(index.mesh[0]))
  assert t(index, 1)["label_mask"].sum() == 0   # not assigned: no GRU target
