"""A rule-based findings labeler for chest X-ray reports: CheXpert's 14 labels, in the NegEx tradition.

CheXpert (Irvin et al., AAAI 2019) labels a report with 13 observations and "No Finding", each positive,
negative or uncertain. The clinical-efficacy (CE) scores of report generation (R2Gen's and CMN's
MIMIC-CXR tables) compare the positive observations of a generated report with those of its reference.
This labeler is written from the observations' definitions, not from another labeler's lists:

1. Text -> sentences (nltk's Punkt sentence splitter with its default parameters: no downloaded model)
   -> lower-case word tokens (nltk's ``RegexpTokenizer``).
2. Mentions: per observation, phrases (regular expressions over the space-joined tokens) naming it
   (``MENTIONS``), with phrases that look like a mention but are not one (``NOT_MENTIONS``: a calcified
   nodule is a granuloma, not a lung lesion; a pericardial effusion is not a pleural one).
3. Each mention is negative when a negation cue (``no``, ``without``, ``negative for``, ``free of``,
   ``resolved`` ...) opens a scope that reaches it, and uncertain when an uncertainty cue (``may``,
   ``possible``, ``cannot be excluded``, ``versus`` ...) does. A cue before the mention reaches forward to
   the end of its clause (``but``, ``however``, ``which``, ``;``, ``, there`` ... end it), so that
   ``no focal consolidation, pleural effusion or pneumothorax`` negates all three; a cue after it
   (``... has resolved``, ``... cannot be excluded``) reaches back within a few words.
4. A report's observation is positive if any mention is positive, else uncertain if any is uncertain,
   else negative if mentioned, else absent. "No Finding" is positive when no observation but Support
   Devices is positive or uncertain (CheXpert's rule).

``label_report`` returns ``{observation: 1 | 0 | -1}`` (positive, negative, uncertain; absent ones are
left out). ``MESH_TO_OBSERVATION`` maps IU X-Ray's MeSH major terms to the same observations, the human
annotation the labeler is checked against (``python -m jpg_jax.tools.findings_agreement``).
"""

from __future__ import annotations

import functools
import hashlib
import re
from typing import Iterable, Mapping, Sequence

import numpy as np

from jpg_jax import evaluate

OBSERVATIONS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion", "Lung Opacity",
                "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
                "Pleural Other", "Fracture", "Support Devices")
POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1

_SIZE = r"(?:(?:mildly|moderately|markedly|severely|slightly|minimally|significantly|massively|top normal to|at least) )?"
MENTIONS: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": (
        r"(?:cardio)?mediastin\w* (?:\w+ ){0,3}?(?:is |are |appears |remains )?" + _SIZE
        + r"(?:widen\w*|enlarg\w*|prominen\w*)",
        r"(?:widen\w*|enlarg\w*|prominen\w*) (?:of the )?(?:cardio)?mediastin\w*",
        r"mediastinal (?:widening|enlargement|prominence|shift)",
    ),
    "Cardiomegaly": (
        r"cardiomegaly",
        r"(?:heart|cardiac) (?:\w+ ){0,3}?(?:is |are |appears |remains )?" + _SIZE
        + r"(?:enlarg\w*|increased|large)",
        r"enlarg\w* (?:of the )?(?:heart|cardiac)",
        r"enlarged (?:heart|cardiac)",
    ),
    "Lung Lesion": (
        r"nodul\w*", r"mass(?:es)?", r"lesions?", r"tumou?rs?", r"neoplas\w*", r"carcinoma\w*",
        r"malignan\w*", r"metasta\w*", r"cavitary", r"cavitation",
    ),
    "Lung Opacity": (
        r"opacit\w*", r"opacifi\w*", r"infiltrat\w*", r"air ?space (?:disease|process)",
        r"densit(?:y|ies)", r"haz(?:e|iness|y)", r"interstitial (?:markings|prominence|disease|changes|pattern)",
        r"reticular\w*", r"fibros\w*", r"fibrotic",
    ),
    "Edema": (
        r"edema", r"(?:vascular|venous|pulmonary|interstitial) congestion", r"congestive", r"chf",
        r"heart failure", r"cephalization", r"kerley", r"engorge\w*",
        r"vascular\w* (?:\w+ )?(?:prominence|engorgement|indistinctness|redistribution)",
        r"(?:prominen\w*|indistinct\w*|increased) (?:of )?(?:the )?(?:\w+ ){0,2}?(?:vascularity|vasculature|vascular markings)",
    ),
    "Consolidation": (r"consolidat\w*",),
    "Pneumonia": (r"pneumonia\w*", r"bronchopneumonia", r"infections?", r"infectious"),
    "Atelectasis": (r"atelecta\w*", r"collapse[ds]?", r"volume loss"),
    "Pneumothorax": (r"pneumothora\w*", r"hydropneumothora\w*"),
    "Pleural Effusion": (
        r"effusions?", r"pleural fluid", r"hydropneumothora\w*", r"hydrothora\w*",
        r"blunt\w* (?:of )?(?:the )?(?:\w+ ){0,2}?costophrenic", r"costophrenic (?:\w+ ){0,2}?blunt\w*",
    ),
    "Pleural Other": (
        r"pleural (?:\w+ )?(?:thickening|scar\w*|plaques?|calcifi\w*|reaction)",
        r"(?:thickening|scar\w*|plaques?|calcifi\w*) (?:of )?(?:the )?(?:\w+ )?pleura\w*",
        r"pleuroparenchymal", r"pleural-parenchymal", r"fibrothorax",
    ),
    "Fracture": (r"fractur\w*",),
    "Support Devices": (
        r"catheters?", r"(?:picc|central|venous|midline|arterial) lines?", r"tubes?", r"pacemakers?",
        r"pacers?", r"defibrillators?", r"aicd", r"icd", r"port-?a-?cath", r"(?:power|chest) ports?",
        r"stents?", r"devices?", r"clips?", r"wires?", r"(?:valve|valvular) prosthe\w*", r"valve replacement",
        r"hardware", r"(?:pacer|pacemaker|cardiac|aicd|icd) leads?",
    ),
}
NOT_MENTIONS: dict[str, tuple[str, ...]] = {
    "Lung Lesion": (r"calcified (?:\w+ ){0,2}?nodul\w*", r"granuloma\w*", r"nipple", r"soft tissue mass",
                    r"(?:bony|bone|osseous|lytic|sclerotic|blastic|expansile|rib|skeletal) lesions?"),
    "Lung Opacity": (r"bone densit\w*", r"osseous densit\w*", r"breast (?:tissue )?densit\w*",
                     r"nipple", r"soft tissue densit\w*"),
    "Pleural Effusion": (r"pericardial effusion\w*",),
    "Support Devices": (r"tube[sr]culo\w*", r"endotracheal intubation"),
    "Pneumonia": (r"infection ?(?:control|precautions)", r"granulomatous (?:\w+ )?infection\w*",
                  r"(?:prior|old|previous|remote|healed|chronic) (?:\w+ ){0,2}?infection\w*"),
}

NEGATION_BEFORE = (
    r"no", r"not", r"without", r"negative for", r"free of", r"clear of", r"absence of", r"absent",
    r"resolution of", r"resolved", r"removal of", r"rather than", r"nor", r"never",
    r"(?:no|without) (?:\w+ ){0,2}?evidence (?:of|for)", r"ruled out", r"rule out",
)
NEGATION_AFTER = (
    r"(?:has |have |had )?(?:been )?resolved", r"(?:has |have |had )?(?:been )?removed", r"(?:is |are )?absent",
    r"(?:is |are |was |were )?not (?:seen|identified|present|visualized|demonstrated|evident|appreciated)",
    r"(?:is |are )?no longer (?:seen|present|visualized|identified|evident)",
    r"(?:has |have )?cleared", r"(?:is |are )?(?:excluded|ruled out)",
)
# Read before negation: "cannot exclude" holds a negation word but says "possible".
UNCERTAIN_FIRST = (
    r"(?:can ?not|can not|could not|cannot) (?:be )?(?:exclude\w*|rule\w* out|ruled out)",
    r"not (?:be )?(?:entirely )?(?:excluded|ruled out)",
)
UNCERTAIN_BEFORE = (
    r"may", r"might", r"could", r"possible", r"possibly", r"probable", r"probably", r"questionable",
    r"question of", r"suspicious for", r"suspected", r"suggest\w*", r"concern(?:ing)? for", r"likely",
    r"versus", r"vs", r"or", r"cannot (?:be )?(?:exclude|excluded|rule out|ruled out)", r"borderline",
    r"differential", r"worrisome for", r"consider\w*", r"equivocal", r"indeterminate", r"vague",
    r"(?:can|could) represent", r"compatible with", r"consistent with", r"perhaps", r"would",
)
UNCERTAIN_AFTER = (
    r"(?:can ?not|could not|cannot) (?:be )?(?:excluded|ruled out)", r"(?:is |are )?not excluded",
    r"(?:is |are )?(?:not )?(?:entirely )?excluded", r"(?:is |are )?(?:a )?(?:possibility|consideration)",
    r"versus", r"vs", r"(?:is |are )?(?:possible|questionable|suspected|likely)",
)
# Words and marks that end a cue's clause (the scope of a negation or uncertainty cue before a mention).
SCOPE_END = (r"but", r"however", r"although", r"though", r"which", r"whereas", r"while", r"yet", r"except",
             r"aside from", r"apart from", r"otherwise", r"since", r"because", r";", r":", r", there",
             r", with", r", and", r"and the", r"and there", r"there is", r"there are", r"with")
AFTER_WINDOW = 4   # words between a mention and a cue that follows it

_TOKENS = r"[a-z0-9]+(?:-[a-z0-9]+)*|[^\sa-z0-9]"

# A digest of the phrase and cue tables: datasets whose labels this labeler wrote (``mimic_cxr``) record it,
# so that a dataset built by an earlier labeler is recognised (``input_pipeline.load_data`` warns).
LABELER_VERSION = hashlib.sha256(repr((MENTIONS, NOT_MENTIONS, NEGATION_BEFORE, NEGATION_AFTER, UNCERTAIN_FIRST,
                                       UNCERTAIN_BEFORE, UNCERTAIN_AFTER, SCOPE_END, AFTER_WINDOW,
                                       _TOKENS)).encode()).hexdigest()[:12]

MESH_TO_OBSERVATION: tuple[tuple[str, str], ...] = (
    # (MeSH major term prefix, lower-case, matched against the '/'-joined term; observation)
    ("normal", "No Finding"),
    ("mediastinum/enlarged", "Enlarged Cardiomediastinum"),
    ("mediastinum/prominent", "Enlarged Cardiomediastinum"),
    ("mediastinum/widened", "Enlarged Cardiomediastinum"),
    ("shift/mediastinum", "Enlarged Cardiomediastinum"),
    ("cardiomegaly", "Cardiomegaly"),
    ("cardiac shadow/enlarged", "Cardiomegaly"),
    ("heart/enlarged", "Cardiomegaly"),
    ("nodule", "Lung Lesion"),
    ("mass", "Lung Lesion"),
    ("cavitation", "Lung Lesion"),
    ("opacity", "Lung Opacity"),
    ("density/lung", "Lung Opacity"),
    ("density/retrocardiac", "Lung Opacity"),
    ("airspace disease", "Lung Opacity"),
    ("infiltrate", "Lung Opacity"),
    ("lung diseases, interstitial", "Lung Opacity"),
    ("markings/lung/interstitial", "Lung Opacity"),
    ("pulmonary fibrosis", "Lung Opacity"),
    ("pulmonary edema", "Edema"),
    ("pulmonary congestion", "Edema"),
    ("heart failure", "Edema"),
    ("consolidation", "Consolidation"),
    ("pneumonia", "Pneumonia"),
    ("pulmonary atelectasis", "Atelectasis"),
    ("volume loss", "Atelectasis"),
    ("pneumothorax", "Pneumothorax"),
    ("hydropneumothorax", "Pneumothorax"),
    ("pleural effusion", "Pleural Effusion"),
    ("hydropneumothorax", "Pleural Effusion"),
    ("costophrenic angle/blunted", "Pleural Effusion"),
    ("thickening/pleura", "Pleural Other"),
    ("cicatrix/pleura", "Pleural Other"),
    ("calcinosis/pleura", "Pleural Other"),
    ("pleura", "Pleural Other"),
    ("fractures, bone", "Fracture"),
    ("catheters, indwelling", "Support Devices"),
    ("implanted medical device", "Support Devices"),
    ("surgical instruments", "Support Devices"),
    ("tube, inserted", "Support Devices"),
    ("medical device", "Support Devices"),
    ("stents", "Support Devices"),
)


def _alternation(phrases: Iterable[str]) -> re.Pattern:
  return re.compile(r"(?<![a-z0-9-])(?:" + "|".join(f"(?:{p})" for p in phrases) + r")(?![a-z0-9-])")


@functools.lru_cache(maxsize=None)
def _patterns():
  return ({o: _alternation(p) for o, p in MENTIONS.items()},
          {o: _alternation(p) for o, p in NOT_MENTIONS.items()},
          {name: _alternation(phrases) for name, phrases in (
              ("uncertain_first", UNCERTAIN_FIRST), ("negation_before", NEGATION_BEFORE),
              ("negation_after", NEGATION_AFTER), ("uncertain_before", UNCERTAIN_BEFORE),
              ("uncertain_after", UNCERTAIN_AFTER), ("scope_end", SCOPE_END))})


@functools.lru_cache(maxsize=None)
def _tokenizers():
  from nltk.tokenize import PunktSentenceTokenizer, RegexpTokenizer   # no downloaded data needed
  return PunktSentenceTokenizer(), RegexpTokenizer(_TOKENS)


def sentences(text: str) -> list[str]:
  """Lower-case sentences of ``text``, each as its space-joined word tokens."""
  split, words = _tokenizers()
  return [" ".join(words.tokenize(s.lower())) for s in split.tokenize(text or "")]


def _spans(pattern: re.Pattern, text: str) -> list[tuple[int, int]]:
  return [m.span() for m in pattern.finditer(text)]


def _mention_value(sentence: str, start: int, end: int) -> int:
  """Positive, negative or uncertain: the cues whose scope reaches the mention at [start, end). A cue
  before it counts from the start of its clause to the mention's end (``heart is not enlarged``); a cue
  after it within ``AFTER_WINDOW`` words, before any clause end."""
  cues = _patterns()[2]
  clause_start = max((e for _, e in _spans(cues["scope_end"], sentence[:start])), default=0)
  before = sentence[clause_start:end]
  after = " ".join(sentence[end:].split()[:AFTER_WINDOW])
  stop = cues["scope_end"].search(after)
  after = after[:stop.start()] if stop else after
  if cues["uncertain_first"].search(before) or cues["uncertain_first"].search(after):
    return UNCERTAIN
  if cues["negation_before"].search(before) or cues["negation_after"].search(after):
    return NEGATIVE
  if cues["uncertain_before"].search(before) or cues["uncertain_after"].search(after):
    return UNCERTAIN
  return POSITIVE


def label_sentences(sents: Sequence[str]) -> dict[str, int]:
  mentions, not_mentions, _ = _patterns()
  values: dict[str, list[int]] = {}
  for s in sents:
    for obs, pattern in mentions.items():
      excluded = _spans(not_mentions[obs], s) if obs in not_mentions else []
      for start, end in _spans(pattern, s):
        if any(a <= start < b or a < end <= b for a, b in excluded):
          continue
        values.setdefault(obs, []).append(_mention_value(s, start, end))
  out = {}
  for obs, vals in values.items():
    out[obs] = POSITIVE if POSITIVE in vals else UNCERTAIN if UNCERTAIN in vals else NEGATIVE
  findings = [o for o, v in out.items() if o != "Support Devices" and v in (POSITIVE, UNCERTAIN)]
  out["No Finding"] = NEGATIVE if findings else POSITIVE
  return {o: out[o] for o in OBSERVATIONS if o in out}


def label_report(text: str) -> dict[str, int]:
  """``{observation: 1 | 0 | -1}`` for a report's text (positive, negative, uncertain; absent left out)."""
  return label_sentences(sentences(text))


def positives(text: str) -> frozenset[str]:
  """The observations the report states as present (CE scores count these only)."""
  return frozenset(o for o, v in label_report(text).items() if v == POSITIVE)


def mesh_observations(terms: Sequence[str]) -> frozenset[str]:
  """Observations of a report's MeSH major terms (``MESH_TO_OBSERVATION``; 'No Finding' as for the
  labeler: none of the others but Support Devices)."""
  found, uncertain = set(), set()
  for term in terms:
    parts = [p.strip() for p in term.lower().split("/")]
    t = "/".join(parts)
    for prefix, obs in MESH_TO_OBSERVATION:
      if t == prefix or t.startswith(prefix + "/"):
        # "Cardiomegaly/borderline" is uncertain, as the labeler reads "borderline": not a positive, but
        # not "No Finding" either.
        (uncertain if "borderline" in parts else found).add(obs)
  if (found | uncertain) - {"No Finding", "Support Devices"}:
    found.discard("No Finding")
  else:
    found.add("No Finding")
  return frozenset(found)


def agreement(predicted: Sequence[frozenset], reference: Sequence[frozenset],
              observations: Sequence[str] = OBSERVATIONS) -> dict:
  """Per-observation precision, recall, F1 and support of ``predicted`` sets against ``reference`` sets
  (``evaluate.label_scores``), micro-averaged, and macro-averaged over all ``observations`` (one that no
  report has scores 0, as sklearn's ``average='macro'`` in R2GenCMN's ``compute_ce.py``)."""
  hot = lambda sets: np.array([[o in s for o in observations] for s in sets], bool).reshape(-1, len(observations))
  scores = evaluate.label_scores(hot(reference), hot(predicted), observations)
  per = scores.per_label
  micro = {"precision": scores.micro_precision, "recall": scores.micro_recall, "f1": scores.micro_f1,
           "support": sum(v["support"] for v in per.values())}
  macro = {k: sum(per[o][k] for o in observations) / len(observations) for k in ("precision", "recall", "f1")}
  return {"per_observation": per, "micro": micro, "macro": macro}


def mesh_agreement(reports: Mapping[str, object], ids: Iterable[str] | None = None) -> dict:
  """The labeler's positives (FINDINGS + IMPRESSION) against the MeSH major terms' observations, over the
  ``openi.Report``s of ``reports`` (or those of ``ids``) that have both text and indexing ('No Indexing'
  alone does not count). Returns ``agreement``'s dict with ``num_reports``."""
  predicted, reference = [], []
  for uid in sorted(ids if ids is not None else reports):
    r = reports[uid]
    if not r.mesh_major or all(t.strip().lower() == "no indexing" for t in r.mesh_major):
      continue
    text = " ".join(x for x in (r.findings, r.impression) if x)
    if not text.strip():
      continue
    predicted.append(positives(text))
    reference.append(mesh_observations(r.mesh_major))
  return {**agreement(predicted, reference), "num_reports": len(predicted)}


def agreement_markdown(result: Mapping) -> str:
  """``mesh_agreement``'s result as a markdown table."""
  rows = ["| observation | precision | recall | F1 | MeSH positives |", "|---|---|---|---|---|"]
  for obs, v in result["per_observation"].items():
    rows.append(f"| {obs} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |")
  m, a = result["micro"], result["macro"]
  rows.append(f"| **micro** | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |")
  rows.append(f"| macro | {a['precision']:.3f} | {a['recall']:.3f} | {a['f1']:.3f} | |")
  return "\n".join(rows)


# ============================================================================================ CE scores
REAL_REPORT_DATASETS = ("iu_xray/", "synthetic_cxr/iu_reports", "mimic_cxr")


def applies_to(dataset_name: str) -> bool:
  """Whether a dataset's reports are real radiologists' text (the labeler's domain)."""
  return dataset_name.startswith(REAL_REPORT_DATASETS)


def ce_scores(generated: Sequence[frozenset], references: Sequence[frozenset]) -> dict:
  """Clinical efficacy as the MIMIC-CXR papers compute it (R2GenCMN's ``compute_ce.py``) from each report's
  positive observations (``positives``: uncertain counts as absent), generated against reference:
  precision, recall and F1, micro and macro over the 14 labels (an observation no report has scores 0 in
  the macro average)."""
  result = agreement(generated, references)
  out = {f"{avg}_{k}": result[avg][k] for avg in ("micro", "macro") for k in ("precision", "recall", "f1")}
  out["per_observation"] = result["per_observation"]
  return out
