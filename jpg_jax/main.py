"""jpg-jax: python -m jpg_jax.main --config=configs/jpg.py[:VARIANTS] --workdir=DIR [--mode=MODE]

Modes: train (default: stage 1, label mining, stage 2, the test split), evaluate (re-score DIR's best
checkpoint), predict (--images=FRONTAL,LATERAL: one study's report), stats (Table 1), params, cost.

Config variants, combined with commas (configs/jpg.py says what each sets; any field: --config.a.b=v):
  (none) the paper on IU X-Ray   synthetic  the embedded default (no download)   synthetic_long  longer
  base, projection, auxiliary  Table 2's ablations      r2gen, cmn  Table 2's baselines in the same code
  tuned  this project's measured choices   faithful  the paper's method under :synthetic too
  paper_split, r2gen_split  IU X-Ray's splits   mimic  MIMIC-CXR in R2Gen's layout   smoke  tests' tiny one

A user error ends in one line on stderr and exit status 2, a non-finite loss in one line and exit 1, a
preempted run (SIGTERM) at a checkpoint with exit 143; the same command resumes. --verbosity=1 prints every
scalar and traceback. A TPU pod runs the same command on every host (launch_tpu.sh, docs/tpu.md).
"""

from __future__ import annotations

import json
import logging as std_logging
import os
import sys

import jax
from absl import app
from absl import flags
from absl import logging
from etils import epath
from ml_collections import config_flags

from jpg_jax import checkpointing
from jpg_jax import cli
from jpg_jax import compile_cache
from jpg_jax import config_checks
from jpg_jax import console
from jpg_jax import cost
from jpg_jax import cpu_scheduler
from jpg_jax import datasets
from jpg_jax import errors
from jpg_jax import inference
from jpg_jax import input_pipeline
from jpg_jax import parallel
from jpg_jax import table1
from jpg_jax import train
from jpg_jax.datasets import iu_xray
from jpg_jax.models import param_count

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and results go.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "evaluate", "predict", "stats", "params", "cost"],
                          "What to run.")
_IMAGES = flags.DEFINE_list("images", [], "predict: the study's image files, one per view of the config's "
                             "dataset (IU X-Ray: the frontal and the lateral; MIMIC-CXR: one).")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "evaluate / predict: where the results go (default DIR/results, DIR/predict); "
    "nothing else is written, so a read-only finished run can be evaluated into another folder.")
_ATTENTION = flags.DEFINE_string(
    "attention_png", "", "predict: where to draw the cross-attention map (Fig. 4); '' = "
    "DIR/predict/attention.png, 'none' = no map.")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", ["auto", "true", "false"],
    "Start jax.distributed: true (auto-detects Cloud TPU / SLURM / MPI), auto (when the flags below, "
    "JAX_COORDINATOR_ADDRESS, SLURM or MPI say several processes run) or false.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0's coordinator.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "How many processes run this command.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes - 1.")
_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache", "", "Where compiled programs are cached across runs (JAX's persistent compilation "
    "cache): '' = $JAX_COMPILATION_CACHE_DIR or ~/.cache/jpg_jax/xla, 'none' = off.")
_CPU_SCHEDULER = flags.DEFINE_enum(
    "cpu_scheduler", "concurrency", list(cpu_scheduler.CHOICES),
    "How XLA:CPU orders a program's operations: for concurrency (XLA's default) or for memory, which also "
    "returns freed buffers to the system (the paper's training at batch 16: 12.05 -> 8.80 GiB, with "
    "--config.model.remat=nothing_saveable 7.95 GiB; the step 9-13% slower); an XLA_FLAGS that sets the "
    "option wins (jpg_jax/cpu_scheduler.py).")
_STOP_AT = flags.DEFINE_string(
    "stop_at", None, "train: STAGE:STEP (e.g. 1:100) stops after that training step with a checkpoint, exit "
    "status 0; the same command without it resumes there. For a run's first steps: their diagnostics in "
    "DIR/logs (train.log_every_steps).")


class StopAt:
  """A training hook (``train.Hook``) that asks the run to stop after step ``step`` of stage ``stage``;
  ``fired`` tells a requested stop from a preemption."""

  def __init__(self, text: str):
    try:
      stage, step = (int(x) for x in text.split(":"))
    except ValueError:
      raise errors.UserError(f"--stop_at={text!r}: expected STAGE:STEP, e.g. 1:100.") from None
    if stage not in (1, 2) or step < 1:
      raise errors.UserError(f"--stop_at={text!r}: the stage is 1 or 2 and the step at least 1.")
    self.stage, self.step, self.fired = stage, step, False

  def __call__(self, stage: int, step: int) -> bool:
    self.fired = self.fired or (stage == self.stage and step >= self.step)
    return self.fired


def run_stats(config) -> str:
  """Table 1 of the built dataset; for iu_xray without images, from the report sources alone."""
  name, data_dir = config.dataset.name, config.dataset.data_dir
  builder = datasets.get_builder(name, data_dir)
  note = ""
  if not builder.is_prepared() and name.startswith("iu_xray/") and not (
      epath.Path(config.dataset.manual_dir) / "images").exists():
    splits, excluded = iu_xray.splits_from_sources(name.split("/", 1)[1], config.dataset.manual_dir)
    indices = {s: input_pipeline.SplitIndex.from_reports(items) for s, items in splits.items()}
    metadata = {"excluded": dict(excluded)}
    note = "\n(from the report sources in the manual dir: the image dataset is not built)"
  else:
    builder = datasets.prepare(name, data_dir, config.dataset.manual_dir, config.dataset.download)
    indices = {s: input_pipeline.SplitIndex.read(input_pipeline.open_split(name, s, data_dir),
                                                 datasets.report_cleaning(name))
               for s in builder.info.splits}
    metadata = builder.info.metadata or {}
  order = {"train": 0, "val": 1, "test": 2}
  rows = sorted((table1.split_stats(s, idx, len(datasets.views(name))) for s, idx in indices.items()),
                key=lambda r: order.get(r.split, 3))
  paper = name.startswith("iu_xray/")
  table = table1.format_table(name, rows, table1.PAPER_TABLE1 if paper else None)
  if paper:
    table += "\n" + table1.PAPER_TABLE1_NOTE
  for key in ("excluded", "skipped", "empty_reports"):
    if metadata.get(key):
      table += f"\n{key}: {dict(metadata[key])}"
  return table + note


def run_params(config, vocab_size: int = 761, num_label_tokens: int = 64) -> str:
  """Parameter counts per top-level component (report vocabulary and label-token sizes as given: R2Gen's
  761 logits by default; the label vocabulary depends on the mined labels)."""
  return param_count.table(config, vocab_size, num_label_tokens)


def _print(text: str) -> None:
  if jax.process_index() == 0:
    print(text)


class _OwnInfoOnly(std_logging.Filter):
  """Passes warnings and errors of every library, and INFO only from jpg-jax itself (its progress line
  with the ETA, stage summaries): orbax alone logs about 150 INFO lines per checkpoint."""

  _ROOT = os.path.dirname(os.path.abspath(__file__))

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or record.pathname.startswith(self._ROOT)


def quiet_third_party_info() -> None:
  """Third-party INFO below the default verbosity; ``--verbosity=1`` (absl's DEBUG) shows everything."""
  if logging.get_verbosity() < logging.DEBUG:
    logging.get_absl_handler().addFilter(_OwnInfoOnly())


_fail = cli.fail   # one line on stderr, exit status 2


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  config = _CONFIG.value
  cli.check_config_flag()   # config_flags' stand-in for a file it could not load
  try:
    run(config)
  except errors.UserError as e:
    if logging.get_verbosity() >= logging.DEBUG:
      logging.exception("User error:")
    _fail(e)
  except errors.RunError as e:   # the run's side (a non-finite loss): one line, exit status 1
    if logging.get_verbosity() >= logging.DEBUG:
      logging.exception("Run error:")
    print(f"jpg_jax.main: error: {e}", file=sys.stderr)
    sys.exit(errors.RUN_EXIT_STATUS)


ORIGINAL_KEYS = ("BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "METEOR", "ROUGE_L")


def original_names(metrics: dict) -> str:
  """The test metrics as R2Gen's and CMN's trainers log them (``modules/trainer.py``: ``'\t{:15s}: {}'``
  of ``test_BLEU_1`` ...), so that the lines compare one to one with their logs."""
  return "\n".join(f"\t{'test_' + k:15s}: {metrics[k]}" for k in ORIGINAL_KEYS if k in metrics)


def where_results_are(workdir: str) -> str:
  """The end of the main job's console: where its results, curves and example pages are."""
  w = epath.Path(workdir)
  return "\n".join((f"Results:  {w / 'results'} (test_metrics.json, test_reports.jsonl)",
                    f"Curves:   tensorboard --logdir={w / 'logs'}",
                    f"Examples: python -m jpg_jax.tools.examples --run=JPG={w} --output=examples.md"))


def run(config) -> None:
  """The mode the flags ask for."""
  quiet_third_party_info()
  console.use_short_prefix()
  cpu_scheduler.use(_CPU_SCHEDULER.value)   # before JAX starts its backends
  compile_cache.enable(_COMPILATION_CACHE.value)
  parallel.initialize_distributed(_DISTRIBUTED.value, _COORDINATOR.value, _NUM_PROCESSES.value,
                                  _PROCESS_ID.value)
  if jax.process_index() > 0:
    logging.set_verbosity(logging.WARNING)   # process 0 speaks for the run
  logging.info("JAX %s, %d process(es), %d device(s).", jax.__version__, jax.process_count(),
               jax.device_count())
  if _MODE.value in ("train", "evaluate", "predict") and not _WORKDIR.value:
    raise errors.UserError(f"--workdir is required for --mode={_MODE.value}.")
  if _MODE.value in ("stats", "params", "cost"):   # the other modes check it against their devices
    config_checks.validate(config, training=False)
  if _MODE.value == "train":
    stop_at = StopAt(_STOP_AT.value) if _STOP_AT.value else None
    try:
      metrics = train.train_and_evaluate(config, _WORKDIR.value, hooks=[stop_at] if stop_at else [])
      _print(console.test_table(metrics, metrics.get("baseline_most_frequent")))
      _print(where_results_are(_WORKDIR.value))
    except checkpointing.Preempted as stop:
      logging.warning("Stopped at a checkpoint (%s); the same command resumes there.", stop)
      if not (stop_at and stop_at.fired):
        sys.exit(143)   # 128 + SIGTERM, as a job scheduler expects of a preempted job
  elif _MODE.value == "evaluate":
    metrics = inference.evaluate_checkpoint(config, _WORKDIR.value, _OUTPUT_DIR.value)
    _print(console.test_table(metrics, metrics.get("baseline_most_frequent")))
    _print(f"The metrics as R2Gen's and CMN's trainers log them (all: "
           f"{epath.Path(_OUTPUT_DIR.value or epath.Path(_WORKDIR.value) / 'results') / 'test_metrics.json'}):")
    _print(original_names(metrics))
  elif _MODE.value == "predict":
    attention_png = None if _ATTENTION.value == "none" else _ATTENTION.value
    _print(json.dumps(inference.predict(config, _WORKDIR.value, _IMAGES.value, _OUTPUT_DIR.value,
                                        attention_png=attention_png), indent=1))
  elif _MODE.value == "stats":
    _print(run_stats(config))
  elif _MODE.value == "params":
    _print(run_params(config))
  elif _MODE.value == "cost":
    _print(cost.table(config))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main, flags_parser=cli.parse_flags)
