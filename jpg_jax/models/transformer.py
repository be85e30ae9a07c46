"""The Transformer encoder-decoder of JPG (Sec. 3.5, Eqs. 12-13), in R2Gen's form.

R2Gen (the backbone of BASE and of the numbers JPG compares with): d_model 512, d_ff 512, 8 heads,
3 layers, dropout 0.1, pre-LayerNorm sublayers ``x + dropout(sublayer(norm(x)))`` with a final norm after
each stack, xavier-uniform weights, sinusoidal positions on the decoder side only (the visual memory has
none), and a LayerNorm of the form ``scale * (x - mean) / (std_unbiased + eps) + bias`` with eps 1e-6
(``layer_norm='r2gen'``; ``'standard'`` is flax's LayerNorm).

Incremental decoding keeps a key/value cache per self-attention layer (``decode=True``, the ``cache``
collection, flax's WMT pattern). The cross-attention weights of decoder layer ``attention_layer`` are sown
into ``intermediates/.../cross_attention`` for visualisation (Fig. 4 uses the first decoder layer).

Two baselines of Table 2 are switches here (``jpg_jax/models/memory.py``): ``relational_memory`` gives the
decoder R2Gen's relational memory, read by a memory-driven conditional LayerNorm in every decoder sublayer
(its state is cached while decoding), and ``text_memory`` (a module shared with the visual side: CMN's
cross-modal memory) adds the memory's response to the positioned text features; ``Encoder.positions``
adds sinusoidal positions to the encoder's inputs, as CMN's ``src_embed`` does.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jpg_jax.models import memory as memory_lib
from jpg_jax.models import resnet   # remat_policy: the one table of checkpoint policies
from jpg_jax.models.layers import MultiHeadAttention
from jpg_jax.models.layers import layer_norm

xavier = nn.initializers.xavier_uniform()


def sinusoid_table(length: int, d_model: int) -> np.ndarray:
  pos = np.arange(length)[:, None]
  div = np.exp(np.arange(0, d_model, 2) * -(np.log(10000.0) / d_model))
  pe = np.zeros((length, d_model), np.float32)
  pe[:, 0::2], pe[:, 1::2] = np.sin(pos * div), np.cos(pos * div)
  return pe


def causal_mask(length: int) -> jax.Array:
  return jnp.tril(jnp.ones((length, length), bool))


class FeedForward(nn.Module):
  d_model: int
  d_ff: int
  dropout: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    y = nn.relu(nn.Dense(self.d_ff, dtype=self.dtype, kernel_init=xavier, name="w_1")(x))
    y = nn.Dropout(self.dropout)(y, deterministic=not train)
    return nn.Dense(self.d_model, dtype=self.dtype, kernel_init=xavier, name="w_2")(y)


class EncoderLayer(nn.Module):
  d_model: int
  d_ff: int
  num_heads: int
  dropout: float
  layer_norm: str
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask, train: bool):
    drop = lambda y: nn.Dropout(self.dropout)(y, deterministic=not train)
    y = layer_norm(self.layer_norm, self.dtype, "norms_0")(x)
    x = x + drop(MultiHeadAttention(self.num_heads, self.d_model, self.dropout, self.dtype,
                                    name="self_attn")(y, y, mask, train)[0])
    y = layer_norm(self.layer_norm, self.dtype, "norms_1")(x)
    return x + drop(FeedForward(self.d_model, self.d_ff, self.dropout, self.dtype,
                                name="feed_forward")(y, train))


class DecoderLayer(nn.Module):
  d_model: int
  d_ff: int
  num_heads: int
  dropout: float
  layer_norm: str
  sow_attention: bool = False
  dtype: Any = jnp.float32
  conditional_norm: bool = False    # R2Gen's MCLN in each sublayer, conditioned on its relational memory

  @nn.compact
  def __call__(self, x, memory, memory_mask, self_mask, train: bool, decode: bool = False, condition=None):
    """``condition``: the relational memory after each position (B, L, slots * d), with ``conditional_norm``."""
    drop = lambda y: nn.Dropout(self.dropout)(y, deterministic=not train)

    def norm(i, y):
      if self.conditional_norm:
        return memory_lib.ConditionalLayerNorm(dtype=self.dtype, name=f"norms_{i}")(y, condition)
      return layer_norm(self.layer_norm, self.dtype, f"norms_{i}")(y)

    y = norm(0, x)
    x = x + drop(MultiHeadAttention(self.num_heads, self.d_model, self.dropout, self.dtype,
                                    name="self_attn")(y, y, self_mask, train, decode)[0])
    y = norm(1, x)
    out, weights = MultiHeadAttention(self.num_heads, self.d_model, self.dropout, self.dtype,
                                      name="src_attn")(y, memory, memory_mask, train)
    if self.sow_attention:
      self.sow("intermediates", "cross_attention", weights)
    x = x + drop(out)
    y = norm(2, x)
    return x + drop(FeedForward(self.d_model, self.d_ff, self.dropout, self.dtype,
                                name="feed_forward")(y, train))


def remat_layer(layer_cls, remat: str, static_argnums: tuple[int, ...]):
  """``layer_cls`` rematerialised in the backward pass under the ``jax.checkpoint_policies`` policy
  ``remat`` (``resnet.remat_policy``); ``layer_cls`` itself where ``remat`` is ''. Argument 0 is the
  module, so ``static_argnums`` count from 1 (the ``train`` and ``decode`` flags)."""
  if not remat:
    return layer_cls
  return nn.remat(layer_cls, policy=resnet.remat_policy(remat), static_argnums=static_argnums)


class Encoder(nn.Module):
  """``{z_1..z_p, z_c} = f_e(r_x1..r_xp, c)`` (Eq. 12); inputs are already d_model-sized."""
  num_layers: int = 3
  d_model: int = 512
  d_ff: int = 512
  num_heads: int = 8
  dropout: float = 0.1
  layer_norm: str = "r2gen"
  dtype: Any = jnp.float32
  remat: str = ""                   # layers rematerialised in training (remat_layer)
  positions: bool = False           # CMN: sinusoidal positions (and dropout) on the inputs; R2Gen: none
  max_length: int = 512

  @nn.compact
  def __call__(self, x, mask, train: bool):
    """x: (B, S, d); mask: (B, S) bool, True for real positions."""
    if self.positions:
      pe = jnp.asarray(sinusoid_table(self.max_length, self.d_model))[:x.shape[1]]
      x = nn.Dropout(self.dropout)((x + pe).astype(self.dtype), deterministic=not train)
    attn_mask = mask[:, None, None, :]
    layer_cls = remat_layer(EncoderLayer, self.remat if train else "", static_argnums=(3,))
    for i in range(self.num_layers):
      x = layer_cls(self.d_model, self.d_ff, self.num_heads, self.dropout, self.layer_norm,
                    self.dtype, name=f"layers_{i}")(x, attn_mask, train)
    return layer_norm(self.layer_norm, self.dtype, "norm")(x)


class Decoder(nn.Module):
  """``y_i = f_d(z, r_y1..r_y(i-1))`` (Eq. 13): hidden states of the decoder (logits are the caller's)."""
  num_layers: int = 3
  d_model: int = 512
  d_ff: int = 512
  num_heads: int = 8
  dropout: float = 0.1
  layer_norm: str = "r2gen"
  attention_layer: int = 0
  max_length: int = 512
  dtype: Any = jnp.float32
  remat: str = ""                   # layers rematerialised in training (remat_layer); never when decoding
  relational_memory: bool = False   # R2Gen: a relational memory over the inputs conditions every LayerNorm
  rm_num_slots: int = 3
  rm_num_heads: int = 8
  text_memory: Any = None           # CMN: a CrossModalMemory module (shared with the visual side)

  @nn.compact
  def __call__(self, y, memory, memory_mask, target_mask, train: bool, decode: bool = False):
    """y: (B, L, d) aligned textual features; memory_mask: (B, S) bool; target_mask: (B, L) bool
    padding mask (ignored when decoding, where the cache holds the past)."""
    offset = 0
    if decode:
      ready = self.has_variable("cache", "position")
      position = self.variable("cache", "position", lambda: jnp.array(0, jnp.int32))
      if ready:
        offset, position.value = position.value, position.value + y.shape[1]
    pe = jax.lax.dynamic_slice_in_dim(jnp.asarray(sinusoid_table(self.max_length, self.d_model)),
                                      offset, y.shape[1])
    x = nn.Dropout(self.dropout)((y + pe).astype(self.dtype), deterministic=not train)
    if self.text_memory is not None:
      x = x + self.text_memory(x, train)
    condition = self.relational_states(y + pe, train, decode, offset) if self.relational_memory else None
    length = y.shape[1]
    self_mask = causal_mask(length)[None, None] & target_mask[:, None, None, :]
    cross_mask = memory_mask[:, None, None, :]
    layer_cls = remat_layer(DecoderLayer, self.remat if train and not decode else "", static_argnums=(5, 6))
    for i in range(self.num_layers):
      x = layer_cls(self.d_model, self.d_ff, self.num_heads, self.dropout, self.layer_norm,
                    i == self.attention_layer, self.dtype, self.relational_memory, name=f"layers_{i}")(
                        x, memory, cross_mask, self_mask, train, decode, condition)
    return layer_norm(self.layer_norm, self.dtype, "norm")(x)

  def relational_states(self, positioned, train: bool, decode: bool, offset=0):
    """R2Gen's ``rm(tgt_embed(tgt), init_memory)``: the memory after each position (B, L, slots * d). Its
    input is the positioned embedding under its own dropout draw (R2Gen calls ``tgt_embed`` twice). While
    decoding, the memory after the last token is cached, and position 0 starts from the initial memory."""
    b = positioned.shape[0]
    inputs = nn.Dropout(self.dropout)(positioned.astype(self.dtype), deterministic=not train)
    start = memory_lib.initial_memory(b, self.rm_num_slots, self.d_model, self.dtype)
    rm = memory_lib.RelationalMemory(self.rm_num_slots, self.d_model, self.rm_num_heads, self.dropout,
                                     not train, self.dtype, name="rm")
    if not decode:
      return rm(start, inputs)[1]
    ready = self.has_variable("cache", "rm_memory")
    cached = self.variable("cache", "rm_memory", jnp.zeros, start.shape, start.dtype)
    if not ready:
      return rm(start, inputs)[1]
    last, states = rm(jnp.where(offset == 0, start, cached.value), inputs)
    cached.value = last
    return states
