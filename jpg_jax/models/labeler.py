"""Context-aware disease prediction (JPG Sec. 3.4, Fig. 2 B, Fig. 3): a CNN classification head over the
aligned visual grids of the views (V of them), whose output embedding initialises a GRU that emits label tokens.

Heads (Fig. 3 compares them; the paper adopts GoogLeNet, Sec. 4.4), all with BatchNorm and dropout ("we
additionally apply mini-batch normalization and random data dropout"):

* ``googlenet``: one inception block (1x1 | 1x1-3x3 | 1x1-5x5 | pool-1x1, GoogLeNet's 3a widths),
  global average pooling per view;
* ``alexnet``: three 3x3 convolutions, a max-pool and a fully connected layer;
* ``nin``: two mlpconv blocks (3x3 then two 1x1 convolutions) and global average pooling.

Each head reads ``(B, V, h, w, C)`` grids and returns an embedding ``(B, hidden)`` (the GRU's h_0, "we
initialize the first decoder hidden state as the output embedding of the classification layer") and
multi-label logits ``(B, num_labels)``. The GRU unrolls ``steps`` (5) steps from BOS (id 0): teacher
forcing in training (Eq. 11), greedy decoding otherwise (beam search: ``jpg_jax.decode``).

``GRUCell`` keeps torch.nn.GRUCell's parameter layout (``weight_ih`` (3H, I), ``weight_hh`` (3H, H), gates
in the order r, z, n) so that PyTorch checkpoints and the parity tests map one to one.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class GRUCell(nn.Module):
  """h' = (1 - z) * n + z * h with r, z = sigmoid(.), n = tanh(W_in x + b_in + r * (W_hn h + b_hn))."""
  hidden: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h, x):
    H = self.hidden
    bound = 1.0 / H ** 0.5   # torch's U(-1/sqrt(H), 1/sqrt(H))
    uniform = lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)
    w_ih = self.param("weight_ih", uniform, (3 * H, x.shape[-1]))
    w_hh = self.param("weight_hh", uniform, (3 * H, H))
    b_ih = self.param("bias_ih", uniform, (3 * H,))
    b_hh = self.param("bias_hh", uniform, (3 * H,))
    gi = x.astype(self.dtype) @ w_ih.T.astype(self.dtype) + b_ih.astype(self.dtype)
    gh = h.astype(self.dtype) @ w_hh.T.astype(self.dtype) + b_hh.astype(self.dtype)
    i_r, i_z, i_n = jnp.split(gi, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(gh, 3, axis=-1)
    r, z = jax.nn.sigmoid(i_r + h_r), jax.nn.sigmoid(i_z + h_z)
    n = jnp.tanh(i_n + r * h_n)
    new_h = (1.0 - z) * n + z * h.astype(self.dtype)
    return new_h, new_h


def _merge_views(grids):
  b, v = grids.shape[:2]
  return grids.reshape((b * v,) + grids.shape[2:]), b, v


class _Head(nn.Module):
  """A classification head: ``(B, V, h, w, C)`` grids -> ``(B, hidden)`` embedding."""
  hidden: int = 512
  dropout: float = 0.2
  dtype: Any = jnp.float32


class GoogLeNetHead(_Head):
  @nn.compact
  def __call__(self, grids, train: bool):
    x, b, v = _merge_views(grids)
    conv = functools.partial(nn.Conv, dtype=self.dtype)
    b1 = conv(64, (1, 1), name="branch1")(x)
    b2 = conv(128, (3, 3), padding=1, name="branch2_1")(nn.relu(conv(96, (1, 1), name="branch2_0")(x)))
    b3 = conv(32, (5, 5), padding=2, name="branch3_1")(nn.relu(conv(16, (1, 1), name="branch3_0")(x)))
    b4 = conv(32, (1, 1), name="branch4")(nn.max_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1))))
    y = jnp.concatenate([b1, b2, b3, b4], axis=-1)
    y = nn.relu(nn.BatchNorm(not train, momentum=0.9, dtype=self.dtype, name="bn")(y))
    y = y.mean(axis=(1, 2)).reshape(b, v * y.shape[-1])
    y = nn.Dropout(self.dropout)(y, deterministic=not train)
    return nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="fc")(y))


class AlexNetHead(_Head):
  @nn.compact
  def __call__(self, grids, train: bool):
    x, b, v = _merge_views(grids)
    for i, ch in enumerate((192, 256, 256)):
      x = nn.relu(nn.Conv(ch, (3, 3), padding=1, dtype=self.dtype, name=f"conv_{i}")(x))
    x = nn.BatchNorm(not train, momentum=0.9, dtype=self.dtype, name="bn")(x)
    x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    x = x.reshape(b, -1)
    x = nn.Dropout(self.dropout)(x, deterministic=not train)
    return nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="fc")(x))


class NINHead(_Head):
  @nn.compact
  def __call__(self, grids, train: bool):
    x, b, v = _merge_views(grids)
    for blk, widths in enumerate(((192, 160, 96), (192, 192, self.hidden))):
      x = nn.relu(nn.Conv(widths[0], (3, 3), padding=1, dtype=self.dtype, name=f"mlpconv{blk}_0")(x))
      x = nn.relu(nn.Conv(widths[1], (1, 1), dtype=self.dtype, name=f"mlpconv{blk}_1")(x))
      x = nn.relu(nn.Conv(widths[2], (1, 1), dtype=self.dtype, name=f"mlpconv{blk}_2")(x))
      x = nn.BatchNorm(not train, momentum=0.9, dtype=self.dtype, name=f"bn{blk}")(x)
      if blk == 0:
        x = nn.Dropout(self.dropout)(x, deterministic=not train)
    x = x.mean(axis=(1, 2)).reshape(b, v, -1).mean(axis=1)
    return x


HEADS = {"googlenet": GoogLeNetHead, "alexnet": AlexNetHead, "nin": NINHead}


class Labeler(nn.Module):
  """Classification head + GRU label decoder."""
  num_labels: int                  # classes of the head (stage 1 patterns / stage 2 mined labels)
  num_label_tokens: int            # logits of the GRU: label tokens + id 0 (BOS/EOS/PAD)
  head: str = "googlenet"
  hidden: int = 512
  embed_dim: int = 512
  steps: int = 5
  dropout: float = 0.2
  dtype: Any = jnp.float32

  def setup(self):
    if self.head not in HEADS:
      raise ValueError(f"Unknown head {self.head!r}; choose from {sorted(HEADS)}.")
    self.classifier_head = HEADS[self.head](self.hidden, self.dropout, self.dtype)
    self.classifier = nn.Dense(max(self.num_labels, 1), dtype=self.dtype)
    self.label_embed = nn.Embed(self.num_label_tokens, self.embed_dim,
                                embedding_init=nn.initializers.xavier_uniform())
    self.gru = GRUCell(self.hidden, self.dtype)
    self.label_out = nn.Dense(self.num_label_tokens, dtype=self.dtype)

  def embed(self, grids, train: bool):
    """h_0 and the multi-label logits."""
    h0 = self.classifier_head(grids, train)
    return h0, self.classifier(h0)[..., : self.num_labels]

  def step(self, h, tokens):
    """One GRU step: previous tokens (B,) -> (new h, logits (B, num_label_tokens))."""
    h, out = self.gru(h, self.label_embed(tokens).astype(self.dtype))
    return h, self.label_out(out)

  def __call__(self, grids, label_ids, train: bool):
    """Teacher forcing. label_ids: (B, steps + 1) = [0] + tokens + [0]. Returns class logits (B, K) and
    token logits (B, steps, T) for the targets label_ids[:, 1:]."""
    h, class_logits = self.embed(grids, train)
    return class_logits, self.teacher_forced(h, label_ids)

  def teacher_forced(self, h, label_ids):
    """Token logits (B, steps, T) from h_0 for the targets label_ids[:, 1:] (Eq. 11)."""
    logits = []
    for t in range(self.steps):
      h, lg = self.step(h, label_ids[:, t])
      logits.append(lg)
    return jnp.stack(logits, axis=1)

  def greedy(self, grids, train: bool = False):
    """(class logits, tokens (B, steps)); positions after the first EOS are set to 0."""
    h, class_logits = self.embed(grids, train)
    return class_logits, self.greedy_tokens(h)

  def greedy_tokens(self, h):
    """Greedy label tokens (B, steps) from h_0, zero after the first EOS."""
    tok = jnp.zeros(h.shape[:1], jnp.int32)
    out = []
    for _ in range(self.steps):
      h, lg = self.step(h, tok)
      tok = jnp.argmax(lg, axis=-1).astype(jnp.int32)
      out.append(tok)
    tokens = jnp.stack(out, axis=1)
    return tokens * label_token_mask(tokens)


def label_token_mask(tokens):
  """1 for the tokens before the first 0 (EOS) of each row."""
  return (jnp.cumsum(tokens == 0, axis=-1) == 0).astype(tokens.dtype)
