"""The embedded synthetic dataset: determinism, terms <-> findings, and that each finding is drawn where
its term says."""

import numpy as np
import pytest

from jpg_jax import datasets
from jpg_jax.datasets import synthetic_findings as sf
from jpg_jax.datasets import synthetic_render as sr

SIZE = 128


def _diff(findings, view="frontal", seed=3):
  render = sr.render_frontal if view == "frontal" else sr.render_lateral
  base = render([], SIZE, np.random.default_rng(seed)).astype(np.float32)
  return render(findings, SIZE, np.random.default_rng(seed)).astype(np.float32) - base


def _centroid(weights):
  w = np.clip(weights, 0, None)
  ys, xs = np.mgrid[0:SIZE, 0:SIZE]
  return (xs * w).sum() / w.sum() / SIZE, (ys * w).sum() / w.sum() / SIZE


def _half(x):  # the patient's side of an image x in the PA frontal view
  return "right" if x < 0.5 else "left"


@pytest.mark.parametrize("kind", ["granuloma", "nodule", "opacity"])
@pytest.mark.parametrize("zone", sf.ZONES)
@pytest.mark.parametrize("side", ["right", "left"])
def test_focal_findings_land_in_their_zone_and_side(kind, zone, side):
  f = sf.Finding(kind, zone, side, sf.KINDS[kind][3][0] if sf.KINDS[kind][3] else None)
  x, y = _centroid(_diff([f]))
  assert _half(x) == side
  nearest = min(sr._ZONE_Y, key=lambda z: abs(sr._ZONE_Y[z] - y))
  assert nearest == zone, (x, y)
  # The lateral view keeps the height of the lesion.
  _, y_lat = _centroid(_diff([f], "lateral"))
  assert abs(y_lat - sr._ZONE_Y[zone]) < 0.04


def test_bilateral_opacity_is_drawn_on_both_sides():
  d = _diff([sf.Finding("opacity", "base", "bilateral", "moderate")])
  assert d[:, : SIZE // 2].sum() > 0.4 * d.sum() and d[:, SIZE // 2:].sum() > 0.4 * d.sum()


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("kind", ["effusion", "catheter"])
def test_lateralised_findings(kind, side):
  f = sf.Finding(kind, side=side, severity="large" if kind == "effusion" else None)
  x, y = _centroid(_diff([f]))
  assert _half(x) == side
  if kind == "effusion":      # the costophrenic angle: low in the chest
    assert y > 0.55
  else:                       # the catheter enters from the neck
    assert y < 0.35


def test_pneumothorax_darkens_the_named_side():
  d = _diff([sf.Finding("pneumothorax", side="left", severity="large")])
  assert d[:, SIZE // 2:].sum() < 0.8 * d[:, : SIZE // 2].sum() - 200


def test_cardiomegaly_widens_the_heart_with_severity():
  mass = [np.abs(_diff([sf.Finding("cardiomegaly", severity=s)])).sum() for s in ("mild", "moderate",
                                                                                   "severe")]
  assert 0 < mass[0] < mass[1] < mass[2]
  x, y = _centroid(np.abs(_diff([sf.Finding("cardiomegaly", severity="severe")])))
  assert 0.45 < x < 0.7 and y > 0.5


def test_lung_volume_findings_move_the_diaphragm():
  hypo = _diff([sf.Finding("hypoinflation")])
  hyper = _diff([sf.Finding("hyperdistention")])
  band = slice(int(0.62 * SIZE), int(0.72 * SIZE))   # lung bases
  assert hypo[band].mean() > 5 and hyper[band].mean() < -1


@pytest.mark.parametrize("kind", ["degenerative", "scoliosis", "clips"])
def test_central_findings_near_the_spine_or_mediastinum(kind):
  sev = "severe" if kind == "degenerative" else None
  x, _ = _centroid(np.abs(_diff([sf.Finding(kind, severity=sev)])))
  assert 0.4 < x < 0.6


def test_terms_round_trip_and_iu_terms_parse():
  rng = np.random.default_rng(0)
  for _ in range(200):
    for f in sf.sample_findings(rng):
      assert sf.finding_from_term(f.mesh_term) == f
  assert sf.finding_from_term("Calcified Granuloma/lung/upper lobe/right") == sf.Finding(
      "granuloma", "upper lobe", "right")
  assert sf.finding_from_term("Lung/hypoinflation/mild") == sf.Finding("hypoinflation")
  assert sf.finding_from_term("Thoracic Vertebrae/degenerative/mild") == sf.Finding(
      "degenerative", severity="mild")
  assert sf.finding_from_term("Aorta/tortuous") is None
  assert sf.finding_from_term("normal") is None


def test_at_least_ten_finding_types_and_reports_follow_findings():
  assert len(sf.KINDS) >= 10
  rng = np.random.default_rng(1)
  text = sf.report_from_findings([sf.Finding("granuloma", "base", "left"),
                                  sf.Finding("effusion", side="right", severity="small")], rng)
  assert "calcified granuloma in the left base" in text.lower()
  assert "small right-sided pleural effusion" in text.lower()
  assert text.lower().index("heart") < text.lower().index("granuloma") < text.lower().index("effusion")


def test_builder_is_deterministic(tmp_path, tiny_synthetic):
  _, first = tiny_synthetic
  second = datasets.prepare("synthetic_cxr/tiny", str(tmp_path))
  for split in ("train", "test"):
    a, b = first.as_data_source(split), second.as_data_source(split)
    assert len(a) == len(b) > 0
    for i in range(len(a)):
      assert a[i]["id"] == b[i]["id"] and a[i]["findings"] == b[i]["findings"]
      np.testing.assert_array_equal(a[i]["frontal"], b[i]["frontal"])
      np.testing.assert_array_equal(a[i]["lateral"], b[i]["lateral"])
  ex = first.as_data_source("train")[0]
  assert ex["frontal"].shape == (64, 64, 1) and len(ex["mesh"]) >= 1


def test_iu_reports_source_renders_real_reports(tmp_path, iu_xray_dir):
  builder = datasets.prepare("synthetic_cxr/iu_reports", str(tmp_path / "tfds"), str(iu_xray_dir))
  sizes = {k: v.num_examples for k, v in builder.info.splits.items()}
  assert sum(sizes.values()) == 3335   # reports with FINDINGS and real MeSH terms
  assert builder.info.metadata["excluded"] == {"no_findings": 530, "mesh_no_indexing": 90}
  ex = builder.as_data_source("val")[0]
  assert ex["findings"] and ex["id"].decode().startswith("SYN-CXR")
