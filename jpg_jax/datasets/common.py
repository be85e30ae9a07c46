"""What every jpg-jax dataset shares: the example features and grey-scale PNG handling.

Each example is one report with its two views (frontal, lateral) as grey-scale PNG bytes. Builders write
``array_record`` files so that they are read with ``tfds.data_source`` without TensorFlow.
"""

from __future__ import annotations

import io

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

VIEWS = ("frontal", "lateral")


class BadImageError(ValueError):
  """An image is missing or cannot be decoded; the message names the file and the report."""


def report_features() -> tfds.features.FeaturesDict:
  image = tfds.features.Image(shape=(None, None, 1), encoding_format="png")
  return tfds.features.FeaturesDict({
      "id": tfds.features.Text(),
      "patient_id": tfds.features.Text(),
      "frontal": image,
      "lateral": image,
      "findings": tfds.features.Text(),
      "impression": tfds.features.Text(),
      "indication": tfds.features.Text(),
      "mesh": tfds.features.Sequence(tfds.features.Text()),
  })


def encode_png(image: np.ndarray) -> bytes:
  """uint8 HxW (or HxWx1) array -> PNG bytes."""
  buf = io.BytesIO()
  Image.fromarray(np.asarray(image, np.uint8).reshape(image.shape[:2]), mode="L").save(buf, "PNG")
  return buf.getvalue()


def read_grayscale_png(path, report_id: str) -> bytes:
  """The file's PNG bytes, as a single-channel PNG. Raises BadImageError naming file and report."""
  path = epath.Path(path)
  try:
    data = path.read_bytes()
  except FileNotFoundError:
    raise BadImageError(f"Image {path} of report {report_id} is missing.") from None
  try:
    with Image.open(io.BytesIO(data)) as img:
      img.load()
      if img.format == "PNG" and img.mode == "L":
        return data
      grey = img.convert("L")
  except Exception as e:  # PIL raises several types for truncated or foreign files.
    raise BadImageError(f"Image {path} of report {report_id} cannot be decoded: {e}") from None
  return encode_png(np.asarray(grey))
