"""What the main job prints for people: a progress line per logging interval, a line per validation and a
table of test metrics at the end. Everything else (every scalar, per-pattern recall, gradient norms per
module) goes to TensorBoard and ``logs/history.jsonl``; ``--verbosity=1`` brings it to the console too.

Pure functions from numbers to text, so that every line's shape is tested (none over ``MAX_WIDTH``
characters, the log prefix included).
"""

from __future__ import annotations

import logging as std_logging
import re
import textwrap
from typing import Mapping

from absl import logging

MAX_WIDTH = 160
PROGRESS_LINES = 8   # progress lines a stage at most (and its last step's)
# The few validation metrics that select a checkpoint or say whether the model sees the findings, in the
# order they are shown; a stage shows those it computes (stage 1: labels and patterns; stage 2: BLEU-4,
# labels, distinct reports).
VALIDATION_KEYS = (("BLEU_4", "BLEU-4"), ("label_micro_f1", "label micro-F1"),
                   ("pattern_macro_f1", "pattern macro-F1"), ("distinct_reports", "distinct reports"))
# The end table's rows: (key in test_metrics.json, or "clinical/KEY", label).
TEST_ROWS = (("BLEU_1", "BLEU-1"), ("BLEU_2", "BLEU-2"), ("BLEU_3", "BLEU-3"), ("BLEU_4", "BLEU-4"),
             ("METEOR", "METEOR"), ("ROUGE_L", "ROUGE-L"), ("label_micro_f1", "label micro-F1"),
             ("clinical/micro_f1", "clinical micro-F1"), ("clinical/strict_micro_f1", "clinical strict micro-F1"),
             ("chexpert/micro_f1", "CheXpert micro-F1"), ("distinct_reports", "distinct reports"),
             ("mean_length", "mean length (words)"))


def duration(seconds: float) -> str:
  """``1h02m``, ``3m07s`` or ``42s``."""
  seconds = max(int(round(seconds)), 0)
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  if hours:
    return f"{hours}h{minutes:02d}m"
  return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def progress_line(stage: int, step: int, total: int, loss: float | None, steps_per_sec: float) -> str:
  """``stage 2  step 120/620 ( 19%)  loss 1.235  9.27 steps/s  ETA 54s``."""
  eta = (total - step) / max(steps_per_sec, 1e-9)
  loss_text = f"  loss {loss:.4g}" if loss is not None else ""
  return (f"stage {stage}  step {step}/{total} ({100 * step / max(total, 1):3.0f}%){loss_text}  "
          f"{steps_per_sec:.2f} steps/s  ETA {duration(eta)}")


COUNTS = ("distinct_reports",)          # shown as integers
LENGTHS = ("mean_length",)              # one decimal; everything else is a score in [0, 1]: three


def _number(value, key: str = "") -> str:
  if key.split("/")[-1] in COUNTS:
    return f"{int(round(float(value)))}"
  return f"{float(value):.1f}" if key.split("/")[-1] in LENGTHS else f"{float(value):.3f}"


def validation_line(stage: int, step: int, metrics: Mapping[str, float], select_metric: str,
                    best: float | None) -> str:
  """``stage 2  validation at step 124: BLEU-4 0.312, clinical micro-F1 0.54, ... (best BLEU-4 so far)``."""
  shown = [f"{label} {_number(metrics[key], key)}" for key, label in VALIDATION_KEYS if key in metrics]
  if select_metric in metrics and not any(select_metric == key for key, _ in VALIDATION_KEYS):
    shown.insert(0, f"{select_metric} {_number(metrics[select_metric], select_metric)}")
  value = metrics.get(select_metric)
  label = dict(VALIDATION_KEYS).get(select_metric, select_metric)
  mark = ""
  if value is not None:
    mark = f"  (new best {label})" if best is None or value > best else f"  (best {label} {_number(best, select_metric)})"
  return f"stage {stage}  validation at step {step}: {', '.join(shown)}{mark}"


def _lookup(metrics: Mapping, key: str):
  value = metrics
  for part in key.split("/"):
    if not isinstance(value, Mapping) or part not in value:
      return None
    value = value[part]
  return value


def test_table(metrics: Mapping, baseline: Mapping | None = None) -> str:
  """The test metrics as a two- or three-column table: the model, and the most frequent training report
  written for every case (the floor a model that has learnt nothing reaches)."""
  rows = [(key, label, _lookup(metrics, key), _lookup(baseline or {}, key)) for key, label in TEST_ROWS]
  rows = [r for r in rows if r[2] is not None]
  width = max(len(r[1]) for r in rows)
  head = f"{'test split':{width}}  {'model':>8}" + (f"  {'most frequent report':>20}" if baseline else "")
  lines = [head, "-" * len(head)]
  for key, label, value, floor in rows:
    line = f"{label:{width}}  {_number(value, key):>8}"
    if baseline:
      line += f"  {_number(floor, key) if floor is not None else '-':>20}"
    lines.append(line)
  return "\n".join(lines)


class _Short(std_logging.Formatter):
  """``I 04:02:17 message``: the level and the time, without absl's thread id and source line; a longer
  message wrapped at ``MAX_WIDTH``."""

  def format(self, record: std_logging.LogRecord) -> str:
    prefix = f"{record.levelname[:1]} {self.formatTime(record, '%H:%M:%S')} "
    lines = []
    for paragraph in record.getMessage().splitlines() or [""]:
      lines += textwrap.wrap(paragraph, MAX_WIDTH - len(prefix), break_on_hyphens=False) or [""]
    text = prefix + ("\n" + " " * len(prefix)).join(lines)
    return text + ("\n" + self.formatException(record.exc_info) if record.exc_info else "")


# Library warnings a user cannot act on: TFDS looking at a dataset folder it is about to write, orbax
# timing its own asynchronous saves and saying that inference opens a run read-only.
UNACTIONABLE = (re.compile(r"^Variant folder .* has no dataset_info\.json"),
                re.compile(r"^Waiting for previous save to complete took"),
                re.compile(r"^CheckpointManagerOptions\.read_only=True, setting save_interval_steps=0"),
                re.compile(r"^Given directory is read only="))


class _Unactionable(std_logging.Filter):
  def filter(self, record: std_logging.LogRecord) -> bool:
    message = record.getMessage()
    return not any(p.search(message) for p in UNACTIONABLE)


def use_short_prefix() -> None:
  """The console's log lines with a short prefix and without unactionable library warnings, unless
  ``--verbosity=1`` asks for absl's whole prefix and everything."""
  if logging.get_verbosity() < logging.DEBUG:
    handler = logging.get_absl_handler()
    handler.setFormatter(_Short())
    handler.addFilter(_Unactionable())
