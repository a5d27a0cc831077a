"""Text-line crops from a page image, as PaddleOCR cuts them for recognition.

``crop_line`` follows PaddleOCR's ``get_rotate_crop_image`` (``tools/infer/utility.py``, PaddleOCR
2.x/3.x): the quadrilateral is warped to an axis-aligned rectangle whose width/height are the longer
of the opposite sides, with cubic interpolation and replicated borders; a result at least 1.5× as
tall as wide is rotated by 90° (counter-clockwise, ``np.rot90``) so vertical text lies horizontal.

With the reading-order polygons of ``ocrloop.data.render`` (first corner = top-left *of the text*),
the warp alone turns rotated text upright. The 90° rule matters for polygons ordered by image
position, as a text detector returns them: it turns text that reads top-to-bottom upright, but
leaves the usual CAD vertical text (rotated +90°, read bottom-to-top) upside down; PaddleOCR's
pipeline relies on its text-line orientation classifier (0°/180°) for those.
"""

from __future__ import annotations

import numpy as np


def crop_line(image: np.ndarray, polygon: np.ndarray, *, rotate_tall: bool = True) -> np.ndarray:
    """Cut one text line out of ``image``.

    Args:
        image: uint8 BGR ``[H, W, 3]``.
        polygon: float ``[4, 2]`` pixel corners (x, y): top-left, top-right, bottom-right,
            bottom-left of the line (in reading direction, or as a detector orders them).
        rotate_tall: apply PaddleOCR's rule (rotate when ``h / w >= 1.5``). Pass ``False`` for
            reading-order polygons (the corpus ground truth): the warp already makes the text
            upright, and the rule would turn a lone upright character (``"6"``, 9 × 18 px) sideways.

    Returns:
        uint8 BGR ``[h, w, 3]`` with ``w = max(|p0 p1|, |p3 p2|)`` and ``h = max(|p0 p3|, |p1 p2|)``
        (truncated to int, at least 1 px), rotated by 90° counter-clockwise when ``rotate_tall``
        and ``h / w >= 1.5``.

    Raises:
        ValueError: ``image`` is not ``[H, W, 3]`` or ``polygon`` is not ``[4, 2]`` finite values.
    """
    import cv2

    if image is None or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a BGR image [H, W, 3], got shape {getattr(image, 'shape', None)}")
    pts = np.asarray(polygon, dtype=np.float32)
    if pts.shape != (4, 2) or not np.isfinite(pts).all():
        raise ValueError(f"expected a finite polygon [4, 2], got {pts.shape}")
    width = int(max(np.linalg.norm(pts[0] - pts[1]), np.linalg.norm(pts[2] - pts[3])))
    height = int(max(np.linalg.norm(pts[0] - pts[3]), np.linalg.norm(pts[1] - pts[2])))
    width, height = max(width, 1), max(height, 1)
    dst = np.float32([[0, 0], [width, 0], [width, height], [0, height]])
    matrix = cv2.getPerspectiveTransform(pts, dst)
    crop = cv2.warpPerspective(
        image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC
    )
    if rotate_tall and crop.shape[0] * 1.0 / crop.shape[1] >= 1.5:
        crop = np.rot90(crop)
    return np.ascontiguousarray(crop)


def order_points_clockwise(polygon: np.ndarray) -> np.ndarray:
    """Re-order 4 corners as a text detector does (PaddleOCR ``order_points_clockwise``): top-left
    (smallest x+y), top-right, bottom-right (largest x+y), bottom-left, by image position only.

    Args:
        polygon: float ``[4, 2]`` pixel corners in any order.

    Returns:
        float32 ``[4, 2]``.
    """
    pts = np.asarray(polygon, dtype=np.float32).reshape(4, 2)
    s = pts.sum(axis=1)
    tl, br = pts[np.argmin(s)], pts[np.argmax(s)]
    rest = np.delete(pts, [np.argmin(s), np.argmax(s)], axis=0)
    diff = np.diff(rest, axis=1).ravel()  # y - x
    tr, bl = rest[np.argmin(diff)], rest[np.argmax(diff)]
    return np.stack([tl, tr, br, bl]).astype(np.float32)


def expand_polygon(polygon: np.ndarray, pad_px: float) -> np.ndarray:
    """Grow a rectangle-like ``[4, 2]`` polygon by ``pad_px`` on every side along its own axes
    (e.g. to give tight glyph boxes the margin a detector's unclip leaves).

    Returns:
        float32 ``[4, 2]`` in the same corner order.
    """
    pts = np.asarray(polygon, dtype=np.float64).reshape(4, 2)
    u = pts[1] - pts[0]
    v = pts[3] - pts[0]
    u /= max(np.linalg.norm(u), 1e-9)
    v /= max(np.linalg.norm(v), 1e-9)
    signs = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)
    return (pts + pad_px * (signs[:, :1] * u + signs[:, 1:] * v)).astype(np.float32)
