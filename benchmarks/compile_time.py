"""Time to first step: compiling the paper's programs, without and with JAX's persistent compilation cache.

  python benchmarks/compile_time.py                 # the paper's sizes (ResNet-101, batch 16, 224 px)
  python benchmarks/compile_time.py --depth=18 --image_size=96 --batch=16   # about the :synthetic model

The programs a training run compiles before its first step of each stage and its first evaluation: the
train step of stage 1 (extractor, subspace, labeler) and of stage 2 (the whole model), and the evaluation
(images to reports: ResNet, labels, encoder and the jitted beam search, beam 3, 60 tokens). Each is lowered
and compiled in a fresh process twice: ``cold`` with an empty cache directory (what the first run pays,
writing the cache), then ``warm`` reading what the first wrote (what every later run of the same shapes
pays; ``jpg_jax.compile_cache``, on by default in ``python -m jpg_jax.main``). Prints one JSON line:
seconds to trace and lower, and to compile (cold) or load (warm), per program.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import tempfile
import time

import common

VOCAB, LABELS, LABEL_TOKENS = 761, 57, 64


def measure(args) -> dict:
  """One process: lower and compile each program; seconds per program."""
  import jax
  import jax.numpy as jnp

  from configs import jpg as jpg_config
  from jpg_jax import compile_cache
  from jpg_jax import decode as decode_lib
  from jpg_jax import input_pipeline as ip
  from jpg_jax import parallel
  from jpg_jax import steps
  from jpg_jax.models import jpg as jpg_lib

  compile_cache.enable(args.cache_dir, min_compile_time_secs=0.0)
  c = jpg_config.get_config()
  c.unlock()
  c.model.resnet_depth, c.dataset.image_size, c.train.batch_size = args.depth, args.image_size, args.batch
  c.lock()
  model = jpg_lib.from_config(c.model, VOCAB, LABELS, LABEL_TOKENS)
  mesh = parallel.make_mesh(jax.devices()[:1])
  shapes = ip.example_shapes(args.image_size, c.dataset.max_seq_length, c.model.label_steps, LABELS)
  batch = {k: jax.ShapeDtypeStruct((args.batch,) + s, jnp.float32 if k in ("images", "report_mask",
           "label_mask", "label_targets", "mask") else jnp.int32, sharding=parallel.data_sharded(mesh))
           for k, s in shapes.items()}
  out = {}

  def timed(name, fn, *xs):
    start = time.perf_counter()
    lowered = fn.lower(*xs)
    lowered_at = time.perf_counter()
    lowered.compile()
    out[name] = {"lower_s": round(lowered_at - start, 2), "compile_s": round(time.perf_counter() - lowered_at, 2)}

  for stage in (1, 2):
    variables = jax.eval_shape(functools.partial(steps.init_variables, model, c), jax.random.key(0))
    optimizer, _ = steps.make_optimizer(c, variables["params"], 1, stage)
    state = jax.eval_shape(functools.partial(steps.train_state, optimizer=optimizer), variables,
                           rng=jax.random.key(1))
    timed(f"train_step_stage{stage}", steps.jit_train_step(model, optimizer, c, stage, mesh), state, batch)
  images = jax.ShapeDtypeStruct((args.batch,) + shapes["images"], jnp.float32)
  generate = jax.jit(lambda v, x: decode_lib.generate_reports(model, v, x, beam=args.beam, max_len=60)[0])
  timed("evaluate_images_to_reports", generate, jax.eval_shape(
      functools.partial(steps.init_variables, model, c), jax.random.key(0)), images)
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--depth", type=int, default=101)
  p.add_argument("--image_size", type=int, default=224)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--beam", type=int, default=3)
  p.add_argument("--cache_dir", default="", help="internal: the one process's cache directory")
  args = p.parse_args()
  if args.cache_dir:   # a child: one measurement
    print(json.dumps(measure(args)), flush=True)
    return
  record = {"benchmark": "compile_time", **common.machine(), "depth": args.depth,
            "image_size": args.image_size, "batch": args.batch, "beam": args.beam}
  with tempfile.TemporaryDirectory(prefix="jpg-jax-compile-bench-") as cache:
    for run in ("cold", "warm"):
      child = [sys.executable, __file__, f"--depth={args.depth}", f"--image_size={args.image_size}",
               f"--batch={args.batch}", f"--beam={args.beam}", f"--cache_dir={cache}"]
      result = json.loads(subprocess.run(child, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
      for program, times in result.items():
        for k, v in times.items():
          record[f"{run}_{program}_{k}"] = v
  for program in ("train_step_stage1", "train_step_stage2", "evaluate_images_to_reports"):
    record[f"saving_{program}"] = round(record[f"cold_{program}_compile_s"] - record[f"warm_{program}_compile_s"], 2)
  common.emit(record)


if __name__ == "__main__":
  main()
