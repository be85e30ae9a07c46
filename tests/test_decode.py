"""Beam search: exact on a tiny vocabulary (against exhaustive search), greedy at beam 1, and JPG's
cached decoding."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jpg_jax import decode

V, MAX_LEN, BATCH = 3, 4, 3   # tokens {0 = EOS, 1, 2}


def _table(seed):
  """A toy autoregressive model: log-probs depend on the whole prefix (a hash of it) and the example."""
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.normal(0, 1.5, (BATCH, 64, V)), jnp.float32)


def _prefix_code(prefix):
  code = 1
  for t in prefix:
    code = (code * 5 + int(t) + 1) % 64
  return code


def _step_fn(table, beam):
  def step(state, tokens):
    codes, example = state
    codes = (codes * 5 + tokens[:, 0] + 1) % 64
    logits = table[example, codes]
    return logits[:, None], (codes, example)
  return step


def _init_state(beam):
  example = jnp.repeat(jnp.arange(BATCH), beam)
  # The state is the code of the prefix read so far (_prefix_code([]) == 1); the first call reads BOS.
  codes = jnp.full((BATCH * beam,), 1, jnp.int32)
  return codes, example


def _exhaustive(table, b):
  """Best score over every sequence ending in EOS within MAX_LEN tokens, or MAX_LEN tokens without EOS."""
  best, best_seq = -np.inf, None
  for n in range(1, MAX_LEN + 1):
    for seq in itertools.product(range(V), repeat=n):
      if any(t == 0 for t in seq[:-1]) or (n < MAX_LEN and seq[-1] != 0):
        continue
      score = sum(np.asarray(jax.nn.log_softmax(table[b, _prefix_code([0] + list(seq[:k]))]))[seq[k]]
                  for k in range(n))
      if score > best:
        best, best_seq = score, seq
  return best, best_seq


@pytest.mark.parametrize("policy", decode.POLICIES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_search_equals_exhaustive_search(seed, policy):
  table = _table(seed)
  beam = V ** MAX_LEN   # wide enough to be exact
  tokens, scores, _, _ = jax.jit(lambda s: decode.beam_search(_step_fn(table, beam), s, BATCH, beam, MAX_LEN,
                                                              policy))(_init_state(beam))
  for b in range(BATCH):
    best, seq = _exhaustive(table, b)
    np.testing.assert_allclose(scores[b], best, rtol=1e-5)
    expected = list(seq) + [0] * (MAX_LEN - len(seq))
    np.testing.assert_array_equal(tokens[b], expected)


@pytest.mark.parametrize("seed", [0, 3])
def test_beam_one_is_greedy(seed):
  table = _table(seed)
  tokens, scores, _, _ = decode.beam_search(_step_fn(table, 1), _init_state(1), BATCH, 1, MAX_LEN)
  for b in range(BATCH):   # the argmax path, by hand
    prefix, total = [], 0.0
    while len(prefix) < MAX_LEN and (not prefix or prefix[-1] != 0):
      logp = np.asarray(jax.nn.log_softmax(table[b, _prefix_code([0] + prefix)]))
      prefix.append(int(logp.argmax()))
      total += logp.max()
    np.testing.assert_array_equal(tokens[b], prefix + [0] * (MAX_LEN - len(prefix)))
    np.testing.assert_allclose(scores[b], total, rtol=1e-5)


def test_small_beam_is_never_worse_than_greedy():
  table = _table(7)
  _, greedy_scores = decode.greedy(_step_fn(table, 1), _init_state(1), BATCH, MAX_LEN)
  _, beam_scores, _, _ = decode.beam_search(_step_fn(table, 3), _init_state(3), BATCH, 3, MAX_LEN)
  assert np.all(np.asarray(beam_scores) >= np.asarray(greedy_scores) - 1e-6)


def _r2gen_tables(seed, batch, vocab, eos_boost):
  rng = np.random.default_rng(seed)
  table = rng.normal(0, 2.0, (batch, 64, vocab)).astype(np.float32)
  table[..., 0] += eos_boost   # EOS often among the best continuations, mid-search
  return table


def _compare_with_r2gen(seed):
  """Asserts ids and scores equal to R2Gen's own search; returns whether 'live_beams' found other ids."""
  import torch
  import torch_reference as ref
  batch, vocab, beam, max_len = 5, 9, 3, 10
  table = _r2gen_tables(seed, batch, vocab, eos_boost=1.0)
  step = lambda state, tokens: ((lambda codes: (jnp.asarray(table)[state[1], codes][:, None], (codes, state[1])))(
      (state[0] * 5 + tokens[:, 0] + 1) % 64))
  example = jnp.repeat(jnp.arange(batch), beam)
  tokens, scores, _, _ = jax.jit(lambda s: decode.beam_search(step, s, batch, beam, max_len, "r2gen"))(
      (jnp.full((batch * beam,), 1, jnp.int32), example))
  live, live_scores, _, _ = jax.jit(lambda s: decode.beam_search(step, s, batch, beam, max_len, "live_beams"))(
      (jnp.full((batch * beam,), 1, jnp.int32), example))

  t_table = torch.tensor(table)
  first = torch.full((batch,), _prefix_code([0]))
  init_logprobs = torch.log_softmax(t_table[torch.arange(batch), first], -1)

  def get_logprobs_state(it, state):
    codes, ex = state[0][0], state[1][0]
    codes = (codes * 5 + it + 1) % 64
    return t_table[ex, codes], [codes[None], ex[None]]

  done = ref.r2gen_beam_search(init_logprobs, get_logprobs_state, [first[None], torch.arange(batch)[None]],
                               beam, max_len)
  for b in range(batch):
    seq = [int(t) for t in done[b][0]["seq"]]
    np.testing.assert_array_equal(np.asarray(tokens[b]), seq + [0] * (max_len - len(seq)))
    np.testing.assert_allclose(float(scores[b]), done[b][0]["p"], rtol=1e-6, atol=1e-5)
  return bool(np.any(np.asarray(live) != np.asarray(tokens)))


@pytest.mark.parametrize("seed", range(6))
def test_r2gen_policy_equals_r2gens_own_beam_search(seed):
  """Ids and scores equal to a transcription of R2Gen's CaptionModel.beam_search (tests/torch_reference.py)
  on random step tables whose log-probs depend on the whole prefix."""
  _compare_with_r2gen(seed)


def test_live_beams_policy_differs_from_r2gens():
  """The two rules are not the same search: over these tables 'live_beams' returns other reports."""
  assert any(_compare_with_r2gen(seed) for seed in range(6))


def test_jpg_beam_search_scores_match_teacher_forcing():
  """The cached decoder's beam search returns hypotheses whose scores equal the full model's log-prob."""
  from jpg_jax.models import jpg as jpg_lib
  model = jpg_lib.JPG(vocab_size=7, num_labels=3, num_label_tokens=6, resnet_depth=10, num_bases=8,
                      d_model=16, d_ff=16, num_heads=2, num_layers=1, label_hidden=16)
  images = jax.random.normal(jax.random.key(0), (2, 2, 32, 32, 3))
  # Each model call jitted: run eagerly, they dispatch hundreds of small programs, each compiled apart.
  variables = jax.jit(model.init)(jax.random.key(1), images, jnp.zeros((2, 6), jnp.int32),
                                  jnp.zeros((2, 6), jnp.int32))
  beam, max_len = 3, 6
  memory, mask, _ = jax.jit(functools.partial(model.apply, method=jpg_lib.JPG.encode),
                            static_argnums=2)(variables, images, False)
  mem_t, mask_t = decode.tile_beams((memory, mask), beam)
  cache = decode.init_cache(model, variables, mem_t, mask_t, max_len)
  tokens, scores, _, _ = decode.beam_search(decode.report_step_fn(model, variables, mem_t, mask_t), cache, 2,
                                            beam, max_len)
  # The full decoder, jitted once on a fixed length: R2Gen's masks are causal, so the zeros after a
  # prefix change nothing at the prefix's positions (eagerly, every prefix length compiled its own ops).
  full = jax.jit(functools.partial(model.apply, train=False, method=jpg_lib.JPG.decode))
  for b in range(2):
    seq = [int(t) for t in tokens[b]]
    n = seq.index(0) + 1 if 0 in seq else max_len
    ids = jnp.asarray([[0] + seq + [0] * (max_len - len(seq))])
    logp = jax.nn.log_softmax(full(variables, ids, memory[b:b + 1], mask[b:b + 1])[0])
    total = sum(float(logp[k, seq[k]]) for k in range(n))
    np.testing.assert_allclose(scores[b], total, rtol=1e-4, atol=1e-4)
  generate = jax.jit(functools.partial(decode.generate_reports, model), static_argnames=("beam", "max_len"))
  generated, _ = generate(variables, images, beam=beam, max_len=max_len)
  np.testing.assert_array_equal(generated, tokens)
  # Greedy through the cache equals argmax decoding with the full (uncached) decoder.
  greedy, _ = generate(variables, images, beam=1, max_len=max_len)
  ids = np.zeros((2, max_len + 1), np.int32)
  for k in range(max_len):
    logits = full(variables, jnp.asarray(ids), memory, mask)
    ids[:, k + 1] = np.asarray(jnp.argmax(logits[:, k], -1))
  expected = ids[:, 1:]
  for b in range(2):
    row = list(expected[b])
    if 0 in row:
      row = row[: row.index(0)] + [0] * (max_len - row.index(0))
    np.testing.assert_array_equal(greedy[b], row)
