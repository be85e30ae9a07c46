"""The best stage-2 checkpoint at work: the test results of a run, re-scoring (``--mode=evaluate``) and
the report of one study (``--mode=predict``, Fig. 4's attention map).

Inference restores parameters and batch statistics only (``StageCheckpoints.restore_variables``: a
damaged optimiser state does not matter), opens the checkpoints read-only and no metric writer, and
writes only to its output folder (``--output_dir``): a finished run's workdir may be read-only. A best
checkpoint that does not restore is named, with the newest other step that does.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath
from PIL import Image

from jpg_jax import attention
from jpg_jax import checkpointing
from jpg_jax import chexpert
from jpg_jax import clinical
from jpg_jax import config_checks
from jpg_jax import datasets
from jpg_jax import errors
from jpg_jax import evaluate as evaluate_lib
from jpg_jax import input_pipeline as ip
from jpg_jax import labels as labels_lib
from jpg_jax import parallel
from jpg_jax import steps
from jpg_jax import text
from jpg_jax.datasets import common
from jpg_jax.datasets import synthetic_findings
from jpg_jax.evaluators import reports as report_eval
from jpg_jax.models import jpg as jpg_lib


@dataclasses.dataclass
class Restored:
  """A trained model as inference needs it."""
  model: jpg_lib.JPG
  variables: dict           # params, batch_stats
  step: int                 # the checkpoint's step
  vocab: text.Vocabulary
  label_set: labels_lib.LabelSet | None


# ``model.*`` keys that say how a model was trained, not what it computes from images: a checkpoint trained
# with a frozen extractor, or on cached patch grids, evaluates and predicts from images alike.
TRAINING_ONLY_MODEL_KEYS = ("model.frozen_extractor", "model.cached_features", "model.remat")


def restore_for_inference(config, workdir, mesh=None) -> Restored:
  """The workdir's best stage-2 checkpoint (parameters and batch statistics), its vocabulary and labels.

  Refuses, in one line each: a config whose model differs from the one the workdir was trained with (its
  ``config.json``), a workdir without a vocabulary, mined labels or stage-2 checkpoint, and a best
  checkpoint that does not restore.
  """
  workdir = epath.Path(workdir)
  mesh = mesh if mesh is not None else parallel.make_mesh()
  config_checks.validate(config, mesh.size, jax.process_count(), training=False)
  if not workdir.is_dir():
    raise errors.MissingFileError(f"The workdir {workdir} does not exist.")
  trained = checkpointing.read_workdir_config(workdir)
  if trained is not None and not config.train.allow_config_change:
    diff = [d for d in config_checks.differences(trained, config.to_json())
            if d.startswith("model.") and not d.startswith(TRAINING_ONLY_MODEL_KEYS)]
    if diff:
      raise errors.ConfigError(f"{workdir} was trained with another model ({'; '.join(diff)}): pass the "
                               f"config it was trained with ({workdir / 'config.json'} records it).")
  needed = [workdir / "vocab.json"] + ([workdir / "labels" / "mined.json"] if config.model.use_labeler else [])
  for path in needed:
    if not path.exists():
      raise errors.MissingFileError(f"{path} is missing: {workdir} is not the workdir of a finished "
                                    f"training run.")
  vocab = text.Vocabulary.load(needed[0])
  label_set = labels_lib.LabelSet.load(needed[1]) if config.model.use_labeler else None
  model = steps.create_model(config, vocab, label_set)
  abstract = steps.abstract_variables(model, config, mesh)
  if not (workdir / "stage2").is_dir():
    raise errors.MissingFileError(f"{workdir / 'stage2'} is missing: {workdir} holds no stage-2 checkpoint "
                                  f"(train first, --mode=train).")
  ckpt = checkpointing.StageCheckpoints(workdir / "stage2", config.train.keep_checkpoints,
                                        config.train.stage2_select_metric, read_only=True)
  restore = lambda s: ckpt.restore_variables(s, abstract)
  try:
    step = ckpt.best_step()
    if step is None:
      raise errors.MissingFileError(f"{workdir / 'stage2'} holds no checkpoint (train first, --mode=train).")
    (restored, variables), damaged = ckpt.first_intact(restore, [step])
    if restored is None:
      (other, _), _ = ckpt.first_intact(restore, [s for s in ckpt.manager.all_steps() if s != step])
      fallback = (f"step {other} restores: move {ckpt.step_dir(step)} away to use it" if other is not None
                  else "no other checkpoint restores")
      raise errors.CheckpointError(f"The best checkpoint {ckpt.step_dir(step)} does not restore "
                                   f"({damaged[step]}); {fallback}.")
  finally:
    ckpt.close()
  variables.setdefault("batch_stats", {})
  return Restored(model, variables, int(step), vocab, label_set)


# ============================================================================================ test results
def write_test_results(config, results_dir, evaluator: report_eval.ReportEvaluator, variables, step: int,
                       train_index: ip.SplitIndex, writer=None, extra: dict | None = None) -> dict:
  """Scores the test split with ``evaluator``; writes ``results_dir/test_metrics.json`` (the metrics, the
  most-frequent-report baseline, the checkpoint step, ``extra``; on the template-written synthetic data,
  the ``clinical`` block of both: ``jpg_jax/clinical.py``; on real reports, the ``chexpert`` block of both:
  ``jpg_jax/chexpert.py``) and ``test_reports.jsonl`` (one row a report);
  test scalars go to ``writer`` where given."""
  metrics, rows = evaluator.run_with_reports(variables)
  references = [r["reference"] for r in rows]
  vocab, length = evaluator.data.vocab, config.dataset.max_seq_length
  train_refs = [vocab.reference(r, length) for r in train_index.reports]
  baseline = evaluate_lib.baseline_scores(train_refs, references)
  baseline["report"] = evaluate_lib.most_frequent_report(train_refs)
  baseline.update(evaluate_lib.output_statistics([baseline["report"]] * len(references)))
  if clinical.applies_to(config.dataset.name):
    index = evaluator.data.index[evaluator.split]
    position = {example_id: i for i, example_id in enumerate(index.ids)}
    mesh = [index.mesh[position[r["id"]]] for r in rows]
    for row, terms in zip(rows, mesh):
      row["findings_true"] = [f.mesh_term for f in clinical.true_findings(terms)]
      row["findings_stated"] = [f.mesh_term for f in synthetic_findings.read_findings(row["prediction"])]
    for target, predictions in ((metrics, [r["prediction"] for r in rows]),
                                (baseline, [baseline["report"]] * len(rows))):
      target["clinical"] = dict(clinical.report_scores(predictions, mesh),
                                **evaluate_lib.output_statistics(predictions))
  if chexpert.applies_to(config.dataset.name):     # real reports: CheXpert's labels read by our labeler
    truth = [chexpert.positives(r["reference"]) for r in rows]      # each report labelled once
    stated = [chexpert.positives(r["prediction"]) for r in rows]
    for row, t, g in zip(rows, truth, stated):
      row["chexpert_reference"], row["chexpert_generated"] = sorted(t), sorted(g)
    metrics["chexpert"] = chexpert.ce_scores(stated, truth)
    baseline["chexpert"] = chexpert.ce_scores([chexpert.positives(baseline["report"])] * len(rows), truth)
  metrics.update(baseline_most_frequent=baseline, checkpoint_step=int(step), num_reports=len(rows),
                 decode_policy=config.decode.policy)
  metrics.update(extra or {})
  if jax.process_index() == 0:
    results = epath.Path(results_dir)
    results.mkdir(parents=True, exist_ok=True)
    (results / "test_metrics.json").write_text(json.dumps(metrics, indent=1))
    with (results / "test_reports.jsonl").open("w") as f:
      for row in rows:
        f.write(json.dumps(row) + "\n")
  summary = {k: v for k, v in metrics.items() if k in evaluate_lib.CAPTION_KEYS + ("label_micro_f1",)}
  if "clinical" in metrics:
    summary.update({f"clinical_{k}": metrics["clinical"][k] for k in ("micro_f1", "strict_micro_f1")})
  if "chexpert" in metrics:
    summary.update({f"chexpert_{k}": metrics["chexpert"][k] for k in ("micro_f1", "macro_f1")})
  logging.debug("Test: %s; baseline: %s", summary, {k: baseline[k] for k in evaluate_lib.CAPTION_KEYS})
  if writer is not None:
    writer.write_scalars(int(step), {f"test/{k}": v for k, v in summary.items()})
    writer.flush()
  return metrics


def evaluate_checkpoint(config, workdir, output_dir: str | None = None) -> dict:
  """Re-scores the best stage-2 checkpoint on the test split into ``output_dir`` (default: the workdir's
  ``results``, rewritten); writes nothing else."""
  mesh = parallel.make_mesh()
  restored = restore_for_inference(config, workdir, mesh)
  data = ip.load_data(config)
  if data.vocab != restored.vocab:
    raise errors.ConfigError(f"The vocabulary of {config.dataset.name} in {config.dataset.data_dir} differs "
                             f"from {epath.Path(workdir) / 'vocab.json'}: evaluate on the dataset the run "
                             f"was trained on.")
  evaluator = report_eval.ReportEvaluator(config, restored.model, data, "test", restored.label_set, mesh,
                                          with_meteor=True)
  trained = epath.Path(workdir) / "results" / "test_metrics.json"
  kept = ("extractor", "mining", "stage1_test")
  try:   # what only the training run knows (the extractor's source, mining, stage 1 on test) is kept
    extra = {k: v for k, v in json.loads(trained.read_text()).items() if k in kept}
  except (OSError, ValueError):
    extra = {}
  return write_test_results(config, output_dir or epath.Path(workdir) / "results", evaluator,
                            restored.variables, restored.step, data.index["train"], extra=extra)


# ============================================================================================ one study
# Views are reduced to this longer side while decoding (``common.open_grey``): the model reads
# ``image_size`` (224) and the attention map draws about 200 pixels a view, so a 6000 x 6000 radiograph
# costs about what a normal one does.
PREDICT_MAX_SIDE = 1024


def predict(config, workdir, image_paths, output_dir: str | None = None, attention_png: str | None = "") -> dict:
  """Report and context-aware labels for one study (one image file per view of the config's dataset, in
  its order: IU X-Ray's frontal and lateral, MIMIC-CXR's one; 8-bit grey by ``common.to_grey8``'s rule);
  see ``predict_views``."""
  names = datasets.views(config.dataset.name)
  if len(image_paths) != len(names):
    raise errors.InputError(f"--images needs {len(names)} file(s), comma-separated, one per view of "
                            f"{config.dataset.name} ({', '.join(names)}); got {len(image_paths)}: "
                            f"{','.join(image_paths) or '(none)'}.")
  views = [np.asarray(common.open_grey(p, f"--images file {p}", max_side=PREDICT_MAX_SIDE))
           for p in image_paths]
  return predict_views(config, workdir, views, output_dir, attention_png)


def predict_views(config, workdir, views, output_dir: str | None = None, attention_png: str | None = "") -> dict:
  """Report and labels for the grey-scale ``views`` (the dataset's, in order) with the best stage-2 checkpoint.

  Writes ``prediction.json`` to ``output_dir`` (default ``DIR/predict``) and the first decoder layer's
  cross-attention of every generated word over the views (Fig. 4) to ``attention_png`` (``""``: the
  output dir's ``attention.png``; ``None``: no map).
  """
  restored = restore_for_inference(config, workdir)
  model, variables, label_set = restored.model, restored.variables, restored.label_set
  size = config.dataset.image_size
  images = np.stack([ip.normalise(Image.fromarray(v).resize((size, size), Image.BILINEAR)) for v in views])
  images = jnp.asarray(images[None])
  out = report_eval.report_predictor(config, model)(variables, {"images": images})
  tokens = np.asarray(out["tokens"][0])
  report = restored.vocab.decode(tokens)
  result = {"report": report, "checkpoint_step": restored.step}
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
