"""Example reports (Fig. 5): the ground truth and each run's report side by side, as Markdown or HTML.

  python -m jpg_jax.tools.examples --run=BASE=/runs/base --run=JPG=/runs/jpg --ids=CXR1_1_IM-0001 \\
      --output=examples.md          # .html for an HTML page

Without ``--ids`` the ``--num`` test reports where the last run beats the first by most on ``--by`` are
shown (the paper's Fig. 5 shows where JPG helps): BLEU-4 by default, or ``--by=findings`` on synthetic
data (finding kinds named right minus named wrong, ``example_pages.findings_score``); the page says which rule
picked them.
"""

from __future__ import annotations

from absl import app
from absl import flags

from jpg_jax import cli
from jpg_jax import example_pages
from jpg_jax import results

_RUNS = flags.DEFINE_multi_string("run", None, "NAME=WORKDIR of a finished run (repeat; shown in order).")
_IDS = flags.DEFINE_list("ids", [], "Test example ids to show.")
_NUM = flags.DEFINE_integer("num", 3, "Without --ids: how many examples to pick.")
_BY = flags.DEFINE_enum("by", "BLEU_4", list(results.METRICS) + ["findings"],
                        "Without --ids: what the last run beats the first on (findings: synthetic data).")
_OUTPUT = flags.DEFINE_string("output", None, "Markdown (.md) or HTML (.html) file to write.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  runs = results.parse_runs(_RUNS.value)
  ids = _IDS.value or example_pages.pick_examples(runs, _NUM.value, _BY.value)
  fmt = "html" if _OUTPUT.value.endswith((".html", ".htm")) else "md"
  page = example_pages.examples_page(runs, ids, fmt)
  if fmt == "md":
    rule = ("chosen ids" if _IDS.value else
            f"the {len(ids)} test reports where {runs[-1].name} beats {runs[0].name} by most on "
            + ("the findings it names (right minus wrong; BLEU-4 breaks ties)" if _BY.value == "findings"
               else results.METRIC_NAMES[_BY.value]))
    page = f"# Example reports ({rule})\n\n" + page
  with open(_OUTPUT.value, "w") as f:
    f.write(page)
  print(f"{len(ids)} examples: {_OUTPUT.value}")


if __name__ == "__main__":
  cli.run(main, required=["run", "output"])
