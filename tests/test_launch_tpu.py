"""launch_tpu.sh --dry-run prints the gcloud commands of a whole run, in order, and runs none of them."""

import os
import shlex
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(__file__))
SCRIPT = os.path.join(ROOT, "launch_tpu.sh")


def _dry_run(*args, env=None):
  # PATH without gcloud: a dry run must not need it.
  env = dict(env or {}, PATH="/usr/bin:/bin", TMPDIR="/tmp")
  return subprocess.run(["bash", SCRIPT, "--dry-run", *args], capture_output=True, text=True, env=env,
                        timeout=60)


def _commands(stdout: str) -> list[list[str]]:
  return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def test_dry_run_prints_the_whole_run():
  out = _dry_run("--name", "jpg-v4", "--zone", "us-central2-b", "--accelerator-type", "v4-32",
                 "--workdir", "gs://bucket/jpg run", "--config", "configs/jpg.py:base", "--spot", "--delete",
                 "--", "--config.train.batch_size=32")
  assert out.returncode == 0, out.stderr
  cmds = _commands(out.stdout)
  assert [c[:5] for c in cmds[:2]] == [["gcloud", "compute", "tpus", "tpu-vm", "describe"],
                                       ["gcloud", "compute", "tpus", "tpu-vm", "create"]]
  assert "--accelerator-type=v4-32" in cmds[1] and "--spot" in cmds[1] and "--zone=us-central2-b" in cmds[1]
  assert cmds[2][:2] == ["tar", "czf"] and os.path.samefile(cmds[2][cmds[2].index("-C") + 1], ROOT)
  assert cmds[3][4] == "scp" and "--worker=all" in cmds[3]
  ssh = [c for c in cmds if c[4] == "ssh"]
  assert all("--worker=all" in c and c[5] == "jpg-v4" for c in ssh)
  remote = [next(a for a in c if a.startswith("--command="))[len("--command="):] for c in ssh]
  assert "tar xzf" in remote[0]
  assert "jax[tpu]" in remote[1] and "-e '.[tpu]'" in remote[1]
  main = shlex.split(remote[2].split("&&")[-1].split("2>&1")[0])
  assert main == ["python", "-m", "jpg_jax.main", "--config=configs/jpg.py:base",
                  "--workdir=gs://bucket/jpg run", "--distributed=true", "--config.train.batch_size=32"]
  assert cmds[-1][4:] == ["delete", "jpg-v4", "--zone=us-central2-b", "--quiet"]


def test_defaults_from_the_environment_and_skipped_steps():
  env = {"TPU_NAME": "envname", "TPU_ZONE": "europe-west4-b", "TPU_ACCELERATOR_TYPE": "v5litepod-64",
         "TPU_PROJECT": "proj", "JPG_WORKDIR": "gs://b/w"}
  out = _dry_run("--skip-create", "--skip-install", env=env)
  assert out.returncode == 0, out.stderr
  cmds = _commands(out.stdout)
  assert not any("create" in c or "delete" in c for c in cmds)
  assert not any("jax[tpu]" in " ".join(c) for c in cmds)
  assert all("--project=proj" in c and "--zone=europe-west4-b" in c for c in cmds if c[0] == "gcloud")
  assert "--workdir=gs://b/w" in cmds[-1][-1]


@pytest.mark.parametrize("workdir", ["", "/tmp/local"])
def test_a_run_needs_a_shared_gs_workdir(workdir):
  out = _dry_run("--workdir", workdir) if workdir else _dry_run()
  assert out.returncode == 2 and "gs://" in out.stderr and not out.stdout


def test_delete_only():
  out = _dry_run("--skip-create", "--skip-copy", "--skip-install", "--skip-run", "--delete", "--name", "x")
  assert out.returncode == 0
  assert [c[4] for c in _commands(out.stdout)] == ["delete"]
