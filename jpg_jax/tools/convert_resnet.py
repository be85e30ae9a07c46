"""Convert a torchvision ResNet checkpoint (``.pth`` state_dict) into Flax variables in an orbax checkpoint.

  python -m jpg_jax.tools.convert_resnet --depth=101 --torch_checkpoint=resnet101-cd907fc2.pth \\
      --output=/path/to/resnet101_flax

Users download torchvision's ImageNet weights themselves; nothing downloads at run time. The file is read
with ``torch.load(weights_only=True)`` (plain tensors only). The fully connected ``fc.*`` layer is dropped:
JPG uses the last convolutional map. A config names the result with ``model_init.resnet_checkpoint``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import app
from absl import flags
from etils import epath

from jpg_jax.models import resnet
from jpg_jax.tools import convert_torch

_DEPTH = flags.DEFINE_integer("depth", 101, "ResNet depth: 18, 34, 50 or 101.")
_TORCH = flags.DEFINE_string("torch_checkpoint", None, "torchvision state_dict (.pth).")
_OUTPUT = flags.DEFINE_string("output", None, "Directory for the orbax checkpoint.")


def resnet_template(depth: int) -> dict:
  """Flax variable shapes of ResNet-``depth`` (no computation)."""
  model = resnet.ResNet(depth)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))


def convert_state_dict(state_dict, depth: int) -> dict:
  body = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
  return convert_torch.torch_to_flax(body, resnet_template(depth))


def load_torch_state_dict(path: str) -> dict:
  import torch  # Only the converter needs torch.
  sd = torch.load(path, map_location="cpu", weights_only=True)
  return sd.get("state_dict", sd) if isinstance(sd, dict) else sd


def save(variables: dict, output: str) -> None:
  path = epath.Path(output).absolute()
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(path, jax.tree.map(np.asarray, variables), force=True)


def restore(path: str, depth: int) -> dict:
  """The converted variables, shaped as ResNet-``depth``'s (``params`` and ``batch_stats``)."""
  with ocp.StandardCheckpointer() as ckpt:
    return ckpt.restore(epath.Path(path).absolute(), resnet_template(depth))


def main(argv):
  del argv
  variables = convert_state_dict(load_torch_state_dict(_TORCH.value), _DEPTH.value)
  save(variables, _OUTPUT.value)
  n = sum(x.size for x in jax.tree.leaves(variables["params"]))
  print(f"ResNet-{_DEPTH.value}: {n:,} parameters written to {_OUTPUT.value}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["torch_checkpoint", "output"])
  app.run(main)
