"""Data parallelism over devices and processes, on fake CPU devices (subprocesses: XLA flags are read at
start-up). The same training steps on 1 device and on 2 processes x 4 devices (jax.distributed on
localhost) give the same losses; a preemption notice on one host stops both at the same step; the main job
on 2 processes, killed mid-run, resumes from its checkpoint. One file, so that the multi-process tests do
not run beside each other under pytest-xdist (gloo gives up on a peer that is 30 s late)."""

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from etils import epath
from jpg_jax_testing import free_port

ROOT = os.path.dirname(os.path.dirname(__file__))

SCRIPT = textwrap.dedent("""
    import json, logging, sys, time
    import jax, numpy as np
    data_dir, layouts = sys.argv[1], sys.argv[2]
    if len(sys.argv) > 3:   # coordinator address, process id: 2 processes
      jax.distributed.initialize(sys.argv[3], num_processes=2, process_id=int(sys.argv[4]))
    from configs import jpg
    from jpg_jax import checkpointing, input_pipeline as ip, mining, parallel, steps

    config = jpg.get_config("smoke,base")   # BASE: the smallest graph with BatchNorm over the data axis
    config.unlock(); config.dataset.data_dir = data_dir; config.lock()
    data = ip.load_data(config)
    targets = mining.targets(config, data.vocab)
    compiles = []   # jax logs each XLA compilation of a jitted function when jax_log_compiles is on

    class CountCompiles(logging.Handler):
      def emit(self, record):
        if record.getMessage().startswith("Compiling jit(train_step)"):
          compiles.append(record.getMessage())

    logging.getLogger("jax._src.interpreters.pxla").addHandler(CountCompiles())
    jax.config.update("jax_log_compiles", True)
    losses = {}
    for n in map(int, layouts.split(",")):
      mesh = parallel.make_mesh(jax.devices()[:n])
      model = steps.create_model(config, data.vocab, None)
      opt, _ = steps.make_optimizer(config, steps.param_shapes(model, config), 6, 2)
      state = steps.create_train_state(model, opt, config, 0, mesh)
      step = steps.jit_train_step(model, opt, config, 2, mesh)
      it = ip.to_iter(ip.train_dataset(data.sources["train"], data.index["train"], targets,
                                       batch_size=parallel.local_batch_size(8, mesh), seed=0,
                                       image=ip.image_options(config, True),
                                       process_index=jax.process_index(), process_count=jax.process_count()))
      losses[n], before = [], len(compiles)
      for _ in range(5):
        batch = parallel.global_batch(next(it), mesh)
        assert len(batch["images"].sharding.device_set) == n
        assert batch["images"].shape[0] == 8
        state, terms = step(state, batch)
        losses[n].append(float(terms["loss"]))
      # Compiled once per mesh. (On the 8-device mesh jit's dispatch cache, ``_cache_size()``, gains a
      # second entry at the third call, but no second XLA compilation happens.)
      assert len(compiles) - before == 1, compiles
    stop_call = None
    if jax.process_count() > 1:
      # A preemption notice on host 1 only: both hosts must stop at the same training step.
      import os, signal
      preemption = checkpointing.Preemption()
      with preemption:
        for call in range(1, 200):
          if call == 3 and jax.process_index() == 1:
            os.kill(os.getpid(), signal.SIGTERM)
          if preemption.reached():
            stop_call = call
            break
          time.sleep(0.05)
    print("LOSSES", json.dumps({"process": jax.process_index(), "processes": jax.process_count(),
                                "devices": jax.device_count(), "losses": losses, "stop_call": stop_call}))
""")


def _run(args, devices: int, processes: int = 1, tmp_dir: str = "") -> list[dict]:
  """Runs SCRIPT in ``processes`` processes; their output goes to files (full pipes would block a
  process inside a collective and stall the others)."""
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
  extra = [[]]
  if processes > 1:
    address = f"localhost:{free_port()}"
    extra = [[address, str(p)] for p in range(processes)]
  procs = []
  for p, more in enumerate(extra):
    out = open(os.path.join(tmp_dir, f"process{p}.log"), "w+")
    procs.append((subprocess.Popen([sys.executable, "-c", SCRIPT, *args, *more], env=env, cwd=ROOT,
                                   stdout=out, stderr=subprocess.STDOUT, text=True), out))
  results = []
  for proc, out in procs:
    proc.wait(timeout=600)
    out.seek(0)
    log = out.read()
    assert proc.returncode == 0, log[-4000:]
    results += [json.loads(line[len("LOSSES "):]) for line in log.splitlines() if line.startswith("LOSSES ")]
  return results


def test_two_processes_of_four_devices_match_one_device(tiny_synthetic, tmp_path):
  """The same 5 steps on 1 device, and on 8 devices of 2 processes (4 each: one device mesh over both,
  batch statistics and gradients all-reduced across processes with gloo)."""
  (tmp_path / "one").mkdir()
  (tmp_path / "two").mkdir()
  (single,) = _run([tiny_synthetic[0], "1"], devices=1, tmp_dir=str(tmp_path / "one"))
  results = _run([tiny_synthetic[0], "8"], devices=4, processes=2, tmp_dir=str(tmp_path / "two"))
  assert sorted(r["process"] for r in results) == [0, 1]
  assert single["losses"]["1"][0] != single["losses"]["1"][-1]
  for r in results:
    assert r["processes"] == 2 and r["devices"] == 8
    # Each host read 4 of the 8 examples of every global batch. Equal at step 1 to 1e-7; the all-reduce
    # order's rounding grows over the steps (Adam's early steps divide by tiny second moments), to about
    # 4e-5 at step 5.
    np.testing.assert_allclose(r["losses"]["8"], single["losses"]["1"], rtol=1e-4)
  # SIGTERM reached host 1 alone; JAX's preemption service stopped both at the same step.
  stops = {r["stop_call"] for r in results}
  assert len(stops) == 1 and None not in stops and stops.pop() >= 3


# ------------------------------------------------------------------ the main job on 2 processes
def _launch(workdir, data_dir, log_dir, tag: str) -> list:
  address = f"localhost:{free_port()}"
  # No persistent compilation cache: JAX writes it from process 0 only, and on CPU each process's cache
  # key differs (it hashes the process's own devices), so a restart's process 0 would find its programs
  # there while process 1 compiles them, and the first collective (gloo) gives up on a host more than
  # 30 s late. For the same reason ``jax_share_binary_between_hosts`` would leave process 1 waiting for a
  # binary under a key process 0 never writes. Both processes compile alike, in both starts.
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu",
             JAX_ENABLE_COMPILATION_CACHE="false")
  procs = []
  for p in range(2):
    log = open(os.path.join(log_dir, f"{tag}{p}.log"), "w")
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "jpg_jax.main", "--config=configs/jpg.py:smoke,base", f"--workdir={workdir}",
         f"--config.dataset.data_dir={data_dir}", "--config.train.log_every_steps=1",
         "--config.train.stage2_epochs=1", "--config.train.eval_every_epochs=0.5",
         f"--coordinator_address={address}", "--num_processes=2",
         f"--process_id={p}"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
  return procs


def _history(workdir) -> list[dict]:
  path = epath.Path(workdir) / "logs" / "history.jsonl"
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _checkpoints(workdir, stage: int) -> list[int]:
  d = epath.Path(workdir) / f"stage{stage}"
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


def _wait_until(condition, procs, what: str, timeout: float = 900):
  start = time.time()
  while not condition():
    assert all(p.poll() is None for p in procs), f"a process ended before {what}"
    assert time.time() - start < timeout, f"timed out waiting for {what}"
    time.sleep(0.05)


def _finish(procs, timeout: float = 600) -> list[int]:
  return [p.wait(timeout=timeout) for p in procs]


def _log(log_dir, tag, p=0) -> str:
  return open(os.path.join(log_dir, f"{tag}{p}.log")).read()


def _train_losses(history) -> dict:
  """(stage, step) -> every logged training loss of that step (several where a step was replayed)."""
  out = {}
  for row in history:
    for stage in (1, 2):
      if f"stage{stage}/train_loss" in row:
        out.setdefault((stage, row["step"]), []).append(row[f"stage{stage}/train_loss"])
  return out


def test_killed_hosts_resume_from_the_checkpoint_and_replay_the_same_losses(tiny_synthetic, tmp_path):
  """The main job on 2 processes of 1 device each (2 x 4 devices is the test above); both are killed
  (SIGKILL, no goodbye) two steps past a stage-2 checkpoint; restarted, they resume there, replay the
  same losses and finish with results.
  BASE, whose compilation on two processes of two cores takes a third less than JPG's: both stages run
  the same loop and checkpoints (``train.run_stage``), and the evaluators' gathering over hosts is
  ``evaluators/common.py`` for both."""
  data_dir, _ = tiny_synthetic
  workdir, logs = str(tmp_path / "run"), str(tmp_path)
  procs = _launch(workdir, data_dir, logs, "first")
  try:
    def past_a_checkpoint():
      done = _checkpoints(workdir, 2)
      steps = [r["step"] for r in _history(workdir) if "stage2/train_loss" in r]
      return bool(done) and bool(steps) and steps[-1] >= done[-1] + 2

    _wait_until(past_a_checkpoint, procs, "two stage-2 steps past a checkpoint")
    for p in procs:
      p.kill()
    _finish(procs)
    before = _train_losses(_history(workdir))   # as the killed run logged them
    resumes_at = _checkpoints(workdir, 2)[-1]
    procs = _launch(workdir, data_dir, logs, "second")
    assert _finish(procs) == [0, 0], _log(logs, "second", 0)[-3000:]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert f"Stage 2: resumed at step {resumes_at}" in _log(logs, "second")
  # Steps replayed after the kill give the losses they gave before it; their rows replace the killed run's.
  after = _train_losses(_history(workdir))
  assert all(len(v) == 1 for v in after.values())
  replayed = [k for k in before if k[0] == 2 and k[1] > resumes_at]
  assert len(replayed) >= 2
  for key in replayed:
    np.testing.assert_allclose(after[key], before[key], rtol=1e-6)
  results = json.loads((epath.Path(workdir) / "results" / "test_metrics.json").read_text())
  assert 0 <= results["BLEU_4"] <= 1 and results["num_reports"] == 12
