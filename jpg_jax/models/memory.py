"""The memories of Table 2's strongest baselines, R2Gen and CMN, as modules of the one Transformer.

R2Gen (Chen et al., EMNLP 2020; github.com/cuhksz-nlp/R2Gen ``modules/encoder_decoder.py``):

* ``RelationalMemory``: a matrix of ``num_slots`` rows of d_model, initialised to the identity (zero-padded
  to d_model), updated once per decoder input token y_t (the positioned embedding that also enters the
  decoder):

    M~  = M + MHA(q = M, k = v = [M; y_t])                     (8 heads, no mask)
    M~  = M~ + MLP(M~)                                         (Linear, ReLU, Linear, ReLU)
    i, f = split(W y_t + U tanh(M))
    M'  = sigmoid(i) * tanh(M~) + sigmoid(f) * M

  Its state after token t conditions every LayerNorm of the decoder at position t (MCLN). It is recurrent
  over decoding steps: in incremental decoding its state lives in the ``cache`` collection beside the
  key/value cache (and is reordered with it by the beam search).
* ``ConditionalLayerNorm`` (memory-driven conditional LayerNorm, MCLN): R2Gen's LayerNorm whose scale and
  bias gain ``mlp_gamma(M)`` and ``mlp_beta(M)`` (Linear(slots * d -> d), ReLU, Linear(d -> d); xavier
  weights, biases 0.1, as R2Gen initialises them).

CMN (Chen et al., ACL 2021; github.com/zhjohnchan/R2GenCMN ``modules/base_cmn.py``):

* ``CrossModalMemory``: a memory matrix (2048 x 512, N(0, 1/512) init) queried by the visual features
  (after ``att_embed``) and by the textual features (after positions and dropout) alike: 8 heads, the 32
  best-matching rows a head (``memory_querying_responding``), a softmax over those, and the response added
  to the query (``x + response``). The memory rows pass the key and value projections, so the response of a
  query is a mixture of projected rows.

Parameter names follow the originals (``attn/{q,k,v,o}`` for ``attn.linears.{0..3}``, ``mlp_0``/``mlp_2``,
``W``, ``U``, ``mlp_gamma_0``...), so ``jpg_jax.tools.convert_torch`` maps their state_dicts.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jpg_jax.models import layers

xavier = nn.initializers.xavier_uniform()


def initial_memory(batch: int, num_slots: int, d_model: int, dtype=jnp.float32) -> jax.Array:
  """R2Gen's ``init_memory``: the identity, zero-padded (or cut) to d_model, flattened: (B, slots * d)."""
  eye = jnp.eye(num_slots, d_model, dtype=dtype).reshape(-1)
  return jnp.broadcast_to(eye, (batch, num_slots * d_model))


class RelationalMemoryCell(nn.Module):
  """One step of R2Gen's ``RelationalMemory.forward_step``: (memory (B, slots * d), y_t (B, d)) -> memory'.

  Returns the new memory twice (carry and output), the form ``nn.scan`` wants."""
  num_slots: int
  d_model: int
  num_heads: int = 8
  dropout: float = 0.1
  deterministic: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, memory, y):
    b, d = y.shape[0], self.d_model
    m = memory.reshape(b, self.num_slots, d)
    kv = jnp.concatenate([m, y[:, None].astype(m.dtype)], axis=1)
    attended, _ = layers.MultiHeadAttention(self.num_heads, d, self.dropout, self.dtype, name="attn")(
        m, kv, True, not self.deterministic)
    nxt = m + attended
    dense = lambda n, name: nn.Dense(n, dtype=self.dtype, kernel_init=xavier, name=name)
    nxt = nxt + nn.relu(dense(d, "mlp_2")(nn.relu(dense(d, "mlp_0")(nxt))))
    gates = dense(2 * d, "W")(y[:, None]) + dense(2 * d, "U")(jnp.tanh(m))
    input_gate, forget_gate = jnp.split(gates, 2, axis=-1)
    nxt = nn.sigmoid(input_gate) * jnp.tanh(nxt) + nn.sigmoid(forget_gate) * m
    nxt = nxt.reshape(b, self.num_slots * d)
    return nxt, nxt


# R2Gen's ``RelationalMemory.forward``: (memory (B, slots * d), ys (B, L, d)) -> (final memory, the memory
# after each input (B, L, slots * d)); the cell's parameters are shared over the steps.
RelationalMemory = nn.scan(RelationalMemoryCell, variable_broadcast="params",
                           split_rngs={"params": False, "dropout": True}, in_axes=1, out_axes=1)


class ConditionalLayerNorm(nn.Module):
  """R2Gen's memory-driven conditional LayerNorm: ``(scale + mlp_gamma(M)) * (x - mean) / (std + eps) +
  (bias + mlp_beta(M))``, std unbiased. x: (B, L, d); memory: (B, L, slots * d)."""
  eps: float = 1e-6
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, memory):
    d = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (d,))
    bias = self.param("bias", nn.initializers.zeros, (d,))
    dense = lambda name: nn.Dense(d, dtype=self.dtype, kernel_init=xavier,
                                  bias_init=nn.initializers.constant(0.1), name=name)
    delta_gamma = dense("mlp_gamma_2")(nn.relu(dense("mlp_gamma_0")(memory)))
    delta_beta = dense("mlp_beta_2")(nn.relu(dense("mlp_beta_0")(memory)))
    out = (scale + delta_gamma) * layers.r2gen_normalize(x, self.eps) + (bias + delta_beta)
    return out.astype(self.dtype)


class CrossModalMemory(nn.Module):
  """CMN's ``MultiThreadMemory`` with its memory matrix: the response to queries (B, S, d), to be added to
  them. Each head attends to its ``top_k`` best-scoring memory rows only."""
  size: int = 2048
  d_model: int = 512
  num_heads: int = 8
  top_k: int = 32
  dropout: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, queries, train: bool):
    h, dk = self.num_heads, self.d_model // self.num_heads
    matrix = self.param("memory_matrix", nn.initializers.normal(1.0 / self.d_model), (self.size, self.d_model))
    dense = lambda name: nn.Dense(self.d_model, dtype=self.dtype, kernel_init=xavier, name=name)
    q = dense("q")(queries).reshape(queries.shape[:-1] + (h, dk))             # (B, S, h, dk)
    k = dense("k")(matrix).reshape(self.size, h, dk)                          # the same for every example
    v = dense("v")(matrix).reshape(self.size, h, dk)
    scores = jnp.einsum("bshd,mhd->bhsm", q, k).astype(jnp.float32) / np.sqrt(dk).astype(np.float32)
    selected, index = jax.lax.top_k(scores, min(self.top_k, self.size))      # (B, h, S, k)
    weights = nn.Dropout(self.dropout)(jax.nn.softmax(selected, axis=-1), deterministic=not train)
    rows = v.transpose(1, 0, 2)[jnp.arange(h)[None, :, None, None], index]  # (B, h, S, k, dk)
    out = jnp.einsum("bhsk,bhskd->bshd", weights.astype(self.dtype), rows)
    return dense("o")(out.reshape(queries.shape[:-1] + (self.d_model,)))
