"""The findings labeler (jpg_jax/chexpert.py): negation, uncertainty and their scopes on written sentences,
the MeSH mapping, and its agreement with IU X-Ray's human annotation pinned on the real archive."""

import pytest

from jpg_jax import chexpert

P, N, U = chexpert.POSITIVE, chexpert.NEGATIVE, chexpert.UNCERTAIN


@pytest.mark.parametrize("text, expected", [
    ("There is a small right pleural effusion.", {"Pleural Effusion": P, "No Finding": N}),
    ("No pleural effusion or pneumothorax.", {"Pleural Effusion": N, "Pneumothorax": N, "No Finding": P}),
    ("No focal consolidation, pleural effusion, or pneumothorax.",
     {"Consolidation": N, "Pleural Effusion": N, "Pneumothorax": N, "No Finding": P}),
    ("The lungs are clear without infiltrate.", {"Lung Opacity": N, "No Finding": P}),
    ("Negative for pneumothorax.", {"Pneumothorax": N, "No Finding": P}),
    ("The heart is not enlarged.", {"Cardiomegaly": N, "No Finding": P}),
    ("Heart size is mildly enlarged.", {"Cardiomegaly": P, "No Finding": N}),
    ("Cardiomegaly.", {"Cardiomegaly": P, "No Finding": N}),
    ("Cannot exclude pneumonia.", {"Pneumonia": U, "No Finding": N}),
    ("Pneumonia cannot be excluded.", {"Pneumonia": U, "No Finding": N}),
    ("Possible small left effusion.", {"Pleural Effusion": U, "No Finding": N}),
    ("Borderline cardiomegaly.", {"Cardiomegaly": U, "No Finding": N}),
    ("Scarring or atelectasis in the left base.", {"Atelectasis": U, "No Finding": N}),
    ("No pneumothorax, but there is a small effusion.",
     {"Pneumothorax": N, "Pleural Effusion": P, "No Finding": N}),
    ("The previously seen effusion has resolved.", {"Pleural Effusion": N, "No Finding": P}),
    ("Calcified granuloma in the right upper lobe.", {"No Finding": P}),
    ("Small pericardial effusion.", {"No Finding": P}),
    ("Right subclavian catheter tip in the SVC. Lungs are clear.", {"Support Devices": P, "No Finding": P}),
    ("Healed left rib fracture.", {"Fracture": P, "No Finding": N}),
    ("", {"No Finding": P}),
])
def test_label_report(text, expected):
  assert chexpert.label_report(text) == expected


def test_positives_are_what_ce_scores_count():
  assert chexpert.positives("Possible effusion. Large right pneumothorax. No edema.") == {"Pneumothorax"}


@pytest.mark.parametrize("terms, expected", [
    (("normal",), {"No Finding"}),
    (("Cardiomegaly/mild", "Pleural Effusion/right/small"), {"Cardiomegaly", "Pleural Effusion"}),
    (("Cardiomegaly/borderline",), set()),                        # uncertain: neither positive nor normal
    (("Calcified Granuloma/lung/upper lobe/right",), {"No Finding"}),   # not a CheXpert observation
    (("Catheters, Indwelling/right",), {"Support Devices", "No Finding"}),
    (("Opacity/lung/base/left", "Nodule/lung/upper lobe"), {"Lung Opacity", "Lung Lesion"}),
])
def test_mesh_observations(terms, expected):
  assert chexpert.mesh_observations(terms) == expected


def test_agreement_counts():
  a = chexpert.agreement([{"Edema"}, {"Edema", "Fracture"}, set()], [{"Edema"}, set(), {"Fracture"}],
                         observations=("Edema", "Fracture"))
  assert a["per_observation"]["Edema"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3),
                                           "support": 1}
  assert a["per_observation"]["Fracture"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
  assert a["micro"]["precision"] == pytest.approx(1 / 3) and a["micro"]["recall"] == pytest.approx(0.5)


# Pinned from the real archive (README, "Clinical efficacy on real reports"): the labeler's agreement with
# the MeSH major terms over the 3,832 reports with text and indexing, and over R2Gen's test split.
PINNED_F1 = {"No Finding": 0.967, "Enlarged Cardiomediastinum": 0.578, "Cardiomegaly": 0.982,
             "Lung Lesion": 0.678, "Lung Opacity": 0.923, "Edema": 0.788, "Consolidation": 0.903,
             "Pneumonia": 0.702, "Atelectasis": 0.882, "Pneumothorax": 0.857, "Pleural Effusion": 0.839,
             "Pleural Other": 0.741, "Fracture": 0.868, "Support Devices": 0.840}


def test_agreement_with_mesh_on_the_real_archive(iu_reports, r2gen_annotation):
  from jpg_jax.datasets import openi
  result = chexpert.mesh_agreement(iu_reports)
  assert result["num_reports"] == 3832
  got = {o: round(v["f1"], 3) for o, v in result["per_observation"].items()}
  assert got == PINNED_F1
  assert (round(result["micro"]["precision"], 3), round(result["micro"]["recall"], 3),
          round(result["micro"]["f1"], 3), round(result["macro"]["f1"], 3)) == (0.936, 0.907, 0.921, 0.825)
  test_ids = {openi.uid_from_r2gen_id(e["id"]) for e in r2gen_annotation["test"]} & set(iu_reports)
  held = chexpert.mesh_agreement(iu_reports, test_ids)
  assert held["num_reports"] == 565 and round(held["micro"]["f1"], 3) == 0.940


def test_test_results_of_a_real_report_run_carry_chexpert_scores(tmp_path):
  """``inference.write_test_results`` on a real-report dataset writes the ``chexpert`` block for the model and
  for the most-frequent-report baseline, and each report's positive labels."""
  import json
  import types

  from configs import jpg as jpg_config
  from jpg_jax import inference
  from jpg_jax import text as text_lib

  config = jpg_config.get_config()
  with config.unlocked():
    config.dataset.name = "synthetic_cxr/iu_reports"
  references = ["the heart is enlarged . no pleural effusion .", "there is a large right pneumothorax .",
                "the lungs are clear . no pneumothorax ."]
  predictions = ["the heart is enlarged . no pleural effusion .", "the lungs are clear .",
                 "the lungs are clear . no pneumothorax ."]
  vocab = text_lib.Vocabulary.build(references * 3, threshold=1)
  rows = [{"id": str(i), "reference": r, "prediction": p} for i, (r, p) in enumerate(zip(references, predictions))]
  evaluator = types.SimpleNamespace(
      run_with_reports=lambda _: ({"BLEU_4": 0.5}, [dict(r) for r in rows]),
      data=types.SimpleNamespace(vocab=vocab), split="test")
  train_index = types.SimpleNamespace(reports=[references[2]] * 3 + [references[0]])
  metrics = inference.write_test_results(config, tmp_path, evaluator, {}, 7, train_index)
  ce = metrics["chexpert"]
  # Right: cardiomegaly (case 0), No Finding (case 2); wrong: No Finding for case 1, whose pneumothorax is
  # missed. 2 of 3 stated positives are true, 2 of 3 true positives stated.
  assert (ce["micro_precision"], ce["micro_recall"]) == (2 / 3, 2 / 3)
  assert ce["per_observation"]["Pneumothorax"]["recall"] == 0.0
  base = metrics["baseline_most_frequent"]["chexpert"]     # "the lungs are clear . no pneumothorax ." for all
  assert base["micro_recall"] == 1 / 3 and base["per_observation"]["Cardiomegaly"]["recall"] == 0.0
  saved = [json.loads(l) for l in (tmp_path / "test_reports.jsonl").read_text().splitlines()]
  assert saved[0]["chexpert_reference"] == saved[0]["chexpert_generated"] == ["Cardiomegaly"]
  assert saved[1]["chexpert_reference"] == ["Pneumothorax"] and saved[1]["chexpert_generated"] == ["No Finding"]


def test_compare_prints_the_chexpert_block():
  from jpg_jax import results
  block = {"micro_precision": 0.5, "micro_recall": 0.25, "micro_f1": 1 / 3, "macro_precision": 0.1,
           "macro_recall": 0.2, "macro_f1": 0.125}
  run = results.Run("JPG", "/tmp/x", {"chexpert": block, "baseline_most_frequent": {"chexpert": block}}, [], {})
  text = results.format_clinical([run], markdown=True, block="chexpert")
  assert text.splitlines()[2] == "| JPG | 0.500 | 0.250 | 0.333 | 0.100 | 0.200 | 0.125 |"
  assert text.splitlines()[3].startswith("| most frequent report |")
  assert results.format_clinical([run], block="clinical") == ""
