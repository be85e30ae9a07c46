"""Training curves of a run, read from its TensorBoard event files, as a PNG.

  python -m jpg_jax.tools.curves --workdir=DIR --output=curves.png [--tags=stage2/train_loss,stage2/val_BLEU_4]
"""

from __future__ import annotations

import os

from absl import app
from absl import flags

from jpg_jax import results

_WORKDIR = flags.DEFINE_string("workdir", None, "A run's workdir (its logs/ holds the event files).")
_OUTPUT = flags.DEFINE_string("output", None, "PNG to write.")
_TAGS = flags.DEFINE_list("tags", list(results.DEFAULT_CURVES), "Scalar tags, one panel each.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  scalars = results.read_scalars(os.path.join(_WORKDIR.value, "logs"))
  drawn = results.plot_curves(scalars, _OUTPUT.value, _TAGS.value)
  print(f"{len(drawn)} curves ({', '.join(drawn)}): {_OUTPUT.value}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir", "output"])
  app.run(main)
