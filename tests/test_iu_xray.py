"""The Open-i parser and the iu_xray builder on the real report archive and R2Gen split."""

import io
import json
import tarfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from jpg_jax import datasets
from jpg_jax import errors
from jpg_jax import text
from jpg_jax.datasets import common
from jpg_jax.datasets import iu_xray
from jpg_jax.datasets import openi


def test_parses_all_3955_reports(iu_reports):
  assert len(iu_reports) == 3955
  with_findings = [r for r in iu_reports.values() if r.findings]
  assert len(with_findings) == 3425
  assert sum(len(r.image_ids) for r in iu_reports.values()) == 7470
  assert sum(r.mesh_major == ("normal",) for r in with_findings) == 1206
  assert len({t for r in iu_reports.values() for t in r.mesh_major}) == 1719
  r = iu_reports["1"]
  assert r.indication == "Positive TB test" and r.impression == "Normal chest x-XXXX."
  assert r.image_ids == ("CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001")


def test_exclusion_counts(iu_reports):
  kept, excluded = openi.select_reports(iu_reports.values())
  assert len(kept) == 3425 and excluded == {"no_findings": 530}
  kept, excluded = openi.select_reports(iu_reports.values(), exclude_no_indexing=True, min_images=2)
  assert len(kept) == 2885
  assert excluded == {"no_findings": 530, "fewer_images": 450, "mesh_no_indexing": 90}


def test_r2gen_split_matches_the_archive(iu_reports, r2gen_annotation):
  splits, excluded = iu_xray.r2gen_splits(r2gen_annotation, iu_reports)
  assert {k: len(v) for k, v in splits.items()} == {"train": 2069, "val": 296, "test": 590}
  assert not excluded
  for split, entries in r2gen_annotation.items():
    for entry, (example_id, report) in zip(entries, splits[split]):
      assert example_id == entry["id"]
      assert " ".join(report.findings.split()) == " ".join(entry["report"].split())


def test_paper_split_is_70_10_20_by_patient_and_seeded(iu_reports):
  splits, _ = iu_xray.paper_splits(iu_reports, seed=0)
  sizes = {k: len(v) for k, v in splits.items()}
  assert sizes == {"train": 2019, "val": 288, "test": 578}
  uids = [{r.uid for _, r in v} for v in splits.values()]
  assert not (uids[0] & uids[1] or uids[0] & uids[2] or uids[1] & uids[2])
  again, _ = iu_xray.paper_splits(iu_reports, seed=0)
  other, _ = iu_xray.paper_splits(iu_reports, seed=1)
  assert again == splits and other != splits


# ---------------------------------------------------------------------------- building with images
def _png(value: int, size=(6, 5)) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(np.full(size, value, np.uint8)).save(buf, "PNG")
  return buf.getvalue()


def _r2gen_manual_dir(root, iu_xray_dir, annotation, ids=None):
  """R2Gen's layout with placeholder PNGs under the real file names; the shared files linked in place."""
  root.mkdir(parents=True, exist_ok=True)
  (root / openi.REPORTS_ARCHIVE).symlink_to(iu_xray_dir / openi.REPORTS_ARCHIVE)
  if ids is not None:
    annotation = {s: [e for e in v if e["id"] in ids] for s, v in annotation.items()}
    (root / "annotation.json").write_text(json.dumps(annotation))
  else:
    (root / "annotation.json").symlink_to(iu_xray_dir / "r2gen_annotation.json")
  for split in annotation.values():
    for k, e in enumerate(split):
      for view, rel in enumerate(e["image_path"]):
        path = root / "images" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_png((k * 7 + view) % 256))
  return root


def _build(name, data_dir, manual_dir, **kwargs):
  return datasets.prepare(name, str(data_dir), str(manual_dir), **kwargs)


def test_build_r2gen_split_counts(tmp_path, iu_xray_dir, r2gen_annotation):
  manual = _r2gen_manual_dir(tmp_path / "manual", iu_xray_dir, r2gen_annotation)
  builder = _build("iu_xray/r2gen", tmp_path / "tfds", manual)
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      "train": 2069, "val": 296, "test": 590}
  source = builder.as_data_source("val")
  ex = source[0]
  assert ex["frontal"].shape == (6, 5, 1) and ex["lateral"].dtype == np.uint8
  by_id = {e["id"]: e for e in r2gen_annotation["val"]}
  e = by_id[ex["id"].decode()]
  assert ex["findings"].decode().split() == e["report"].split()
  assert len(ex["mesh"]) >= 1
  # The text pipeline sees exactly R2Gen's training reports: the 760-token vocabulary.
  train = builder.as_data_source("train", decoders={v: tfds.decode.SkipDecoding() for v in common.VIEWS})
  vocab = text.Vocabulary.build(text.clean_report_iu_xray(train[i]["findings"].decode())
                                for i in range(len(train)))
  assert len(vocab) == 760


@pytest.fixture
def small_manual(tmp_path, iu_xray_dir, r2gen_annotation):
  ids = ({e["id"] for e in r2gen_annotation["train"][:6]} | {e["id"] for e in r2gen_annotation["val"][:1]}
         | {e["id"] for e in r2gen_annotation["test"][:2]})
  return _r2gen_manual_dir(tmp_path / "manual", iu_xray_dir, r2gen_annotation, ids), sorted(ids)


def test_missing_image_names_file_and_report(tmp_path, small_manual):
  manual, ids = small_manual
  (manual / "images" / ids[0] / "1.png").unlink()
  with pytest.raises(common.BadImageError, match=f"{ids[0]}/1.png.*report {ids[0]}"):
    _build("iu_xray/r2gen", tmp_path / "tfds", manual)


def test_corrupt_png_raises_unless_skipped(tmp_path, small_manual):
  manual, ids = small_manual
  (manual / "images" / ids[1] / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
  with pytest.raises(common.BadImageError, match="cannot be decoded"):
    _build("iu_xray/r2gen", tmp_path / "tfds", manual)
  builder = _build("iu_xray/r2gen_skip_bad", tmp_path / "tfds2", manual)
  total = sum(s.num_examples for s in builder.info.splits.values())
  assert total == 8 and builder.info.metadata["skipped"] == {"bad_image": 1}


def test_report_without_findings_is_excluded_and_counted(tmp_path, small_manual, iu_reports):
  manual, ids = small_manual
  # Rewrite the archive with one report's FINDINGS emptied.
  target = openi.uid_from_r2gen_id(ids[2])
  archive = manual / openi.REPORTS_ARCHIVE
  src = archive.resolve()
  archive.unlink()
  with tarfile.open(src) as tin, tarfile.open(archive, "w:gz") as tout:
    for m in tin:
      data = tin.extractfile(m).read() if m.isfile() else None
      if m.name.endswith(f"/{target}.xml"):
        start = data.index(b'Label="FINDINGS">') + len(b'Label="FINDINGS">')
        data = data[:start] + data[data.index(b"</AbstractText>", start):]
        m.size = len(data)
      tout.addfile(m, io.BytesIO(data) if data is not None else None)
  builder = _build("iu_xray/r2gen", tmp_path / "tfds", manual)
  assert sum(s.num_examples for s in builder.info.splits.values()) == 8
  assert builder.info.metadata["excluded"] == {"no_findings": 1}


def test_missing_manual_dir_and_files_fail_at_once_naming_them(tmp_path, small_manual):
  """Downloading is off by default (``dataset.download``): nothing waits on a network."""
  nowhere = tmp_path / "nowhere"
  with pytest.raises(errors.MissingFileError, match=f"manual dir {nowhere} .*does not exist"):
    _build("iu_xray/r2gen", tmp_path / "tfds", nowhere, download=False)
  manual, _ = small_manual
  (manual / "annotation.json").unlink()
  with pytest.raises(errors.MissingFileError, match=f"annotation.json in the manual dir {manual}"):
    _build("iu_xray/r2gen", tmp_path / "tfds2", manual, download=False)
  (manual / openi.REPORTS_ARCHIVE).unlink()
  with pytest.raises(errors.MissingFileError, match=f"NLMCXR_reports.tgz is not in the manual dir {manual}"):
    _build("iu_xray/r2gen", tmp_path / "tfds3", manual, download=False)


def test_bad_annotation_and_reports_archive_name_the_file(tmp_path, iu_reports, iu_xray_dir):
  path = tmp_path / "annotation.json"
  with pytest.raises(errors.InputError, match=f"{path}: entry 1 of 'train' has no IU X-Ray 'id'"):
    iu_xray.r2gen_splits({"train": [{"id": "CXR1_1_IM-0001"}, {"report": "x"}], "val": [], "test": []},
                         iu_reports, path)
  with pytest.raises(errors.InputError, match=f"{path} has no 'test' list"):
    iu_xray.r2gen_splits({"train": [], "val": []}, iu_reports, path)
  truncated = tmp_path / openi.REPORTS_ARCHIVE
  truncated.write_bytes((iu_xray_dir / openi.REPORTS_ARCHIVE).read_bytes()[:50_000])
  with pytest.raises(errors.InputError, match=f"{truncated} cannot be read as a .tgz archive"):
    openi.read_reports_archive(truncated)
  text = tmp_path / "text.tgz"
  text.write_text("not an archive")
  with pytest.raises(errors.InputError, match=f"{text} cannot be read"):
    openi.read_reports_archive(text)


def test_images_archive_is_extracted_safely_without_tensorflow(tmp_path):
  """NLMCXR_png.tgz through ``tarfile``'s data filter: a ``../`` member refuses the archive and writes
  nothing outside the target."""
  good, bad = tmp_path / "good.tgz", tmp_path / "bad.tgz"
  for path, names in ((good, ["NLMCXR_png/CXR1_1_IM-0001-3001.png"]), (bad, ["a.png", "../escaped.png"])):
    with tarfile.open(path, "w:gz") as tar:
      for name in names:
        data = _png(7)
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
  target = iu_xray.extract_archive(good, tmp_path / "out" / "NLMCXR_png")
  assert (target / "NLMCXR_png" / "CXR1_1_IM-0001-3001.png").read_bytes() == _png(7)
  assert iu_xray.extract_archive(good, tmp_path / "out" / "NLMCXR_png") == target   # once
  with pytest.raises(errors.InputError, match=f"{bad} is refused: its member '../escaped.png'"):
    iu_xray.extract_archive(bad, tmp_path / "out2" / "NLMCXR_png")
  assert not (tmp_path / "out2" / "escaped.png").exists() and not (tmp_path / "escaped.png").exists()
  assert not (tmp_path / "out2" / "NLMCXR_png").exists()


def test_openi_png_layout_for_paper_split(tmp_path, iu_xray_dir, iu_reports):
  """Open-i's flat NLMCXR_png/ folder; view 0/1 = first/second parentImage."""
  manual = tmp_path / "manual"
  (manual / "NLMCXR_png").mkdir(parents=True)
  (manual / openi.REPORTS_ARCHIVE).symlink_to(iu_xray_dir / openi.REPORTS_ARCHIVE)
  for r in iu_reports.values():
    for k, image_id in enumerate(r.image_ids):
      (manual / "NLMCXR_png" / f"{image_id}.png").write_bytes(_png(10 + k))
  builder = _build("iu_xray/paper", tmp_path / "tfds", manual)
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      "train": 2019, "val": 288, "test": 578}
  ex = builder.as_data_source("test")[0]
  assert ex["frontal"][0, 0, 0] == 10 and ex["lateral"][0, 0, 0] == 11
  assert builder.info.metadata["excluded"] == {
      "no_findings": 530, "fewer_images": 450, "mesh_no_indexing": 90}

  # The same images as Open-i's NLMCXR_png.tgz in the manual dir: the same dataset.
  (manual / "NLMCXR_png").rename(tmp_path / "NLMCXR_png")
  with tarfile.open(manual / openi.IMAGES_ARCHIVE, "w:gz") as tar:
    tar.add(tmp_path / "NLMCXR_png", "NLMCXR_png")
  from_archive = _build("iu_xray/paper", tmp_path / "tfds_tgz", manual)
  assert from_archive.info.splits["test"].num_examples == 578
  assert from_archive.as_data_source("test")[0]["id"] == ex["id"]


# ---------------------------------------------------------------------------- a damaged folder (issue P)
def _cmyk_jpeg() -> bytes:
  buf = io.BytesIO()
  Image.new("CMYK", (6, 5), (0, 0, 0, 40)).save(buf, "JPEG")
  return buf.getvalue()


@pytest.mark.parametrize("damage, expected", [
    ("annotation_not_json", "annotation.json is not valid JSON"),
    ("zero_byte_png", "1.png.*is empty"),
    ("text_as_png", "0.png.*cannot be decoded"),
])
def test_a_damaged_folder_fails_in_one_line_naming_the_file(tmp_path, small_manual, damage, expected):
  """Each damage ends the build in one line naming the file; nothing is left in the data dir that a fixed
  folder would trip on (the same command then builds)."""
  manual, ids = small_manual
  files = {"annotation_not_json": manual / "annotation.json", "zero_byte_png": manual / "images" / ids[0] / "1.png",
           "text_as_png": manual / "images" / ids[1] / "0.png"}
  original = files[damage].read_bytes()
  if damage == "annotation_not_json":
    (manual / "annotation.json").write_text('{"train": [')
  elif damage == "zero_byte_png":
    (manual / "images" / ids[0] / "1.png").write_bytes(b"")
  elif damage == "text_as_png":
    (manual / "images" / ids[1] / "0.png").write_text("a radiograph, honestly")
  with pytest.raises(errors.UserError, match=expected) as e:
    _build("iu_xray/r2gen", tmp_path / "tfds", manual)
  assert "\n" not in str(e.value)
  files[damage].write_bytes(original)   # the folder fixed: the same command builds in the same data dir
  builder = _build("iu_xray/r2gen", tmp_path / "tfds", manual)
  assert sum(s.num_examples for s in builder.info.splits.values()) == 9


def test_a_cmyk_jpeg_and_stray_files_in_the_folder_are_read_or_ignored(tmp_path, small_manual):
  """A CMYK JPEG under a .png name is read as grey (8-bit mode); files that are not an entry's images
  (notes, thumbnails, hidden files) are not read at all."""
  manual, ids = small_manual
  (manual / "images" / ids[0] / "0.png").write_bytes(_cmyk_jpeg())
  (manual / "images" / ids[0] / "notes.txt").write_text("not an image")
  (manual / "images" / ".DS_Store").write_bytes(b"\x00\x01")
  builder = _build("iu_xray/r2gen", tmp_path / "tfds", manual)
  assert sum(s.num_examples for s in builder.info.splits.values()) == 9
