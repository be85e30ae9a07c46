"""Table 1 of the paper: images, reports, patients and average report length per split."""

from __future__ import annotations

import dataclasses

from jpg_jax import text
from jpg_jax.datasets import common


@dataclasses.dataclass(frozen=True)
class SplitStats:
  split: str
  images: int
  reports: int
  patients: int
  avg_len: float   # words per report after R2Gen's cleaning, sentence marks not counted


def split_stats(split: str, split_index, num_views: int = len(common.VIEWS)) -> SplitStats:
  """One row of Table 1. A row counts examples as reports and ``num_views`` images each: for MIMIC-CXR in
  R2Gen's annotation an example is one image, so there REPORT counts images, not studies."""
  n = len(split_index)
  words = sum(text.count_words(r) for r in split_index.reports)
  return SplitStats(split, images=num_views * n, reports=n,
                    patients=len(set(split_index.patient_ids)), avg_len=words / max(n, 1))


def format_table(dataset: str, rows: list[SplitStats]) -> str:
  head = f"{'DATASET ' + dataset:<32}{'IMAGE':>8}{'REPORT':>8}{'PATIENT':>9}{'AVG. LEN.':>11}"
  lines = [head, "-" * len(head)]
  for r in rows:
    lines.append(f"{r.split.upper():<32}{r.images:>8,}{r.reports:>8,}{r.patients:>9,}{r.avg_len:>11.2f}")
  return "\n".join(lines)
