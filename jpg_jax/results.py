"""Finished runs and their tables: Table 2 beside the paper's (one run a row, or several seeds a row with
intervals and paired tests), the clinical-efficacy table.

A run is a workdir written by ``train.train_and_evaluate``: ``config.json``, ``results/test_metrics.json``,
``results/test_reports.jsonl`` (per-report predictions and scores) and ``logs/`` (TensorBoard events).
Every number printed here is read from those files; the paper's are copied from its Table 2. Figures of
runs are ``figures.py``'s, example pages ``example_pages.py``'s; the command-line front ends are
``jpg_jax.tools.compare``, ``.seeds``, ``.curves`` and ``.examples``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Mapping, Sequence

import numpy as np
from etils import epath

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
  X-Ray's (the paper's numbers are IU X-Ray's; a synthetic or MIMIC-CXR run named JPG has no paper row
  to differ from)."""
  return PAPER_TABLE2.get(run.name) if paper_comparable(run) else None


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
  on_paper_data = any(c.paper is not None for cells in table.values() for c in cells.values())
  for name, values in PAPER_TABLE2.items():   # the paper's other rows, for context on its data only
    if on_paper_data and name not in table:
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
  of real reports (``jpg_jax/chexpert.py``), and the most-frequent-report baseline of the first; '' when
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
