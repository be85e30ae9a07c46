"""One config, several seeds: one workdir per seed, then the mean, sd and 95% interval over them.

  python -m jpg_jax.tools.seeds --config=configs/jpg.py:r2gen,r2gen_split --root=/runs/r2gen \\
      [--seeds=42,43,44] [--name=R2GEN] [--set=train.stage2_epochs=50 --set=...] [--dry_run]

Runs ``python -m jpg_jax.main --config=CONFIG --config.seed=S --workdir=ROOT/S`` for each seed (a
finished run is not run again, a stopped one resumes), then ``tools/compare`` over the seeds' runs under
``--name`` (a Table 2 row's name puts the paper's value and its distance in sds beside each metric on IU
X-Ray). ``--set=KEY=VALUE`` passes ``--config.KEY=VALUE`` to every run. Several rows: run this once per row,
then ``tools/compare`` with every row's ``--run=NAME=ROOT/S``.
"""

from __future__ import annotations

import shlex
import subprocess
import sys

from absl import flags
from etils import epath

from jpg_jax import cli
from jpg_jax import errors


def define_flags() -> None:
  """The command's flags, defined only when it runs as a program (its functions import anywhere)."""
  flags.DEFINE_string("config", None, "configs/jpg.py[:variants], as jpg_jax.main takes it.")
  flags.DEFINE_string("root", None, "Where the runs go: ROOT/<seed>.")
  flags.DEFINE_list("seeds", ["42", "43", "44"], "The seeds.")
  flags.DEFINE_string("name", "", "The row's name in the table (default: the config's variants).")
  flags.DEFINE_multi_string("set", [], "KEY=VALUE: --config.KEY=VALUE for every run.")
  flags.DEFINE_bool("dry_run", False, "Print the commands; run nothing.")


def commands(config: str, root: epath.Path, seeds, sets) -> list[list[str]]:
  """The main job's command of each seed."""
  for s in sets:
    if "=" not in s:
      raise errors.ConfigError(f"--set {s!r}: expected KEY=VALUE (e.g. train.stage2_epochs=50).")
  for seed in seeds:
    if not seed.lstrip("-").isdigit():
      raise errors.ConfigError(f"--seeds: {seed!r} is not an integer.")
  return [[sys.executable, "-m", "jpg_jax.main", f"--config={config}", f"--config.seed={seed}",
           f"--workdir={root / seed}"] + [f"--config.{s}" for s in sets] for seed in seeds]


ROW_OF_VARIANT = {"base": "BASE", "projection": "JPG-projection", "auxiliary": "JPG-auxiliary", "r2gen": "R2GEN",
                  "cmn": "CMN"}


def row_name(config: str) -> str:
  """Table 2's row of a ``--config`` (its model variant; JPG without one)."""
  variants = config.split(":", 1)[1].split(",") if ":" in config else []
  return next((ROW_OF_VARIANT[v] for v in variants if v in ROW_OF_VARIANT), "JPG")


def main(argv):
  if len(argv) > 1:
    raise errors.UserError(f"Unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  root = epath.Path(f.root)
  name = f.name or row_name(f.config)
  for seed, cmd in zip(f.seeds, commands(f.config, root, f.seeds, f.set)):
    if (root / seed / "results" / "test_metrics.json").exists():
      continue
    print(shlex.join(cmd), flush=True)
    if not f.dry_run:
      done = subprocess.run(cmd)
      if done.returncode:
        raise errors.UserError(f"seed {seed}: the run exited with {done.returncode} ({root / seed}); rerun to "
                               f"resume it.")
  if not f.dry_run:
    subprocess.run([sys.executable, "-m", "jpg_jax.tools.compare", f"--reference={name}"]
                   + [f"--run={name}={root / s}" for s in f.seeds], check=True)


if __name__ == "__main__":
  define_flags()
  cli.run(main, required=["config", "root"])
