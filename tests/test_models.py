"""Shapes, gradients, compilation and incremental decoding of the Flax modules (no PyTorch needed)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from jpg_jax.models import jpg as jpg_lib
from jpg_jax.models import labeler as labeler_lib
from jpg_jax.models import resnet
from jpg_jax.models import subspace as subspace_lib
from jpg_jax.models import transformer


TINY = dict(vocab_size=30, num_labels=4, num_label_tokens=9, resnet_depth=10, num_bases=16, d_model=32,
            d_ff=32, num_heads=4, num_layers=2, label_hidden=32, label_steps=5)
ABLATIONS = {
    "jpg": {},
    "base": dict(use_subspace=False, use_labeler=False, labels_in_encoder=False),
    "projection": dict(use_subspace=False),
    "auxiliary": dict(labels_in_encoder=False),
}
B, L = 2, 10


def _inputs(seed=0, size=32):
  k = jax.random.split(jax.random.key(seed), 3)
  images = jax.random.normal(k[0], (B, 2, size, size, 3))
  reports = jax.random.randint(k[1], (B, L), 1, 30).at[:, 0].set(0).at[1, 7:].set(0)
  labels = jax.random.randint(k[2], (B, 6), 1, 9).at[:, 0].set(0).at[:, 4:].set(0)
  return images, reports, labels


@functools.lru_cache(maxsize=None)
def _variables(ablation: str):
  """Initialised once per ablation (initialisation compiles slowly on CPU); switches that do not change
  the parameters (dtype, attention_layer, frozen_extractor) reuse them."""
  model = jpg_lib.JPG(**TINY, **ABLATIONS[ablation])
  return model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, *_inputs())


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_output_shapes_for_every_ablation(name):
  model = jpg_lib.JPG(**TINY, **ABLATIONS[name])
  images, reports, labels = _inputs()
  variables = _variables(name)
  out = jax.jit(model.apply)(variables, images, reports, labels)
  assert out["logits"].shape == (B, L - 1, 30)
  params = variables["params"]
  assert ("subspace" in params) == ABLATIONS[name].get("use_subspace", True)
  assert ("att_embed" in params) != ("subspace" in params)
  if ABLATIONS[name].get("use_labeler", True):
    assert out["label_class_logits"].shape == (B, 4)
    assert out["label_token_logits"].shape == (B, 5, 9)
  else:
    assert "labeler" not in params and "label_class_logits" not in out
  assert ("label_tokens" in out) == (name in ("jpg", "projection"))
  # The encoder memory holds the 2 x 1 x 1 patches (32 px views) plus, with labels, 5 label positions.
  memory, mask, _ = jax.eval_shape(lambda v: model.apply(v, images, False, method=jpg_lib.JPG.encode),
                                   variables)
  assert memory.shape == (B, 2 + (5 if name in ("jpg", "projection") else 0), 32)


def _loss(model, params, other, images, reports, labels):
  out, _ = model.apply({"params": params, **other}, images, reports, labels, train=True,
                       rngs={"dropout": jax.random.key(3)}, mutable=["batch_stats"])
  logp = jax.nn.log_softmax(out["logits"])
  loss = -jnp.take_along_axis(logp, reports[:, 1:, None], -1).mean()
  if "label_token_logits" in out:
    lp = jax.nn.log_softmax(out["label_token_logits"])
    loss += -jnp.take_along_axis(lp, labels[:, 1:, None], -1).mean()
    loss += jnp.mean(out["label_class_logits"] ** 2)
  return loss


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_gradients_reach_every_trainable_parameter(name):
  model = jpg_lib.JPG(**TINY, **ABLATIONS[name])
  images, reports, labels = _inputs()
  variables = _variables(name)
  params, other = variables["params"], {k: v for k, v in variables.items() if k != "params"}
  grads = jax.jit(jax.grad(lambda p: _loss(model, p, other, images, reports, labels)))(params)
  dead = [k for k, g in traverse_util.flatten_dict(grads, sep="/").items() if not np.any(np.asarray(g))]
  assert not dead, dead


def test_remat_gives_the_same_parameters_gradients_and_statistics():
  """``model.remat``: ResNet blocks and Transformer layers rematerialised under a checkpoint policy: the
  same parameter tree, and the same loss (dropout included), gradients and BatchNorm updates as without."""
  images, reports, labels = _inputs()
  trees = [jax.eval_shape(jpg_lib.JPG(**TINY, remat=r).init, jax.random.key(0), images, reports, labels)
           for r in ("", "nothing_saveable")]
  assert jax.tree.structure(trees[0]) == jax.tree.structure(trees[1])

  def same(fn, variables):
    traced = [str(jax.make_jaxpr(functools.partial(fn, r))(variables["params"])) for r in ("", "nothing_saveable")]
    assert "remat" not in traced[0] and "remat" in traced[1]   # jax.checkpoint's primitive
    plain, remat = (jax.jit(jax.value_and_grad(functools.partial(fn, r), has_aux=True))(variables["params"])
                    for r in ("", "nothing_saveable"))
    leaves = jax.tree.leaves(plain)
    scale = max(float(np.abs(x).max()) for x in leaves)
    for x, y in zip(leaves, jax.tree.leaves(remat), strict=True):
      np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-5 * scale)   # XLA fuses the recomputation apart

  x = images[:, 0]
  net = lambda r: resnet.ResNet(10, width=8, remat=r)
  variables = jax.jit(net("").init)(jax.random.key(0), x)
  same(lambda r, p: (lambda y, u: (jnp.mean(y ** 2), u))(*net(r).apply(
      {"params": p, "batch_stats": variables["batch_stats"]}, x, True, mutable=["batch_stats"])), variables)
  memory = jax.random.normal(jax.random.key(1), (B, 3, 16))
  dec = lambda r: transformer.Decoder(num_layers=2, d_model=16, d_ff=16, num_heads=2, remat=r)
  y = jax.random.normal(jax.random.key(2), (B, L, 16))
  args = (y, memory, jnp.ones((B, 3), bool), jnp.ones((B, L), bool), True)
  same(lambda r, p: (jnp.mean(dec(r).apply({"params": p}, *args, rngs={"dropout": jax.random.key(3)}) ** 2),
                     ()), jax.jit(dec("").init, static_argnums=5)(jax.random.key(0), *args))
  with pytest.raises(ValueError, match="remat policy"):
    resnet.remat_policy("nothing_savable")


def test_frozen_extractor_gets_no_gradient_and_keeps_statistics():
  model = jpg_lib.JPG(**TINY, frozen_extractor=True)
  images, reports, labels = _inputs()
  variables = _variables("jpg")
  params, other = variables["params"], {"batch_stats": variables["batch_stats"]}
  grads = jax.jit(jax.grad(lambda p: _loss(model, p, other, images, reports, labels)))(params)
  assert all(not np.any(np.asarray(g)) for g in jax.tree.leaves(grads["visual_extractor"]))
  assert any(np.any(np.asarray(g)) for g in jax.tree.leaves(grads["subspace"]))
  _, updates = jax.jit(lambda v: model.apply(v, images, reports, labels, train=True,
                                              rngs={"dropout": jax.random.key(0)},
                                              mutable=["batch_stats"]))(variables)
  before = variables["batch_stats"]["visual_extractor"]
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(updates["batch_stats"]["visual_extractor"])):
    np.testing.assert_array_equal(a, b)


def test_cached_features_give_the_frozen_models_outputs():
  """Patch grids computed once by the frozen extractor stand in for the images (the ResNet is skipped)."""
  frozen = jpg_lib.JPG(**TINY, frozen_extractor=True)
  cached = jpg_lib.JPG(**TINY, frozen_extractor=True, cached_features=True)
  images, reports, labels = _inputs()
  variables = _variables("jpg")
  grids = frozen.apply(variables, images, False, method=jpg_lib.JPG.extract)
  assert grids.shape[:2] == (images.shape[0], 2) and grids.shape[-1] == 512
  light = {c: {k: v for k, v in tree.items() if k != "visual_extractor"} for c, tree in variables.items()}
  expected = frozen.apply(variables, images, reports, labels)
  got = cached.apply(light, grids, reports, labels)
  for key in ("logits", "label_class_logits", "label_token_logits"):
    np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-5)
  assert "visual_extractor" not in cached.init(jax.random.key(0), grids, reports, labels)["params"]


def test_each_function_compiles_once_per_shape():
  model = jpg_lib.JPG(**TINY)
  images, reports, labels = _inputs()
  variables = _variables("jpg")
  fwd = jax.jit(lambda v, i, r, l: model.apply(v, i, r, l)["logits"])
  for seed in range(3):
    fwd(variables, *_inputs(seed))
  assert fwd._cache_size() == 1
  fwd(variables, *_inputs(0, size=64))
  assert fwd._cache_size() == 2


def test_incremental_decoding_with_cache_equals_full_decoding():
  model = jpg_lib.JPG(**TINY)
  images, reports, labels = _inputs()
  reports = reports.at[1, 7:].set(3)   # no padding: every position is a real token
  variables = _variables("jpg")
  memory, mask, _ = model.apply(variables, images, False, method=jpg_lib.JPG.encode)
  full = model.apply(variables, reports, memory, mask, False, method=jpg_lib.JPG.decode)
  cache = model.apply(variables, reports, memory, mask, False, True, method=jpg_lib.JPG.decode,
                      mutable=["cache"])[1]["cache"]
  cache = jax.tree.map(jnp.zeros_like, cache)
  step = jax.jit(lambda c, tok: model.apply({**variables, "cache": c}, tok, memory, mask, False, True,
                                            method=jpg_lib.JPG.decode, mutable=["cache"]))
  for t in range(L):
    logits, mutated = step(cache, reports[:, t:t + 1])
    cache = mutated["cache"]
    np.testing.assert_allclose(logits[:, 0], full[:, t], atol=1e-4)
  assert step._cache_size() == 1


def test_cross_attention_weights_are_returned():
  model = jpg_lib.JPG(**TINY, attention_layer=1)
  images, reports, labels = _inputs()
  variables = _variables("jpg")
  _, state = jax.jit(lambda v: model.apply(v, images, reports, labels, mutable=["intermediates"]))(
      variables)
  (weights,) = state["intermediates"]["decoder"]["layers_1"]["cross_attention"]
  assert weights.shape == (B, 4, L - 1, 2 + 5)
  np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)


def test_bf16_compute_keeps_fp32_parameters():
  model = jpg_lib.JPG(**TINY, dtype=jnp.bfloat16)
  images, reports, labels = _inputs()
  variables = _variables("jpg")
  assert {x.dtype for x in jax.tree.leaves(variables["params"])} == {jnp.dtype("float32")}
  out = jax.jit(model.apply)(variables, images, reports, labels)
  assert out["logits"].dtype == jnp.float32 and np.isfinite(np.asarray(out["logits"])).all()


@pytest.mark.parametrize("head", sorted(labeler_lib.HEADS))
def test_every_classification_head(head):
  m = labeler_lib.Labeler(num_labels=7, num_label_tokens=9, head=head, hidden=16, embed_dim=8)
  grids = jnp.ones((3, 2, 7, 7, 12))
  ids = jnp.zeros((3, 6), jnp.int32)
  v = m.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, grids, ids, False)
  class_logits, token_logits = m.apply(v, grids, ids, False)
  assert class_logits.shape == (3, 7) and token_logits.shape == (3, 5, 9)
  _, tokens = m.apply(v, grids, method=labeler_lib.Labeler.greedy)
  assert tokens.shape == (3, 5)


def test_label_token_mask_stops_at_first_eos():
  np.testing.assert_array_equal(labeler_lib.label_token_mask(jnp.array([[3, 4, 0, 5, 1], [0, 2, 2, 2, 2]])),
                                [[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]])


@pytest.mark.parametrize("depth, width, channels", [(10, 64, 512), (18, 64, 512), (34, 64, 512),
                                                     (50, 64, 2048), (10, 16, 128), (50, 16, 512)])
def test_resnet_depths_and_widths(depth, width, channels):
  net = resnet.ResNet(depth, width=width)
  v = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
  out = jax.eval_shape(lambda v: net.apply(v, jnp.zeros((1, 64, 64, 3))), v)
  assert out.shape == (1, 2, 2, channels) and resnet.out_channels(depth, width) == channels
  assert v["params"]["conv1"]["kernel"].shape == (7, 7, 3, width)


@pytest.mark.parametrize("similarity", ["dot", "scaled_dot", "cosine"])
def test_subspace_options_and_top_k(similarity):
  m = subspace_lib.SharedSubspace(num_bases=12, basis_dim=8, subspace_dim=8, similarity=similarity,
                                  top_k=3)
  x, y = jnp.ones((2, 5, 6)), jnp.ones((2, 4, 8))
  v = m.init(jax.random.key(0), x, y)
  rx, ry = m.apply(v, x, y)
  assert rx.shape == (2, 5, 8) and ry.shape == (2, 4, 8)
  # Reference: Eqs. 4-10 in numpy, with only the top_k similarities kept before the softmax.
  p = v["params"]
  bases = np.asarray(m.apply(v, method=subspace_lib.SharedSubspace.projected_bases))
  f = np.asarray(x[0, 0]) @ np.asarray(p["w_x"]["kernel"]) + np.asarray(p["w_x"]["bias"])
  if similarity == "cosine":
    f = f / (np.linalg.norm(f) + 1e-6)
    b = bases / (np.linalg.norm(bases, axis=-1, keepdims=True) + 1e-6)
    scores = b @ f * np.exp(float(p["log_temperature"]))
  else:
    scores = bases @ f / (np.sqrt(8) if similarity == "scaled_dot" else 1.0)
  keep = np.argsort(scores)[-3:]
  w = np.exp(scores[keep] - scores[keep].max())
  np.testing.assert_allclose(rx[0, 0], (w / w.sum()) @ bases[keep], atol=1e-5)


def test_head_batch_statistics_update_once_per_step():
  """Stage 2's forward runs the classification head once: its running statistics move by one update."""
  model = jpg_lib.JPG(**TINY)
  variables = _variables("jpg")
  images, reports, labels = _inputs()
  _, updates = jax.jit(lambda v: model.apply(v, images, reports, labels, True, mutable=["batch_stats"],
                                             rngs={"dropout": jax.random.key(3)}))(variables)

  def head_once(m, images):
    grids = m.extract(images, True)
    return m.labeler.embed(m.label_input(grids, m.align_visual(grids, True)), True)

  _, once = jax.jit(lambda v: model.apply(v, images, method=head_once, mutable=["batch_stats"],
                                          rngs={"dropout": jax.random.key(3)}))(variables)
  for a, b in zip(jax.tree.leaves(updates["batch_stats"]["labeler"]), jax.tree.leaves(once["batch_stats"]["labeler"])):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_att_embed_drops_half_the_visual_features_as_r2gen():
  """BASE / JPG-projection: R2Gen's att_embed = Linear, ReLU, Dropout(drop_prob_lm = 0.5)."""
  from configs import jpg
  assert jpg.get_config().model.visual_dropout == 0.5
  model = jpg_lib.JPG(**TINY, **ABLATIONS["projection"])
  grids = jnp.ones((8, 2, 4, 4, 512))
  variables = _variables("projection")
  train = model.apply(variables, grids, True, method=jpg_lib.JPG.align_visual, rngs={"dropout": jax.random.key(0)})
  test = model.apply(variables, grids, False, method=jpg_lib.JPG.align_visual)
  active = np.asarray(test) > 0
  dropped = (np.asarray(train) == 0) & active
  assert dropped.sum() / active.sum() == pytest.approx(0.5, abs=0.03)
