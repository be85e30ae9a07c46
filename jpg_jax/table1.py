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


# Table 1 of the paper (IU X-Ray, Li et al.'s 70/10/20): images, reports, patients, average length.
PAPER_TABLE1 = {"train": SplitStats("train", 5_226, 2_770, 2_770, 37.56),
                "val": SplitStats("val", 748, 395, 395, 36.78),
                "test": SplitStats("test", 1_496, 790, 790, 33.62)}
PAPER_TABLE1_NOTE = (
    "The paper's Table 1 is 70/10/20 of all 3,955 reports and 7,470 images of the archive, though Sec. 4.1\n"
    "excludes reports without FINDINGS or MeSH; the rows above are Sec. 4.1's selection.")


def format_table(dataset: str, rows: list[SplitStats], reference: dict[str, SplitStats] | None = None) -> str:
  """Table 1 as text; with ``reference`` (the paper's rows by split), each split's paper row under it."""
  head = f"{'DATASET ' + dataset:<32}{'IMAGE':>8}{'REPORT':>8}{'PATIENT':>9}{'AVG. LEN.':>11}"
  lines = [head, "-" * len(head)]
  line = lambda name, r: f"{name:<32}{r.images:>8,}{r.reports:>8,}{r.patients:>9,}{r.avg_len:>11.2f}"
  for r in rows:
    lines.append(line(r.split.upper(), r))
    if reference and r.split in reference:
      lines.append(line("  the paper's Table 1", reference[r.split]))
  return "\n".join(lines)
