"""Training curves of a run, read from its TensorBoard event files, as a PNG.

  python -m jpg_jax.tools.curves --workdir=DIR --output=curves.png [--tags=stage2/train_loss,stage2/val_BLEU_4]
"""

from __future__ import annotations

import os

from absl import app
from absl import flags

from jpg_jax import cli
from jpg_jax import errors
from jpg_jax import figures

_WORKDIR = flags.DEFINE_string("workdir", None, "A run's workdir (its logs/ holds the event files).")
_OUTPUT = flags.DEFINE_string("output", None, "PNG to write.")
_TAGS = flags.DEFINE_list("tags", list(figures.DEFAULT_CURVES), "Scalar tags, one panel each.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  logs = os.path.join(_WORKDIR.value, "logs")
  scalars = figures.read_scalars(logs)
  if not scalars:
    raise errors.MissingFileError(f"--workdir {_WORKDIR.value}: no TensorBoard event files in {logs} (not a "
                                  f"run's workdir, or the run has logged nothing yet).")
  missing = [t for t in _TAGS.value if t not in scalars]
  if len(missing) == len(_TAGS.value):
    raise errors.ConfigError(f"--tags: none of {missing} is in {logs}; it has {sorted(scalars)[:8]} ...")
  drawn = figures.plot_curves(scalars, _OUTPUT.value, _TAGS.value)
  print(f"{len(drawn)} curves ({', '.join(drawn)}): {_OUTPUT.value}")


if __name__ == "__main__":
  cli.run(main, required=["workdir", "output"])
