"""The command line of ``jpg_jax.main`` and of every tool: absl's ``app.run``, with the user's mistakes
as one line and exit status 2.

A flag that is missing, unknown or of the wrong type, a ``--config`` file that is not there or does not
load, a ``--config.*`` key the config does not have, a ``UsageError``, a ``jpg_jax.errors.UserError`` (a
file that is not a run's, a value that cannot work) and an ``OSError`` on a named path end in
``PROG: error: ...`` on stderr and exit status 2; ``--verbosity=1`` adds the traceback. Anything else is
a bug and keeps its traceback.

  if __name__ == "__main__":
    cli.run(main, required=["workdir", "output"])
"""

from __future__ import annotations

import sys

import ml_collections
from absl import app
from absl import flags
from absl import logging

from jpg_jax import errors


def program() -> str:
  """The running command's name: ``jpg_jax.main``, or the tool's own (``compare``, ...)."""
  spec = getattr(sys.modules["__main__"], "__spec__", None)
  if spec is None:
    return sys.argv[0]
  return spec.name if spec.name == "jpg_jax.main" else spec.name.rsplit(".", 1)[-1]


def fail(message, prog: str | None = None) -> None:
  """One line on stderr, exit status 2 (``errors.EXIT_STATUS``)."""
  print(f"{prog or program()}: error: {' '.join(str(message).split())}", file=sys.stderr)
  sys.exit(errors.EXIT_STATUS)


def last_line(error: BaseException) -> str:
  """The message of ``error`` without a traceback quoted in it (ml_collections quotes the config file's)."""
  lines = [l.strip() for l in str(error).splitlines() if l.strip()]
  if any(l.startswith("Traceback") for l in lines):
    return f"{lines[0].split('Traceback')[0].rstrip(': ')}: {lines[-1]}"
  return " ".join(lines)


def parse_flags(argv):
  """absl's flag parsing, with a bad flag (a ``--config`` file that is not there, an unknown variant, a
  ``--config.*`` key the config does not have, a value of the wrong type) as one line and exit status 2
  instead of a traceback."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(last_line(e))
  except (AttributeError, KeyError) as e:   # ml_collections: an override of a key the config does not have
    lines = str(e.args[0] if e.args else e).splitlines() or [""]
    key, hint = lines[0].strip("\"' "), " ".join(l.strip() for l in lines[1:])
    bad = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.") and f".{key}" in a.split("=")[0]]
    fail(f"{' '.join(bad) or '--config.*'}: the config has no key {key!r}{'; ' + hint if hint else ''}; its "
         f"keys are in configs/jpg.py.")
  except OSError as e:   # a --config file that is not there, with overrides
    fail(f"--config: {last_line(e)}")


def check_config_flag() -> None:
  """A ``--config`` that did not load (config_flags defers the error to its first use) as one line."""
  if "config" not in flags.FLAGS:
    return
  config = flags.FLAGS["config"].value
  if config is not None and not isinstance(config, (ml_collections.ConfigDict, str)):
    try:
      config.to_json()
    except Exception as e:  # noqa: BLE001  (whatever loading the file raised)
      fail(f"--config: {last_line(e)}")


def run(main, required=()) -> None:
  """``app.run(main)`` with the module docstring's handling; ``required`` flags marked so."""
  if required:
    flags.mark_flags_as_required(list(required))

  def guarded(argv):
    check_config_flag()
    try:
      return main(argv)
    except (errors.UserError, app.UsageError) as e:
      if logging.get_verbosity() >= logging.DEBUG:
        logging.exception("User error:")
      fail(e)
    except OSError as e:
      if e.filename is None:
        raise
      fail(f"{e.filename}: {e.strerror or e}")

  app.run(guarded, flags_parser=parse_flags)
