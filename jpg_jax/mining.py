"""Context-aware labels between the stages (Sec. 3.4): stage 1's targets, mining, stage 2's targets, and
the parameters stage 2 takes over from stage 1.

Stage 1 ("mining and pre-training on single labels") learns the reports whose MeSH terms reduce to one of
the simple patterns: the head's classes are the patterns, the GRU's target is the report's most specific
term of that pattern (its context: ``calcified_granuloma lung upper_lobe right``). Normal cases dominate
(73% of R2Gen's stage-1 reports); the paper regularises with BatchNorm and dropout ("random data dropout
(Hinton et al., 2012)"), and ``:tuned`` also keeps only ``labels.normal_keep`` of them an epoch, drawn anew.

Mining (``labels.mining``): the stage-1 model labels every training report (its GRU's greedy output), and
the ``num_mined`` most frequent generated labels become stage 2's label set:

* ``paper`` (Sec. 3.4, the default): the most frequent unique outputs, whatever they say; stage 2 re-trains
  on "57 context-aware labeled cases": a training report's GRU target is its generated label where that
  label was mined, and it has none otherwise (no GRU loss);
* ``agreeing`` (``:tuned``, ours): a generated label counts only where it agrees with the report's own
  terms (``labels.agrees``: the same primary disease, context that is one of its terms'); a report's
  target is its generated label where that agrees and was mined, otherwise its ground-truth label: the
  most specific mined label its terms match, else the most specific stage-1 pattern, else none. A
  generated label that contradicts a report's terms is never its target.

A model that has learnt nothing generates few distinct labels (few agreeing ones), and ``min_mined`` makes
that loud. In both, the head's multi-hot target is the report's own terms (``input_pipeline.Targets``), so
training and evaluation truth are one thing.
"""

from __future__ import annotations

import collections
from typing import Mapping, Sequence

import jax
from absl import logging
from etils import epath

from jpg_jax import input_pipeline as ip
from jpg_jax import labels as labels_lib
from jpg_jax import parallel
from jpg_jax import steps
from jpg_jax import text

Label = labels_lib.Label


# ============================================================================================ targets
def targets(config, vocab: text.Vocabulary, label_set: labels_lib.LabelSet | None = None,
            assigned: Mapping[str, Label] | None = None) -> ip.Targets:
  """The input pipeline's targets of a config: reports of ``dataset.max_seq_length`` tokens, GRU
  sequences of ``model.label_steps``; the GRU's targets ``assigned`` per report id, or, where not
  given, each report's most specific label of ``label_set`` (evaluation)."""
  return ip.Targets(vocab, config.dataset.max_seq_length, config.model.label_steps, label_set, assigned)


# ============================================================================================ stage 1
def stage1_labels(config, index: ip.SplitIndex):
  """Patterns (the head's classes), the reports that have one, and each report's full-term target."""
  patterns, kept, counts = labels_lib.select_simple_patterns(
      index.mesh, config.labels.num_patterns, config.labels.pattern_depth)
  assigned = stage1_assigned(config, index, patterns)
  tokens = sorted({t for seq in assigned.values() for t in seq})
  return labels_lib.LabelSet(patterns, counts, tokens), kept, assigned


def stage1_assigned(config, index: ip.SplitIndex, patterns) -> dict[str, Label]:
  """GRU targets of stage 1 on any split: for a report whose simple pattern is one of ``patterns``, its
  most specific term of that pattern."""
  keep = set(patterns.labels if isinstance(patterns, labels_lib.LabelSet) else patterns)
  assigned = {}
  for i, terms in enumerate(index.mesh):
    pattern = labels_lib.simple_pattern(terms, config.labels.pattern_depth)
    if pattern in keep:
      seqs = [labels_lib.mesh_term_to_tokens(t, config.model.label_steps) for t in terms if t.strip()]
      assigned[index.ids[i]] = max((s for s in seqs if s[: len(pattern)] == pattern), key=len)
  return assigned


def normal_cases(index: ip.SplitIndex, indices: Sequence[int], depth: int) -> list[int]:
  """The positions among ``indices`` whose simple pattern is ``normal`` (stage 1's droppable cases)."""
  return [i for i in indices if labels_lib.simple_pattern(index.mesh[i], depth) == labels_lib.NORMAL]


# ============================================================================================ mining
MININGS = ("paper", "agreeing")


def mine_labels(generated: Mapping[str, Label], terms: Mapping[str, Sequence[str]], num_mined: int,
                patterns: labels_lib.LabelSet, mining: str = "paper") -> labels_lib.LabelSet:
  """The ``num_mined`` most frequent generated labels (``agreeing``: among those that agree with their
  report's terms), ties alphabetical, with the GRU's token vocabulary of stage 1 (so that it carries over)."""
  if mining not in MININGS:
    raise ValueError(f"Unknown labels.mining {mining!r}; choose from {MININGS}.")
  counts = collections.Counter(seq for rid, seq in generated.items()
                               if seq and (mining == "paper" or labels_lib.agrees(seq, terms[rid])))
  ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:num_mined]
  return labels_lib.LabelSet([l for l, _ in ranked], dict(ranked), patterns.tokens)


def stage2_assigned(index: ip.SplitIndex, generated: Mapping[str, Label], label_set: labels_lib.LabelSet,
                    patterns: labels_lib.LabelSet, mining: str = "paper") -> dict[str, Label]:
  """Each training report's GRU target in stage 2 (see the module docstring); reports without one are
  left out (no GRU loss)."""
  assigned = {}
  for rid, terms in zip(index.ids, index.mesh):
    g = generated.get(rid)
    if g and g in label_set.index and (mining == "paper" or labels_lib.agrees(g, terms)):
      assigned[rid] = g
    elif mining == "agreeing":
      truth = label_set.most_specific(terms) or patterns.most_specific(terms)
      if truth:
        assigned[rid] = truth
  return assigned


def mining_summary(generated: Mapping[str, Label], terms: Mapping[str, Sequence[str]],
                   label_set: labels_lib.LabelSet, min_mined: int) -> dict:
  """What mining found, for the log and ``results/``: how many generated labels agree with their
  reports, how many labels were mined, and a warning when fewer than ``min_mined``."""
  agreeing = sum(1 for rid, seq in generated.items() if seq and labels_lib.agrees(seq, terms[rid]))
  mined_agreeing = sum(1 for rid, seq in generated.items()
                       if seq in label_set.index and labels_lib.agrees(seq, terms[rid]))
  summary = {"generated": len(generated), "agreeing": agreeing,
             "distinct_generated": len({s for s in generated.values() if s}), "mined": len(label_set),
             "mined_cases": sum(1 for seq in generated.values() if seq in label_set.index),
             "mined_cases_agreeing": mined_agreeing}
  if len(label_set) < min_mined:
    summary["warning"] = (
        f"mining yielded {len(label_set)} context-aware labels, fewer than labels.min_mined={min_mined}: "
        f"stage 1 generated labels that agree with only {agreeing} of {len(generated)} training reports. "
        f"Stage 2 falls back on ground-truth labels; the stage-1 model has not learnt to tell the patterns "
        f"apart (see its validation macro-F1).")
  return summary


def mine(config, index: ip.SplitIndex, generated: Mapping[str, Label], patterns: labels_lib.LabelSet):
  """Mining as a whole, from the stage-1 model's generated label of every training report: (stage 2's
  label set, its GRU targets, the summary). With no agreeing label at all, stage 2 learns the stage-1
  patterns instead (and the summary says so)."""
  terms, how = dict(zip(index.ids, index.mesh)), config.labels.mining
  label_set = mine_labels(generated, terms, config.labels.num_mined, patterns, how)
  summary = mining_summary(generated, terms, label_set, config.labels.min_mined)
  summary["mining"] = how
  if not len(label_set):
    label_set = patterns
    summary["warning"] += " No label was mined: stage 2's label set is the stage-1 patterns."
  return label_set, stage2_assigned(index, generated, label_set, patterns, how), summary


def write_mined(directory: epath.Path, label_set: labels_lib.LabelSet, summary: dict) -> None:
  """``mined.json`` (the label set) and ``mined.txt`` (one line a label, with its count)."""
  directory.mkdir(parents=True, exist_ok=True)
  label_set.save(directory / "mined.json")
  (directory / "mined.txt").write_text(
      f"# {len(label_set)} context-aware labels mined ({summary.get('mining', 'agreeing')}) from "
      f"{summary['generated']} training reports, {summary['agreeing']} of whose generated labels agree with "
      f"their MeSH terms (count, label)\n"
      + label_set.describe() + "\n")


# ============================================================================================ carry-over
CLASS_LAYER = ("labeler", "classifier")   # sized by the label set: starts afresh in stage 2


def carry_over(state2, state1, optimizer, mesh):
  """Stage 2's state from stage 1's: every parameter and batch statistic by path, except the head's class
  layer (``CLASS_LAYER``), which starts afresh whatever its shape; a new optimiser state. A parameter that
  exists in both stages with different shapes is an error, not a silent fresh start."""
  def index(tree):
    return {steps.path_names(path): v for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}

  def take(old: dict, path, value):
    names = steps.path_names(path)
    if names[: len(CLASS_LAYER)] == CLASS_LAYER or names not in old:
      fresh.append("/".join(names))
      return value
    if old[names].shape != value.shape:
      raise ValueError(f"Stage 1's {'/'.join(names)} has shape {old[names].shape}, stage 2's {value.shape}.")
    return old[names]

  fresh: list[str] = []
  p1, b1 = index(state1["params"]), index(state1["batch_stats"])
  params = jax.tree_util.tree_map_with_path(lambda p, v: take(p1, p, v), state2["params"])
  batch_stats = jax.tree_util.tree_map_with_path(lambda p, v: take(b1, p, v), state2["batch_stats"])
  logging.info("Stage 2 starts from stage 1's parameters except %s.", fresh)
  new = dict(state2, params=params, batch_stats=batch_stats, opt_state=optimizer.init(params))
  return jax.device_put(new, parallel.replicated(mesh))
