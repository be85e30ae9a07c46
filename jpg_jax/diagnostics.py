"""Training diagnostics of the shared subspace (issue G2): does the signal of the images reach the head?

Pure functions of what a train step has at hand (the subspace's softmax weights and features, sown by the
model into the ``intermediates`` collection, and the gradients), each a scalar logged beside the losses:

* ``entropy``: mean entropy of the softmax over the m basis vectors (Eqs. 8-9), over log m: 1 when every
  feature takes the mean of all bases (CMN's N(0, 1/d_b) start), 0 when each takes a single basis vector
  (a hard quantiser, whose softmax passes no gradient back to the extractor).
* ``bases_used``: the perplexity of the batch's mean softmax, exp(H(mean_i S_i)): how many basis vectors
  the features share between them (1 = all features on one vector, m = spread over every vector).
* ``spread``: how much a feature map differs between images, relative to its size: the standard deviation
  over the batch of each image's mean feature vector (its norm) over the root-mean-square feature norm. The
  raw extractor grids and the aligned r_x side by side show whether the subspace passes the images on.
* ``grad_norm/<module>``: the gradient norm of each top-level module (``visual_extractor``, ``subspace``,
  ``labeler``, ...): whether the extractor learns at all.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def softmax_entropy(weights: jax.Array) -> jax.Array:
  """Mean entropy of the rows of ``weights`` (..., m) over log m (0 = one-hot, 1 = uniform)."""
  w = weights.astype(jnp.float32)
  h = -jnp.sum(w * jnp.log(jnp.clip(w, 1e-30)), axis=-1)
  return h.mean() / jnp.log(jnp.float32(w.shape[-1]))


def bases_used(weights: jax.Array) -> jax.Array:
  """exp of the entropy of the mean row of ``weights`` (..., m): the effective number of bases in use."""
  mean = weights.astype(jnp.float32).reshape(-1, weights.shape[-1]).mean(axis=0)
  return jnp.exp(-jnp.sum(mean * jnp.log(jnp.clip(mean, 1e-30))))


def spread(features: jax.Array) -> jax.Array:
  """Between-image variation of ``features`` (B, ..., d) relative to their size: the norm of the batch
  standard deviation of each image's mean feature vector over the RMS norm of a feature."""
  f = features.astype(jnp.float32)
  per_image = f.reshape(f.shape[0], -1, f.shape[-1]).mean(axis=1)           # (B, d)
  between = jnp.sqrt(jnp.sum(per_image.var(axis=0)))
  size = jnp.sqrt(jnp.mean(jnp.sum(f * f, axis=-1)))
  return between / jnp.maximum(size, 1e-30)


def module_grad_norms(grads: dict) -> dict:
  """``{'grad_norm/<module>': norm}`` for each top-level module of a gradient pytree."""
  return {f"grad_norm/{name}": optax.global_norm(sub) for name, sub in grads.items()}


def from_intermediates(intermediates: dict) -> dict:
  """The subspace diagnostics of the values the model sowed (``JPG.align_visual``, ``SharedSubspace``);
  missing ones (no subspace; stage 1 has no text) are left out."""
  out = {}
  sub = intermediates.get("subspace", {})
  for side in ("visual", "textual"):
    if f"{side}_weights" in sub:
      w = jnp.concatenate([x.reshape(-1, x.shape[-1]) for x in sub[f"{side}_weights"]])
      out[f"subspace/{side}_entropy"] = softmax_entropy(w)
      out[f"subspace/{side}_bases_used"] = bases_used(w)
  for name in ("grids", "aligned"):
    if name in intermediates:
      out[f"spread/{name}"] = spread(intermediates[name][0])
  return out
