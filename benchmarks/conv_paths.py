"""The KxK convolutions of ResNet-101's train step, by implementation: where the CPU step loses to PyTorch.

  python benchmarks/conv_paths.py [--batch 16] [--runs 5]

Every distinct 3x3 and 7x7 convolution of ResNet-101 at 224 px (the stem, and each stage's 3x3 with and
without stride 2), timed forward + both gradients (input and weight, the train step's work for it), on
one view's batch, by each path issue J lists:

* ``lax``: ``lax.conv_general_dilated`` and its autodiff (XLA:CPU's Eigen kernels: jpg-jax's path);
* ``im2col``: the patches (``lax.conv_general_dilated_patches``) times the kernel as one matrix product,
  differentiated by JAX (the patches' gradient is a convolution again);
* ``vjp_matmul_wgrad``: ``lax`` forward and input gradient, the weight gradient as one matrix product of
  the patches and the output gradient (``jax.custom_vjp``): the weight gradient is the slowest of the three
  on Eigen;
* ``shifted``: a sum of K x K shifted 1x1 matrix products, differentiated by JAX;
* ``torch``: ``torch.nn.functional.conv2d`` forward + backward (oneDNN), the reference.

Prints one JSON line: per shape and path the median milliseconds, and per path the total over ResNet-101's
convolutions (each shape times its count in the network, times two views): set beside the whole train
step's times from ``benchmarks/train_step.py``, which path, if any, closes the gap (README, Performance).
The paths are first checked to give lax's output and gradients on a small case.
"""

from __future__ import annotations

import argparse
import functools
import os

import common  # noqa: F401  (sets sys.path)

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

DN = ("NHWC", "HWIO", "NHWC")

# (name, input size, in channels, out channels, kernel, stride, padding, count in ResNet-101)
SHAPES = [
    ("stem 7x7/2", 224, 3, 64, 7, 2, 3, 1),
    ("layer1 3x3", 56, 64, 64, 3, 1, 1, 3),
    ("layer2 3x3/2", 56, 128, 128, 3, 2, 1, 1),
    ("layer2 3x3", 28, 128, 128, 3, 1, 1, 3),
    ("layer3 3x3/2", 28, 256, 256, 3, 2, 1, 1),
    ("layer3 3x3", 14, 256, 256, 3, 1, 1, 22),
    ("layer4 3x3/2", 14, 512, 512, 3, 2, 1, 1),
    ("layer4 3x3", 7, 512, 512, 3, 1, 1, 2),
]


def conv_lax(x, w, stride, pad):
  return lax.conv_general_dilated(x, w, (stride, stride), [(pad, pad)] * 2, dimension_numbers=DN)


def patches(x, k, stride, pad):
  """(B, Ho, Wo, C * k * k), channel-major as conv_general_dilated_patches orders them."""
  return lax.conv_general_dilated_patches(x, (k, k), (stride, stride), [(pad, pad)] * 2,
                                          dimension_numbers=DN)


def kernel_as_matrix(w):
  """HWIO (k, k, C, O) -> (C * k * k, O) in the patches' (channel-major) order."""
  k, _, c, o = w.shape
  return w.transpose(2, 0, 1, 3).reshape(c * k * k, o)


def conv_im2col(x, w, stride, pad):
  return patches(x, w.shape[0], stride, pad) @ kernel_as_matrix(w)


def conv_shifted(x, w, stride, pad):
  k = w.shape[0]
  xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  ho = (x.shape[1] + 2 * pad - k) // stride + 1
  out = 0.0
  for i in range(k):
    for j in range(k):
      tap = xp[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (ho - 1) + 1:stride]
      out = out + tap @ w[i, j]
  return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_matmul_wgrad(x, w, stride, pad):
  return conv_lax(x, w, stride, pad)


def _fwd(x, w, stride, pad):
  return conv_lax(x, w, stride, pad), (x, w)


def _bwd(stride, pad, res, g):
  x, w = res
  _, input_vjp = jax.vjp(lambda x: conv_lax(x, w, stride, pad), x)
  k, _, c, o = w.shape
  p = patches(x, k, stride, pad).reshape(-1, c * k * k)
  dw = (p.T @ g.reshape(-1, o)).reshape(c, k, k, o).transpose(1, 2, 0, 3)
  return input_vjp(g)[0], dw


conv_matmul_wgrad.defvjp(_fwd, _bwd)

PATHS = {"lax": conv_lax, "im2col": conv_im2col, "vjp_matmul_wgrad": conv_matmul_wgrad,
         "shifted": conv_shifted}


def jax_time(path, x, w, stride, pad, runs):
  conv = PATHS[path]
  def loss(x, w):
    return jnp.sum(conv(x, w, stride, pad) ** 2) * 0.5   # output gradient = the output: a dense one
  step = jax.jit(jax.grad(loss, argnums=(0, 1)))
  return common.median_time(lambda: jax.block_until_ready(step(x, w)), runs)[0]


def torch_time(x, w, stride, pad, runs):
  import torch
  xt = torch.tensor(np.asarray(x).transpose(0, 3, 1, 2).copy(), requires_grad=True)
  wt = torch.tensor(np.asarray(w).transpose(3, 2, 0, 1).copy(), requires_grad=True)

  def run():
    xt.grad = wt.grad = None
    y = torch.nn.functional.conv2d(xt, wt, stride=stride, padding=pad)
    (y.pow(2).sum() * 0.5).backward()

  return common.median_time(run, runs)[0]


def check_paths_agree(x, w, stride, pad):
  """Every path's output and gradients equal lax's (float32 rounding): a timing of a wrong path is void."""
  ref_y = conv_lax(x, w, stride, pad)
  ref_g = jax.grad(lambda x, w: jnp.sum(conv_lax(x, w, stride, pad) ** 2), argnums=(0, 1))(x, w)
  for name, conv in PATHS.items():
    y = conv(x, w, stride, pad)
    g = jax.grad(lambda x, w: jnp.sum(conv(x, w, stride, pad) ** 2), argnums=(0, 1))(x, w)
    for a, b in ((y, ref_y),) + tuple(zip(g, ref_g)):
      scale = float(jnp.max(jnp.abs(b))) + 1e-6
      assert float(jnp.max(jnp.abs(a - b))) / scale < 1e-4, name


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--batch", type=int, default=16, help="one view's batch (the train step runs two)")
  p.add_argument("--runs", type=int, default=5)
  p.add_argument("--threads", type=int, default=0, help="PyTorch threads (default: all cores, as XLA)")
  p.add_argument("--paths", default="lax,im2col,vjp_matmul_wgrad,shifted,torch")
  args = p.parse_args()
  paths = args.paths.split(",")
  import torch
  torch.set_num_threads(args.threads or os.cpu_count())
  rng = np.random.default_rng(0)
  small = (rng.standard_normal((2, 15, 15, 8)).astype(np.float32),
           rng.standard_normal((3, 3, 8, 4)).astype(np.float32))
  check_paths_agree(jnp.asarray(small[0]), jnp.asarray(small[1]), 2, 1)
  rows, totals = [], {q: 0.0 for q in paths}
  for name, size, cin, cout, k, stride, pad, count in SHAPES:
    x = jnp.asarray(rng.standard_normal((args.batch, size, size, cin)).astype(np.float32))
    w = jnp.asarray((rng.standard_normal((k, k, cin, cout)) / np.sqrt(k * k * cin)).astype(np.float32))
    row = {"conv": name, "count": count}
    for q in paths:
      ms = 1e3 * (torch_time(x, w, stride, pad, args.runs) if q == "torch" else
                  jax_time(q, x, w, stride, pad, args.runs))
      row[q] = round(ms, 1)
      totals[q] += ms * count * 2 / 1e3   # two views
    rows.append(row)
    print(row, flush=True)
  common.emit({"benchmark": "conv_paths", **common.machine(), "batch_per_view": args.batch, "runs": args.runs,
               "shapes_ms": rows, "resnet101_two_views_s": {q: round(v, 2) for q, v in totals.items()}})


if __name__ == "__main__":
  main()
