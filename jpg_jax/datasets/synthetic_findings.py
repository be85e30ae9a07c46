"""Findings of the synthetic chest radiographs: MeSH-style terms <-> drawable findings, and report text.

A ``Finding`` is what the renderer draws (kind, zone, side, severity). ``Finding.mesh_term`` writes it the
way IU X-Ray's MeSH major terms are written (``Calcified Granuloma/lung/upper lobe/right``) and
``finding_from_term`` reads such a term back, so the ``templates`` source (findings sampled, then written as
terms and sentences) and the ``iu_reports`` source (real terms parsed, then drawn) share one vocabulary.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

ZONES = ("upper lobe", "middle lobe", "lower lobe", "base")
SIDES = ("right", "left", "bilateral")

# kind -> (MeSH heading, has lung zone, has side, severities)
KINDS = {
    "granuloma": ("Calcified Granuloma", True, True, ()),
    "nodule": ("Nodule", True, True, ("small",)),
    "opacity": ("Opacity", True, True, ("mild", "moderate")),
    "cardiomegaly": ("Cardiomegaly", False, False, ("mild", "moderate", "severe")),
    "effusion": ("Pleural Effusion", False, True, ("small", "large")),
    "pneumothorax": ("Pneumothorax", False, True, ("small", "large")),
    "hypoinflation": ("Lung", False, False, ()),
    "hyperdistention": ("Lung", False, False, ()),
    "degenerative": ("Thoracic Vertebrae", False, False, ("mild", "severe")),
    "scoliosis": ("Scoliosis", False, False, ()),
    "catheter": ("Catheters, Indwelling", False, True, ()),
    "clips": ("Surgical Instruments", False, False, ()),
}
# Synonyms of IU X-Ray's MeSH headings (lower-case) for findings the renderer can draw.
_HEADINGS = {
    "calcified granuloma": "granuloma", "granuloma": "granuloma", "granulomatous disease": "granuloma",
    "nodule": "nodule", "mass": "nodule",
    "opacity": "opacity", "pulmonary atelectasis": "opacity", "airspace disease": "opacity",
    "consolidation": "opacity", "infiltrate": "opacity", "pneumonia": "opacity",
    "cardiomegaly": "cardiomegaly",
    "pleural effusion": "effusion", "pneumothorax": "pneumothorax",
    "emphysema": "hyperdistention", "pulmonary disease, chronic obstructive": "hyperdistention",
    "thoracic vertebrae": "degenerative", "spine": "degenerative", "spondylosis": "degenerative",
    "osteophyte": "degenerative",
    "scoliosis": "scoliosis",
    "catheters, indwelling": "catheter",
    "surgical instruments": "clips", "sutures": "clips",
}
_ZONE_WORDS = {"upper lobe": "upper lobe", "apex": "upper lobe", "middle lobe": "middle lobe",
               "lingula": "middle lobe", "lower lobe": "lower lobe", "base": "base"}
_SEVERITY_WORDS = {"mild": "mild", "borderline": "mild", "small": "small", "moderate": "moderate",
                   "severe": "severe", "large": "large"}


@dataclasses.dataclass(frozen=True)
class Finding:
  kind: str
  zone: str | None = None
  side: str | None = None
  severity: str | None = None

  @property
  def mesh_term(self) -> str:
    heading, has_zone, has_side, _ = KINDS[self.kind]
    parts = [heading]
    if self.kind in ("hypoinflation", "hyperdistention"):
      parts.append(self.kind)
    if self.kind == "degenerative":
      parts.append("degenerative")
    if has_zone:
      parts += ["lung"] + ([self.zone] if self.zone else [])   # a generated report may name no zone
    if has_side and self.side:
      parts.append(self.side)
    if self.severity:
      parts.append(self.severity)
    return "/".join(parts)


def finding_from_term(term: str) -> Finding | None:
  """Parse an IU X-Ray MeSH major term into a drawable Finding (None if the renderer cannot draw it)."""
  parts = [p.strip().lower() for p in term.split("/") if p.strip()]
  if not parts:
    return None
  heading, rest = parts[0], parts[1:]
  if heading == "lung" and rest and rest[0] in ("hypoinflation", "hyperdistention"):
    kind = rest[0]
  elif heading in ("thoracic vertebrae", "spine") and "degenerative" not in rest:
    return None
  else:
    kind = _HEADINGS.get(heading)
  if kind is None:
    return None
  _, has_zone, has_side, severities = KINDS[kind]
  zone = next((_ZONE_WORDS[w] for w in rest if w in _ZONE_WORDS), None)
  side = next((w for w in rest if w in SIDES), None)
  severity = next((_SEVERITY_WORDS[w] for w in rest if w in _SEVERITY_WORDS), None)
  if has_zone:
    zone = zone or "middle lobe"
  if has_side:
    side = side or ("bilateral" if kind in ("opacity", "effusion") else "right")
  if severity is not None and severity not in severities:
    severity = severities[0] if severities else None
  return Finding(kind, zone if has_zone else None, side if has_side else None, severity)


def findings_from_terms(terms: Sequence[str]) -> list[Finding]:
  out = []
  for t in terms:
    f = finding_from_term(t)
    if f is not None and f.kind not in {g.kind for g in out}:
      out.append(f)
  return out


def sample_findings(rng: np.random.Generator, p_normal: float = 0.35) -> list[Finding]:
  """A case: normal with probability ``p_normal``, else one to three findings of distinct kinds."""
  if rng.random() < p_normal:
    return []
  count = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
  kinds = list(rng.permutation(sorted(KINDS)))
  chosen: list[Finding] = []
  for kind in kinds:
    if len(chosen) == count:
      break
    if {kind, *(f.kind for f in chosen)} >= {"hypoinflation", "hyperdistention"}:
      continue
    _, has_zone, has_side, severities = KINDS[kind]
    sides = SIDES if kind in ("opacity", "effusion", "pneumothorax") else SIDES[:2]
    chosen.append(Finding(
        kind,
        zone=str(rng.choice(ZONES)) if has_zone else None,
        side=str(rng.choice(sides)) if has_side else None,
        severity=str(rng.choice(severities)) if severities else None))
  return chosen


# --------------------------------------------------------------------------------------- report text
def _where(f: Finding) -> str:
  side = {"right": "right", "left": "left", "bilateral": "bilateral"}[f.side]
  zone = {"upper lobe": "upper lobe", "middle lobe": "midlung", "lower lobe": "lower lobe",
          "base": "base"}[f.zone]
  if f.side == "bilateral":
    return f"bilateral {zone}s" if zone != "midlung" else "bilateral midlungs"
  return f"{side} {zone}"


def _choose(rng, options: Sequence[str]) -> str:
  return options[int(rng.integers(len(options)))]


def report_from_findings(findings: Sequence[Finding], rng: np.random.Generator) -> str:
  """IU X-Ray-style FINDINGS text in a radiologist's order: heart, lungs, pleura, bones, devices."""
  by = {f.kind: f for f in findings}
  s = []
  if "cardiomegaly" in by:
    sev = by["cardiomegaly"].severity
    s.append(_choose(rng, [f"The heart is {sev}ly enlarged.", f"There is {sev} cardiomegaly.",
                           f"{sev.capitalize()} enlargement of the cardiac silhouette."]))
  else:
    s.append(_choose(rng, ["The heart is normal in size.", "Heart size is within normal limits.",
                           "The cardiomediastinal silhouette is within normal limits.",
                           "Normal heart size and mediastinal contours."]))
  if "hypoinflation" in by:
    s.append(_choose(rng, ["Low lung volumes.", "The lungs are hypoinflated."]))
  if "hyperdistention" in by:
    s.append(_choose(rng, ["The lungs are hyperexpanded.", "The lungs are hyperinflated with "
                           "flattening of the diaphragms."]))
  lung = []
  if "opacity" in by:
    lung.append(_choose(rng, [f"There is airspace opacity in the {_where(by['opacity'])}.",
                              f"Patchy opacity is seen in the {_where(by['opacity'])}."]))
  if "nodule" in by:
    lung.append(_choose(rng, [f"There is a nodule in the {_where(by['nodule'])}.",
                              f"A small nodular density is noted in the {_where(by['nodule'])}."]))
  if "granuloma" in by:
    lung.append(_choose(rng, [f"Calcified granuloma in the {_where(by['granuloma'])}.",
                              f"There is a calcified granuloma in the {_where(by['granuloma'])}."]))
  if lung:
    s += lung
  else:
    s.append(_choose(rng, ["The lungs are clear.", "No focal airspace disease.",
                           "The lungs are clear without focal consolidation."]))
  pleura = []
  if "effusion" in by:
    f = by["effusion"]
    where = "bilateral" if f.side == "bilateral" else f"{f.side}-sided"
    pleura.append(_choose(rng, [f"There is a {f.severity} {where} pleural effusion.",
                                f"{f.severity.capitalize()} {where} pleural effusion."]))
  if "pneumothorax" in by:
    f = by["pneumothorax"]
    where = "bilateral" if f.side == "bilateral" else f"{f.side}"
    pleura.append(f"There is a {f.severity} {where} pneumothorax.")
  if not pleura:
    s.append(_choose(rng, ["No pleural effusion or pneumothorax.",
                           "There is no pneumothorax or pleural effusion."]))
  else:
    s += pleura
    if "effusion" not in by:
      s.append("No pleural effusion.")
    if "pneumothorax" not in by:
      s.append("No pneumothorax.")
  bones = []
  if "degenerative" in by:
    bones.append(f"{by['degenerative'].severity.capitalize()} degenerative changes of the thoracic spine.")
  if "scoliosis" in by:
    bones.append(_choose(rng, ["There is scoliosis of the thoracic spine.",
                               "Thoracic spine curvature is noted."]))
  s += bones or [_choose(rng, ["The osseous structures are intact.",
                               "No acute bony abnormality.", "Visualized osseous structures are intact."])]
  if "catheter" in by:
    s.append(f"A {by['catheter'].side}-sided central venous catheter is in place.")
  if "clips" in by:
    s.append("Surgical clips are noted in the mediastinum.")
  return " ".join(s)


# --------------------------------------------------------------------------------------- reading text back
_READ_SEVERITY = {"mild": "mild", "mildly": "mild", "moderate": "moderate", "moderately": "moderate",
                  "severe": "severe", "severely": "severe", "small": "small", "large": "large"}
_READ_ZONE = {"upper": "upper lobe", "midlung": "middle lobe", "midlungs": "middle lobe",
              "lower": "lower lobe", "base": "base", "bases": "base"}
_READ_SIDE = {"right": "right", "rightsided": "right", "left": "left", "leftsided": "left",
              "bilateral": "bilateral"}
# kind -> words of a sentence that name it (any one); checked in this order, one kind per sentence.
_KIND_WORDS = (
    ("cardiomegaly", ("cardiomegaly", "enlarged", "enlargement")),
    ("hypoinflation", ("hypoinflated", "low")),
    ("hyperdistention", ("hyperexpanded", "hyperinflated")),
    ("opacity", ("opacity",)),
    ("nodule", ("nodule", "nodular")),
    ("granuloma", ("granuloma",)),
    ("effusion", ("effusion",)),
    ("pneumothorax", ("pneumothorax",)),
    ("degenerative", ("degenerative",)),
    ("scoliosis", ("scoliosis", "curvature")),
    ("catheter", ("catheter",)),
    ("clips", ("clips",)),
)
_NEGATIONS = ("no", "without", "not")
# The kinds whose sentences state their severity (``report_from_findings``): an opacity's or a nodule's
# severity is drawn but never written, so no reader can recover it.
SEVERITY_STATED = ("cardiomegaly", "effusion", "pneumothorax", "degenerative")


def _words(sentence: str) -> list[str]:
  return sentence.replace("-", "").replace(",", " ").split()


def read_findings(report: str) -> list[Finding]:
  """The findings a report states, read back from its text: the inverse of ``report_from_findings`` on
  its sentences, and lenient enough for generated text (R2Gen-cleaned or not: lower case, ``-`` dropped).

  Each sentence names at most one finding kind (its first kind word, ``_KIND_WORDS``); a sentence with a
  negation (``no pleural effusion``) names none. Side, zone and severity are the sentence's words for
  them, kept only where the kind has them (``KINDS``; severity only where it is written,
  ``SEVERITY_STATED``); pleural findings with no severity word are not
  stated ("there is no pneumothorax or pleural effusion" is caught by its negation anyway). The first
  mention of a kind counts.
  """
  found: dict[str, Finding] = {}
  for sentence in report.lower().replace(" .", ".").split("."):
    words = _words(sentence)
    if not words or any(w in _NEGATIONS for w in words):
      continue
    kind = next((k for k, names in _KIND_WORDS if any(w in names for w in words)), None)
    if kind is None or kind in found:
      continue
    if kind == "hypoinflation" and "low" in words and "volumes" not in words:
      continue
    _, has_zone, has_side, severities = KINDS[kind]
    severity = next((_READ_SEVERITY[w] for w in words if w in _READ_SEVERITY), None)
    if kind in ("effusion", "pneumothorax") and severity is None:
      continue
    zone = next((_READ_ZONE[w] for w in words if w in _READ_ZONE), None)
    side = next((_READ_SIDE[w] for w in words if w in _READ_SIDE), None)
    found[kind] = Finding(kind, zone if has_zone else None, side if has_side else None,
                          severity if severity in severities and kind in SEVERITY_STATED else None)
  return list(found.values())


def as_stated(finding: Finding) -> Finding:
  """``finding`` as a report states it: without a severity that its sentence does not write."""
  return finding if finding.kind in SEVERITY_STATED else dataclasses.replace(finding, severity=None)
