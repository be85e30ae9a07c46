"""Table 2 and Fig. 3 from finished runs, beside the paper's numbers.

  python -m jpg_jax.tools.compare --run=BASE=/runs/base --run=JPG-projection=/runs/proj \\
      --run=JPG-auxiliary=/runs/aux --run=JPG=/runs/jpg [--markdown=table2.md] [--fig3=fig3.png]

Each ``--run=NAME=WORKDIR`` reads ``WORKDIR/results/test_metrics.json`` and ``test_reports.jsonl``. A run
named as a row of the paper's Table 2 (BASE, JPG-projection, JPG-auxiliary, JPG, R2GEN, CMN, ...) is
printed with the paper's numbers and the difference; † marks a run significantly better than the
``--reference`` run (paired t-test on per-report scores, p < 0.05), as the paper marks JPG against BASE.
Runs on the template-written synthetic data also get a clinical-efficacy table (``jpg_jax/clinical.py``)
with the most-frequent-report baseline. ``--fig3`` draws the test label micro-F1 of every run with a
labeler, grouped by classification head
(``model.head``) with and without the shared subspace (``model.use_subspace``).

Several runs of one name are seeds of one model (``config.json``'s ``seed``; every model needs the same
seeds): the table is then mean +- standard deviation over the seeds of the caption metrics, clinical
efficacy, distinct reports and mined labels, † by paired t-tests against the reference's runs of the same
seeds (``results.seed_table``):

  python -m jpg_jax.tools.compare --run=BASE=/runs/base42 --run=BASE=/runs/base43 \\
      --run=JPG=/runs/jpg42 --run=JPG=/runs/jpg43 [--markdown=seeds.md]
"""

from __future__ import annotations

from absl import app
from absl import flags

from jpg_jax import cli
from jpg_jax import figures
from jpg_jax import results

_RUNS = flags.DEFINE_multi_string("run", None, "NAME=WORKDIR of a finished run (repeat).")
_REFERENCE = flags.DEFINE_string("reference", "BASE", "The run the significance test compares with.")
_MARKDOWN = flags.DEFINE_string("markdown", "", "Also write the table as Markdown to this file.")
_FIG3 = flags.DEFINE_string("fig3", "", "Write Fig. 3 (classification quality per head) to this PNG.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  runs = results.parse_runs(_RUNS.value)
  names = [run.name for run in runs]
  if len(set(names)) < len(names):   # seeds of the same models
    try:
      seeds, table = results.seed_table(runs, _REFERENCE.value)
    except ValueError as e:   # models with different seeds, or one seed twice
      raise app.UsageError(str(e)) from None
    paper = {r.name: results.PAPER_TABLE2[r.name] for r in runs
             if results.paper_comparable(r) and r.name in results.PAPER_TABLE2}
    print(results.format_seed_table(seeds, table, _REFERENCE.value))
    print()
    print(results.format_seed_intervals(seeds, table, paper))
    if _MARKDOWN.value:
      with open(_MARKDOWN.value, "w") as f:
        f.write(results.format_seed_table(seeds, table, _REFERENCE.value, markdown=True) + "\n\n")
        f.write(results.format_seed_intervals(seeds, table, paper, markdown=True) + "\n")
    return
  table = results.table2(runs, _REFERENCE.value)
  print(results.format_table2(table, _REFERENCE.value))
  print(f"One run per row ({', '.join(f'{r.name}: seed {results.seed_of(r)}' for r in runs)}): no spread over "
        f"seeds; give each name several --run (one per seed) for mean, sd and 95% intervals.")
  blocks = (("clinical", "Clinical efficacy (findings read from the reports against the cases' true findings)"),
            ("chexpert", "Clinical efficacy (CheXpert's 14 labels read from generated and reference reports by "
                         "jpg_jax/chexpert.py, positives only)"))
  for block, title in blocks:
    text = results.format_clinical(runs, block=block)
    if text:
      print(f"\n{title}:")
      print(text)
  if _MARKDOWN.value:
    with open(_MARKDOWN.value, "w") as f:
      f.write(results.format_table2(table, _REFERENCE.value, markdown=True) + "\n")
      for block, _ in blocks:
        text = results.format_clinical(runs, markdown=True, block=block)
        if text:
          f.write("\n" + text + "\n")
  if _FIG3.value:
    values = figures.fig3_values(runs)
    if not values:
      raise app.UsageError("No run with a labeler: Fig. 3 needs runs with model.use_labeler.")
    figures.plot_fig3(values, _FIG3.value)
    print(f"Fig. 3 ({len(values)} bars): {_FIG3.value}")


if __name__ == "__main__":
  cli.run(main, required=["run"])
