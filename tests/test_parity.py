"""Parity of jpg-jax's Flax modules with hand-written PyTorch references (fp32, eval mode).

The PyTorch weights are random; they reach Flax through ``jpg_jax.tools.convert_torch`` (and, for ResNet,
the torchvision key layout of ``convert_resnet``), so these tests check the converter too.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from jpg_jax.models import jpg as jpg_lib  # noqa: E402
from jpg_jax.models import labeler as labeler_lib  # noqa: E402
from jpg_jax.models import resnet  # noqa: E402
from jpg_jax.models import subspace as subspace_lib  # noqa: E402
from jpg_jax.models import transformer  # noqa: E402
from jpg_jax.tools import convert_resnet  # noqa: E402
from jpg_jax.tools import convert_torch  # noqa: E402
from tests import torch_reference as ref  # noqa: E402

torch.set_num_threads(2)


def _gen(seed=0):
  return torch.Generator().manual_seed(seed)


def _np(t):
  return t.detach().numpy()


def _template(module, *args, **kwargs):
  return jax.eval_shape(lambda: module.init(jax.random.key(0), *args, **kwargs))


def test_resnet101_matches_torchvision_layout_at_224():
  torch.manual_seed(0)
  net = ref.ResNet(101).eval()
  with torch.no_grad():
    ref.randomize_batchnorm(net, _gen(1))
  n_torch = sum(p.numel() for p in net.parameters())
  assert n_torch == 42_500_160   # torchvision's ResNet-101 (44,549,160) without fc (2,049,000)
  variables = convert_resnet.convert_state_dict(net.state_dict(), 101)
  assert sum(x.size for x in jax.tree.leaves(variables["params"])) == n_torch
  x = torch.randn(1, 3, 224, 224, generator=_gen(2))
  with torch.no_grad():
    expected = _np(net(x)).transpose(0, 2, 3, 1)
  got = np.asarray(jax.jit(lambda v, x: resnet.ResNet(101).apply(v, x))(
      variables, jnp.asarray(_np(x).transpose(0, 2, 3, 1))))
  assert got.shape == (1, 7, 7, 2048)
  scale = np.abs(expected).max()
  assert np.abs(got - expected).max() <= 1e-4 * scale, (np.abs(got - expected).max(), scale)


def test_resnet18_train_mode_batchnorm_matches():
  torch.manual_seed(0)
  net = ref.ResNet(18).train()
  variables = convert_resnet.convert_state_dict(net.state_dict(), 18)
  x = torch.randn(4, 3, 64, 64, generator=_gen(3))
  expected = _np(net(x)).transpose(0, 2, 3, 1)
  got, updates = resnet.ResNet(18).apply(variables, jnp.asarray(_np(x).transpose(0, 2, 3, 1)),
                                        train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(got, expected, atol=1e-4 * np.abs(expected).max())
  np.testing.assert_allclose(updates["batch_stats"]["bn1"]["mean"], _np(net.bn1.running_mean), atol=1e-5)
  np.testing.assert_allclose(updates["batch_stats"]["bn1"]["var"], _np(net.bn1.running_var), rtol=1e-4)


@pytest.mark.parametrize("similarity,residual", [("dot", False), ("scaled_dot", True), ("cosine", False),
                                                 ("cosine", True)])
def test_subspace_matches(similarity, residual):
  torch.manual_seed(0)
  m = ref.SharedSubspace(num_bases=64, basis_dim=32, subspace_dim=32, visual_dim=48, text_dim=32,
                         similarity=similarity, residual=residual)
  with torch.no_grad():   # bases of norm ~1 (the synthetic config's init), so the softmax is not uniform
    m.basis.mul_(32)
  x, y = torch.randn(2, 10, 48), torch.randn(2, 7, 32)
  flax_m = subspace_lib.SharedSubspace(num_bases=64, basis_dim=32, subspace_dim=32, similarity=similarity,
                                       residual=residual)
  v = convert_torch.torch_to_flax(m.state_dict(), _template(flax_m, jnp.zeros((1, 48)), jnp.zeros((1, 32))))
  rx, ry = flax_m.apply(v, jnp.asarray(_np(x)), jnp.asarray(_np(y)))
  np.testing.assert_allclose(rx, _np(m.align_visual(x)), atol=1e-5)
  np.testing.assert_allclose(ry, _np(m.align_textual(y)), atol=1e-5)


def test_gru_step_matches_torch_grucell():
  torch.manual_seed(0)
  cell = torch.nn.GRUCell(16, 24)
  flax_cell = labeler_lib.GRUCell(24)
  v = convert_torch.torch_to_flax({k: v for k, v in cell.state_dict().items()},
                                  _template(flax_cell, jnp.zeros((1, 24)), jnp.zeros((1, 16))))
  h, x = torch.randn(3, 24), torch.randn(3, 16)
  for _ in range(5):   # five unrolled steps, as the label decoder
    h_t = cell(x, h)
    h_f, _ = flax_cell.apply(v, jnp.asarray(_np(h)), jnp.asarray(_np(x)))
    np.testing.assert_allclose(h_f, _np(h_t), atol=1e-6)
    h = h_t


def test_transformer_layers_with_r2gen_layernorm_match():
  torch.manual_seed(0)
  d, heads, ff = 32, 4, 48
  enc_t, dec_t = ref.Encoder(2, d, ff, heads, 0.1).eval(), ref.Decoder(2, d, ff, heads, 0.1).eval()
  enc = transformer.Encoder(2, d, ff, heads, 0.1, "r2gen")
  dec = transformer.Decoder(2, d, ff, heads, 0.1, "r2gen")
  src, src_mask = torch.randn(2, 9, d), torch.ones(2, 9, dtype=torch.bool)
  src_mask[1, 6:] = False
  tgt, tgt_mask = torch.randn(2, 6, d), torch.ones(2, 6, dtype=torch.bool)
  tgt_mask[0, 4:] = False
  ve = convert_torch.torch_to_flax(enc_t.state_dict(), _template(
      enc, jnp.zeros((1, 9, d)), jnp.ones((1, 9), bool), False))
  vd = convert_torch.torch_to_flax(dec_t.state_dict(), _template(
      dec, jnp.zeros((1, 6, d)), jnp.zeros((1, 9, d)), jnp.ones((1, 9), bool), jnp.ones((1, 6), bool), False))
  with torch.no_grad():
    mem_t = enc_t(src, src_mask)
    out_t = dec_t(tgt, mem_t, src_mask, tgt_mask)
  mem = enc.apply(ve, jnp.asarray(_np(src)), jnp.asarray(_np(src_mask)), False)
  out = dec.apply(vd, jnp.asarray(_np(tgt)), mem, jnp.asarray(_np(src_mask)), jnp.asarray(_np(tgt_mask)), False)
  np.testing.assert_allclose(mem, _np(mem_t), atol=2e-5)
  np.testing.assert_allclose(out, _np(out_t), atol=2e-5)


TINY = dict(vocab_size=40, num_labels=6, num_label_tokens=11, resnet_depth=18, num_bases=16,
            d_model=32, d_ff=48, num_heads=4, num_layers=2, label_hidden=32, label_steps=5)


def test_tiny_jpg_forward_matches():
  torch.manual_seed(0)
  net = ref.JPG(**TINY).eval()
  with torch.no_grad():
    ref.randomize_batchnorm(net, _gen(4))
    net.labeler.label_out.bias[0] = -3.0   # EOS less likely: the label features take part
  model = jpg_lib.JPG(**TINY)
  images = torch.randn(2, 2, 3, 64, 64, generator=_gen(5))
  reports = torch.randint(1, 40, (2, 12), generator=_gen(6))
  reports[:, 0] = 0
  reports[1, 8:] = 0
  label_ids = torch.randint(1, 11, (2, 6), generator=_gen(7))
  label_ids[:, 0] = 0
  images_f = jnp.asarray(_np(images).transpose(0, 1, 3, 4, 2))
  variables = convert_torch.torch_to_flax(net.state_dict(), _template(
      model, images_f, jnp.asarray(_np(reports)), jnp.asarray(_np(label_ids))))
  with torch.no_grad():
    expected = net(images, reports, label_ids)
  got = jax.jit(lambda v, i, r, l: model.apply(v, i, r, l))(
      variables, images_f, jnp.asarray(_np(reports)), jnp.asarray(_np(label_ids)))
  np.testing.assert_array_equal(got["label_tokens"], _np(expected["label_tokens"]))
  assert (got["label_tokens"] > 0).sum() >= 3   # predicted labels reach the encoder
  for key in ("label_class_logits", "label_token_logits", "logits"):
    e = _np(expected[key])
    np.testing.assert_allclose(got[key], e, atol=1e-4 * max(1.0, np.abs(e).max()), err_msg=key)


@pytest.mark.parametrize("extractor_batch", ["per_view", "joint"])
def test_extractor_batchnorm_per_view_as_r2gen(extractor_batch):
  """Train mode: 'per_view' equals R2Gen's two extractor calls (features and running statistics, the
  second view's update applied after the first's); 'joint' (one batch of both views) does not."""
  torch.manual_seed(0)
  net = ref.JPG(**TINY).train()
  model = jpg_lib.JPG(**TINY, extractor_batch=extractor_batch)
  images = torch.randn(3, 2, 3, 64, 64, generator=_gen(8))
  images[:, 1] = images[:, 1] * 2.0 + 1.0   # the views' statistics differ, as frontal and lateral do
  images_f = jnp.asarray(_np(images).transpose(0, 1, 3, 4, 2))
  variables = convert_torch.torch_to_flax(net.state_dict(), _template(
      model, images_f, jnp.zeros((3, 4), jnp.int32), jnp.zeros((3, 6), jnp.int32)))
  expected = _np(net.extract(images))
  got, updates = jax.jit(lambda v, x: model.apply(v, x, True, method=jpg_lib.JPG.extract,
                                                   mutable=["batch_stats"]))(variables, images_f)
  running = updates["batch_stats"]["visual_extractor"]["bn1"]["mean"]
  same = (np.allclose(got, expected, atol=1e-4 * np.abs(expected).max())
          and np.allclose(running, _np(net.visual_extractor.bn1.running_mean), atol=1e-5))
  assert same == (extractor_batch == "per_view")
