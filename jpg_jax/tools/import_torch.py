"""A released R2Gen or CMN checkpoint as a finished jpg-jax run: score it here, compare with their number.

  python -m jpg_jax.tools.import_torch --model=r2gen --checkpoint=model_iu_xray.pth \\
      --config=configs/jpg.py:r2gen,r2gen_split --workdir=/runs/r2gen_released [--config.x=y ...]
  python -m jpg_jax.main --config=configs/jpg.py:r2gen,r2gen_split --workdir=/runs/r2gen_released \\
      --mode=evaluate
  python -m jpg_jax.main --config=configs/jpg.py:r2gen,r2gen_split --workdir=/runs/r2gen_released \\
      --mode=predict --images=FRONTAL.png,LATERAL.png

Reads the dict R2Gen's and R2GenCMN's trainers save (``epoch``, ``state_dict``, ``optimizer``,
``monitor_best``; ``_save_checkpoint`` in their ``modules/trainer.py``) with ``torch.load(...,
weights_only=True)``. Its ``state_dict`` (the torchvision ResNet-101 extractor as ``visual_extractor.model.N.*``
included, a ``module.`` prefix from ``DataParallel`` stripped) is renamed onto this model by
``convert_torch.rename_r2gen`` and ``torch_to_flax``. The vocabulary is built from the config's annotation
as the originals' ``Tokenizer`` builds it (their report cleaning, tokens of the training reports seen
``dataset.vocab_threshold`` times: 3 on IU X-Ray, 10 on MIMIC-CXR), so the config must name the split and
threshold the checkpoint was trained with (R2Gen's released IU X-Ray model: ``:r2gen,r2gen_split``). The
workdir is then written as a finished run (``train.write_imported_run``). A vocabulary that does not fit
the checkpoint's embedding, an unknown or missing key and a file that is not such a checkpoint each end in
one line. Needs torch (``pip install torch``; CPU is enough).
"""

from __future__ import annotations

import os
import re

import numpy as np
from absl import flags
from ml_collections import config_flags

from jpg_jax import cli
from jpg_jax import errors
from jpg_jax import input_pipeline as ip
from jpg_jax import steps
from jpg_jax import train
from jpg_jax.tools import convert_torch

RELEASED_KEYS = ("epoch", "state_dict", "optimizer", "monitor_best")   # modules/trainer.py, _save_checkpoint
_EMBEDDING = re.compile(r"(^|\.)encoder_decoder\.model\.tgt_embed\.0\.lut\.weight$")


def check_model_matches_config(model: str, config) -> None:
  """``--model`` and the config's architecture agree (R2Gen: relational memory; CMN: cross-modal memory)."""
  m = config.model
  if m.use_subspace or m.use_labeler or m.labels_in_encoder:
    raise errors.ConfigError(f"--model={model}: the config is not BASE-like (subspace or labels on); use "
                             f"configs/jpg.py:{model}.")
  if (model == "r2gen") != bool(m.relational_memory) or (model == "cmn") != bool(m.cross_modal_memory):
    raise errors.ConfigError(f"--model={model} does not match the config's architecture (relational_memory="
                             f"{m.relational_memory}, cross_modal_memory={m.cross_modal_memory}); use "
                             f"configs/jpg.py:{model}.")


def read_released(path: str) -> dict:
  """The released checkpoint's dict, opened with ``weights_only=True``; its keys checked."""
  try:
    import torch
  except ImportError:
    raise errors.ConfigError("tools/import_torch needs torch: pip install torch (the CPU wheel is enough).") from None
  if not os.path.isfile(path):
    raise errors.MissingFileError(f"--checkpoint {path} is not a file.")
  try:
    saved = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # noqa: BLE001  (pickle, zip and torch raise many types)
    raise errors.InputError(f"--checkpoint {path} cannot be read by torch.load(weights_only=True) "
                            f"({type(e).__name__}: {' '.join(str(e).split())[:200]}).") from None
  if not isinstance(saved, dict) or "state_dict" not in saved:
    keys = sorted(saved)[:8] if isinstance(saved, dict) else type(saved).__name__
    raise errors.InputError(f"--checkpoint {path} is not in the released layout: no 'state_dict' key (has "
                            f"{keys}; expected {list(RELEASED_KEYS)}).")
  return saved


def strip_data_parallel(state_dict: dict) -> dict:
  """Keys saved from ``torch.nn.DataParallel`` (the originals with n_gpu > 1) without their ``module.``."""
  if state_dict and all(k.startswith("module.") for k in state_dict):
    return {k[len("module."):]: v for k, v in state_dict.items()}
  return dict(state_dict)


def check_vocabulary_fits(state_dict: dict, num_logits: int, config, path: str) -> None:
  """The checkpoint's embedding has as many rows as this vocabulary has ids (tokens + id 0)."""
  embedding = [v for k, v in state_dict.items() if _EMBEDDING.search(k)]
  if not embedding:
    raise errors.InputError(f"--checkpoint {path}: no key encoder_decoder.model.tgt_embed.0.lut.weight (the "
                            f"report embedding): not an R2Gen or CMN state_dict.")
  rows = int(embedding[0].shape[0])
  if rows != num_logits:
    raise errors.ConfigError(
        f"The checkpoint's embedding has {rows} rows, this config's vocabulary {num_logits} ids "
        f"({num_logits - 1} tokens + id 0, dataset.name={config.dataset.name}, dataset.vocab_threshold="
        f"{config.dataset.vocab_threshold}): use the split and threshold the checkpoint was trained with.")


def import_checkpoint(model_kind: str, path: str, config, workdir: str) -> int:
  """The whole command; returns the step the run's checkpoint is written at."""
  check_model_matches_config(model_kind, config)
  saved = read_released(path)
  state_dict = strip_data_parallel(saved["state_dict"])
  data = ip.load_data(config)
  check_vocabulary_fits(state_dict, data.vocab.num_logits, config, path)
  model = steps.create_model(config, data.vocab, None, stage=2)
  template = steps.abstract_variables(model, config)
  try:
    variables = convert_torch.torch_to_flax(convert_torch.rename_r2gen(state_dict), template)
  except KeyError as e:
    raise errors.InputError(f"--checkpoint {path}: {e.args[0]} (the config's architecture: "
                            f"configs/jpg.py:{model_kind} with its sizes?)") from None
  except ValueError as e:
    raise errors.InputError(f"--checkpoint {path}: {e}") from None
  variables = {k: {**v} for k, v in variables.items()}
  imported = {"source": str(path), "model": model_kind,
              "epoch": _plain(saved.get("epoch")), "monitor_best": _plain(saved.get("monitor_best"))}
  return train.write_imported_run(config, workdir, variables, imported)


def _plain(value):
  """A JSON-able copy of a saved scalar (torch tensors and numpy numbers included)."""
  if value is None or isinstance(value, (int, float, str)):
    return value
  try:
    return float(np.asarray(value))
  except (TypeError, ValueError):
    return str(value)


def define_flags() -> None:
  """The command's flags, defined only when it runs as a program (its functions import anywhere)."""
  config_flags.DEFINE_config_file("config", None, "configs/jpg.py:r2gen or :cmn, with the split.")
  flags.DEFINE_enum("model", None, ["r2gen", "cmn"], "Whose checkpoint: R2Gen's or R2GenCMN's.")
  flags.DEFINE_string("checkpoint", None, "The released .pth file (model_best.pth, ...).")
  flags.DEFINE_string("workdir", None, "A new workdir to write as a finished run.")


def main(argv):
  if len(argv) > 1:
    raise errors.UserError(f"Unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  step = import_checkpoint(f.model, f.checkpoint, f.config, f.workdir)
  print(f"{f.checkpoint} written to {f.workdir} as a finished run (stage2/{step}); score it with "
        f"python -m jpg_jax.main --config=... --workdir={f.workdir} --mode=evaluate")


if __name__ == "__main__":
  define_flags()
  cli.run(main, required=["config", "model", "checkpoint", "workdir"])
