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
  """Console everywhere; TensorBoard files in ``logdir`` unless ``just_logging`` (processes > 0)."""
  return MultiWriter([LoggingWriter()] + ([] if just_logging else [TensorBoardWriter(logdir)]))


class ReportProgress:
  """Logs steps/s, examples/s and the ETA every ``every_steps`` steps (clu's ReportProgress, simplified)."""

  def __init__(self, num_train_steps: int, writer, every_steps: int = 50, examples_per_step: int = 0,
               prefix: str = ""):
    self.total, self.writer, self.every = num_train_steps, writer, every_steps
    self.examples_per_step, self.prefix = examples_per_step, prefix
    self._t, self._step = None, None

  def __call__(self, step: int):
    now = time.time()
    if self._t is None:
      self._t, self._step = now, step
      return
    if step - self._step < self.every and step != self.total:
      return
    rate = (step - self._step) / max(now - self._t, 1e-9)
    scalars = {f"{self.prefix}steps_per_sec": rate}
    if self.examples_per_step:
      scalars[f"{self.prefix}examples_per_sec"] = rate * self.examples_per_step
    self.writer.write_scalars(step, scalars)
    eta = (self.total - step) / max(rate, 1e-9)
    logging.info("%sstep %d/%d (%.1f%%), %.2f steps/s, ETA %dm%02ds", self.prefix, step, self.total,
                 100 * step / max(self.total, 1), rate, eta // 60, eta % 60)
    self._t, self._step = now, step
