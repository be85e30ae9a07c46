"""Shared fixtures: the real IU X-Ray text data (used in place) and small built datasets; one persistent
XLA compilation cache for the session; XLA's fast-compile mode for every test."""

import atexit
import os
import pathlib
import shutil
import sys
import tempfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

# Many tests compile the same programs of the tiny smoke model (its train steps, beam search, init): one
# persistent compilation cache for the whole session, set before any test imports JAX, which both
# pytest-xdist workers and every process a test starts inherit through the environment. The process that
# made the directory removes it at exit.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jpg-jax-test-xla-cache-")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)

# XLA with most optimisations off (LLVM -O0, no expensive passes) for every program of the session, in
# every process: the tests' tiny models compile each program once and run it a few times, and so compile
# in about half the time (the smoke train step: 29 s instead of 56 s here) and run about 3.5x slower, a
# net gain (the whole suite: 776 s instead of 894 s). Arithmetic stays IEEE either way (XLA:CPU uses no
# fast math); parity tolerances are unchanged. ``JAX_DISABLE_MOST_OPTIMIZATIONS=false pytest ...`` runs the
# suite on optimised programs.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "true")
# Every program goes to the cache, also those that compile in under a second (JAX's default threshold):
# an end-to-end run lowers dozens of small ones (metric sums, batch transfers), and every run repeats them.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
if "jax" in sys.modules:
  sys.modules["jax"].config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
  sys.modules["jax"].config.update("jax_disable_most_optimizations",
                                   os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"].lower() in ("1", "true"))
  sys.modules["jax"].config.update("jax_persistent_cache_min_compile_time_secs",
                                   float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


@pytest.fixture(scope="session")
def iu_xray_dir() -> pathlib.Path:
  """``../shared/data/iu_xray`` (or $JPG_JAX_IU_XRAY_DIR): NLMCXR_reports.tgz + r2gen_annotation.json."""
  path = pathlib.Path(os.environ.get("JPG_JAX_IU_XRAY_DIR", REPO.parent / "shared/data/iu_xray"))
  if not (path / "NLMCXR_reports.tgz").exists():
    if os.environ.get("JPG_JAX_REQUIRE_SHARED"):
      pytest.fail(f"JPG_JAX_REQUIRE_SHARED is set but {path} holds no NLMCXR_reports.tgz")
    pytest.skip(f"IU X-Ray text data not found at {path}")
  return path


@pytest.fixture(scope="session")
def iu_reports(iu_xray_dir):
  from jpg_jax.datasets import openi
  return openi.read_reports_archive(iu_xray_dir / "NLMCXR_reports.tgz")


@pytest.fixture(scope="session")
def r2gen_annotation(iu_xray_dir):
  import json
  return json.loads((iu_xray_dir / "r2gen_annotation.json").read_text())


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
  """synthetic_cxr/tiny built once per session: (data_dir, builder)."""
  from jpg_jax import datasets
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  return data_dir, datasets.prepare("synthetic_cxr/tiny", data_dir)


# Seconds each test file took in a whole run here (`pytest -n 2 --dist loadfile tests --durations=60`,
# summed per file, rounded). pytest-xdist's ``loadfile`` hands whole files to its 2 workers in collection order, so
# the longest go first (longest-processing-time scheduling): two long files started last would leave one
# worker running alone at the end. Files not listed are short and go last, in their usual order.
_SECONDS = {"test_train.py": 280, "test_data_parallel.py": 215, "test_reliability.py": 165, "test_models.py": 150,
            "test_mimic_cxr.py": 80, "test_import_torch.py": 60, "test_optim.py": 50, "test_diagnostics.py": 45,
            "test_feature_cache.py": 40, "test_decode.py": 35, "test_precise_bn.py": 32, "test_synthetic_cxr.py": 30,
            "test_cost.py": 25, "test_parity.py": 25, "test_iu_xray.py": 25, "test_errors.py": 25,
            "test_probe.py": 15, "test_evaluate.py": 15, "test_convert.py": 13, "test_baselines.py": 15,
            "test_readme.py": 30, "test_configs.py": 9, "test_compile_cache.py": 10}


def pytest_collection_modifyitems(config, items):
  items.sort(key=lambda item: -_SECONDS.get(pathlib.Path(str(item.fspath)).name, 0))
