"""A visual extractor's weights on disk: the folder ``resnet_checkpoint`` names.

Two tools write one: ``tools/convert_resnet`` (torchvision's ImageNet ResNet, the paper's start) and
``tools/export_extractor`` (a finished run's stage-1 extractor: the synthetic Table 2's "BASE from JPG's
stage-1 extractor" row). Each folder holds the Flax variables (``params``, ``batch_stats``) of a
``models.resnet.ResNet`` in an orbax checkpoint and a marker, ``convert_resnet.json``, saying which tool
wrote it, from what, and the ResNet's depth and width (checked against a config before a run writes).

A folder is written only where it is new, empty, or written by one of these tools, unless ``overwrite``:
nothing deletes what it did not write.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from jpg_jax import errors
from jpg_jax.models import resnet

MARKER = "convert_resnet.json"   # written into every output folder: what made it


def template(depth: int, width: int = 64) -> dict:
  """Flax variable shapes of ResNet-``depth`` at ``width`` channels (no computation)."""
  model = resnet.ResNet(depth, width=width)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))


def check_output(output: str, overwrite: bool = False) -> None:
  """Refuses an ``output`` that exists and is neither empty nor written here (unless ``overwrite``)."""
  path = epath.Path(output)
  if overwrite or not path.exists():
    return
  if not path.is_dir():
    raise errors.OutputExistsError(f"--output {output} is a file; give a new folder or --overwrite.")
  if any(path.iterdir()) and not (path / MARKER).exists():
    raise errors.OutputExistsError(f"--output {output} is a folder this tool did not write, and not empty: "
                                   f"give a new folder, or --overwrite to replace its contents.")


def save(variables: dict, output: str, *, tool: str, source: str, depth: int, width: int = 64,
         overwrite: bool = False) -> None:
  """Writes ``variables`` to ``output`` (see ``check_output``) with its marker."""
  check_output(output, overwrite)
  path = epath.Path(output).absolute()
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(path, jax.tree.map(np.asarray, variables), force=True)
  (path / MARKER).write_text(json.dumps({"tool": tool, "source": source, "depth": depth, "width": width}))


def describe(path: str) -> dict:
  """The folder's marker ({} where there is none)."""
  marker = epath.Path(path) / MARKER
  return json.loads(marker.read_text()) if marker.exists() else {}


def restore(path: str, depth: int, width: int = 64) -> dict:
  """The variables, shaped as ResNet-``depth``'s at ``width`` (``params`` and ``batch_stats``)."""
  with ocp.StandardCheckpointer() as ckpt:
    return ckpt.restore(epath.Path(path).absolute(), template(depth, width))
