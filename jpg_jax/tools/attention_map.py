"""Fig. 4 for a test example: the first decoder layer's cross-attention of each generated word over the
V x 49 patches, drawn over each view.

  python -m jpg_jax.tools.attention_map --config=configs/jpg.py:synthetic --workdir=DIR \\
      --id=SYN2000003 --output=attention.png [--split=test]

Reads the example's views from the config's dataset, generates its report with the workdir's best
stage-2 checkpoint (as ``--mode=predict`` does for image files) and writes the map and, beside it,
``prediction.json`` with the report, the ground truth and the labels.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
from absl import app
from absl import flags
from ml_collections import config_flags
from PIL import Image

from jpg_jax import datasets
from jpg_jax import errors
from jpg_jax import input_pipeline as ip
from jpg_jax import text
from jpg_jax import inference
from jpg_jax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "The run's config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The run's workdir.")
_ID = flags.DEFINE_string("id", None, "Example id in the split (e.g. a test_reports.jsonl id).")
_SPLIT = flags.DEFINE_string("split", "test", "Dataset split holding the example.")
_OUTPUT = flags.DEFINE_string("output", None, "PNG to write.")


def _str(x) -> str:
  return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def example_views(config, split: str, example_id: str):
  """The example's views (grey-scale arrays, the dataset's order) and its cleaned ground-truth report."""
  source = ip.open_split(config.dataset.name, split, config.dataset.data_dir)
  for i in range(len(source)):
    ex = source[i]
    if _str(ex["id"]) == example_id:
      views = [np.asarray(Image.open(io.BytesIO(ex[v])).convert("L")) for v in datasets.views(config.dataset.name)]
      return views, text.clean_report(_str(ex["findings"]), datasets.report_cleaning(config.dataset.name))
  raise errors.InputError(f"--id: no example {example_id!r} in the {split} split of {config.dataset.name}.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  config = _CONFIG.value
  for needed in ("vocab.json", "stage2"):
    if not os.path.exists(os.path.join(_WORKDIR.value, needed)):
      raise errors.MissingFileError(f"--workdir {_WORKDIR.value} has no {needed}: not a finished run's workdir.")
  views, cleaned = example_views(config, _SPLIT.value, _ID.value)
  out_dir = os.path.dirname(os.path.abspath(_OUTPUT.value))
  result = inference.predict_views(config, _WORKDIR.value, views, out_dir, _OUTPUT.value)
  vocab = text.Vocabulary.load(os.path.join(_WORKDIR.value, "vocab.json"))
  result.update(id=_ID.value, reference=vocab.reference(cleaned, config.dataset.max_seq_length))
  with open(os.path.join(out_dir, "prediction.json"), "w") as f:
    json.dump(result, f, indent=1)
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  cli.run(main, required=["config", "workdir", "id", "output"])
