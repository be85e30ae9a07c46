"""A config checked whole before a run writes anything, and what makes two configs "the same run".

``validate(config, device_count, process_count)`` raises one ``ConfigError`` listing every value that
cannot work: an unknown choice (``model.similarity=cosin``), a batch that does not divide over the
devices (train and eval batches named apart), a size that contradicts another (``image_size`` above
``resize_size``, ``d_model`` not a multiple of ``num_heads``), a selection metric the stage's evaluator
does not return, a ``resnet_checkpoint`` that is not there, or a real-data run with none (the paper's
extractor is ImageNet-pretrained; ``random`` asks for a random init). ``train_and_evaluate``, ``evaluate`` and
``predict`` call it before touching the workdir, so a corrected rerun is never refused as "a different
config".

Keys that say where things are, not what is computed (``PATH_KEYS``), are not part of a run's identity:
a workdir moved to another machine, with its dataset elsewhere, resumes.
"""

from __future__ import annotations

import hashlib
import json
import math

from etils import epath

from jpg_jax import datasets
from jpg_jax import decode
from jpg_jax import errors
from jpg_jax import mining
from jpg_jax import resnet_weights
from jpg_jax import steps
from jpg_jax.evaluators import labels as label_eval
from jpg_jax.evaluators import reports as report_eval
from jpg_jax.models import jpg as jpg_lib
from jpg_jax.models import labeler
from jpg_jax.models import resnet
from jpg_jax.models import subspace
from jpg_jax.models import layers

# Where things are and how they are fetched, the resume switch itself and what is logged beside the losses:
# not what a run computes. (``dataset.worker_count`` is not one of them: a checkpoint's data-iterator state
# has its form.)
PATH_KEYS = ("dataset.data_dir", "dataset.manual_dir", "dataset.download", "train.allow_config_change",
             "train.diagnostics")


RANDOM = "random"   # resnet_checkpoint: train the extractor from a random init, on purpose


def pretrained_extractor(config) -> str:
  """The folder of the extractor's pretrained weights (``resnet_checkpoint``), or '' for a random init."""
  return "" if config.resnet_checkpoint in ("", RANDOM) else config.resnet_checkpoint


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
      "model.layer_norm": layers.LAYER_NORMS,
      "compute_dtype": ("float32", "bfloat16", "float16"),
      "train.stage1_select_metric": label_eval.METRICS,
      "train.stage2_select_metric": report_eval.METRICS,
      "decode.policy": decode.POLICIES,
      "optim.name": steps.OPTIMIZERS,
      "train.stage2_extractor": steps.STAGE2_EXTRACTORS,
      "labels.mining": mining.MININGS,
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
  for key, value in flat(config.to_dict()).items():
    if isinstance(value, float) and not math.isfinite(value):
      out.append(f"{key}={value!r} must be a finite number")
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
  weights = pretrained_extractor(config)
  if training and weights and "://" not in weights and not epath.Path(weights).is_dir():
    out.append(f"resnet_checkpoint={weights!r} is not a folder (make one with "
               f"python -m jpg_jax.tools.convert_resnet)")
  if training and not config.resnet_checkpoint and not d.name.startswith("synthetic_cxr"):
    out.append(f"the paper's ResNet-{m.resnet_depth} is ImageNet-pretrained (Sec. 4.4) and resnet_checkpoint "
               f"is not set: convert torchvision's resnet{m.resnet_depth} file with python -m "
               f"jpg_jax.tools.convert_resnet --depth={m.resnet_depth} --torch_checkpoint=FILE.pth --output=DIR "
               f"and pass --config.resnet_checkpoint=DIR, or --config.resnet_checkpoint={RANDOM!r} to train it "
               f"from a random init")
  if weights:
    marker = resnet_weights.describe(weights) if training and "://" not in weights else {}
    shape = (marker.get("depth", m.resnet_depth), marker.get("width", 64))
    if shape != (m.resnet_depth, m.resnet_width):
      out.append(f"resnet_checkpoint={weights!r} holds a ResNet-{shape[0]} of width {shape[1]}, but the config's "
                 f"is ResNet-{m.resnet_depth} of width {m.resnet_width}")
  return out


MIN_VOCABULARY = 5   # real tokens (``<unk>`` aside): fewer cannot write a report


def data_problems(config, data) -> list[str]:
  """What the loaded data (``input_pipeline.Data``) cannot do under ``config``, one phrase each: a split
  smaller than its global batch, a stage-1 selection smaller than the batch, a vocabulary of a handful
  of tokens. Checked before the workdir is written."""
  t, out = config.train, []
  sizes = {split: len(index) for split, index in data.index.items()}
  if sizes.get("train", 0) < t.batch_size:
    out.append(f"train.batch_size={t.batch_size} (global) is larger than the train split's "
               f"{sizes.get('train', 0)} examples")
  if config.model.use_labeler and sizes.get("train", 0) >= t.batch_size:
    _, kept, _ = mining.stage1_labels(config, data.index["train"])
    if len(kept) < t.batch_size:
      out.append(f"train.batch_size={t.batch_size} (global) is larger than stage 1's {len(kept)} training "
                 f"reports with one of the labels.num_patterns={config.labels.num_patterns} simple patterns")
  for split in ("val", "test"):
    if not sizes.get(split):
      out.append(f"the {split} split of {config.dataset.name} is empty")
  real = len(data.vocab) - 1
  if real < MIN_VOCABULARY:
    out.append(f"dataset.vocab_threshold={config.dataset.vocab_threshold} leaves {real} token(s) besides <unk> "
               f"in the train split's vocabulary (at least {MIN_VOCABULARY} needed): lower the threshold")
  return out


def validate_data(config, data) -> None:
  """Raises ``ConfigError`` naming everything ``data_problems`` finds."""
  found = data_problems(config, data)
  if found:
    raise errors.ConfigError(f"Bad config for this data: {'; '.join(found)}.")


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
              "model.visual_positions": False, "optim.b1": 0.9, "optim.b2": 0.999, "optim.eps": 1e-8,
              "labels.mining": "agreeing"}


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
