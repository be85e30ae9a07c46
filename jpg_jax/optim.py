"""R2Gen's optimiser, computed as PyTorch computes it.

R2Gen (``modules/optimizers.py``, ``modules/trainer.py``, ``main.py``) trains with

  loss.backward(); torch.nn.utils.clip_grad_value_(params, 0.1); optimizer.step()   # every step
  torch.optim.Adam([{extractor, lr_ve}, {rest, lr_ed}], weight_decay=5e-5, amsgrad=True)
  torch.optim.lr_scheduler.StepLR(optimizer, step_size=50, gamma=0.1).step()        # every epoch

``torch_adam`` is ``torch.optim.Adam``'s single-tensor update (``torch/optim/adam.py``), step for step:

  g  = g + weight_decay * p                     (coupled L2, before the moments)
  m  = lerp(m, g, 1 - b1);  v = b2 v + (1 - b2) g^2
  v_max = max(v_max, v)                         (amsgrad: the RAW second moment ...)
  p  = p - (lr / (1 - b1^t)) * m / (sqrt(v_max) / sqrt(1 - b2^t) + eps)   (... bias-corrected after)

``optax.scale_by_amsgrad`` keeps the maximum of the bias-corrected second moment instead; early large
gradients then pin the denominator and the late steps are several times smaller than PyTorch's (a
gradient of 0.1 for 20 steps, then 0.005: 0.05 x lr against 0.33 x lr per step at step 2,000). The test
``tests/test_optim.py`` runs both over 2,000 steps with clipping, decay and a StepLR boundary.

Parameters that a stage does not train get ``optax.set_to_zero`` (no decay, no moments): PyTorch skips a
parameter whose ``.grad`` is None, so a module a stage never calls leaves the stage bit-identical.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax


class TorchAdamState(NamedTuple):
  count: jax.Array      # int32, steps taken (torch's ``state['step']``)
  mu: optax.Updates     # exp_avg
  nu: optax.Updates     # exp_avg_sq
  nu_max: optax.Updates  # max_exp_avg_sq (amsgrad); zeros otherwise


def torch_adam(learning_rate: Callable[[jax.Array], jax.Array] | float, b1: float = 0.9, b2: float = 0.999,
               eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False
               ) -> optax.GradientTransformation:
  """``torch.optim.Adam`` (coupled weight decay, optional amsgrad) as one transformation whose updates
  are the parameter changes. ``learning_rate`` is a number or a function of the step count (0-based)."""
  lr_fn = learning_rate if callable(learning_rate) else (lambda _: learning_rate)

  def init(params):
    zeros = lambda: jax.tree.map(jnp.zeros_like, params)
    return TorchAdamState(jnp.zeros((), jnp.int32), zeros(), zeros(), zeros())

  def update(grads, state, params=None):
    if weight_decay and params is None:
      raise ValueError("torch_adam with weight decay needs the parameters.")
    if weight_decay:
      grads = jax.tree.map(lambda g, p: g + weight_decay * p, grads, params)
    mu = jax.tree.map(lambda m, g: m + (1 - b1) * (g - m), state.mu, grads)    # torch's lerp (weight < .5)
    nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * (g * g), state.nu, grads)
    nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu) if amsgrad else state.nu_max
    step = state.count + 1
    t = step.astype(jnp.float32)
    bias1, bias2_sqrt = 1 - b1 ** t, jnp.sqrt(1 - b2 ** t)
    step_size = lr_fn(state.count) / bias1
    second = nu_max if amsgrad else nu
    updates = jax.tree.map(lambda m, v: -step_size * m / (jnp.sqrt(v) / bias2_sqrt + eps), mu, second)
    return updates, TorchAdamState(step, mu, nu, nu_max)

  return optax.GradientTransformation(init, update)


def step_lr(base: float, steps_per_epoch: int, step_epochs: int, gamma: float) -> Callable:
  """``StepLR(step_size=step_epochs, gamma)`` stepped once per epoch, as a function of the update count:
  epoch ``e`` (0-based) trains at ``base * gamma ** (e // step_epochs)``."""
  period = max(int(step_epochs) * max(int(steps_per_epoch), 1), 1)
  return lambda count: base * gamma ** (jnp.asarray(count) // period).astype(jnp.float32)
