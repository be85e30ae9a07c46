"""The subspace diagnostics logged in training (jpg_jax/diagnostics.py): each on inputs whose answer is known."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jpg_jax import diagnostics
from jpg_jax.tools import diagnose
from jpg_jax.models import subspace


def test_entropy_is_one_for_uniform_and_zero_for_one_hot_rows():
  m = 64
  assert float(diagnostics.softmax_entropy(jnp.full((3, 5, m), 1.0 / m))) == pytest.approx(1.0, abs=1e-6)
  assert float(diagnostics.softmax_entropy(jax.nn.one_hot(jnp.arange(10) % m, m))) == pytest.approx(0.0, abs=1e-6)
  half = jnp.zeros((4, m)).at[:, :2].set(0.5)   # two bases, equal weight: log 2 / log m
  assert float(diagnostics.softmax_entropy(half)) == pytest.approx(np.log(2) / np.log(m), rel=1e-5)


def test_bases_used_counts_the_bases_the_rows_share():
  m = 32
  assert float(diagnostics.bases_used(jax.nn.one_hot(jnp.zeros(12, int), m))) == pytest.approx(1.0, rel=1e-5)
  four = jax.nn.one_hot(jnp.arange(12) % 4, m)   # 12 rows evenly on 4 bases
  assert float(diagnostics.bases_used(four)) == pytest.approx(4.0, rel=1e-5)
  assert float(diagnostics.bases_used(jnp.full((5, m), 1.0 / m))) == pytest.approx(m, rel=1e-5)


def test_spread_is_zero_for_identical_images_and_scale_free():
  x = jax.random.normal(jax.random.key(0), (1, 2, 3, 3, 8))
  assert float(diagnostics.spread(jnp.repeat(x, 4, axis=0))) == pytest.approx(0.0, abs=1e-6)
  y = jax.random.normal(jax.random.key(1), (6, 2, 3, 3, 8))
  assert float(diagnostics.spread(1e-4 * y)) == pytest.approx(float(diagnostics.spread(y)), rel=1e-4)
  # Two images that differ only by a constant offset c on every channel: per-image means differ by c.
  base = jnp.ones((1, 4, 8))
  pair = jnp.concatenate([base, base + 2.0], axis=0)
  expected = np.sqrt(8 * 1.0) / np.sqrt((8 * 1 + 8 * 9) / 2)   # std over 2 images of a +-1 offset, / RMS norm
  assert float(diagnostics.spread(pair)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("similarity", ["dot", "scaled_dot"])
def test_the_subspace_sows_the_softmax_the_diagnostics_read(similarity):
  module = subspace.SharedSubspace(num_bases=16, basis_dim=8, subspace_dim=8, similarity=similarity,
                                   basis_init_std=1.0)
  x, y = jax.random.normal(jax.random.key(0), (2, 5, 8)), jax.random.normal(jax.random.key(1), (2, 3, 8))
  variables = module.init(jax.random.key(2), x, y)
  (r_x, _), state = module.apply(variables, x, y, mutable=["intermediates"])
  inter = state["intermediates"]
  weights = inter["visual_weights"][0]
  assert weights.shape == (2, 5, 16)
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
  # r_x = S B~ (Eq. 10) with the sown S
  bases = module.apply(variables, method=module.projected_bases)
  np.testing.assert_allclose(r_x, weights @ bases, rtol=1e-4, atol=1e-5)
  found = diagnostics.from_intermediates({"subspace": inter})
  assert set(found) == {"subspace/visual_entropy", "subspace/visual_bases_used",
                        "subspace/textual_entropy", "subspace/textual_bases_used"}
  assert 0.0 < float(found["subspace/visual_entropy"]) < 1.0
  # Without asking for intermediates, nothing is kept (evaluation and decoding pay nothing).
  assert module.apply(variables, x, y, mutable=False)[0].shape == (2, 5, 8)


def test_module_grad_norms_name_each_top_level_module():
  grads = {"visual_extractor": {"w": jnp.full((4,), 3.0)}, "labeler": {"a": jnp.zeros(2), "b": jnp.ones(1)}}
  norms = diagnostics.module_grad_norms(grads)
  assert float(norms["grad_norm/visual_extractor"]) == pytest.approx(6.0)
  assert float(norms["grad_norm/labeler"]) == pytest.approx(1.0)


def test_at_init_reads_the_config_model_on_real_batches(tiny_synthetic):
  """The command's figures: a dot product over N(0, 1) bases starts far sharper than the cosine default,
  and CMN's N(0, 1/d_b) bases make Eq. 10's r_x tiny."""
  from configs import jpg

  def at_init(**model):
    config = jpg.get_config("smoke")
    config.unlock()
    config.dataset.data_dir = tiny_synthetic[0]
    config.model.update(model)
    config.lock()
    return diagnose.at_init(config, batch_size=4)

  eq10 = dict(subspace_residual=False)   # r_x = S B~ alone, as the default (Eq. 10 as written)
  cosine = at_init(similarity="cosine", basis_init_std=1.0, **eq10)
  dot = at_init(similarity="dot", basis_init_std=1.0, **eq10)
  cmn = at_init(similarity="dot", basis_init_std=0.0, **eq10)   # the default: CMN's N(0, 1/d_b) bases
  assert set(cosine) == {"subspace/visual_entropy", "subspace/visual_bases_used", "spread/grids",
                         "spread/aligned", "norm/grids", "norm/aligned"}
  assert dot["subspace/visual_entropy"] < cosine["subspace/visual_entropy"] < 1.0
  assert cmn["subspace/visual_entropy"] > 0.98
  assert cosine["norm/grids"] == pytest.approx(dot["norm/grids"])   # same extractor init
  assert cmn["norm/aligned"] < 1e-2 * cosine["norm/aligned"]
