"""Metric writers: console + TensorBoard event files, with clu's ``MetricWriter`` interface.

clu's own ``clu.metric_writers`` (and ``clu.periodic_actions``, which imports it) import TensorFlow at
import time (clu 0.0.12), and jpg-jax runs without a TensorFlow runtime; these writers keep clu's method
names (``write_scalars``, ``write_hparams``, ``write_texts``, ``flush``, ``close``) so that swapping clu
back in is one import. TensorBoard files are written with tensorboardX (pure Python). Only process 0
writes; the others get a writer that only logs.
"""

from __future__ import annotations

import json
import time
from typing import Any, Mapping

from absl import logging
from etils import epath

from jpg_jax import console


class LoggingWriter:
  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    logging.info("[%d] %s", step, ", ".join(f"{k}={float(v):.5g}" for k, v in sorted(scalars.items())))

  def write_texts(self, step: int, texts: Mapping[str, str]):
    for k, v in texts.items():
      logging.info("[%d] %s: %s", step, k, v)

  def write_hparams(self, hparams: Mapping[str, Any]):
    logging.info("hparams: %s", dict(hparams))

  def flush(self):
    pass

  def close(self):
    pass


class TensorBoardWriter:
  def __init__(self, logdir: str):
    from tensorboardX import SummaryWriter   # imports torch where it is installed: 4 s, for writers only
    self._writer = SummaryWriter(logdir, flush_secs=30)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    for k, v in scalars.items():
      self._writer.add_scalar(k, float(v), global_step=step)

  def write_texts(self, step: int, texts: Mapping[str, str]):
    for k, v in texts.items():
      self._writer.add_text(k, v, global_step=step)

  def write_hparams(self, hparams: Mapping[str, Any]):
    self._writer.add_text("hparams", "\n".join(f"{k}: {v}" for k, v in sorted(hparams.items())), 0)

  def flush(self):
    self._writer.flush()

  def close(self):
    self._writer.close()


class JsonlWriter:
  """Scalars as JSON lines (``{"step": s, "tag": value, ...}``), appended: a run's ``logs/history.jsonl``,
  readable without TensorBoard."""

  def __init__(self, path):
    self._path = epath.Path(path)
    self._path.parent.mkdir(parents=True, exist_ok=True)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    with self._path.open("a") as f:
      f.write(json.dumps({"step": int(step), **scalars}) + "\n")

  def drop_after(self, prefix: str, step: int):
    """Removes the rows of ``prefix`` tags (a stage's) past ``step``, and a row cut short by a kill: a
    resumed run restarts at its last checkpoint and logs the replayed steps again. Written whole or not at
    all (a rename)."""
    if not self._path.exists():
      return

    def keep(line: str) -> bool:
      try:
        row = json.loads(line)
      except ValueError:
        return False
      return not (row["step"] > step and any(k.startswith(prefix) for k in row))

    lines = self._path.read_text().splitlines()
    kept = [l for l in lines if keep(l)]
    if len(kept) < len(lines):
      partial = self._path.parent / (self._path.name + ".tmp")
      partial.write_text("".join(l + "\n" for l in kept))
      partial.replace(self._path)

  def flush(self):
    pass

  def close(self):
    pass


class NullWriter:
  """Writes nothing (processes other than 0)."""

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    pass

  def drop_after(self, prefix: str, step: int):
    pass

  def flush(self):
    pass

  def close(self):
    pass


class MultiWriter:
  def __init__(self, writers):
    self._writers = list(writers)

  def __getattr__(self, name):
    def call(*args, **kwargs):
      for w in self._writers:
        getattr(w, name)(*args, **kwargs)
    return call


def create_default_writer(logdir: str, just_logging: bool = False) -> MultiWriter:
  """TensorBoard files in ``logdir`` (not on processes > 0); every scalar on the console too only with
  ``--verbosity=1``: the console's own lines are ``console.py``'s."""
  writers = [] if just_logging else [TensorBoardWriter(logdir)]
  if logging.get_verbosity() >= logging.DEBUG:
    writers.append(LoggingWriter())
  return MultiWriter(writers)


class ReportProgress:
  """Steps/s and examples/s to the writer each time it is called (the training loop calls it every
  logging interval; clu's ReportProgress, simplified), and ``console.progress_line`` at most
  ``console.PROGRESS_LINES`` times a stage (and at its last step): the console stays a page long."""

  def __init__(self, num_train_steps: int, writer, examples_per_step: int = 0, stage: int = 2,
               start_step: int = 0):
    self.total, self.writer, self.examples_per_step, self.stage = num_train_steps, writer, examples_per_step, stage
    self.console_every = max(-(-num_train_steps // console.PROGRESS_LINES), 1)
    # The first interval's rate includes compiling the step.
    self._t, self._step = time.time(), start_step
    self._console_t, self._console_step = self._t, start_step

  def __call__(self, step: int, loss: float | None = None):
    now = time.time()
    if step <= self._step:
      return
    rate = (step - self._step) / max(now - self._t, 1e-9)
    prefix = f"stage{self.stage}/"
    scalars = {f"{prefix}steps_per_sec": rate}
    if self.examples_per_step:
      scalars[f"{prefix}examples_per_sec"] = rate * self.examples_per_step
    self.writer.write_scalars(step, scalars)
    self._t, self._step = now, step
    if step - self._console_step >= self.console_every or step == self.total:
      rate = (step - self._console_step) / max(now - self._console_t, 1e-9)
      logging.info("%s", console.progress_line(self.stage, step, self.total, loss, rate))
      self._console_t, self._console_step = now, step
