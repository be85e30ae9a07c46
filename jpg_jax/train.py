"""Training and evaluation of JPG: stage 1 -> label mining -> stage 2 -> test (Sec. 3.4, 4.4).

``train_and_evaluate(config, workdir)`` reads top to bottom:

1. data: the config's TFDS dataset, R2Gen's vocabulary over the train split (``DIR/vocab.json``);
2. stage 1 ("mining and pre-training on single labels"): the extractor, the subspace's visual path, head
   and GRU learn the reports whose MeSH terms reduce to one of the 17 simple patterns (``:tuned``: normal
   cases kept at ``labels.normal_keep`` an epoch); the head's classes are the patterns, the GRU's target is the
   report's full term (its context: ``calcified_granuloma lung upper_lobe right``); selection on
   ``train.stage1_select_metric`` (the GRU's pattern macro-F1, which "always normal" cannot win);
3. mining: the best stage-1 model labels every training report; the ``num_mined`` (57) most frequent
   generated labels (``labels.mining='agreeing'``: among those that agree with their report's terms)
   become the context-aware label set
   (``DIR/labels/mined.txt`` with counts; ``jpg_jax/mining.py``). Items 2 and 3 run in
   ``stage1_and_mining``, which hands stage 2 only the labels and stage 1's parameters and statistics:
   stage 1's optimiser state, compiled step and evaluators are freed before stage 2, whose step is the
   run's peak of memory;
4. stage 2 ("re-training on context-aware labels" + report generation, jointly): every parameter,
   initialised from stage 1 (the extractor held fixed with ``train.stage2_extractor='frozen'``);
   selection on validation BLEU-4 only (R2Gen selects with the test set in view; we do not);
5. test: the best stage-2 checkpoint decodes the test split (beam 3); ``DIR/results/test_metrics.json``
   holds the coco-caption metrics, the label micro-F1 and the most-frequent-report baseline;
   ``test_reports.jsonl`` one line a report; also the extractor's source, the mining summary and the
   reports' statistics (distinct, mean length, empty share).

A stage whose extractor is frozen runs on patch grids computed once (``model.cached_features``,
``stage_inputs``, ``feature_cache.py``); with ``train.precise_bn_batches`` every validation first
re-estimates the BatchNorm statistics for the current weights (``precise_bn.py``).

BASE has no labeler: stage 1 and mining are skipped. Every hot function is jit-compiled once, data
parallel over all devices of all hosts (``parallel.py``), the train step donating its state; the
evaluators (``evaluators/``) are built once per stage, so that no validation pass compiles anything.
This module holds the stage loop and the order of the stages; around it: ``steps.py`` (state, losses,
the step), ``mining.py`` (targets, mining, carry-over), ``checkpointing.py`` (checkpoints, preemption,
the workdir guard), ``evaluators/`` and ``inference.py`` (test results, evaluate, predict).
"""

from __future__ import annotations

import dataclasses
import gc
import errno
import json
import os
import pathlib
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath

from jpg_jax import checkpointing
from jpg_jax import config_checks
from jpg_jax import console
from jpg_jax import errors
from jpg_jax import feature_cache
from jpg_jax import inference
from jpg_jax import input_pipeline as ip
from jpg_jax import labels as labels_lib
from jpg_jax import metric_writers
from jpg_jax import mining
from jpg_jax import parallel
from jpg_jax import precise_bn
from jpg_jax import resnet_weights
from jpg_jax import steps
from jpg_jax import workdir_lock
from jpg_jax.evaluators import labels as label_eval
from jpg_jax.evaluators import reports as report_eval

# A hook is called after every training step with (stage, step); one that returns True stops the run
# there with a checkpoint, as a preemption notice does (time-boxed jobs, tests). On several hosts, every
# host's hooks must answer alike.
Hook = Callable[[int, int], bool]


# ============================================================================================ one stage
@dataclasses.dataclass
class Stage:
  """Everything one stage's loop needs, built before it starts."""
  number: int
  num_steps: int
  steps_per_epoch: int
  step_fn: Callable                    # jitted (state, global batch) -> (state, loss terms)
  learning_rate: Callable              # the main group's learning rate of the update count (logs)
  train_iter: object                   # a checkpointable grain iterator of local batches
  evaluate: Callable[[dict], dict]     # variables -> validation metrics
  checkpoints: checkpointing.StageCheckpoints
  meta: dict                           # written with every checkpoint
  precise_bn: Callable | None = None   # state -> state with re-estimated BatchNorm statistics (precise_bn.py)


def build_stage(number: int, config, workdir: epath.Path, mesh, model, data: ip.Data, targets: ip.Targets,
                optimizer, learning_rate: Callable, *, steps_per_epoch: int, epochs: float, evaluate: Callable,
                select_metric: str, meta: dict, indices=None, droppable=(), keep: float = 1.0) -> Stage:
  """The stage: ``model`` and ``data`` are what its steps run and read (images, or cached patch grids:
  ``stage_inputs``); ``optimizer`` (``steps.make_optimizer``) is the one its state was made for."""
  train_iter = ip.to_iter(ip.train_dataset(
      data.sources["train"], data.index["train"], targets,
      batch_size=parallel.local_batch_size(config.train.batch_size, mesh), seed=config.seed + number,
      image=ip.image_options(config, train=True), indices=indices, droppable=droppable, keep=keep,
      process_index=jax.process_index(), process_count=jax.process_count()), config.dataset.worker_count)
  checkpoints = checkpointing.StageCheckpoints(workdir / f"stage{number}", config.train.keep_checkpoints,
                                               select_metric)
  precise = (precise_bn.PreciseBN(config, model, data, targets, mesh, indices, seed=config.seed + number)
             if config.train.precise_bn_batches else None)
  stage = Stage(number, int(epochs * steps_per_epoch), steps_per_epoch,
                steps.jit_train_step(model, optimizer, config, number, mesh), learning_rate, train_iter,
                evaluate, checkpoints, meta, precise)
  return stage


def stage_inputs(config, stage: int, model, state: dict, data: ip.Data, mesh, workdir: epath.Path):
  """What ``stage`` runs on: (the model, the data). Where the stage ``reads_features``, the model that
  takes patch grids and the data whose sources are the grids of ``state``'s frozen extractor, read from
  (or computed into) a feature cache: beside the dataset for a frozen pretrained extractor (shared by
  runs), in the workdir for stage 1's extractor; otherwise ``model`` and ``data`` as they are."""
  if not steps.reads_features(config, stage):
    return model, data
  directory = (feature_cache.dataset_cache_dir(config) if config.model.frozen_extractor
               else workdir / "features")
  grids = feature_cache.load_or_compute(config, model, steps.variables_of(state), data, mesh, directory)
  features = model.clone(cached_features=True)
  return features, feature_cache.cached_data(data, grids)


class _finishing_writes:  # noqa: N801  (a context manager used like a function)
  """On any error in a stage's loop, waits for the checkpoint writes in flight first (a write that failed
  too is left to the error at hand): the workdir then holds only whole checkpoints and temporary folders."""

  def __init__(self, ckpt):
    self.ckpt = ckpt

  def __enter__(self):
    return self

  def __exit__(self, kind, error, tb):
    if kind is not None:
      try:
        self.ckpt.wait()
      except Exception:  # noqa: BLE001  (the write failed as well: the error at hand says why)
        pass
    return False


def run_stage(stage: Stage, state, *, config, mesh, writer, history, preemption: checkpointing.Preemption,
              hooks: Sequence[Hook] = ()):
  """Trains ``stage`` from ``state`` (or from its latest checkpoint), validating and checkpointing every
  ``train.eval_every_epochs``; returns the best checkpoint's state and step. Raises
  ``checkpointing.Preempted`` after writing a checkpoint on a preemption notice or a hook's request."""
  t, ckpt, prefix = config.train, stage.checkpoints, f"stage{stage.number}/"
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
  resumed = ckpt.restore_latest_intact(abstract)
  if resumed is not None:
    latest, state, data_state, saved_meta = resumed
    if (saved_meta.get("config_fingerprint") not in config_checks.fingerprints(config)
        and not t.allow_config_change):
      raise errors.ConfigError(f"Checkpoint {ckpt.step_dir(latest)} was written by another config; use "
                               f"another workdir or --config.train.allow_config_change=True.")
    if saved_meta.get("label_set") != stage.meta.get("label_set"):
      raise errors.CheckpointError(
          f"Checkpoint {ckpt.step_dir(latest)} was trained on another label set than this run mined (stage 1 "
          f"was trained again?); move {ckpt.directory} away to train stage {stage.number} afresh.")
    stage.train_iter.set_state(data_state)
    logging.info("Stage %d: resumed at step %d.", stage.number, latest)
  step = int(state["step"])
  best_seen = max(ckpt.scores().values(), default=None) if resumed is not None else None   # console only
  history.drop_after(prefix, step)   # rows of steps a killed run logged past its last checkpoint
  eval_every = max(int(t.eval_every_epochs * stage.steps_per_epoch), 1)
  progress = metric_writers.ReportProgress(stage.num_steps, writer, t.batch_size, stage.number, step)
  sums, count = None, 0
  with preemption, _finishing_writes(ckpt):
    while step < stage.num_steps:
      batch = parallel.global_batch(next(stage.train_iter), mesh)
      state, terms = stage.step_fn(state, batch)
      step += 1
      sums = terms if sums is None else jax.tree.map(jnp.add, sums, terms)
      count += 1
      boundary = step % eval_every == 0 or step == stage.num_steps
      stop = preemption.reached() | any([hook(stage.number, step) for hook in hooks])
      if step % t.log_every_steps == 0 or boundary or stop:
        means = {f"{prefix}train_{k}": float(v) / count for k, v in sums.items()}
        finite = means.pop(f"{prefix}train_params_finite") == 1.0
        if not (finite and np.isfinite(means[f"{prefix}train_loss"])):
          ckpt.wait()
          raise errors.NonFiniteLossError(non_finite_message(stage.number, step, means, finite, ckpt, prefix))
        means[f"{prefix}learning_rate"] = float(stage.learning_rate(step - 1))
        writer.write_scalars(step, means)
        history.write_scalars(step, means)
        progress(step, means[f"{prefix}train_loss"])
        sums, count = None, 0
      metrics = None
      if boundary:   # validated before a stop too: a resumed run does not validate this step again
        if stage.precise_bn is not None:
          state = stage.precise_bn(state)
        metrics = stage.evaluate(steps.variables_of(state))
        logging.info("%s", console.validation_line(stage.number, step, metrics, ckpt.metric, best_seen))
        if ckpt.metric in metrics:
          best_seen = max(metrics[ckpt.metric], -np.inf if best_seen is None else best_seen)
        val = {f"{prefix}val_{k}": v for k, v in metrics.items()}
        writer.write_scalars(step, val)
        history.write_scalars(step, val)
      if boundary and not stop:   # a notice that came during the validation
        stop = preemption.reached()
      if boundary or stop:
        ckpt.save(step, state, stage.train_iter.get_state(),
                  stage.meta if metrics is None else dict(stage.meta, val=metrics), metrics=metrics)
      if stop:
        ckpt.wait()
        writer.flush()
        logging.warning("Stage %d: checkpoint %d written on request (SIGTERM or a hook); stopping.",
                        stage.number, step)
        raise checkpointing.Preempted(f"stage {stage.number}, step {step}")
  ckpt.wait()
  best, (best_state, _, _) = ckpt.restore_best_intact(lambda s: ckpt.restore(s, abstract))
  logging.info("Stage %d: best checkpoint is step %s.", stage.number, best)
  ckpt.close()
  writer.flush()
  return best_state, best


def non_finite_message(number: int, step: int, means: dict, params_finite: bool, ckpt, prefix: str) -> str:
  """One line: the stage, the step, the few terms that went non-finite, the newest checkpoint."""
  bad = [k[len(prefix + "train_"):] for k, v in means.items() if not np.isfinite(v)]
  bad = sorted((k for k in bad if "/" not in k), key=lambda k: ("loss" not in k, k))   # not per module
  bad += [] if params_finite else ["the parameters"]
  shown = ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
  newest = ckpt.latest_step()
  where = (f"the newest checkpoint, {ckpt.step_dir(newest)}, is intact (rerunning resumes there)"
           if newest is not None else f"stage {number} has no checkpoint yet")
  return (f"Stage {number}: the loss went non-finite at step {step} ({shown} not finite); {where}. Try a "
          f"lower optim.learning_rate in a new workdir.")


# ============================================================================================ the whole method
def train_and_evaluate(config, workdir, *, mesh=None, hooks: Sequence[Hook] = ()) -> dict:
  """Stage 1, mining, stage 2 and the test (the module docstring); returns the test metrics."""
  workdir = epath.Path(workdir)
  mesh = mesh if mesh is not None else parallel.make_mesh()
  # Nothing is written to the workdir before the config, the workdir and the data have been checked.
  config_checks.validate(config, mesh.size, jax.process_count())
  check_workdir_usable(workdir)
  checkpointing.check_workdir_config(config, workdir)
  warn_random_extractor(config)
  data = ip.load_data(config)
  config_checks.validate_data(config, data)
  try:
    with workdir_lock.WorkdirLock(workdir):   # one run at a time: a second stops here, writing nothing
      return _train_and_evaluate(config, workdir, mesh, hooks, data)
  except (errors.UserError, errors.RunError, checkpointing.Preempted):
    raise
  except Exception as e:  # noqa: BLE001  (an OSError, or orbax's and tensorstore's wrapping of one)
    refused = workdir_os_error(e, workdir)
    if refused is None:
      raise
    checkpointing.remove_temporary(workdir)
    newest = checkpointing.newest_steps(workdir)
    kept = ", ".join(f"{workdir / k / str(v)}" for k, v in newest.items()) or "none"
    raise errors.WorkdirError(f"{refused}; newest checkpoints: {kept}. Free the space or fix the folder, then "
                              f"rerun the same command to resume.") from e


# The operating system's refusals that concern the workdir, whatever file of it they were met on.
_WORKDIR_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                   errno.EISDIR}


def workdir_os_error(error: BaseException, workdir: epath.Path) -> str | None:
  """One line for an ``OSError`` in ``error``'s chain that the workdir caused (no space, read-only, not
  writable, not a directory), naming the path; None for any other error."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in _WORKDIR_ERRNOS:
      path = error.filename or workdir
      if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) or str(workdir) in str(path):
        return f"{path}: {error.strerror or os.strerror(error.errno)}"
    error = error.__cause__ or error.__context__
  return None


def check_workdir_usable(workdir: epath.Path) -> None:
  """The workdir is, or can be made, a writable directory (a local one; ``gs://`` is orbax's to check):
  it is not a file, and its nearest existing ancestor is a writable directory. Writes nothing."""
  if "://" in str(workdir):
    return
  path = pathlib.Path(os.fspath(workdir)).absolute()
  if path.exists() and not path.is_dir():
    raise errors.WorkdirError(f"--workdir {path} is a file, not a directory.")
  ancestor = next(p for p in (path, *path.parents) if p.exists())
  if not ancestor.is_dir():
    raise errors.WorkdirError(f"--workdir {path}: {ancestor} is a file, not a directory.")
  if not os.access(ancestor, os.W_OK | os.X_OK):
    raise errors.WorkdirError(f"--workdir {path}: {ancestor} is not writable (read-only, or not yours).")
  try:
    if os.statvfs(ancestor).f_flag & os.ST_RDONLY:
      raise errors.WorkdirError(f"--workdir {path}: {ancestor} is on a read-only file system.")
  except (AttributeError, OSError):   # no statvfs on this platform
    pass


def _train_and_evaluate(config, workdir: epath.Path, mesh, hooks: Sequence[Hook], data: ip.Data) -> dict:
  """The run under one preemption handler: a SIGTERM at any point ends at a checkpoint (in a stage's
  loop) or at the next point between the parts of the run, ``checkpointing.Preempted`` either way."""
  preemption = checkpointing.Preemption()
  with preemption:
    return _run(config, workdir, mesh, hooks, data, preemption)


def _run(config, workdir: epath.Path, mesh, hooks: Sequence[Hook], data: ip.Data,
         preemption: checkpointing.Preemption) -> dict:
  t = config.train
  lead = jax.process_index() == 0
  checkpointing.write_workdir_config(config, workdir)
  if lead:
    data.vocab.save(workdir / "vocab.json")
  logging.info("Vocabulary: %d tokens; splits: %s.", len(data.vocab),
               ", ".join(f"{s} {len(i)}" for s, i in data.index.items()))
  writer = metric_writers.create_default_writer(str(workdir / "logs"), just_logging=not lead)
  history = metric_writers.JsonlWriter(workdir / "logs" / "history.jsonl") if lead else metric_writers.NullWriter()
  loop = dict(config=config, mesh=mesh, writer=writer, history=history,
              preemption=preemption, hooks=hooks)
  meta = {"config_fingerprint": config_checks.fingerprint(config),
          "vocabulary": json.loads(data.vocab.to_json())}
  train_index = data.index["train"]

  # ---------------------------------------------------------------- stage 1 + mining
  # In a function of its own, so that what only stage 1 needs (its optimiser state, its compiled step and
  # evaluators) is freed before stage 2 starts: the peak of a run is stage 2's step (README, Performance).
  first = stage1_and_mining(config, workdir, data, mesh, loop, meta) if config.model.use_labeler else None
  if first is not None:
    preemption.check("after stage 1 and mining")
  gc.collect()   # Flax modules and jitted closures hold reference cycles
  label_set, assigned = (first.label_set, first.assigned) if first else (None, None)
  stage1_grids = first.grids if first else None

  # ---------------------------------------------------------------- stage 2
  model2 = steps.create_model(config, data.vocab, label_set, stage=2)
  per_epoch2 = max(len(train_index) // t.batch_size, 1)
  optimizer2, lr2 = steps.make_optimizer(config, steps.param_shapes(model2, config), per_epoch2, 2)
  state = steps.create_train_state(model2, optimizer2, config, init_seed(config, 2, first is not None), mesh)
  if first is None:
    state = with_pretrained_extractor(state, config, mesh)
  else:
    state = mining.carry_over(state, first.variables, optimizer2, mesh)
    first.variables = {}   # stage 2's state holds what it takes of them (its first step donates them)
  # The state (and so every checkpoint) holds the whole model, the extractor too, whatever the stage
  # runs on: a stage-2 checkpoint evaluates and predicts from images.
  run2, data2 = ((model2.clone(cached_features=True), stage1_grids) if stage1_grids is not None
                 else stage_inputs(config, 2, model2, state, data, mesh, workdir))
  evaluator2 = report_eval.ReportEvaluator(config, run2, data2, "val", label_set, mesh, with_meteor=t.val_meteor)
  label_json = json.loads(label_set.to_json()) if label_set else None
  stage2 = build_stage(
      2, config, workdir, mesh, run2, data2, mining.targets(config, data.vocab, label_set, assigned),
      optimizer2, lr2, steps_per_epoch=per_epoch2, epochs=t.stage2_epochs,
      evaluate=evaluator2.run, select_metric=t.stage2_select_metric,
      meta=dict(meta, stage=2, label_set=label_json))
  best_state, best_step = run_stage(stage2, state, **loop)
  preemption.check("before the test")

  # ---------------------------------------------------------------- test
  test = report_eval.ReportEvaluator(config, run2, data2, "test", label_set, mesh, with_meteor=True,
                                     predict=evaluator2.predict)
  extra = {"extractor": extractor_source(config)}
  if first is not None:
    extra.update(mining=first.mined, stage1_test=first.test)
  metrics = inference.write_test_results(config, workdir / "results", test, steps.variables_of(best_state),
                                         best_step, train_index, writer, extra)
  writer.close()
  preemption.check("after the test (its results are written; rerunning scores it again)")
  return metrics


@dataclasses.dataclass
class Stage1Outcome:
  """What stage 1 and mining hand to stage 2: the mined labels and each training report's, stage 1's
  selected model (parameters and statistics, without its optimiser state), its test scores, and the data
  as stage 1's patch grids where stage 2 reads them (``steps.reads_features``)."""
  label_set: labels_lib.LabelSet
  assigned: dict
  mined: dict
  test: dict
  variables: dict
  grids: ip.Data | None


def stage1_and_mining(config, workdir: epath.Path, data: ip.Data, mesh, loop: dict, meta: dict) -> Stage1Outcome:
  """Stage 1 (single labels), its test, and the mining of context-aware labels (module docstring)."""
  t, lead = config.train, jax.process_index() == 0
  train_index = data.index["train"]
  patterns, kept, assigned1 = mining.stage1_labels(config, train_index)
  if lead:
    (workdir / "labels").mkdir(parents=True, exist_ok=True)
    patterns.save(workdir / "labels" / "stage1_patterns.json")
  normals = tuple(mining.normal_cases(train_index, kept, config.labels.pattern_depth))
  epoch1 = ip.epoch_size(kept, normals, config.labels.normal_keep)
  logging.info("Stage 1: %d reports, %d of them normal, kept at %.2f an epoch: %d reports an epoch.",
               len(kept), len(normals), config.labels.normal_keep, epoch1)
  model1 = steps.create_model(config, data.vocab, patterns, stage=1)
  per_epoch1 = max(epoch1 // t.batch_size, 1)
  optimizer1, lr1 = steps.make_optimizer(config, steps.param_shapes(model1, config), per_epoch1, 1)
  fresh = steps.create_train_state(model1, optimizer1, config, init_seed(config, 1), mesh)
  state = with_pretrained_extractor(fresh, config, mesh)
  run1, data1 = stage_inputs(config, 1, model1, state, data, mesh, workdir)
  evaluator1 = label_eval.LabelEvaluator(config, run1, data1, patterns, mesh)
  stage1 = build_stage(
      1, config, workdir, mesh, run1, data1, mining.targets(config, data.vocab, patterns, assigned1),
      optimizer1, lr1, steps_per_epoch=per_epoch1, epochs=t.stage1_epochs, evaluate=evaluator1.run,
      select_metric=t.stage1_select_metric, meta=dict(meta, stage=1, label_set=json.loads(patterns.to_json())),
      indices=kept, droppable=normals, keep=config.labels.normal_keep)
  stage1_state, _ = run_stage(stage1, state, **loop)
  # The selected stage-1 model on the test split (selection stays on validation): results' stage1_test.
  stage1_test = evaluator1.run(steps.variables_of(stage1_state), "test")
  logging.info("Stage 1 on the test split: pattern macro-F1 %.3f, micro-F1 %.3f.",
               stage1_test["pattern_macro_f1"], stage1_test["pattern_micro_f1"])

  # Mining: the stage-1 model labels every training report. Where stage 2 reads stage 1's frozen extractor
  # from a feature cache, the grids are computed (and cached) now, mining reads them and stage 2 trains on
  # them: the ResNet runs once over each split.
  miner, stage1_grids = evaluator1, None
  if steps.reads_features(config, 2) and not steps.reads_features(config, 1):
    grids_model, stage1_grids = stage_inputs(config, 2, model1, stage1_state, data, mesh, workdir)
    miner = label_eval.LabelEvaluator(config, grids_model, stage1_grids, patterns, mesh)
  generated = miner.generate(steps.variables_of(stage1_state), "train")
  label_set, assigned, mined = mining.mine(config, train_index, generated, patterns)
  if lead:
    mining.write_mined(workdir / "labels", label_set, mined)
  top = ", ".join(f"<{' '.join(l)}> {label_set.counts.get(l, 0)}" for l in label_set.labels[:3])
  logging.info("Mined %d context-aware labels (%s, ...; all in %s).", len(label_set), top, workdir / "labels")
  logging.debug("Mined labels, with their counts:\n%s", label_set.describe())
  if "warning" in mined:
    logging.warning("%s", mined["warning"])
  return Stage1Outcome(label_set, assigned, mined, stage1_test, steps.variables_of(stage1_state), stage1_grids)


def init_seed(config, stage: int, after_stage1: bool = True) -> int:
  """The seed of ``stage``'s fresh train state. A stage 2 without a stage 1 before it (BASE, R2Gen, CMN)
  draws from the seed stage 1 would have drawn from: flax derives each module's init from the key and
  the module's path, so its extractor starts from the same random init as JPG's, and every row of a
  Table 2 starts from one place (tests/test_train.py)."""
  return config.seed + (1 if stage == 2 and after_stage1 else 0)


def with_pretrained_extractor(state: dict, config, mesh) -> dict:
  """``state`` with the visual extractor's parameters and statistics from ``config.resnet_checkpoint``
  (a ``tools/convert_resnet`` or ``tools/export_extractor`` output), where one is set."""
  weights = config_checks.pretrained_extractor(config)
  if not weights:
    return state
  converted = resnet_weights.restore(weights, config.model.resnet_depth, config.model.resnet_width)
  state = dict(state, params=dict(state["params"], visual_extractor=converted["params"]),
               batch_stats=dict(state["batch_stats"], visual_extractor=converted["batch_stats"]))
  logging.info("Visual extractor initialised from %s.", weights)
  return jax.device_put(state, parallel.replicated(mesh))


def extractor_source(config) -> str:
  """Where the visual extractor's weights came from (recorded in ``results/``)."""
  return config_checks.pretrained_extractor(config) or "random init"


def warn_random_extractor(config) -> None:
  """The paper's extractor is ImageNet-pretrained (Sec. 4.4): a real-data run without weights is refused
  by ``config_checks`` unless ``resnet_checkpoint='random'`` asks for it, and then said loudly; the
  synthetic configs train a small ResNet from scratch on purpose."""
  if config_checks.pretrained_extractor(config) or config.model.frozen_extractor:
    return
  if config.dataset.name.startswith("synthetic_cxr"):
    logging.info("The visual extractor (ResNet-%d) starts from a random init (on synthetic data, as every "
                 "row of its Table 2 does).", config.model.resnet_depth)
  else:
    logging.warning("The visual extractor (ResNet-%d) starts from a random init; the paper uses ImageNet "
                    "weights (Sec. 4.4): jpg_jax.tools.convert_resnet converts them for "
                    "--config.resnet_checkpoint.", config.model.resnet_depth)


# ============================================================================================ an imported run
def write_imported_run(config, workdir, variables: dict, imported: dict, *, mesh=None) -> int:
  """Writes ``workdir`` as a finished stage-2-only run (BASE, R2Gen, CMN) whose checkpoint holds
  ``variables`` (``params`` and ``batch_stats`` of a model trained elsewhere: ``tools/import_torch``).

  The workdir then holds what a run of ``config`` would: ``config.json``, ``vocab.json`` (built from the
  config's training reports as the run builds it) and ``stage2/N``, N being the run's last step, with a
  full train state (the optimiser's state fresh: a released checkpoint's is torch's) and the data
  iterator's position, so that ``--mode=evaluate`` and ``--mode=predict`` read it as any finished run and
  ``--mode=train`` goes straight to the test. ``imported`` (the source file, its epoch and
  ``monitor_best``) goes into the checkpoint's meta and ``imported.json``. Returns N.
  """
  workdir = epath.Path(workdir)
  mesh = mesh if mesh is not None else parallel.make_mesh()
  if config.model.use_labeler:
    raise errors.ConfigError("Only stage-2-only models (:base, :r2gen, :cmn) can be imported: the config has "
                             "model.use_labeler=True.")
  config_checks.validate(config, mesh.size, jax.process_count())
  check_workdir_usable(workdir)
  for held in ("stage2", "config.json"):
    if (workdir / held).exists():
      raise errors.OutputExistsError(f"--workdir {workdir} already holds {held}: import into a new workdir.")
  data = ip.load_data(config)
  config_checks.validate_data(config, data)
  with workdir_lock.WorkdirLock(workdir):
    model = steps.create_model(config, data.vocab, None, stage=2)
    per_epoch = max(len(data.index["train"]) // config.train.batch_size, 1)
    optimizer, lr = steps.make_optimizer(config, steps.param_shapes(model, config), per_epoch, 2)
    state = steps.create_train_state(model, optimizer, config, init_seed(config, 2, False), mesh)
    placed = lambda new, old: jax.device_put(np.asarray(new, old.dtype), old.sharding)
    for collection in ("params", "batch_stats"):
      if collection in state:
        state[collection] = jax.tree.map(placed, variables[collection], state[collection])
    num_steps = int(config.train.stage2_epochs * per_epoch)
    state["step"] = placed(num_steps, state["step"])
    checkpointing.write_workdir_config(config, workdir)
    data.vocab.save(workdir / "vocab.json")
    meta = {"config_fingerprint": config_checks.fingerprint(config),
            "vocabulary": json.loads(data.vocab.to_json()), "stage": 2, "label_set": None,
            "imported": imported}
    stage = build_stage(2, config, workdir, mesh, model, data, mining.targets(config, data.vocab), optimizer,
                        lr, steps_per_epoch=per_epoch, epochs=config.train.stage2_epochs, evaluate=None,
                        select_metric=config.train.stage2_select_metric, meta=meta)
    stage.checkpoints.save(num_steps, state, stage.train_iter.get_state(), meta)
    stage.checkpoints.wait()
    stage.checkpoints.close()
    (workdir / "imported.json").write_text(json.dumps(dict(imported, step=num_steps), indent=1))
  return num_steps
