"""The main job's console (jpg_jax/console.py): a progress line per interval, a line per validation, a
table at the end, every line at most 160 characters, unactionable library warnings dropped."""

import logging as std_logging

from jpg_jax import console


def _record(message, level=std_logging.INFO):
  return std_logging.LogRecord("absl", level, __file__, 1, message, None, None)


def test_progress_line_has_step_loss_rate_and_eta():
  line = console.progress_line(2, 120, 620, 1.23456, 9.27)
  assert line == "stage 2  step 120/620 ( 19%)  loss 1.235  9.27 steps/s  ETA 54s"
  assert console.progress_line(1, 5, 5000, None, 0.5).endswith("ETA 2h46m")
  assert console.duration(187) == "3m07s" and console.duration(42) == "42s"


def test_validation_line_shows_the_selecting_metrics_and_the_best():
  metrics = {"BLEU_4": 0.31234, "BLEU_1": 0.7, "label_micro_f1": 0.5, "distinct_reports": 28, "val_x": 1}
  first = console.validation_line(2, 124, metrics, "BLEU_4", None)
  assert first == ("stage 2  validation at step 124: BLEU-4 0.312, label micro-F1 0.500, distinct reports 28"
                   "  (new best BLEU-4)")
  later = console.validation_line(2, 248, dict(metrics, BLEU_4=0.2), "BLEU_4", 0.31234)
  assert later.endswith("(best BLEU-4 0.312)") and "BLEU-1" not in later
  other = console.validation_line(1, 30, {"pattern_macro_f1": 0.1, "loss": 2.0}, "loss", 1.0)
  assert "loss 2" in other and other.endswith("(new best loss)")


def test_test_table_lines_up_the_model_beside_the_most_frequent_report():
  metrics = {"BLEU_4": 0.5286, "METEOR": 0.372, "distinct_reports": 78, "mean_length": 28.89,
             "clinical": {"micro_f1": 0.892, "strict_micro_f1": 0.805}, "label_micro_f1": 0.89}
  baseline = {"BLEU_4": 0.3618, "METEOR": 0.27, "distinct_reports": 1, "mean_length": 25.0,
              "clinical": {"micro_f1": 0.0, "strict_micro_f1": 0.0}}
  lines = console.test_table(metrics, baseline).splitlines()
  assert lines[0].split() == ["test", "split", "model", "most", "frequent", "report"]
  rows = {l[:26].strip(): l[26:].split() for l in lines[2:]}
  assert rows["BLEU-4"] == ["0.529", "0.362"] and rows["distinct reports"] == ["78", "1"]
  assert rows["mean length (words)"] == ["28.9", "25.0"]
  assert rows["clinical micro-F1"] == ["0.892", "0.000"] and rows["label micro-F1"] == ["0.890", "-"]
  assert "CheXpert micro-F1" not in rows and len({len(l) for l in lines}) == 1
  assert len(console.test_table({"BLEU_4": 0.1}).splitlines()[0].split()) == 3


def test_log_lines_are_short_and_unactionable_warnings_are_dropped():
  formatter, keep = console._Short(), console._Unactionable()
  long = "word " * 100
  out = formatter.format(_record(long + "\nsecond paragraph"))
  lines = out.splitlines()
  assert lines[0].startswith("I ") and len(lines) >= 4 and max(map(len, lines)) <= console.MAX_WIDTH
  assert lines[-1].strip() == "second paragraph" and lines[1].startswith(" " * 11)
  assert not keep.filter(_record("Variant folder /x/1.0.0 has no dataset_info.json", std_logging.WARNING))
  assert not keep.filter(_record("Waiting for previous save to complete took 1.2 seconds.", std_logging.WARNING))
  assert not keep.filter(_record("Given directory is read only=/w/stage2", std_logging.WARNING))
  assert keep.filter(_record("Stage 1: best checkpoint is step 4.")) is True


def test_help_names_every_config_variant():
  """``python -m jpg_jax.main --help`` prints main's docstring: every variant of configs/jpg.py is in it."""
  import ast
  import pathlib
  import re
  from configs import jpg
  path = pathlib.Path(__file__).resolve().parents[1] / "jpg_jax" / "main.py"
  doc = ast.get_docstring(ast.parse(path.read_text()))
  named = set(re.findall(r"[a-z_0-9]+", doc))
  assert set(jpg.VARIANTS) <= named, set(jpg.VARIANTS) - named
  assert max(map(len, doc.splitlines())) <= 110 and len(doc.splitlines()) <= 20


def test_progress_is_written_every_interval_and_printed_a_few_times_a_stage(caplog):
  from jpg_jax import metric_writers

  class Scalars:
    def __init__(self):
      self.steps = []

    def write_scalars(self, step, scalars):
      self.steps.append(step)

  writer = Scalars()
  progress = metric_writers.ReportProgress(620, writer, examples_per_step=16, stage=2)
  with caplog.at_level("INFO", logger="absl"):
    for step in range(20, 621, 20):
      progress(step, loss=1.0)
    progress(620, loss=1.0)   # a repeated step (a validation boundary) adds nothing
  lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stage 2  step")]
  assert writer.steps == list(range(20, 621, 20))
  assert len(lines) <= console.PROGRESS_LINES + 1 and lines[-1].startswith("stage 2  step 620/620 (100%)")
