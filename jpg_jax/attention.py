"""Cross-attention maps (Fig. 4): where the decoder looks, for each generated word, over the views.

The paper draws "the cross attention weight from the first decoder layer" (Sec. 5.3): for each generated
word, the weights over the encoder memory's V x 49 patch positions (label positions are dropped), averaged
over heads, reshaped to each view's grid and upsampled over the image.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jpg_jax import steps
from jpg_jax.models import jpg as jpg_lib


def word_attention(model: jpg_lib.JPG, variables, images, tokens) -> np.ndarray:
  """(num_words, V, h, w) attention of each generated word over the patches of the V views.

  ``images``: (1, V, H, W, 3); ``tokens``: the generated ids (zeros after EOS).
  """
  words = [int(t) for t in np.asarray(tokens).reshape(-1) if t]
  ids = jnp.asarray([[0] + words + [0]], jnp.int32)
  weights = np.asarray(cross_attention(model, variables, images, ids))[0].mean(0)   # (L, S), mean of heads
  grids = jax.eval_shape(lambda v, x: model.apply(v, x, False, method=jpg_lib.JPG.extract),
                         variables, images)
  _, v, h, w, _ = grids.shape
  return weights[: len(words), : v * h * w].reshape(len(words), v, h, w)


def cross_attention(model: jpg_lib.JPG, variables, images, ids) -> jax.Array:
  """(B, heads, L, S): the cross-attention weights of decoder layer ``model.attention_layer`` when the
  decoder reads ``ids``. One jitted forward pass, compiled as a program that runs once (run eagerly, the
  pass dispatches some 250 small programs: 22 s for the smoke model here)."""
  def forward(variables, images, ids):
    _, state = model.apply(variables, images, ids, None, False, mutable=["intermediates"])
    return state["intermediates"]["decoder"][f"layers_{model.attention_layer}"]["cross_attention"][0]

  compiled = jax.jit(forward).lower(variables, images, ids).compile(
      compiler_options=steps.RUN_ONCE_COMPILER_OPTIONS)
  return compiled(variables, images, ids)


def save_attention_png(path, views: Sequence[np.ndarray], words: Sequence[str], maps: np.ndarray,
                       max_words: int = 8) -> None:
  """Draws each view with the mean map over all words, then the first ``max_words`` words' maps."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from PIL import Image

  shown = list(range(min(len(words), max_words)))
  cols = 1 + len(shown)
  fig, axes = plt.subplots(len(views), cols, figsize=(2.2 * cols, 2.3 * len(views)), squeeze=False)
  for r, view in enumerate(views):
    size = view.shape[1], view.shape[0]
    panels = [("all words", maps[:, r].mean(0))] + [(words[k], maps[k, r]) for k in shown]
    for c, (title, m) in enumerate(panels):
      ax = axes[r][c]
      ax.imshow(view, cmap="gray")
      up = np.asarray(Image.fromarray((m / max(m.max(), 1e-9) * 255).astype(np.uint8)).resize(
          size, Image.BILINEAR), np.float32) / 255.0
      ax.imshow(up, cmap="jet", alpha=0.4)
      ax.set_title(title, fontsize=8)
      ax.axis("off")
  fig.tight_layout()
  fig.savefig(str(path), dpi=100)
  plt.close(fig)
