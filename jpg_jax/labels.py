"""Context-aware disease labels from MeSH terms (JPG Sec. 3.4).

A MeSH major term such as ``Calcified Granuloma/lung/upper lobe/right`` becomes the token sequence
``('calcified_granuloma', 'lung', 'upper_lobe', 'right')``: one token per ``/``-part, lower-cased, inner
spaces joined by ``_`` and punctuation removed (the paper writes labels as ``<opacity lung lower_lobe
bilateral>``). A GRU target keeps at most ``model.label_steps`` (5) tokens, since "the majority of
disease-related MeSH terms contain up to 5 words" and the GRU unrolls 5 steps; matching a label against a
report's terms uses the whole term.

Stage 1 ("mining and pre-training on single labels", following Shin et al. 2016) trains on reports whose
major terms all reduce to ONE simple pattern: the term's first ``pattern_depth`` parts (heading, and by
default the first subheading). The ``num_patterns`` (17) most frequent patterns are kept; the paper says they
retain about 40% of the data. With ``pattern_depth=2`` the 17 patterns keep 45% of R2Gen's train split
(``normal`` alone is 33% of it); ``pattern_depth=1`` keeps more (see tests/test_labels.py).

``LabelSet`` is an ordered set of label sequences (the classes of the classification head: the 17 patterns
in stage 1, the mined labels in stage 2) together with the token vocabulary of the GRU decoder.
"""

from __future__ import annotations

import collections
import json
import logging
import re
from typing import Iterable, Mapping, Sequence

import numpy as np
from etils import epath

from jpg_jax import text

NO_INDEXING = "no indexing"

Label = tuple[str, ...]
NORMAL: Label = ("normal",)

_PUNCT = re.compile(r"[^a-z0-9 ]+")


def _part_to_token(part: str) -> str:
  return "_".join(_PUNCT.sub(" ", part.lower()).split())


def mesh_term_to_tokens(term: str, max_tokens: int | None = None) -> Label:
  """``'Calcified Granuloma/lung/upper lobe/right'`` -> ``('calcified_granuloma', 'lung', 'upper_lobe', 'right')``,
  the first ``max_tokens`` of them where given."""
  tokens = tuple(t for t in (_part_to_token(p) for p in term.split("/")) if t)
  return tokens[:max_tokens]


def is_indexed(terms: Sequence[str]) -> bool:
  """A report has usable MeSH terms: at least one, and not Open-i's ``No Indexing`` placeholder."""
  cleaned = [t.strip().lower() for t in terms if t and t.strip()]
  return bool(cleaned) and any(t != NO_INDEXING for t in cleaned)


def simple_pattern(terms: Sequence[str], depth: int = 2) -> Label | None:
  """The one pattern that every major term reduces to (its first ``depth`` tokens), or None."""
  if not is_indexed(terms):
    return None
  patterns = {mesh_term_to_tokens(t)[:depth] for t in terms if t.strip()}
  return patterns.pop() if len(patterns) == 1 else None


def select_simple_patterns(terms_per_report: Sequence[Sequence[str]], num_patterns: int = 17,
                           depth: int = 2) -> tuple[list[Label], list[int], dict[Label, int]]:
  """Stage 1's data: the ``num_patterns`` most frequent simple patterns and the reports that have one.

  Returns (patterns, indices of the kept reports, counts of the kept patterns). Ties in frequency are
  broken alphabetically so that the selection is deterministic.
  """
  per_report = [simple_pattern(t, depth) for t in terms_per_report]
  counts = collections.Counter(p for p in per_report if p is not None)
  ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:num_patterns]
  patterns = [p for p, _ in ranked]
  keep = set(patterns)
  indices = [i for i, p in enumerate(per_report) if p in keep]
  share = len(indices) / max(len(per_report), 1)
  logging.debug("Stage-1 simple patterns: %d patterns (depth %d) keep %d of %d reports (%.1f%%).",
               len(patterns), depth, len(indices), len(per_report), 100 * share)
  return patterns, indices, dict(ranked)


def _is_prefix(prefix: Label, tokens: Label) -> bool:
  return len(prefix) <= len(tokens) and tokens[: len(prefix)] == prefix


def agrees(label: Label, terms: Sequence[str]) -> bool:
  """A (generated) label agrees with a report's MeSH terms when it is a prefix of one of them: the same
  primary disease (first token), and every context token it names is that term's at the same place.
  ``<calcified_granuloma lung upper_lobe>`` agrees with ``Calcified Granuloma/lung/upper lobe/right``;
  ``<calcified_granuloma lung lower_lobe>`` and ``<opacity lung upper_lobe>`` do not."""
  label = tuple(label)
  return bool(label) and any(_is_prefix(label, mesh_term_to_tokens(t)) for t in terms if t.strip())


class LabelSet:
  """Ordered context-aware labels (classifier classes) and the GRU's token vocabulary.

  A label *matches* a report when its tokens are a prefix of one of the report's term sequences, so the
  stage-1 pattern ``('cardiomegaly',)`` matches ``Cardiomegaly/mild`` and the mined label
  ``('calcified_granuloma', 'lung', 'upper_lobe', 'right')`` matches the full term only.
  """

  def __init__(self, labels: Sequence[Label], counts: Mapping[Label, int] | None = None,
               tokens: Sequence[str] | None = None):
    """``tokens``: the GRU's token vocabulary; by default the tokens of ``labels``. Stage 2 keeps stage
    1's tokens so that the GRU's embedding and output layers carry over."""
    self.labels: list[Label] = [tuple(l) for l in labels]
    if len(set(self.labels)) != len(self.labels):
      raise ValueError("LabelSet labels must be unique.")
    self.counts = {tuple(k): int(v) for k, v in (counts or {}).items()}
    self.index = {l: i for i, l in enumerate(self.labels)}
    self.vocab = text.Vocabulary(sorted(set(tokens or ()) | {t for l in self.labels for t in l}))

  def __len__(self) -> int:
    return len(self.labels)

  def matches(self, terms: Sequence[str]) -> list[int]:
    seqs = [mesh_term_to_tokens(t) for t in terms if t.strip()]
    return [i for i, l in enumerate(self.labels) if any(_is_prefix(l, s) for s in seqs)]

  def multi_hot(self, terms: Sequence[str]) -> np.ndarray:
    """Multi-label targets of the classification head: 1 for every label matching one of the terms."""
    out = np.zeros((len(self),), np.float32)
    out[self.matches(terms)] = 1.0
    return out

  def most_specific(self, terms: Sequence[str]) -> Label | None:
    """The longest label of the set that matches the terms (the first in the set's order among equally
    long ones), or None: a report's ground-truth label in this set."""
    m = self.matches(terms)
    return max((self.labels[i] for i in m), key=len) if m else None

  def encode_sequence(self, label: Label | None, max_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """``[0] + token ids + [0]`` padded to ``max_steps + 1`` (GRU input = ids[:-1], target = ids[1:])."""
    return self.vocab.encode_padded(" ".join(label or ()), max_steps + 1) if label else (
        np.zeros((max_steps + 1,), np.int32), np.zeros((max_steps + 1,), np.float32))

  def decode_sequence(self, ids: Iterable[int]) -> Label:
    return tuple(self.vocab.decode(ids).split())

  @property
  def tokens(self) -> list[str]:
    """The GRU's token vocabulary, in id order (id 0, the start / end token, left out)."""
    return [self.vocab.idx2token[i] for i in range(1, len(self.vocab) + 1)]

  def to_json(self) -> str:
    return json.dumps({"labels": [{"tokens": list(l), "count": self.counts.get(l, 0)}
                                  for l in self.labels], "vocabulary": self.tokens}, indent=1)

  @classmethod
  def from_json(cls, s: str) -> "LabelSet":
    entries = json.loads(s)["labels"]
    return cls([tuple(e["tokens"]) for e in entries],
               {tuple(e["tokens"]): e["count"] for e in entries}, json.loads(s).get("vocabulary"))

  def save(self, path) -> None:
    epath.Path(path).write_text(self.to_json())

  @classmethod
  def load(cls, path) -> "LabelSet":
    return cls.from_json(epath.Path(path).read_text())

  def describe(self) -> str:
    """One line a label, most frequent first: ``count  <tokens>``."""
    return "\n".join(f"{self.counts.get(l, 0):>6}  <{' '.join(l)}>" for l in self.labels)

  def __eq__(self, other) -> bool:
    return (isinstance(other, LabelSet) and self.labels == other.labels
            and self.vocab == other.vocab)
