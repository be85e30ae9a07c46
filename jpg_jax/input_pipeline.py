"""Grain input pipeline: decode, resize/crop/flip/normalise the views, tokenise, label targets, batch.

Images follow R2Gen (GUIDE sec. 3): train = resize the shorter side to ``resize_size`` (256), random crop
``image_size`` (224), random horizontal flip, ImageNet mean/std; eval = resize to ``image_size`` square.
Each view gets its own random crop and flip, as in R2Gen's ``IuxrayMultiImageDataset``. A flip swaps the
patient's sides, which contradicts laterality in the labels and reports ("right upper lobe"); R2Gen flips
anyway, so ``random_flip`` defaults to True for IU X-Ray and the synthetic configs turn it off.

Every element has static shapes:

  images        float32 [V, S, S, 3]   the dataset's views (``datasets.views``): V = 2 (frontal, lateral)
                                       for IU X-Ray and synthetic_cxr, 1 for MIMIC-CXR as R2Gen reads it
  report_ids    int32   [L]            [0] + token ids + [0], zero-padded / truncated to L = 60
  report_mask   float32 [L]            1 on BOS, tokens and EOS
  label_ids     int32   [N + 1]        [0] + label token ids + [0] for the GRU (N = 5 steps)
  label_mask    float32 [N + 1]
  label_targets float32 [num_labels]   multi-hot targets of the classification head
  index         int32   []             position in the split (``SplitIndex.ids[index]`` is the id)
  mask          float32 []             0 for the padding examples of the eval path, else 1

Training: the split (optionally filtered, e.g. to stage 1's simple-pattern reports) is cut into one
contiguous shard per host (``jax.process_index()``), shuffled with a seed and a new order per epoch,
repeated forever, batched to the per-host batch with the remainder dropped. Evaluation: ordered, padded
to a multiple of the global batch with masked copies so that no example is dropped or counted twice.
"""

from __future__ import annotations

import dataclasses
import functools
import io
from typing import Mapping, Sequence

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from jax.experimental import multihost_utils
from PIL import Image

from jpg_jax import chexpert
from jpg_jax import datasets
from jpg_jax import labels as labels_lib
from jpg_jax import text
from jpg_jax.datasets import common

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _str(x) -> str:
  return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def open_split(name: str, split: str, data_dir: str):
  """A random-access source whose images stay PNG bytes (decoded by the pipeline's own workers)."""
  decoders = {v: tfds.decode.SkipDecoding() for v in datasets.views(name)}
  return tfds.data_source(name, split=split, data_dir=data_dir, decoders=decoders, download=False)


@dataclasses.dataclass
class SplitIndex:
  """The text side of a split, read once: ids, patients, cleaned findings and MeSH terms per example."""
  ids: list[str]
  patient_ids: list[str]
  reports: list[str]        # cleaned by R2Gen's rules for the dataset (text.clean_report)
  mesh: list[list[str]]

  @classmethod
  def read(cls, source, cleaning: str = "iu_xray") -> "SplitIndex":
    """Every example's text side; reports cleaned by ``text.clean_report(., cleaning)``
    (``datasets.report_cleaning`` of the dataset)."""
    ids, patients, reports, mesh = [], [], [], []
    for i in range(len(source)):
      ex = source[i]
      ids.append(_str(ex["id"]))
      patients.append(_str(ex["patient_id"]))
      reports.append(text.clean_report(_str(ex["findings"]), cleaning))
      mesh.append([_str(t) for t in ex["mesh"]])
    return cls(ids, patients, reports, mesh)

  @classmethod
  def from_reports(cls, items) -> "SplitIndex":
    """From ``(example id, openi.Report)`` pairs, as the iu_xray builder writes them."""
    return cls([i for i, _ in items], [r.uid for _, r in items],
               [text.clean_report_iu_xray(r.findings) for _, r in items],
               [list(r.mesh_major) for _, r in items])

  def __len__(self) -> int:
    return len(self.ids)


# ------------------------------------------------------------------------------------------ images
def decode_view(png: bytes) -> Image.Image:
  """PNG bytes (``open_split`` skips TFDS's image decoding) -> a grey-scale PIL image."""
  return Image.open(io.BytesIO(png)).convert("L")


def resize_shorter(img: Image.Image, size: int) -> Image.Image:
  """torchvision ``Resize(size)``: the shorter side becomes ``size``, the aspect ratio is kept."""
  w, h = img.size
  if w <= h:
    return img.resize((size, int(size * h / w)), Image.BILINEAR)
  return img.resize((int(size * w / h), size), Image.BILINEAR)


def normalise(img: Image.Image) -> np.ndarray:
  x = np.asarray(img, np.float32)[..., None] / 255.0
  return (np.repeat(x, 3, axis=-1) - IMAGENET_MEAN) / IMAGENET_STD


def train_view(png, rng: np.random.Generator, image_size: int, resize_size: int, flip: bool) -> np.ndarray:
  img = resize_shorter(decode_view(png), resize_size)
  w, h = img.size
  x0, y0 = int(rng.integers(0, w - image_size + 1)), int(rng.integers(0, h - image_size + 1))
  img = img.crop((x0, y0, x0 + image_size, y0 + image_size))
  if flip and rng.random() < 0.5:
    img = img.transpose(Image.FLIP_LEFT_RIGHT)
  return normalise(img)


def eval_view(png, image_size: int) -> np.ndarray:
  return normalise(decode_view(png).resize((image_size, image_size), Image.BILINEAR))


# ------------------------------------------------------------------------------------------ targets
@dataclasses.dataclass
class Targets:
  """Text and label targets of one example.

  The head's multi-hot target is always the report's own MeSH terms (``LabelSet.multi_hot``), so training
  and evaluation score the same truth. The GRU's target sequence is ``assigned[id]`` where an assignment
  is given (stage 1's full terms, stage 2's context-aware labels: ``jpg_jax/mining.py``; a report missing
  from it has no GRU target), else the most specific label of the set that its terms match.
  """
  vocab: text.Vocabulary
  max_seq_length: int
  label_steps: int                 # the GRU's unroll (config.model.label_steps)
  label_set: labels_lib.LabelSet | None = None
  assigned: Mapping[str, labels_lib.Label] | None = None

  def __call__(self, split: SplitIndex, index: int) -> dict[str, np.ndarray]:
    ids, mask = self.vocab.encode_padded(split.reports[index], self.max_seq_length)
    out = {"report_ids": ids, "report_mask": mask}
    ls = self.label_set or labels_lib.LabelSet([])
    terms = split.mesh[index]
    if self.assigned is not None:
      label = self.assigned.get(split.ids[index])
    else:
      label = ls.most_specific(terms)
    out["label_ids"], out["label_mask"] = ls.encode_sequence(label, self.label_steps)
    out["label_targets"] = ls.multi_hot(terms)
    return out


# ------------------------------------------------------------------------------------------ datasets
@dataclasses.dataclass(frozen=True)
class ImageOptions:
  image_size: int = 224
  resize_size: int = 256
  random_flip: bool = True
  views: tuple[str, ...] = common.VIEWS    # the example's image features, in the model's order


class _Example:
  """Maps a position of the split to a processed example (train: random, eval: deterministic)."""

  def __init__(self, source, split: SplitIndex, targets: Targets, image: ImageOptions):
    self.source, self.split, self.targets, self.image = source, split, targets, image

  def __call__(self, index: int, rng: np.random.Generator | None, mask: float = 1.0):
    out = self.targets(self.split, int(index))
    out.update(images=case_views(self.source[int(index)], self.image, rng), index=np.int32(index),
               mask=np.float32(mask))
    return out


def case_views(raw, image: ImageOptions, rng: np.random.Generator | None = None) -> np.ndarray:
  """A case's views (V, H, W, 3) as training (``rng``: random crop/flip) or evaluation reads them; a
  case of a feature cache (``jpg_jax/feature_cache.py``) is its patch grids (V, h, w, d_x) either way."""
  if "grids" in raw:
    return np.asarray(raw["grids"], np.float32)
  if rng is None:
    return np.stack([eval_view(raw[v], image.image_size) for v in image.views])
  return np.stack([train_view(raw[v], rng, image.image_size, image.resize_size, image.random_flip)
                   for v in image.views])


def case_images(source, indices, config, rng: np.random.Generator | None = None) -> np.ndarray:
  """The views of the cases ``indices`` of a split's ``source`` (B, V, H, W, 3), for tools that batch
  by hand (the probe, the diagnostics)."""
  image = image_options(config, train=rng is not None)
  return np.stack([case_views(source[int(i)], image, rng) for i in indices]).astype(np.float32)


def _collate(examples: Sequence[dict]) -> dict:
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def epoch_size(indices: Sequence[int], droppable: Sequence[int] = (), keep: float = 1.0) -> int:
  """Examples per epoch when ``droppable`` examples are kept at the fraction ``keep``."""
  drop = set(droppable)
  rest = sum(1 for i in indices if i not in drop)
  return rest + int(round(keep * (len(indices) - rest)))


def epoch_order(indices: Sequence[int], droppable: Sequence[int], keep: float, seed: int,
                epoch: int) -> np.ndarray:
  """Epoch ``epoch``'s shuffled examples: every index not in ``droppable``, and a random ``keep``
  fraction (a fixed count) of those that are, drawn anew each epoch from ``(seed, epoch)`` alone."""
  drop = set(droppable)
  rest = [i for i in indices if i not in drop]
  pool = [i for i in indices if i in drop]
  rng = np.random.default_rng([seed, epoch])
  kept = rng.choice(pool, int(round(keep * len(pool))), replace=False) if pool else []
  return rng.permutation(np.concatenate([np.asarray(rest, np.int64), np.asarray(kept, np.int64)]))


def train_dataset(source, split: SplitIndex, targets: Targets, *, batch_size: int, seed: int,
                  image: ImageOptions = ImageOptions(), indices: Sequence[int] | None = None,
                  droppable: Sequence[int] = (), keep: float = 1.0,
                  process_index: int = 0, process_count: int = 1) -> grain.MapDataset:
  """Infinite, shuffled (new order each epoch) batches of ``batch_size`` examples for this host.

  The order is global, so that a run's batches do not depend on how many hosts read them: every host
  shuffles the same index list with the same seed, cuts the stream into global batches of
  ``batch_size * process_count`` examples and takes its own contiguous slice of each (host 0 the first
  ``batch_size``, ...). An example's augmentation draws from ``(seed, its position in the global stream)``
  alone. The global batch at step ``s`` is therefore the same for 1 host x 8 devices and 2 hosts x 4
  devices, and every host's iterator is at the same position (one ``get_state`` describes them all).

  ``indices`` restricts training to some examples (stage 1: the simple-pattern reports). With ``keep <
  1``, each epoch holds only that fraction of the ``droppable`` examples, drawn anew per epoch
  (``epoch_order``: stage 1's random dropout of normal cases, Sec. 3.4); the draw depends on the seed and
  the epoch alone, so it is the same on every host.
  """
  indices = list(range(len(split))) if indices is None else list(indices)
  global_size = batch_size * process_count
  size = epoch_size(indices, droppable, keep)
  if size < global_size:
    raise ValueError(f"{size} training examples an epoch are fewer than the global batch {global_size}.")
  example = _Example(source, split, targets, image)
  lo = process_index * batch_size

  def load(step: int, batch_indices: np.ndarray) -> dict:
    first = step * global_size + lo   # position of this host's first example in the global stream
    return _collate([example(i, np.random.default_rng([seed, first + k]))
                     for k, i in enumerate(batch_indices[lo:lo + batch_size])])

  if keep < 1.0 and droppable:
    orders = functools.lru_cache(maxsize=4)(lambda e: epoch_order(indices, droppable, keep, seed, e))
    order = grain.MapDataset.range(size).repeat(None).map_with_index(
        lambda k, _: int(orders(k // size)[k % size]))
  else:
    order = grain.MapDataset.source(indices).seed(seed).shuffle().repeat(None)
  return order.batch(global_size, drop_remainder=True).map_with_index(load)


def eval_dataset(source, split: SplitIndex, targets: Targets, *, global_batch_size: int,
                 image: ImageOptions = ImageOptions(), indices: Sequence[int] | None = None,
                 process_index: int = 0, process_count: int = 1) -> grain.MapDataset:
  """Ordered batches covering every example once; the last global batch is padded with mask 0.

  Every host gets the same number of batches of ``global_batch_size // process_count`` examples.
  """
  if global_batch_size % process_count:
    raise ValueError(f"Global batch {global_batch_size} does not split over {process_count} hosts.")
  indices = list(range(len(split))) if indices is None else list(indices)
  padded = -(-len(indices) // global_batch_size) * global_batch_size
  slots = [(i, 1.0) for i in indices] + [(indices[0], 0.0)] * (padded - len(indices))
  per_host = padded // process_count
  mine = slots[process_index * per_host:(process_index + 1) * per_host]
  example = _Example(source, split, targets, image)
  ds = grain.MapDataset.source(mine).map(lambda s: example(s[0], None, s[1]))
  return ds.batch(global_batch_size // process_count, drop_remainder=False)


def to_iter(ds: grain.MapDataset, worker_count: int = 0, prefetch: int = 2) -> grain.DatasetIterator:
  """A checkpointable iterator (``get_state``/``set_state``), with worker processes if asked."""
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=max(prefetch, 1), prefetch_buffer_size=prefetch))
  if worker_count > 0:
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return iter(it_ds)


def example_shapes(image_size: int, max_seq_length: int, label_steps: int, num_labels: int,
                   num_views: int = 2) -> dict:
  """Per-example shapes, for building models and shardings before any data is read."""
  return {"images": (num_views, image_size, image_size, 3), "report_ids": (max_seq_length,),
          "report_mask": (max_seq_length,), "label_ids": (label_steps + 1,),
          "label_mask": (label_steps + 1,), "label_targets": (num_labels,), "index": (), "mask": ()}


# ------------------------------------------------------------------------------------------ a run's data
@dataclasses.dataclass
class Data:
  """A config's dataset as a run reads it: a source and an index per split, and R2Gen's vocabulary."""
  sources: dict            # split -> random-access source (``open_split``)
  index: dict              # split -> SplitIndex
  vocab: text.Vocabulary   # over the train split, tokens seen more than ``dataset.vocab_threshold`` times


def load_data(config) -> Data:
  """Builds the config's dataset where it is not built yet, then opens every split."""
  d = config.dataset
  # Process 0 builds first; then the others, which is a no-op where data_dir is shared (a bucket, NFS)
  # and a local build where each host has its own disk (a TPU VM's local data_dir).
  if jax.process_index() == 0:
    datasets.prepare(d.name, d.data_dir, d.manual_dir, d.download)
  multihost_utils.sync_global_devices("dataset prepared on process 0")
  if jax.process_index() > 0:
    datasets.prepare(d.name, d.data_dir, d.manual_dir, d.download)
  multihost_utils.sync_global_devices("dataset prepared")
  builder = datasets.get_builder(d.name, d.data_dir)
  sources = {s: open_split(d.name, s, d.data_dir) for s in builder.info.splits}
  labeler = builder.info.metadata.get("labeler") if builder.info.metadata else None
  if labeler and labeler != chexpert.LABELER_VERSION:
    logging.warning("%s's labels were written by CheXpert labeler %s; this code's labeler is %s. Delete %s "
                    "to rebuild them with it.", d.name, labeler, chexpert.LABELER_VERSION, builder.data_dir)
  cleaning = datasets.report_cleaning(d.name)
  index = {s: SplitIndex.read(src, cleaning) for s, src in sources.items()}
  vocab = text.Vocabulary.build(index["train"].reports, d.vocab_threshold)
  return Data(sources, index, vocab)


def num_views(config) -> int:
  """V: the views of one example of the config's dataset."""
  return len(datasets.views(config.dataset.name))


def image_options(config, train: bool) -> ImageOptions:
  d = config.dataset
  return ImageOptions(d.image_size, d.resize_size, d.random_flip and train, datasets.views(d.name))
