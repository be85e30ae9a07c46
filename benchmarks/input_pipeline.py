"""Examples/s of the training input pipeline (PNG decode + R2Gen augmentation + tokenise + targets + batch).

  python benchmarks/input_pipeline.py --step_examples_per_s=NAME=RATE ...

The source holds two-view cases rendered by the synthetic generator at IU X-Ray's size (Open-i's PNGs are
about 512 px on the shorter side) and template reports; the pipeline is the one training uses
(``input_pipeline.train_dataset``: resize the shorter side to 256, random crop 224, flip, ImageNet
normalisation, R2Gen tokens, label targets; batches of 16) read through ``to_iter`` with prefetch
threads, and with grain worker processes. Prints one JSON line: examples/s per setting (median of
``--runs`` passes of ``--batches`` batches after a warm-up) and, for each train-step rate given (examples/s,
e.g. from benchmarks/train_step.py), how many times faster the pipeline is.
"""

from __future__ import annotations

import argparse
import time

import common  # noqa: F401  (sets sys.path)

import numpy as np
from absl import flags as absl_flags

from jpg_jax import input_pipeline as ip
from jpg_jax import labels
from jpg_jax import text
from jpg_jax.datasets import common as data_common
from jpg_jax.datasets import synthetic_cxr
from jpg_jax.datasets import synthetic_render


def build_source(n: int, png_size: int):
  source, ids, reports, mesh = [], [], [], []
  for i, (example_id, _, findings, report, terms, _) in enumerate(synthetic_cxr.template_cases(0, 0, n)):
    frontal, lateral = synthetic_render.render_case(findings, png_size, np.random.default_rng(i))
    source.append({"frontal": data_common.encode_png(frontal), "lateral": data_common.encode_png(lateral)})
    ids.append(example_id)
    reports.append(text.clean_report_iu_xray(report))
    mesh.append(list(terms))
  return source, ip.SplitIndex(ids, ids, reports, mesh)


def rate(ds, batch: int, batches: int, runs: int, workers: int, threads: int) -> float:
  it = ip.to_iter(ds, worker_count=workers, prefetch=threads)
  for _ in range(3):   # start-up: worker processes, first decodes
    next(it)
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    for _ in range(batches):
      next(it)
    times.append(time.perf_counter() - start)
  return batch * batches / float(np.median(times))


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--cases", type=int, default=128)
  p.add_argument("--png_size", type=int, default=512)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--batches", type=int, default=10)
  p.add_argument("--runs", type=int, default=5)
  p.add_argument("--settings", default="threads:1,threads:2,workers:2",
                 help="comma-separated threads:N (prefetch threads in-process) or workers:N (grain processes)")
  p.add_argument("--step_examples_per_s", nargs="*", default=[],
                 help="NAME=RATE pairs: train-step consumption to compare with")
  args = p.parse_args()
  absl_flags.FLAGS.mark_as_parsed()   # grain reads its absl flags (defaults) in worker processes

  source, split = build_source(args.cases, args.png_size)
  vocab = text.Vocabulary.build(split.reports, threshold=1)
  patterns, _, counts = labels.select_simple_patterns(split.mesh, num_patterns=17, depth=2)
  targets = ip.Targets(vocab, 60, 5, labels.LabelSet(patterns, counts))
  ds = ip.train_dataset(source, split, targets, batch_size=args.batch, seed=0,
                        image=ip.ImageOptions(image_size=224, resize_size=256, random_flip=True))
  record = {"benchmark": "input_pipeline", **common.machine(), "cases": args.cases,
            "png_size": args.png_size, "batch": args.batch, "image_size": 224, "resize_size": 256}
  best = 0.0
  for setting in args.settings.split(","):
    kind, n = setting.split(":")
    r = rate(ds, args.batch, args.batches, args.runs, workers=int(n) if kind == "workers" else 0,
             threads=int(n) if kind == "threads" else 2)
    record[f"examples_per_s_{kind}_{n}"] = round(r, 2)
    best = max(best, r)
  record["best_examples_per_s"] = round(best, 2)
  for pair in args.step_examples_per_s:
    name, step_rate = pair.split("=")
    record[f"step_examples_per_s_{name}"] = float(step_rate)
    record[f"pipeline_over_step_{name}"] = round(best / float(step_rate), 2)
  common.emit(record)


if __name__ == "__main__":
  main()
