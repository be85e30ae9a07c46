import pytest

from configs import jpg
from jpg_jax import main


def test_paper_settings():
  c = jpg.get_config()
  assert c.dataset.name == "iu_xray/r2gen" and c.dataset.max_seq_length == 60
  assert (c.model.resnet_depth, c.model.d_model, c.model.num_heads, c.model.num_layers) == (101, 512, 8, 3)
  assert (c.model.num_bases, c.model.head, c.model.label_steps) == (2048, "googlenet", 5)
  assert (c.labels.num_patterns, c.labels.num_mined) == (17, 57)


def test_ablations_are_switches_of_one_model():
  base, proj, aux = (jpg.get_config(v).model for v in ("base", "projection", "auxiliary"))
  assert (base.use_subspace, base.use_labeler, base.labels_in_encoder) == (False, False, False)
  assert (proj.use_subspace, proj.use_labeler, proj.labels_in_encoder) == (False, True, True)
  assert (aux.use_subspace, aux.use_labeler, aux.labels_in_encoder) == (True, True, False)
  combined = jpg.get_config("synthetic,base")
  assert combined.dataset.name == "synthetic_cxr/templates" and not combined.model.use_subspace


def test_unknown_keys_and_variants_are_errors():
  c = jpg.get_config()
  with pytest.raises(AttributeError):
    c.model.not_a_field = 1
  with pytest.raises(ValueError, match="Unknown variant"):
    jpg.get_config("nonsense")


def test_params_mode_counts_components():
  text = main.run_params(jpg.get_config())
  rows = {l.split()[0]: int(l.split()[1].replace(",", "")) for l in text.splitlines()[2:]}
  assert rows["visual_extractor"] == 42_500_160
  assert rows["total"] == sum(v for k, v in rows.items() if k != "total")
  base = main.run_params(jpg.get_config("base"))
  assert "subspace" not in base and "labeler" not in base
