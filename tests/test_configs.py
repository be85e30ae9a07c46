import pytest

from configs import jpg
from jpg_jax import main


def test_paper_settings_are_pinned_and_tagged_paper():
  """Sec. 3-4's values, each set by the default config and tagged as the paper's."""
  c, sources = jpg.get_config(), jpg.get_provenance()
  pinned = {"train.batch_size": 16, "train.beam_size": 3, "optim.learning_rate": 1e-4,
            "optim.extractor_learning_rate": 1e-4, "optim.name": "adam", "dataset.max_seq_length": 60,
            "model.label_steps": 5, "model.num_bases": 2048, "model.d_model": 512, "model.num_layers": 3,
            "model.num_heads": 8, "labels.num_patterns": 17, "labels.num_mined": 57,
            "model.resnet_depth": 101, "model.head": "googlenet", "model.similarity": "dot",
            "model.subspace_residual": False, "model.top_k": 0, "labels.mining": "paper",
            "labels.normal_keep": 1.0, "dataset.name": "iu_xray/paper", "dataset.resize_size": 256,
            "model.use_subspace": True, "model.use_labeler": True, "model.labels_in_encoder": True}
  for field, value in pinned.items():
    section, _, name = field.rpartition(".")
    assert (c[section][name] if section else c[name]) == value, field
    assert sources[field].kind == "paper", field
  # 7 x 7 x 2048 patch features per view (Sec. 4.4) from the 224-px views
  import jax
  import jax.numpy as jnp
  from jpg_jax.models import resnet
  model = resnet.ResNet(c.model.resnet_depth, width=c.model.resnet_width)
  shapes = jax.eval_shape(lambda: model.init_with_output(
      jax.random.key(0), jnp.zeros((1, c.dataset.image_size, c.dataset.image_size, 3)))[0])
  assert shapes.shape == (1, 7, 7, 2048)


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
  today = jpg.get_config("synthetic,tuned").to_json()   # the old runs' mining: 'agreeing' 
  old = json.loads(today)
  for key in config_checks.ADDED_KEYS:
    section, name = key.split(".")
    del old[section][name]
  old = json.dumps(old)
  assert config_checks.differences(old, today) == []
  assert config_checks.identity(old) == config_checks.identity(today)
  cmn = jpg.get_config("synthetic,tuned,cmn").to_json()
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
