"""Shared fixtures: the real IU X-Ray text data (used in place) and small built datasets."""

import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


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
