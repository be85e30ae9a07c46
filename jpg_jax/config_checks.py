"""A config checked whole before a run writes anything, and what makes two configs "the same run".

``validate(config, device_count, process_count)`` raises one ``ConfigError`` listing every value that
cannot work: an unknown choice (``model.similarity=cosin``), a batch that does not divide over the
devices (train and eval batches named apart), a size that contradicts another (``image_size`` above
``resize_size``, ``d_model`` not a multiple of ``num_heads``), a selection metric the stage's evaluator
does not return, a ``resnet_checkpoint`` that is not there. ``train_and_evaluate``, ``evaluate`` and
``predict`` call it before touching the workdir, so a corrected rerun is never refused as "a different
config".

Keys that say where things are, not what is computed (``PATH_KEYS``), are not part of a run's identity:
a workdir moved to another machine, with its dataset elsewhere, resumes.
"""

from __future__ import annotations

import hashlib
import json

from etils import epath

from jpg_jax import datasets
from jpg_jax import decode
from jpg_jax import errors
from jpg_jax import steps
from jpg_jax.evaluators import labels as label_eval
from jpg_jax.evaluators import reports as report_eval
from jpg_jax.models import jpg as jpg_lib
from jpg_jax.models import labeler
from jpg_jax.models import resnet
from jpg_jax.models import subspace
from jpg_jax.models import transformer

# Where things are and how they are fetched, the resume switch itself and what is logged beside the losses:
# not what a run computes. (``dataset.worker_count`` is not one of them: a checkpoint's data-iterator state
# has its form.)
PATH_KEYS = ("dataset.data_dir", "dataset.manual_dir", "dataset.download", "train.allow_config_change",
             "train.diagnostics")


def dataset_names() -> tuple[str, ...]:
  """Every ``builder/config`` the ``dataset.name`` key may take."""
  return tuple(f"{b.name}/{c.name}" for b in (datasets.IuXray, datasets.MimicCxr, datasets.SyntheticCxr)
               for c in b.BUILDER_CONFIGS)


def choices() -> dict[str, tuple]:
  """The keys with a fixed set of values, and the values (each from the module that reads the key)."""
  return {
      "dataset.name": dataset_names(),
      "model.resnet_depth": resnet.DEPTHS,
      "model.remat": resnet.REMAT_POLICIES,
      "model.extractor_batch": jpg_lib.EXTRACTOR_BATCHES,
      "model.similarity": subspace.SIMILARITIES,
      "model.train_label_source": jpg_lib.TRAIN_LABEL_SOURCES,
      "model.head": tuple(labeler.HEADS),
      "model.layer_norm": transformer.LAYER_NORMS,
      "compute_dtype": ("float32", "bfloat16", "float16"),
      "train.stage1_select_metric": label_eval.METRICS,
      "train.stage2_select_metric": report_eval.METRICS,
      "decode.policy": decode.POLICIES,
      "optim.name": steps.OPTIMIZERS,
      "train.stage2_extractor": steps.STAGE2_EXTRACTORS,
  }


_POSITIVE = ("dataset.image_size", "dataset.resize_size", "dataset.max_seq_length", "labels.num_patterns",
             "labels.num_mined", "labels.mining_beam", "model.resnet_width", "model.num_bases",
             "model.label_hidden", "model.label_steps", "model.d_model", "model.d_ff", "model.num_heads",
             "model.num_layers", "model.max_length", "train.batch_size", "train.eval_batch_size",
             "train.stage2_epochs", "train.eval_every_epochs", "train.log_every_steps",
             "train.keep_checkpoints", "train.beam_size",
             "optim.learning_rate", "optim.lr_step_epochs", "model.rm_num_slots", "model.rm_num_heads",
             "model.cmm_size", "model.cmm_top_k", "optim.eps")
_NON_NEGATIVE = ("dataset.vocab_threshold", "dataset.worker_count", "labels.min_mined", "model.top_k",
                 "model.basis_init_std", "model.attention_layer", "train.stage1_epochs",
                 "train.precise_bn_batches", "train.label_loss_weight", "train.class_loss_weight", "optim.extractor_learning_rate",
                 "optim.weight_decay", "optim.lr_gamma", "optim.grad_clip_value",
                 "optim.adagrad_initial_accumulator")
_PROBABILITIES = ("model.dropout", "model.label_dropout", "model.visual_dropout",   # in [0, 1)
                  "optim.b1", "optim.b2")


def _get(config, key: str):
  for part in key.split("."):
    config = config[part]
  return config


def problems(config, device_count: int = 1, process_count: int = 1, training: bool = True) -> list[str]:
  """Every value of ``config`` that cannot work, one phrase each (empty: the config is fine); without
  ``training`` (evaluate, predict), the paths only training reads are not checked."""
  out = []
  for key, allowed in choices().items():
    if _get(config, key) not in allowed:
      out.append(f"{key}={_get(config, key)!r} is not one of {', '.join(map(repr, allowed))}")
  for key in _POSITIVE:
    if not _get(config, key) > 0:
      out.append(f"{key}={_get(config, key)!r} must be positive")
  for key in _NON_NEGATIVE:
    if not _get(config, key) >= 0:
      out.append(f"{key}={_get(config, key)!r} must not be negative")
  for key in _PROBABILITIES:
    if not 0 <= _get(config, key) < 1:
      out.append(f"{key}={_get(config, key)!r} must be in [0, 1)")
  d, m, t, labels = config.dataset, config.model, config.train, config.labels
  if m.use_labeler and not t.stage1_epochs > 0:
    out.append(f"train.stage1_epochs={t.stage1_epochs!r} must be positive for a model with a labeler")
  if not 0 < labels.normal_keep <= 1:
    out.append(f"labels.normal_keep={labels.normal_keep!r} must be in (0, 1]")
  if d.image_size > d.resize_size:
    out.append(f"dataset.image_size={d.image_size} is larger than dataset.resize_size={d.resize_size} "
               f"(the training crop is taken from the resized view)")
  if m.num_heads > 0 and m.d_model % m.num_heads:
    out.append(f"model.d_model={m.d_model} is not a multiple of model.num_heads={m.num_heads}")
  if m.relational_memory and m.rm_num_heads > 0 and m.d_model % m.rm_num_heads:
    out.append(f"model.d_model={m.d_model} is not a multiple of model.rm_num_heads={m.rm_num_heads}")
  if m.cross_modal_memory and m.cmm_top_k > m.cmm_size:
    out.append(f"model.cmm_top_k={m.cmm_top_k} is larger than model.cmm_size={m.cmm_size}")
  if m.top_k > m.num_bases:
    out.append(f"model.top_k={m.top_k} is larger than model.num_bases={m.num_bases}")
  if m.attention_layer >= m.num_layers:
    out.append(f"model.attention_layer={m.attention_layer} is not a layer of model.num_layers={m.num_layers}")
  if m.max_length < d.max_seq_length:
    out.append(f"model.max_length={m.max_length} is shorter than dataset.max_seq_length={d.max_seq_length}")
  for key in ("train.batch_size", "train.eval_batch_size"):
    size = _get(config, key)
    if size > 0 and size % device_count:
      out.append(f"{key}={size} (global) is not a multiple of the {device_count} devices")
    elif size > 0 and size % process_count:
      out.append(f"{key}={size} (global) is not a multiple of the {process_count} processes")
  if t.stage2_select_metric == "METEOR" and not t.val_meteor:
    out.append("train.stage2_select_metric='METEOR' needs train.val_meteor=True (validation computes no "
               "METEOR otherwise)")
  if t.stage2_select_metric.startswith("label_") and not m.use_labeler:
    out.append(f"train.stage2_select_metric={t.stage2_select_metric!r} needs a labeler "
               f"(model.use_labeler=True)")
  if training and config.resnet_checkpoint and "://" not in config.resnet_checkpoint and not epath.Path(
      config.resnet_checkpoint).is_dir():
    out.append(f"resnet_checkpoint={config.resnet_checkpoint!r} is not a folder (make one with "
               f"python -m jpg_jax.tools.convert_resnet)")
  if config.resnet_checkpoint and m.resnet_width != 64:
    out.append(f"resnet_checkpoint holds torchvision's ResNet (width 64), but model.resnet_width="
               f"{m.resnet_width}")
  return out


def validate(config, device_count: int = 1, process_count: int = 1, training: bool = True) -> None:
  """Raises ``ConfigError`` naming every value of ``config`` that cannot work (see ``problems``)."""
  found = problems(config, device_count, process_count, training)
  if found:
    raise errors.ConfigError(f"Bad config: {'; '.join(found)}.")


# ============================================================================================ a run's identity
def flat(d: dict, prefix: str = "") -> dict:
  """``{'a': {'b': 1}}`` -> ``{'a.b': 1}``."""
  return {k2: v2 for k, v in d.items() for k2, v2 in (
      flat(v, f"{prefix}{k}.").items() if isinstance(v, dict) else [(f"{prefix}{k}", v)])}


# Keys added to the config after runs had been written without them, each with the value that computes what
# those runs computed. A config holding that value leaves the key out of its identity, so that the workdirs
# and checkpoints written before the key existed still match it (and a config using the new feature does not).
ADDED_KEYS = {"model.relational_memory": False, "model.rm_num_slots": 3, "model.rm_num_heads": 8,
              "model.cross_modal_memory": False, "model.cmm_size": 2048, "model.cmm_top_k": 32,
              "model.visual_positions": False, "optim.b1": 0.9, "optim.b2": 0.999, "optim.eps": 1e-8}


def identity(config_json: str) -> dict:
  """The flat config without ``PATH_KEYS`` (and ``ADDED_KEYS`` at their old values): what a run computes."""
  return {k: v for k, v in flat(json.loads(config_json)).items()
          if k not in PATH_KEYS and not (k in ADDED_KEYS and v == ADDED_KEYS[k])}


def fingerprint(config) -> str:
  """A short hash of ``identity``: checkpoints carry it, and a resumed run compares it."""
  return hashlib.sha256(json.dumps(identity(config.to_json()), sort_keys=True).encode()).hexdigest()[:16]


def fingerprints(config) -> tuple[str, str]:
  """``fingerprint`` and the one checkpoints written before it carry (the hash of the whole config)."""
  return fingerprint(config), hashlib.sha256(config.to_json(sort_keys=True).encode()).hexdigest()[:16]


def differences(old_json: str, new_json: str) -> list[str]:
  """``key: old -> new`` for every key of ``identity`` that differs (or that only one of them has)."""
  old, new = identity(old_json), identity(new_json)
  missing = "(absent)"
  return [f"{k}: {json.dumps(old.get(k, missing))} -> {json.dumps(new.get(k, missing))}"
          for k in sorted(set(old) | set(new)) if old.get(k, missing) != new.get(k, missing)]
