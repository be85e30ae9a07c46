"""Stage 1's evaluator: the labeler's head and GRU on the simple patterns (Sec. 3.4), and the generated
labels that mining reads."""

from __future__ import annotations

import functools

import jax
import numpy as np

from jpg_jax import evaluate as evaluate_lib
from jpg_jax import input_pipeline as ip
from jpg_jax import labels as labels_lib
from jpg_jax import mining
from jpg_jax import steps
from jpg_jax.evaluators import common
from jpg_jax.models import jpg as jpg_lib

# What ``LabelEvaluator.run`` returns (besides recall per pattern): stage 1's selection metric is one.
METRICS = ("label_log_likelihood", "label_accuracy", "label_micro_f1", "label_macro_f1", "pattern_macro_f1",
           "pattern_micro_f1")


def label_names(label_set: labels_lib.LabelSet) -> list[str]:
  """``<token token>`` per label of the set, as the metrics name them."""
  return ["<" + " ".join(l) + ">" for l in label_set.labels]


def label_f1(pred_logits: np.ndarray, truth: np.ndarray, label_set) -> evaluate_lib.LabelScores:
  """The head's scores: a label is predicted where its logit is positive."""
  return evaluate_lib.label_scores(truth > 0, pred_logits > 0, label_names(label_set))


def pattern_one_hot(generated: tuple, patterns: labels_lib.LabelSet) -> np.ndarray:
  """The pattern a generated stage-1 label names: the longest pattern that is a prefix of it."""
  out = np.zeros((len(patterns),), np.float32)
  match = [i for i, p in enumerate(patterns.labels) if generated[: len(p)] == p]
  if match:
    out[max(match, key=lambda i: len(patterns.labels[i]))] = 1.0
  return out


class LabelEvaluator:
  """Stage 1's validation, and its labels for mining, with one compiled function (``steps.score_labels``:
  generated labels, class logits, teacher-forced label NLL).

  ``run(variables[, split])``: the label log-likelihood, sequence accuracy, the head's micro- and macro-F1,
  and the GRU's pattern (the longest pattern its generated label starts with) micro- and macro-F1 and recall
  per pattern, over the reports of ``split`` (validation by default) that have a stage-1 pattern.
  ``generate(variables, split)``: the generated label of every report of a split (mining: ``train``).
  """

  def __init__(self, config, model: jpg_lib.JPG, data: ip.Data, patterns: labels_lib.LabelSet, mesh,
               split: str = "val"):
    self.config, self.data, self.patterns, self.mesh = config, data, patterns, mesh
    self.predict = jax.jit(functools.partial(steps.score_labels, model=model, beam=config.labels.mining_beam))
    self.split = split
    self._predictions = self._over(split)

  def _over(self, split: str) -> common.SplitPredictions:
    assigned = mining.stage1_assigned(self.config, self.data.index[split], self.patterns)
    targets = mining.targets(self.config, self.data.vocab, self.patterns, assigned)
    return common.SplitPredictions(self.predict, self.config, self.data, split, targets, self.mesh)

  def run(self, variables, split: str | None = None) -> dict:
    predictions = self._predictions if split in (None, self.split) else self._over(split)
    out = predictions(variables)
    index, patterns = predictions.index, self.patterns
    assigned = predictions.targets.assigned
    truth = np.stack([patterns.multi_hot(index.mesh[i]) for i in out["index"]])
    target = [assigned.get(index.ids[i]) for i in out["index"]]
    generated = [patterns.decode_sequence(tok) for tok in out["label_tokens"]]
    hits = [g == t for g, t in zip(generated, target) if t]
    head = label_f1(out["label_class_logits"], truth, patterns)
    has = np.array([t is not None for t in target])
    named = np.stack([pattern_one_hot(g, patterns) for g in generated])
    gru = evaluate_lib.label_scores(truth[has], named[has], label_names(patterns))
    metrics = {"label_log_likelihood": -float(out["label_nll"].sum() / max(out["label_count"].sum(), 1)),
               "label_accuracy": float(np.mean(hits)) if hits else 0.0,
               "label_micro_f1": head.micro_f1, "label_macro_f1": head.macro_f1,
               "pattern_macro_f1": gru.macro_f1, "pattern_micro_f1": gru.micro_f1}
    metrics.update({"recall/" + "-".join(label): gru.per_label[name]["recall"]   # TensorBoard-legal names
                    for label, name in zip(patterns.labels, label_names(patterns))
                    if gru.per_label[name]["support"]})
    return metrics

  def generate(self, variables, split: str = "train") -> dict[str, labels_lib.Label]:
    """Report id -> the label the model generates for it, for every report of ``split``."""
    predictions = self._over(split)
    out = predictions(variables)
    return {predictions.index.ids[i]: self.patterns.decode_sequence(tok)
            for i, tok in zip(out["index"], out["label_tokens"])}
