import numpy as np
import pytest

from jpg_jax import labels


def test_mesh_term_to_tokens():
  assert labels.mesh_term_to_tokens("Calcified Granuloma/lung/upper lobe/right") == (
      "calcified_granuloma", "lung", "upper_lobe", "right")
  assert labels.mesh_term_to_tokens("Catheters, Indwelling/right") == ("catheters_indwelling", "right")
  assert labels.mesh_term_to_tokens("Opacity/lung/base/bilateral/interstitial/diffuse", 5) == (
      "opacity", "lung", "base", "bilateral", "interstitial")
  assert len(labels.mesh_term_to_tokens("Opacity/lung/base/bilateral/interstitial/diffuse")) == 6
  assert labels.mesh_term_to_tokens("Technical Quality of Image Unsatisfactory ") == (
      "technical_quality_of_image_unsatisfactory",)


def test_simple_pattern():
  assert labels.simple_pattern(["normal"]) == ("normal",)
  assert labels.simple_pattern(["Lung/hypoinflation/mild", "Lung/hypoinflation"]) == ("lung", "hypoinflation")
  assert labels.simple_pattern(["Lung/hypoinflation", "Cardiomegaly"]) is None
  assert labels.simple_pattern(["No Indexing"]) is None
  assert labels.simple_pattern(["Lung/hypoinflation", "Cardiomegaly"], depth=1) is None
  assert labels.simple_pattern(["Spine/degenerative", "Spine/scoliosis"], depth=1) == ("spine",)


def test_stage1_patterns_on_r2gen_train(r2gen_annotation, iu_reports):
  from jpg_jax.datasets import openi
  terms = [iu_reports[openi.uid_from_r2gen_id(e["id"])].mesh_major for e in r2gen_annotation["train"]]
  patterns, kept, counts = labels.select_simple_patterns(terms, num_patterns=17, depth=2)
  assert len(patterns) == 17 and patterns[0] == ("normal",)
  assert counts[("normal",)] == 682 and len(kept) == 934
  # The paper: "17 simplest unique disease annotation patterns ... retain 40% of the full dataset".
  assert 0.40 <= len(kept) / len(terms) <= 0.46
  assert all(labels.simple_pattern(terms[i]) in set(patterns) for i in kept)


def test_label_set_targets_and_round_trip():
  ls = labels.LabelSet([("normal",), ("cardiomegaly",), ("calcified_granuloma", "lung", "upper_lobe")],
                       {("normal",): 5})
  terms = ["Cardiomegaly/mild", "Calcified Granuloma/lung/upper lobe/right"]
  np.testing.assert_array_equal(ls.multi_hot(terms), [0, 1, 1])
  assert ls.most_specific(terms) == ("calcified_granuloma", "lung", "upper_lobe")
  assert ls.most_specific(["Cardiomegaly/mild"]) == ("cardiomegaly",)
  assert ls.most_specific(["Calcified Granuloma/lung/lower lobe"]) is None
  assert labels.agrees(("calcified_granuloma", "lung"), terms)
  assert not labels.agrees(("calcified_granuloma", "lung", "lower_lobe"), terms)
  assert not labels.agrees(("opacity", "lung"), terms) and not labels.agrees((), terms)
  ids, mask = ls.encode_sequence(("calcified_granuloma", "lung", "upper_lobe"), 5)
  assert ids.shape == (6,) and mask.tolist() == [1, 1, 1, 1, 1, 0]
  assert ls.decode_sequence(ids[1:]) == ("calcified_granuloma", "lung", "upper_lobe")
  assert ls.encode_sequence(None, 5)[1].sum() == 0
  again = labels.LabelSet.from_json(ls.to_json())
  assert again == ls and again.counts[("normal",)] == 5
  with pytest.raises(ValueError):
    labels.LabelSet([("a",), ("a",)])
