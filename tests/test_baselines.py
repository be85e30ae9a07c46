"""R2Gen and CMN (Table 2's strongest baselines) as switches of the one model, against transcriptions of
their own code (``tests/torch_reference.py``: R2Gen's ``encoder_decoder.py``, R2GenCMN's ``base_cmn.py``)
with their own parameter names: the whole model's forward pass and its beam search, in float32, with the
weights carried over by ``convert_torch.rename_r2gen`` + ``torch_to_flax``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from configs import jpg as jpg_config  # noqa: E402
from jpg_jax import decode  # noqa: E402
from jpg_jax.models import jpg as jpg_lib  # noqa: E402
from jpg_jax.models import memory as memory_lib  # noqa: E402
from jpg_jax.tools import convert_torch  # noqa: E402
from tests import torch_reference as ref  # noqa: E402

torch.set_num_threads(2)

VOCAB = 30          # words; logits have VOCAB + 1 entries (id 0: BOS/EOS/PAD)
DIMS = dict(d_model=32, d_ff=48, num_heads=4, num_layers=2, dropout=0.1)
JAX_BASE = dict(vocab_size=VOCAB + 1, num_labels=1, num_label_tokens=2, resnet_depth=18, use_subspace=False,
                use_labeler=False, labels_in_encoder=False, **DIMS)
KINDS = {
    "r2gen": (dict(rm_num_slots=3, rm_num_heads=4), dict(relational_memory=True, rm_num_slots=3, rm_num_heads=4)),
    "cmn": (dict(topk=8, cmm_size=64), dict(cross_modal_memory=True, cmm_size=64, cmm_top_k=8,
                                            visual_positions=True)),
}


def _np(t):
  return t.detach().numpy()


def _pair(kind, seed=0):
  """A torch original (eval mode, random BatchNorm statistics) and the Flax model with its weights."""
  torch_kw, jax_kw = KINDS[kind]
  torch.manual_seed(seed)
  net = ref.R2GenModel(kind, VOCAB, depth=18, **DIMS, **torch_kw).eval()
  with torch.no_grad():
    ref.randomize_batchnorm(net, torch.Generator().manual_seed(seed + 1))
    net.encoder_decoder.logit.bias[0] = -2.0     # EOS less likely: beams run for a while
  model = jpg_lib.JPG(**JAX_BASE, **jax_kw)
  images = jnp.zeros((1, 2, 64, 64, 3))
  template = jax.eval_shape(lambda: model.init(jax.random.key(0), images, jnp.zeros((1, 8), jnp.int32)))
  state_dict = net.state_dict()
  if kind == "cmn":   # as saved from torch.nn.DataParallel (the originals' n_gpu > 1)
    state_dict = {f"module.{k}": v for k, v in state_dict.items()}
  variables = convert_torch.torch_to_flax(convert_torch.rename_r2gen(state_dict), template)
  return net, model, variables


def _inputs(seed=2):
  g = torch.Generator().manual_seed(seed)
  images = torch.randn(2, 2, 3, 64, 64, generator=g)
  reports = torch.randint(1, VOCAB + 1, (2, 12), generator=g)
  reports[:, 0] = 0
  reports[1, 8:] = 0
  return images, reports, jnp.asarray(_np(images).transpose(0, 1, 3, 4, 2))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_forward_matches_the_original(kind):
  """Teacher-forced log-probs of the whole model (ResNet, att_embed, memory, encoder, decoder, logit)."""
  net, model, variables = _pair(kind)
  images, reports, images_f = _inputs()
  with torch.no_grad():
    expected = _np(net(images, reports))
  logits = jax.jit(lambda v, i, r: model.apply(v, i, r)["logits"])(variables, images_f, jnp.asarray(_np(reports)))
  got = jax.nn.log_softmax(logits, -1)
  np.testing.assert_allclose(got, expected, atol=1e-4 * max(1.0, np.abs(expected).max()))


def torch_beam_search(net, images, beam: int, max_len: int):
  """The original's beam search (R2Gen's ``_sample`` with its beam search) over ``images`` (B, 2, 3, H, W):
  per case, the finished beams best first (``done[b][0]["seq"]``)."""
  ed = net.encoder_decoder
  with torch.no_grad():
    att_feats, att_masks = ed.prepare(net.att_feats(images))
    hidden = ed.model.encode(att_feats, att_masks)
    first = torch.zeros(images.shape[0], 1, dtype=torch.long)
    init_logprobs = ed.core_logprobs(first, hidden, att_masks)
    hidden_b, masks_b = (x.repeat_interleave(beam, 0) for x in (hidden, att_masks))

    def get_logprobs_state(it, state):
      ys = torch.cat([state[0][0], it.unsqueeze(1)], dim=1)
      return ed.core_logprobs(ys, hidden_b, masks_b), [ys.unsqueeze(0)]

    return ref.r2gen_beam_search(init_logprobs, get_logprobs_state, [first.unsqueeze(0)], beam, max_len)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_beam_search_matches_the_original(kind):
  """Beam 3 over the incremental decoder (key/value cache; R2Gen: the relational memory's state, cached
  and reordered with the beams) gives the original's reports (R2Gen's recomputes the whole prefix a step,
  CMN's uses its own key/value cache)."""
  net, model, variables = _pair(kind, seed=3)
  images, _, images_f = _inputs(seed=4)
  beam, max_len = 3, 14
  done = torch_beam_search(net, images, beam, max_len)
  tokens, _ = jax.jit(lambda v, i: decode.generate_reports(model, v, i, beam=beam, max_len=max_len))(
      variables, images_f)
  lengths = []
  for b in range(2):
    seq = [int(t) for t in done[b][0]["seq"]]
    np.testing.assert_array_equal(np.asarray(tokens[b]), seq + [0] * (max_len - len(seq)))
    lengths.append(sum(t > 0 for t in seq))
  assert max(lengths) >= 4      # the search ran past its first steps


def test_relational_memory_cache_equals_the_whole_sequence():
  """Decoding token by token with the cached memory state gives the memories of one pass over all tokens."""
  rm = memory_lib.RelationalMemory(3, 16, 4, 0.1, True)
  ys = jax.random.normal(jax.random.key(0), (2, 7, 16))
  start = memory_lib.initial_memory(2, 3, 16)
  variables = rm.init(jax.random.key(1), start, ys)
  _, whole = rm.apply(variables, start, ys)
  state, steps = start, []
  for t in range(7):
    state, out = rm.apply(variables, state, ys[:, t:t + 1])
    steps.append(out[:, 0])
  np.testing.assert_allclose(jnp.stack(steps, 1), whole, atol=1e-6)
  np.testing.assert_array_equal(start[0].reshape(3, 16)[:, :3], np.eye(3))   # R2Gen's init_memory


@pytest.mark.parametrize("variant", ["r2gen", "cmn"])
def test_configs_are_base_plus_the_memory(variant):
  """``:r2gen`` and ``:cmn`` are BASE (no subspace, no labels) with the original's memory and settings."""
  c = jpg_config.get_config(variant)
  base = jpg_config.get_config("base")
  assert not c.model.use_subspace and not c.model.use_labeler and not c.model.labels_in_encoder
  assert c.model.relational_memory == (variant == "r2gen")
  assert c.model.cross_modal_memory == c.model.visual_positions == (variant == "cmn")
  if variant == "r2gen":
    # R2Gen's optimiser is the paper config's but for its own lr_ve (5e-5; the paper states one lr, 1e-4).
    assert c.optim.extractor_learning_rate == 5e-5
    assert {**c.optim.to_dict(), "extractor_learning_rate": None} == {**base.optim.to_dict(),
                                                                        "extractor_learning_rate": None}
  else:   # R2GenCMN's train_iu_xray.sh and main_train.py
    assert (c.optim.learning_rate, c.optim.extractor_learning_rate, c.optim.lr_step_epochs, c.optim.lr_gamma,
            c.optim.b2, c.optim.eps, c.optim.grad_clip_value) == (5e-4, 1e-4, 10, 0.8, 0.98, 1e-9, 0.0)
    assert (c.model.cmm_size, c.model.cmm_top_k) == (2048, 32)
  # On the embedded default the memory switches ride on the default's whole training (optimiser included).
  s = jpg_config.get_config(f"{variant},synthetic")
  assert s.optim.to_dict() == jpg_config.get_config("synthetic").optim.to_dict()
  assert s.train.to_dict() == jpg_config.get_config("synthetic,base").train.to_dict()
  assert s.model.relational_memory == c.model.relational_memory
