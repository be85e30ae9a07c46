"""End to end on the tiny synthetic set: both stages, mining, test results, evaluate, predict; resume,
preemption, NaN and config checks."""

import collections
import gc
import html
import json
import os
import pathlib
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from configs import jpg
from jpg_jax import checkpointing
from jpg_jax import errors
from jpg_jax import evaluate
from jpg_jax import feature_cache
from jpg_jax import inference
from jpg_jax import input_pipeline as ip
from jpg_jax import labels as labels_lib
from jpg_jax import parallel
from jpg_jax import steps
from jpg_jax import text
from jpg_jax import train
from jpg_jax.datasets import synthetic_findings
from jpg_jax_testing import base_config
from jpg_jax_testing import damage_checkpoint_item
from jpg_jax_testing import smoke_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Lowerings:
  """Counts the programs jit lowers, by name, while active: each one XLA compiles or fetches from the
  persistent compilation cache (jax.monitoring's jaxpr -> MLIR event fires either way)."""

  def __init__(self):
    self.names = collections.Counter()

  def __call__(self, event, duration, **kwargs):
    if event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
      self.names[kwargs.get("fun_name", "?")] += 1

  def __enter__(self):
    jax.clear_caches()   # every run starts from empty in-memory caches, as a new process does
    jax.monitoring.register_event_duration_secs_listener(self)
    return self

  def __exit__(self, *exc):
    jax.monitoring.unregister_event_duration_listener(self)


@pytest.fixture(scope="module")
def run_programs():
  """The programs the ``run`` fixture's run lowered, by name."""
  return collections.Counter()


@pytest.fixture(scope="module")
def run(tiny_synthetic, tmp_path_factory, run_programs):
  """The smoke config end to end (stage 1: 4 steps, 4 validations; stage 2: 12 steps, 2 validations), as
the synthetic default trains: stage 2 on the cached grids of stage 1's frozen extractor, BatchNorm
statistics re-estimated before each validation."""
  data_dir, _ = tiny_synthetic
  workdir = tmp_path_factory.mktemp("run")
  config = smoke_config(data_dir)
  config.unlock()
  config.train.stage2_extractor = "frozen"
  config.model.cached_features = True
  config.train.precise_bn_batches = 2
  config.lock()
  with _Lowerings() as lowered:
    metrics = train.train_and_evaluate(config, str(workdir))
  run_programs.update(lowered.names)
  return config, workdir, metrics


def test_results_files(run):
  config, workdir, metrics = run
  saved = json.loads((workdir / "results" / "test_metrics.json").read_text())
  for key in evaluate.CAPTION_KEYS + ("label_micro_f1",):
    assert key in saved and saved[key] == pytest.approx(metrics[key])
  assert set(evaluate.CAPTION_KEYS) <= set(saved["baseline_most_frequent"])
  assert saved["extractor"] == "random init" and saved["decode_policy"] == "r2gen"
  assert saved["baseline_most_frequent"]["distinct_reports"] == 1
  assert 1 <= saved["distinct_reports"] <= 12 and 0.0 <= saved["empty_share"] <= 1.0
  assert saved["mean_length"] > 0 or saved["empty_share"] == 1.0
  assert {"generated", "agreeing", "mined"} <= set(saved["mining"]) and saved["mining"]["generated"] == 48
  rows = [json.loads(l) for l in (workdir / "results" / "test_reports.jsonl").read_text().splitlines()]
  # Clinical efficacy (synthetic_cxr/tiny is template-written): the block for the model and the baseline,
  # the same numbers as the findings in the rows give.
  from jpg_jax import clinical
  for block, reports in ((saved["clinical"], [r["prediction"] for r in rows]),
                         (saved["baseline_most_frequent"]["clinical"],
                          [saved["baseline_most_frequent"]["report"]] * len(rows))):
    assert {"micro_f1", "macro_f1", "strict_micro_f1", "distinct_reports", "mean_length"} <= set(block)
    assert block["distinct_reports"] == len(set(reports))
  truth = [[synthetic_findings.finding_from_term(t) for t in r["findings_true"]] for r in rows]
  stated = [[synthetic_findings.finding_from_term(t) for t in r["findings_stated"]] for r in rows]
  assert saved["clinical"]["micro_f1"] == pytest.approx(clinical.scores(stated, truth)["micro_f1"])
  assert saved["clinical"]["cases_with_findings"] == sum(bool(t) for t in truth) > 0
  assert len(rows) == 12 == saved["num_reports"]
  assert {"id", "reference", "prediction", "predicted_labels", "true_labels", "scores"} <= set(rows[0])
  # The per-report BLEU-4 of every row reproduces from its strings.
  _, each = evaluate.caption_scores([r["reference"] for r in rows], [r["prediction"] for r in rows],
                                    with_meteor=False, per_report=True)
  assert [r["scores"]["BLEU_4"] for r in rows] == pytest.approx(each["BLEU_4"])
  mined = (workdir / "labels" / "mined.txt").read_text()
  assert mined.startswith("# ") and "<" in mined
  for stage in ("stage1", "stage2"):
    assert any(p.name.isdigit() for p in (workdir / stage).iterdir())
  # A new process finds the same best checkpoint (metrics persisted with each checkpoint).
  assert checkpointing.StageCheckpoints(workdir / "stage2", 2, "BLEU_4").best_step() == saved["checkpoint_step"]
  history = [json.loads(l) for l in (workdir / "logs" / "history.jsonl").read_text().splitlines()]
  assert any("stage2/train_report_loss" in h for h in history)
  assert any(p.name.startswith("events.out.tfevents") for p in (workdir / "logs").iterdir())


def _files(directory) -> dict:
  """Every file under ``directory`` with its size and modification time."""
  return {p: (p.stat().st_size, p.stat().st_mtime_ns)
          for p in pathlib.Path(directory).rglob("*") if p.is_file()}


def test_stage2_keeps_stage1s_extractor_and_trained_on_its_grids(run):
  """Stage 2's grids are those of stage 1's best extractor, which stage 2 held fixed and keeps in its
  checkpoints (they evaluate and predict from images: the two tests below)."""
  config, workdir, metrics = run
  (folder,) = (workdir / "features").iterdir()
  assert sorted(p.name for p in folder.iterdir()) == ["test.npy", "train.npy", "val.npy"]
  data = ip.load_data(config)
  model = steps.create_model(config, data.vocab, labels_lib.LabelSet.load(workdir / "labels" / "mined.json"))
  ckpt = checkpointing.StageCheckpoints(workdir / "stage2", 3, "BLEU_4", read_only=True)
  variables = ckpt.restore_variables(metrics["checkpoint_step"], steps.abstract_variables(model, config, parallel.make_mesh()))
  assert "visual_extractor" in variables["params"]
  assert feature_cache.cache_key(config, variables) == folder.name   # stage 2's extractor made the grids
  initial = jax.jit(lambda k: steps.init_variables(model, config, k))(jax.random.key(config.seed))
  assert feature_cache.cache_key(config, initial) != folder.name     # ... and stage 1 had trained it


def test_mining_read_the_cached_grids_and_mines_what_the_images_give(run):
  """With stage 2 on stage 1's cached grids, the cache is written before mining, which reads it (one
  ResNet pass over train); the stage-1 best checkpoint generating from the images mines the same labels,
  and scores on the test split what the results say."""
  from jpg_jax import mining
  from jpg_jax.evaluators import labels as label_eval
  config, workdir, metrics = run
  (folder,) = (workdir / "features").iterdir()
  assert (folder / "train.npy").stat().st_mtime_ns < (workdir / "labels" / "mined.json").stat().st_mtime_ns
  data, mesh = ip.load_data(config), parallel.make_mesh()
  patterns = labels_lib.LabelSet.load(workdir / "labels" / "stage1_patterns.json")
  model1 = steps.create_model(config, data.vocab, patterns, stage=1)
  ckpt = checkpointing.StageCheckpoints(workdir / "stage1", 3, config.train.stage1_select_metric, read_only=True)
  variables = ckpt.restore_variables(ckpt.best_step(), steps.abstract_variables(model1, config, mesh))
  evaluator = label_eval.LabelEvaluator(config, model1, data, patterns, mesh)
  label_set, _, mined = mining.mine(config, data.index["train"], evaluator.generate(variables, "train"), patterns)
  assert label_set.to_json() == labels_lib.LabelSet.load(workdir / "labels" / "mined.json").to_json()
  assert mined == metrics["mining"]
  # Results hold the selected stage-1 model's scores on the test split (the run's selection: validation).
  assert metrics["stage1_test"] == pytest.approx(evaluator.run(variables, "test"))


def test_evaluate_rescoring_matches_and_writes_only_to_its_output_dir(run, tmp_path):
  """A finished run's workdir may be read-only: evaluate writes nothing there (no TensorBoard writer).
  The run tested on cached grids; evaluate reads the images: the same scores."""
  config, workdir, metrics = run
  before = _files(workdir)
  again = inference.evaluate_checkpoint(config, str(workdir), str(tmp_path / "results"))
  for key in evaluate.CAPTION_KEYS:
    assert again[key] == pytest.approx(metrics[key], abs=1e-6)
  rescored = json.loads((tmp_path / "results" / "test_metrics.json").read_text())
  assert rescored["BLEU_4"] == again["BLEU_4"] and rescored["mining"] == metrics["mining"]   # kept
  assert rescored["stage1_test"] == metrics["stage1_test"]
  assert _files(workdir) == before


def test_predict_two_images_writes_only_to_its_output_dir(run, tmp_path):
  config, workdir, _ = run
  paths = []
  for k in range(2):
    p = tmp_path / f"view{k}.png"
    Image.fromarray((np.random.default_rng(k).random((80, 70)) * 255).astype(np.uint8)).save(p)
    paths.append(str(p))
  before = _files(workdir)
  result = inference.predict(config, str(workdir), paths, str(tmp_path / "out"))
  assert isinstance(result["report"], str) and "predicted_labels" in result
  assert (tmp_path / "out" / "attention.png").exists() == bool(result["report"])
  assert json.loads((tmp_path / "out" / "prediction.json").read_text())["report"] == result["report"]
  assert _files(workdir) == before


@pytest.mark.parametrize("case", ["missing", "folder", "text", "rgba_tiny", "sixteen_bit_wide"])
def test_predict_on_bad_or_odd_files(run, tmp_path, case):
  """A missing file, a folder and a text file end in one line naming the file, writing nothing; an image
  of another mode (RGBA, 16-bit) or size (3 x 5, 40 x 900) is read by the builders' rule and predicted."""
  config, workdir, _ = run
  good = tmp_path / "good.png"
  Image.fromarray((np.random.default_rng(0).random((80, 70)) * 255).astype(np.uint8)).save(good)
  odd = tmp_path / "odd.png"
  if case == "folder":
    odd.mkdir()
  elif case == "text":
    odd.write_text("a radiograph\n")
  elif case == "rgba_tiny":
    Image.new("RGBA", (3, 5), (10, 200, 30, 128)).save(odd)
  elif case == "sixteen_bit_wide":
    Image.fromarray(np.linspace(0, 4095, 40 * 900).reshape(40, 900).astype(np.uint16)).save(odd)
  out = tmp_path / "out"
  if case in ("missing", "folder", "text"):
    with pytest.raises(errors.UserError, match=re.escape(str(odd))) as e:
      inference.predict(config, str(workdir), [str(good), str(odd)], str(out))
    assert "\n" not in str(e.value) and not out.exists()
  else:
    result = inference.predict(config, str(workdir), [str(good), str(odd)], str(out))
    assert isinstance(result["report"], str)


def _copy_run(workdir, tmp_path) -> pathlib.Path:
  import shutil
  return pathlib.Path(shutil.copytree(workdir, tmp_path / "copy"))


# Restoring damaged arrays leaves tensorstore futures whose errors nobody reads (they are in the error).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning", "ignore::RuntimeWarning")
def test_inference_refuses_another_model_and_names_a_damaged_best_checkpoint(run, tmp_path):
  """Inference reads parameters and batch statistics only (a damaged optimiser state does not matter);
  another model's config and a damaged best checkpoint are one-line errors naming the key or folder."""
  config, workdir, _ = run
  wider = smoke_config(config.dataset.data_dir)
  wider.unlock()
  wider.model.d_model = wider.model.d_ff = 64
  wider.lock()
  with pytest.raises(errors.ConfigError, match=r"was trained with another model \(model.d_ff: 32 -> 64; "
                                               r"model.d_model: 32 -> 64\)"):
    inference.restore_for_inference(wider, str(workdir))

  copy = _copy_run(workdir, tmp_path)
  ckpt = checkpointing.StageCheckpoints(copy / "stage2", 2, "BLEU_4")
  best, saved = ckpt.best_step(), ckpt.manager.all_steps()
  ckpt.close()
  # The optimiser state of the best checkpoint made unreadable: its entries gone from the tree metadata.
  meta_path = copy / "stage2" / str(best) / "state" / "_METADATA"
  meta = json.loads(meta_path.read_text())
  meta["tree_metadata"] = {k: v for k, v in meta["tree_metadata"].items() if "opt_state" not in k}
  meta_path.write_text(json.dumps(meta))
  assert inference.restore_for_inference(config, str(copy)).step == best

  (copy / "config.json").unlink()   # no record of the model: the restore itself fails, named
  with pytest.raises(errors.CheckpointError, match=f"The best checkpoint {copy / 'stage2' / str(best)} does "
                                                   f"not restore") as e:
    inference.restore_for_inference(wider, str(copy))
  assert "\n" not in str(e.value)
  damage_checkpoint_item(copy / "stage2" / str(best), "state")
  other = max(s for s in saved if s != best)
  with pytest.raises(errors.CheckpointError, match=f"{copy / 'stage2' / str(best)} does not restore .*; step "
                                                   f"{other} restores: move"):
    inference.restore_for_inference(config, str(copy))
  gc.collect()   # the damaged reads' futures go now, under this test's warning filter


def test_attention_maps_for_given_words(run, tmp_path):
  """Fig. 4 on fixed words, whatever the smoke model generates: one map per word and view, a PNG."""
  import jax.numpy as jnp
  from jpg_jax import attention
  config, workdir, _ = run
  restored = inference.restore_for_inference(config, str(workdir))
  assert set(restored.variables) == {"params", "batch_stats"}   # no optimiser state is read
  size = config.dataset.image_size
  images = jnp.zeros((1, 2, size, size, 3))
  maps = attention.word_attention(restored.model, restored.variables, images, np.array([3, 4, 5, 0, 0]))
  assert maps.shape[:2] == (3, 2) and np.all(maps >= 0) and np.all(maps.sum(axis=(1, 2, 3)) <= 1 + 1e-5)
  views = [np.zeros((size, size), np.uint8)] * 2
  attention.save_attention_png(tmp_path / "a.png", views, ["w1", "w2", "w3"], maps)
  assert Image.open(tmp_path / "a.png").size[0] > 0


def _validations(workdir) -> list[int]:
  history = [json.loads(l) for l in (workdir / "logs" / "history.jsonl").read_text().splitlines()]
  return [sum(f"{stage}/val_{metric}" in h for h in history)
          for stage, metric in (("stage1", "pattern_macro_f1"), ("stage2", "BLEU_4"))]


def test_more_validations_compile_no_more_programs(run, run_programs, tiny_synthetic, tmp_path):
  """BASE's 4 steps validated after every step and after every other one: the same programs, each lowered
  as often, the beam search (shared by validation and the test) once. And in the ``run`` fixture (4
  stage-1 and 2 stage-2 validations, then the test) each evaluator's program was lowered once (stage
  1's labels twice: on the images and, mining, on the grids)."""
  data_dir, _ = tiny_synthetic
  lowered = []
  for every, validations in ((1 / 6, 4), (1 / 3, 2)):   # 6 steps an epoch: every step, every other step
    workdir = tmp_path / str(validations)
    with _Lowerings() as lowerings:
      # (Logged every step: metrics summed over logged steps would lower one more small program, an add.)
      config = base_config(data_dir, stage2_epochs=2 / 3, eval_every_epochs=every, log_every_steps=1)
      train.train_and_evaluate(config, str(workdir))
    assert _validations(workdir) == [0, validations]
    lowered.append(lowerings.names)
  assert lowered[0] == lowered[1]
  assert lowered[0]["jit(predict_reports)"] == 1 and lowered[0]["jit(train_step)"] == 1
  # score_labels: stage 1's validation on the images, mining on the cached grids of stage 1's extractor.
  assert run_programs["jit(score_labels)"] == 2 and run_programs["jit(predict_reports)"] == 1
  assert run_programs["jit(train_step)"] == 2   # one per stage


# ------------------------------------------------------------------ results tools (jpg_jax/results.py)


def _tool(name, *args):
  out = subprocess.run([sys.executable, "-m", f"jpg_jax.tools.{name}", *args], capture_output=True,
                       text=True, timeout=600, cwd=ROOT)
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


@pytest.fixture(scope="module")
def two_runs(run, tmp_path_factory):
  """The tiny run as "JPG" and a copy whose test scores are lower as "BASE" (a stand-in second run)."""
  import shutil
  _, workdir, _ = run
  base = tmp_path_factory.mktemp("base") / "run"
  shutil.copytree(workdir / "results", base / "results")
  shutil.copy(workdir / "config.json", base / "config.json")
  rows = [json.loads(l) for l in (base / "results" / "test_reports.jsonl").read_text().splitlines()]
  for k, r in enumerate(rows):
    r["scores"] = {m: v * (0.5 if k % 3 else 0.9) for m, v in r["scores"].items()}
    r["prediction"] = "the lungs are clear ."
  (base / "results" / "test_reports.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  metrics = json.loads((base / "results" / "test_metrics.json").read_text())
  for m in evaluate.CAPTION_KEYS:
    metrics[m] = float(np.mean([r["scores"][m] for r in rows]))
  (base / "results" / "test_metrics.json").write_text(json.dumps(metrics))
  return str(base), str(workdir)


def _as_iu_xray(workdir, tmp_path) -> str:
  """A copy of a finished run whose config says it ran on IU X-Ray (the paper's rows apply to it)."""
  import shutil
  copy = tmp_path / pathlib.Path(workdir).name
  shutil.copytree(os.path.join(workdir, "results"), copy / "results")
  config = json.loads(open(os.path.join(workdir, "config.json")).read())
  config["dataset"]["name"] = "iu_xray/paper"
  (copy / "config.json").write_text(json.dumps(config))
  return str(copy)


def test_compare_prints_the_jsons_numbers_beside_the_papers(two_runs, tmp_path):
  from jpg_jax import results
  synthetic = _tool("compare", f"--run=BASE={two_runs[0]}", f"--run=JPG={two_runs[1]}")
  assert " paper " not in synthetic and "ours - paper" not in synthetic   # the paper's rows are IU X-Ray's
  base, jpg_dir = (_as_iu_xray(w, tmp_path / name) for w, name in zip(two_runs, ("b", "j")))
  md = tmp_path / "table2.md"
  text = _tool("compare", f"--run=BASE={base}", f"--run=JPG={jpg_dir}", f"--markdown={md}",
               f"--fig3={tmp_path / 'fig3.png'}")
  rows = {(line[:16].strip(), line[16:30].strip()): line[30:].split() for line in text.splitlines()}
  for name, path in (("BASE", base), ("JPG", jpg_dir)):
    saved = json.loads(open(os.path.join(path, "results", "test_metrics.json")).read())
    ours = [float(v.rstrip("†")) for v in rows[(name, "ours")]]
    assert ours == pytest.approx([round(saved[m], 3) for m in evaluate.CAPTION_KEYS], abs=1e-9)
    paper = [float(v.rstrip("†")) for v in rows[(name, "paper")]]
    assert paper == list(results.PAPER_TABLE2[name])
    deltas = [float(v) for v in rows[(name, "ours - paper")]]
    assert deltas == pytest.approx([saved[m] - p for m, p in zip(evaluate.CAPTION_KEYS, paper)], abs=1e-3)
  # The dagger follows the t-test on the per-report scores.
  table = results.table2(results.parse_runs([f"BASE={base}", f"JPG={jpg_dir}"]))
  for m, v in zip(evaluate.CAPTION_KEYS, rows[("JPG", "ours")]):
    assert v.endswith("†") == table["JPG"][m].significant
    assert table["JPG"][m].p_value is not None and table["BASE"][m].p_value is None
  assert "| JPG | paper | 0.479† |" in md.read_text()
  assert "Clinical efficacy" in text and "most frequent report" in text and "| CE micro-F1 |" not in text
  assert "| most frequent report |" in md.read_text()
  assert Image.open(tmp_path / "fig3.png").size[0] > 0


def test_compare_averages_seeds_and_tests_them_in_pairs(two_runs, tmp_path):
  """Runs sharing a name are seeds of one model: mean +- sd per column; the caption metrics' t-test
  pools the per-report pairs of every seed, the run-level figures' pairs the seeds."""
  import shutil
  from jpg_jax import results
  specs = []
  for name, source in zip(("BASE", "JPG"), two_runs):
    for seed, scale in ((7, 1.0), (8, 0.8)):
      target = tmp_path / f"{name}{seed}"
      shutil.copytree(source, target, ignore=shutil.ignore_patterns("stage*", "features", "logs"))
      config = json.loads((target / "config.json").read_text())
      (target / "config.json").write_text(json.dumps(dict(config, seed=seed)))
      metrics = json.loads((target / "results" / "test_metrics.json").read_text())
      metrics["BLEU_4"] *= scale
      metrics["clinical"]["micro_f1"] = (0.7 if name == "JPG" else 0.3) * scale
      (target / "results" / "test_metrics.json").write_text(json.dumps(metrics))
      rows = [json.loads(l) for l in (target / "results" / "test_reports.jsonl").read_text().splitlines()]
      for r in rows:
        r["scores"]["BLEU_4"] *= scale
      (target / "results" / "test_reports.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
      specs.append(f"{name}={target}")
  runs = results.parse_runs(specs)
  seeds, table = results.seed_table(runs)
  assert seeds == [7, 8] and set(table) == {"BASE", "JPG"}
  jpg4 = [r.metrics["BLEU_4"] for r in runs if r.name == "JPG"]
  cell = table["JPG"]["BLEU_4"]
  assert cell.mean == pytest.approx(np.mean(jpg4)) and cell.sd == pytest.approx(np.std(jpg4, ddof=1))
  pooled = lambda n: [r["scores"]["BLEU_4"] for run in runs if run.name == n for r in run.reports]
  assert cell.p_value == pytest.approx(evaluate.paired_t_test(pooled("JPG"), pooled("BASE"))["p"])
  ce = table["JPG"]["clinical.micro_f1"]
  assert ce.mean == pytest.approx(0.63) and ce.significant == (ce.p_value < 0.05)
  assert ce.p_value == pytest.approx(evaluate.paired_t_test([0.7, 0.56], [0.3, 0.24])["p"])
  assert table["BASE"]["BLEU_4"].p_value is None and "mining.mined" in table["JPG"]
  text = _tool("compare", *(f"--run={s}" for s in specs), f"--markdown={tmp_path / 'seeds.md'}")
  assert f"{cell.mean:.3f} +- {cell.sd:.3f}" in text and "seeds 7, 8" in text
  assert "| JPG |" in (tmp_path / "seeds.md").read_text()
  with pytest.raises(ValueError, match="seeds"):
    results.seed_table(runs[:3])


def test_curves_from_the_tensorboard_files(run, tmp_path):
  from jpg_jax import figures
  _, workdir, _ = run
  scalars = figures.read_scalars(str(workdir / "logs"))
  history = [json.loads(l) for l in (workdir / "logs" / "history.jsonl").read_text().splitlines()]
  logged = {(h["step"], k): v for h in history for k, v in h.items() if k != "step"}
  for tag in ("stage1/train_loss", "stage2/train_report_loss", "stage2/val_BLEU_4"):
    assert scalars[tag] and all(logged[(s, tag)] == pytest.approx(v, rel=1e-6) for s, v in scalars[tag])
  _tool("curves", f"--workdir={workdir}", f"--output={tmp_path / 'curves.png'}")
  assert Image.open(tmp_path / "curves.png").size[0] > 0


def test_examples_page_shows_the_reports_of_each_run(two_runs, tmp_path):
  base, jpg_dir = two_runs
  rows = [json.loads(l) for l in open(os.path.join(jpg_dir, "results", "test_reports.jsonl"))]
  ids = [rows[0]["id"], rows[5]["id"]]
  for suffix in ("md", "html"):
    out = tmp_path / f"examples.{suffix}"
    _tool("examples", f"--run=BASE={base}", f"--run=JPG={jpg_dir}", f"--ids={','.join(ids)}",
          f"--output={out}")
    page = out.read_text()
    shown = html.escape if suffix == "html" else (lambda t: t.replace("|", "\\|"))
    for i in ids:
      row = next(r for r in rows if r["id"] == i)
      assert i in page and shown(row["reference"]) in page and "the lungs are clear ." in page
      assert shown(row["prediction"]) in page
      assert shown(f"findings: {', '.join(row['findings_true']) or 'none'}") in page
  picked = tmp_path / "picked.md"
  _tool("examples", f"--run=BASE={base}", f"--run=JPG={jpg_dir}", "--num=2", f"--output={picked}")
  assert picked.read_text().count("\n| `") == 2


def test_attention_map_command(run, tmp_path):
  config, workdir, _ = run
  rows = [json.loads(l) for l in (workdir / "results" / "test_reports.jsonl").read_text().splitlines()]
  out = tmp_path / "attention.png"
  _tool("attention_map", "--config=configs/jpg.py:smoke",
               f"--config.dataset.data_dir={config.dataset.data_dir}", f"--workdir={workdir}",
               f"--id={rows[0]['id']}", f"--output={out}")
  result = json.loads((tmp_path / "prediction.json").read_text())
  assert result["id"] == rows[0]["id"] and result["reference"] == rows[0]["reference"]
  assert result["report"] == rows[0]["prediction"]   # the same checkpoint and beam search as the test run
  assert out.exists() == bool(result["report"])


def test_every_row_starts_its_extractor_from_one_random_init():
  """BASE (no stage 1) draws its stage-2 state from the seed JPG's stage 1 draws from, so both extractors
  start from the same random init (the synthetic Table 2's shared start)."""
  mesh = parallel.make_mesh(jax.devices()[:1])
  vocab = text.Vocabulary(["the", "lungs", "are", "clear", "."])
  patterns = labels_lib.LabelSet([("normal",), ("opacity", "lung")])
  extractors = {}
  for variants, stage, after in (("", 1, True), ("base", 2, False), ("cmn", 2, False), ("", 2, True)):
    config = jpg.get_config(",".join(("smoke",) + ((variants,) if variants else ())))
    model = steps.create_model(config, vocab, patterns if config.model.use_labeler else None, stage=stage)
    optimizer, _ = steps.make_optimizer(config, steps.param_shapes(model, config), 10, stage)
    state = steps.create_train_state(model, optimizer, config, train.init_seed(config, stage, after), mesh)
    extractors[(variants, stage)] = jax.tree.leaves(state["params"]["visual_extractor"])
  for key in (("base", 2), ("cmn", 2)):
    assert all(np.array_equal(a, b) for a, b in zip(extractors[("", 1)], extractors[key])), key
  assert not all(np.array_equal(a, b) for a, b in zip(extractors[("", 1)], extractors[("", 2)]))  # another draw


def test_export_extractor_writes_stage1s_extractor_for_another_run(run, tmp_path):
  """tools/export_extractor: the run's best stage-1 extractor (which its stage 2 kept frozen) as a
  resnet_checkpoint; a BASE config reading it frozen passes the checks, one of another width does not."""
  from jpg_jax import config_checks
  from jpg_jax import resnet_weights
  config, workdir, _ = run
  out = tmp_path / "extractor"
  said = _tool("export_extractor", f"--workdir={workdir}", f"--output={out}")
  assert "ResNet-10 (width 16)" in said and json.loads((out / resnet_weights.MARKER).read_text())["width"] == 16
  exported = resnet_weights.restore(str(out), 10, 16)
  kept = inference.restore_for_inference(config, str(workdir)).variables
  for collection in ("params", "batch_stats"):
    for a, b in zip(jax.tree.leaves(exported[collection]), jax.tree.leaves(kept[collection]["visual_extractor"])):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  base = smoke_config(config.dataset.data_dir, "base")
  base.unlock()
  base.resnet_checkpoint, base.model.frozen_extractor, base.model.cached_features = str(out), True, True
  assert config_checks.problems(base) == []
  base.model.resnet_width = 64
  assert any("width 16" in p for p in config_checks.problems(base))
  again = subprocess.run([sys.executable, "-m", "jpg_jax.tools.export_extractor", f"--workdir={tmp_path}",
                          f"--output={tmp_path / 'x'}"], capture_output=True, text=True, cwd=ROOT)
  assert again.returncode == 2 and "not a run's workdir" in again.stderr.splitlines()[-1]
