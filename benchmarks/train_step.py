"""The paper's JPG train step (ResNet-101, batch 16, two 224x224 views) in jpg-jax and in PyTorch.

  python benchmarks/train_step.py                      # both frameworks, float32, the paper's sizes
  python benchmarks/train_step.py --extractor=all      # + frozen extractor and cached patch features (JAX)

The PyTorch side is ``tests/torch_reference.py``'s JPG (the modules the parity tests check jpg-jax
against) with R2Gen's optimiser (Adam amsgrad, two learning rates, coupled weight decay, gradient value
clip 0.1) and the same three losses; both sides train with dropout and batch statistics on, on the same
machine with the same thread count. Prints one JSON line: median step times over ``--runs`` steps after
``--warmup``, ``ratio_jax_over_torch``, the step's FLOPs from XLA's cost analysis of the compiled step,
the achieved FLOP/s and their share of the machine's measured matmul peak.

``--extractor``: ``trained`` (the paper's step), ``frozen`` (ResNet forward only, no extractor
gradients), ``cached`` (the patch features computed once: the step starts at the shared subspace), or
``all``; examples/s of each. ``--remat=nothing_saveable`` (or another ``model.remat`` policy) times the
step with its ResNet blocks and Transformer layers rematerialised; every JAX step also reports XLA's
buffer sizes for it (``*_temp_mib``: the activations and workspace the step allocates beside its
arguments, from the compiled program's memory analysis). ``--cpu_scheduler`` is XLA:CPU's scheduler
(``jpg_jax/cpu_scheduler.py``: 'concurrency', XLA's default and ``jpg_jax.main``'s, or 'memory').
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

import common  # noqa: F401  (sets sys.path)

import jax
import jax.numpy as jnp
import numpy as np

from configs import jpg as jpg_config
from jpg_jax import cpu_scheduler
from jpg_jax import cost
from jpg_jax import parallel
from jpg_jax import steps
from jpg_jax.models import jpg as jpg_lib

VOCAB, LABELS, LABEL_TOKENS, VIEWS = 761, 57, 64, 2


def make_config(args, extractor: str):
  c = jpg_config.get_config()
  c.unlock()
  c.model.resnet_depth = args.depth
  c.model.frozen_extractor = extractor in ("frozen", "cached")
  c.model.cached_features = extractor == "cached"
  c.dataset.image_size = args.image_size
  c.compute_dtype = args.dtype
  c.train.diagnostics = bool(args.diagnostics)
  c.model.remat = args.remat
  c.lock()
  return c


def numpy_batch(args, rng: np.random.Generator) -> dict:
  b, s, length = args.batch, args.image_size, 60
  report = rng.integers(1, VOCAB, (b, length)).astype(np.int32)
  report[:, 0] = 0
  labels = rng.integers(1, LABEL_TOKENS, (b, 6)).astype(np.int32)
  labels[:, 0] = 0
  images = rng.standard_normal((b, VIEWS, s, s, 3)).astype(np.float32)
  return {"images": images, "report_ids": report,
          "report_mask": np.ones((b, length), np.float32), "label_ids": labels,
          "label_mask": np.ones((b, 6), np.float32),
          "label_targets": (rng.random((b, LABELS)) < 0.1).astype(np.float32),
          "index": np.arange(b, dtype=np.int32), "mask": np.ones((b,), np.float32)}


def jax_step(args, extractor: str) -> dict:
  config = make_config(args, extractor)
  model = jpg_lib.from_config(config.model, VOCAB, LABELS, LABEL_TOKENS, jnp.dtype(config.compute_dtype))
  rng = np.random.default_rng(0)
  full = jpg_lib.from_config(make_config(args, "frozen").model, VOCAB, LABELS, LABEL_TOKENS)
  batch = numpy_batch(args, rng)
  variables = jax.jit(functools.partial(full.init, train=False))(
      {"params": jax.random.key(0), "dropout": jax.random.key(1)}, batch["images"][:1],
      batch["report_ids"][:1], batch["label_ids"][:1])
  if extractor == "cached":   # the cache: the frozen extractor's patch grids, computed once
    extract = jax.jit(lambda v, x: full.apply(v, x, False, method=jpg_lib.JPG.extract))
    batch["images"] = np.asarray(extract(variables, batch["images"]))
    variables = {c: {k: v for k, v in tree.items() if k != "visual_extractor"} for c, tree in variables.items()}
  optimizer, _ = steps.make_optimizer(config, variables["params"], 1, 2)
  state = steps.train_state(variables, optimizer, jax.random.key(2))
  mesh = parallel.make_mesh(jax.devices()[:1])
  step = steps.jit_train_step(model, optimizer, config, 2, mesh)
  batch = jax.device_put(batch, parallel.data_sharded(mesh))
  compiled = step.lower(state, batch).compile()
  analysis = cost.analysis_of(compiled)
  memory = compiled.memory_analysis()
  holder = {"state": state}

  def run():
    holder["state"], terms = compiled(holder["state"], batch)
    jax.block_until_ready(terms["loss"])

  median, times = common.median_time(run, args.runs, args.warmup)
  return {"step_s": median, "times_s": [round(t, 4) for t in times], "flops": float(analysis["flops"]),
          "examples_per_s": args.batch / median,
          "temp_mib": None if memory is None else memory.temp_size_in_bytes / 2**20}


def torch_step(args) -> dict:
  import torch
  import torch.nn.functional as F
  sys.path.insert(0, os.path.join(common.ROOT, "tests"))
  import torch_reference as ref

  torch.set_num_threads(args.threads or os.cpu_count())
  device = "cuda" if torch.cuda.is_available() and jax.devices()[0].platform == "gpu" else "cpu"
  torch.backends.cuda.matmul.allow_tf32 = True   # as XLA's default f32 precision on GPU
  torch.backends.cudnn.allow_tf32 = True
  torch.backends.cudnn.benchmark = True
  torch.manual_seed(0)
  net = ref.JPG(VOCAB, LABELS, LABEL_TOKENS, resnet_depth=args.depth).to(device).train()
  extractor = [p for n, p in net.named_parameters() if n.startswith("visual_extractor.")]
  rest = [p for n, p in net.named_parameters() if not n.startswith("visual_extractor.")]
  opt = torch.optim.Adam([{"params": extractor, "lr": 5e-5}, {"params": rest, "lr": 1e-4}],
                         weight_decay=5e-5, amsgrad=True)
  b = {k: torch.as_tensor(v).to(device) for k, v in numpy_batch(args, np.random.default_rng(0)).items()}
  images = b["images"].permute(0, 1, 4, 2, 3).contiguous()
  autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")

  def nll(logits, targets, mask):
    logp = F.log_softmax(logits.float(), -1).gather(-1, targets[..., None])[..., 0]
    return -(logp * mask).sum() / mask.sum().clamp(min=1)

  def run():
    with autocast:
      out = net(images, b["report_ids"], b["label_ids"])
      loss = (nll(out["logits"], b["report_ids"][:, 1:], b["report_mask"][:, 1:])
              + nll(out["label_token_logits"], b["label_ids"][:, 1:], b["label_mask"][:, 1:])
              + F.binary_cross_entropy_with_logits(out["label_class_logits"].float(), b["label_targets"]))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_value_(net.parameters(), 0.1)
    opt.step()
    if device == "cuda":
      torch.cuda.synchronize()

  median, times = common.median_time(run, args.runs, args.warmup)
  return {"step_s": median, "times_s": [round(t, 4) for t in times], "examples_per_s": args.batch / median,
          "version": torch.__version__, "device": device, "threads": torch.get_num_threads()}


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--image_size", type=int, default=224)
  p.add_argument("--depth", type=int, default=101)
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--runs", type=int, default=5)
  p.add_argument("--warmup", type=int, default=1)
  p.add_argument("--threads", type=int, default=0, help="PyTorch threads (default: all cores, as XLA)")
  p.add_argument("--framework", default="both", choices=["both", "jax", "torch"])
  p.add_argument("--diagnostics", type=int, default=1, help="1: the subspace diagnostics in the step (default)")
  p.add_argument("--extractor", default="trained", choices=["trained", "frozen", "cached", "all"])
  p.add_argument("--remat", default="", help="model.remat: a jax.checkpoint_policies name ('' off)")
  p.add_argument("--cpu_scheduler", default="concurrency", choices=cpu_scheduler.CHOICES,
                 help="XLA:CPU's scheduler, as jpg_jax.main's flag (default: the same, concurrency)")
  p.add_argument("--return_freed", default="auto", choices=["auto", "on", "off"],
                 help="the allocator returns freed buffers to the system (cpu_scheduler.return_freed_memory); "
                      "auto: with --cpu_scheduler=memory, as jpg_jax.main")
  args = p.parse_args()
  returned = {"auto": args.cpu_scheduler == "memory", "on": True, "off": False}[args.return_freed]
  cpu_scheduler.use(args.cpu_scheduler, returned)   # before JAX starts its backends

  record = {"benchmark": "train_step", **common.machine(), "batch": args.batch, "views": VIEWS,
            "image_size": args.image_size, "resnet_depth": args.depth, "dtype": args.dtype,
            "runs": args.runs, "remat": args.remat, "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "return_freed": returned}
  peak = common.matmul_peak_flops(args.dtype)
  record["matmul_peak_tflops"] = round(peak / 1e12, 3)
  if args.framework in ("both", "jax"):
    modes = ("trained", "frozen", "cached") if args.extractor == "all" else (args.extractor,)
    for mode in modes:
      r = jax_step(args, mode)
      key = "jax" if mode == "trained" else f"jax_{mode}"
      record[f"{key}_step_s"] = round(r["step_s"], 4)
      record[f"{key}_times_s"] = r["times_s"]
      record[f"{key}_examples_per_s"] = round(r["examples_per_s"], 3)
      record[f"{key}_flops_per_step"] = r["flops"]
      record[f"{key}_tflops_per_s"] = round(r["flops"] / r["step_s"] / 1e12, 3)
      record[f"{key}_fraction_of_matmul_peak"] = round(r["flops"] / r["step_s"] / peak, 4)
      record[f"{key}_temp_mib"] = None if r["temp_mib"] is None else round(r["temp_mib"], 1)
  if args.framework in ("both", "torch") and args.extractor in ("trained", "all"):
    r = torch_step(args)
    record.update({f"torch_{k}": (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
  if "jax_step_s" in record and "torch_step_s" in record:
    record["ratio_jax_over_torch"] = round(record["jax_step_s"] / record["torch_step_s"], 3)
  common.emit(record)


if __name__ == "__main__":
  main()
