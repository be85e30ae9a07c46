"""Batched beam search and greedy decoding with static shapes, jit-able (flax WMT's pattern).

The search is generic over a ``step_fn(state, tokens) -> (logits, state)`` whose state is a pytree of
arrays with a leading ``batch * beam`` axis (scalars, like a cache index, are shared): the Transformer
decoder's key/value cache for reports, the GRU's hidden state for labels.

Scoring is R2Gen's: a hypothesis scores the sum of its tokens' log-probabilities, EOS included, with no
length penalty; a beam that emits EOS is finished and keeps its score; hypotheses still alive after
``max_len`` tokens are finished as they are; the answer is the finished hypothesis with the highest score.
Because scores only decrease as a hypothesis grows, the loop stops as soon as no live beam can beat the
best finished one (the same answer as running all ``max_len`` steps; the other finished hypotheses it
returns are then the best found so far).

Id 0 is BOS and EOS (R2Gen's convention). Outputs are ``(batch, max_len)`` token arrays, zero after EOS.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

EOS = BOS = 0
NEG_INF = -1.0e7

StepFn = Callable[[Any, jax.Array], tuple[jax.Array, Any]]


def _map_batch(fn, state, batch_beam: int):
  """Applies ``fn`` to every state array whose leading axis is batch * beam."""
  return jax.tree.map(lambda x: fn(x) if x.ndim and x.shape[0] == batch_beam else x, state)


def tile_beams(state, beam: int):
  """(B, ...) -> (B * beam, ...), each example repeated ``beam`` times consecutively."""
  return jax.tree.map(lambda x: jnp.repeat(x, beam, axis=0) if x.ndim else x, state)


def greedy(step_fn: StepFn, state, batch: int, max_len: int):
  """Argmax decoding; returns (tokens (B, max_len), summed log-probs (B,))."""

  def body(carry):
    t, tokens, scores, done, st = carry
    logits, st = step_fn(st, tokens[:, jnp.maximum(t - 1, 0)][:, None] * (t > 0))
    logp = jax.nn.log_softmax(logits[:, -1].astype(jnp.float32))
    nxt = jnp.argmax(logp, -1).astype(jnp.int32)
    scores = scores + jnp.where(done, 0.0, jnp.take_along_axis(logp, nxt[:, None], -1)[:, 0])
    nxt = jnp.where(done, EOS, nxt)
    return t + 1, tokens.at[:, t].set(nxt), scores, done | (nxt == EOS), st

  init = (0, jnp.zeros((batch, max_len), jnp.int32), jnp.zeros((batch,)), jnp.zeros((batch,), bool), state)
  _, tokens, scores, _, _ = jax.lax.while_loop(lambda c: (c[0] < max_len) & ~jnp.all(c[3]), body, init)
  return tokens, scores


POLICIES = ("r2gen", "live_beams")
R2GEN_END_PENALTY = 1000.0   # R2Gen's ``beam_logprobs_sum[b, is_end] -= 1000``


def beam_search(step_fn: StepFn, state, batch: int, beam: int, max_len: int, policy: str = "r2gen"):
  """Beam search. ``state`` must already be tiled to ``batch * beam`` (``tile_beams``).

  ``policy`` picks the rule that fills the beam at each step:

  * ``'r2gen'`` (default): R2Gen's ``beam_step`` (``modules/caption_model.py``). The ``beam`` best of all
    ``beam x vocab`` continuations are kept, EOS included; a kept EOS finishes that hypothesis (it joins
    the finished list with its score) and still holds its slot for the step, its score lowered by 1000 so
    that its continuations only fill slots no live hypothesis wants.
  * ``'live_beams'``: every EOS among the best ``2 x beam`` continuations finishes, and the ``beam`` best
    non-EOS continuations stay live (flax WMT's rule). It returns shorter, higher-scoring reports than
    R2Gen's, sometimes empty ones.

  Returns (best tokens (B, max_len), best scores (B,), the ``beam`` best finished (B, beam, max_len), their
  scores). At ``beam == 1`` this is greedy decoding, as R2Gen's sampler at beam size 1.
  """
  if policy not in POLICIES:
    raise ValueError(f"Unknown beam search policy {policy!r}; choose from {POLICIES}.")
  if beam == 1:
    tokens, scores = greedy(step_fn, state, batch, max_len)
    return tokens, scores, tokens[:, None], scores[:, None]
  bk = batch * beam
  live_seqs = jnp.zeros((batch, beam, max_len), jnp.int32)
  # Only the first beam is live at the start, so the first step does not pick the same token K times.
  live_scores = jnp.tile(jnp.array([0.0] + [NEG_INF] * (beam - 1)), (batch, 1))
  fin_seqs = jnp.zeros((batch, beam, max_len), jnp.int32)
  fin_scores = jnp.full((batch, beam), NEG_INF)
  width = beam if policy == "r2gen" else 2 * beam

  def cond(carry):
    t, _, live_scores, _, fin_scores, _ = carry
    can_improve = jnp.max(live_scores, axis=1) > fin_scores[:, 0]
    return (t < max_len) & jnp.any(can_improve)

  def body(carry):
    t, live_seqs, live_scores, fin_seqs, fin_scores, st = carry
    prev = jnp.where(t > 0, live_seqs[:, :, jnp.maximum(t - 1, 0)], BOS).reshape(bk, 1)
    logits, st = step_fn(st, prev)
    logp = jax.nn.log_softmax(logits[:, -1].astype(jnp.float32)).reshape(batch, beam, -1)
    vocab = logp.shape[-1]
    cand = (live_scores[..., None] + logp).reshape(batch, beam * vocab)
    top_scores, top_idx = jax.lax.top_k(cand, width)
    src_beam, token = top_idx // vocab, (top_idx % vocab).astype(jnp.int32)
    seqs = jnp.take_along_axis(live_seqs, src_beam[..., None], axis=1).at[:, :, t].set(token)
    ended = (token == EOS) | (t == max_len - 1)
    # Finished: the candidates that end (EOS, or any at the last step), merged into the best `beam` so
    # far; earlier ones first, so that ties go to the earlier hypothesis as in R2Gen's stable sort.
    all_scores = jnp.concatenate([fin_scores, jnp.where(ended, top_scores, NEG_INF)], axis=1)
    all_seqs = jnp.concatenate([fin_seqs, seqs], axis=1)
    fin_scores, keep = jax.lax.top_k(all_scores, beam)
    fin_seqs = jnp.take_along_axis(all_seqs, keep[..., None], axis=1)
    if policy == "r2gen":
      live_scores = top_scores - R2GEN_END_PENALTY * ended
      live_seqs, origin = seqs, src_beam
    else:
      live_scores, keep = jax.lax.top_k(jnp.where(token == EOS, NEG_INF, top_scores), beam)
      live_seqs = jnp.take_along_axis(seqs, keep[..., None], axis=1)
      origin = jnp.take_along_axis(src_beam, keep, axis=1)            # (B, beam) beam of origin
    flat = (origin + jnp.arange(batch)[:, None] * beam).reshape(bk)
    st = _map_batch(lambda x: x[flat], st, bk)
    return t + 1, live_seqs, live_scores, fin_seqs, fin_scores, st

  carry = (0, live_seqs, live_scores, fin_seqs, fin_scores, state)
  _, _, _, fin_seqs, fin_scores, _ = jax.lax.while_loop(cond, body, carry)
  return fin_seqs[:, 0], fin_scores[:, 0], fin_seqs, fin_scores


# ---------------------------------------------------------------------------------------------- JPG
def report_step_fn(model, variables, memory, memory_mask):
  """The Transformer decoder as a step function over its key/value cache."""
  from jpg_jax.models import jpg as jpg_lib

  def step(cache, tokens):
    logits, mutated = model.apply({**variables, "cache": cache}, tokens, memory, memory_mask, False, True,
                                  method=jpg_lib.JPG.decode, mutable=["cache"])
    return logits, mutated["cache"]

  return step


def init_cache(model, variables, memory, memory_mask, max_len: int):
  """A zero key/value cache for ``memory.shape[0]`` sequences of up to ``max_len`` tokens."""
  from jpg_jax.models import jpg as jpg_lib
  ids = jnp.zeros((memory.shape[0], max_len), jnp.int32)
  shapes = jax.eval_shape(lambda: model.apply(variables, ids, memory, memory_mask, False, True,
                                              method=jpg_lib.JPG.decode, mutable=["cache"])[1]["cache"])
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def generate_reports(model, variables, images, *, beam: int = 3, max_len: int = 60, policy: str = "r2gen"):
  """Encodes the images once, then decodes reports. Returns (tokens (B, max_len), encoder outputs)."""
  from jpg_jax.models import jpg as jpg_lib
  memory, memory_mask, out = model.apply(variables, images, False, method=jpg_lib.JPG.encode)
  batch = memory.shape[0]
  if beam > 1:
    memory, memory_mask = tile_beams((memory, memory_mask), beam)
  cache = init_cache(model, variables, memory, memory_mask, max_len)
  step = report_step_fn(model, variables, memory, memory_mask)
  tokens, _, _, _ = beam_search(step, cache, batch, beam, max_len, policy)
  return tokens, out


def label_step_fn(model, variables):
  """The GRU label decoder as a step function over its hidden state."""

  def step(h, tokens):
    h, logits = model.apply(variables, h, tokens[:, 0], method=lambda m, h, t: m.labeler.step(h, t))
    return logits[:, None], h

  return step


def generate_labels(model, variables, images, *, beam: int = 1):
  """Label class logits and label token sequences (B, steps) by greedy or beam search."""

  def embed(m, images):
    grids = m.extract(images, False)
    return m.labeler.embed(m.label_input(grids, m.align_visual(grids, False)), False)

  h0, class_logits = model.apply(variables, images, method=embed)
  steps = model.label_steps
  step = label_step_fn(model, variables)
  tokens, _, _, _ = beam_search(step, tile_beams(h0, beam), h0.shape[0], beam, steps)
  return class_logits, tokens
