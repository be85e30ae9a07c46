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


def test_keys_added_later_keep_old_runs_matching():
  """A workdir's config.json written before the R2Gen/CMN keys existed still matches today's config, and a
  config that turns one of them on does not."""
  import json
  from jpg_jax import config_checks
  today = jpg.get_config("synthetic").to_json()
  old = json.loads(today)
  for key in config_checks.ADDED_KEYS:
    section, name = key.split(".")
    del old[section][name]
  old = json.dumps(old)
  assert config_checks.differences(old, today) == []
  assert config_checks.identity(old) == config_checks.identity(today)
  cmn = jpg.get_config("synthetic,cmn").to_json()
  diff = config_checks.differences(old, cmn)
  assert any(d.startswith("model.cross_modal_memory") for d in diff)


def test_memory_baselines_count_their_parameters():
  """R2Gen adds the relational memory and the MCLN MLPs to BASE; CMN its memory matrix and projections."""
  def rows(variant):
    text = main.run_params(jpg.get_config(variant))
    return {l.split()[0]: int(l.split()[1].replace(",", "")) for l in text.splitlines()[2:]}
  base, r2gen, cmn = rows("base"), rows("r2gen"), rows("cmn")
  d, slots = 512, 3
  rm = 4 * (d * d + d) + 2 * (d * d + d) + 2 * (d * 2 * d + 2 * d)          # attn, mlp, W, U
  mcln = 3 * 3 * 2 * ((slots * d * d + d) + (d * d + d))                   # 3 layers x 3 norms x gamma/beta
  assert r2gen["decoder"] - base["decoder"] == rm + mcln
  assert cmn["cmn"] == 2048 * d + 4 * (d * d + d)
  assert r2gen["total"] - base["total"] == rm + mcln
