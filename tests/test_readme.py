"""The README's commands stay true: every ``python -m jpg_jax...`` command in one of its code blocks parses
(its module exists and parses every flag given, the config with its overrides loads) and names config variants that exist,
so that a renamed flag, tool or variant breaks CI, not a user. The README's two set-up commands are what
``.ci/run`` and a newcomer run; the main job's console is checked in ``test_reliability.py``."""

import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

from configs import jpg

ROOT = pathlib.Path(__file__).resolve().parents[1]


def readme_commands(text: str) -> list[list[str]]:
  """Each ``python -m jpg_jax...`` command of the README's code blocks (backslash continuations joined,
  comments dropped, the ``pip install ... &&`` before it cut) and inline code spans, as argv without the
  interpreter."""
  commands = []
  for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, flags=re.S):
    for line in block.replace("\\\n", " ").splitlines():
      line = line.split(" #", 1)[0].strip()
      if "python -m jpg_jax" not in line:
        continue
      line = line[line.index("python -m jpg_jax"):].split("&&")[0]
      commands.append(shlex.split(line)[1:])
  for span in re.findall(r"`(python -m jpg_jax[^`]*)`", text):   # inline, as in a table of commands
    commands.append(shlex.split(span)[1:])
  return commands


COMMANDS = readme_commands((ROOT / "README.md").read_text())


def test_the_readme_gives_the_main_job_and_the_test_command():
  text = (ROOT / "README.md").read_text()
  assert ["-m", "jpg_jax.main", "--config=configs/jpg.py:synthetic"] == COMMANDS[0][:3]
  assert "pytest -q -n 2 --dist loadfile tests" in text and "pytest -q -n 2 --dist loadfile tests" in (
      ROOT / ".ci" / "run").read_text()
  assert len(text.splitlines()) <= 200


def _variants(argv):
  for arg in argv:
    if arg.startswith("--config=configs/jpg.py"):
      yield arg.split(":", 1)[1] if ":" in arg else ""


# Imports the command's module (defining its flags; a tool that defines them only as a program has
# ``define_flags``), parses the README's arguments as absl does (an unknown or mistyped flag raises) and
# loads the config with its overrides.
PARSE = """
import importlib, sys
from absl import flags
module = importlib.import_module(sys.argv[1])
getattr(module, "define_flags", lambda: None)()
flags.FLAGS(["prog"] + sys.argv[2:])
if "config" in flags.FLAGS and not isinstance(flags.FLAGS["config"].value, (str, type(None))):
  flags.FLAGS["config"].value.to_json()
print("parsed")
"""


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(c[1:3])[:60] for c in COMMANDS])
def test_each_readme_command_parses(argv):
  for variants in _variants(argv):
    jpg.get_config(variants)   # raises on an unknown variant
  assert argv[0] == "-m"
  out = subprocess.run([sys.executable, "-c", PARSE, *argv[1:]], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert out.returncode == 0 and out.stdout.strip() == "parsed", out.stderr[-2000:]


def test_a_renamed_flag_fails_the_parse():
  out = subprocess.run([sys.executable, "-c", PARSE, "jpg_jax.main", "--config=configs/jpg.py:smoke",
                        "--work_dir=/tmp/x"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode != 0 and "work_dir" in out.stderr
