"""The mimic_cxr builder on small files written in R2Gen's MIMIC-CXR layout, and a run of ``:mimic`` on them.

MIMIC-CXR itself is credentialed and not here: the fixture writes an ``annotation.json`` with R2Gen's entry
fields and JPEG images under MIMIC-CXR-JPG's folder names (``images/p10/p10000032/s5.../<dicom>.jpg``),
with MIMIC-style report text (``___`` anonymisation, newlines, list markers).
"""

import collections
import io
import json

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from configs import jpg
from jpg_jax import chexpert
from jpg_jax import datasets
from jpg_jax import errors
from jpg_jax import input_pipeline as ip
from jpg_jax import labels as labels_lib
from jpg_jax import text
from jpg_jax.datasets import common
from jpg_jax.datasets import mimic_cxr

SENTENCES = {
    "normal": ["The lungs are clear without focal consolidation, pleural effusion or pneumothorax.",
               "The cardiomediastinal silhouette is within normal limits.", "No acute osseous abnormalities.",
               "Heart size is normal."],
    "Cardiomegaly": ["Moderate cardiomegaly is unchanged."],
    "Pleural Effusion": ["Small left pleural effusion."],
    "Lung Opacity": ["Right lower lobe opacity concerning for pneumonia."],
    "Edema": ["Mild pulmonary edema."],
    "Pneumothorax": ["Small right apical pneumothorax."],
    "Atelectasis": ["Bibasilar atelectasis."],
}
SIZES = {"train": 40, "val": 8, "test": 8}
LARGE = (700, 600)   # (width, height) of the first training image: above max_side = 512


def _report(rng: np.random.Generator, k: int) -> tuple[str, tuple[str, ...]]:
  """A MIMIC-style report and the terms it states: normal, or one or two findings."""
  kinds = [o for o in SENTENCES if o != "normal"]
  chosen = [] if k % 3 == 0 else sorted(rng.choice(kinds, size=1 + (k % 3 == 2), replace=False).tolist(),
                                         key=chexpert.OBSERVATIONS.index)
  sentences = [SENTENCES[o][0] for o in chosen] or list(rng.choice(SENTENCES["normal"], 2, replace=False))
  body = "\n ".join(["PA and lateral views of the chest.  Compared to ___."] + sentences)
  return f"FINDINGS:\n {body}", tuple(chosen) or ("normal",)


def _jpeg(size, value: int) -> bytes:
  buf = io.BytesIO()
  x = (np.add.outer(np.arange(size[1]), np.arange(size[0])) * 3 + value) % 256
  Image.fromarray(np.stack([x] * 3, -1).astype(np.uint8), "RGB").save(buf, "JPEG", quality=90)
  return buf.getvalue()


def write_mimic_layout(root, seed: int = 0):
  """R2Gen's MIMIC-CXR layout under ``root``; returns the annotation and each entry's expected terms."""
  rng = np.random.default_rng(seed)
  annotation, expected = {}, {}
  k = 0
  for split, n in SIZES.items():
    entries = []
    for _ in range(n):
      subject, study = 10000000 + k // 2, 50000000 + k   # two studies a patient
      dicom = f"{k:08x}-bde0afdd-112c0b34-7bc16630-4e384014"
      rel = f"p{str(subject)[:2]}/p{subject}/s{study}/{dicom}.jpg"
      report, terms = _report(rng, k)
      entries.append({"id": dicom, "study_id": study, "subject_id": subject, "report": report,
                      "image_path": [rel], "split": split})
      path = root / "images" / rel
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_bytes(_jpeg(LARGE if k == 0 else (80, 70), k))
      expected[dicom] = terms
      k += 1
    annotation[split] = entries
  (root / "annotation.json").write_text(json.dumps(annotation))
  return annotation, expected


@pytest.fixture(scope="module")
def mimic_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("mimic_manual")
  annotation, expected = write_mimic_layout(root)
  return root, annotation, expected


@pytest.fixture(scope="module")
def built(mimic_dir, tmp_path_factory):
  manual, _, _ = mimic_dir
  data_dir = tmp_path_factory.mktemp("mimic_tfds")
  return str(data_dir), datasets.prepare("mimic_cxr/r2gen", str(data_dir), str(manual))


def test_builds_r2gens_split_with_one_image_and_the_reports_terms(mimic_dir, built):
  _, annotation, expected = mimic_dir
  data_dir, builder = built
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == SIZES
  assert datasets.views("mimic_cxr/r2gen") == ("image",) and "frontal" not in builder.info.features
  assert builder.info.metadata["labeler"] == chexpert.LABELER_VERSION
  assert builder.info.metadata["empty_reports"] == {} and builder.info.metadata["skipped"] == {}
  by_id = {e["id"]: e for s in annotation.values() for e in s}
  source = builder.as_data_source("train")
  for i in range(len(source)):
    ex = source[i]
    entry = by_id[ex["id"].decode()]
    assert ex["findings"].decode() == entry["report"] and ex["patient_id"].decode() == str(entry["subject_id"])
    assert tuple(t.decode() for t in ex["mesh"]) == expected[entry["id"]]
    w, h = LARGE if entry["id"].startswith("00000000") else (80, 70)
    scale = min(1.0, 512 / max(w, h))
    # Grey (one channel), the longer side at most 512 (JPEG draft decoding, then bilinear).
    assert ex["image"].shape == (round(h * scale), round(w * scale), 1), entry["id"]


def test_full_size_config_keeps_the_images_size(mimic_dir, tmp_path):
  manual, annotation, _ = mimic_dir
  builder = datasets.prepare("mimic_cxr/r2gen_full", str(tmp_path), str(manual))
  source = builder.as_data_source("train", decoders={"image": tfds.decode.SkipDecoding()})
  first = next(source[i] for i in range(len(source)) if source[i]["id"].decode() == annotation["train"][0]["id"])
  assert Image.open(io.BytesIO(first["image"])).size == LARGE


def test_pipeline_reads_one_view_and_cleans_reports_as_r2gen(built, mimic_dir):
  from tests import torch_reference as ref
  data_dir, _ = built
  _, annotation, _ = mimic_dir
  source = ip.open_split("mimic_cxr/r2gen", "val", data_dir)
  index = ip.SplitIndex.read(source, datasets.report_cleaning("mimic_cxr/r2gen"))
  by_id = {e["id"]: e for e in annotation["val"]}
  for example_id, cleaned in zip(index.ids, index.reports):
    assert cleaned == ref.r2gen_clean_report_mimic_cxr(by_id[example_id]["report"])
    assert "___" not in cleaned and "\n" not in cleaned
  config = jpg.get_config("mimic")
  views = ip.case_views(source[0], ip.image_options(config, train=True), np.random.default_rng(0))
  assert views.shape == (1, 224, 224, 3)
  assert ip.case_views(source[0], ip.image_options(config, train=False)).shape == (1, 224, 224, 3)


def test_bad_inputs_name_the_file_and_entry(mimic_dir, tmp_path):
  manual, annotation, _ = mimic_dir
  broken = tmp_path / "manual"
  broken.mkdir()
  (broken / "images").symlink_to(manual / "images")
  bad = json.loads(json.dumps(annotation))
  bad["test"][1]["image_path"] = ["p10/p10000099/s59999999/missing.jpg"]
  (broken / "annotation.json").write_text(json.dumps(bad))
  with pytest.raises(common.BadImageError, match=r"missing\.jpg of report"):
    datasets.prepare("mimic_cxr/r2gen", str(tmp_path / "a"), str(broken))
  builder = datasets.prepare("mimic_cxr/r2gen_skip_bad", str(tmp_path / "b"), str(broken))
  assert builder.info.splits["test"].num_examples == SIZES["test"] - 1
  assert builder.info.metadata["skipped"] == {"bad_image": 1}
  bad["val"][0] = {"id": "x", "report": "Clear."}
  (broken / "annotation.json").write_text(json.dumps(bad))
  with pytest.raises(errors.InputError, match="entry 0 of 'val' needs .*'image_path'"):
    datasets.prepare("mimic_cxr/r2gen", str(tmp_path / "c"), str(broken))
  with pytest.raises(errors.MissingFileError, match="does not exist.*put the files there"):
    datasets.prepare("mimic_cxr/r2gen", str(tmp_path / "d"), str(tmp_path / "nowhere"))
  (broken / "annotation.json").write_text("{\"train\": [")
  with pytest.raises(errors.InputError, match="annotation.json is not valid JSON"):
    datasets.prepare("mimic_cxr/r2gen", str(tmp_path / "f"), str(broken))
  (broken / "annotation.json").unlink()
  with pytest.raises(errors.MissingFileError, match="annotation.json is missing"):
    datasets.prepare("mimic_cxr/r2gen", str(tmp_path / "e"), str(broken))


def test_empty_reports_are_kept_as_r2gen_keeps_them_and_counted():
  annotation = {s: [{"id": f"{s}{k}", "report": "" if k == 0 else "Clear.", "image_path": ["a.jpg"]}
                    for k in range(3)] for s in mimic_cxr.SPLITS}
  splits, empty = mimic_cxr.entries_by_split(annotation)
  assert {s: len(v) for s, v in splits.items()} == {"train": 3, "val": 3, "test": 3}
  assert empty == {"train": 1, "val": 1, "test": 1}
  assert text.clean_report_mimic_cxr("") == " ."   # R2Gen's cleaning of an empty report


def test_mimic_config_is_r2gens_run_mimic_cxr():
  c = jpg.get_config("mimic")
  assert (c.dataset.name, c.dataset.max_seq_length, c.dataset.vocab_threshold) == ("mimic_cxr/r2gen", 100, 10)
  assert (c.train.stage2_epochs, c.optim.lr_step_epochs, c.optim.lr_gamma) == (30.0, 1, 0.8)
  assert c.dataset.manual_dir.endswith("mimic_cxr")
  # The model and the rest of the optimiser are the paper config's.
  paper = jpg.get_config()
  assert c.model == paper.model and c.optim.learning_rate == paper.optim.learning_rate
  assert jpg.get_config("mimic,r2gen").model == jpg.get_config("r2gen").model
  # CMN on MIMIC-CXR: R2GenCMN's train_mimic_cxr.sh (StepLR(3, 0.8), lr_ve 1e-4, lr_ed 5e-4).
  cmn = jpg.get_config("mimic,cmn")
  assert (cmn.optim.lr_step_epochs, cmn.optim.lr_gamma, cmn.optim.learning_rate,
          cmn.optim.extractor_learning_rate, cmn.dataset.max_seq_length) == (3, 0.8, 5e-4, 1e-4, 100)
  assert jpg.get_config("mimic,r2gen").optim.lr_step_epochs == 1


def mimic_smoke_config(data_dir, manual_dir):
  """``:mimic``'s data settings with the smoke config's model, labels and training sizes."""
  config = jpg.get_config("mimic")
  smoke = jpg.get_config("smoke")
  config.unlock()
  config.model, config.labels, config.train = smoke.model, smoke.labels, smoke.train
  config.dataset.image_size, config.dataset.resize_size = smoke.dataset.image_size, smoke.dataset.resize_size
  config.dataset.data_dir, config.dataset.manual_dir = data_dir, str(manual_dir)
  config.resnet_checkpoint = "random"   # tiny test images: no ImageNet weights (asked for explicitly)
  config.train.stage1_epochs, config.train.stage2_epochs = 2.0, 1.0
  config.lock()
  return config


def test_a_mimic_run_trains_on_one_view_and_scores_chexpert(built, mimic_dir, tmp_path):
  from jpg_jax import main
  from jpg_jax import train
  data_dir, _ = built
  manual, _, _ = mimic_dir
  config = mimic_smoke_config(data_dir, manual)
  metrics = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert np.isfinite(metrics["BLEU_4"])
  results = tmp_path / "run" / "results"
  saved = json.loads((results / "test_metrics.json").read_text())
  assert saved["num_reports"] == SIZES["test"]
  # CheXpert CE for the model and the most-frequent baseline (MIMIC-CXR reports are real reports).
  assert {"micro_f1", "macro_f1"} <= set(saved["chexpert"]) and "chexpert" in saved["baseline_most_frequent"]
  rows = [json.loads(l) for l in (results / "test_reports.jsonl").read_text().splitlines()]
  assert len(rows) == SIZES["test"]
  # Stage 1's patterns are single observations (the labeler's terms), and the vocabulary is R2Gen's:
  # tokens of the cleaned training reports seen at least 10 times.
  patterns = labels_lib.LabelSet.load(tmp_path / "run" / "labels" / "stage1_patterns.json")
  observations = {mimic_cxr.report_terms(o)[0].lower().replace(" ", "_") for o in chexpert.OBSERVATIONS[1:]}
  assert patterns.labels and all(len(p) == 1 and p[0] in observations | {"normal"} for p in patterns.labels)
  vocab = text.Vocabulary.load(tmp_path / "run" / "vocab.json")
  index = ip.SplitIndex.read(ip.open_split(config.dataset.name, "train", data_dir), "mimic_cxr")
  counts = collections.Counter(t for r in index.reports for t in r.split())
  assert vocab == text.Vocabulary.build(index.reports, 10)
  assert {t for t, c in counts.items() if c >= 10} | {"<unk>"} == set(vocab.token2idx)
  assert any(3 <= c < 10 for c in counts.values())   # kept by IU X-Ray's threshold, not by this one
  # Table 1 counts one image per example.
  table = main.run_stats(config)
  train_row = next(l for l in table.splitlines() if l.startswith("TRAIN")).split()
  assert train_row[1] == train_row[2] == str(SIZES["train"])


def test_table2_gives_no_paper_row_to_a_mimic_run():
  """The paper's Table 2 is IU X-Ray's: a MIMIC-CXR run named JPG is not set against it."""
  from jpg_jax import results
  metrics = {m: 0.1 for m in results.METRICS}
  runs = [results.Run("JPG", "", metrics, [], {"dataset": {"name": name}})
          for name in ("mimic_cxr/r2gen", "iu_xray/r2gen", "synthetic_cxr/templates")]
  assert results.paper_row(runs[0]) is None and results.paper_row(runs[1]) == results.PAPER_TABLE2["JPG"]
  assert results.paper_row(runs[2]) is None
  text_table = results.format_table2(results.table2(runs[:1], reference="none"))
  assert "ours - paper" not in text_table and "ours" in text_table and "VisualGPT" not in text_table


def test_a_dataset_labelled_by_another_labeler_is_named(built, mimic_dir, monkeypatch, caplog):
  data_dir, _ = built
  manual, _, _ = mimic_dir
  config = mimic_smoke_config(data_dir, manual)
  ip.load_data(config)
  assert "CheXpert labeler" not in caplog.text
  monkeypatch.setattr(chexpert, "LABELER_VERSION", "0123456789ab")
  ip.load_data(config)
  assert "written by CheXpert labeler" in caplog.text and "Delete" in caplog.text
