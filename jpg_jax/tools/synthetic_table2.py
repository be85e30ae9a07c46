"""The synthetic Table 2: every row on the embedded default, several seeds, one extractor start.

  python -m jpg_jax.tools.synthetic_table2 --root=/runs/table2 [--seeds=42,43,44] [--rows=BASE,JPG]
      [--markdown=table.md] [--dry_run]

Trains each row's run per seed (``ROOT/<row>/<seed>``; a finished run is not run again, a stopped one
resumes), then prints ``tools/compare``'s table over the seeds: mean +- sd, † by paired t-tests against
BASE over seeds and cases. Every row's extractor starts from the same seeded random init (``train.py``'s
``init_seed``), as every row of the paper's starts from ImageNet. ``BASE from stage 1`` is BASE's report
model trained on the default's (``JPG :tuned``) frozen stage-1 extractor of the same seed (``tools/export_extractor``): the same
grids JPG's stage 2 reads, so it separates the report side's gain from stage 1's extra supervision.
``--dry_run`` prints the commands instead.
"""

from __future__ import annotations

import shlex
import subprocess
import sys

from absl import app
from absl import flags
from etils import epath
from jpg_jax import cli

_ROOT = flags.DEFINE_string("root", None, "Where the runs go: ROOT/<row>/<seed>.")
_SEEDS = flags.DEFINE_list("seeds", ["42", "43", "44"], "Seeds (each row runs every one).")
_ROWS = flags.DEFINE_list("rows", None, "Rows to run and print (default: all of ROWS).")
_MARKDOWN = flags.DEFINE_string("markdown", "", "Also write the table as Markdown here.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the commands; run nothing.")

CONFIG = "configs/jpg.py"
# row name -> (config variants, extra flags); "{extractor}" is EXTRACTOR_OF's exported stage-1 extractor.
# The paper's rows are its method as written (:faithful); ":tuned" rows are the embedded default's method.
ROWS = {
    "BASE": ("synthetic,base,faithful", ()),
    "BASE from stage 1": ("synthetic,base,faithful", ("--config.resnet_checkpoint={extractor}",
                                                      "--config.model.frozen_extractor=True",
                                                      "--config.model.cached_features=True")),
    "JPG-projection": ("synthetic,projection,faithful", ()),
    "JPG": ("synthetic,faithful", ()),
    "JPG-projection :tuned": ("synthetic,projection", ()),
    "JPG :tuned": ("synthetic", ()),
}
EXTRACTOR_OF = "JPG :tuned"   # whose stage-1 extractor "BASE from stage 1" reads: the default's


def slug(row: str) -> str:
  return row.lower().replace(" ", "_").replace(":", "").replace("-", "_")


def workdir(root: epath.Path, row: str, seed: str) -> epath.Path:
  return root / slug(row) / seed


def commands(root: epath.Path, row: str, seed: str) -> list[list[str]]:
  """The commands that make ``row``'s run of ``seed`` (the export first, where the row needs one)."""
  variants, extra = ROWS[row]
  out = []
  extractor = workdir(root, EXTRACTOR_OF, seed) / "extractor"
  if any("{extractor}" in e for e in extra):
    out.append([sys.executable, "-m", "jpg_jax.tools.export_extractor",
                f"--workdir={workdir(root, EXTRACTOR_OF, seed)}", f"--output={extractor}"])
  out.append([sys.executable, "-m", "jpg_jax.main", f"--config={CONFIG}:{variants}", f"--config.seed={seed}",
              f"--workdir={workdir(root, row, seed)}"] + [e.format(extractor=extractor) for e in extra])
  return out


def finished(path: epath.Path) -> bool:
  return (path / "results" / "test_metrics.json").exists()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  root = epath.Path(_ROOT.value)
  rows = _ROWS.value or list(ROWS)
  unknown = [r for r in rows if r not in ROWS]
  if unknown:
    raise app.UsageError(f"--rows: unknown {unknown}; choose from {list(ROWS)}.")
  needed = list(rows) + ([EXTRACTOR_OF] if "BASE from stage 1" in rows and EXTRACTOR_OF not in rows else [])
  order = sorted(needed, key=lambda r: r != EXTRACTOR_OF)   # the extractor's runs first
  for seed in _SEEDS.value:
    for row in order:
      if finished(workdir(root, row, seed)):
        continue
      for cmd in commands(root, row, seed):
        if cmd[2] == "jpg_jax.tools.export_extractor" and (epath.Path(cmd[-1][len("--output="):])).exists():
          continue
        print(shlex.join(cmd), flush=True)
        if not _DRY_RUN.value:
          subprocess.run(cmd, check=True)
  if _DRY_RUN.value:
    return
  compare = [sys.executable, "-m", "jpg_jax.tools.compare", "--reference=BASE"]
  compare += [f"--run={row}={workdir(root, row, seed)}" for row in rows for seed in _SEEDS.value]
  if _MARKDOWN.value:
    compare.append(f"--markdown={_MARKDOWN.value}")
  subprocess.run(compare, check=True)


if __name__ == "__main__":
  cli.run(main, required=["root"])
