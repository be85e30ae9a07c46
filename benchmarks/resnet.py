"""Where the CPU train step's time goes: ResNet forward and forward + backward in JAX and PyTorch.

  python benchmarks/resnet.py                                   # ResNet-101, 32 images (16 studies x 2 views)
  XLA_FLAGS=--xla_cpu_use_onednn=true python benchmarks/resnet.py --framework=jax

Both sides run the same architecture (tests/torch_reference.py's ResNet is the parity-tested one) in
training mode (batch statistics), with the gradient of the summed output. Prints one JSON line with the
median times, the ratios, and XLA's FLOP count of each compiled function; the XLA flags in effect are in
the record, so that flag experiments are comparable.
"""

from __future__ import annotations

import argparse
import os
import sys

import common  # noqa: F401  (sets sys.path)

import jax
import jax.numpy as jnp
import numpy as np

from jpg_jax import cost
from jpg_jax.models import resnet


def jax_side(args, x: np.ndarray) -> dict:
  model = resnet.ResNet(args.depth)
  variables = jax.jit(lambda: model.init(jax.random.key(0), x[:1], False))()
  x = jnp.asarray(x)

  def forward(params, stats, x):
    y, _ = model.apply({"params": params, "batch_stats": stats}, x, True, mutable=["batch_stats"])
    return y.sum()

  fwd = jax.jit(forward).lower(variables["params"], variables["batch_stats"], x).compile()
  grad = jax.jit(jax.grad(forward)).lower(variables["params"], variables["batch_stats"], x).compile()
  flops = lambda c: float(cost.analysis_of(c)["flops"])
  p, s = variables["params"], variables["batch_stats"]
  t_fwd, _ = common.median_time(lambda: fwd(p, s, x).block_until_ready(), args.runs)
  t_grad, _ = common.median_time(lambda: jax.block_until_ready(grad(p, s, x)), args.runs)
  return {"forward_s": t_fwd, "forward_backward_s": t_grad, "forward_flops": flops(fwd),
          "forward_backward_flops": flops(grad)}


def torch_side(args, x: np.ndarray) -> dict:
  import torch
  sys.path.insert(0, os.path.join(common.ROOT, "tests"))
  import torch_reference as ref
  torch.set_num_threads(args.threads or os.cpu_count())
  net = ref.ResNet(args.depth).train()
  xt = torch.as_tensor(x).permute(0, 3, 1, 2).contiguous()

  def fwd():
    with torch.no_grad():
      net(xt).sum()

  def grad():
    net.zero_grad(set_to_none=True)
    net(xt).sum().backward()

  t_fwd, _ = common.median_time(fwd, args.runs)
  t_grad, _ = common.median_time(grad, args.runs)
  return {"forward_s": t_fwd, "forward_backward_s": t_grad, "version": torch.__version__,
          "threads": torch.get_num_threads()}


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--depth", type=int, default=101)
  p.add_argument("--images", type=int, default=32)
  p.add_argument("--image_size", type=int, default=224)
  p.add_argument("--runs", type=int, default=3)
  p.add_argument("--threads", type=int, default=0)
  p.add_argument("--framework", default="both", choices=["both", "jax", "torch"])
  args = p.parse_args()
  x = np.random.default_rng(0).standard_normal((args.images, args.image_size, args.image_size, 3)).astype(
      np.float32)
  record = {"benchmark": "resnet", **common.machine(), "depth": args.depth, "images": args.images,
            "image_size": args.image_size, "xla_flags": os.environ.get("XLA_FLAGS", "")}
  sides = {"jax": jax_side, "torch": torch_side}
  for name in (("jax", "torch") if args.framework == "both" else (args.framework,)):
    for k, v in sides[name](args, x).items():
      record[f"{name}_{k}"] = round(v, 4) if isinstance(v, float) and v < 1e6 else v
  if args.framework == "both":
    record["forward_ratio_jax_over_torch"] = round(record["jax_forward_s"] / record["torch_forward_s"], 3)
    record["backward_ratio_jax_over_torch"] = round(
        (record["jax_forward_backward_s"] - record["jax_forward_s"])
        / (record["torch_forward_backward_s"] - record["torch_forward_s"]), 3)
  common.emit(record)


if __name__ == "__main__":
  main()
