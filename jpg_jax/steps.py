"""The jit-able pieces of training, free of the loop: the model and optimiser a config asks for, the
train state (a plain pytree: step, params, batch_stats, opt_state, rng), the losses, one optimiser step
and its sharded jit, and the prediction functions the evaluators run (pure functions of
``(state | variables, batch)``). Training (``train.py``), ``cost.py``, ``models/param_count.py`` and
``benchmarks/`` all build the state and the step here.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from jpg_jax import decode as decode_lib
from jpg_jax import diagnostics
from jpg_jax import input_pipeline as ip
from jpg_jax import labels as labels_lib
from jpg_jax import optim as optim_lib
from jpg_jax import parallel
from jpg_jax import text
from jpg_jax.models import jpg as jpg_lib

OPTIMIZERS = ("adam", "adagrad")   # R2Gen's Adam (amsgrad, coupled L2) | the paper's Adagrad reading


# ============================================================================================ model + optimiser
STAGE2_EXTRACTORS = ("trained", "frozen")   # train.stage2_extractor


def extractor_frozen(config, stage: int) -> bool:
  """Whether the visual extractor is held fixed in ``stage``: in both with ``model.frozen_extractor`` (a
  pretrained extractor), in stage 2 with ``train.stage2_extractor='frozen'`` where there is a stage 1 to
  have trained it (a model without a labeler, BASE, has none: its extractor trains in stage 2)."""
  return bool(config.model.frozen_extractor or (
      stage == 2 and config.train.stage2_extractor == "frozen" and config.model.use_labeler))


def reads_features(config, stage: int) -> bool:
  """Whether ``stage`` trains and evaluates on cached patch grids (``jpg_jax/feature_cache.py``): where
  ``model.cached_features`` is set and the stage's extractor is frozen."""
  return bool(config.model.cached_features) and extractor_frozen(config, stage)


def create_model(config, vocab: text.Vocabulary, label_set: labels_lib.LabelSet | None,
                 stage: int = 2) -> jpg_lib.JPG:
  """The model of ``stage`` (its extractor frozen or not: ``extractor_frozen``), taking images (a stage
  that ``reads_features`` runs its ``clone(cached_features=True)``: ``train.stage_inputs``)."""
  num_labels = len(label_set) if label_set else 1
  num_tokens = label_set.vocab.num_logits if label_set else 2
  return jpg_lib.from_config(config.model, vocab.num_logits, num_labels, num_tokens,
                             jnp.dtype(config.compute_dtype), frozen_extractor=extractor_frozen(config, stage),
                             cached_features=False)


def path_names(path) -> tuple[str, ...]:
  """A pytree key path (``jax.tree_util``) as its module and parameter names, outermost first."""
  return tuple(getattr(k, "key", str(k)) for k in path)


def stage_trains(path: tuple[str, ...], stage: int) -> bool:
  """Whether ``stage`` trains the parameter at ``path`` (its module names, outermost first).

  Stage 1 (``JPG.labels``) runs the extractor, the subspace's visual path and bases (W_x, B, W_b; Eqs. 4,
  6-10) and the labeler; the subspace's textual projection W_y, ``att_embed`` (JPG-projection's head reads
  the raw grids), the word embeddings and the Transformer get no gradient there, and PyTorch's Adam leaves
  such parameters untouched (no weight decay either). Stage 2 trains everything. ``tests/test_optim.py``
  checks this list against the gradients themselves.
  """
  if stage == 2:
    return True
  top = path[0]
  if top == "subspace":
    return path[1] != "w_y"
  return top in ("visual_extractor", "labeler")


def make_optimizer(config, params, steps_per_epoch: int, stage: int
                   ) -> tuple[optax.GradientTransformation, Callable]:
  """R2Gen's optimiser (``jpg_jax/optim.py``): ``clip_grad_value_``, then torch's Adam with coupled
  weight decay and amsgrad in two parameter groups (the extractor at its own learning rate), StepLR per
  epoch. ``optim.name='adagrad'`` is the paper's "initial accumulator value of 0.1" instead. Parameters
  the stage does not train (``stage_trains``) and a frozen extractor (``extractor_frozen``) get no update
  at all.

  Returns the transformation and the learning-rate function of the main group (of the update count).
  """
  o = config.optim
  schedule = lambda lr: optim_lib.step_lr(lr, steps_per_epoch, o.lr_step_epochs, o.lr_gamma)

  def group(lr):
    if o.name == "adam":
      return optim_lib.torch_adam(schedule(lr), o.b1, o.b2, o.eps, weight_decay=o.weight_decay,
                                   amsgrad=o.amsgrad)
    if o.name == "adagrad":
      return optax.chain(optax.add_decayed_weights(o.weight_decay),
                         optax.scale_by_rss(initial_accumulator_value=o.adagrad_initial_accumulator),
                         optax.scale_by_learning_rate(schedule(lr)))
    raise ValueError(f"Unknown optimiser {o.name!r}; choose from {OPTIMIZERS}.")

  def label(path, _):
    names = path_names(path)
    if not stage_trains(names, stage):
      return "frozen"
    if names[0] == "visual_extractor":
      return "frozen" if extractor_frozen(config, stage) else "extractor"
    return "rest"

  labels = jax.tree_util.tree_map_with_path(label, params)
  tx = optax.multi_transform({"extractor": group(o.extractor_learning_rate), "rest": group(o.learning_rate),
                              "frozen": optax.set_to_zero()}, labels)
  tx = optax.chain(optax.clip(o.grad_clip_value), tx) if o.grad_clip_value else tx
  return tx, schedule(o.learning_rate)


# ============================================================================================ train state
# XLA options for a program that runs once (the train state's init): backend optimisations off, as
# ``jax_disable_most_optimizations`` sets them. The smoke model's init compiles in 9.7 s instead of 19.2 s
# here (and runs in 0.4 s instead of 0.2 s), once a stage. Its values agree with the optimised program's
# to 1 ulp (6e-8 at most, from the normal draws' float arithmetic).
RUN_ONCE_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def init_variables(model: jpg_lib.JPG, config, rng) -> dict:
  """The model's variables from one all-zero example of the config's shapes."""
  d = config.dataset
  shapes = ip.example_shapes(d.image_size, d.max_seq_length, config.model.label_steps, 1, ip.num_views(config))
  images = jnp.zeros((1,) + shapes["images"], jnp.float32)
  reports = jnp.zeros((1,) + shapes["report_ids"], jnp.int32)
  label_ids = jnp.zeros((1,) + shapes["label_ids"], jnp.int32) if model.use_labeler else None
  p_rng, d_rng = jax.random.split(rng)
  return model.init({"params": p_rng, "dropout": d_rng}, images, reports, label_ids)


def _replicated_structs(tree, mesh):
  if mesh is None:
    return tree
  sharding = parallel.replicated(mesh)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def abstract_variables(model: jpg_lib.JPG, config, mesh=None) -> dict:
  """The model's parameters and batch statistics (where it has any) as ShapeDtypeStructs, replicated over
  ``mesh`` where given: what inference restores into. Nothing is computed."""
  abstract = jax.eval_shape(lambda: init_variables(model, config, jax.random.key(0)))
  return _replicated_structs({k: v for k, v in abstract.items() if k in ("params", "batch_stats") and v}, mesh)


def param_shapes(model: jpg_lib.JPG, config):
  """The model's parameters as ShapeDtypeStructs (nothing is computed)."""
  return abstract_variables(model, config)["params"]


def train_state(variables: dict, optimizer: optax.GradientTransformation, rng) -> dict:
  """The train state of given variables: step 0, a fresh optimiser state, the dropout key."""
  params = variables["params"]
  return {"step": jnp.zeros((), jnp.int32), "params": params,
          "batch_stats": variables.get("batch_stats", {}), "opt_state": optimizer.init(params), "rng": rng}


def create_train_state(model: jpg_lib.JPG, optimizer: optax.GradientTransformation, config, seed: int,
                       mesh=None) -> dict:
  """A freshly initialised train state, replicated over ``mesh`` (all devices by default)."""
  def init(rng):
    v_rng, s_rng = jax.random.split(rng)
    return train_state(init_variables(model, config, v_rng), optimizer, s_rng)

  mesh = mesh if mesh is not None else parallel.make_mesh()
  key = jax.random.key(seed)
  init = jax.jit(init, out_shardings=parallel.replicated(mesh)).lower(key)
  return init.compile(compiler_options=RUN_ONCE_COMPILER_OPTIONS)(key)


def abstract_train_state(model: jpg_lib.JPG, optimizer: optax.GradientTransformation, config,
                         mesh=None) -> dict:
  """The train state's ShapeDtypeStructs (replicated over ``mesh`` where given): what a checkpoint
  restores into and what ``cost.py`` compiles for."""
  def init():
    v_rng, s_rng = jax.random.split(jax.random.key(0))
    return train_state(init_variables(model, config, v_rng), optimizer, s_rng)

  return _replicated_structs(jax.eval_shape(init), mesh)


def variables_of(state: dict) -> dict:
  """What the model applies: parameters and batch statistics."""
  return {"params": state["params"], "batch_stats": state["batch_stats"]}


# ============================================================================================ losses
def token_nll(logits, targets, mask):
  """The masked negative log-likelihood of every target token (float32, shape of ``targets``)."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32))
  return -jnp.take_along_axis(logp, targets[..., None], -1)[..., 0] * mask


def masked_nll(logits, targets, mask):
  """R2Gen's LanguageModelCriterion: summed NLL of the masked targets over the mask's sum."""
  return token_nll(logits, targets, mask).sum() / jnp.maximum(mask.sum(), 1.0)


def losses(out: dict, batch: dict, config, stage: int) -> dict:
  t = config.train
  result = {}
  total = 0.0
  if stage == 2:
    result["report_loss"] = masked_nll(out["logits"], batch["report_ids"][:, 1:], batch["report_mask"][:, 1:])
    total += result["report_loss"]
  if "label_token_logits" in out:
    result["label_loss"] = masked_nll(out["label_token_logits"], batch["label_ids"][:, 1:],
                                      batch["label_mask"][:, 1:])                          # Eq. 11
    result["class_loss"] = optax.sigmoid_binary_cross_entropy(
        out["label_class_logits"].astype(jnp.float32), batch["label_targets"]).mean()
    total += t.label_loss_weight * result["label_loss"] + t.class_loss_weight * result["class_loss"]
  result["loss"] = total
  return result


# ============================================================================================ steps
def train_step(state: dict, batch: dict, *, model, optimizer, config, stage: int):
  """One optimiser step. ``state``: step, params, batch_stats, opt_state, rng (a plain pytree)."""
  rng = jax.random.fold_in(state["rng"], state["step"])
  diagnose = config.train.diagnostics   # the subspace's diagnostics beside the losses (diagnostics.py)

  def loss_fn(params):
    variables = {"params": params, "batch_stats": state["batch_stats"]}
    kw = dict(rngs={"dropout": rng}, mutable=["batch_stats"] + (["intermediates"] if diagnose else []))
    if stage == 1:
      (class_logits, token_logits), updates = model.apply(
          variables, batch["images"], batch["label_ids"], True, method=jpg_lib.JPG.labels, **kw)
      out = {"label_class_logits": class_logits, "label_token_logits": token_logits}
    else:
      label_ids = batch["label_ids"] if model.use_labeler else None
      out, updates = model.apply(variables, batch["images"], batch["report_ids"], label_ids, True, **kw)
    terms = losses(out, batch, config, stage)
    if diagnose:
      terms.update(diagnostics.from_intermediates(jax.lax.stop_gradient(updates.get("intermediates", {}))))
    return terms["loss"], (terms, updates["batch_stats"])

  (_, (terms, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
  updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
  new_state = dict(state, step=state["step"] + 1, params=optax.apply_updates(state["params"], updates),
                   batch_stats=batch_stats, opt_state=opt_state)
  terms["grad_norm"] = optax.global_norm(grads)
  if diagnose:
    terms.update(diagnostics.module_grad_norms(grads))
  # 1 while every parameter is finite: a checkpoint is written only if its parameters are.
  terms["params_finite"] = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x))
                                              for x in jax.tree.leaves(new_state["params"])])).astype(jnp.float32)
  return new_state, terms


def jit_train_step(model: jpg_lib.JPG, optimizer: optax.GradientTransformation, config, stage: int, mesh):
  """``train_step`` jitted for ``mesh``: the state replicated (and donated), the batch split over the
  data axis, the loss terms replicated."""
  replicated, sharded = parallel.replicated(mesh), parallel.data_sharded(mesh)
  return jax.jit(functools.partial(train_step, model=model, optimizer=optimizer, config=config, stage=stage),
                 in_shardings=(replicated, sharded), out_shardings=(replicated, replicated), donate_argnums=0)


def predict_reports(variables, images, *, model, beam: int, max_len: int, policy: str = "r2gen"):
  """Test-time outputs: report tokens (beam search) and, with a labeler, label logits and tokens."""
  tokens, out = decode_lib.generate_reports(model, variables, images, beam=beam, max_len=max_len,
                                            policy=policy)
  result = {"tokens": tokens}
  for k in ("label_class_logits", "label_tokens"):
    if k in out:
      result[k] = out[k]
  return result


def predict_labels(variables, images, *, model, beam: int):
  class_logits, tokens = decode_lib.generate_labels(model, variables, images, beam=beam)
  return {"label_class_logits": class_logits, "label_tokens": tokens}


def score_labels(variables, batch, *, model, beam: int):
  """Stage 1's validation: generated labels and class logits, and the teacher-forced label NLL."""
  out = predict_labels(variables, batch["images"], model=model, beam=beam)
  _, token_logits = model.apply(variables, batch["images"], batch["label_ids"], False, method=jpg_lib.JPG.labels)
  nll = token_nll(token_logits, batch["label_ids"][:, 1:], batch["label_mask"][:, 1:])
  out["label_nll"], out["label_count"] = nll.sum(-1), batch["label_mask"][:, 1:].sum(-1)
  return out

