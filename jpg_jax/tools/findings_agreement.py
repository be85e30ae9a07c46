"""The findings labeler (``jpg_jax/chexpert.py``) against IU X-Ray's human MeSH annotations.

  python -m jpg_jax.tools.findings_agreement --archive=DIR/NLMCXR_reports.tgz \
      [--annotation=DIR/r2gen_annotation.json --split=test]

Prints per-observation precision, recall and F1 of the labeler's positive observations (read from each
report's FINDINGS and IMPRESSION) against the observations its MeSH major terms map to
(``chexpert.MESH_TO_OBSERVATION``), with micro and macro averages, as a markdown table.
"""

from __future__ import annotations

import json

from absl import app
from absl import flags
from etils import epath

from jpg_jax import chexpert
from jpg_jax.datasets import openi
from jpg_jax import cli

_ARCHIVE = flags.DEFINE_string("archive", None, "Open-i's NLMCXR_reports.tgz.")
_ANNOTATION = flags.DEFINE_string("annotation", "", "R2Gen's annotation.json, to score one of its splits.")
_SPLIT = flags.DEFINE_enum("split", "", ["", "train", "val", "test"], "R2Gen split (needs --annotation).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  reports = openi.read_reports_archive(_ARCHIVE.value)
  ids = None
  if _SPLIT.value:
    if not _ANNOTATION.value:
      raise app.UsageError("--split needs --annotation.")
    annotation = json.loads(epath.Path(_ANNOTATION.value).read_text())
    ids = sorted({openi.uid_from_r2gen_id(e["id"]) for e in annotation[_SPLIT.value]} & set(reports))
  result = chexpert.mesh_agreement(reports, ids)
  print(f"{result['num_reports']} reports with text and MeSH indexing"
        + (f" (R2Gen's {_SPLIT.value} split)" if _SPLIT.value else ""))
  print(chexpert.agreement_markdown(result))


if __name__ == "__main__":
  cli.run(main, required=["archive"])
