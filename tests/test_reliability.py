"""The workdir survives its users (docs/reliability.md): preemption and resume, a non-finite loss, a damaged
best checkpoint, two runs on one workdir, operating-system errors. Each test trains the smoke config's BASE
(the shortest whole run) on the tiny synthetic set."""

import gc
import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jpg_jax import checkpointing
from jpg_jax import errors
from jpg_jax import main
from jpg_jax import steps
from jpg_jax import train
from jpg_jax_testing import base_config
from jpg_jax_testing import damage_checkpoint_item

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _losses(workdir, stage="stage2"):
  out = {}
  for line in (workdir / "logs" / "history.jsonl").read_text().splitlines():
    h = json.loads(line)
    if f"{stage}/train_loss" in h:
      out[h["step"]] = h[f"{stage}/train_loss"]
  return out


def test_sigterm_and_hooks_stop_with_a_checkpoint_and_the_run_resumes_with_the_same_losses(
    tiny_synthetic, tmp_path):
  """Run ``a`` trains 9 steps in process and a hook stops it (as a preemption notice does). Run ``b`` is
  the main job, sent SIGTERM after its third step: it checkpoints, exits 143, and logs quietly; resumed,
  it replays the losses of ``a`` step for step. Stage 2 of BASE: 6 steps an epoch, validation after 6."""
  data_dir, _ = tiny_synthetic
  config = base_config(data_dir, log_every_steps=1, stage2_epochs=20)   # 120 steps: never reached
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
  # Quiet by default: a few short lines for people (orbax alone logs ~150 INFO lines a checkpoint).
  lines = err.splitlines()
  assert any(re.match(r"W \d\d:\d\d:\d\d SIGTERM", l) for l in lines), err[-3000:]
  assert len(lines) < 30 and max(map(len, lines)) <= 160, err[-3000:]
  stopped = max(_losses(b))
  assert stopped in {int(p.name) for p in (b / "stage2").iterdir() if p.name.isdigit()} and stopped < 9

  with pytest.raises(checkpointing.Preempted):
    train.train_and_evaluate(config, str(b), hooks=[main.StopAt("2:9")])
  a_losses, b_losses = _losses(tmp_path / "a"), _losses(b)
  assert sorted(a_losses) == list(range(1, 10)) and sorted(b_losses) == sorted(a_losses)
  for step in a_losses:
    assert b_losses[step] == pytest.approx(a_losses[step], rel=1e-5), step


def test_nan_loss_stops_with_the_last_good_checkpoint(tiny_synthetic, tmp_path, monkeypatch):
  """The batches turn NaN from step 3 on (the train step is the other BASE runs' program: from the
  compilation cache; a learning rate of 1e36 would make another program)."""
  data_dir, _ = tiny_synthetic
  config = base_config(data_dir, log_every_steps=1, eval_every_epochs=1 / 3)   # a checkpoint every 2 steps
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
  config = base_config(data_dir, stage2_epochs=1)   # 6 steps
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
  config = base_config(data_dir, stage2_epochs=2, eval_every_epochs=1 / 3, keep_checkpoints=6)
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
  nothing; the first finishes with every history row once, its console as short as issue O asks."""
  data_dir, _ = tiny_synthetic
  cmd = [sys.executable, "-m", "jpg_jax.main", "--config=configs/jpg.py:smoke,base", f"--workdir={tmp_path}",
         f"--config.dataset.data_dir={data_dir}", "--config.train.log_every_steps=1"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  first = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 240
  while time.time() < deadline and not (tmp_path / ".lock").exists():
    time.sleep(0.1)
  second = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
  out, err = first.communicate(timeout=600)
  assert first.returncode == 0, err[-3000:]
  # The first run's console (issue O): short lines, ending on the test table and where the results are.
  console = err.splitlines() + out.splitlines()
  assert len(console) <= 60 and max(map(len, console)) <= 160, err + out
  assert out.splitlines()[0].split()[:4] == ["test", "split", "model", "most"] and "Results:  " in out
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
  config = base_config(data_dir, eval_every_epochs=1 / 3)   # a checkpoint every 2 steps
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
