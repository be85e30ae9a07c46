"""The learnability probe's command (``jpg_jax/probe.py``): per-kind test AUCs of the config's extractor
trained alone on the synthetic findings.

  python -m jpg_jax.tools.probe --config=configs/jpg.py:synthetic [--steps=264] [--eval_every=66]
"""

from __future__ import annotations

from absl import app
from absl import flags
from ml_collections import config_flags

from jpg_jax import probe
from jpg_jax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 264, "Training steps.")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 66, "Test AUCs every this many steps.")
_BATCH = flags.DEFINE_integer("batch_size", 16, "Training batch.")
_LR = flags.DEFINE_float("learning_rate", 5e-4, "Adam's learning rate.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  config = _CONFIG.value
  if not config.dataset.name.startswith("synthetic_cxr/"):
    raise app.UsageError("The probe needs a synthetic dataset (true findings from the MeSH terms).")
  probe.run(config, _STEPS.value, _EVAL_EVERY.value, _BATCH.value, _LR.value)


if __name__ == "__main__":
  cli.run(main, required=["config"])
