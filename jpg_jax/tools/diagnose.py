"""The shared subspace's diagnostics at a config's init (``jpg_jax/diagnostics.py``): softmax entropy,
bases in use, how much the extractor's grids and the aligned r_x differ between images, and their norms,
on the first training batch. Training logs the same diagnostics every ``train.log_every_steps``
(``stage{1,2}/train_subspace/...``, ``train_spread/...``, ``train_grad_norm/<module>`` in
``DIR/logs/history.jsonl``).

  python -m jpg_jax.tools.diagnose --config=configs/jpg.py:synthetic [--config.model.similarity=dot]
"""

from __future__ import annotations

import json

from absl import app
from absl import flags
from ml_collections import config_flags

from jpg_jax import diagnostics
from jpg_jax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_BATCH = flags.DEFINE_integer("batch_size", 16, "Training cases the diagnostics are taken over.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  print(json.dumps({k: round(v, 6) for k, v in diagnostics.at_init(_CONFIG.value, _BATCH.value).items()}))


if __name__ == "__main__":
  cli.run(main, required=["config"])
