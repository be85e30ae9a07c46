"""Parsing Open-i's IU X-Ray report archive (``NLMCXR_reports.tgz``: ``ecgen-radiology/<uid>.xml``).

Pure Python, no TFDS: the builders and ``--mode=stats`` share it. Each XML holds the report sections
(COMPARISON, INDICATION, FINDINGS, IMPRESSION), MeSH ``<major>`` terms and the ids of its images
(``<parentImage id="CXR<uid>_IM-xxxx-xxxx">``, the PNG file names of ``NLMCXR_png.tgz``).
"""

from __future__ import annotations

import collections
import dataclasses
import random
import re
import tarfile
import xml.etree.ElementTree as ET
import zlib
from typing import Iterable, Sequence

from etils import epath

from jpg_jax import errors

REPORTS_URL = "https://openi.nlm.nih.gov/imgs/collections/NLMCXR_reports.tgz"
IMAGES_URL = "https://openi.nlm.nih.gov/imgs/collections/NLMCXR_png.tgz"
REPORTS_ARCHIVE = "NLMCXR_reports.tgz"
IMAGES_ARCHIVE = "NLMCXR_png.tgz"

_R2GEN_ID = re.compile(r"^CXR(\d+)_")


@dataclasses.dataclass(frozen=True)
class Report:
  uid: str                      # Open-i's report id (the XML file name); one report per patient.
  findings: str
  impression: str
  indication: str
  comparison: str
  mesh_major: tuple[str, ...]   # MeSH major terms, e.g. 'Calcified Granuloma/lung/upper lobe/right'.
  image_ids: tuple[str, ...]    # 'CXR1_1_IM-0001-3001' -> NLMCXR_png.tgz member 'CXR1_1_IM-0001-3001.png'.


def _section(root: ET.Element, label: str) -> str:
  for node in root.iter("AbstractText"):
    if node.get("Label") == label:
      return (node.text or "").strip()
  return ""


def parse_report_xml(data: bytes | str, uid: str | None = None) -> Report:
  root = ET.fromstring(data)
  if uid is None:
    node = root.find("uId")
    uid = node.get("id").removeprefix("CXR") if node is not None else ""
  return Report(
      uid=uid,
      findings=_section(root, "FINDINGS"),
      impression=_section(root, "IMPRESSION"),
      indication=_section(root, "INDICATION"),
      comparison=_section(root, "COMPARISON"),
      mesh_major=tuple((m.text or "").strip() for m in root.iter("major") if (m.text or "").strip()),
      image_ids=tuple(p.get("id") for p in root.iter("parentImage")),
  )


def read_reports_archive(path) -> dict[str, Report]:
  """All reports of ``NLMCXR_reports.tgz`` (3955), keyed by uid. A truncated or foreign archive, or a
  report that is not XML, raises ``InputError`` naming the file (and the member)."""
  reports = {}
  try:
    with epath.Path(path).open("rb") as f, tarfile.open(fileobj=f, mode="r:*") as tar:
      for member in tar:
        if not (member.isfile() and member.name.endswith(".xml")):
          continue
        uid = member.name.rsplit("/", 1)[-1][: -len(".xml")]
        try:
          reports[uid] = parse_report_xml(tar.extractfile(member).read(), uid)
        except ET.ParseError as e:
          raise errors.InputError(f"{path}: {member.name} is not a report XML ({e}).") from None
  except FileNotFoundError:
    raise errors.MissingFileError(f"{path} does not exist.") from None
  except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
    raise errors.InputError(f"{path} cannot be read as a .tgz archive ({type(e).__name__}: {e}); download "
                            f"Open-i's {REPORTS_ARCHIVE} again.") from None
  if not reports:
    raise errors.InputError(f"{path} holds no ecgen-radiology/*.xml reports: is it Open-i's "
                            f"{REPORTS_ARCHIVE}?")
  return reports


def uid_from_r2gen_id(r2gen_id: str) -> str:
  """``'CXR2384_IM-0942'`` -> ``'2384'`` (R2Gen's ids are Open-i's image ids without the view suffix)."""
  m = _R2GEN_ID.match(r2gen_id)
  if not m:
    raise ValueError(f"Not an IU X-Ray id: {r2gen_id!r}")
  return m.group(1)


def exclusion_reason(report: Report, exclude_no_indexing: bool = False, min_images: int = 0) -> str | None:
  """Why a report cannot be used (Sec. 4.1: "samples without MeSH or Findings sections were excluded")."""
  if not report.findings:
    return "no_findings"
  if not report.mesh_major:
    return "no_mesh"
  if exclude_no_indexing and all(t.lower() == "no indexing" for t in report.mesh_major):
    return "mesh_no_indexing"
  if len(report.image_ids) < min_images:
    return "fewer_images"
  return None


def select_reports(reports: Iterable[Report], exclude_no_indexing: bool = False, min_images: int = 0
                   ) -> tuple[list[Report], collections.Counter]:
  """The usable reports and a Counter of the exclusions by reason."""
  kept, excluded = [], collections.Counter()
  for r in reports:
    reason = exclusion_reason(r, exclude_no_indexing, min_images)
    if reason:
      excluded[reason] += 1
    else:
      kept.append(r)
  return kept, excluded


def split_by_patient(uids: Sequence[str], fractions=(0.7, 0.1, 0.2), seed: int = 0
                     ) -> dict[str, list[str]]:
  """A seeded 70/10/20 split of patients (= reports in IU X-Ray), the paper's Sec. 4.1 / Li et al. 2018."""
  if abs(sum(fractions) - 1.0) > 1e-6:
    raise ValueError(f"Split fractions must sum to 1, got {fractions}.")
  order = sorted(uids, key=lambda u: (len(u), u))
  random.Random(seed).shuffle(order)
  n_train = round(fractions[0] * len(order))
  n_val = round(fractions[1] * len(order))
  return {"train": order[:n_train], "val": order[n_train:n_train + n_val],
          "test": order[n_train + n_val:]}
