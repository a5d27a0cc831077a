"""Large-sheet helpers for the OCR engine: glyph statistics, detection regions and tiles, merging.

A3 drawing exports at 150–300 dpi are 2,480–4,961 px on the long side (17 MP at 300 dpi), mostly
paper and long lines. Text detection cost grows with the pixels it sees, so the engine

1. finds glyph-like ink blobs (connected components of glyph size and shape once long straight
   lines are removed, ``glyph_components``) and from their heights the sheet's small-text height;
   the sheet is shrunk for detection when that height exceeds ``det_text_px`` (never enlarged,
   ``det_scale_for``). The default (32 px) leaves A3 sheets up to 300 dpi at full size: shrinking
   them to ~16 px text halved detection pixels but cost line recall (looser boxes turned crops
   into misreads such as full-width ``Ｂ`` for ``B``);
2. runs detection only on *text regions*: boxes around clusters of glyphs, grown by a margin
   (``text_regions``); a region larger than ``tile_px`` is cut into overlapping square tiles
   (``tile_grid``). ``regions=False`` tiles the whole sheet instead and skips tiles without a
   glyph (``tiles_with_glyphs``);
   the glyphs also tell the text direction (``glyph_chains``: chained side by side or one above
   the other), so a sheet turned by 90° is detected turned back (``sheet_turn``) and the second,
   turned detection pass for vertical text only looks at glyphs chained across the primary frame;
3. merges the per-tile boxes (``merge_tile_boxes``): a line cut by a tile border is seen (partly or
   whole) by both tiles; the two boxes are grouped when they cover the same pixels of the tiles'
   shared strip, then the whole box is kept (or, when every copy is cut, the union of the pieces);
4. after recognition, ``dedup_lines`` drops any remaining line that overlaps a better reading of
   the same place (longer; for the engine, more characters × confidence).

Geometry uses Shapely 2 (polygon intersections, STRtree queries) and OpenCV (connected
components, dilation, minimum-area rectangles). Coordinates are pixels ``(x, y)``; rectangles are
``(x0, y0, x1, y1)`` with exclusive ends.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import cv2
import numpy as np

Rect = tuple[int, int, int, int]


@dataclasses.dataclass(frozen=True)
class TileParams:
    """Detection of large sheets (sizes in px of the detection image unless noted).

    Attributes:
        tile_px: side of a square tile. A detection image (or text region) whose sides both fit
            in ``tile_px`` is detected in one pass.
        overlap_px: overlap of neighbouring tiles; at least ~3× the tallest text line at detection
            scale, so both tiles see enough of a line cut by the border to match it.
        regions: detect only text regions (clusters of glyphs plus ``region_margin``); ``False``
            tiles the whole image (skipping glyph-free tiles when ``skip_empty_tiles``).
        region_margin: margin around glyph clusters, in units of the small-text height (at least
            ``min_region_margin_px``); glyphs closer than twice the margin fall in one region. At 3
            a table row with widely spaced words ("merge   merge   merge") fell into separate
            regions and was read as separate lines; 6 keeps such rows whole.
        min_region_margin_px: lower bound of that margin (px).
        region_pad: a region is the box around its cluster's glyphs grown by this many small-text
            heights (at least ``min_region_margin_px`` / 1.5 px), not the whole grown cluster:
            glyphs within twice ``region_margin`` still share a region, but an isolated label is
            detected with less paper around it. At 2 detection sees 23 % fewer pixels than with
            the cluster's full margin and reads as well (long vertical lines read better: the
            det model finds them whole); ``None``: the grown cluster.
        skip_empty_tiles: with ``regions=False``, skip tiles holding no glyph-like component.
        ink_level: grey level (0–255) below which a pixel counts as ink.
        line_px: horizontal and vertical ink runs at least this long (px of the original image)
            are removed before glyphs are sought (morphological opening with a ``line_px × 1`` and
            a ``1 × line_px`` rectangle), so text written on or touching a dimension line, leader or
            frame still yields glyphs. ``0`` keeps every line.
        min_glyph_px / max_glyph_px: size range (longer side of the box, px of the original
            image) of a connected ink component that counts as a glyph; one filling under 12 % of
            its box is hatching or a curve, not a glyph.
        det_text_px: target small-text height (px, the glyph heights' 25th percentile) in the
            detection image; the sheet is shrunk by ``det_text_px / height`` when that is < 1.
            ``None`` disables scaling (and sizing by text: PaddleOCR's image-size rule applies).
        min_det_scale: lower bound of that shrink factor.
    """

    tile_px: int = 1280
    overlap_px: int = 160
    regions: bool = True
    region_margin: float = 6.0
    min_region_margin_px: int = 48
    region_pad: float | None = 2.0
    skip_empty_tiles: bool = True
    ink_level: int = 160
    line_px: int = 61
    min_glyph_px: int = 5
    max_glyph_px: int = 300
    det_text_px: float | None = 32.0
    min_det_scale: float = 0.25

    def __post_init__(self) -> None:
        if self.tile_px < 64 or not 0 <= self.overlap_px < self.tile_px // 2:
            raise ValueError(f"need tile_px >= 64 and 0 <= overlap_px < tile_px / 2, got {self.tile_px}, {self.overlap_px}")


@dataclasses.dataclass(frozen=True)
class GlyphStats:
    """Glyph-like connected components of a sheet.

    Attributes:
        boxes: int32 ``[K, 4]`` ``(x, y, w, h)`` px of each glyph-like component.
        median_height: median of their sizes (longer box side, px), ``None`` when fewer than
            ``min_count``.
        small_height: 25th percentile of their sizes (px) — the sheet's small text — or ``None``.
    """

    boxes: np.ndarray
    median_height: float | None
    small_height: float | None = None


def glyph_components(gray: np.ndarray, params: TileParams = TileParams(), min_count: int = 8) -> GlyphStats:
    """Find glyph-like ink blobs (8-connected components of ``gray < ink_level`` once straight
    horizontal/vertical runs of ``line_px`` or more are removed).

    A component is glyph-like when the longer side of its box is ``min_glyph_px`` to
    ``max_glyph_px`` and it fills at least 12 % of its box (sparse diagonal hatching and long
    curves do not). The test is the same for text at any multiple of 90°: an earlier version also
    required ``w <= 1.5 h``, which rejected most glyphs of vertical text, so whole columns of
    vertical dimension text fell outside every detection region. Short strokes (ticks, arrow
    stems) pass too; they only add detection pixels. On 28 corpus sheets with ≥ 8 glyphs the
    median glyph size was within ±20 % of the median labelled cap height on 26.

    Args:
        gray: uint8 ``[H, W]``.
        params: ``ink_level``, ``line_px`` and glyph size bounds.
        min_count: fewer glyphs than this give ``None`` heights (too little evidence).

    Returns:
        ``GlyphStats``; its heights are the longer side of each glyph box (rotation-invariant).

    Raises:
        ValueError: ``gray`` is not a 2-D uint8 array.
    """
    if not isinstance(gray, np.ndarray) or gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(f"expected a uint8 [H, W] grey image, got {getattr(gray, 'dtype', None)} {getattr(gray, 'shape', None)}")
    ink = (gray < params.ink_level).astype(np.uint8)
    if params.line_px > 0:
        lines = cv2.morphologyEx(ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (params.line_px, 1)))
        lines |= cv2.morphologyEx(ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, params.line_px)))
        ink &= 1 - lines
    _n, _labels, stats, _centroids = cv2.connectedComponentsWithStats(ink, connectivity=8)
    stats = stats[1:]  # drop the background
    w, h, area = stats[:, 2], stats[:, 3], stats[:, 4]
    size = np.maximum(w, h)
    keep = (size >= params.min_glyph_px) & (size <= params.max_glyph_px) & (area >= 0.12 * w * h)
    boxes = stats[keep, :4].astype(np.int32)
    if len(boxes) < min_count:
        return GlyphStats(boxes=boxes, median_height=None, small_height=None)
    sizes = np.maximum(boxes[:, 2], boxes[:, 3])
    return GlyphStats(boxes=boxes, median_height=float(np.median(sizes)), small_height=float(np.percentile(sizes, 25)))


def glyph_chains(glyph_boxes: np.ndarray, *, min_similarity: float = 0.6, align: float = 0.2,
                 max_gap: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Per glyph: does it have a neighbour glyph of similar size beside it in a *row* (text running
    left–right) and/or in a *column* (text running up–down)?

    Two glyphs are row neighbours when their sizes (longer box side) differ by less than
    ``min_similarity`` (smaller / larger), their centres' heights differ by less than ``align`` ×
    the larger size and the horizontal gap between their boxes is under ``max_gap`` × the larger
    size; column neighbours likewise with x and y swapped. Characters of a line touch or nearly
    touch, lines of a paragraph are further apart than half a character, so the glyphs of
    horizontal text chain in rows and those of vertical text in columns. On the benchmark sheets
    90–99 % of chained glyphs chain only in rows on upright sheets and only in columns on sheets
    turned by 90° (``sheet_turn``).

    Args:
        glyph_boxes: int ``[K, 4]`` ``(x, y, w, h)`` px.

    Returns:
        ``(in_row, in_column)``: bool ``[K]`` each.
    """
    n = len(glyph_boxes)
    row, col = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    if n < 2:
        return row, col
    import shapely
    from shapely import STRtree

    b = np.asarray(glyph_boxes, dtype=np.float64).reshape(-1, 4)
    x, y, w, h = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    size = np.maximum(np.maximum(w, h), 1.0)
    reach = max_gap * size / min_similarity  # a neighbour may be larger by up to 1 / min_similarity
    geoms = shapely.box(x - reach, y - reach, x + w + reach, y + h + reach)
    i, j = STRtree(geoms).query(geoms, predicate="intersects")
    keep = i < j
    i, j = i[keep], j[keep]
    big = np.maximum(size[i], size[j])
    similar = np.minimum(size[i], size[j]) > min_similarity * big
    cx, cy = x + w / 2, y + h / 2
    gap_x = np.maximum(x[i], x[j]) - np.minimum(x[i] + w[i], x[j] + w[j])
    gap_y = np.maximum(y[i], y[j]) - np.minimum(y[i] + h[i], y[j] + h[j])
    in_row = similar & (np.abs(cy[i] - cy[j]) < align * big) & (gap_x < max_gap * big)
    in_col = similar & (np.abs(cx[i] - cx[j]) < align * big) & (gap_y < max_gap * big)
    row[i[in_row]] = row[j[in_row]] = True
    col[i[in_col]] = col[j[in_col]] = True
    return row, col


def sheet_turn(in_row: np.ndarray, in_column: np.ndarray, *, dominance: float = 2.0, min_glyphs: int = 8) -> int:
    """Quarter turns (clockwise) that bring a sheet's text upright or upside down: 1 when glyphs
    chaining only in columns outnumber those chaining only in rows by ``dominance`` (and are at
    least ``min_glyphs``): the sheet was scanned or exported turned by 90°; else 0. Whether the
    text then reads upright or upside down is left to the 0°/180° line classifier."""
    only_col = int(np.count_nonzero(in_column & ~in_row))
    only_row = int(np.count_nonzero(in_row & ~in_column))
    return 1 if only_col >= min_glyphs and only_col > dominance * only_row else 0


def turn_glyph_boxes(glyph_boxes: np.ndarray, turns: int, image_hw: tuple[int, int]) -> np.ndarray:
    """Glyph boxes ``(x, y, w, h)`` of an ``H × W`` image as they lie in the image turned clockwise
    ``turns`` times (``cv2.rotate``: one turn moves pixel ``(x, y)`` to ``(H - 1 - y, x)``)."""
    b = np.asarray(glyph_boxes).reshape(-1, 4)
    h, w = image_hw
    x, y, bw, bh = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    k = turns % 4
    if k == 0:
        out = b
    elif k == 1:
        out = np.stack([h - y - bh, x, bh, bw], axis=1)
    elif k == 2:
        out = np.stack([w - x - bw, h - y - bh, bw, bh], axis=1)
    else:
        out = np.stack([y, w - x - bw, bh, bw], axis=1)
    return out.astype(b.dtype, copy=False)


def unturn_points(points: np.ndarray, turns: int, image_hw: tuple[int, int]) -> np.ndarray:
    """Points ``[..., 2]`` of the ``H × W`` image turned clockwise ``turns`` times, back in the image
    as given (the inverse of ``cv2.rotate``'s pixel mapping, see ``turn_glyph_boxes``)."""
    p = np.asarray(points)
    h, w = image_hw
    xs, ys = p[..., 0], p[..., 1]
    k = turns % 4
    if k == 0:
        return p.copy()
    if k == 1:
        out = (ys, h - 1 - xs)
    elif k == 2:
        out = (w - 1 - xs, h - 1 - ys)
    else:
        out = (w - 1 - ys, xs)
    return np.stack(out, axis=-1).astype(p.dtype, copy=False)


def turn_points(points: np.ndarray, turns: int, image_hw: tuple[int, int]) -> np.ndarray:
    """Points ``[..., 2]`` of an ``H × W`` image where they lie once it is turned clockwise
    ``turns`` times (inverse of ``unturn_points``)."""
    p = np.asarray(points)
    h, w = image_hw
    xs, ys = p[..., 0], p[..., 1]
    k = turns % 4
    if k == 0:
        return p.copy()
    if k == 1:
        out = (h - 1 - ys, xs)
    elif k == 2:
        out = (w - 1 - xs, h - 1 - ys)
    else:
        out = (ys, w - 1 - xs)
    return np.stack(out, axis=-1).astype(p.dtype, copy=False)


def estimate_text_height(gray: np.ndarray, params: TileParams = TileParams()) -> float | None:
    """Median glyph height (px) of a sheet, ``None`` when it has fewer than 8 glyph-like blobs
    (see ``glyph_components``)."""
    return glyph_components(gray, params).median_height


def det_scale_for(text_height: float | None, params: TileParams = TileParams()) -> float:
    """Shrink factor in ``[min_det_scale, 1]`` for detection: ``det_text_px / text_height`` when
    that is below 1, else 1 (also when either is ``None``)."""
    if text_height is None or params.det_text_px is None or text_height <= 0:
        return 1.0
    return float(min(1.0, max(params.min_det_scale, params.det_text_px / text_height)))


def tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Start/end (px, end exclusive) of tiles covering ``[0, length)``: one span if it fits,
    else the fewest equal spans of ``tile`` px overlapping by at least ``overlap`` px."""
    if length <= tile:
        return [(0, length)]
    n = math.ceil((length - overlap) / (tile - overlap))
    step = (length - tile) / (n - 1)
    return [(int(round(i * step)), int(round(i * step)) + tile) for i in range(n)]


def tile_grid(height: int, width: int, params: TileParams = TileParams(), origin: tuple[int, int] = (0, 0)) -> list[Rect]:
    """Tiles ``(x0, y0, x1, y1)`` covering a ``height × width`` area whose top-left is ``origin``
    ``(x, y)``, row-major from the top-left; one tile when the area fits in ``tile_px``."""
    ox, oy = origin
    ys = tile_spans(height, params.tile_px, params.overlap_px)
    xs = tile_spans(width, params.tile_px, params.overlap_px)
    return [(ox + x0, oy + y0, ox + x1, oy + y1) for (y0, y1) in ys for (x0, x1) in xs]


def tiles_with_glyphs(tiles: Sequence[Rect], glyph_boxes: np.ndarray) -> list[bool]:
    """Per tile: does the centre of any glyph box ``(x, y, w, h)`` lie in it?

    A glyph is a few px wide, so a glyph cut by the border has its centre in one of the two
    tiles, and both tiles overlap by far more than a glyph.
    """
    if len(glyph_boxes) == 0:
        return [False] * len(tiles)
    cx = glyph_boxes[:, 0] + glyph_boxes[:, 2] / 2.0
    cy = glyph_boxes[:, 1] + glyph_boxes[:, 3] / 2.0
    return [bool(np.any((cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1))) for (x0, y0, x1, y1) in tiles]


def text_regions(glyph_boxes: np.ndarray, image_hw: tuple[int, int], margin_px: float, *,
                 min_side_px: int = 96, cell_px: int = 4, pad_px: float | None = None) -> list[Rect]:
    """Rectangles around clusters of glyphs: each glyph box grown by ``margin_px``, overlapping
    grown boxes joined (connected components of their union), each cluster's bounding box (or,
    with ``pad_px``, the box around the cluster's glyphs grown by ``pad_px``) clipped to the image
    and widened to at least ``min_side_px`` per side.

    The union is rasterised on a grid of ``cell_px`` px (a 5000 × 3500 sheet → 1,250 × 875 cells),
    so regions are exact to a few px; rectangles of different clusters may overlap.

    Args:
        glyph_boxes: int ``[K, 4]`` ``(x, y, w, h)`` px.
        image_hw: ``(H, W)`` px.
        margin_px: growth on every side (px).

    Returns:
        ``[(x0, y0, x1, y1)]`` sorted top-to-bottom, left-to-right; empty when there is no glyph.
    """
    h, w = image_hw
    if len(glyph_boxes) == 0:
        return []
    gh, gw = max(1, math.ceil(h / cell_px)), max(1, math.ceil(w / cell_px))
    mask = np.zeros((gh, gw), dtype=np.uint8)
    b = np.asarray(glyph_boxes, dtype=np.float64)
    x0 = np.clip(np.floor((b[:, 0] - margin_px) / cell_px), 0, gw - 1).astype(int)
    y0 = np.clip(np.floor((b[:, 1] - margin_px) / cell_px), 0, gh - 1).astype(int)
    x1 = np.clip(np.ceil((b[:, 0] + b[:, 2] + margin_px) / cell_px), 1, gw).astype(int)
    y1 = np.clip(np.ceil((b[:, 1] + b[:, 3] + margin_px) / cell_px), 1, gh).astype(int)
    for a, c, e, f in zip(x0, y0, x1, y1):
        mask[c:f, a:e] = 1
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if pad_px is not None:  # tight: the cluster's glyphs plus pad_px, not the whole grown cluster
        lab = labels[np.clip(((b[:, 1] + b[:, 3] / 2) // cell_px).astype(int), 0, gh - 1),
                     np.clip(((b[:, 0] + b[:, 2] / 2) // cell_px).astype(int), 0, gw - 1)]
        tight = np.zeros((n, 4))
        tight[:, :2], tight[:, 2:] = np.inf, -np.inf
        np.minimum.at(tight[:, 0], lab, b[:, 0] - pad_px)
        np.minimum.at(tight[:, 1], lab, b[:, 1] - pad_px)
        np.maximum.at(tight[:, 2], lab, b[:, 0] + b[:, 2] + pad_px)
        np.maximum.at(tight[:, 3], lab, b[:, 1] + b[:, 3] + pad_px)
    out = []
    for k, (sx, sy, sw, sh, _area) in enumerate(stats[1:n], start=1):
        rx0, ry0 = int(sx * cell_px), int(sy * cell_px)
        rx1, ry1 = min(w, int((sx + sw) * cell_px)), min(h, int((sy + sh) * cell_px))
        if pad_px is not None and np.isfinite(tight[k, 0]):
            rx0, ry0 = max(0, int(math.floor(tight[k, 0]))), max(0, int(math.floor(tight[k, 1])))
            rx1, ry1 = min(w, int(math.ceil(tight[k, 2]))), min(h, int(math.ceil(tight[k, 3])))
        rx0, rx1 = _widen(rx0, rx1, min_side_px, w)
        ry0, ry1 = _widen(ry0, ry1, min_side_px, h)
        out.append((rx0, ry0, rx1, ry1))
    return sorted(out, key=lambda r: (r[1], r[0]))


def _widen(lo: int, hi: int, min_len: int, limit: int) -> tuple[int, int]:
    if hi - lo >= min_len or limit <= min_len:
        return (lo, hi) if hi - lo >= min_len else (0, limit)
    grow = min_len - (hi - lo)
    lo = max(0, lo - grow // 2)
    hi = min(limit, lo + min_len)
    return hi - min_len, hi


def region_tiles(regions: Sequence[Rect], params: TileParams = TileParams()) -> list[Rect]:
    """Detection rectangles for text regions: a region that fits in ``tile_px`` as is, a larger
    one cut by ``tile_grid`` (overlapping tiles)."""
    out: list[Rect] = []
    for x0, y0, x1, y1 in regions:
        out.extend(tile_grid(y1 - y0, x1 - x0, params, origin=(x0, y0)))
    return out


def _touches_inner_edge(box: np.ndarray, tile: Rect, image_hw: tuple[int, int], margin: float) -> bool:
    """Whether ``box`` (image px) reaches a border of ``tile`` that is not the image border."""
    x0, y0, x1, y1 = tile
    h, w = image_hw
    xs, ys = box[:, 0], box[:, 1]
    return bool((x0 > 0 and xs.min() <= x0 + margin) or (y0 > 0 and ys.min() <= y0 + margin)
                or (x1 < w and xs.max() >= x1 - 1 - margin) or (y1 < h and ys.max() >= y1 - 1 - margin))


def merge_tile_boxes(
    tile_boxes: Sequence[tuple[Rect, np.ndarray]],
    image_hw: tuple[int, int],
    *,
    min_shared: float = 0.5,
    edge_margin_px: float = 2.0,
    order_box: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Merge text boxes detected on overlapping tiles into one box per line.

    Two boxes from different tiles are the same line when, inside the strip both tiles cover,
    their intersection is at least ``min_shared`` of the smaller one's part in the strip (both
    tiles see the same pixels there, so a line's two detections coincide there however much of
    the line each tile saw). Groups are joined transitively. Per group: the largest box that does
    not touch an inner tile border (a whole detection) is kept when it covers ≥ 80 % of every
    other member; otherwise the minimum-area rectangle around all members (the pieces of a line
    longer than the overlap) replaces them.

    Args:
        tile_boxes: ``[(tile (x0, y0, x1, y1), boxes float32 [K, 4, 2] in image px), ...]``.
        image_hw: ``(H, W)`` of the image the tiles cut.
        min_shared: grouping threshold (see above).
        edge_margin_px: a box within this many px of an inner tile border is "cut".
        order_box: points ``[N, 2]`` → the detector's 4-corner box around them (default:
            ``rapidocr``'s ``DBPostProcess.get_mini_boxes``: minimum-area rectangle, clockwise from
            the top-left).

    Returns:
        float32 ``[M, 4, 2]`` boxes (unsorted).
    """
    from shapely import STRtree
    from shapely.geometry import Polygon, box as shapely_box

    entries: list[tuple[int, np.ndarray, bool]] = []  # (tile index, box, cut)
    for t, (tile, boxes) in enumerate(tile_boxes):
        for b in np.asarray(boxes, dtype=np.float32).reshape(-1, 4, 2):
            entries.append((t, b, _touches_inner_edge(b, tile, image_hw, edge_margin_px)))
    if not entries:
        return np.zeros((0, 4, 2), dtype=np.float32)
    polys = [Polygon(b).buffer(0) for _, b, _ in entries]
    rects = [shapely_box(x0, y0, x1, y1) for (x0, y0, x1, y1), _ in tile_boxes]
    parent = list(range(len(entries)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    tree = STRtree(polys)
    for i, j in zip(*tree.query(polys, predicate="intersects")):
        i, j = int(i), int(j)
        ti, tj = entries[i][0], entries[j][0]
        if i >= j or ti == tj:
            continue
        strip = rects[ti].intersection(rects[tj])
        if strip.is_empty:
            continue
        a = polys[i].intersection(strip).area
        b = polys[j].intersection(strip).area
        if min(a, b) <= 0:
            continue
        if polys[i].intersection(polys[j]).intersection(strip).area >= min_shared * min(a, b):
            parent[find(i)] = find(j)

    groups: dict[int, list[int]] = {}
    for i in range(len(entries)):
        groups.setdefault(find(i), []).append(i)
    if order_box is None:
        from rapidocr.ch_ppocr_det.utils import DBPostProcess

        db = DBPostProcess()
        order_box = lambda pts: np.asarray(db.get_mini_boxes(pts)[0])  # noqa: E731
    out = []
    for members in groups.values():
        if len(members) == 1:
            out.append(entries[members[0]][1])
            continue
        whole = sorted((m for m in members if not entries[m][2]), key=lambda m: -polys[m].area)
        chosen = None
        for m in whole:
            if all(polys[k].area <= 0 or polys[m].intersection(polys[k]).area >= 0.8 * polys[k].area for k in members):
                chosen = m
                break
        if chosen is not None:
            out.append(entries[chosen][1])
        else:
            pts = np.concatenate([entries[m][1] for m in members]).astype(np.float32)
            out.append(np.asarray(order_box(pts), dtype=np.float32))
    return np.stack(out).astype(np.float32)


def dedup_lines(polygons: Sequence[np.ndarray], texts: Sequence[str], scores: Sequence[float],
                *, min_overlap: float = 0.6, weighted: bool = False) -> list[int]:
    """Indices of the lines to keep when readings overlap: of two lines whose polygons share at
    least ``min_overlap`` of the smaller one's area, the longer text wins (then the higher score);
    with ``weighted``, the larger length × score wins (a confident ``2.53`` over a doubtful
    ``ω6`` read across it in another frame; a ``20`` over the ``2`` of the same place).

    Args:
        polygons: per line, ``[4, 2]`` px.
        texts / scores: per line.

    Returns:
        Sorted indices of the kept lines.
    """
    from shapely import STRtree
    from shapely.geometry import Polygon

    n = len(polygons)
    if n < 2:
        return list(range(n))
    polys = [Polygon(np.asarray(p, dtype=np.float64)).buffer(0) for p in polygons]
    if weighted:
        rank = sorted(range(n), key=lambda i: (-len(texts[i].strip()) * scores[i], -scores[i], i))
    else:
        rank = sorted(range(n), key=lambda i: (-len(texts[i].strip()), -scores[i], i))
    position = {i: r for r, i in enumerate(rank)}
    dropped: set[int] = set()
    tree = STRtree(polys)
    for i, j in zip(*tree.query(polys, predicate="intersects")):
        i, j = int(i), int(j)
        if i >= j:
            continue
        smaller = min(polys[i].area, polys[j].area)
        if smaller > 0 and polys[i].intersection(polys[j]).area >= min_overlap * smaller:
            dropped.add(j if position[i] < position[j] else i)
    return [i for i in range(n) if i not in dropped]


__all__ = ["TileParams", "GlyphStats", "Rect", "glyph_components", "glyph_chains", "sheet_turn", "turn_glyph_boxes",
           "turn_points", "unturn_points", "estimate_text_height", "det_scale_for",
           "tile_spans", "tile_grid", "tiles_with_glyphs", "text_regions", "region_tiles",
           "merge_tile_boxes", "dedup_lines"]
