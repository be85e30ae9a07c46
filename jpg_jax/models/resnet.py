"""ResNet-18/34/50/101 in torchvision's v1.5 layout, returning the last convolutional feature map.

(ResNet-10, one basic block per stage, is there for tests and small configs: it compiles fast. ``width``,
the first stage's channels, is torchvision's 64 everywhere but in the tests' smoke config, whose ResNet-10
at width 16 has 0.31 M parameters instead of 4.91 M.)

The visual extractor of JPG (Sec. 3.2, 4.4: ResNet-101 pre-trained on ImageNet, 7x7x2048 at 224x224).
Module and parameter names mirror torchvision's state_dict (``layer1_0/conv1`` <-> ``layer1.0.conv1``,
``downsample_0``/``downsample_1`` <-> ``downsample.0``/``.1``), so ``jpg_jax.tools.convert_resnet`` maps
ImageNet weights one to one. v1.5: the stride of a bottleneck sits in its 3x3 conv; the stem's max-pool
pads by 1 on both sides; BatchNorm eps 1e-5 and torch's momentum 0.1 (flax momentum 0.9).

``frozen=True`` makes the extractor a fixed feature function: BatchNorm uses its running statistics and no
gradient flows back into it (the paper allows "any type of pre-trained CNNs", Sec. 3.2).

``remat`` names a ``jax.checkpoint_policies`` policy (``remat_policy``): each residual block is then
rematerialised (``nn.remat``): the backward pass keeps the blocks' inputs and what the policy saves, and
recomputes the rest (one more forward pass of the extractor a step, for the activations of one block at a
time instead of all of them). Same parameters, same values.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

_STAGES = {10: ("basic", (1, 1, 1, 1)), 18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
           50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3))}
DEPTHS = tuple(_STAGES)

# torchvision initialises convolutions with kaiming_normal_(mode='fan_out', nonlinearity='relu').
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class PointwiseConv(nn.Module):
  """A bias-free 1x1 convolution computed as a matrix product over channels (after striding).

  The same parameter as ``nn.Conv`` (``kernel``, shape (1, 1, C_in, C_out)) and the same values; XLA's CPU
  backend runs the backward pass of 1x1 convolutions as generic Eigen convolutions, several times slower
  than the matrix products this lowers to (benchmarks/resnet.py). Most of a bottleneck ResNet's FLOPs
  are in its 1x1 convolutions.
  """
  features: int
  strides: tuple[int, int] = (1, 1)
  dtype: Any = jnp.float32
  kernel_init: Any = conv_init

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", self.kernel_init, (1, 1, x.shape[-1], self.features), jnp.float32)
    sh, sw = self.strides
    x = x[:, ::sh, ::sw] if (sh, sw) != (1, 1) else x
    return jax.lax.dot_general(x.astype(self.dtype), kernel[0, 0].astype(self.dtype),
                               (((x.ndim - 1,), (0,)), ((), ())))


def make_conv(features, kernel_size, strides=(1, 1), padding=0, *, dtype, pointwise_as_dot: bool,
              name=None) -> nn.Module:
  """A bias-free convolution as torchvision's; 1x1 kernels as ``PointwiseConv`` when asked."""
  if pointwise_as_dot and tuple(kernel_size) == (1, 1):
    return PointwiseConv(features, tuple(strides), dtype, name=name)
  return nn.Conv(features, kernel_size, strides, padding=padding, use_bias=False, dtype=dtype,
                 kernel_init=conv_init, name=name)


def max_pool(x, window: int = 3, stride: int = 2, pad: int = 1):
  """torch's ``max_pool2d(window, stride, pad)`` as an elementwise maximum of strided slices.

  The same forward values as ``nn.max_pool``; its backward is a few selects instead of XLA's
  ``select_and_scatter``, which is 4-5x slower on CPU (benchmarks/resnet.py). At exact ties inside a
  window the gradient is shared between the tied inputs instead of going to the first one.
  """
  n, h, w, c = x.shape
  xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=-jnp.inf)
  ho, wo = (h + 2 * pad - window) // stride + 1, (w + 2 * pad - window) // stride + 1
  out = None
  for i in range(window):
    for j in range(window):
      part = xp[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
      out = part if out is None else jnp.maximum(out, part)
  return out


# '' (no remat) and the jax.checkpoint_policies a block may be rematerialised under: nothing saved inside
# it, or the outputs of its matrix products (the 1x1 convolutions, PointwiseConv; and the attention's).
REMAT_POLICIES = ("", "nothing_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable")


def remat_policy(name: str):
  """``jax.checkpoint_policies.<name>`` for a name in ``REMAT_POLICIES`` other than ''."""
  if name not in REMAT_POLICIES[1:]:
    raise ValueError(f"Unknown remat policy {name!r}; choose from {REMAT_POLICIES}.")
  return getattr(jax.checkpoint_policies, name)


def out_channels(depth: int, width: int = 64) -> int:
  """Channels of the last stage: 8 x ``width`` (x 4 in a bottleneck); 512 or 2048 at torchvision's 64."""
  return 8 * width * (1 if _STAGES[depth][0] == "basic" else 4)


class BasicBlock(nn.Module):
  planes: int
  stride: int = 1
  downsample: bool = False
  conv: Any = None
  norm: Any = None

  @nn.compact
  def __call__(self, x):
    y = self.conv(self.planes, (3, 3), (self.stride, self.stride), padding=1, name="conv1")(x)
    y = nn.relu(self.norm(name="bn1")(y))
    y = self.conv(self.planes, (3, 3), padding=1, name="conv2")(y)
    y = self.norm(name="bn2")(y)
    if self.downsample:
      x = self.conv(self.planes, (1, 1), (self.stride, self.stride), name="downsample_0")(x)
      x = self.norm(name="downsample_1")(x)
    return nn.relu(x + y)


class Bottleneck(nn.Module):
  planes: int
  stride: int = 1
  downsample: bool = False
  conv: Any = None
  norm: Any = None

  @nn.compact
  def __call__(self, x):
    y = nn.relu(self.norm(name="bn1")(self.conv(self.planes, (1, 1), name="conv1")(x)))
    y = self.conv(self.planes, (3, 3), (self.stride, self.stride), padding=1, name="conv2")(y)
    y = nn.relu(self.norm(name="bn2")(y))
    y = self.norm(name="bn3")(self.conv(self.planes * 4, (1, 1), name="conv3")(y))
    if self.downsample:
      x = self.conv(self.planes * 4, (1, 1), (self.stride, self.stride), name="downsample_0")(x)
      x = self.norm(name="downsample_1")(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """``(B, H, W, 3) -> (B, H/32, W/32, C)``, C = 512 (ResNet-18/34) or 2048 (ResNet-50/101) at width 64."""
  depth: int = 101
  frozen: bool = False
  dtype: Any = jnp.float32
  width: int = 64                   # the stem's and first stage's channels; stages double it
  pointwise_as_dot: bool = True     # 1x1 convolutions as matrix products (PointwiseConv)
  remat: str = ""                   # a jax.checkpoint_policies name: blocks rematerialised (docstring)

  @nn.compact
  def __call__(self, x, train: bool = False):
    kind, blocks = _STAGES[self.depth]
    use_running = self.frozen or not train
    conv = functools.partial(make_conv, dtype=self.dtype, pointwise_as_dot=self.pointwise_as_dot)
    norm = functools.partial(nn.BatchNorm, use_running_average=use_running, momentum=0.9, epsilon=1e-5,
                             dtype=self.dtype)
    block_cls = BasicBlock if kind == "basic" else Bottleneck
    if self.remat and train and not self.frozen:
      block_cls = nn.remat(block_cls, policy=remat_policy(self.remat))
    expansion = 1 if kind == "basic" else 4
    w = self.width
    x = conv(w, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], name="conv1")(x.astype(self.dtype))
    x = nn.relu(norm(name="bn1")(x))
    x = max_pool(x, 3, 2, 1)
    in_ch = w
    for stage, (n, planes) in enumerate(zip(blocks, (w, 2 * w, 4 * w, 8 * w))):
      for b in range(n):
        stride = 2 if (stage > 0 and b == 0) else 1
        downsample = b == 0 and (stride != 1 or in_ch != planes * expansion)
        x = block_cls(planes, stride, downsample, conv, norm, name=f"layer{stage + 1}_{b}")(x)
        in_ch = planes * expansion
    return jax.lax.stop_gradient(x) if self.frozen else x
