"""Figures of finished runs: Fig. 3 (label micro-F1 per classification head, with and without the shared
subspace) and training curves read from a run's TensorBoard event files (without TensorFlow)."""

from __future__ import annotations

import glob
import os
import struct
from typing import Mapping, Sequence

import numpy as np
from tensorboardX.proto import event_pb2

from jpg_jax.results import Run


# ------------------------------------------------------------------------------------------ Fig. 3
HEADS = ("alexnet", "nin", "googlenet")


def fig3_values(runs: Sequence[Run]) -> dict[tuple[str, bool], float]:
  """(head, uses the subspace) -> test label micro-F1, from the runs whose config matches."""
  values = {}
  for run in runs:
    model = run.config.get("model", {})
    if not model.get("use_labeler", True) or "label_micro_f1" not in run.metrics:
      continue
    key = (model.get("head", "googlenet"), bool(model.get("use_subspace", True)))
    values[key] = float(run.metrics["label_micro_f1"])
  return values


def plot_fig3(values: Mapping[tuple[str, bool], float], path) -> None:
  """Grouped bars: each head with raw extractor features and with the shared subspace."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  heads = [h for h in HEADS if any(k[0] == h for k in values)]
  x = np.arange(len(heads))
  fig, ax = plt.subplots(figsize=(5, 3.2))
  for offset, (subspace, label) in zip((-0.2, 0.2), ((False, "raw features"), (True, "shared subspace"))):
    ys = [values.get((h, subspace), np.nan) for h in heads]
    bars = ax.bar(x + offset, ys, 0.4, label=label)
    ax.bar_label(bars, fmt="%.3f", fontsize=7)
  ax.set_xticks(x, [{"alexnet": "AlexNet", "nin": "NIN", "googlenet": "GoogLeNet"}[h] for h in heads])
  ax.set_ylabel("test label micro-F1")
  ax.set_title("Fig. 3: classification with context-aware labels")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(str(path), dpi=110)
  plt.close(fig)


# ------------------------------------------------------------------------------------------ curves
def _records(path: str):
  """The records of a TFRecord-framed file (TensorBoard's event files): length, crc, data, crc."""
  with open(path, "rb") as f:
    while True:
      head = f.read(12)
      if len(head) < 12:
        return
      (length,) = struct.unpack("<Q", head[:8])
      data = f.read(length)
      f.read(4)
      if len(data) < length:
        return
      yield data


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
  """Every scalar of the TensorBoard event files in ``logdir``: tag -> [(step, value)] by step."""
  scalars: dict[str, dict[int, float]] = {}
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    for data in _records(path):
      event = event_pb2.Event.FromString(data)
      for value in event.summary.value:
        if value.HasField("simple_value"):
          scalars.setdefault(value.tag, {})[int(event.step)] = float(value.simple_value)
        elif value.HasField("tensor") and value.tensor.float_val:
          scalars.setdefault(value.tag, {})[int(event.step)] = float(value.tensor.float_val[0])
  return {tag: sorted(points.items()) for tag, points in scalars.items()}


DEFAULT_CURVES = ("stage1/train_loss", "stage1/val_label_log_likelihood", "stage1/val_pattern_macro_f1",
                  "stage2/train_report_loss", "stage2/train_loss", "stage2/val_BLEU_4", "stage2/val_ROUGE_L",
                  "stage2/val_distinct_reports")


def plot_curves(scalars: Mapping[str, Sequence[tuple[int, float]]], path,
                tags: Sequence[str] = DEFAULT_CURVES) -> list[str]:
  """One panel per tag found; returns the tags drawn."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  tags = [t for t in tags if scalars.get(t)]
  if not tags:
    raise ValueError(f"None of the tags {list(tags)} is in the logs (found {sorted(scalars)[:20]}).")
  cols = min(3, len(tags))
  rows = -(-len(tags) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows), squeeze=False)
  for ax, tag in zip(axes.flat, tags):
    steps, values = zip(*scalars[tag])
    ax.plot(steps, values, marker="." if len(steps) < 30 else None)
    ax.set_title(tag, fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=7)
  for ax in list(axes.flat)[len(tags):]:
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(str(path), dpi=100)
  plt.close(fig)
  return tags
