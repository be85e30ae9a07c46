"""Procedural two-view chest radiographs in which each finding is drawn where its term says.

Coordinates are fractions of the image, (x, y) with y downwards. The frontal view is PA: the patient's
RIGHT is the image's LEFT. The lateral view has anterior on the left and the spine on the right; sides
overlap there, so findings keep their height (zone) but not their side. Intensities are in [0, 1], bright
meaning dense (bone, heart, fluid), dark meaning air.

``lesion_center(finding, view)`` gives where a focal finding is drawn, so tests can check that each one
lands in the zone and on the side its term names.
"""

from __future__ import annotations

import numpy as np

from jpg_jax.datasets.synthetic_findings import Finding

# Lung fields in the frontal view: patient right (image left) and patient left.
_LUNG_X = {"right": 0.30, "left": 0.70}
_LUNG_CY, _LUNG_RX, _LUNG_RY = 0.45, 0.15, 0.28
_ZONE_Y = {"upper lobe": 0.27, "middle lobe": 0.42, "lower lobe": 0.55, "base": 0.64}
_LAT_LUNG_X = 0.50


def _grid(size: int):
  c = (np.arange(size, dtype=np.float32) + 0.5) / size
  return np.meshgrid(c, c, indexing="xy")  # xx, yy


def _ellipse(xx, yy, cx, cy, rx, ry, soft=0.02):
  d = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)
  return np.clip((1.0 - d) / soft + 0.5, 0.0, 1.0)


def _blob(xx, yy, cx, cy, sigma):
  return np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2)))


def _segment(xx, yy, p0, p1, width):
  p0, p1 = np.asarray(p0, np.float32), np.asarray(p1, np.float32)
  d = p1 - p0
  t = np.clip(((xx - p0[0]) * d[0] + (yy - p0[1]) * d[1]) / max(float(d @ d), 1e-9), 0, 1)
  dist = np.hypot(xx - (p0[0] + t * d[0]), yy - (p0[1] + t * d[1]))
  return np.clip(1.0 - dist / width, 0.0, 1.0)


def _sides(side):
  return ("right", "left") if side == "bilateral" else (side,)


def lesion_center(f: Finding, view: str) -> list[tuple[float, float]]:
  """Centres (x, y) where a zoned finding (granuloma, nodule, opacity) is drawn in ``view``."""
  jitter = {"granuloma": -0.03, "nodule": 0.03, "opacity": 0.0}[f.kind]
  y = _ZONE_Y[f.zone]
  if view == "lateral":
    return [(_LAT_LUNG_X + jitter, y)]
  return [(_LUNG_X[s] + jitter * (1 if s == "right" else -1), y) for s in _sides(f.side)]


def _lung_geometry(kinds):
  cy, ry = _LUNG_CY, _LUNG_RY
  if "hypoinflation" in kinds:
    cy, ry = cy - 0.04, ry * 0.78
  if "hyperdistention" in kinds:
    cy, ry = cy + 0.03, ry * 1.15
  return cy, ry


def render_frontal(findings, size: int, rng: np.random.Generator) -> np.ndarray:
  xx, yy = _grid(size)
  by = {f.kind: f for f in findings}
  dx, dy = rng.normal(0, 0.008, 2)
  xx, yy = xx - dx, yy - dy
  img = 0.04 + 0.32 * _ellipse(xx, yy, 0.5, 0.56, 0.46, 0.52, soft=0.08)
  # Spine (under everything central), with scoliosis as a lateral bow.
  bow = 0.05 * np.sin(np.pi * np.clip(yy, 0, 1)) if "scoliosis" in by else 0.0
  spine = np.clip(1 - np.abs(xx - 0.5 - bow) / 0.035, 0, 1) * (yy > 0.05)
  img += 0.30 * spine * (0.8 + 0.2 * np.cos(2 * np.pi * yy / 0.055))
  cy, ry = _lung_geometry(by)
  lungs = np.zeros_like(img)
  for side, cx in _LUNG_X.items():
    lung = _ellipse(xx, yy, cx, cy, _LUNG_RX, ry)
    if "pneumothorax" in by and side in _sides(by["pneumothorax"].side):
      # Collapsed lung edge: a dark rim with no markings along the lateral upper pleura.
      out = -1 if side == "right" else 1
      width = 0.05 if by["pneumothorax"].severity == "small" else 0.09
      rim = lung * np.clip((out * (xx - cx) - (_LUNG_RX - width)) / 0.01, 0, 1) * (yy < cy + 0.05)
      img -= 0.10 * rim
    lungs = np.maximum(lungs, lung)
  img -= 0.24 * lungs
  # Ribs: bright arcs over the lungs.
  for k in range(9):
    y0 = cy - ry + 0.02 + k * 0.062
    arc = y0 + 0.07 * ((xx - 0.5) / 0.4) ** 2
    img += 0.07 * np.clip(1 - np.abs(yy - arc) / 0.008, 0, 1) * lungs
  # Mediastinum and heart (patient's left = image right of centre).
  img += 0.28 * _ellipse(xx, yy, 0.5, 0.33, 0.06, 0.24, soft=0.1)
  scale = {"mild": 1.25, "moderate": 1.45, "severe": 1.65}.get(
      by["cardiomegaly"].severity if "cardiomegaly" in by else None, 1.0)
  img += 0.34 * _ellipse(xx, yy, 0.53 + 0.02 * (scale - 1), 0.62, 0.12 * scale, 0.11, soft=0.1)
  # Diaphragm domes: dense below the lungs.
  img += 0.12 * (yy > cy + ry * 0.92) * _ellipse(xx, yy, 0.5, 0.8, 0.46, 0.3, soft=0.2)
  for f in findings:
    if f.kind in ("granuloma", "nodule", "opacity"):
      for (x, y) in lesion_center(f, "frontal"):
        if f.kind == "granuloma":
          img += 0.75 * _ellipse(xx, yy, x, y, 0.012, 0.012, soft=0.3)
        elif f.kind == "nodule":
          img += 0.35 * _ellipse(xx, yy, x, y, 0.03, 0.03, soft=0.3)
        else:
          img += (0.22 if f.severity == "mild" else 0.32) * _blob(xx, yy, x, y, 0.055)
    elif f.kind == "effusion":
      depth = 0.07 if f.severity == "small" else 0.15
      for side in _sides(f.side):
        cx = _LUNG_X[side]
        out = -1 if side == "right" else 1
        # Fluid fills the lateral costophrenic angle, rising towards the chest wall (meniscus).
        level = cy + ry - depth - 0.10 * np.clip(out * (xx - cx) / _LUNG_RX, 0, 1)
        fluid = _ellipse(xx, yy, cx, cy, _LUNG_RX * 1.02, ry * 1.02) * np.clip((yy - level) / 0.01, 0, 1)
        img += 0.30 * fluid
    elif f.kind == "degenerative":
      n = 4 if f.severity == "mild" else 9
      for y in np.linspace(0.25, 0.75, n):
        for out in (-1, 1):
          img += 0.35 * _segment(xx, yy, (0.5 + out * 0.03, y), (0.5 + out * 0.05, y - 0.012), 0.006)
    elif f.kind == "catheter":
      sx = 0.22 if f.side == "right" else 0.78
      pts = [(sx, 0.08), (0.5 + (0.04 if f.side == "left" else -0.04), 0.2), (0.47, 0.36)]
      for a, b in zip(pts[:-1], pts[1:]):
        img += 0.45 * _segment(xx, yy, a, b, 0.006)
    elif f.kind == "clips":
      for y in (0.22, 0.3, 0.38):
        img += 0.6 * _segment(xx, yy, (0.46, y), (0.5, y + 0.01), 0.006)
  return _finish(img, rng)


def render_lateral(findings, size: int, rng: np.random.Generator) -> np.ndarray:
  xx, yy = _grid(size)
  by = {f.kind: f for f in findings}
  dx, dy = rng.normal(0, 0.008, 2)
  xx, yy = xx - dx, yy - dy
  img = 0.04 + 0.34 * _ellipse(xx, yy, 0.5, 0.55, 0.42, 0.52, soft=0.08)
  cy, ry = _lung_geometry(by)
  lung = _ellipse(xx, yy, _LAT_LUNG_X, cy, 0.28, ry * 1.05)
  img -= 0.22 * lung
  # Spine posteriorly (right), sternum anteriorly (left), heart anterior-inferior.
  bow = 0.025 * np.sin(np.pi * np.clip(yy, 0, 1)) if "scoliosis" in by else 0.0
  img += 0.32 * np.clip(1 - np.abs(xx - 0.8 - bow) / 0.045, 0, 1) * (
      0.75 + 0.25 * np.cos(2 * np.pi * yy / 0.06)) * (yy > 0.1)
  img += 0.2 * _segment(xx, yy, (0.16, 0.2), (0.2, 0.62), 0.01)
  scale = {"mild": 1.2, "moderate": 1.35, "severe": 1.5}.get(
      by["cardiomegaly"].severity if "cardiomegaly" in by else None, 1.0)
  img += 0.30 * _ellipse(xx, yy, 0.38, 0.63, 0.13 * scale, 0.12 * scale ** 0.5, soft=0.1)
  for f in findings:
    if f.kind in ("granuloma", "nodule", "opacity"):
      (x, y), = lesion_center(f, "lateral")
      if f.kind == "granuloma":
        img += 0.7 * _ellipse(xx, yy, x, y, 0.012, 0.012, soft=0.3)
      elif f.kind == "nodule":
        img += 0.3 * _ellipse(xx, yy, x, y, 0.03, 0.03, soft=0.3)
      else:
        img += (0.2 if f.severity == "mild" else 0.3) * _blob(xx, yy, x, y, 0.06)
    elif f.kind == "effusion":
      depth = 0.06 if f.severity == "small" else 0.13
      level = cy + ry - depth - 0.08 * np.clip((xx - _LAT_LUNG_X) / 0.28, 0, 1)
      img += 0.3 * lung * np.clip((yy - level) / 0.01, 0, 1)
    elif f.kind == "degenerative":
      n = 4 if f.severity == "mild" else 9
      for y in np.linspace(0.25, 0.75, n):
        img += 0.35 * _segment(xx, yy, (0.755, y), (0.73, y - 0.012), 0.006)
    elif f.kind == "catheter":
      img += 0.45 * _segment(xx, yy, (0.55, 0.08), (0.45, 0.36), 0.006)
    elif f.kind == "clips":
      for y in (0.22, 0.3, 0.38):
        img += 0.6 * _segment(xx, yy, (0.3, y), (0.34, y + 0.01), 0.006)
    elif f.kind == "pneumothorax":
      img -= 0.08 * lung * (yy < cy - ry * 0.5)
  return _finish(img, rng)


def _finish(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  contrast = rng.uniform(0.9, 1.1)
  img = img * contrast + rng.normal(0.0, 0.025, img.shape)
  return np.clip(img * 255.0, 0, 255).astype(np.uint8)


def render_case(findings, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """(frontal, lateral) uint8 images of shape (size, size)."""
  return render_frontal(findings, size, rng), render_lateral(findings, size, rng)
