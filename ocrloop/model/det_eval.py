"""Text detection precision / recall / hmean, ICDAR 2015 protocol (IoU ≥ 0.5, one-to-one).

The protocol of the ICDAR 2015 Robust Reading "Incidental Scene Text" task 4.1 as PaddleOCR's
``DetectionIoUEvaluator`` (``ppocr/metrics/eval_det_iou.py``) applies it, written here with
``shapely`` polygons:

* ground-truth polygons transcribed ``"###"`` (or flagged ignore) are *don't care*; a detection
  whose area lies more than half (``area(det ∩ gt) / area(det) > 0.5``) inside a don't-care
  polygon is dropped from the count;
* pairs are matched one-to-one, greedily in ground-truth order then detection order: a pair
  whose polygon IoU is ≥ ``iou_threshold`` (0.5) is matched when neither member is matched yet
  (both must be cared for);
* totals are pooled over images: ``precision = matched / cared detections``, ``recall = matched /
  cared ground truth`` (each 0 when its denominator is 0), ``hmean = 2PR / (P + R)`` (0 when both
  are 0).

Invalid polygons (self-intersecting) are repaired with ``shapely.make_valid``; polygons of zero
area never match.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Sequence

import numpy as np

IOU_THRESHOLD = 0.5
"""ICDAR 2015 matching threshold (PaddleOCR ``DetectionIoUEvaluator(iou_constraint=0.5)``)."""
DONT_CARE_AREA = 0.5
"""A detection more than this fraction inside a don't-care polygon is not counted (ICDAR 2015)."""


@dataclasses.dataclass
class DetCounts:
    """Pooled counts: ``matched`` pairs, cared-for ``gt`` and ``det`` polygons, ``images``."""

    matched: int = 0
    gt: int = 0
    det: int = 0
    images: int = 0

    def add(self, other: "DetCounts") -> "DetCounts":
        return DetCounts(self.matched + other.matched, self.gt + other.gt, self.det + other.det,
                         self.images + other.images)

    def to_json(self) -> dict[str, Any]:
        """``{"precision", "recall", "hmean"}`` in [0, 1] plus the counts."""
        p = self.matched / self.det if self.det else 0.0
        r = self.matched / self.gt if self.gt else 0.0
        h = 2 * p * r / (p + r) if p + r > 0 else 0.0
        return {"precision": p, "recall": r, "hmean": h, "matched": self.matched, "gt": self.gt,
                "det": self.det, "images": self.images}


def _polygon(points):
    import shapely
    from shapely.geometry import Polygon

    poly = Polygon(np.asarray(points, dtype=np.float64).reshape(-1, 2))
    return poly if poly.is_valid else shapely.make_valid(poly)


def match_image(gt: Sequence[np.ndarray], det: Sequence[np.ndarray], gt_ignore: Sequence[bool] | None = None,
                iou_threshold: float = IOU_THRESHOLD) -> DetCounts:
    """Counts for one image (module doc).

    Args:
        gt: ground-truth polygons, each float ``[K, 2]`` px (K ≥ 3).
        det: detected polygons, same form (e.g. ``OcrEngine.detect`` boxes ``[4, 2]``).
        gt_ignore: per ground-truth polygon, True for don't care (default none).

    Raises:
        ValueError: ``gt_ignore`` of another length than ``gt``.
    """
    gt_ignore = [False] * len(gt) if gt_ignore is None else list(gt_ignore)
    if len(gt_ignore) != len(gt):
        raise ValueError(f"{len(gt)} ground-truth polygons but {len(gt_ignore)} ignore flags")
    gps = [_polygon(g) for g in gt]
    dps = [_polygon(d) for d in det]
    dont_care = [i for i, ign in enumerate(gt_ignore) if ign]
    det_ignore = [False] * len(dps)
    if dont_care:
        for j, d in enumerate(dps):
            if d.area <= 0:
                continue
            for i in dont_care:
                if d.intersection(gps[i]).area / d.area > DONT_CARE_AREA:
                    det_ignore[j] = True
                    break
    gt_done = [False] * len(gps)
    det_done = [False] * len(dps)
    matched = 0
    for i, g in enumerate(gps):
        if gt_ignore[i] or g.area <= 0:
            continue
        for j, d in enumerate(dps):
            if det_done[j] or det_ignore[j] or d.area <= 0 or gt_done[i]:
                continue
            inter = g.intersection(d).area
            union = g.area + d.area - inter
            if union > 0 and inter / union >= iou_threshold:
                gt_done[i] = det_done[j] = True
                matched += 1
    return DetCounts(matched, sum(1 for ign in gt_ignore if not ign), sum(1 for ign in det_ignore if not ign), 1)


def evaluate_detections(pairs: Iterable[tuple[Sequence[np.ndarray], Sequence[np.ndarray], Sequence[bool] | None]],
                        iou_threshold: float = IOU_THRESHOLD) -> dict[str, Any]:
    """Pooled precision / recall / hmean over ``(gt, det, gt_ignore)`` per image
    (``DetCounts.to_json``)."""
    total = DetCounts()
    for gt, det, ign in pairs:
        total = total.add(match_image(gt, det, ign, iou_threshold))
    return total.to_json()
