"""Training and evaluation of JPG: stage 1 -> label mining -> stage 2 -> test (Sec. 3.4, 4.4).

``train_and_evaluate(config, workdir)`` reads top to bottom:

1. data: the config's TFDS dataset, R2Gen's vocabulary over the train split (``DIR/vocab.json``);
2. stage 1 ("mining and pre-training on single labels"): the extractor, the subspace's visual path, head
   and GRU learn the reports whose MeSH terms reduce to one of the 17 simple patterns, normal cases kept
   at ``labels.normal_keep`` an epoch; the head's classes are the patterns, the GRU's target is the
   report's full term (its context: ``calcified_granuloma lung upper_lobe right``); selection on
   ``train.stage1_select_metric`` (the GRU's pattern macro-F1, which "always normal" cannot win);
3. mining: the best stage-1 model labels every training report; the ``num_mined`` (57) most frequent
   generated labels that agree with their report's terms become the context-aware label set
   (``DIR/labels/mined.txt`` with counts; ``jpg_jax/mining.py``);
4. stage 2 ("re-training on context-aware labels" + report generation, jointly): every parameter,
   initialised from stage 1; selection on validation BLEU-4 only (R2Gen selects with the test set in view;
   we do not);
5. test: the best stage-2 checkpoint decodes the test split (beam 3); ``DIR/results/test_metrics.json``
   holds the coco-caption metrics, the label micro-F1 and the most-frequent-report baseline;
   ``test_reports.jsonl`` one line a report; also the extractor's source, the mining summary and the
   reports' statistics (distinct, mean length, empty share).

BASE has no labeler: stage 1 and mining are skipped. Every hot function is jit-compiled once, data
parallel over all devices of all hosts (``parallel.py``), the train step donating its state.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import signal
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from jpg_jax import evaluate as evaluate_lib
from jpg_jax import input_pipeline as ip
from jpg_jax import labels as labels_lib
from jpg_jax import metric_writers
from jpg_jax import mining as mining_lib
from jpg_jax import parallel
from jpg_jax import steps
from jpg_jax import text
from jpg_jax.models import jpg as jpg_lib


# ============================================================================================ data
@dataclasses.dataclass
class Data:
  sources: dict
  index: dict          # split -> ip.SplitIndex
  vocab: text.Vocabulary


def load_data(config) -> Data:
  from jpg_jax import datasets
  d = config.dataset
  # Process 0 builds first; then the others, which is a no-op where data_dir is shared (a bucket, NFS)
  # and a local build where each host has its own disk (a TPU VM's local data_dir).
  if jax.process_index() == 0:
    datasets.prepare(d.name, d.data_dir, d.manual_dir)
  multihost_utils.sync_global_devices("dataset prepared on process 0")
  if jax.process_index() > 0:
    datasets.prepare(d.name, d.data_dir, d.manual_dir)
  multihost_utils.sync_global_devices("dataset prepared")
  builder = datasets.get_builder(d.name, d.data_dir)
  sources = {s: ip.open_split(d.name, s, d.data_dir) for s in builder.info.splits}
  index = {s: ip.SplitIndex.read(src) for s, src in sources.items()}
  vocab = text.Vocabulary.build(index["train"].reports, d.vocab_threshold)
  return Data(sources, index, vocab)


def image_options(config, train: bool) -> ip.ImageOptions:
  d = config.dataset
  return ip.ImageOptions(d.image_size, d.resize_size, d.random_flip and train)


def config_fingerprint(config) -> str:
  return hashlib.sha256(config.to_json(sort_keys=True).encode()).hexdigest()[:16]


def check_workdir_config(config, workdir: epath.Path) -> None:
  """A workdir written by a different config refuses to resume unless ``train.allow_config_change``."""
  path = workdir / "config.json"
  current = config.to_json(sort_keys=True, indent=1)
  if path.exists() and path.read_text() != current and not config.train.allow_config_change:
    flat = lambda d, pre="": {k2: v2 for k, v in d.items() for k2, v2 in (
        flat(v, f"{pre}{k}.").items() if isinstance(v, dict) else [(f"{pre}{k}", v)])}
    old, new = flat(json.loads(path.read_text())), flat(json.loads(current))
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    raise ValueError(f"{workdir} was written by a different config (differs in {diff}); use another "
                     f"workdir or set --config.train.allow_config_change=True to resume anyway.")
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    path.write_text(current)


class StageCheckpoints:
  """An orbax CheckpointManager per stage: the last N checkpoints plus the best on validation.

  Items: ``state`` (step, params, batch_stats, opt_state, rng), ``data`` (the grain iterator's position)
  and ``meta`` (stage, config fingerprint, vocabulary, label set, validation metric). Every process calls
  save and restore (orbax writes each host's shards of ``state``; the JSON items come from process 0:
  all hosts' iterators are at the same position of the global order, see ``ip.train_dataset``). The
  directory may be local, shared or ``gs://``.
  """

  def __init__(self, directory: epath.Path, keep: int, metric: str):
    self.metric = metric
    policy = ocp.checkpoint_managers.AnyPreservationPolicy([
        ocp.checkpoint_managers.LatestN(keep),
        ocp.checkpoint_managers.BestN(get_metric_fn=lambda m: m[metric], reverse=False, n=1,
                                      keep_checkpoints_without_metrics=False),
    ])
    # best_fn makes orbax write each checkpoint's metrics to disk, so that a new process (a resumed run,
    # --mode=evaluate/predict) knows which checkpoint is the best and the preservation policy keeps it.
    options = ocp.CheckpointManagerOptions(preservation_policy=policy, create=True,
                                           best_fn=lambda m: m[metric], best_mode="max")
    self.manager = ocp.CheckpointManager(
        directory if "://" in str(directory) else directory.absolute(), options=options,
        item_names=("state", "data", "meta"))

  def save(self, step: int, state, data_state, meta: dict, metrics: dict | None = None):
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
        meta=ocp.args.JsonSave(meta)), metrics=metrics, force=True)

  def latest_step(self):
    return self.manager.latest_step()

  def best_step(self):
    """The step with the highest validation metric; the latest step when none has one.

    Metrics come from orbax (in memory, or its ``metrics`` item on disk) and, for checkpoints written
    before metrics were persisted, from the ``meta`` item's ``val``.
    """
    known = {c.step: c.metrics for c in self.manager._checkpoints}  # noqa: SLF001
    scored = {}
    for step in self.manager.all_steps():
      metrics = known.get(step) or self._meta_metrics(step)
      if metrics and self.metric in metrics:
        scored[step] = metrics[self.metric]
    return max(scored, key=lambda s: (scored[s], -s)) if scored else self.manager.latest_step()

  def _meta_metrics(self, step: int) -> dict | None:
    meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    return meta.get("val")

  def restore(self, step: int, abstract_state):
    r = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore(),
        meta=ocp.args.JsonRestore()))
    return r["state"], r["data"], r["meta"]

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.close()


class Preemption:
  """A preemption notice (SIGTERM) makes the training loop write a checkpoint and exit.

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

  def __enter__(self):
    if jax.process_count() == 1:
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

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None


class PreemptedError(SystemExit):
  def __init__(self):
    super().__init__(143)


# ============================================================================================ the stage loop
@dataclasses.dataclass
class Stage:
  """Everything one stage's loop needs."""
  number: int
  model: jpg_lib.JPG
  targets: ip.Targets
  train_indices: list | None
  num_steps: int
  steps_per_epoch: int
  select_metric: str     # validation metric for the best checkpoint
  learning_rate: Callable | None = None   # the main group's learning rate of the update count (logs)
  droppable: tuple = ()          # train positions kept at the fraction `keep` each epoch (stage 1's normals)
  keep: float = 1.0


def _gather(x):
  """A global array as one host numpy array (all processes take part)."""
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


class Trainer:
  """State shared by both stages: config, workdir, data, mesh and writer."""

  def __init__(self, config, workdir: str, mesh=None, stop_at_step: tuple[int, int] | None = None):
    self.config = config
    self.workdir = epath.Path(workdir)
    self.mesh = mesh if mesh is not None else parallel.make_mesh()
    self.stop_at_step = stop_at_step   # (stage, step): stop there as on SIGTERM (tests, time-boxed jobs)
    self.history = []                  # logged training metrics, also in DIR/logs/history.jsonl
    self.global_batch = config.train.batch_size
    self.local_batch = parallel.local_batch_size(self.global_batch, self.mesh)
    self.eval_batch = config.train.eval_batch_size
    parallel.local_batch_size(self.eval_batch, self.mesh)
    self.writer = metric_writers.create_default_writer(str(self.workdir / "logs"),
                                                       just_logging=jax.process_index() > 0)
    self.data: Data | None = None
    self.preemption = Preemption()

  # -------------------------------------------------------------------------- state
  def _init_variables(self, model, rng):
    d = self.config.dataset
    shapes = ip.example_shapes(d.image_size, d.max_seq_length, self.config.labels.max_steps, 1)
    images = jnp.zeros((1,) + shapes["images"], jnp.float32)
    reports = jnp.zeros((1,) + shapes["report_ids"], jnp.int32)
    label_ids = jnp.zeros((1,) + shapes["label_ids"], jnp.int32) if model.use_labeler else None
    p_rng, d_rng = jax.random.split(rng)
    return model.init({"params": p_rng, "dropout": d_rng}, images, reports, label_ids)

  def param_shapes(self, model):
    return jax.eval_shape(lambda: self._init_variables(model, jax.random.key(0)))["params"]

  def init_state(self, model, optimizer, seed: int):
    def init(rng):
      v_rng, s_rng = jax.random.split(rng)
      variables = self._init_variables(model, v_rng)
      params = variables["params"]
      return {"step": jnp.zeros((), jnp.int32), "params": params,
              "batch_stats": variables.get("batch_stats", {}), "opt_state": optimizer.init(params),
              "rng": s_rng}

    replicated = parallel.replicated(self.mesh)
    return jax.jit(init, out_shardings=replicated)(jax.random.key(seed))

  def load_resnet(self, state):
    path = self.config.resnet_checkpoint
    if not path:
      return state
    from jpg_jax.tools import convert_resnet
    converted = convert_resnet.restore(path, self.config.model.resnet_depth)
    state = dict(state)
    state["params"] = dict(state["params"], visual_extractor=converted["params"])
    state["batch_stats"] = dict(state["batch_stats"], visual_extractor=converted["batch_stats"])
    logging.info("Visual extractor initialised from %s.", path)
    return jax.device_put(state, parallel.replicated(self.mesh))

  def log_history(self, step: int, scalars: dict):
    self.history.append({"step": step, **scalars})
    if jax.process_index() == 0:
      path = self.workdir / "logs" / "history.jsonl"
      path.parent.mkdir(parents=True, exist_ok=True)
      with path.open("a") as f:
        f.write(json.dumps({"step": step, **scalars}) + "\n")

  # -------------------------------------------------------------------------- iteration
  def train_iter(self, stage: Stage):
    ds = ip.train_dataset(self.data.sources["train"], self.data.index["train"], stage.targets,
                          batch_size=self.local_batch, seed=self.config.seed + stage.number,
                          image=image_options(self.config, True), indices=stage.train_indices,
                          droppable=stage.droppable, keep=stage.keep, process_index=jax.process_index(),
                          process_count=jax.process_count())
    return ip.to_iter(ds, self.config.dataset.worker_count)

  def eval_batches(self, split: str, targets: ip.Targets):
    ds = ip.eval_dataset(self.data.sources[split], self.data.index[split], targets,
                         global_batch_size=self.eval_batch, image=image_options(self.config, False),
                         process_index=jax.process_index(), process_count=jax.process_count())
    for batch in ds:
      yield parallel.global_batch(batch, self.mesh)

  def run_predictions(self, fn, variables, split: str, targets: ip.Targets) -> dict:
    """Applies a jitted ``fn(variables, batch)`` to a whole split; host arrays for the real examples."""
    outs, index, mask = [], [], []
    for batch in self.eval_batches(split, targets):
      outs.append(jax.tree.map(_gather, fn(variables, batch)))
      index.append(_gather(batch["index"]))
      mask.append(_gather(batch["mask"]))
    keep = np.concatenate(mask) > 0
    result = {k: np.concatenate([o[k] for o in outs])[keep] for k in outs[0]}
    result["index"] = np.concatenate(index)[keep]
    return result

  # -------------------------------------------------------------------------- one stage
  def run_stage(self, stage: Stage, state, optimizer, evaluate_fn, meta: dict):
    """Trains ``stage`` from ``state`` (or from its latest checkpoint), evaluating every
    ``eval_every_epochs``; returns the best checkpoint's state."""
    cfg = self.config.train
    ckpt = StageCheckpoints(self.workdir / f"stage{stage.number}", cfg.keep_checkpoints, stage.select_metric)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    it = self.train_iter(stage)
    latest = ckpt.latest_step()
    if latest is not None:
      state, data_state, saved_meta = ckpt.restore(latest, abstract)
      if saved_meta.get("config_fingerprint") != meta["config_fingerprint"] and not cfg.allow_config_change:
        raise ValueError(f"Checkpoint {latest} of stage {stage.number} was written by another config.")
      it.set_state(data_state)
      logging.info("Stage %d: resumed at step %d.", stage.number, latest)
    step = int(state["step"])

    replicated, sharded = parallel.replicated(self.mesh), parallel.data_sharded(self.mesh)
    step_fn = jax.jit(functools.partial(steps.train_step, model=stage.model, optimizer=optimizer,
                                        config=self.config, stage=stage.number),
                      in_shardings=(replicated, sharded), out_shardings=(replicated, replicated),
                      donate_argnums=0)
    eval_every = max(int(cfg.eval_every_epochs * stage.steps_per_epoch), 1)
    progress = metric_writers.ReportProgress(stage.num_steps, self.writer, cfg.log_every_steps,
                                             self.global_batch, prefix=f"stage{stage.number}/")
    sums, count = None, 0
    with self.preemption as preemption:
      while step < stage.num_steps:
        batch = parallel.global_batch(next(it), self.mesh)
        state, terms = step_fn(state, batch)
        step += 1
        sums = terms if sums is None else jax.tree.map(jnp.add, sums, terms)
        count += 1
        progress(step)
        boundary = step % eval_every == 0 or step == stage.num_steps
        stop = preemption.reached() or self.stop_at_step == (stage.number, step)
        if step % cfg.log_every_steps == 0 or boundary or stop:
          means = {f"stage{stage.number}/train_{k}": float(v) / count for k, v in sums.items()}
          finite = means.pop(f"stage{stage.number}/train_params_finite") == 1.0
          if not (finite and np.isfinite(means[f"stage{stage.number}/train_loss"])):
            ckpt.wait()
            raise FloatingPointError(
                f"Stage {stage.number}: non-finite loss at step {step} ({means}); the last good checkpoint "
                f"is step {ckpt.latest_step()} in {self.workdir / f'stage{stage.number}'}.")
          means[f"stage{stage.number}/learning_rate"] = float(stage.learning_rate(step - 1))
          self.writer.write_scalars(step, means)
          self.log_history(step, means)
          sums, count = None, 0
        if stop:
          ckpt.save(step, state, it.get_state(), meta)
          ckpt.wait()
          self.writer.flush()
          logging.warning("Stage %d: checkpoint %d written after SIGTERM; exiting.", stage.number, step)
          raise PreemptedError()
        if boundary:
          metrics = evaluate_fn(state)
          val = {f"stage{stage.number}/val_{k}": v for k, v in metrics.items()}
          self.writer.write_scalars(step, val)
          self.log_history(step, val)
          ckpt.save(step, state, it.get_state(), dict(meta, val=metrics), metrics=metrics)
    ckpt.wait()
    best = ckpt.best_step()
    logging.info("Stage %d: best checkpoint is step %s.", stage.number, best)
    best_state, _, _ = ckpt.restore(best, abstract)
    ckpt.close()
    self.writer.flush()
    return best_state, best


# ============================================================================================ evaluation helpers
def variables_of(state) -> dict:
  return {"params": state["params"], "batch_stats": state["batch_stats"]}


def label_f1(pred_logits: np.ndarray, truth: np.ndarray, label_set) -> evaluate_lib.LabelScores:
  return evaluate_lib.label_scores(truth > 0, pred_logits > 0, label_names(label_set))


def report_results(trainer: Trainer, state, model, split: str, targets: ip.Targets, label_set,
                   with_meteor: bool, per_report: bool = False):
  """Decodes ``split`` and scores it. Returns (metrics dict, per-report rows)."""
  cfg = trainer.config
  fn = jax.jit(lambda v, b: steps.predict_reports(v, b["images"], model=model, beam=cfg.train.beam_size,
                                                  max_len=cfg.dataset.max_seq_length,
                                                  policy=cfg.decode.policy))
  out = trainer.run_predictions(fn, variables_of(state), split, targets)
  index = trainer.data.index[split]
  vocab = trainer.data.vocab
  predictions = [vocab.decode(t) for t in out["tokens"]]
  references = [vocab.reference(index.reports[i], cfg.dataset.max_seq_length)
                for i in out["index"]]
  scores, each = evaluate_lib.caption_scores(references, predictions, with_meteor, per_report=True)
  metrics = dict(scores, **evaluate_lib.output_statistics(predictions))
  rows = []
  truth = None
  if label_set is not None and "label_class_logits" in out:
    truth = np.stack([label_set.multi_hot(index.mesh[i]) for i in out["index"]])
    f1 = label_f1(out["label_class_logits"], truth, label_set)
    metrics["label_micro_f1"] = f1.micro_f1
    metrics["label_macro_f1"] = f1.macro_f1
    metrics["label_per_label"] = f1.per_label
  if per_report:
    for k, i in enumerate(out["index"]):
      row = {"id": index.ids[i], "reference": references[k], "prediction": predictions[k],
             "scores": {name: each[name][k] for name in each}}
      if truth is not None:
        row["true_labels"] = [" ".join(label_set.labels[j]) for j in np.flatnonzero(truth[k])]
        row["predicted_labels"] = [" ".join(label_set.labels[j])
                                   for j in np.flatnonzero(out["label_class_logits"][k] > 0)]
        row["generated_label"] = " ".join(label_set.decode_sequence(out["label_tokens"][k]))
      rows.append(row)
  return metrics, rows


# ============================================================================================ main entry
def train_and_evaluate(config, workdir: str, mesh=None, stop_at_step: tuple[int, int] | None = None) -> dict:
  """The whole method. ``stop_at_step=(stage, step)`` stops there with a checkpoint, as SIGTERM does."""
  workdir = epath.Path(workdir)
  check_workdir_config(config, workdir)
  warn_random_extractor(config)
  trainer = Trainer(config, str(workdir), mesh, stop_at_step)
  trainer.data = data = load_data(config)
  if jax.process_index() == 0:
    data.vocab.save(workdir / "vocab.json")
  fingerprint = config_fingerprint(config)
  logging.info("Vocabulary: %d tokens; splits %s; %d devices, %d processes.", len(data.vocab),
               {s: len(i) for s, i in data.index.items()}, jax.device_count(), jax.process_count())
  steps_per_epoch = max(len(data.index["train"]) // trainer.global_batch, 1)
  d, t = config.dataset, config.train

  # ---------------------------------------------------------------- stage 1 + mining
  label_set, assigned, stage1_state, mining = None, None, None, None
  if config.model.use_labeler:
    train_index, depth = data.index["train"], config.labels.pattern_depth
    patterns, kept, stage1_assigned = mining_lib.stage1_labels(config, train_index)
    if jax.process_index() == 0:
      (workdir / "labels").mkdir(parents=True, exist_ok=True)
      patterns.save(workdir / "labels" / "stage1_patterns.json")
    targets1 = ip.Targets(data.vocab, d.max_seq_length, patterns, config.labels.max_steps, stage1_assigned)
    val_index = data.index["val"]
    val_targets1 = ip.Targets(data.vocab, d.max_seq_length, patterns, config.labels.max_steps,
                              mining_lib.stage1_assigned(config, val_index, patterns))
    normals = tuple(mining_lib.normal_cases(train_index, kept, depth))
    epoch1 = ip.epoch_size(kept, normals, config.labels.normal_keep)
    logging.info("Stage 1: %d reports, %d of them normal, kept at %.2f an epoch: %d reports an epoch.",
                 len(kept), len(normals), config.labels.normal_keep, epoch1)
    model1 = steps.create_model(config, data.vocab, patterns)
    spe1 = max(epoch1 // trainer.global_batch, 1)
    opt1, lr1 = steps.make_optimizer(config, trainer.param_shapes(model1), spe1, 1)
    state = trainer.load_resnet(trainer.init_state(model1, opt1, config.seed))
    label_fn = jax.jit(functools.partial(steps.score_labels, model=model1, beam=config.labels.mining_beam))

    def evaluate1(st):
      """Validation of stage 1: the label log-likelihood, sequence accuracy, the head's micro- and
      macro-F1, and the GRU's pattern (the prefix of its generated label) per pattern and macro-F1."""
      out = trainer.run_predictions(label_fn, variables_of(st), "val", val_targets1)
      truth = np.stack([patterns.multi_hot(val_index.mesh[i]) for i in out["index"]])
      target = [val_targets1.assigned.get(val_index.ids[i]) for i in out["index"]]
      generated = [patterns.decode_sequence(tok) for tok in out["label_tokens"]]
      hits = [g == t for g, t in zip(generated, target) if t]
      head = label_f1(out["label_class_logits"], truth, patterns)
      has = np.array([t is not None for t in target])
      gru = evaluate_lib.label_scores(truth[has], np.stack([pattern_one_hot(g, patterns) for g in generated])[has],
                                      label_names(patterns))
      metrics = {"label_log_likelihood": -float(out["label_nll"].sum() / max(out["label_count"].sum(), 1)),
                 "label_accuracy": float(np.mean(hits)) if hits else 0.0,
                 "label_micro_f1": head.micro_f1, "label_macro_f1": head.macro_f1,
                 "pattern_macro_f1": gru.macro_f1, "pattern_micro_f1": gru.micro_f1}
      metrics.update({"recall/" + "-".join(label): gru.per_label[name]["recall"]   # TensorBoard-legal names
                      for label, name in zip(patterns.labels, label_names(patterns))
                      if gru.per_label[name]["support"]})
      return metrics

    stage1 = Stage(1, model1, targets1, kept, int(t.stage1_epochs * spe1), spe1, t.stage1_select_metric,
                   lr1, normals, config.labels.normal_keep)
    meta = {"stage": 1, "config_fingerprint": fingerprint, "vocabulary": json.loads(data.vocab.to_json()),
            "label_set": json.loads(patterns.to_json())}
    stage1_state, _ = trainer.run_stage(stage1, state, opt1, evaluate1, meta)

    # Mining: the stage-1 model labels every training report.
    mine_fn = jax.jit(lambda v, b: steps.predict_labels(v, b["images"], model=model1,
                                                        beam=config.labels.mining_beam))
    out = trainer.run_predictions(mine_fn, variables_of(stage1_state), "train", targets1)
    generated = {train_index.ids[i]: patterns.decode_sequence(tok)
                 for i, tok in zip(out["index"], out["label_tokens"])}
    terms = dict(zip(train_index.ids, train_index.mesh))
    label_set = mining_lib.mine_labels(generated, terms, config.labels.num_mined, patterns)
    mining = mining_lib.mining_summary(generated, terms, label_set, config.labels.min_mined)
    if not len(label_set):   # nothing agreed: stage 2 learns the stage-1 patterns instead
      label_set = patterns
      mining["warning"] += " No label was mined: stage 2's label set is the stage-1 patterns."
    assigned = mining_lib.stage2_assigned(train_index, generated, label_set, patterns)
    if jax.process_index() == 0:
      label_set.save(workdir / "labels" / "mined.json")
      (workdir / "labels" / "mined.txt").write_text(
          f"# {len(label_set)} context-aware labels mined from {len(generated)} training reports, "
          f"{mining['agreeing']} of whose generated labels agree with their MeSH terms (count, label)\n"
          + label_set.describe() + "\n")
    logging.info("Mined %d context-aware labels:\n%s", len(label_set), label_set.describe())
    if "warning" in mining:
      logging.warning("%s", mining["warning"])

  # ---------------------------------------------------------------- stage 2
  targets2 = ip.Targets(data.vocab, d.max_seq_length, label_set, config.labels.max_steps, assigned)
  eval_targets2 = ip.Targets(data.vocab, d.max_seq_length, label_set, config.labels.max_steps)
  model2 = steps.create_model(config, data.vocab, label_set)
  opt2, lr2 = steps.make_optimizer(config, trainer.param_shapes(model2), steps_per_epoch, 2)
  state = trainer.init_state(model2, opt2, config.seed + 1)
  state = trainer.load_resnet(state) if stage1_state is None else mining_lib.carry_over(
      state, stage1_state, opt2, trainer.mesh)

  def evaluate2(st):
    metrics, _ = report_results(trainer, st, model2, "val", eval_targets2, label_set, t.val_meteor)
    metrics.pop("label_per_label", None)
    return metrics

  stage2 = Stage(2, model2, targets2, None, int(t.stage2_epochs * steps_per_epoch), steps_per_epoch,
                 t.stage2_select_metric, lr2)
  meta = {"stage": 2, "config_fingerprint": fingerprint, "vocabulary": json.loads(data.vocab.to_json()),
          "label_set": json.loads(label_set.to_json()) if label_set else None}
  best_state, best_step = trainer.run_stage(stage2, state, opt2, evaluate2, meta)

  # ---------------------------------------------------------------- test
  extra = {"extractor": extractor_source(config)}
  if mining is not None:
    extra["mining"] = mining
  return write_test_results(trainer, best_state, best_step, model2, eval_targets2, label_set, extra)


def extractor_source(config) -> str:
  """Where the visual extractor's weights came from (recorded in ``results/``)."""
  return config.resnet_checkpoint or "random init"


def warn_random_extractor(config) -> None:
  """The paper's extractor is ImageNet-pretrained (Sec. 4.4); training it from scratch is said loudly,
  except on the synthetic data, whose configs train a small ResNet from scratch on purpose."""
  if config.resnet_checkpoint or config.model.cached_features:
    return
  message = (f"The visual extractor (ResNet-{config.model.resnet_depth}) starts from a random init; the "
             f"paper uses ImageNet weights (Sec. 4.4): convert them with jpg_jax.tools.convert_resnet and "
             f"set --config.resnet_checkpoint.")
  if config.dataset.name.startswith("synthetic_cxr"):
    logging.info("%s", message)
  else:
    logging.warning("%s", message)


def pattern_one_hot(generated: tuple, patterns: labels_lib.LabelSet) -> np.ndarray:
  """The pattern a generated stage-1 label names: the longest pattern that is a prefix of it."""
  out = np.zeros((len(patterns),), np.float32)
  match = [i for i, p in enumerate(patterns.labels) if generated[: len(p)] == p]
  if match:
    out[max(match, key=lambda i: len(patterns.labels[i]))] = 1.0
  return out


def label_names(label_set: labels_lib.LabelSet) -> list[str]:
  """``<token token>`` per label of the set, as the metrics name them."""
  return ["<" + " ".join(l) + ">" for l in label_set.labels]


def write_test_results(trainer: Trainer, state, step, model, targets, label_set, extra: dict | None = None
                       ) -> dict:
  config, data = trainer.config, trainer.data
  metrics, rows = report_results(trainer, state, model, "test", targets, label_set, with_meteor=True,
                                 per_report=True)
  references = [r["reference"] for r in rows]
  train_refs = [data.vocab.reference(r, config.dataset.max_seq_length)
                for r in data.index["train"].reports]
  metrics["baseline_most_frequent"] = evaluate_lib.baseline_scores(train_refs, references)
  metrics["baseline_most_frequent"]["report"] = evaluate_lib.most_frequent_report(train_refs)
  metrics["baseline_most_frequent"].update(evaluate_lib.output_statistics(
      [metrics["baseline_most_frequent"]["report"]] * len(references)))
  metrics["checkpoint_step"] = int(step)
  metrics["num_reports"] = len(rows)
  metrics["decode_policy"] = config.decode.policy
  metrics.update(extra or {})
  if jax.process_index() == 0:
    results = trainer.workdir / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "test_metrics.json").write_text(json.dumps(metrics, indent=1))
    with (results / "test_reports.jsonl").open("w") as f:
      for row in rows:
        f.write(json.dumps(row) + "\n")
  summary = {k: v for k, v in metrics.items() if k in evaluate_lib.CAPTION_KEYS + ("label_micro_f1",)}
  logging.info("Test: %s; baseline: %s", summary,
               {k: metrics["baseline_most_frequent"][k] for k in evaluate_lib.CAPTION_KEYS})
  trainer.writer.write_scalars(int(step), {f"test/{k}": v for k, v in summary.items()})
  trainer.writer.flush()
  return metrics


# ============================================================================================ evaluate / predict
def restore_for_inference(config, workdir: str):
  """(trainer, model, state, best step, vocabulary, label set) from a workdir's best stage-2 checkpoint."""
  workdir = epath.Path(workdir)
  trainer = Trainer(config, str(workdir))
  vocab = text.Vocabulary.load(workdir / "vocab.json")
  label_set = None
  if config.model.use_labeler:
    label_set = labels_lib.LabelSet.load(workdir / "labels" / "mined.json")
  model = steps.create_model(config, vocab, label_set)
  optimizer, _ = steps.make_optimizer(config, trainer.param_shapes(model), 1, 2)
  abstract = jax.eval_shape(lambda: trainer.init_state(model, optimizer, 0))
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                         sharding=parallel.replicated(trainer.mesh)), abstract)
  ckpt = StageCheckpoints(workdir / "stage2", config.train.keep_checkpoints, config.train.stage2_select_metric)
  step = ckpt.best_step()
  if step is None:
    raise FileNotFoundError(f"No stage-2 checkpoint in {workdir / 'stage2'}.")
  state, _, _ = ckpt.restore(step, abstract)
  ckpt.close()
  return trainer, model, state, step, vocab, label_set


def evaluate_checkpoint(config, workdir: str) -> dict:
  """Re-scores the best stage-2 checkpoint on the test split (rewrites ``DIR/results``)."""
  trainer, model, state, step, vocab, label_set = restore_for_inference(config, workdir)
  trainer.data = load_data(config)
  if trainer.data.vocab != vocab:
    raise ValueError("The dataset's vocabulary differs from the one this workdir was trained with.")
  targets = ip.Targets(vocab, config.dataset.max_seq_length, label_set, config.labels.max_steps)
  return write_test_results(trainer, state, step, model, targets, label_set)


def predict(config, workdir: str, image_paths, output_dir: str | None = None,
            attention_png: str | None = "") -> dict:
  """Report and context-aware labels for one study (two image files); see ``predict_views``."""
  from PIL import Image
  if len(image_paths) != 2:
    raise ValueError(f"--images needs the frontal and the lateral view, got {len(image_paths)} file(s).")
  views = [np.asarray(Image.open(p).convert("L")) for p in image_paths]
  return predict_views(config, workdir, views, output_dir, attention_png)


def predict_views(config, workdir: str, views, output_dir: str | None = None,
                  attention_png: str | None = "") -> dict:
  """Report and labels for the grey-scale ``views`` (frontal, lateral) with the best stage-2 checkpoint.

  Writes ``prediction.json`` to ``output_dir`` (default ``DIR/predict``) and the first decoder layer's
  cross-attention of every generated word over both views (Fig. 4) to ``attention_png`` (``""``: the
  output dir's ``attention.png``; ``None``: no map).
  """
  from PIL import Image
  from jpg_jax import attention
  trainer, model, state, step, vocab, label_set = restore_for_inference(config, workdir)
  size = config.dataset.image_size
  images = np.stack([ip.normalise(Image.fromarray(v).resize((size, size), Image.BILINEAR)) for v in views])
  images = jnp.asarray(images[None])
  variables = variables_of(state)
  out = jax.jit(functools.partial(steps.predict_reports, model=model, beam=config.train.beam_size,
                                  policy=config.decode.policy,
                                  max_len=config.dataset.max_seq_length))(variables, images)
  tokens = np.asarray(out["tokens"][0])
  report = vocab.decode(tokens)
  result = {"report": report, "checkpoint_step": int(step)}
  if label_set is not None:
    if "label_tokens" not in out:
      out.update(steps.predict_labels(variables, images, model=model, beam=config.labels.mining_beam))
    result["generated_label"] = " ".join(label_set.decode_sequence(np.asarray(out["label_tokens"][0])))
    result["predicted_labels"] = [" ".join(label_set.labels[j])
                                  for j in np.flatnonzero(np.asarray(out["label_class_logits"][0]) > 0)]
  out_dir = epath.Path(output_dir or (epath.Path(workdir) / "predict"))
  out_dir.mkdir(parents=True, exist_ok=True)
  words = report.split()
  if words and attention_png is not None:
    path = epath.Path(attention_png or (out_dir / "attention.png"))
    maps = attention.word_attention(model, variables, images, tokens)
    attention.save_attention_png(path, views, words, maps)
    result["attention_png"] = str(path)
  (out_dir / "prediction.json").write_text(json.dumps(result, indent=1))
  return result
