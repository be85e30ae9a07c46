"""Parameter counts of a configured JPG model, per component, from shapes alone (``jax.eval_shape``)."""

from __future__ import annotations

import jax

from jpg_jax import steps
from jpg_jax.models import jpg as jpg_lib


def abstract_variables(config, vocab_size: int, num_label_tokens: int):
  model = jpg_lib.from_config(config.model, vocab_size, config.labels.num_mined, num_label_tokens,
                              cached_features=False)   # the whole model, its extractor included
  return jax.eval_shape(lambda: steps.init_variables(model, config, jax.random.key(0)))


def counts(variables) -> dict[str, int]:
  return {name: sum(x.size for x in jax.tree.leaves(tree)) for name, tree in variables["params"].items()}


def table(config, vocab_size: int, num_label_tokens: int) -> str:
  c = counts(abstract_variables(config, vocab_size, num_label_tokens))
  total = sum(c.values())
  lines = [f"JPG parameters (report logits {vocab_size}, {config.labels.num_mined} labels, "
           f"{num_label_tokens} label-token logits)", f"{'component':<20}{'parameters':>14}{'share':>8}"]
  lines += [f"{k:<20}{v:>14,}{v / total:>8.1%}" for k, v in c.items()]
  lines.append(f"{'total':<20}{total:>14,}")
  return "\n".join(lines)
