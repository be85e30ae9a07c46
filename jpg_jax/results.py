"""Reading finished runs: Table 2 beside the paper's, Fig. 3, training curves, example reports (Fig. 5).

A run is a workdir written by ``train.train_and_evaluate``: ``config.json``, ``results/test_metrics.json``,
``results/test_reports.jsonl`` (per-report predictions and scores) and ``logs/`` (TensorBoard events).
Every number printed here is read from those files; the paper's are copied from its Table 2.
The command-line front ends are ``jpg_jax.tools.compare``, ``.curves``, ``.examples`` and ``.attention_map``.
"""

from __future__ import annotations

import dataclasses
import glob
import html
import json
import os
import struct
from typing import Mapping, Sequence

import numpy as np
from etils import epath
from tensorboardX.proto import event_pb2

from jpg_jax import errors
from jpg_jax import evaluate as evaluate_lib

METRICS = evaluate_lib.CAPTION_KEYS
METRIC_NAMES = {"BLEU_1": "BLEU-1", "BLEU_2": "BLEU-2", "BLEU_3": "BLEU-3", "BLEU_4": "BLEU-4",
                "METEOR": "METEOR", "ROUGE_L": "ROUGE-L"}

# Table 2 of the paper (IU X-Ray test set, Findings); None where the paper prints "-". JPG's row carries
# the paper's dagger on every metric (significantly better than BASE, t-test, p < 0.05).
PAPER_TABLE2 = {
    "NIC": (0.216, 0.124, 0.087, 0.066, None, 0.306),
    "ADAATT": (0.220, 0.127, 0.089, 0.068, None, 0.308),
    "ATT2IN": (0.224, 0.129, 0.089, 0.068, None, 0.308),
    "VisualGPT": (0.482, 0.314, 0.221, 0.158, 0.204, 0.375),
    "COATT": (0.455, 0.288, 0.205, 0.154, None, 0.369),
    "HRGR": (0.438, 0.298, 0.208, 0.151, None, 0.322),
    "CMAS-RL": (0.464, 0.301, 0.210, 0.154, None, 0.362),
    "R2GEN": (0.470, 0.304, 0.219, 0.165, 0.187, 0.371),
    "CMN": (0.475, 0.309, 0.222, 0.170, 0.191, 0.375),
    "BASE": (0.369, 0.254, 0.179, 0.135, 0.164, 0.342),
    "JPG-projection": (0.458, 0.291, 0.212, 0.159, 0.177, 0.371),
    "JPG-auxiliary": (0.472, 0.308, 0.218, 0.168, 0.188, 0.373),
    "JPG": (0.479, 0.319, 0.222, 0.174, 0.193, 0.377),
}
PAPER_SIGNIFICANT = {"JPG"}
SIGNIFICANCE_LEVEL = 0.05
DAGGER = "†"


# ------------------------------------------------------------------------------------------ runs
@dataclasses.dataclass
class Run:
  name: str
  workdir: str
  metrics: dict
  reports: list[dict]        # test_reports.jsonl rows, in file order
  config: dict

  @property
  def by_id(self) -> dict[str, dict]:
    return {r["id"]: r for r in self.reports}


def load_run(name: str, workdir: str) -> Run:
  root = epath.Path(workdir)
  metrics = json.loads((root / "results" / "test_metrics.json").read_text())
  reports = [json.loads(line) for line in (root / "results" / "test_reports.jsonl").read_text().splitlines()
             if line.strip()]
  config_path = root / "config.json"
  config = json.loads(config_path.read_text()) if config_path.exists() else {}
  return Run(name, str(workdir), metrics, reports, config)


def parse_runs(specs: Sequence[str]) -> list[Run]:
  """``NAME=WORKDIR`` pairs (a bare WORKDIR is named after its folder)."""
  runs = []
  for spec in specs:
    name, _, path = spec.rpartition("=")
    if not os.path.exists(os.path.join(path, "results", "test_metrics.json")):
      raise errors.MissingFileError(f"--run {spec}: {path} is not a finished run (it has no "
                                    f"results/test_metrics.json).")
    runs.append(load_run(name or os.path.basename(os.path.normpath(path)), path))
  return runs


# ------------------------------------------------------------------------------------------ Table 2
@dataclasses.dataclass(frozen=True)
class Cell:
  ours: float
  paper: float | None
  p_value: float | None       # paired t-test against the reference run, on per-report scores
  significant: bool           # better than the reference with p < SIGNIFICANCE_LEVEL

  @property
  def delta(self) -> float | None:
    return None if self.paper is None else self.ours - self.paper


def significance(run: Run, reference: Run, metric: str) -> float:
  """p-value of the paired t-test of ``run`` against ``reference`` on the same test reports."""
  ref = reference.by_id
  ids = [r["id"] for r in run.reports]
  missing = [i for i in ids if i not in ref]
  if missing or len(ids) != len(ref):
    raise ValueError(f"{run.name} and {reference.name} were not scored on the same test reports "
                     f"({len(missing)} of {len(ids)} ids missing from {reference.name}).")
  a = [r["scores"][metric] for r in run.reports]
  b = [ref[i]["scores"][metric] for i in ids]
  return evaluate_lib.paired_t_test(a, b)["p"]


def paper_row(run: Run):
  """The paper's Table 2 row for ``run`` (by name), or None: none for a run on another dataset than IU
  X-Ray's (the paper's numbers are IU X-Ray's; a MIMIC-CXR run named JPG has no paper row to differ from)."""
  dataset = run.config.get("dataset", {}).get("name", "") if isinstance(run.config, dict) else ""
  if dataset.startswith("mimic_cxr"):
    return None
  return PAPER_TABLE2.get(run.name)


def table2(runs: Sequence[Run], reference: str = "BASE") -> dict[str, dict[str, Cell]]:
  """Per run and metric: our score, the paper's (``paper_row``), and the t-test against ``reference``."""
  ref = next((r for r in runs if r.name == reference), None)
  table = {}
  for run in runs:
    paper = paper_row(run)
    row = {}
    for k, metric in enumerate(METRICS):
      ours = float(run.metrics[metric])
      p = None
      if ref is not None and run is not ref:
        p = significance(run, ref, metric)
      better = ref is not None and ours > float(ref.metrics[metric])
      row[metric] = Cell(ours, None if paper is None else paper[k], p,
                         p is not None and better and p < SIGNIFICANCE_LEVEL)
    table[run.name] = row
  return table


def _num(x: float | None, signed: bool = False) -> str:
  if x is None:
    return "-"
  return f"{x:+.3f}" if signed else f"{x:.3f}"


def format_table2(table: Mapping[str, Mapping[str, Cell]], reference: str = "BASE",
                  markdown: bool = False) -> str:
  """Ours (with † where significantly better than ``reference``), the paper's (with its †) and the
  difference, per metric; then the paper's other rows for context."""
  header = ["METHOD", "source"] + [METRIC_NAMES[m] for m in METRICS]
  rows = []
  for name, cells in table.items():
    ours = [_num(c.ours) + (DAGGER if c.significant else "") for c in cells.values()]
    rows.append([name, "ours"] + ours)
    if any(c.paper is not None for c in cells.values()):   # a paper row, on the paper's dataset
      mark = DAGGER if name in PAPER_SIGNIFICANT else ""
      rows.append([name, "paper"] + [_num(c.paper) + (mark if c.paper is not None else "")
                                     for c in cells.values()])
      rows.append([name, "ours - paper"] + [_num(c.delta, signed=True) for c in cells.values()])
  for name, values in PAPER_TABLE2.items():
    if name not in table:
      mark = DAGGER if name in PAPER_SIGNIFICANT else ""
      rows.append([name, "paper"] + [_num(v) + (mark if v is not None else "") for v in values])
  note = (f"{DAGGER}: ours, paired t-test on per-report scores against {reference} of the same table, "
          f"p < {SIGNIFICANCE_LEVEL}; paper, as printed (IU X-Ray; significantly better than BASE).")
  if markdown:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n\n" + note
  widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
  fmt = lambda r: "  ".join(str(x).ljust(w) if i < 2 else str(x).rjust(w)
                            for i, (x, w) in enumerate(zip(r, widths)))
  return "\n".join([fmt(header), "-" * (sum(widths) + 2 * (len(widths) - 1))] + [fmt(r) for r in rows]
                   + [note])


def _render(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> str:
  """A Markdown table, or plain text with the first column left-aligned and the others right-aligned."""
  if markdown:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(r) + " |" for r in rows])
  widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
  fmt = lambda r: "  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(r, widths)))
  return "\n".join([fmt(header), "-" * (sum(widths) + 2 * (len(widths) - 1))] + [fmt(r) for r in rows])


# ------------------------------------------------------------------------------------------ seeds
# Columns of the seeds table: the caption metrics (per-report scores, so a pooled paired t-test), then
# run-level figures (clinical efficacy, output statistics, mining): tested over seeds.
SEED_COLUMNS = {**METRIC_NAMES, "clinical.micro_f1": "CE micro-F1", "clinical.macro_f1": "CE macro-F1",
                "clinical.strict_micro_f1": "strict micro-F1", "distinct_reports": "distinct",
                "mean_length": "mean length", "mining.mined": "mined",
                "stage1_test.pattern_macro_f1": "stage-1 F1", "chexpert.micro_f1": "CheXpert micro-F1",
                "chexpert.macro_f1": "CheXpert macro-F1"}


@dataclasses.dataclass(frozen=True)
class SeedCell:
  mean: float
  sd: float                   # sample standard deviation over the seeds (0 for one seed)
  values: tuple[float, ...]   # per seed, in the order of ``seeds``
  p_value: float | None       # paired t-test against the reference model (see seed_table)
  significant: bool           # higher than the reference's mean with p < SIGNIFICANCE_LEVEL

  @property
  def interval(self) -> tuple[float, float] | None:
    """The 95% interval of the mean over the seeds (Student's t, n - 1 degrees of freedom); None for one."""
    n = len(self.values)
    if n < 2:
      return None
    from scipy import stats as scipy_stats
    half = float(scipy_stats.t.ppf(0.975, n - 1)) * self.sd / np.sqrt(n)
    return self.mean - half, self.mean + half


def run_value(run: Run, column: str) -> float | None:
  """A ``SEED_COLUMNS`` figure of ``run`` (None where the run has none: BASE mines no labels)."""
  value = run.metrics
  for key in column.split("."):
    if not isinstance(value, Mapping) or key not in value:
      return None
    value = value[key]
  return float(value)


def seed_of(run: Run):
  """The run's seed (``config.json``), or its workdir where the config has none."""
  return run.config.get("seed", run.workdir)


_seed = seed_of


def seed_table(runs: Sequence[Run], reference: str = "BASE"
               ) -> tuple[list, dict[str, dict[str, SeedCell]]]:
  """Runs grouped by name (one per seed: ``config.json``'s ``seed``), mean and standard deviation per
  ``SEED_COLUMNS`` column; returns (the seeds, {name: {column: cell}}).

  Against the ``reference`` model's runs of the same seeds: the caption metrics by a paired t-test on the
  per-report scores of all seeds pooled (a pair is one test case under one seed: n = seeds x reports), the
  run-level figures by a paired t-test over the seeds (n = seeds: little power at 3)."""
  groups: dict[str, dict] = {}
  for run in runs:
    group = groups.setdefault(run.name, {})
    if _seed(run) in group:
      raise ValueError(f"Two {run.name} runs of seed {_seed(run)}: {group[_seed(run)].workdir}, {run.workdir}.")
    group[_seed(run)] = run
  seeds = list(next(iter(groups.values())))
  for name, group in groups.items():
    if sorted(map(str, group)) != sorted(map(str, seeds)):
      raise ValueError(f"{name} has seeds {list(group)}, the first model {seeds}: pair them alike.")
  ref = groups.get(reference)
  table = {}
  for name, group in groups.items():
    row = {}
    for column in SEED_COLUMNS:
      values = [run_value(group[s], column) for s in seeds]
      if any(v is None for v in values):
        continue
      p = None
      if ref is not None and name != reference:
        ref_values = [run_value(ref[s], column) for s in seeds]
        if column in METRIC_NAMES:
          a, b = [], []
          for s in seeds:
            by_id = ref[s].by_id
            a += [r["scores"][column] for r in group[s].reports]
            b += [by_id[r["id"]]["scores"][column] for r in group[s].reports]
          p = evaluate_lib.paired_t_test(a, b)["p"]
        elif None not in ref_values and len(seeds) > 1:
          p = evaluate_lib.paired_t_test(values, ref_values)["p"]
      mean = float(np.mean(values))
      better = p is not None and mean > float(np.mean(ref_values))
      row[column] = SeedCell(mean, float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                             tuple(values), p, better and p < SIGNIFICANCE_LEVEL)
    table[name] = row
  return seeds, table


def format_seed_table(seeds: Sequence, table: Mapping[str, Mapping[str, SeedCell]], reference: str = "BASE",
                      markdown: bool = False) -> str:
  """Mean +- sd over the seeds per model, with † where significantly higher than ``reference``."""
  columns = [c for c in SEED_COLUMNS if any(c in row for row in table.values())]
  header = ["METHOD"] + [SEED_COLUMNS[c] for c in columns]
  def cell(c: SeedCell | None, column: str) -> str:
    if c is None:
      return "-"
    digits = 1 if column in ("distinct_reports", "mean_length", "mining.mined") else 3
    return f"{c.mean:.{digits}f} +- {c.sd:.{digits}f}" + (DAGGER if c.significant else "")
  rows = [[name] + [cell(row.get(c), c) for c in columns] for name, row in table.items()]
  note = (f"mean +- sd over seeds {', '.join(map(str, seeds))}; {DAGGER}: higher than {reference}, p < "
          f"{SIGNIFICANCE_LEVEL}: paired t-test on per-report scores pooled over the seeds (BLEU, METEOR, "
          f"ROUGE-L), over the seeds' values (the others).")
  return _render(header, rows, markdown) + ("\n\n" if markdown else "\n") + note


def paper_comparable(run: Run) -> bool:
  """Whether the paper's Table 2 numbers speak of ``run``'s data: IU X-Ray only (not the synthetic set,
  not MIMIC-CXR)."""
  dataset = run.config.get("dataset", {}).get("name", "") if isinstance(run.config, dict) else ""
  return dataset.startswith("iu_xray")


def format_seed_intervals(seeds: Sequence, table: Mapping[str, Mapping[str, SeedCell]],
                          paper: Mapping[str, tuple] | None = None, markdown: bool = False) -> str:
  """Per model and caption metric: the mean, the 95% interval over the seeds and, where ``paper`` gives the
  model's Table 2 row (runs on IU X-Ray), the paper's value and its distance from the mean in standard
  deviations over the seeds ((paper - mean) / sd)."""
  paper = paper or {}
  header = ["METHOD"] + [METRIC_NAMES[m] for m in METRIC_NAMES]
  rows = []
  for name, row in table.items():
    cells = []
    for k, metric in enumerate(METRIC_NAMES):
      c = row.get(metric)
      if c is None:
        cells.append("-")
        continue
      lo_hi = c.interval
      text = f"{c.mean:.3f} [{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]" if lo_hi else f"{c.mean:.3f} (one seed)"
      value = paper.get(name, (None,) * len(METRIC_NAMES))[k]
      if value is not None:
        z = f"{(value - c.mean) / c.sd:+.1f} sd" if c.sd > 0 else "sd 0"
        text += f" | paper {value:.3f}, {z}"
      cells.append(text)
    rows.append([name] + cells)
  note = (f"mean [95% interval over seeds {', '.join(map(str, seeds))}, Student's t]"
          + ("; paper: Table 2's value, (paper - mean) / sd over the seeds" if paper else
             "; no paper column: the paper's Table 2 is IU X-Ray's, these runs are not"))
  return _render(header, rows, markdown) + ("\n\n" if markdown else "\n") + note


# ------------------------------------------------------------------------------------------ clinical efficacy
CLINICAL_COLUMNS = {"micro_f1": "CE micro-F1", "macro_f1": "CE macro-F1", "strict_micro_f1": "strict micro-F1",
                    "micro_precision": "CE P", "micro_recall": "CE R", "distinct_reports": "distinct",
                    "mean_length": "mean length"}


def format_clinical(runs: Sequence[Run], markdown: bool = False, block: str = "clinical") -> str:
  """The ``clinical`` block of every run that has one (``jpg_jax/clinical.py``: findings read from the
  reports against the cases' true findings), or with ``block='chexpert'`` the CheXpert labels' CE scores
  of real reports (``jpg_jax/findings.py``), and the most-frequent-report baseline of the first; '' when
  no run has one."""
  columns = CLINICAL_COLUMNS if block == "clinical" else CHEXPERT_COLUMNS
  scored = [(run.name, run.metrics[block]) for run in runs if block in run.metrics]
  if not scored:
    return ""
  baseline = next((run.metrics["baseline_most_frequent"].get(block) for run in runs
                   if block in run.metrics.get("baseline_most_frequent", {})), None)
  if baseline is not None:
    scored.append(("most frequent report", baseline))
  header = ["METHOD"] + list(columns.values())
  def cell(key, value):
    if key == "distinct_reports":
      return str(int(value))
    return f"{value:.1f}" if key == "mean_length" else f"{value:.3f}"
  rows = [[name] + [cell(k, scores[k]) for k in columns] for name, scores in scored]
  return _render(header, rows, markdown)


CHEXPERT_COLUMNS = {"micro_precision": "CE P (micro)", "micro_recall": "CE R (micro)", "micro_f1": "CE F1 (micro)",
                    "macro_precision": "CE P (macro)", "macro_recall": "CE R (macro)", "macro_f1": "CE F1 (macro)"}


# ------------------------------------------------------------------------------------------ Fig. 3
HEADS = ("alexnet", "nin", "googlenet")


def fig3_values(runs: Sequence[Run]) -> dict[tuple[str, bool], float]:
  """(head, uses the subspace) -> test label micro-F1, from the runs whose config matches."""
  values = {}
  for run in runs:
    model = run.config.get("model", {})
    if not model.get("use_labeler", True) or "label_micro_f1" not in run.metrics:
      continue
    key = (model.get("head", "googlenet"), bool(model.get("use_subspace", True)))
    values[key] = float(run.metrics["label_micro_f1"])
  return values


def plot_fig3(values: Mapping[tuple[str, bool], float], path) -> None:
  """Grouped bars: each head with raw extractor features and with the shared subspace."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  heads = [h for h in HEADS if any(k[0] == h for k in values)]
  x = np.arange(len(heads))
  fig, ax = plt.subplots(figsize=(5, 3.2))
  for offset, (subspace, label) in zip((-0.2, 0.2), ((False, "raw features"), (True, "shared subspace"))):
    ys = [values.get((h, subspace), np.nan) for h in heads]
    bars = ax.bar(x + offset, ys, 0.4, label=label)
    ax.bar_label(bars, fmt="%.3f", fontsize=7)
  ax.set_xticks(x, [{"alexnet": "AlexNet", "nin": "NIN", "googlenet": "GoogLeNet"}[h] for h in heads])
  ax.set_ylabel("test label micro-F1")
  ax.set_title("Fig. 3: classification with context-aware labels")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(str(path), dpi=110)
  plt.close(fig)


# ------------------------------------------------------------------------------------------ curves
def _records(path: str):
  """The records of a TFRecord-framed file (TensorBoard's event files): length, crc, data, crc."""
  with open(path, "rb") as f:
    while True:
      head = f.read(12)
      if len(head) < 12:
        return
      (length,) = struct.unpack("<Q", head[:8])
      data = f.read(length)
      f.read(4)
      if len(data) < length:
        return
      yield data


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
  """Every scalar of the TensorBoard event files in ``logdir``: tag -> [(step, value)] by step."""
  scalars: dict[str, dict[int, float]] = {}
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    for data in _records(path):
      event = event_pb2.Event.FromString(data)
      for value in event.summary.value:
        if value.HasField("simple_value"):
          scalars.setdefault(value.tag, {})[int(event.step)] = float(value.simple_value)
        elif value.HasField("tensor") and value.tensor.float_val:
          scalars.setdefault(value.tag, {})[int(event.step)] = float(value.tensor.float_val[0])
  return {tag: sorted(points.items()) for tag, points in scalars.items()}


DEFAULT_CURVES = ("stage1/train_loss", "stage1/val_label_log_likelihood", "stage1/val_pattern_macro_f1",
                  "stage2/train_report_loss", "stage2/train_loss", "stage2/val_BLEU_4", "stage2/val_ROUGE_L",
                  "stage2/val_distinct_reports")


def plot_curves(scalars: Mapping[str, Sequence[tuple[int, float]]], path,
                tags: Sequence[str] = DEFAULT_CURVES) -> list[str]:
  """One panel per tag found; returns the tags drawn."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  tags = [t for t in tags if scalars.get(t)]
  if not tags:
    raise ValueError(f"None of the tags {list(tags)} is in the logs (found {sorted(scalars)[:20]}).")
  cols = min(3, len(tags))
  rows = -(-len(tags) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows), squeeze=False)
  for ax, tag in zip(axes.flat, tags):
    steps, values = zip(*scalars[tag])
    ax.plot(steps, values, marker="." if len(steps) < 30 else None)
    ax.set_title(tag, fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=7)
  for ax in list(axes.flat)[len(tags):]:
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(str(path), dpi=100)
  plt.close(fig)
  return tags


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
