"""PyTorch state_dict -> Flax variables, by name.

jpg-jax's modules are named after their PyTorch counterparts (torchvision's ResNet, R2Gen's Transformer,
``torch.nn.GRUCell``), so one rule maps every parameter: walk the Flax template, turn each path into the
torch key (a module ``layer1_0`` may be torch's ``layer1.0``; leaf names below) and reshape:

  kernel    <- weight   (Conv: OIHW -> HWIO; Linear: (out, in) -> (in, out))
  scale     <- weight   (BatchNorm, LayerNorm)
  embedding <- weight   (Embedding)
  mean, var <- running_mean, running_var   (the ``batch_stats`` collection)
  anything else keeps its name (``bias``, ``basis``, ``weight_ih``, ...).

Checkpoints of R2Gen (github.com/cuhksz-nlp/R2Gen) and of CMN (github.com/zhjohnchan/R2GenCMN), whose
modules are named differently (``encoder_decoder.model.decoder.layers.0.sublayer.1.norm.gamma``,
``self_attn.linears.2``, ``visual_extractor.model.4.0.conv1``), go through ``rename_r2gen`` first:

  variables = torch_to_flax(rename_r2gen(torch.load(path)["state_dict"]), template)

with the template of ``configs/jpg.py:r2gen`` or ``:cmn`` (their architectures in this model).
"""

from __future__ import annotations

import itertools
import re
from typing import Any, Mapping

import numpy as np
from flax import traverse_util

_LEAF = {"kernel": "weight", "scale": "weight", "embedding": "weight", "mean": "running_mean",
         "var": "running_var"}
_INDEXED = re.compile(r"^(.*)_(\d+)$")


def _candidates(path: tuple[str, ...]) -> list[str]:
  *modules, leaf = path
  options = []
  for m in modules:
    match = _INDEXED.match(m)
    options.append([m, f"{match.group(1)}.{match.group(2)}"] if match else [m])
  leaf = _LEAF.get(leaf, leaf)
  return [".".join(list(combo) + [leaf]) for combo in itertools.product(*options)]


# R2Gen's / R2GenCMN's key -> this layout's key, applied in order.
_R2GEN_RULES = (
    (r"^module\.", ""),                                       # saved from torch.nn.DataParallel (n_gpu > 1)
    (r"^encoder_decoder\.model\.tgt_embed\.0\.lut\.", "word_embed."),
    (r"^encoder_decoder\.model\.rm\.", "decoder.rm."),
    (r"^encoder_decoder\.(model\.)?cmn\.", "cmn."),          # CMN's memory module is registered twice
    (r"^encoder_decoder\.memory_matrix$", "cmn.memory_matrix"),
    (r"^encoder_decoder\.model\.(encoder|decoder)\.", r"\1."),
    (r"^encoder_decoder\.att_embed\.0\.", "att_embed."),
    (r"^encoder_decoder\.logit\.", "logit."),
    (r"\.sublayer\.(\d+)\.norm\.", r".norms.\1."),
    (r"\.linears\.(\d)\.", lambda m: "." + "qkvo"[int(m.group(1))] + "."),
    (r"\.(gamma|a_2)$", ".weight"),                          # LayerNorm's scale (R2Gen's, CMN's name)
    (r"\.(beta|b_2)$", ".bias"),
    (r"^visual_extractor\.model\.(\d)\.",                     # torchvision's children, as a Sequential
     lambda m: "visual_extractor." + {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3",
                                      "7": "layer4"}[m.group(1)] + "."),
)
_R2GEN_DROPPED = re.compile(r"\.pe$")   # the sinusoid tables (buffers); computed here


def rename_r2gen(state_dict: Mapping[str, Any]) -> dict:
  """An R2Gen or R2GenCMN state_dict with this project's keys (see the module docstring). CMN's memory
  module appears under two keys in its state_dict (shared); both must hold the same tensor."""
  out = {}
  for key, value in state_dict.items():
    if _R2GEN_DROPPED.search(key):
      continue
    new = key
    for pattern, repl in _R2GEN_RULES:
      new = re.sub(pattern, repl, new)
    if new in out:
      a, b = (np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v) for v in (out[new], value))
      if a.shape != b.shape or not np.array_equal(a, b):
        raise ValueError(f"{key} and another key both map to {new} with different values.")
      continue
    out[new] = value
  return out


def _to_flax(leaf: str, value: np.ndarray) -> np.ndarray:
  if leaf == "kernel":
    if value.ndim == 4:
      return value.transpose(2, 3, 1, 0)
    if value.ndim == 2:
      return value.T
  return value


def torch_to_flax(state_dict: Mapping[str, Any], template: Mapping[str, Any], prefix: str = "",
                  strict: bool = True) -> dict:
  """Fills ``template`` (a variables dict with ``params`` and optionally ``batch_stats``) from
  ``state_dict`` (values: torch tensors or numpy arrays). ``prefix`` is prepended to every torch key.

  Raises KeyError for a template leaf with no torch key, ValueError for a shape mismatch, and (strict)
  ValueError for torch parameters that nothing used (``num_batches_tracked`` aside).
  """
  sd = {k: (v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v))
        for k, v in state_dict.items()}
  used, out = set(), {}
  for collection, tree in template.items():
    flat = traverse_util.flatten_dict(dict(tree))
    filled = {}
    for path, ref in flat.items():
      keys = [prefix + k for k in _candidates(path)]
      key = next((k for k in keys if k in sd), None)
      if key is None:
        raise KeyError(f"No torch parameter for {collection}/{'/'.join(path)} (tried {keys}).")
      value = _to_flax(path[-1], sd[key])
      if value.shape != tuple(ref.shape):
        raise ValueError(f"{key}: torch shape {sd[key].shape} -> {value.shape}, Flax wants {ref.shape}.")
      filled[path] = value.astype(ref.dtype)
      used.add(key)
    out[collection] = traverse_util.unflatten_dict(filled)
  if strict:
    unused = sorted(k for k in sd if k.startswith(prefix) and k not in used
                    and not k.endswith("num_batches_tracked"))
    if unused:
      raise ValueError(f"Unused torch parameters: {unused[:10]}{' ...' if len(unused) > 10 else ''}")
  return out
