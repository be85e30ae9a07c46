"""The layers R2Gen's Transformer and its memories share (``transformer.py``, ``memory.py``): its
LayerNorm (unbiased std, eps outside the root) and its multi-head attention with a key/value cache for
incremental decoding (flax's WMT pattern)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

NEG_INF = -1e9
LAYER_NORMS = ("r2gen", "standard")   # R2Gen's (unbiased std, eps outside the root) | flax's
xavier = nn.initializers.xavier_uniform()


class R2GenLayerNorm(nn.Module):
  """``scale * (x - mean) / (std + eps) + bias`` with the unbiased std, as R2Gen's LayerNorm."""
  eps: float = 1e-6
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (d,))
    bias = self.param("bias", nn.initializers.zeros, (d,))
    return (scale * r2gen_normalize(x, self.eps) + bias).astype(self.dtype)


def r2gen_normalize(x, eps: float = 1e-6):
  """``(x - mean) / (std + eps)`` over the last axis in float32, std unbiased (R2Gen's LayerNorm core)."""
  x32 = x.astype(jnp.float32)
  mean = x32.mean(-1, keepdims=True)
  std = jnp.sqrt(((x32 - mean) ** 2).sum(-1, keepdims=True) / (x.shape[-1] - 1))
  return (x32 - mean) / (std + eps)


def layer_norm(kind: str, dtype, name: str) -> nn.Module:
  if kind == "r2gen":
    return R2GenLayerNorm(dtype=dtype, name=name)
  if kind == "standard":
    return nn.LayerNorm(epsilon=1e-6, dtype=dtype, name=name)
  raise ValueError(f"Unknown layer_norm {kind!r}; choose from {LAYER_NORMS}.")


class MultiHeadAttention(nn.Module):
  """R2Gen's MultiHeadedAttention (four linears q, k, v, o); returns (output, attention weights)."""
  num_heads: int
  d_model: int
  dropout: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, queries, keys_values, mask, train: bool, decode: bool = False):
    h, dk = self.num_heads, self.d_model // self.num_heads
    dense = lambda name: nn.Dense(self.d_model, dtype=self.dtype, kernel_init=xavier, name=name)
    split = lambda t: t.reshape(t.shape[:-1] + (h, dk))
    q, k, v = split(dense("q")(queries)), split(dense("k")(keys_values)), split(dense("v")(keys_values))
    if decode:  # Self-attention over a key/value cache, one new position per call.
      ready = self.has_variable("cache", "cached_key")
      ck = self.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
      cv = self.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
      index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
      if ready:
        i = index.value
        k = jax.lax.dynamic_update_slice(ck.value, k, (0, i, 0, 0))
        v = jax.lax.dynamic_update_slice(cv.value, v, (0, i, 0, 0))
        ck.value, cv.value, index.value = k, v, i + queries.shape[1]
        mask = (jnp.arange(k.shape[1]) <= i)[None, None, None, :]
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(dk).astype(np.float32)
    scores = jnp.where(mask, scores.astype(jnp.float32), NEG_INF)
    weights = jax.nn.softmax(scores, axis=-1)
    dropped = nn.Dropout(self.dropout)(weights, deterministic=not train).astype(self.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", dropped, v).reshape(queries.shape[:-1] + (self.d_model,))
    return dense("o")(out), weights
