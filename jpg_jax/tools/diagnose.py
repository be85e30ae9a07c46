"""The shared subspace's diagnostics at a config's init (``jpg_jax/diagnostics.py``): softmax entropy,
bases in use, how much the extractor's grids and the aligned r_x differ between images, and their norms,
on the first training batch. Training logs the same diagnostics every ``train.log_every_steps``
(``stage{1,2}/train_subspace/...``, ``train_spread/...``, ``train_grad_norm/<module>`` in
``DIR/logs/history.jsonl``).

  python -m jpg_jax.tools.diagnose --config=configs/jpg.py:synthetic [--config.model.similarity=dot]
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
from absl import app
from absl import flags
from ml_collections import config_flags

from jpg_jax import cli
from jpg_jax import diagnostics
from jpg_jax import input_pipeline as ip
from jpg_jax import mining
from jpg_jax import parallel
from jpg_jax import steps


def at_init(config, batch_size: int = 16, seed: int = 0) -> dict:
  """The diagnostics of a config's freshly initialised model on its first ``batch_size`` training cases
  (eval-time views, stage 1's forward in train mode), plus the mean norms of the extractor's grids and
  of r_x: what the subspace passes on before any training. Used for the README's init figures."""
  data = ip.load_data(config)
  patterns, _, _ = mining.stage1_labels(config, data.index["train"])
  model = steps.create_model(config, data.vocab, patterns, stage=1)
  optimizer, _ = steps.make_optimizer(config, steps.param_shapes(model, config), 1, 1)
  state = steps.create_train_state(model, optimizer, config, seed, parallel.make_mesh())
  images = ip.case_images(data.sources["train"], range(batch_size), config)
  label_ids = jnp.zeros((batch_size, config.model.label_steps + 1), jnp.int32)
  _, updates = model.apply(steps.variables_of(state), jnp.asarray(images), label_ids, True,
                           method=model.labels, rngs={"dropout": jax.random.key(seed)},
                           mutable=["batch_stats", "intermediates"])
  inter = updates["intermediates"]
  out = {k: float(v) for k, v in diagnostics.from_intermediates(inter).items()}
  for name in ("grids", "aligned"):
    out[f"norm/{name}"] = float(jnp.linalg.norm(inter[name][0].astype(jnp.float32), axis=-1).mean())
  return out


def define_flags() -> None:
  """The command's flags, defined only when it runs as a program (its functions import anywhere)."""
  config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
  flags.DEFINE_integer("batch_size", 16, "Training cases the diagnostics are taken over.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  f = flags.FLAGS
  print(json.dumps({k: round(v, 6) for k, v in at_init(f.config, f.batch_size).items()}))


if __name__ == "__main__":
  define_flags()
  cli.run(main, required=["config"])
