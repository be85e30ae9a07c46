"""Checkpoints of both training stages, preemption, and the workdir's config guard.

A workdir holds ``config.json`` (the config that wrote it; ``check_workdir_config`` refuses to resume
under one that computes something else, paths aside), ``stage1/`` and ``stage2/`` (one orbax
``CheckpointManager`` each: ``StageCheckpoints``) and, after a run, ``labels/``, ``logs/`` and
``results/``. A latest checkpoint that does not restore (truncated, corrupted) is set aside as
``N.damaged`` and the previous one resumes; the same guard (``restore_intact``) serves the best checkpoint
a stage ends on, the other stage's and inference's. A preemption notice (SIGTERM, or JAX's preemption service on
a pod) or a hook's request makes the stage loop write a checkpoint and raise ``Preempted``, which
``main`` turns into exit status 143.
"""

from __future__ import annotations

import json
import signal

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from jpg_jax import config_checks
from jpg_jax import errors

STATE, DATA, META = "state", "data", "meta"   # a checkpoint's items


class Preempted(Exception):
  """The run stopped at a checkpoint on request (SIGTERM, a preemption notice, a hook); rerunning the
  same command resumes there."""


# ============================================================================================ the workdir's config
def read_workdir_config(workdir: epath.Path) -> str | None:
  """``DIR/config.json`` as written, or None when the workdir has none."""
  path = epath.Path(workdir) / "config.json"
  try:
    text = path.read_text()
    json.loads(text)
  except FileNotFoundError:
    return None
  except (ValueError, OSError) as e:
    raise errors.InputError(f"{path} cannot be read ({e}); restore it from the run's logs or use another "
                            f"workdir.") from None
  return text


def check_workdir_config(config, workdir: epath.Path) -> None:
  """Refuses a workdir written by a config that computes something else (``config_checks.differences``:
  paths may differ), unless ``train.allow_config_change``. Writes nothing."""
  old = read_workdir_config(workdir)
  if old is None or config.train.allow_config_change:
    return
  diff = config_checks.differences(old, config.to_json())
  if diff:
    raise errors.ConfigError(
        f"{workdir} was written by a different config ({'; '.join(diff)}): use another workdir, the same "
        f"config, or --config.train.allow_config_change=True to resume anyway.")


def write_workdir_config(config, workdir: epath.Path) -> None:
  """Process 0 writes the config to ``DIR/config.json`` (after ``check_workdir_config``)."""
  path = workdir / "config.json"
  current = config.to_json(sort_keys=True, indent=1)
  if jax.process_index() == 0 and not (path.exists() and path.read_text() == current):
    # Written whole or not at all (a rename): the other hosts read this file at the same time.
    workdir.mkdir(parents=True, exist_ok=True)
    partial = workdir / "config.json.tmp"
    partial.write_text(current)
    partial.replace(path)


# ============================================================================================ stage checkpoints
class StageCheckpoints:
  """An orbax CheckpointManager per stage: the last N checkpoints plus the best on validation.

  Items: ``state`` (step, params, batch_stats, opt_state, rng), ``data`` (the grain iterator's position)
  and ``meta`` (stage, config fingerprint, vocabulary, label set, validation metrics). Every process calls
  save and restore (orbax writes each host's shards of ``state``; the JSON items come from process 0:
  all hosts' iterators are at the same position of the global order, see ``ip.train_dataset``). The
  directory may be local, shared or ``gs://``.
  """

  def __init__(self, directory: epath.Path, keep: int, metric: str, read_only: bool = False):
    self.directory = directory
    self.metric = metric
    policy = ocp.checkpoint_managers.AnyPreservationPolicy([
        ocp.checkpoint_managers.LatestN(keep),
        ocp.checkpoint_managers.BestN(get_metric_fn=lambda m: m[metric], reverse=False, n=1,
                                      keep_checkpoints_without_metrics=False),
    ])
    # best_fn makes orbax write each checkpoint's metrics to disk, so that a new process (a resumed run,
    # --mode=evaluate/predict) knows which checkpoint is the best and the preservation policy keeps it.
    options = ocp.CheckpointManagerOptions(preservation_policy=policy, create=not read_only,
                                           best_fn=lambda m: m[metric], best_mode="max", read_only=read_only)
    self.manager = ocp.CheckpointManager(
        directory if "://" in str(directory) else directory.absolute(), options=options,
        item_names=(STATE, DATA, META))

  def save(self, step: int, state, data_state, meta: dict, metrics: dict | None = None):
    self.manager.save(step, args=ocp.args.Composite(**{
        STATE: ocp.args.StandardSave(state), DATA: ocp.args.JsonSave(data_state),
        META: ocp.args.JsonSave(meta)}), metrics=metrics, force=True)

  def latest_step(self):
    return self.manager.latest_step()

  def best_step(self):
    """The step with the highest validation metric; the latest step when none has one.

    Metrics come from orbax (in memory, or its ``metrics`` item on disk) and, for checkpoints written
    before metrics were persisted, from the ``meta`` item's ``val``.
    """
    ranked = self.ranked_steps()
    return ranked[0] if ranked else None

  def _meta_metrics(self, step: int) -> dict | None:
    try:
      return self.restore_meta(step).get("val")
    except Exception as e:  # noqa: BLE001  (a damaged meta item: the step has no known metric)
      logging.warning("The meta item of checkpoint %s does not restore (%s).", self.step_dir(step), summary(e))
      return None

  def step_dir(self, step: int) -> epath.Path:
    return self.directory / str(step)

  def restore_meta(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))[META]

  def restore(self, step: int, abstract_state):
    """The whole train state, the data iterator's position and the meta item of ``step``."""
    r = self.manager.restore(step, args=ocp.args.Composite(**{
        STATE: ocp.args.StandardRestore(abstract_state), DATA: ocp.args.JsonRestore(),
        META: ocp.args.JsonRestore()}))
    return r[STATE], r[DATA], r[META]

  def restore_variables(self, step: int, abstract_variables: dict) -> dict:
    """``params`` and ``batch_stats`` of ``step`` only (inference): the optimiser state, the largest part
    of a checkpoint, is neither read nor needed."""
    args = ocp.args.PyTreeRestore(item=abstract_variables, partial_restore=True,
                                  restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_variables))
    return self.manager.restore(step, args=ocp.args.Composite(**{STATE: args}))[STATE]

  def scores(self) -> dict[int, float]:
    """The validation metric of every step that has one."""
    known = {c.step: c.metrics for c in self.manager._checkpoints}  # noqa: SLF001
    scored = {}
    for step in self.manager.all_steps():
      metrics = known.get(step) or self._meta_metrics(step)
      if metrics and self.metric in metrics:
        scored[step] = metrics[self.metric]
    return scored

  def ranked_steps(self) -> list[int]:
    """Every step, best first: those with the validation metric by it (ties: the earlier), then the rest
    newest first. ``best_step`` is the first."""
    scored = self.scores()
    rest = [s for s in self.manager.all_steps() if s not in scored]
    return sorted(scored, key=lambda s: (-scored[s], s)) + sorted(rest, reverse=True)

  def first_intact(self, restore, steps=None):
    """``(step, restore(step))`` of the first of ``steps`` (default: every step, newest first) that
    restores, and ``{step: error summary}`` of those before it that do not; ``(None, None)`` first when
    none does. orbax's and tensorstore's own logging of a failed read is held back (``quiet_orbax``)."""
    damaged = {}
    for step in (sorted(self.manager.all_steps(), reverse=True) if steps is None else steps):
      try:
        with quiet_orbax():
          return (step, restore(step)), damaged
      except Exception as e:  # noqa: BLE001  (orbax, tensorstore, zstd and json raise many types)
        damaged[step] = summary(e)
    return (None, None), damaged

  def restore_intact(self, restore, steps, what: str):
    """The guard every restore of a run goes through: ``(step, restore(step))`` of the first of ``steps``
    that restores. Each step before it that does not (a truncated or corrupted file) is reported in one
    line and set aside as ``N.damaged`` (orbax no longer sees it; nothing is deleted). When none restores,
    nothing is moved and ``CheckpointError`` names the first and says what to do. On several processes a
    failed restore is a ``CheckpointError`` naming the folder: the hosts would each decide alone which
    step is intact, inside orbax's collective restore, so none is set aside for them.
    """
    steps = list(steps)
    if not steps:
      raise errors.CheckpointError(f"{self.directory} holds no checkpoint ({what}).")
    if jax.process_count() > 1:
      try:
        with quiet_orbax():
          return steps[0], restore(steps[0])
      except Exception as e:  # noqa: BLE001
        raise errors.CheckpointError(
            f"Checkpoint {self.step_dir(steps[0])} ({what}) does not restore ({summary(e)}); move it away "
            f"(the next one is used) or use the config that wrote it.") from None
    (step, restored), damaged = self.first_intact(restore, steps)
    if step is None:
      first = steps[0]
      raise errors.CheckpointError(
          f"No checkpoint in {self.directory} restores ({what}); {self.step_dir(first)} fails with: "
          f"{damaged[first]}. Move the folder away to train the stage afresh, or use the config that wrote "
          f"it.")
    for bad, why in damaged.items():
      aside = self._set_aside(bad)
      logging.warning("Checkpoint %s (%s) does not restore (%s); moved to %s, using step %d.",
                      self.step_dir(bad), what, why, aside.name, step)
    if damaged:
      self.manager.reload()
    return step, restored

  def restore_latest_intact(self, abstract_state):
    """The newest checkpoint that restores, as ``(step, state, data, meta)``; None when there is none
    (``restore_intact``'s guard: newer damaged steps are set aside)."""
    if self.manager.latest_step() is None:
      return None
    step, restored = self.restore_intact(lambda s: self.restore(s, abstract_state),
                                         sorted(self.manager.all_steps(), reverse=True), "to resume from")
    return (step, *restored)

  def restore_best_intact(self, restore):
    """``(step, restore(step))`` of the best checkpoint that restores (``ranked_steps``; damaged better
    ones are set aside, ``restore_intact``)."""
    return self.restore_intact(restore, self.ranked_steps(), "the best on validation")

  def _set_aside(self, step: int) -> epath.Path:
    target = self.directory / f"{step}.damaged"
    n = 1
    while target.exists():
      n += 1
      target = self.directory / f"{step}.damaged{n}"
    if jax.process_index() == 0:
      self.step_dir(step).rename(target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"jpg_jax set aside {self.directory} {step}")
    return target

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.close()


class quiet_orbax:  # noqa: N801  (a context manager used like a function)
  """Holds back what orbax and tensorstore log at ERROR while a restore fails (hundreds of lines of
  tracebacks for one truncated file): the guard reports the failure in one line instead. ``--verbosity=1``
  shows it all."""

  def __enter__(self):
    self._level = logging.get_verbosity()
    if self._level < logging.DEBUG:
      logging.set_verbosity(logging.FATAL)
    return self

  def __exit__(self, *exc):
    logging.set_verbosity(self._level)


def summary(error: BaseException, limit: int = 240) -> str:
  """The root cause of ``error`` (orbax wraps tensorstore's and zstd's errors several times) in one line."""
  seen = set()
  while (error.__cause__ or error.__context__) is not None and id(error) not in seen:
    seen.add(id(error))
    error = error.__cause__ or error.__context__
  text = " ".join(str(error).split()) or "no message"
  return f"{type(error).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


def remove_temporary(workdir: epath.Path) -> list[epath.Path]:
  """Removes the temporary folders a checkpoint write left behind (``*.orbax-checkpoint-tmp*``) in the
  workdir's stage folders (process 0); returns them."""
  gone = []
  if jax.process_index() != 0:
    return gone
  for stage in ("stage1", "stage2"):
    directory = epath.Path(workdir) / stage
    if directory.is_dir():
      for path in directory.iterdir():
        if ".orbax-checkpoint-tmp" in path.name:
          path.rmtree() if path.is_dir() else path.unlink()
          gone.append(path)
  return gone


def newest_steps(workdir: epath.Path) -> dict[str, int]:
  """``{stage folder: newest step folder}`` of the workdir (not checked to restore)."""
  out = {}
  for stage in ("stage1", "stage2"):
    directory = epath.Path(workdir) / stage
    steps = [int(p.name) for p in directory.iterdir() if p.name.isdigit()] if directory.is_dir() else []
    if steps:
      out[stage] = max(steps)
  return out


# ============================================================================================ preemption
class Preemption:
  """A preemption notice (SIGTERM) makes the training loop write a checkpoint and stop.

  One process: a SIGTERM handler sets a flag. Several processes: JAX's preemption service (started with
  ``jax.distributed``) takes the notice on whichever host gets it, and ``reached()`` turns true on every
  host at the same training step (``multihost_utils.reached_preemption_sync_point``), so that all hosts
  write the same checkpoint. The sync point counts calls over the whole run (both stages), the same on
  every host, so a notice near the end of stage 1 stops the run early in stage 2.
  """

  def __init__(self):
    self.requested = False
    self.calls = 0
    self._previous = None
    self._depth = 0   # entered for the whole run and again by each stage: the handler is installed once

  def __enter__(self):
    self._depth += 1
    if self._depth == 1 and jax.process_count() == 1:
      try:
        self._previous = signal.signal(signal.SIGTERM, self._handle)
      except ValueError:   # Not the main thread: no handler.
        self._previous = None
    return self

  def _handle(self, signum, frame):
    logging.warning("SIGTERM received: checkpointing before exit.")
    self.requested = True

  def reached(self) -> bool:
    """Called once per training step on every host."""
    self.calls += 1
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(self.calls)
    return self.requested

  def check(self, where: str) -> None:
    """Raises ``Preempted`` if a notice has come (every host at the same call): between the stages and
    before the test, where the checkpoints already hold everything done."""
    if self.reached():
      logging.warning("SIGTERM: stopping %s; the checkpoints hold everything done so far.", where)
      raise Preempted(where)

  def __exit__(self, *exc):
    self._depth -= 1
    if self._depth == 0 and self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
