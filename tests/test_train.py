"""End to end on the tiny synthetic set: both stages, mining, test results, evaluate, predict; resume,
preemption, NaN and config checks."""

import collections
import gc
import html
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

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
from jpg_jax import main
from jpg_jax import input_pipeline as ip
from jpg_jax import labels as labels_lib
from jpg_jax import parallel
from jpg_jax import steps
from jpg_jax import text
from jpg_jax import train
from jpg_jax.datasets import synthetic_findings
from jpg_jax_testing import damage_checkpoint_item

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def smoke_config(data_dir, *variants):
  config = jpg.get_config(",".join(("smoke",) + variants))
  config.unlock()
  config.dataset.data_dir = data_dir
  config.lock()
  return config


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


def _losses(workdir, stage="stage2"):
  out = {}
  for line in (workdir / "logs" / "history.jsonl").read_text().splitlines():
    h = json.loads(line)
    if f"{stage}/train_loss" in h:
      out[h["step"]] = h[f"{stage}/train_loss"]
  return out


def _base_config(data_dir, **train):
  config = smoke_config(data_dir, "base")
  config.unlock()
  config.train.update(train)
  config.lock()
  return config


def test_sigterm_and_hooks_stop_with_a_checkpoint_and_the_run_resumes_with_the_same_losses(
    tiny_synthetic, tmp_path):
  """Run ``a`` trains 9 steps in process and a hook stops it (as a preemption notice does). Run ``b`` is
  the main job, sent SIGTERM after its third step: it checkpoints, exits 143, and logs quietly; resumed,
  it replays the losses of ``a`` step for step. Stage 2 of BASE: 6 steps an epoch, validation after 6."""
  data_dir, _ = tiny_synthetic
  config = _base_config(data_dir, log_every_steps=1, stage2_epochs=20)   # 120 steps: never reached
  stop_at_9 = main.StopAt("2:9")   # what --stop_at=2:9 hooks in
  with pytest.raises(checkpointing.Preempted):
    train.train_and_evaluate(config, str(tmp_path / "a"), hooks=[stop_at_9])
  assert (tmp_path / "a" / "stage2" / "9").exists() and stop_at_9.fired

  b = tmp_path / "b"
  cmd = [sys.executable, "-m", "jpg_jax.main", "--config=configs/jpg.py:smoke,base", f"--workdir={b}",
         f"--config.dataset.data_dir={data_dir}", "--config.train.stage2_epochs=20",
         "--config.train.log_every_steps=1"]
  proc = subprocess.Popen(cmd, env=dict(os.environ, JAX_PLATFORMS="cpu"), cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  history = b / "logs" / "history.jsonl"
  deadline = time.time() + 240
  while time.time() < deadline and not (history.exists() and len(history.read_text().splitlines()) >= 3):
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 143, err[-3000:]
  assert "checkpoint" in err and "SIGTERM" in err
  # Quiet by default: INFO lines come from jpg-jax's own modules only (orbax alone writes ~150 a checkpoint).
  ours = {p.name for p in pathlib.Path(ROOT, "jpg_jax").rglob("*.py")}
  info = [l for l in err.splitlines() if re.match(r"I\d{4} ", l)]
  assert info and all(re.search(r" (\S+\.py):\d+\] ", l).group(1) in ours for l in info), info[:5]
  stopped = max(_losses(b))
  assert stopped in {int(p.name) for p in (b / "stage2").iterdir() if p.name.isdigit()} and stopped < 9

  with pytest.raises(checkpointing.Preempted):
    train.train_and_evaluate(config, str(b), hooks=[main.StopAt("2:9")])
  a_losses, b_losses = _losses(tmp_path / "a"), _losses(b)
  assert sorted(a_losses) == list(range(1, 10)) and sorted(b_losses) == sorted(a_losses)
  for step in a_losses:
    assert b_losses[step] == pytest.approx(a_losses[step], rel=1e-5), step


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
      config = _base_config(data_dir, stage2_epochs=2 / 3, eval_every_epochs=every, log_every_steps=1)
      train.train_and_evaluate(config, str(workdir))
    assert _validations(workdir) == [0, validations]
    lowered.append(lowerings.names)
  assert lowered[0] == lowered[1]
  assert lowered[0]["jit(predict_reports)"] == 1 and lowered[0]["jit(train_step)"] == 1
  # score_labels: stage 1's validation on the images, mining on the cached grids of stage 1's extractor.
  assert run_programs["jit(score_labels)"] == 2 and run_programs["jit(predict_reports)"] == 1
  assert run_programs["jit(train_step)"] == 2   # one per stage


def test_nan_loss_stops_with_the_last_good_checkpoint(tiny_synthetic, tmp_path, monkeypatch):
  """The batches turn NaN from step 3 on (the train step is the other BASE runs' program: from the
  compilation cache; a learning rate of 1e36 would make another program)."""
  data_dir, _ = tiny_synthetic
  config = _base_config(data_dir, log_every_steps=1, eval_every_epochs=1 / 3)   # a checkpoint every 2 steps
  jit_train_step = steps.jit_train_step

  def nan_from_step_3(*args, **kwargs):
    step_fn, calls = jit_train_step(*args, **kwargs), []

    def step(state, batch):
      calls.append(1)
      return step_fn(state, batch if len(calls) < 3 else dict(batch, images=batch["images"] * np.nan))
    return step

  monkeypatch.setattr(steps, "jit_train_step", nan_from_step_3)
  with pytest.raises(errors.NonFiniteLossError) as e:
    train.train_and_evaluate(config, str(tmp_path))
  message = str(e.value)
  assert message.startswith("Stage 2: the loss went non-finite at step 3 (loss") and len(message) < 240 + len(
      str(tmp_path)), message
  assert "/" not in message.split("(")[1].split(")")[0] and f"{tmp_path / 'stage2' / '2'}, is intact" in message
  assert isinstance(e.value, FloatingPointError) and not isinstance(e.value, errors.UserError)
  import orbax.checkpoint as ocp
  saved = sorted(int(p.name) for p in (tmp_path / "stage2").iterdir() if p.name.isdigit())
  assert saved == [2]
  with ocp.StandardCheckpointer() as ckpt:
    state = ckpt.restore((tmp_path / "stage2" / "2" / "state").absolute())
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state["params"]))


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


def test_compare_prints_the_jsons_numbers_beside_the_papers(two_runs, tmp_path):
  from jpg_jax import results
  base, jpg_dir = two_runs
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
  from jpg_jax import results
  _, workdir, _ = run
  scalars = results.read_scalars(str(workdir / "logs"))
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


# ------------------------------------------------------------------ the workdir survives its users (issue P)
class _SigtermAt:
  """A hook that sends this process SIGTERM during step ``step`` of ``stage`` (before its validation)."""

  def __init__(self, stage: int, step: int):
    self.stage, self.step = stage, step

  def __call__(self, stage, step):
    if (stage, step) == (self.stage, self.step):
      os.kill(os.getpid(), signal.SIGTERM)
    return False


def test_sigterm_during_the_last_step_ends_at_a_checkpoint_and_the_rerun_finishes(tiny_synthetic, tmp_path):
  """The notice arrives while stage 2's last step validates: the step is checkpointed, no test is run
  (Preempted: exit 143 in main), and the same command then only tests."""
  data_dir, _ = tiny_synthetic
  config = _base_config(data_dir, stage2_epochs=1)   # 6 steps
  with pytest.raises(checkpointing.Preempted):
    train.train_and_evaluate(config, str(tmp_path), hooks=[_SigtermAt(2, 6)])
  assert (tmp_path / "stage2" / "6").is_dir() and not (tmp_path / "results").exists()
  metrics = train.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(metrics["BLEU_4"]) and (tmp_path / "results" / "test_metrics.json").exists()


# Restoring damaged arrays leaves tensorstore futures whose errors nobody reads (they are in the error).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning", "ignore::RuntimeWarning")
def test_a_damaged_older_best_checkpoint_is_set_aside_and_the_run_completes(tiny_synthetic, tmp_path, caplog,
                                                                            capfd):
  """BASE validated every 2 steps and stopped at step 10 of 12; the best checkpoint (not the latest) is
  damaged: the resumed run sets it aside in one line, ends on the next best, and orbax prints nothing."""
  data_dir, _ = tiny_synthetic
  config = _base_config(data_dir, stage2_epochs=2, eval_every_epochs=1 / 3, keep_checkpoints=6)
  with pytest.raises(checkpointing.Preempted):
    train.train_and_evaluate(config, str(tmp_path), hooks=[main.StopAt("2:10")])
  ckpt = checkpointing.StageCheckpoints(tmp_path / "stage2", 6, config.train.stage2_select_metric)
  ranked = ckpt.ranked_steps()
  ckpt.close()
  best = next(s for s in ranked if s != 10)   # damage the best that is not the latest
  damage_checkpoint_item(tmp_path / "stage2" / str(best), "state")
  capfd.readouterr()
  with caplog.at_level("WARNING"):
    metrics = train.train_and_evaluate(config, str(tmp_path))
  assert (tmp_path / "stage2" / f"{best}.damaged").is_dir()
  said = [r.getMessage() for r in caplog.records if "does not restore" in r.getMessage()]
  assert len(said) == 1 and f"{best}.damaged" in said[0] and len(said[0]) < 600, said
  saved = json.loads((tmp_path / "results" / "test_metrics.json").read_text())
  assert saved["checkpoint_step"] != best and np.isfinite(metrics["BLEU_4"])
  err = capfd.readouterr().err
  assert "Traceback" not in err, err[-2000:]
  gc.collect()


def test_two_runs_on_one_workdir_leave_the_first_untouched(tiny_synthetic, tmp_path):
  """The same command typed twice: the second stops in one line naming the first (exit 2) and writes
  nothing; the first finishes with every history row once."""
  data_dir, _ = tiny_synthetic
  cmd = [sys.executable, "-m", "jpg_jax.main", "--config=configs/jpg.py:smoke,base", f"--workdir={tmp_path}",
         f"--config.dataset.data_dir={data_dir}", "--config.train.log_every_steps=1"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  first = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 240
  while time.time() < deadline and not (tmp_path / ".lock").exists():
    time.sleep(0.1)
  second = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
  _, err = first.communicate(timeout=600)
  assert first.returncode == 0, err[-3000:]
  assert second.returncode == errors.EXIT_STATUS
  line = second.stderr.strip().splitlines()[-1]
  assert line.startswith("jpg_jax.main: error: ") and f"pid {first.pid}" in line, second.stderr[-2000:]
  rows = [json.loads(l) for l in (tmp_path / "logs" / "history.jsonl").read_text().splitlines()]
  steps = [r["step"] for r in rows if "stage2/train_loss" in r]
  assert steps == sorted(set(steps)) and (tmp_path / "results" / "test_metrics.json").exists()
  assert not (tmp_path / ".lock").exists()


def test_os_errors_on_the_workdir_end_in_one_line(tiny_synthetic, tmp_path, monkeypatch):
  """A workdir that is a file or under a file stops before anything is written; a disk that fills at a
  checkpoint ends in one line naming the path and the newest checkpoint, the temporary folder removed."""
  import errno as errno_lib
  data_dir, _ = tiny_synthetic
  config = _base_config(data_dir, eval_every_epochs=1 / 3)   # a checkpoint every 2 steps
  a_file = tmp_path / "a_file"
  a_file.write_text("x")
  for workdir, expected in ((a_file, "is a file, not a directory"), (a_file / "run", f"{a_file} is a file")):
    with pytest.raises(errors.WorkdirError, match=re.escape(expected)) as e:
      train.train_and_evaluate(config, str(workdir))
    assert "\n" not in str(e.value)
  saves = []
  save = checkpointing.StageCheckpoints.save

  def fills_at_the_second(self, step, *args, **kwargs):
    saves.append(step)
    if len(saves) == 2:
      (self.directory / f"{step}.orbax-checkpoint-tmp-1").mkdir(parents=True)   # what a cut write leaves
      raise OSError(errno_lib.ENOSPC, "No space left on device", str(self.directory / str(step)))
    return save(self, step, *args, **kwargs)

  monkeypatch.setattr(checkpointing.StageCheckpoints, "save", fills_at_the_second)
  workdir = tmp_path / "run"
  with pytest.raises(errors.WorkdirError) as e:
    train.train_and_evaluate(config, str(workdir))
  message = str(e.value)
  assert "No space left on device" in message and f"newest checkpoints: {workdir / 'stage2' / '2'}" in message
  assert "\n" not in message and isinstance(e.value, OSError)
  assert sorted(p.name for p in (workdir / "stage2").iterdir()) == ["2"]
  assert not (workdir / ".lock").exists()
