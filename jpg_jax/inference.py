"""The best stage-2 checkpoint at work: the test results of a run, re-scoring (``--mode=evaluate``) and
the report of one study (``--mode=predict``, Fig. 4's attention map).

Inference restores parameters and batch statistics only (``StageCheckpoints.restore_variables``), and
opens no metric writer: a finished run's workdir may be read-only.
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
from jpg_jax import evaluate as evaluate_lib
from jpg_jax import input_pipeline as ip
from jpg_jax import labels as labels_lib
from jpg_jax import metric_writers
from jpg_jax import parallel
from jpg_jax import steps
from jpg_jax import text
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


def restore_for_inference(config, workdir, mesh=None) -> Restored:
  """The workdir's best stage-2 checkpoint (parameters and batch statistics), its vocabulary and labels."""
  workdir = epath.Path(workdir)
  mesh = mesh if mesh is not None else parallel.make_mesh()
  vocab = text.Vocabulary.load(workdir / "vocab.json")
  label_set = labels_lib.LabelSet.load(workdir / "labels" / "mined.json") if config.model.use_labeler else None
  model = steps.create_model(config, vocab, label_set)
  abstract = steps.abstract_variables(model, config, mesh)
  ckpt = checkpointing.StageCheckpoints(workdir / "stage2", config.train.keep_checkpoints,
                                        config.train.stage2_select_metric)
  try:
    step = ckpt.best_step()
    if step is None:
      raise FileNotFoundError(f"No stage-2 checkpoint in {workdir / 'stage2'}.")
    variables = ckpt.restore_variables(step, abstract)
  finally:
    ckpt.close()
  variables.setdefault("batch_stats", {})
  return Restored(model, variables, int(step), vocab, label_set)


# ============================================================================================ test results
def write_test_results(config, workdir, evaluator: report_eval.ReportEvaluator, variables, step: int,
                       train_index: ip.SplitIndex, writer=None, extra: dict | None = None) -> dict:
  """Scores the test split with ``evaluator``; writes ``DIR/results/test_metrics.json`` (the metrics, the
  most-frequent-report baseline, the checkpoint step, ``extra``) and ``test_reports.jsonl`` (one row a
  report); test scalars go to ``writer`` where given."""
  metrics, rows = evaluator.run_with_reports(variables)
  references = [r["reference"] for r in rows]
  vocab, length = evaluator.data.vocab, config.dataset.max_seq_length
  train_refs = [vocab.reference(r, length) for r in train_index.reports]
  baseline = evaluate_lib.baseline_scores(train_refs, references)
  baseline["report"] = evaluate_lib.most_frequent_report(train_refs)
  baseline.update(evaluate_lib.output_statistics([baseline["report"]] * len(references)))
  metrics.update(baseline_most_frequent=baseline, checkpoint_step=int(step), num_reports=len(rows),
                 decode_policy=config.decode.policy)
  metrics.update(extra or {})
  if jax.process_index() == 0:
    results = epath.Path(workdir) / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "test_metrics.json").write_text(json.dumps(metrics, indent=1))
    with (results / "test_reports.jsonl").open("w") as f:
      for row in rows:
        f.write(json.dumps(row) + "\n")
  summary = {k: v for k, v in metrics.items() if k in evaluate_lib.CAPTION_KEYS + ("label_micro_f1",)}
  logging.info("Test: %s; baseline: %s", summary, {k: baseline[k] for k in evaluate_lib.CAPTION_KEYS})
  if writer is not None:
    writer.write_scalars(int(step), {f"test/{k}": v for k, v in summary.items()})
    writer.flush()
  return metrics


def evaluate_checkpoint(config, workdir) -> dict:
  """Re-scores the best stage-2 checkpoint on the test split (rewrites ``DIR/results``)."""
  mesh = parallel.make_mesh()
  restored = restore_for_inference(config, workdir, mesh)
  data = ip.load_data(config)
  if data.vocab != restored.vocab:
    raise ValueError("The dataset's vocabulary differs from the one this workdir was trained with.")
  evaluator = report_eval.ReportEvaluator(config, restored.model, data, "test", restored.label_set, mesh,
                                          with_meteor=True)
  writer = metric_writers.create_default_writer(str(epath.Path(workdir) / "logs"),
                                                just_logging=jax.process_index() > 0)
  try:
    return write_test_results(config, workdir, evaluator, restored.variables, restored.step,
                              data.index["train"], writer)
  finally:
    writer.close()


# ============================================================================================ one study
def predict(config, workdir, image_paths, output_dir: str | None = None, attention_png: str | None = "") -> dict:
  """Report and context-aware labels for one study (two image files); see ``predict_views``."""
  if len(image_paths) != 2:
    raise ValueError(f"--images needs the frontal and the lateral view, got {len(image_paths)} file(s).")
  views = [np.asarray(Image.open(p).convert("L")) for p in image_paths]
  return predict_views(config, workdir, views, output_dir, attention_png)


def predict_views(config, workdir, views, output_dir: str | None = None, attention_png: str | None = "") -> dict:
  """Report and labels for the grey-scale ``views`` (frontal, lateral) with the best stage-2 checkpoint.

  Writes ``prediction.json`` to ``output_dir`` (default ``DIR/predict``) and the first decoder layer's
  cross-attention of every generated word over both views (Fig. 4) to ``attention_png`` (``""``: the
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
