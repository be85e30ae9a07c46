"""Every config value has a source (jpg_jax/provenance.py), docs/fidelity.md is the provenance tool's
current output, and the default is the paper where the paper speaks."""

import itertools
import os
import pathlib
import subprocess
import sys

import pytest

from configs import jpg
from jpg_jax import provenance

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _combinations():
  singles = [(v,) for v in jpg.VARIANTS]
  pairs = [(m, d) for m, d in itertools.product(jpg.MODEL_VARIANTS + jpg.METHOD_VARIANTS, jpg.DATA_VARIANTS)]
  pairs += [(m, "faithful") for m in jpg.MODEL_VARIANTS]
  return [()] + singles + pairs + [("synthetic", "tuned", "cmn"), ("r2gen_split", "r2gen")]


@pytest.mark.parametrize("variants", [",".join(v) for v in _combinations()])
def test_every_field_of_every_variant_has_a_source(variants):
  rows = provenance.rows(jpg.get_config(variants or None), jpg.get_provenance(variants or None))
  assert [r.field for r in rows if r.kind == provenance.MISSING] == []
  assert {r.kind for r in rows} <= set(provenance.KINDS)
  assert all(r.ref.strip() for r in rows)


def test_the_default_departs_from_the_paper_nowhere_and_tuned_says_where_it_does():
  default = provenance.rows(jpg.get_config(), jpg.get_provenance())
  assert provenance.departures(default) == []
  tuned = {r.field for r in provenance.departures(provenance.rows(jpg.get_config("tuned"),
                                                                  jpg.get_provenance("tuned")))}
  assert tuned == {"model.similarity", "model.subspace_residual", "labels.mining", "labels.normal_keep"}
  # every variant's departure says why, and R2Gen's split is named a departure from Sec. 4.1
  split = provenance.departures(provenance.rows(jpg.get_config("r2gen_split"), jpg.get_provenance("r2gen_split")))
  assert [r.field for r in split] == ["dataset.name"] and "R2Gen and CMN" in split[0].ref


def test_synthetic_is_tuned_unless_faithful_is_written():
  """Three seeds chose :tuned for the embedded default (docs/results.md); :faithful undoes it."""
  assert jpg.get_config("synthetic") == jpg.get_config("synthetic,tuned")
  faithful = jpg.get_config("synthetic,faithful")
  assert (faithful.model.similarity, faithful.model.subspace_residual, faithful.labels.mining,
          faithful.labels.normal_keep) == ("dot", False, "paper", 1.0)
  assert jpg.get_config("faithful") == jpg.get_config()
  with pytest.raises(ValueError, match="exclude"):
    jpg.get_config("synthetic,tuned,faithful")


def test_a_field_without_a_source_is_reported():
  s = provenance.Sourced()
  s("a.b", 1, "paper", "Sec. 1")
  s.config.a.c = 2   # set behind the recorder's back
  rows = provenance.rows(s.config, s.sources)
  assert [(r.field, r.kind) for r in rows] == [("a.b", "paper"), ("a.c", provenance.MISSING)]
  with pytest.raises(ValueError):
    s("a.d", 3, "paper", " ")
  with pytest.raises(ValueError):
    s("a.d", 3, "folklore", "why")
  changed = provenance.overridden(rows, s.config.copy_and_resolve_references())
  assert changed == rows


def test_command_line_values_are_marked():
  built = jpg.get_config("smoke")
  c = jpg.get_config("smoke")
  c.unlock()
  c.train.batch_size = 4
  rows = provenance.overridden(provenance.rows(c, jpg.get_provenance("smoke")), built)
  row = next(r for r in rows if r.field == "train.batch_size")
  assert row.kind == "command line" and "8" in row.ref


def _clean_env():
  env = {k: v for k, v in os.environ.items() if not k.startswith("JPG_JAX_")}
  env["PYTHONPATH"] = str(ROOT)
  return env


def test_fidelity_page_is_the_tools_current_output(tmp_path):
  """docs/fidelity.md is made by the command it names; a config change without remaking it fails here."""
  out = tmp_path / "fidelity.md"
  subprocess.run([sys.executable, "-m", "jpg_jax.tools.provenance", f"--markdown={out}"], cwd=ROOT,
                 env=_clean_env(), check=True, capture_output=True)
  assert out.read_text() == (ROOT / "docs" / "fidelity.md").read_text(), (
      "docs/fidelity.md is stale: run python -m jpg_jax.tools.provenance --markdown=docs/fidelity.md")


def test_tool_prints_one_row_per_field_and_refuses_bad_input():
  run = lambda *a: subprocess.run([sys.executable, "-m", "jpg_jax.tools.provenance", *a], cwd=ROOT,
                                  env=_clean_env(), capture_output=True, text=True)
  out = run("--config=configs/jpg.py:synthetic,tuned")
  assert out.returncode == 0, out.stderr
  lines = out.stdout.splitlines()
  assert len(lines) == len(provenance.leaves(jpg.get_config("synthetic,tuned")))
  assert max(len(l) for l in lines) <= 160
  assert any(l.startswith("model.similarity") and "departs" in l for l in lines)
  bad = run("--config=configs/jpg.py:nonsense")
  assert bad.returncode != 0 and "Unknown variant" in bad.stderr
  missing = run("--config=configs/none.py")
  assert missing.returncode != 0 and "not a file" in missing.stderr
