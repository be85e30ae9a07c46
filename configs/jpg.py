"""JPG (COLING 2022) on IU X-Ray, R2Gen's split: the paper's settings (Sec. 4.4) and its variants.

  --config=configs/jpg.py                  the paper: iu_xray/r2gen, ResNet-101, 224x224 views
  --config=configs/jpg.py:synthetic        the embedded default: a small model on synthetic_cxr
  --config=configs/jpg.py:smoke            a tiny model on a tiny synthetic set, for tests
  --config=configs/jpg.py:base             ablation BASE: no shared subspace, no labels in the encoder
  --config=configs/jpg.py:projection       ablation JPG-projection: no shared subspace
  --config=configs/jpg.py:auxiliary        ablation JPG-auxiliary: no label features in the encoder
Variants combine with commas (``:synthetic,base``); any field can be set with ``--config.a.b=v``; an
unknown key is an error (the ConfigDict is locked).
"""

import os

import ml_collections

_VARIANTS = ("synthetic", "smoke", "base", "projection", "auxiliary")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 42

  # ------------------------------------------------------------------ data (Sec. 4.1, 4.4; GUIDE sec. 3)
  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = "iu_xray/r2gen"
  c.dataset.data_dir = os.environ.get("JPG_JAX_DATA_DIR", "data/tfds")
  c.dataset.manual_dir = os.environ.get("JPG_JAX_MANUAL_DIR", "data/iu_xray")
  c.dataset.image_size = 224        # crop / eval size
  c.dataset.resize_size = 256       # train: shorter side before the random crop
  c.dataset.random_flip = True      # R2Gen flips (it swaps laterality: see input_pipeline.py)
  c.dataset.max_seq_length = 60
  c.dataset.vocab_threshold = 3
  c.dataset.worker_count = 0        # grain worker processes (0: threads in the main process)

  # ------------------------------------------------------------------ labels (Sec. 3.4)
  c.labels = ml_collections.ConfigDict()
  c.labels.num_patterns = 17        # stage 1's simple patterns
  c.labels.pattern_depth = 2        # heading + first subheading
  c.labels.num_mined = 57           # stage 2's context-aware labels
  c.labels.max_steps = 5            # GRU unroll

  if arg:
    for variant in arg.split(","):
      if variant not in _VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; choose from {_VARIANTS}.")
      _apply(c, variant)
  c.lock()
  return c


def _apply(c: ml_collections.ConfigDict, variant: str) -> None:
  if variant == "synthetic":
    c.dataset.name = "synthetic_cxr/templates"
    c.dataset.image_size = 112
    c.dataset.resize_size = 128
    c.dataset.random_flip = False
  elif variant == "smoke":
    c.dataset.name = "synthetic_cxr/tiny"
    c.dataset.image_size = 56
    c.dataset.resize_size = 64
    c.dataset.random_flip = False
    c.labels.num_patterns = 5
    c.labels.num_mined = 8
