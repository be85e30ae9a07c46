"""R2Gen's optimiser against PyTorch's own (tests/torch_reference.py transcribes R2Gen's
build_optimizer / build_lr_scheduler / train step), and what each stage trains."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from configs import jpg
from jpg_jax import optim
from jpg_jax import steps

import torch_reference as ref


def _config(**optim_fields):
  c = jpg.get_config("r2gen")   # R2Gen's optimiser: the paper's one learning rate, R2Gen's lr_ve 5e-5
  c.unlock()
  for k, v in optim_fields.items():
    setattr(c.optim, k, v)
  c.lock()
  return c


def test_torch_adam_amsgrad_equals_pytorch_over_2000_steps_with_clip_decay_and_step_lr():
  rng = np.random.default_rng(0)
  shapes = {"visual_extractor": (7, 5), "encoder": (11,)}
  init = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
  num_steps, steps_per_epoch, step_epochs = 2400, 40, 25   # StepLR boundaries at steps 1000 and 2000
  # Large gradients first (clipped at 0.1), then small ones: the case where amsgrad's maximum matters.
  scale = lambda t: 0.5 if t < 20 else 0.003 * (1 + np.sin(t / 50))
  grads = [{k: (scale(t) * rng.normal(size=s)).astype(np.float32) for k, s in shapes.items()}
           for t in range(num_steps)]

  ve = torch.nn.Parameter(torch.tensor(init["visual_extractor"]))
  ed = torch.nn.Parameter(torch.tensor(init["encoder"]))
  opt = ref.r2gen_build_optimizer([ve], [ed])
  sched = ref.r2gen_build_lr_scheduler(opt, step_epochs, 0.1)
  for t in range(num_steps):
    ref.r2gen_train_step([ve, ed], [torch.tensor(grads[t]["visual_extractor"]),
                                    torch.tensor(grads[t]["encoder"])], opt)
    if (t + 1) % steps_per_epoch == 0:
      sched.step()

  config = _config(lr_step_epochs=step_epochs)
  params = {k: {"kernel": jnp.asarray(v)} for k, v in init.items()}
  tx, lr_fn = steps.make_optimizer(config, params, steps_per_epoch, stage=2)
  state = tx.init(params)

  @jax.jit
  def step(params, state, g):
    updates, state = tx.update(g, state, params)
    return optax.apply_updates(params, updates), state

  for t in range(num_steps):
    params, state = step(params, state, {k: {"kernel": jnp.asarray(v)} for k, v in grads[t].items()})
  moved = {k: np.abs(init[k] - np.asarray(params[k]["kernel"])).max() for k in shapes}
  assert min(moved.values()) > 1e-3   # the parameters did move, by many learning rates
  np.testing.assert_allclose(np.asarray(params["visual_extractor"]["kernel"]), ve.detach().numpy(),
                             rtol=2e-6, atol=2e-6)
  np.testing.assert_allclose(np.asarray(params["encoder"]["kernel"]), ed.detach().numpy(), rtol=2e-6,
                             atol=2e-6)
  assert float(lr_fn(0)) == pytest.approx(1e-4)
  assert float(lr_fn(1000)) == pytest.approx(1e-5)
  assert float(lr_fn(2399)) == pytest.approx(1e-6)


def test_amsgrad_late_steps_follow_the_raw_second_moment():
  """Gradient 0.1 for 20 steps, then 0.005: PyTorch's step at 2,000 is about 0.33 x lr."""
  tx = optim.torch_adam(1.0, amsgrad=True)
  p = jnp.zeros(())
  state = tx.init(p)
  update = jax.jit(tx.update)
  for t in range(2000):
    u, state = update(jnp.asarray(0.1 if t < 20 else 0.005), state, p)
  assert abs(float(u)) == pytest.approx(0.33, abs=0.01)


def _stage1_loss_grads(config):
  from jpg_jax import labels as labels_lib
  from jpg_jax import text
  vocab = text.Vocabulary(["a", "b", "c"])
  label_set = labels_lib.LabelSet([("normal",), ("opacity", "lung")])
  model = steps.create_model(config, vocab, label_set)
  images = jnp.asarray(np.random.default_rng(0).normal(size=(2, 2, 32, 32, 3)), jnp.float32)
  reports = jnp.array([[0, 1, 2, 0], [0, 3, 0, 0]], jnp.int32)
  label_ids = jnp.array([[0, 1, 0, 0, 0, 0], [0, 2, 3, 0, 0, 0]], jnp.int32)
  variables = jax.jit(model.init)({"params": jax.random.key(0), "dropout": jax.random.key(1)}, images, reports,
                         label_ids)
  batch = {"images": images, "label_ids": label_ids, "label_mask": (label_ids > 0).astype(jnp.float32).at[:, 1].set(1),
           "label_targets": jnp.array([[1.0, 0.0], [0.0, 1.0]]), "report_ids": reports,
           "report_mask": jnp.ones(reports.shape)}

  def loss(params):
    (cls, tok), _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, images,
                                label_ids, True, method=model.labels, rngs={"dropout": jax.random.key(2)},
                                mutable=["batch_stats"])
    return steps.losses({"label_class_logits": cls, "label_token_logits": tok}, batch, config, 1)["loss"]

  return variables["params"], jax.jit(jax.grad(loss))(variables["params"])


@pytest.mark.parametrize("variant", ["", "projection"])
def test_stage1_trains_exactly_the_parameters_that_get_gradients_and_leaves_the_rest_bit_identical(variant):
  config = jpg.get_config(",".join(v for v in ("smoke", variant) if v))
  params, grads = _stage1_loss_grads(config)
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  for path, g in flat:
    names = tuple(k.key for k in path)
    assert steps.stage_trains(names, 1) == bool(np.any(np.asarray(g) != 0)), names
  tx, _ = steps.make_optimizer(config, params, 10, stage=1)
  state = tx.init(params)
  update = jax.jit(tx.update)
  new = params
  for _ in range(5):
    updates, state = update(grads, state, new)
    new = optax.apply_updates(new, updates)
  for (path, old), (_, now) in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                                   jax.tree_util.tree_flatten_with_path(new)[0]):
    names = tuple(k.key for k in path)
    if not steps.stage_trains(names, 1):
      assert np.array_equal(np.asarray(old), np.asarray(now)), names
  if not variant:
    assert not np.array_equal(np.asarray(params["subspace"]["w_x"]["kernel"]),
                              np.asarray(new["subspace"]["w_x"]["kernel"]))
