"""Seed tables: mean, sd, the 95% interval over seeds and the paper's value with its distance in sds."""

import pytest

from jpg_jax import results
from jpg_jax.tools import seeds as seeds_tool


def _cell(values):
  import numpy as np
  return results.SeedCell(float(np.mean(values)), float(np.std(values, ddof=1)), tuple(values), None, False)


def test_interval_is_students_t_and_the_paper_distance_is_in_sds():
  cell = _cell([0.10, 0.12, 0.14])
  lo, hi = cell.interval
  assert (lo + hi) / 2 == pytest.approx(0.12) and hi - 0.12 == pytest.approx(4.302653 * 0.02 / 3 ** 0.5, rel=1e-5)
  assert _cell([0.1]).interval is None
  table = {"BASE": {m: cell for m in results.METRIC_NAMES}}
  text = results.format_seed_intervals([42, 43, 44], table, {"BASE": results.PAPER_TABLE2["BASE"]})
  base = next(l for l in text.splitlines() if l.startswith("BASE"))
  assert "0.120 [0.070, 0.170] | paper 0.369, +12.4 sd" in base   # BLEU-1: (0.369 - 0.12) / 0.02
  assert "no paper column" in results.format_seed_intervals([42, 43, 44], table)


def test_seeds_tool_names_rows_as_table2_and_writes_one_command_per_seed(tmp_path):
  from etils import epath
  assert seeds_tool.row_name("configs/jpg.py:r2gen,r2gen_split") == "R2GEN"
  assert seeds_tool.row_name("configs/jpg.py") == "JPG"
  cmds = seeds_tool.commands("configs/jpg.py:base", epath.Path(tmp_path), ["42", "43"], ["train.stage2_epochs=5"])
  assert [c[-3:] for c in cmds] == [["--config.seed=42", f"--workdir={tmp_path / '42'}", "--config.train.stage2_epochs=5"],
                                    ["--config.seed=43", f"--workdir={tmp_path / '43'}", "--config.train.stage2_epochs=5"]]
