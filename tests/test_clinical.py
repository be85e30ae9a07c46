"""Clinical efficacy on the synthetic data: the findings of every reference report read back exactly, and
precision / recall / F1 over finding kinds (and strict: side and zone too)."""

import pytest

from jpg_jax import clinical
from jpg_jax import text
from jpg_jax.datasets import synthetic_cxr
from jpg_jax.datasets import synthetic_findings as sf

F = sf.Finding
_by_kind = lambda fs: sorted(fs, key=lambda f: f.kind)


def test_every_reference_report_of_every_split_is_read_back_exactly():
  """``synthetic_cxr/templates`` (seed 0: 1000 / 150 / 150 cases, ``tiny`` is their start), as written and
  as R2Gen's cleaning leaves it: the findings of its MeSH terms, severity where the text states one."""
  config = next(c for c in synthetic_cxr.SyntheticCxr.BUILDER_CONFIGS if c.name == "templates")
  cases = 0
  for split, size in enumerate((config.num_train, config.num_val, config.num_test)):
    for _, _, findings, report, mesh, _ in synthetic_cxr.template_cases(config.seed, split, size):
      truth = _by_kind(clinical.true_findings(mesh))
      assert truth == _by_kind(map(sf.as_stated, findings))
      assert _by_kind(sf.read_findings(report)) == truth, report
      assert _by_kind(sf.read_findings(text.clean_report_iu_xray(report))) == truth, report
      cases += 1
  assert cases == 1300


@pytest.mark.parametrize("report, expected", [
    ("there is no pneumothorax or pleural effusion . the lungs are clear .", []),
    ("no pleural effusion . no pneumothorax . no focal airspace disease .", []),
    ("there is a small left pneumothorax . there is a small left pneumothorax .",
     [F("pneumothorax", side="left", severity="small")]),
    ("heart size is within normal limits . there is airspace opacity in the bilateral bases .",
     [F("opacity", zone="base", side="bilateral")]),
    ("a rightsided central venous catheter is in place . low lung volumes .",
     [F("catheter", side="right"), F("hypoinflation")]),
    ("the heart is mildly enlarged . calcified granuloma in the left", [
        F("cardiomegaly", severity="mild"), F("granuloma", side="left")]),   # cut short: no zone
])
def test_generated_text_is_read_leniently(report, expected):
  assert _by_kind(sf.read_findings(report)) == _by_kind(expected)


def test_scores_over_kinds_and_strict():
  truth = [[F("opacity", "base", "left"), F("cardiomegaly", severity="mild")], [],
           [F("nodule", "upper lobe", "right")]]
  perfect = clinical.scores(truth, truth)
  assert perfect["micro_f1"] == perfect["macro_f1"] == perfect["strict_micro_f1"] == 1.0
  # Case 0: both kinds named, the opacity on the wrong side; case 1: a finding invented; case 2: missed.
  predicted = [[F("opacity", "base", "right"), F("cardiomegaly", severity="severe")], [F("scoliosis")], []]
  s = clinical.scores(predicted, truth)
  assert (s["micro_precision"], s["micro_recall"]) == pytest.approx((2 / 3, 2 / 3))
  assert s["micro_f1"] == pytest.approx(2 / 3)
  assert s["macro_recall"] == pytest.approx((1 + 1 + 0) / 3)   # the kinds that occur: opacity, cardiomegaly, nodule
  assert (s["strict_micro_precision"], s["strict_micro_recall"]) == pytest.approx((1 / 3, 1 / 3))
  assert s["per_kind"]["scoliosis"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0,
                                        "predicted": 1}
  # A normal report for everyone names nothing: no precision, no recall.
  normal = clinical.report_scores(["the lungs are clear ."] * 3, [["Opacity/lung/base/left"], ["normal"], []])
  assert normal["micro_f1"] == normal["micro_recall"] == 0.0 and normal["cases_with_findings"] == 1
  with pytest.raises(ValueError, match="as many"):
    clinical.scores(predicted[:2], truth)


def test_examples_are_picked_where_the_last_run_names_more_findings():
  """``example_pages.pick_examples(by='findings')``: right minus wrong finding kinds, BLEU-4 breaking ties."""
  from jpg_jax import example_pages
  from jpg_jax import results
  true = ["Pneumothorax/right/large", "Cardiomegaly/mild"]
  def row(i, stated, bleu):
    return {"id": i, "findings_true": true, "findings_stated": stated, "scores": {"BLEU_4": bleu}}
  first = [row("a", [], 0.5), row("b", [], 0.5), row("c", [], 0.5), row("d", true, 0.5)]
  last = [row("a", true[:1], 0.1), row("b", true, 0.2), row("c", true[:1], 0.9),
          row("d", ["Pneumothorax/right/large", "Opacity/lung/base/left"], 0.9)]
  runs = [results.Run(n, "", {}, rows, {}) for n, rows in (("BASE", first), ("JPG", last))]
  assert example_pages.findings_score(last[3]) == 0 and example_pages.findings_score(last[1]) == 2
  assert example_pages.pick_examples(runs, 4, by="findings") == ["b", "c", "a", "d"]
  assert example_pages.pick_examples(runs, 2) == ["c", "d"]
