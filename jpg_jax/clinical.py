"""Clinical efficacy (CE): do the generated reports state the findings the images show?

Report-generation papers since R2Gen give, next to BLEU, the precision, recall and F1 of the findings a
report states, read from its text by a labeler (CheXpert's on MIMIC-CXR). On the synthetic data this is
exact: every case's true findings are known (its MeSH terms, through the renderer's own term -> finding
mapping, ``synthetic_findings.findings_from_terms``), and the synthetic reports are written from
templates that ``synthetic_findings.read_findings`` reads back (every reference report of every split,
100%: ``tests/test_clinical.py``). BLEU cannot tell a model that sees findings from one that writes a
good normal report; these scores can.

``scores``: over finding kinds (a case's set of kinds against the kinds its report states), micro and
macro precision / recall / F1, macro over the kinds that occur in the truth; ``strict_*``: a finding
counts only with its side and zone right too (``(kind, side, zone)``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from jpg_jax.datasets import synthetic_findings as sf

# The synthetic datasets whose reports come from the templates that ``read_findings`` reads.
TEMPLATE_DATASETS = ("synthetic_cxr/templates", "synthetic_cxr/tiny")


def applies_to(dataset_name: str) -> bool:
  return dataset_name in TEMPLATE_DATASETS


def true_findings(mesh_terms: Sequence[str]) -> list[sf.Finding]:
  """A case's findings as a report states them (``as_stated``), from its MeSH terms."""
  return [sf.as_stated(f) for f in sf.findings_from_terms(mesh_terms)]


def _prf(tp: int, n_pred: int, n_true: int) -> tuple[float, float, float]:
  p = tp / n_pred if n_pred else 0.0
  r = tp / n_true if n_true else 0.0
  return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def scores(predicted: Sequence[Sequence[sf.Finding]], truth: Sequence[Sequence[sf.Finding]]) -> dict:
  """CE of ``predicted`` (the findings read from each generated report) against ``truth`` (each case's)."""
  if len(predicted) != len(truth):
    raise ValueError(f"Need as many predictions as cases, got {len(predicted)} / {len(truth)}.")
  kinds = sorted(sf.KINDS)
  multi_hot = lambda cases: np.array([[k in {f.kind for f in fs} for k in kinds] for fs in cases],
                                     bool).reshape(-1, len(kinds))
  pred, true = multi_hot(predicted), multi_hot(truth)
  tp = (pred & true).sum(0)
  out = {}
  p, r, f = _prf(int(tp.sum()), int(pred.sum()), int(true.sum()))
  out.update(micro_precision=p, micro_recall=r, micro_f1=f)
  per_kind = {}
  for j, kind in enumerate(kinds):
    kp, kr, kf = _prf(int(tp[j]), int(pred[:, j].sum()), int(true[:, j].sum()))
    per_kind[kind] = {"precision": kp, "recall": kr, "f1": kf, "support": int(true[:, j].sum()),
                      "predicted": int(pred[:, j].sum())}
  present = [v for v in per_kind.values() if v["support"]]
  for name in ("precision", "recall", "f1"):
    out[f"macro_{name}"] = float(np.mean([v[name] for v in present])) if present else 0.0
  where = lambda fs: {(f.kind, f.side, f.zone) for f in fs}
  strict_tp = sum(len(where(p) & where(t)) for p, t in zip(predicted, truth))
  p, r, f = _prf(strict_tp, sum(len(where(p)) for p in predicted), sum(len(where(t)) for t in truth))
  out.update(strict_micro_precision=p, strict_micro_recall=r, strict_micro_f1=f)
  out["per_kind"] = per_kind
  out["cases_with_findings"] = int(true.any(1).sum())
  return out


def report_scores(reports: Sequence[str], mesh_terms: Sequence[Sequence[str]]) -> dict:
  """``scores`` of the findings read from ``reports`` against the cases' MeSH terms."""
  return scores([sf.read_findings(r) for r in reports], [true_findings(m) for m in mesh_terms])
