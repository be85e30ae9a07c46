import jax
import jax.numpy as jnp
import pytest

from configs import jpg
from jpg_jax import cost
from jpg_jax.models import jpg as jpg_lib



def test_train_step_costs_about_three_forward_passes():
  """Training = forward + backward (about twice the forward) + the update: between 2x and 4x a forward.
  (BASE's smaller graph: XLA:CPU compiles it in two thirds of JPG's time; the cost analysis is the same.)"""
  smoke = jpg.get_config("smoke,base")
  step = cost.train_step_cost(smoke, 2, global_batch=4)
  assert step.flops > 1e8 and step.bytes_accessed > 0 and step.stage == 2
  model = jpg_lib.from_config(smoke.model, 761, smoke.labels.num_mined, 64)
  s, steps = smoke.dataset.image_size, smoke.model.label_steps
  images, reports = jnp.zeros((4, 2, s, s, 3)), jnp.zeros((4, smoke.dataset.max_seq_length), jnp.int32)
  labels = jnp.zeros((4, steps + 1), jnp.int32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), images, reports, labels))
  # Inputs as arguments: constant images would let XLA merge the two views' identical extractor calls.
  forward = jax.jit(model.apply).lower(variables, images, reports, labels).compile()
  forward_flops = cost.analysis_of(forward)["flops"]
  assert 2.0 < step.flops / forward_flops < 4.0


def test_implied_step_time_and_table():
  assert cost.implied_step_time(1e12, chips=10, peak_flops_per_chip=1e12, utilisation=0.5) == pytest.approx(0.2)
  config = jpg.get_config()
  text = cost.format_table([cost.StepCost(2.75e12, 1e11, 16, 2)], config, 0.4)
  # 2.75 TFLOP on 16 v4 chips at 40% of 275 TFLOP/s: 1.5625 ms.
  assert "stage 2: 2.750 TFLOP/step (171.9 GFLOP/example)" in text and "TPU v4-32 (16 chips): 1.6 ms" in text
