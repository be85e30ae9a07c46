"""Convert a torchvision ResNet checkpoint (``.pth`` state_dict) into Flax variables in an orbax checkpoint.

  python -m jpg_jax.tools.convert_resnet --depth=101 --torch_checkpoint=resnet101-cd907fc2.pth \\
      --output=/path/to/resnet101_flax

Users download torchvision's ImageNet weights themselves; nothing downloads at run time. The file is read
with ``torch.load(weights_only=True)`` (plain tensors only). The fully connected ``fc.*`` layer is dropped:
JPG uses the last convolutional map. A config names the result with ``resnet_checkpoint``.

``--output`` must be a new or empty folder, or one this tool wrote (its ``convert_resnet.json`` says so);
anything else is refused unless ``--overwrite``: the tool never deletes what it did not write.
"""

from __future__ import annotations


import jax
from absl import flags
from etils import epath

from jpg_jax import errors
from jpg_jax import resnet_weights
from jpg_jax.tools import convert_torch
from jpg_jax import cli

_DEPTH = flags.DEFINE_integer("depth", 101, "ResNet depth: 18, 34, 50 or 101.")
_TORCH = flags.DEFINE_string("torch_checkpoint", None, "torchvision state_dict (.pth).")
_OUTPUT = flags.DEFINE_string("output", None, "Directory for the orbax checkpoint.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace --output even when this tool did not write it.")
MARKER = "convert_resnet.json"   # written into every output folder: what made it


def resnet_template(depth: int) -> dict:
  """Flax variable shapes of torchvision's ResNet-``depth`` (no computation)."""
  return resnet_weights.template(depth)


def convert_state_dict(state_dict, depth: int) -> dict:
  body = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
  return convert_torch.torch_to_flax(body, resnet_template(depth))


def load_torch_state_dict(path: str) -> dict:
  import torch  # Only the converter needs torch.
  if not epath.Path(path).is_file():
    raise errors.MissingFileError(f"--torch_checkpoint {path} is not a file.")
  try:
    sd = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # noqa: BLE001  (torch raises many types for foreign or truncated files)
    raise errors.InputError(f"--torch_checkpoint {path} cannot be read as a torchvision state_dict "
                            f"({type(e).__name__}: {' '.join(str(e).split())[:200]}).") from None
  return sd.get("state_dict", sd) if isinstance(sd, dict) else sd


check_output = resnet_weights.check_output
MARKER = resnet_weights.MARKER


def save(variables: dict, output: str, source: str = "", overwrite: bool = False, depth: int = 101) -> None:
  """Writes torchvision ResNet-``depth`` ``variables`` to ``output`` (``resnet_weights.save``)."""
  resnet_weights.save(variables, output, tool="jpg_jax.tools.convert_resnet", source=source, depth=depth,
                      overwrite=overwrite)


def restore(path: str, depth: int) -> dict:
  """The converted variables, shaped as ResNet-``depth``'s (``params`` and ``batch_stats``)."""
  return resnet_weights.restore(path, depth)


def main(argv):
  del argv
  try:
    check_output(_OUTPUT.value, _OVERWRITE.value)   # before the slow part
    variables = convert_state_dict(load_torch_state_dict(_TORCH.value), _DEPTH.value)
    save(variables, _OUTPUT.value, _TORCH.value, _OVERWRITE.value, _DEPTH.value)
  except errors.UserError as e:
    cli.fail(e)
  n = sum(x.size for x in jax.tree.leaves(variables["params"]))
  print(f"ResNet-{_DEPTH.value}: {n:,} parameters written to {_OUTPUT.value}")


if __name__ == "__main__":
  cli.run(main, required=["torch_checkpoint", "output"])
