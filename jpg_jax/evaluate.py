"""Evaluation: coco-caption metrics as R2Gen computes them, disease-label F1, and significance tests.

``caption_scores`` runs pycocoevalcap's ``Bleu(4)``, ``Meteor()`` and ``Rouge()`` exactly as R2Gen's
``compute_scores`` does: no PTB tokenizer, one reference per report, keys ``BLEU_1..4``, ``METEOR``,
``ROUGE_L``. R2Gen's references are the decoded ids of the cleaned reports (``vocab.decode(ids[1:])``):
truncated to the 60-id window and with ``<unk>`` for rare words; the train loop scores against those. METEOR runs the jar that ships in the pycocoevalcap wheel
(Java needed). SPICE is not used (it downloads models at run time).
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import dataclasses
import functools
import io
from typing import Sequence

import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.rouge.rouge import Rouge

CAPTION_KEYS = ("BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "METEOR", "ROUGE_L")


@functools.lru_cache(maxsize=1)
def _meteor():
  """One METEOR scorer (a Java subprocess) per process: starting the JVM costs seconds."""
  from pycocoevalcap.meteor.meteor import Meteor
  meteor = Meteor()
  atexit.register(lambda: meteor.meteor_p.kill())   # no JVM outlives the process
  return meteor


def _scorers(with_meteor: bool):
  out = [(Bleu(4), ["BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4"]), (Rouge(), "ROUGE_L")]
  if with_meteor:
    out.insert(1, (_meteor(), "METEOR"))
  return out


def caption_scores(references: Sequence[str], predictions: Sequence[str], with_meteor: bool = True,
                   per_report: bool = False):
  """Corpus scores (a dict over ``CAPTION_KEYS``); with ``per_report``, also each report's scores.

  ``references`` and ``predictions`` are cleaned strings (``text.clean_report_iu_xray`` / decoded ids).
  """
  if len(references) != len(predictions) or not references:
    raise ValueError(f"Need as many predictions as references, got {len(predictions)} / {len(references)}.")
  gts = {i: [r] for i, r in enumerate(references)}
  res = {i: [p] for i, p in enumerate(predictions)}
  scores, per = {}, {}
  for scorer, names in _scorers(with_meteor):
    with contextlib.redirect_stdout(io.StringIO()):   # Bleu prints its n-gram counts
      score, each = scorer.compute_score(gts, res)
    if isinstance(names, list):
      for name, s, e in zip(names, score, each):
        scores[name], per[name] = float(s), [float(x) for x in e]
    else:
      scores[names], per[names] = float(score), [float(x) for x in each]
  return (scores, per) if per_report else scores


def output_statistics(predictions: Sequence[str]) -> dict:
  """What a model writes: distinct reports, mean length in tokens, share of empty reports. A model that
  writes one report for every image has learnt nothing, whatever its BLEU."""
  lengths = [len(p.split()) for p in predictions]
  return {"distinct_reports": len(set(predictions)),
          "mean_length": float(np.mean(lengths)) if lengths else 0.0,
          "empty_share": float(np.mean([n == 0 for n in lengths])) if lengths else 0.0}


# ------------------------------------------------------------------------------------------ labels
@dataclasses.dataclass(frozen=True)
class LabelScores:
  micro_f1: float
  micro_precision: float
  micro_recall: float
  per_label: dict   # label -> {"precision", "recall", "f1", "support"}
  macro_f1: float = 0.0   # mean F1 over the labels with support (a constant predictor scores ~1/K)


def _prf(tp, fp, fn):
  p = tp / (tp + fp) if tp + fp else 0.0
  r = tp / (tp + fn) if tp + fn else 0.0
  return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def label_scores(truth: np.ndarray, predicted: np.ndarray, names: Sequence[str]) -> LabelScores:
  """Micro-averaged (Sec. 4.3), macro-averaged and per-label precision / recall / F1 of multi-hot (N, K)
  arrays."""
  truth, predicted = np.asarray(truth, bool), np.asarray(predicted, bool)
  tp = (truth & predicted).sum(0)
  fp = (~truth & predicted).sum(0)
  fn = (truth & ~predicted).sum(0)
  p, r, f = _prf(int(tp.sum()), int(fp.sum()), int(fn.sum()))
  per = {}
  for k, name in enumerate(names):
    pk, rk, fk = _prf(int(tp[k]), int(fp[k]), int(fn[k]))
    per[name] = {"precision": pk, "recall": rk, "f1": fk, "support": int(truth[:, k].sum())}
  supported = [v["f1"] for v in per.values() if v["support"]]
  return LabelScores(f, p, r, per, float(np.mean(supported)) if supported else 0.0)


# ------------------------------------------------------------------------------------------ significance
def paired_t_test(a: Sequence[float], b: Sequence[float]) -> dict:
  """Paired two-sided t-test of per-report scores of two runs on the same reports (Table 2's dagger)."""
  from scipy import stats
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape:
    raise ValueError("Paired scores must cover the same reports.")
  t, p = stats.ttest_rel(a, b)
  return {"t": float(t), "p": float(p), "mean_difference": float((a - b).mean()), "n": int(a.size)}


def most_frequent_report(train_reports: Sequence[str]) -> str:
  """The "most frequent training report" baseline: the cleaned train report seen most often."""
  counts = collections.Counter(train_reports)
  return max(counts.items(), key=lambda kv: (kv[1], -len(kv[0]), kv[0]))[0]


def baseline_scores(train_reports: Sequence[str], references: Sequence[str], with_meteor: bool = True
                    ) -> dict:
  prediction = most_frequent_report(train_reports)
  return caption_scores(references, [prediction] * len(references), with_meteor)

