"""The shared subspace and base matrix of JPG (Sec. 3.3, Eqs. 4-10).

One module owns the base matrix ``B`` (m basis vectors of size d_b; the paper: a "512 x 2048 memory
matrix", d_s = 512 and m = 2048) and the projections ``W_x`` (d_x -> d_s), ``W_y`` (d_y -> d_s) and
``W_b`` (d_b -> d_s). Visual and textual features are aligned against the SAME ``B``:

  X~ = X W_x,  Y~ = Y W_y,  B~ = B W_b                       (Eqs. 4-6)
  S = softmax_m(X~ B~^T),  G = softmax_m(Y~ B~^T)            (Eqs. 7-9)
  r_x = S B~,  r_y = G B~                                     (Eq. 10)

The paper calls Eq. 7 a cosine similarity but writes a plain dot product; ``similarity`` picks ``'dot'``
(the formula), ``'scaled_dot'`` (divided by sqrt(d_s), as CMN's memory) or ``'cosine'`` (normalised
vectors times a learnt temperature, initially 10). ``top_k`` keeps only the k largest similarities per
feature before the softmax (as CMN); 0 (default) keeps all m. ``B`` is initialised N(0, 1/d_b) as CMN's
memory matrix, or N(0, ``basis_init_std``^2). ``residual`` returns x~ + S B~ instead of S B~: CMN (whose
memory the subspace resembles: one head, W_x the query projection, B W_b keys and values) adds its
memory's response to the features that queried it (R2GenCMN ``base_cmn.py``: ``att_feats + responses``).

Why the similarity matters (issue G2, ``jpg_jax/diagnostics.py``): the dot product is unbounded, and in
training the scores grow until each feature takes a single basis vector. On the synthetic config (m =
256, N(0, 1) bases) the softmax's entropy falls from 0.04 of its maximum at init to 0.001 by step 40, the
features share 3 basis vectors by step 90, the aligned grids stop differing between images, and stage 1
never beats "always normal". Cosine scores are bounded by the temperature: the entropy stays about 0.86
and about 200 bases stay in use. The paper config takes the formula, Eq. 10 and CMN's init, as this
module's defaults do; ``:tuned`` takes cosine with the residual and N(0, 1) bases (docs/results.md). The
softmax weights are sown (``intermediates``) for the diagnostics.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

SIMILARITIES = ("dot", "scaled_dot", "cosine")   # Eq. 7 as written, / sqrt(d_s), cosine with a learnt scale


def _xavier():
  return nn.initializers.xavier_uniform()


class SharedSubspace(nn.Module):
  num_bases: int = 2048     # m
  basis_dim: int = 512      # d_b
  subspace_dim: int = 512   # d_s
  similarity: str = "dot"
  top_k: int = 0
  basis_init_std: float = 0.0   # 0: CMN's N(0, 1/d_b)
  residual: bool = False        # r = x~ + S B~ (CMN's memory response is added to its query)
  dtype: Any = jnp.float32

  def setup(self):
    std = self.basis_init_std or 1.0 / self.basis_dim
    self.basis = self.param("basis", nn.initializers.normal(std),
                            (self.num_bases, self.basis_dim))
    dense = lambda name: nn.Dense(self.subspace_dim, dtype=self.dtype, kernel_init=_xavier(), name=name)
    self.w_x, self.w_y, self.w_b = dense("w_x"), dense("w_y"), dense("w_b")
    if self.similarity == "cosine":
      self.log_temperature = self.param("log_temperature", nn.initializers.constant(jnp.log(10.0)), ())

  def projected_bases(self) -> jax.Array:
    """B~ = B W_b, shape (m, d_s) (Eq. 6)."""
    return self.w_b(self.basis.astype(self.dtype))

  def _align(self, features: jax.Array, bases: jax.Array, side: str) -> jax.Array:
    if self.similarity == "cosine":
      f = features / (jnp.linalg.norm(features, axis=-1, keepdims=True) + 1e-6)
      b = bases / (jnp.linalg.norm(bases, axis=-1, keepdims=True) + 1e-6)
      scores = jnp.einsum("...d,md->...m", f, b) * jnp.exp(self.log_temperature)
    else:
      scores = jnp.einsum("...d,md->...m", features, bases)                        # Eq. 7
      if self.similarity == "scaled_dot":
        scores = scores / jnp.sqrt(jnp.asarray(self.subspace_dim, scores.dtype))
      elif self.similarity != "dot":
        raise ValueError(f"Unknown similarity {self.similarity!r}; choose from {SIMILARITIES}.")
    if self.top_k:
      kth = jax.lax.top_k(scores, self.top_k)[0][..., -1:]
      scores = jnp.where(scores >= kth, scores, -jnp.inf)
    weights = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(self.dtype)  # Eqs. 8-9
    self.sow("intermediates", f"{side}_weights", weights)   # kept only where asked (jpg_jax/diagnostics.py)
    response = jnp.einsum("...m,md->...d", weights, bases)                        # Eq. 10
    return features + response if self.residual else response

  def align_visual(self, x: jax.Array) -> jax.Array:
    """Patch features (..., d_x) -> new visual representations r_x (..., d_s)."""
    return self._align(self.w_x(x.astype(self.dtype)), self.projected_bases(), "visual")

  def align_textual(self, y: jax.Array) -> jax.Array:
    """Word (or label) embeddings (..., d_y) -> new textual representations r_y (..., d_s)."""
    return self._align(self.w_y(y.astype(self.dtype)), self.projected_bases(), "textual")

  def __call__(self, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    return self.align_visual(x), self.align_textual(y)
