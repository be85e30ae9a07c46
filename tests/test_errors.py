"""Every bad input a clear one-line error (``jpg_jax.errors``), every failure recoverable, nothing
overwritten: the cases of issue I that need no trained model (those that do are in test_train.py)."""

import gc
import io
import json
import os
import re
import struct
import subprocess
import sys
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs import jpg
from jpg_jax import checkpointing
from jpg_jax import config_checks
from jpg_jax import errors
from jpg_jax import inference
from jpg_jax import metric_writers
from jpg_jax import train
from jpg_jax.datasets import common
from jpg_jax_testing import damage_checkpoint_item

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(variants="smoke", **overrides):
  """The config of ``variants`` with ``overrides`` (``{"model.similarity": "cosin"}`` as keyword
  ``model__similarity``)."""
  config = jpg.get_config(variants)
  config.unlock()
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split("__")
    for p in parents:
      node = node[p]
    node[leaf] = value
  config.lock()
  return config


def _one_line(error: BaseException) -> str:
  message = str(error)
  assert message and "\n" not in message
  return message


# ============================================================================================ images
def test_16_bit_and_float_images_are_scaled_by_their_range(tmp_path):
  """12-bit data in a 16-bit PNG: ``convert("L")`` would clip 94% of it to white."""
  twelve = np.linspace(0, 4095, 48 * 64).reshape(48, 64).astype(np.uint16)
  path = tmp_path / "twelve_bit.png"
  Image.fromarray(twelve).save(path)
  assert Image.open(path).mode == "I;16"
  assert (np.asarray(Image.open(path).convert("L")) == 255).mean() > 0.9   # what the rule replaces
  grey = np.asarray(common.open_grey(path, "x"))
  assert grey.dtype == np.uint8 and grey.min() == 0 and grey.max() == 255
  np.testing.assert_allclose(grey, twelve / 4095 * 255, atol=0.51)
  # The builders' path (PNG bytes stored in the dataset) applies the same rule.
  stored = np.asarray(Image.open(io.BytesIO(common.read_grayscale_png(path, "R1"))))
  np.testing.assert_array_equal(stored, grey)

  floats = tmp_path / "float.tiff"
  Image.fromarray((twelve / 4095.0).astype(np.float32) * 0.01).save(floats)   # values in [0, 0.01]
  assert Image.open(floats).mode == "F"
  np.testing.assert_array_equal(np.asarray(common.open_grey(floats, "x")), grey)
  flat = tmp_path / "flat.png"
  Image.fromarray(np.full((8, 8), 3000, np.uint16)).save(flat)
  assert np.asarray(common.open_grey(flat, "x")).max() == 0


def _png_claiming(width: int, height: int) -> bytes:
  """A small PNG whose header says ``width`` x ``height`` (PIL checks the size before decoding)."""
  buf = io.BytesIO()
  Image.new("L", (4, 4)).save(buf, "PNG")
  data = bytearray(buf.getvalue())
  data[16:24] = struct.pack(">II", width, height)
  data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
  return bytes(data)


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"), ("folder", "is a folder"), ("truncated", "cannot be decoded"),
    ("empty", "is empty"), ("text", "cannot be decoded"), ("huge", "too large to decode")])
def test_bad_image_files_are_named_in_one_line(tmp_path, case, message):
  path = tmp_path / "view.png"
  buf = io.BytesIO()
  Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)).save(buf, "PNG")
  if case == "folder":
    path.mkdir()
  elif case == "truncated":
    path.write_bytes(buf.getvalue()[:len(buf.getvalue()) // 2])
  elif case == "empty":
    path.write_bytes(b"")
  elif case == "text":
    path.write_text("not an image\n")
  elif case == "huge":
    path.write_bytes(_png_claiming(20000, 20000))
  with pytest.raises(common.BadImageError, match=message) as e:
    common.open_grey(path, f"--images file {path}")
  assert f"--images file {path}" in _one_line(e.value)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_large_images_are_reduced_while_decoding(tmp_path, fmt):
  """A 6000 x 6000 view decodes to at most ``max_side`` (JPEG: in draft mode, at a fraction of the
  pixels); the aspect ratio is kept."""
  path = tmp_path / f"big.{fmt.lower()}"
  ramp = np.add.outer(np.arange(6000) // 24, np.arange(4500) // 24).astype(np.uint8)
  Image.fromarray(ramp).save(path, fmt)
  grey = common.open_grey(path, "x", max_side=inference.PREDICT_MAX_SIDE)
  assert grey.mode == "L" and grey.size == (768, 1024)


def test_predict_wants_one_image_per_view():
  for paths in (["a.png"], ["a.png", "b.png", "c.png"]):
    expected = fr"--images needs 2 file\(s\).*\(frontal, lateral\); got {len(paths)}"
    with pytest.raises(errors.InputError, match=expected) as e:
      inference.predict(_config(), "/nonexistent", paths)
    _one_line(e.value)
  # MIMIC-CXR as R2Gen reads it: one image an example.
  with pytest.raises(errors.InputError, match=r"--images needs 1 file\(s\).*mimic_cxr/r2gen \(image\); got 2"):
    inference.predict(_config("mimic"), "/nonexistent", ["a.png", "b.png"])


# ============================================================================================ configs
def test_bad_config_values_fail_before_the_workdir_is_written(tiny_synthetic, tmp_path):
  data_dir, _ = tiny_synthetic
  workdir = tmp_path / "w"
  bad = _config(dataset__data_dir=data_dir, model__similarity="cosin", optim__name="sgd", train__beam_size=0)
  with pytest.raises(errors.ConfigError) as e:
    train.train_and_evaluate(bad, str(workdir))
  message = _one_line(e.value)
  for part in ("model.similarity='cosin' is not one of 'dot', 'scaled_dot', 'cosine'",
               "optim.name='sgd'", "train.beam_size=0 must be positive"):
    assert part in message
  assert not workdir.exists()
  # Batches: the train and the eval batch are named apart.
  with pytest.raises(errors.ConfigError, match=r"train.eval_batch_size=6 \(global\) is not a multiple of the 4 "
                                               r"devices\.$") as e:
    config_checks.validate(_config(train__eval_batch_size=6), device_count=4)
  assert "train.batch_size" not in str(e.value)
  assert config_checks.problems(_config("smoke,base", train__stage2_select_metric="label_micro_f1"))
  assert config_checks.problems(_config(train__stage2_select_metric="METEOR"))
  assert not config_checks.problems(_config("synthetic"))
  assert not config_checks.problems(jpg.get_config(), training=False)   # evaluate / predict need no weights


def test_a_real_data_run_without_extractor_weights_stops_before_writing(tmp_path, iu_xray_dir):
  """Sec. 4.4's extractor is ImageNet-pretrained: a real-data run without weights names the converter in
  one line and writes nothing; 'random' asks for a random init on purpose and gets past the check."""
  workdir = tmp_path / "w"
  for variants in ("", "r2gen_split", "mimic", "base"):
    config = _config(variants, dataset__data_dir=str(tmp_path / "tfds"), dataset__manual_dir=str(iu_xray_dir))
    with pytest.raises(errors.ConfigError, match="jpg_jax.tools.convert_resnet") as e:
      train.train_and_evaluate(config, str(workdir))
    assert "--config.resnet_checkpoint='random'" in _one_line(e.value)
    assert config_checks.problems(config) == [str(e.value)[len("Bad config: "):-1]]   # the only problem
  assert not workdir.exists() and not (tmp_path / "tfds").exists()
  # 'random' passes the check (and fails next on the missing images, still before writing)
  config = _config("", resnet_checkpoint="random", dataset__data_dir=str(tmp_path / "tfds"),
                   dataset__manual_dir=str(tmp_path / "nowhere"))
  assert config_checks.problems(config) == []
  with pytest.raises(errors.MissingFileError):
    train.train_and_evaluate(config, str(workdir))
  assert not workdir.exists()
  out = subprocess.run([sys.executable, "-m", "jpg_jax.main", "--config=configs/jpg.py", f"--workdir={workdir}",
                        f"--config.dataset.manual_dir={iu_xray_dir}", f"--config.dataset.data_dir={tmp_path}"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert out.returncode == errors.EXIT_STATUS and out.stderr.splitlines()[-1].startswith("jpg_jax.main: error:")
  assert "convert_resnet" in out.stderr.splitlines()[-1] and not workdir.exists()


def test_only_paths_may_differ_when_a_workdir_resumes(tmp_path):
  config = _config()
  checkpointing.check_workdir_config(config, tmp_path)     # a new workdir: nothing to compare, nothing written
  assert not (tmp_path / "config.json").exists()
  checkpointing.write_workdir_config(config, tmp_path)
  moved = _config(dataset__data_dir="/elsewhere/tfds", dataset__manual_dir="/elsewhere/iu_xray")
  checkpointing.check_workdir_config(moved, tmp_path)
  assert config_checks.fingerprint(moved) == config_checks.fingerprint(config)
  other = _config(optim__learning_rate=1.0, model__dropout=0.2)
  with pytest.raises(errors.ConfigError, match=r"\(model.dropout: 0.1 -> 0.2; optim.learning_rate: 0.0001 -> "
                                               r"1.0\): use another workdir") as e:
    checkpointing.check_workdir_config(other, tmp_path)
  _one_line(e.value)
  checkpointing.check_workdir_config(_config(optim__learning_rate=1.0, train__allow_config_change=True), tmp_path)
  (tmp_path / "config.json").write_text('{"seed": ')
  with pytest.raises(errors.InputError, match=f"{tmp_path / 'config.json'} cannot be read"):
    checkpointing.check_workdir_config(config, tmp_path)


def test_a_missing_manual_dir_fails_at_once_and_writes_nothing(tmp_path):
  workdir = tmp_path / "w"
  config = _config(dataset__name="iu_xray/r2gen", dataset__data_dir=str(tmp_path / "tfds"),
                   dataset__manual_dir=str(tmp_path / "nowhere"))
  with pytest.raises(errors.MissingFileError, match=f"The manual dir {tmp_path / 'nowhere'} "
                                                    r"\(dataset.manual_dir\) does not exist") as e:
    train.train_and_evaluate(config, str(workdir))
  _one_line(e.value)
  assert not workdir.exists()


def test_main_turns_user_errors_into_one_line_and_status_2(tiny_synthetic, tmp_path):
  data_dir, _ = tiny_synthetic
  workdir = tmp_path / "w"
  base = [sys.executable, "-m", "jpg_jax.main", "--config=configs/jpg.py:smoke", f"--workdir={workdir}",
          f"--config.dataset.data_dir={data_dir}"]
  for args, expected in (
      (["--config.model.foo=1"], "--config.model.foo: the config has no key 'foo'"),
      (["--config.modle.dropout=0.2"], 'the config has no key \'modle\'; Did you mean "model"'),
      (["--config.model.similarity=cosin"], "model.similarity='cosin' is not one of"),
      (["--mode=predict", "--images=a.png", "--verbosity=1"], "--images needs 2 file(s)"),
      (["--stop_at=100"], "--stop_at='100': expected STAGE:STEP")):
    out = subprocess.run(base + args, capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert out.returncode == errors.EXIT_STATUS, out.stderr[-3000:]
    verbose = "--verbosity=1" in args
    lines = out.stderr.splitlines()
    said = [l for l in lines if l.startswith("jpg_jax.main: error: ")]
    assert len(said) == 1 and expected in said[0] and (verbose or said[0] == lines[-1]), out.stderr[-3000:]
    assert ("Traceback" in out.stderr) == verbose   # the traceback on request only
  assert not workdir.exists()


# ============================================================================================ resuming
def test_history_drops_the_rows_a_resumed_stage_replays(tmp_path):
  history = metric_writers.JsonlWriter(tmp_path / "history.jsonl")
  for step in range(1, 5):
    history.write_scalars(step, {"stage1/train_loss": step})
  for step in range(1, 7):
    history.write_scalars(step, {"stage2/train_loss": step})
  with (tmp_path / "history.jsonl").open("a") as f:
    f.write('{"step": 7, "stage2/tra')   # a kill during the write
  history.drop_after("stage2/", 4)
  rows = [json.loads(l) for l in (tmp_path / "history.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows if "stage1/train_loss" in r] == [1, 2, 3, 4]
  assert [r["step"] for r in rows if "stage2/train_loss" in r] == [1, 2, 3, 4]
  history.drop_after("stage2/", 0)
  assert all("stage1/train_loss" in json.loads(l) for l in (tmp_path / "history.jsonl").read_text().splitlines())


def _tiny_state(value: int) -> dict:
  return {"step": jnp.asarray(value, jnp.int32), "params": {"w": jnp.full((4,), float(value))}}


# Restoring damaged arrays leaves orbax futures whose errors nobody reads (they are in the error).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning", "ignore::RuntimeWarning")
def test_a_damaged_latest_checkpoint_is_set_aside_and_the_previous_one_resumes(tmp_path, caplog):
  directory = tmp_path / "stage2"
  ckpt = checkpointing.StageCheckpoints(directory, keep=5, metric="BLEU_4")
  for step in (1, 2, 3):
    ckpt.save(step, _tiny_state(step), {"position": step}, {"stage": 2}, metrics={"BLEU_4": 0.1 * step})
  ckpt.wait()
  ckpt.close()
  damage_checkpoint_item(directory / "3", "state")      # truncated array data
  damage_checkpoint_item(directory / "2", "meta")       # a truncated meta file
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), _tiny_state(0))
  ckpt = checkpointing.StageCheckpoints(directory, keep=5, metric="BLEU_4")
  with caplog.at_level("WARNING"):
    step, state, data, meta = ckpt.restore_latest_intact(abstract)
  assert step == 1 and data == {"position": 1} and meta == {"stage": 2} and float(state["params"]["w"][0]) == 1
  assert sorted(p.name for p in directory.iterdir()) == ["1", "2.damaged", "3.damaged"]
  warned = " ".join(r.getMessage() for r in caplog.records)
  assert f"Checkpoint {directory / '3'} (to resume from) does not restore" in warned and f"{directory / '2'}" in warned
  ckpt.save(2, _tiny_state(2), {"position": 2}, {"stage": 2}, metrics={"BLEU_4": 0.2})   # training goes on
  ckpt.wait()
  assert ckpt.latest_step() == 2
  ckpt.close()

  # No step restores: nothing is moved, and the error names the newest.
  damage_checkpoint_item(directory / "1", "state")
  damage_checkpoint_item(directory / "2", "state")
  ckpt = checkpointing.StageCheckpoints(directory, keep=5, metric="BLEU_4")
  with pytest.raises(errors.CheckpointError, match=re.escape(f"No checkpoint in {directory} restores (to resume "
                                                             f"from); {directory / '2'} fails")) as e:
    ckpt.restore_latest_intact(abstract)
  _one_line(e.value)
  assert sorted(p.name for p in directory.iterdir()) == ["1", "2", "2.damaged", "3.damaged"]
  ckpt.close()
  gc.collect()   # the damaged reads' futures go now, under this test's warning filter


# ============================================================================================ issue P
def test_data_checks_come_before_the_workdir_is_written(tiny_synthetic, tmp_path):
  """A batch larger than the data, a vocabulary of <unk> alone and a non-finite number fail in one line
  with nothing written; the fixed config then passes the same checks."""
  data_dir, _ = tiny_synthetic
  workdir = tmp_path / "w"
  for overrides, expected in (
      (dict(train__batch_size=1000), "train.batch_size=1000 (global) is larger than the train split's 48"),
      (dict(train__batch_size=40), "larger than stage 1's"),
      (dict(dataset__vocab_threshold=100000), "dataset.vocab_threshold=100000 leaves 0 token(s)"),
      (dict(optim__learning_rate=float("inf")), "optim.learning_rate=inf must be a finite number"),
      (dict(optim__weight_decay=float("nan")), "optim.weight_decay=nan must be a finite number")):
    with pytest.raises(errors.ConfigError, match=re.escape(expected)) as e:
      train.train_and_evaluate(_config(dataset__data_dir=data_dir, **overrides), str(workdir))
    _one_line(e.value)
    assert not workdir.exists(), overrides
  from jpg_jax import input_pipeline as ip
  config = _config(dataset__data_dir=data_dir)
  assert config_checks.data_problems(config, ip.load_data(config)) == []


def test_a_busy_workdir_stops_the_second_run_and_a_dead_holders_lock_is_taken_over(tiny_synthetic, tmp_path,
                                                                                  caplog):
  from jpg_jax import workdir_lock
  data_dir, _ = tiny_synthetic
  workdir = tmp_path / "w"
  holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
  try:
    with workdir_lock.WorkdirLock(workdir) as lock:   # stands for a run in progress
      record = json.loads((workdir / ".lock").read_text())
      assert record["pid"] == os.getpid() and {"host", "started"} <= set(record)
      (workdir / ".lock").write_text(json.dumps(dict(record, pid=holder.pid)))   # ... held by another process
      with pytest.raises(errors.WorkdirBusyError, match=f"in use by another run \\(pid {holder.pid} on ") as e:
        train.train_and_evaluate(_config(dataset__data_dir=data_dir), str(workdir))
      _one_line(e.value)
      assert sorted(p.name for p in workdir.iterdir()) == [".lock"]   # the second run wrote nothing
      assert json.loads((workdir / ".lock").read_text())["pid"] == holder.pid
      lock.held = False
  finally:
    holder.kill()
    holder.wait()
  # the holder is gone (killed): its lock is taken over, saying so, and released at the end
  with caplog.at_level("WARNING"):
    with workdir_lock.WorkdirLock(workdir):
      assert json.loads((workdir / ".lock").read_text())["pid"] == os.getpid()
  assert f"taking over the lock of pid {holder.pid}" in caplog.text
  assert not (workdir / ".lock").exists()


# The tools' wrong arguments: each ends in one line naming the flag or the path, exit status 2.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL_CASES = [
    ("attention_map", ["--config=configs/jpg.py:smoke", "--workdir=/nonexistent", "--id=x", "--output={t}/a.png"],
     "/nonexistent has no vocab.json"),
    ("compare", ["--run=BASE=/nonexistent"], "/nonexistent is not a finished run"),
    ("convert_resnet", ["--torch_checkpoint=/nonexistent.pth", "--output={t}/out"], "/nonexistent.pth is not a file"),
    ("curves", ["--workdir=/nonexistent", "--output={t}/c.png"], "no TensorBoard event files"),
    ("diagnose", ["--config=configs/nope.py"], "No such file or directory: 'configs/nope.py'"),
    ("examples", ["--output={t}/e.html"], "Flag --run must have a value"),
    ("export_extractor", ["--workdir=/nonexistent", "--output={t}/out"], "/nonexistent holds no config.json"),
    ("findings_agreement", ["--archive=/nonexistent.tgz"], "/nonexistent.tgz does not exist"),
    ("probe", ["--config=configs/jpg.py:smoke", "--config.nokey=1"], "has no key"),
    ("import_torch", ["--model=r2gen", "--checkpoint=/nonexistent.pth", "--config=configs/jpg.py:smoke,r2gen",
                      "--workdir={t}/w"], "--checkpoint /nonexistent.pth is not a file"),
    ("provenance", ["--bogus"], "Unknown command line flag 'bogus'"),
    ("seeds", ["--config=configs/jpg.py:smoke", "--root={t}/r", "--seeds=a"], "--seeds: 'a' is not an integer"),
    ("synthetic_table2", ["--root={t}/r", "--rows=NOPE"], "--rows: unknown ['NOPE']"),
]


@pytest.mark.parametrize("tool, args, message", TOOL_CASES, ids=[c[0] for c in TOOL_CASES])
def test_every_tool_refuses_wrong_arguments_in_one_line(tool, args, message, tmp_path):
  """Nothing is written where the arguments point."""
  args = [a.format(t=tmp_path) for a in args]
  out = subprocess.run([sys.executable, "-m", f"jpg_jax.tools.{tool}", *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu"))
  lines = [l for l in out.stderr.splitlines() if not re.match(r"[IW]\d{4} ", l)]
  assert out.returncode == errors.EXIT_STATUS, out.stderr[-2000:]
  assert len(lines) == 1 and lines[0].startswith(f"{tool}: error: ") and message in lines[0], lines
  assert not any(tmp_path.iterdir())


def test_every_command_module_under_tools_is_in_the_wrong_arguments_test():
  tools = {p[:-3] for p in os.listdir(os.path.join(ROOT, "jpg_jax", "tools"))
           if p.endswith(".py") and "cli.run(" in open(os.path.join(ROOT, "jpg_jax", "tools", p)).read()}
  assert tools == {c[0] for c in TOOL_CASES}
