"""Report cleaning and the report vocabulary, exactly as R2Gen (Chen et al., 2020) builds them.

JPG (Sec. 4.1) preprocesses reports "by tokenizing, converting tokens into lower cases, and removing
non-alphabetic tokens" following Li et al. (2018). The numbers JPG compares with (Table 2: R2Gen, CMN) were
produced by R2Gen's tokenizer, so this module reproduces that tokenizer to the character:

* ``clean_report_iu_xray`` is R2Gen's ``Tokenizer.clean_report_iu_xray``. One detail differs from a
  natural reading of it: R2Gen filters sentences with ``if sent_cleaner(sent) != []``, which compares a
  string with a list and is therefore always true, so EMPTY SENTENCES ARE KEPT (``"a .  . b ."``). We keep
  them too; ``drop_empty_sentences=True`` gives the cleaner reading.
* ``clean_report_mimic_cxr`` is R2Gen's ``Tokenizer.clean_report_mimic_cxr``: newlines become spaces, the
  anonymisation marks ``___`` shrink (``'__' -> '_'`` seven times; the sentence cleaner then removes ``_``),
  double spaces six times, ``'..'`` eight times, then the IU X-Ray rules. Each ``replace`` is applied the
  number of times R2Gen applies it, not to a fixed point: ``'_' * 200`` keeps more than one ``_`` before
  the sentence cleaner, as in R2Gen. ``clean_report(report, 'iu_xray' | 'mimic_cxr')`` chooses one as
  R2Gen's ``Tokenizer`` does by ``dataset_name`` (``jpg_jax.datasets.report_cleaning`` names a dataset's).
* ``Vocabulary`` holds the tokens of the train split that occur at least ``threshold`` (3) times, plus
  ``<unk>``, sorted, with ids from 1. Id 0 is BOS, EOS and PAD at once, so models need ``len(vocab) + 1``
  logits. On R2Gen's IU X-Ray split ``len(vocab) == 760``.
"""

from __future__ import annotations

import collections
import json
import re
from typing import Iterable, Sequence

import numpy as np
from etils import epath

UNK = "<unk>"
BOS_ID = EOS_ID = PAD_ID = 0

# Note the range ':-\[' inside the class: it removes ; < = > ? @ (and A-Z, gone after lower()) as well.
_SENTENCE_STRIP = re.compile(r"[.,?;*!%^&_+():-\[\]{}]")


def _replace(t: str, old: str, new: str, times: int) -> str:
  for _ in range(times):
    t = t.replace(old, new)
  return t


def _split_sentences(report: str, dots: int = 3) -> list[str]:
  t = _replace(report, "..", ".", dots).replace("1. ", "")
  for k in "2345":
    t = t.replace(f". {k}. ", ". ")
  for k in "2345":
    t = t.replace(f" {k}. ", ". ")
  return t.strip().lower().split(". ")


def _clean_sentence(sentence: str) -> str:
  s = sentence.replace('"', "").replace("/", "").replace("\\", "").replace("'", "")
  return _SENTENCE_STRIP.sub("", s.strip().lower())


def clean_report_iu_xray(report: str, drop_empty_sentences: bool = False) -> str:
  """R2Gen's IU X-Ray report cleaning: lower-cased sentences joined by ' . ', ending with ' .'."""
  sentences = [_clean_sentence(s) for s in _split_sentences(report)]
  if drop_empty_sentences:
    sentences = [s for s in sentences if s]
  return " . ".join(sentences) + " ."


def clean_report_mimic_cxr(report: str, drop_empty_sentences: bool = False) -> str:
  """R2Gen's MIMIC-CXR report cleaning: newlines, runs of ``_`` and of spaces collapsed, then as IU X-Ray."""
  t = _replace(_replace(report.replace("\n", " "), "__", "_", 7), "  ", " ", 6)
  sentences = [_clean_sentence(s) for s in _split_sentences(t, dots=8)]
  if drop_empty_sentences:
    sentences = [s for s in sentences if s]
  return " . ".join(sentences) + " ."


CLEANERS = {"iu_xray": clean_report_iu_xray, "mimic_cxr": clean_report_mimic_cxr}


def clean_report(report: str, cleaning: str = "iu_xray") -> str:
  """``report`` cleaned by R2Gen's rules for ``cleaning`` ('iu_xray' or 'mimic_cxr')."""
  try:
    return CLEANERS[cleaning](report)
  except KeyError:
    raise ValueError(f"Unknown report cleaning {cleaning!r}; choose from {tuple(CLEANERS)}.") from None


def count_words(cleaned_report: str) -> int:
  """Words of a cleaned report: its whitespace tokens without the sentence marks '.' (Table 1's length)."""
  return sum(1 for t in cleaned_report.split() if t != ".")


class Vocabulary:
  """Token <-> id mapping with R2Gen's conventions (id 0 = BOS = EOS = PAD; ids of tokens start at 1)."""

  def __init__(self, tokens: Sequence[str]):
    tokens = sorted(set(tokens) | {UNK})
    self.idx2token = {i + 1: t for i, t in enumerate(tokens)}
    self.token2idx = {t: i for i, t in self.idx2token.items()}

  @classmethod
  def build(cls, cleaned_reports: Iterable[str], threshold: int = 3) -> "Vocabulary":
    """From the CLEANED reports of the train split: tokens seen at least ``threshold`` times, plus <unk>."""
    counter = collections.Counter(t for r in cleaned_reports for t in r.split())
    return cls([t for t, c in counter.items() if c >= threshold])

  def __len__(self) -> int:
    """Number of tokens including <unk>, excluding the shared BOS/EOS/PAD id 0 (R2Gen's len(tokenizer))."""
    return len(self.idx2token)

  @property
  def num_logits(self) -> int:
    """Size of the output layer: every token plus id 0."""
    return len(self) + 1

  def encode(self, cleaned_report: str, max_length: int | None = None) -> list[int]:
    """``[0] + ids + [0]``, truncated to ``max_length`` (R2Gen: long reports lose their EOS)."""
    unk = self.token2idx[UNK]
    ids = [BOS_ID] + [self.token2idx.get(t, unk) for t in cleaned_report.split()] + [EOS_ID]
    return ids[:max_length] if max_length else ids

  def encode_padded(self, cleaned_report: str, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-shape ``(ids, mask)`` of length ``max_length``; mask is 1 on BOS, tokens and EOS."""
    ids = self.encode(cleaned_report, max_length)
    out = np.zeros((max_length,), np.int32)
    mask = np.zeros((max_length,), np.float32)
    out[: len(ids)] = ids
    mask[: len(ids)] = 1.0
    return out, mask

  def reference(self, cleaned_report: str, max_length: int) -> str:
    """What a report is scored against: its ids decoded back (truncated, ``<unk>`` for rare words), as
    R2Gen scores its references."""
    return self.decode(self.encode_padded(cleaned_report, max_length)[0][1:])

  def decode(self, ids: Iterable[int]) -> str:
    """R2Gen's decode: tokens up to the first 0 (BOS/EOS), joined by spaces."""
    words = []
    for i in ids:
      i = int(i)
      if i == EOS_ID:
        break
      words.append(self.idx2token.get(i, UNK))
    return " ".join(words)

  def to_json(self) -> str:
    return json.dumps({"tokens": [self.idx2token[i] for i in range(1, len(self) + 1)]}, indent=0)

  @classmethod
  def from_json(cls, text: str) -> "Vocabulary":
    return cls(json.loads(text)["tokens"])

  def save(self, path) -> None:
    epath.Path(path).write_text(self.to_json())

  @classmethod
  def load(cls, path) -> "Vocabulary":
    return cls.from_json(epath.Path(path).read_text())

  def __eq__(self, other) -> bool:
    return isinstance(other, Vocabulary) and self.idx2token == other.idx2token
