"""Report generation's evaluator (stage 2's validation, the test): beam search over a split, the
coco-caption metrics (Sec. 4.2), what the model writes (distinct reports, mean length), and, with a
labeler, the head's label F1 against the reports' own terms."""

from __future__ import annotations

import jax
import numpy as np

from jpg_jax import evaluate as evaluate_lib
from jpg_jax import input_pipeline as ip
from jpg_jax import labels as labels_lib
from jpg_jax import mining
from jpg_jax import steps
from jpg_jax.evaluators import common
from jpg_jax.evaluators import labels as label_eval
from jpg_jax.models import jpg as jpg_lib

# What ``ReportEvaluator.run`` returns (METEOR only with ``with_meteor``, label F1 only with a labeler):
# stage 2's selection metric is one.
METRICS = evaluate_lib.CAPTION_KEYS + ("distinct_reports", "mean_length", "label_micro_f1", "label_macro_f1")


def report_predictor(config, model: jpg_lib.JPG):
  """The jitted test-time function ``(variables, batch) -> dict`` of ``model``: beam search
  (``train.beam_size``, ``decode.policy``) and, with a labeler, the head's logits and the GRU's label."""
  def predict_reports(variables, batch):
    return steps.predict_reports(variables, batch["images"], model=model, beam=config.train.beam_size,
                                 max_len=config.dataset.max_seq_length, policy=config.decode.policy)
  return jax.jit(predict_reports)


class ReportEvaluator:
  """Decodes ``split`` and scores it. ``predict``: a ``report_predictor`` to share (the validation's and
  the test's evaluators compile one program between them); built here when not given.

  ``run(variables)``: the metrics (without the per-label breakdown), for validation.
  ``run_with_reports(variables)``: (all metrics, one row a report: id, reference, prediction, its own
  scores and, with a labeler, true, predicted and generated labels), for the test.
  """

  def __init__(self, config, model: jpg_lib.JPG, data: ip.Data, split: str,
               label_set: labels_lib.LabelSet | None, mesh, *, with_meteor: bool = False, predict=None):
    self.config, self.data, self.split, self.label_set = config, data, split, label_set
    self.with_meteor = with_meteor
    self.predict = predict if predict is not None else report_predictor(config, model)
    targets = mining.targets(config, data.vocab, label_set)
    self._predictions = common.SplitPredictions(self.predict, config, data, split, targets, mesh)

  def run(self, variables) -> dict:
    metrics, _ = self.run_with_reports(variables)
    metrics.pop("label_per_label", None)
    return metrics

  def run_with_reports(self, variables) -> tuple[dict, list[dict]]:
    out = self._predictions(variables)
    index, vocab, label_set = self._predictions.index, self.data.vocab, self.label_set
    predictions = [vocab.decode(t) for t in out["tokens"]]
    references = [vocab.reference(index.reports[i], self.config.dataset.max_seq_length) for i in out["index"]]
    scores, each = evaluate_lib.caption_scores(references, predictions, self.with_meteor, per_report=True)
    metrics = dict(scores, **evaluate_lib.output_statistics(predictions))
    truth = None
    if label_set is not None and "label_class_logits" in out:
      truth = np.stack([label_set.multi_hot(index.mesh[i]) for i in out["index"]])
      f1 = label_eval.label_f1(out["label_class_logits"], truth, label_set)
      metrics.update(label_micro_f1=f1.micro_f1, label_macro_f1=f1.macro_f1, label_per_label=f1.per_label)
    rows = []
    for k, i in enumerate(out["index"]):
      row = {"id": index.ids[i], "reference": references[k], "prediction": predictions[k],
             "scores": {name: each[name][k] for name in each}}
      if truth is not None:
        row["true_labels"] = [" ".join(label_set.labels[j]) for j in np.flatnonzero(truth[k])]
        row["predicted_labels"] = [" ".join(label_set.labels[j])
                                   for j in np.flatnonzero(out["label_class_logits"][k] > 0)]
        row["generated_label"] = " ".join(label_set.decode_sequence(out["label_tokens"][k]))
      rows.append(row)
    return metrics, rows
