"""DB training targets from text polygons (numpy + OpenCV + pyclipper; no paddle).

Differentiable Binarization (Liao et al. 2020, "Real-time Scene Text Detection with
Differentiable Binarization", AAAI, §3.4 "Label generation"):

* **shrink (probability) map** ``G_s``: each text polygon ``G`` is shrunk by the Vatti clipping
  offset ``D = A (1 - r²) / L`` (``A`` area, ``L`` perimeter, shrink ratio ``r = 0.4``) and filled
  with 1. A polygon marked ignore (transcription ``"###"``), smaller than ``min_text_size`` px on
  its short side, or that vanishes when shrunk is filled into the *mask* with 0 instead (its pixels
  are excluded from the probability and binary losses);
* **threshold (border) map** ``G_d``: ``G`` is dilated by the same ``D``; inside the dilated polygon
  each pixel gets ``1 - min(dist to an edge of G / D, 1)``, the maximum over polygons, rescaled to
  ``[thresh_min, thresh_max] = [0.3, 0.7]`` (0.3 elsewhere); its mask is 1 inside the dilated
  polygons (the L1 threshold loss only counts there).

All coordinates are px of the image the maps are made for (x right, y down).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

SHRINK_RATIO = 0.4
"""``r`` of the shrink offset ``D = A (1 - r²) / L`` (Liao et al. 2020: r = 0.4)."""
THRESH_MIN = 0.3
THRESH_MAX = 0.7
"""Threshold-map range (Liao et al. 2020, §3.4: 0.3 and 0.7)."""
MIN_TEXT_SIZE = 8
"""Polygons whose min-area rectangle has a side under this many px are ignored (PaddleOCR's
``MakeShrinkMap`` default)."""
IGNORE_TEXT = "###"
CLIPPER_SCALE = 256
"""Fixed-point scale of coordinates handed to pyclipper (integer arithmetic)."""


@dataclasses.dataclass
class DetMaps:
    """DB targets of one image of ``H × W`` px, all float32 ``[H, W]``: ``shrink`` (0/1),
    ``shrink_mask`` (1 = counted), ``thresh`` (in [0.3, 0.7]) and ``thresh_mask`` (0/1)."""

    shrink: np.ndarray
    shrink_mask: np.ndarray
    thresh: np.ndarray
    thresh_mask: np.ndarray


def polygon_area(poly: np.ndarray) -> float:
    """Signed shoelace area (px²) of ``poly`` float ``[K, 2]``; positive when clockwise in image
    coordinates (y down)."""
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def shrink_offset(poly: np.ndarray, ratio: float = SHRINK_RATIO) -> float:
    """``D = A (1 - r²) / L`` px for polygon ``poly`` float ``[K, 2]`` (Liao et al. 2020, eq. 9);
    0 for a degenerate polygon (zero perimeter)."""
    poly = np.asarray(poly, dtype=np.float64)
    perimeter = float(np.linalg.norm(poly - np.roll(poly, 1, axis=0), axis=1).sum())
    if perimeter <= 0:
        return 0.0
    return abs(polygon_area(poly)) * (1.0 - ratio**2) / perimeter


def offset_polygon(poly: np.ndarray, delta: float) -> list[np.ndarray]:
    """Vatti offset of ``poly`` float ``[K, 2]`` by ``delta`` px (negative shrinks) with round
    joins (pyclipper ``JT_ROUND``, closed polygon). Returns the resulting polygons (float64
    ``[M, 2]`` each); empty when a shrink makes it vanish. Clipper works on integers: coordinates
    are scaled by ``CLIPPER_SCALE`` so the offset keeps sub-pixel precision."""
    import pyclipper

    pco = pyclipper.PyclipperOffset()
    pts = np.round(np.asarray(poly, dtype=np.float64) * CLIPPER_SCALE).astype(np.int64)
    pco.AddPath([tuple(map(int, p)) for p in pts], pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    return [np.asarray(p, dtype=np.float64) / CLIPPER_SCALE for p in pco.Execute(delta * CLIPPER_SCALE) if len(p) >= 3]


def _segment_distance(xs: np.ndarray, ys: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance (px) of grid points ``(xs, ys)`` to the segment ``a``–``b``."""
    ab = b - a
    denom = float(ab @ ab)
    if denom == 0:
        return np.hypot(xs - a[0], ys - a[1])
    t = np.clip(((xs - a[0]) * ab[0] + (ys - a[1]) * ab[1]) / denom, 0.0, 1.0)
    return np.hypot(xs - (a[0] + t * ab[0]), ys - (a[1] + t * ab[1]))


def make_maps(shape_hw: tuple[int, int], polygons: Sequence[np.ndarray], ignore: Sequence[bool] | None = None, *,
              ratio: float = SHRINK_RATIO, min_text_size: int = MIN_TEXT_SIZE) -> DetMaps:
    """DB targets (module doc) for an image of ``shape_hw = (H, W)`` px.

    Args:
        polygons: text polygons, each float ``[K, 2]`` px (K ≥ 3; may extend past the image).
        ignore: per polygon, True to mask it out (default: none ignored).

    Raises:
        ValueError: a polygon with fewer than 3 points, or ``ignore`` of another length.
    """
    import cv2

    h, w = shape_hw
    shrink = np.zeros((h, w), np.float32)
    mask = np.ones((h, w), np.float32)
    thresh = np.zeros((h, w), np.float32)
    thresh_mask = np.zeros((h, w), np.float32)
    ignore = [False] * len(polygons) if ignore is None else list(ignore)
    if len(ignore) != len(polygons):
        raise ValueError(f"{len(polygons)} polygons but {len(ignore)} ignore flags")
    for poly, ign in zip(polygons, ignore):
        poly = np.asarray(poly, dtype=np.float64)
        if poly.ndim != 2 or poly.shape[0] < 3 or poly.shape[1] != 2:
            raise ValueError(f"polygon must be [K >= 3, 2], got {poly.shape}")
        (_, (rw, rh), _) = cv2.minAreaRect(poly.astype(np.float32))
        d = shrink_offset(poly, ratio)
        shrunk = offset_polygon(poly, -d) if not ign and min(rw, rh) >= min_text_size else []
        if not shrunk:
            cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 0.0)
        else:
            cv2.fillPoly(shrink, [np.round(p).astype(np.int32) for p in shrunk], 1.0)
        if ign or d <= 0:
            continue
        _draw_border(poly, d, thresh, thresh_mask)
    thresh = np.clip(thresh * (THRESH_MAX - THRESH_MIN) + THRESH_MIN, THRESH_MIN, THRESH_MAX).astype(np.float32)
    return DetMaps(shrink, mask, thresh, thresh_mask)


def _draw_border(poly: np.ndarray, d: float, canvas: np.ndarray, mask: np.ndarray) -> None:
    """Max-accumulate ``1 - min(dist(p, ∂poly) / d, 1)`` inside ``poly`` dilated by ``d`` into
    ``canvas``; set ``mask`` to 1 there."""
    import cv2

    grown = offset_polygon(poly, d)
    if not grown:
        return
    padded = grown[0]
    cv2.fillPoly(mask, [np.round(padded).astype(np.int32)], 1.0)
    h, w = canvas.shape
    x0, y0 = np.floor(padded.min(axis=0)).astype(int)
    x1, y1 = np.ceil(padded.max(axis=0)).astype(int)
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1)
    if cx1 < cx0 or cy1 < cy0:
        return
    ys, xs = np.mgrid[cy0:cy1 + 1, cx0:cx1 + 1].astype(np.float64)
    dist = np.full(xs.shape, np.inf)
    for i in range(len(poly)):
        dist = np.minimum(dist, _segment_distance(xs, ys, poly[i], poly[(i + 1) % len(poly)]))
    value = 1.0 - np.clip(dist / d, 0.0, 1.0)
    inside = np.zeros((cy1 - cy0 + 1, cx1 - cx0 + 1), np.uint8)
    cv2.fillPoly(inside, [np.round(padded - [cx0, cy0]).astype(np.int32)], 1)
    value = np.where(inside > 0, value, 0.0)
    region = canvas[cy0:cy1 + 1, cx0:cx1 + 1]
    np.maximum(region, value.astype(np.float32), out=region)


def pad_polygon(poly: np.ndarray, pad: float) -> np.ndarray:
    """``poly`` float ``[K, 2]`` px replaced by its minimum-area rectangle grown by ``pad`` × its
    short side on every side (float32 ``[4, 2]``); ``pad = 0`` returns ``poly`` unchanged.

    Annotators' boxes (and CAD text boxes) hug the glyphs, while the recogniser was trained on
    crops with a margin; training det on padded boxes keeps that margin in what it detects.

    Raises:
        ValueError: ``pad < 0``.
    """
    import cv2

    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if pad == 0:
        return np.asarray(poly, dtype=np.float32)
    (cx, cy), (w, h), angle = cv2.minAreaRect(np.asarray(poly, dtype=np.float32))
    grow = 2.0 * pad * min(w, h)
    return cv2.boxPoints(((cx, cy), (w + grow, h + grow), angle)).astype(np.float32)
