"""User errors: a mistake in what the user gave (a file, an image, a config value, an archive, a
checkpoint) that the user can fix.

``jpg_jax.main`` prints a ``UserError`` as one line on stderr, naming the file, key or value and what to
do, and exits with status 2; ``--verbosity=1`` shows the traceback as well. Any other exception is a bug
and keeps its traceback. Each class also derives from the builtin a caller would expect, so that library
users can catch ``ValueError`` or ``FileNotFoundError`` as before.
"""

from __future__ import annotations


class UserError(Exception):
  """A mistake in the input; its message is one line (newlines are folded into spaces)."""

  def __init__(self, message: str):
    super().__init__(" ".join(line.strip() for line in str(message).splitlines() if line.strip()))


class ConfigError(UserError, ValueError):
  """A config value that cannot work (unknown choice, indivisible batch, a path that is not there)."""


class InputError(UserError, ValueError):
  """A file, image, archive or annotation entry that cannot be read as what it should be."""


class MissingFileError(UserError, FileNotFoundError):
  """A file or folder that should be there is not."""


class CheckpointError(UserError, ValueError):
  """A checkpoint that does not restore (damaged, or written by a model of another shape)."""


class OutputExistsError(UserError, FileExistsError):
  """A tool would overwrite something it did not write."""


EXIT_STATUS = 2   # a user error, as argparse and absl's usage errors


class WorkdirError(UserError, OSError):
  """The operating system refuses the workdir (missing parent, read-only, not a directory, no space)."""


class RunError(Exception):
  """The run itself failed (not the input): one line on stderr, exit status ``RUN_EXIT_STATUS``."""

  def __init__(self, message: str):
    super().__init__(" ".join(line.strip() for line in str(message).splitlines() if line.strip()))


class NonFiniteLossError(RunError, FloatingPointError):
  """The training loss or parameters went non-finite; the message names the step, the terms and the
  newest checkpoint."""


RUN_EXIT_STATUS = 1


class WorkdirBusyError(UserError, RuntimeError):
  """Another run holds the workdir (its lock file names the host, process and start time)."""
