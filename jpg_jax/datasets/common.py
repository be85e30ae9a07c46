"""What every jpg-jax dataset shares: the example features and grey-scale image handling.

Each example is one report with its views as grey-scale PNG bytes: IU X-Ray and the synthetic sets have two
(``VIEWS``: frontal, lateral), MIMIC-CXR as R2Gen reads it one (``("image",)``); a builder names its views
in its class attribute ``VIEWS`` and the features carry one image per view (``report_features``). Builders
write ``array_record`` files so that they are read with ``tfds.data_source`` without TensorFlow.

Images become 8-bit grey-scale by one rule, the same in the builders and in ``--mode=predict``
(``to_grey8``): 8-bit modes (L, RGB, palette, ...) through PIL's ``convert("L")``; 16-bit, 32-bit integer
and float images (I;16, I, F: DICOM exports, 12-bit radiographs, float TIFFs) scaled linearly from their
own minimum and maximum to 0..255 (a constant image becomes 0), since clipping them at 255, as
``convert("L")`` does, turns almost every pixel of a radiograph white. Images above PIL's
decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``, 89 M pixels) are refused; ``max_side`` reduces a
large image while it is decoded (JPEG's draft mode) or right after, so that a 6000 x 6000 radiograph costs
a prediction about what a normal one does.
"""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from jpg_jax import errors

VIEWS = ("frontal", "lateral")
_EIGHT_BIT = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")
_WIDE = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


class BadImageError(errors.InputError):
  """An image is missing or cannot be decoded; the message names the file (and the report)."""


def report_features(views: tuple[str, ...] = VIEWS) -> tfds.features.FeaturesDict:
  """One report: its id, its patient, a grey-scale PNG per view, its text and its terms (``mesh``: MeSH
  major terms for IU X-Ray; the labels a builder derives, for the others)."""
  image = tfds.features.Image(shape=(None, None, 1), encoding_format="png")
  return tfds.features.FeaturesDict({
      "id": tfds.features.Text(),
      "patient_id": tfds.features.Text(),
      **{v: image for v in views},
      "findings": tfds.features.Text(),
      "impression": tfds.features.Text(),
      "indication": tfds.features.Text(),
      "mesh": tfds.features.Sequence(tfds.features.Text()),
  })


def read_r2gen_annotation(path: epath.Path) -> dict:
  """R2Gen's ``annotation.json`` at ``path``, parsed; not valid JSON raises ``InputError`` naming it."""
  try:
    return json.loads(epath.Path(path).read_text())
  except ValueError as e:
    raise errors.InputError(f"{path} is not valid JSON ({e}); use R2Gen's annotation.json.") from None


def encode_png(image: np.ndarray) -> bytes:
  """uint8 HxW (or HxWx1) array -> PNG bytes."""
  buf = io.BytesIO()
  Image.fromarray(np.asarray(image, np.uint8).reshape(image.shape[:2]), mode="L").save(buf, "PNG")
  return buf.getvalue()


def to_grey8(img: Image.Image) -> Image.Image:
  """``img`` as 8-bit grey-scale (mode L), by the module docstring's rule; other modes raise ValueError."""
  if img.mode == "L":
    return img
  if img.mode in _EIGHT_BIT:
    return img.convert("L")
  if img.mode in _WIDE:
    x = np.asarray(img, np.float32)
    finite = np.isfinite(x)
    lo, hi = (float(x[finite].min()), float(x[finite].max())) if finite.any() else (0.0, 0.0)
    scaled = (np.where(finite, x, lo) - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(x)
    return Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L")
  raise ValueError(f"image mode {img.mode!r} is not supported (8-bit, 16-bit, 32-bit integer or float)")


def _read(path, what: str) -> bytes:
  try:
    return epath.Path(path).read_bytes()
  except FileNotFoundError:
    raise BadImageError(f"{what} does not exist.") from None
  except IsADirectoryError:
    raise BadImageError(f"{what} is a folder, not an image file.") from None
  except OSError as e:
    raise BadImageError(f"{what} cannot be read ({e.strerror or e}).") from None


def open_grey(source, what: str, max_side: int | None = None) -> Image.Image:
  """The image at ``source`` (a path, or bytes) as 8-bit grey-scale, its longer side at most ``max_side``.

  Raises ``BadImageError`` naming ``what`` (the file, and the report where there is one) for a missing
  file, a folder, a truncated or foreign file and an image above PIL's pixel limit.
  """
  data = bytes(source) if isinstance(source, (bytes, bytearray)) else _read(source, what)
  if not data:
    raise BadImageError(f"{what} is empty (0 bytes).")
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      img = Image.open(io.BytesIO(data))
      if max_side and img.format == "JPEG":
        img.draft(img.mode if img.mode in ("L", "RGB") else None, (max_side, max_side))
      img.load()
  except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
    raise BadImageError(f"{what} is too large to decode ({e}); reduce it first.") from None
  except Exception as e:  # PIL raises several types (OSError, SyntaxError, ValueError) for bad files.
    raise BadImageError(f"{what} cannot be decoded as an image ({type(e).__name__}: {e}).") from None
  try:
    grey = to_grey8(img)
  except ValueError as e:
    raise BadImageError(f"{what}: {e}.") from None
  if max_side and max(grey.size) > max_side:
    grey.thumbnail((max_side, max_side), Image.BILINEAR)
  return grey


def read_grayscale_png(path, report_id: str, max_side: int | None = None) -> bytes:
  """The file's PNG bytes, as a single-channel 8-bit PNG (``to_grey8``), its longer side at most
  ``max_side``. Raises BadImageError naming file and report."""
  what = f"Image {path} of report {report_id}"
  data = _read(path, what)
  grey = open_grey(data, what, max_side)
  if grey.format == "PNG" and grey.size == Image.open(io.BytesIO(data)).size:
    return data   # already an 8-bit grey PNG, not reduced: its own bytes
  return encode_png(np.asarray(grey))
