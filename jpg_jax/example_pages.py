"""Example reports (Fig. 5): the ground truth and each run's report side by side, as Markdown or HTML, and
the test cases where one run beats another by most."""

from __future__ import annotations

import html
from typing import Sequence

from jpg_jax.results import Run


# ------------------------------------------------------------------------------------------ Fig. 5
def findings_score(row: dict) -> int:
  """Finding kinds a report names that the case has, minus those it names that the case has not (rows of
  template-written synthetic data carry ``findings_stated`` and ``findings_true``: MeSH-style terms)."""
  from jpg_jax.datasets import synthetic_findings
  kinds = lambda key: {f.kind for f in map(synthetic_findings.finding_from_term, row.get(key, ())) if f}
  stated, true = kinds("findings_stated"), kinds("findings_true")
  return len(stated & true) - len(stated - true)


def pick_examples(runs: Sequence[Run], num: int, by: str = "BLEU_4") -> list[str]:
  """Ids where the last run beats the first by most on ``by`` (Fig. 5 shows where JPG helps): a caption
  metric, or 'findings' (``findings_score``: where the last names more of the case's findings; BLEU-4
  breaks ties); then by id."""
  first, last = runs[0].by_id, runs[-1].by_id
  common = [i for i in last if i in first]
  bleu = lambda i: last[i]["scores"]["BLEU_4"] - first[i]["scores"]["BLEU_4"]
  if by == "findings":
    gain = lambda i: (findings_score(last[i]) - findings_score(first[i]), bleu(i))
  else:
    gain = lambda i: (last[i]["scores"][by] - first[i]["scores"][by],)
  return sorted(common, key=lambda i: (tuple(-g for g in gain(i)), i))[:num]


def examples_page(runs: Sequence[Run], ids: Sequence[str], fmt: str = "md") -> str:
  """Ground truth and each run's report (and JPG's labels) side by side, one row per id."""
  by_id = [r.by_id for r in runs]
  for i in ids:
    for run, rows in zip(runs, by_id):
      if i not in rows:
        raise KeyError(f"{i} is not in {run.name}'s test reports.")
  labels = lambda row: ", ".join(f"<{l}>" for l in row.get("predicted_labels", [])) or "-"
  # The findings a report states (template-written synthetic data: jpg_jax/clinical.py), where scored.
  findings = lambda row, key: (f"; findings: {', '.join(row[key]) or 'none'}" if key in row else "")
  if fmt == "html":
    esc = html.escape
    head = "".join(f"<th>{esc(r.name)}</th>" for r in runs)
    body = []
    for i in ids:
      ref = by_id[0][i]["reference"]
      cells = "".join(f"<td>{esc(rows[i]['prediction'])}<br><small>BLEU-4 {rows[i]['scores']['BLEU_4']:.3f}"
                      f"; labels: {esc(labels(rows[i]))}{esc(findings(rows[i], 'findings_stated'))}"
                      f"</small></td>" for rows in by_id)
      truth = esc(findings(by_id[0][i], "findings_true")[2:])
      body.append(f"<tr><td><code>{esc(i)}</code></td><td>{esc(ref)}<br><small>{truth}</small></td>"
                  f"{cells}</tr>")
    return ("<!doctype html><meta charset='utf-8'><title>Example reports</title>\n"
            "<table border='1' cellpadding='4'>\n"
            f"<tr><th>id</th><th>ground truth</th>{head}</tr>\n" + "\n".join(body) + "\n</table>\n")
  lines = ["| id | ground truth | " + " | ".join(r.name for r in runs) + " |",
           "|---|---|" + "---|" * len(runs)]
  cell = lambda s: s.replace("|", "\\|")
  for i in ids:
    truth = findings(by_id[0][i], "findings_true")[2:]
    row = [f"`{i}`", cell(by_id[0][i]["reference"]) + (f"<br>*{cell(truth)}*" if truth else "")]
    row += [cell(rows[i]["prediction"]) + f"<br>*BLEU-4 {rows[i]['scores']['BLEU_4']:.3f}; labels: "
            f"{cell(labels(rows[i]))}{cell(findings(rows[i], 'findings_stated'))}*" for rows in by_id]
    lines.append("| " + " | ".join(row) + " |")
  return "\n".join(lines) + "\n"
