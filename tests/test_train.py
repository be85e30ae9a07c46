"""End to end on the tiny synthetic set: both stages, mining, test results, evaluate, predict; resume,
preemption, NaN and config checks."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from configs import jpg
from jpg_jax import evaluate
from jpg_jax import train


def smoke_config(data_dir, *variants):
  config = jpg.get_config(",".join(("smoke",) + variants))
  config.unlock()
  config.dataset.data_dir = data_dir
  config.lock()
  return config


@pytest.fixture(scope="module")
def run(tiny_synthetic, tmp_path_factory):
  data_dir, _ = tiny_synthetic
  workdir = tmp_path_factory.mktemp("run")
  config = smoke_config(data_dir)
  metrics = train.train_and_evaluate(config, str(workdir))
  return config, workdir, metrics


def test_results_files(run):
  config, workdir, metrics = run
  saved = json.loads((workdir / "results" / "test_metrics.json").read_text())
  for key in evaluate.CAPTION_KEYS + ("label_micro_f1",):
    assert key in saved and saved[key] == pytest.approx(metrics[key])
  assert set(evaluate.CAPTION_KEYS) <= set(saved["baseline_most_frequent"])
  rows = [json.loads(l) for l in (workdir / "results" / "test_reports.jsonl").read_text().splitlines()]
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
  history = [json.loads(l) for l in (workdir / "logs" / "history.jsonl").read_text().splitlines()]
  assert any("stage2/train_report_loss" in h for h in history)
  assert any(p.name.startswith("events.out.tfevents") for p in (workdir / "logs").iterdir())


def test_evaluate_rescoring_matches(run):
  config, workdir, metrics = run
  again = train.evaluate_checkpoint(config, str(workdir))
  for key in evaluate.CAPTION_KEYS:
    assert again[key] == pytest.approx(metrics[key], abs=1e-6)


def test_predict_two_images(run, tmp_path):
  config, workdir, _ = run
  paths = []
  for k in range(2):
    p = tmp_path / f"view{k}.png"
    Image.fromarray((np.random.default_rng(k).random((80, 70)) * 255).astype(np.uint8)).save(p)
    paths.append(str(p))
  result = train.predict(config, str(workdir), paths, str(tmp_path / "out"))
  assert isinstance(result["report"], str) and "predicted_labels" in result
  assert (tmp_path / "out" / "attention.png").exists() == bool(result["report"])
  assert json.loads((tmp_path / "out" / "prediction.json").read_text())["report"] == result["report"]
  with pytest.raises(ValueError, match="frontal and the lateral"):
    train.predict(config, str(workdir), paths[:1])


def test_attention_maps_for_given_words(run, tmp_path):
  """Fig. 4 on fixed words, whatever the smoke model generates: one map per word and view, a PNG."""
  import jax.numpy as jnp
  from jpg_jax import attention
  config, workdir, _ = run
  _, model, state, _, _, _ = train.restore_for_inference(config, str(workdir))
  size = config.dataset.image_size
  images = jnp.zeros((1, 2, size, size, 3))
  maps = attention.word_attention(model, train.variables_of(state), images, np.array([3, 4, 5, 0, 0]))
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


def test_resume_gives_the_same_losses(tiny_synthetic, tmp_path):
  data_dir, _ = tiny_synthetic
  config = smoke_config(data_dir, "base")
  config.unlock()
  config.train.log_every_steps = 1
  config.train.stage2_epochs = 1.5      # 9 steps of 8 examples; evaluation (and a checkpoint) after 6
  config.train.eval_every_epochs = 1.0
  config.lock()
  train.train_and_evaluate(config, str(tmp_path / "a"))
  with pytest.raises(SystemExit):
    train.train_and_evaluate(config, str(tmp_path / "b"), stop_at_step=(2, 4))
  assert (tmp_path / "b" / "stage2" / "4").exists()
  train.train_and_evaluate(config, str(tmp_path / "b"))
  a, b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
  assert sorted(a) == list(range(1, 10)) and sorted(b) == sorted(a)
  for step in a:
    assert b[step] == pytest.approx(a[step], rel=1e-5), step


def test_nan_loss_stops_with_the_last_good_checkpoint(tiny_synthetic, tmp_path):
  data_dir, _ = tiny_synthetic
  config = smoke_config(data_dir, "base")
  config.unlock()
  config.train.log_every_steps = 1
  config.train.eval_every_epochs = 1 / 3   # a checkpoint every 2 steps
  config.optim.learning_rate = 1e36
  config.optim.weight_decay = 0.0
  config.lock()
  with pytest.raises(FloatingPointError, match="non-finite"):
    train.train_and_evaluate(config, str(tmp_path))
  import orbax.checkpoint as ocp
  steps = sorted(int(p.name) for p in (tmp_path / "stage2").iterdir() if p.name.isdigit())
  for step in steps:
    with ocp.StandardCheckpointer() as ckpt:
      state = ckpt.restore((tmp_path / "stage2" / str(step) / "state").absolute())
    assert all(np.isfinite(np.asarray(x)).all() for x in __import__("jax").tree.leaves(state["params"]))


def test_workdir_of_another_config_refuses_to_resume(tiny_synthetic, tmp_path):
  data_dir, _ = tiny_synthetic
  train.check_workdir_config(smoke_config(data_dir), tmp_path)
  other = smoke_config(data_dir)
  other.unlock()
  other.optim.learning_rate = 1.0
  other.lock()
  with pytest.raises(ValueError, match="optim.learning_rate"):
    train.check_workdir_config(other, tmp_path)
  other.unlock()
  other.train.allow_config_change = True
  train.check_workdir_config(other, tmp_path)


def test_sigterm_writes_a_checkpoint_and_the_run_resumes(tiny_synthetic, tmp_path):
  data_dir, _ = tiny_synthetic
  cmd = [sys.executable, "-m", "jpg_jax.main", "--config=configs/jpg.py:smoke,base", f"--workdir={tmp_path}",
         f"--config.dataset.data_dir={data_dir}", "--config.train.stage2_epochs=20",
         "--config.train.log_every_steps=1"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  history = tmp_path / "logs" / "history.jsonl"
  deadline = time.time() + 240
  while time.time() < deadline and not (history.exists() and len(history.read_text().splitlines()) >= 3):
    time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 143, err[-3000:]
  assert "checkpoint" in err and "SIGTERM" in err
  steps = [int(p.name) for p in (tmp_path / "stage2").iterdir() if p.name.isdigit()]
  last = max(_losses(tmp_path))
  assert last in steps and last < 120
