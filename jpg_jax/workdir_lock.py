"""One run at a time in a workdir: ``DIR/.lock``, taken atomically, holding host, pid and start time.

Two runs in one workdir would write the same checkpoints and log every row twice. ``WorkdirLock`` takes
the lock with ``O_CREAT | O_EXCL`` (atomic on a local or NFS-v3+ file system); a second run stops in one
line naming the holder. A lock whose process is gone (the same host, the pid no longer running: a run
killed with SIGKILL or a machine restart) is taken over, saying so. On several hosts process 0 alone takes
the lock and every process learns its decision, so all stop alike. A ``gs://`` workdir has no atomic
create: it is not locked (one line says so).
"""

from __future__ import annotations

import json
import os
import socket
import time

import jax
import numpy as np
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from jpg_jax import errors

LOCK = ".lock"


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:   # another user's process: it exists
    return True
  return True


def _describe(holder: dict) -> str:
  started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
  return f"pid {holder.get('pid')} on {holder.get('host')}, started {started}"


class WorkdirLock:
  """``with WorkdirLock(workdir):`` holds ``workdir/.lock`` for the block (creating the workdir)."""

  def __init__(self, workdir):
    self.workdir = epath.Path(workdir)
    self.path = self.workdir / LOCK
    self.held = False

  def _take(self) -> str | None:
    """Takes the lock; returns None, or the reason it cannot be had."""
    record = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    for _ in range(2):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        try:
          holder = json.loads(self.path.read_text())
        except (OSError, ValueError):
          holder = {}
        if holder.get("host") == record["host"] and isinstance(holder.get("pid"), int) and not _alive(holder["pid"]):
          logging.warning("Workdir %s: taking over the lock of %s, which is no longer running.", self.workdir,
                          _describe(holder))
          self.path.unlink(missing_ok=True)
          continue
        return (f"{self.workdir} is in use by another run ({_describe(holder)}; {self.path}): wait for it, "
                f"use another workdir, or remove {self.path} if that run is gone")
      with os.fdopen(fd, "w") as f:
        json.dump(record, f)
      self.held = True
      return None
    return f"could not take {self.path}"

  def __enter__(self):
    if "://" in str(self.workdir):
      logging.info("Workdir %s is remote: not locked (one run at a time is the user's to keep).", self.workdir)
      return self
    reason = None
    if jax.process_index() == 0:
      self.workdir.mkdir(parents=True, exist_ok=True)
      reason = self._take()
    if jax.process_count() > 1:   # every process follows process 0's decision
      busy = multihost_utils.broadcast_one_to_all(np.int32(reason is not None))
      if busy and reason is None:
        reason = f"{self.workdir} is in use by another run (process 0 could not take {self.path})"
    if reason:
      raise errors.WorkdirBusyError(reason)
    return self

  def __exit__(self, *exc):
    if self.held:
      try:
        holder = json.loads(self.path.read_text())
        if holder.get("pid") == os.getpid():
          self.path.unlink()
      except (OSError, ValueError):
        pass
      self.held = False
