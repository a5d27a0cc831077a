"""The drawings corpus: real DXF drawings rendered to sheet images with text-line ground truth.

For every selected source DXF (``ocrloop.data.fetch``) the modelspace is recorded once
(``render.load_scene``) and cut into *sheets*: windows around clusters of text (a dimensioned
view, a schedule, a title block, a legend) with the drawing around them, each rendered at a scale
that makes its small text legible (its 10th-percentile cap height is drawn ``target_cap_px`` high,
12..20 px depending on the source) and split into overlapping tiles when larger than
``MAX_SIDE_PX``. Text is not shrunk below legibility to fit a page (only a cluster that would need
more than ``MAX_TILES`` tiles is scaled down).

Cache layout (``<cache>/drawings``)::

    <source_id>.index.json   per source: render settings fingerprint, sheet ids, failure reason
    <source_id>-p<k>.png     sheet image (BGR PNG)
    <source_id>-p<k>.json    sidecar: texts (label, polygon px, angle, entity, handle, key),
                             dropped-reason counts, scale, window, provenance

``source_id`` is a short SHA-256 of ``package/member`` (stable across versions of the cache);
sheets of one source share it, so splits by ``source_id`` never leak a drawing between train and
holdout. A text that two overlapping sheets both show fully is listed in both (detection labels
must be complete per image); its ``key`` is equal in both so line-level consumers can dedupe.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from ocrloop.config import cache_dir
from ocrloop.data._util import atomic_write_bytes, atomic_write_text
from ocrloop.data.fetch import SourceFile, fetch_sources
from ocrloop.data.render import MIN_GLYPH_PX, DrawingScene, RenderError, TextItem, load_scene

logger = logging.getLogger(__name__)

TARGET_CAP_PX = 16.0
"""Centre of the rendered cap height (px) of a cluster's small (10th-percentile) text."""
MAX_SIDE_PX = 2000
"""Longest side of one sheet image (px); larger clusters are tiled."""
TILE_OVERLAP_PX = 400
"""Overlap of neighbouring tiles (px), so any text shorter than this is whole in some tile."""
CONTEXT_PX = 96
"""Drawing shown around the box of a text cluster (px)."""
CELL_PX = 48
"""Occupancy grid cell (px at the drawing-wide scale) used to find text clusters."""
CLUSTER_GAP_CELLS = 3
"""Texts closer than about this many cells (dilation radius) fall into the same cluster."""
MAX_TILES = 12
"""Most tiles one content cluster may be cut into (its scale is lowered otherwise)."""
RENDER_VERSION = 11
"""Bump when rendering/layout changes so cached sheets are rebuilt."""


@dataclasses.dataclass(frozen=True)
class Drawing:
    """One sheet image of the corpus.

    Attributes:
        drawing_id: ``<source_id>-p<k>`` (stable).
        source_id: 12-hex id of the source DXF (``sha256(package/member)[:12]``).
        image_path: PNG, uint8 BGR when read with ``cv2.imread``; ``json_path``: the sidecar.
        width / height: image size (px).
        texts: usable text lines (labels equal the CAD strings as drawn; polygons float32 [4, 2] px).
        text_keys: per text, a key equal for the same CAD text on other sheets of the source.
        dropped: ``{reason: count}`` of texts visible on this sheet but not usable as labels.
        scale: px per drawing unit; window: ``(x0, y0, x1, y1)`` drawing units.
        provenance: package, version, member, license, sdist, sdist_sha256, sha256 of the DXF.
    """

    drawing_id: str
    source_id: str
    image_path: Path
    json_path: Path
    width: int
    height: int
    texts: list[TextItem]
    text_keys: list[str]
    dropped: dict[str, int]
    scale: float
    window: tuple[float, float, float, float]
    provenance: dict

    def load_image(self) -> np.ndarray:
        """The sheet as uint8 BGR ``[H, W, 3]``.

        Raises:
            FileNotFoundError: the PNG is missing or unreadable.
        """
        import cv2

        img = cv2.imread(str(self.image_path), cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(self.image_path)
        return img

    @classmethod
    def from_sidecar(cls, json_path: Path) -> "Drawing":
        d = json.loads(Path(json_path).read_text(encoding="utf-8"))
        return cls(
            drawing_id=d["drawing_id"],
            source_id=d["source_id"],
            image_path=Path(json_path).with_suffix(".png"),
            json_path=Path(json_path),
            width=int(d["width"]),
            height=int(d["height"]),
            texts=[TextItem.from_json(t) for t in d["texts"]],
            text_keys=[t["key"] for t in d["texts"]],
            dropped=dict(d["dropped"]),
            scale=float(d["scale"]),
            window=tuple(d["window"]),  # type: ignore[arg-type]
            provenance=dict(d["provenance"]),
        )


@dataclasses.dataclass(frozen=True)
class FailedSource:
    """A source DXF that produced no sheet, with the reason (``parse_error``, ``render_error``,
    ``empty``, ``no_text_drawn``, ``no_legible_text``)."""

    source_id: str
    member: str
    reason: str
    detail: str


def drawings_dir() -> Path:
    """``<cache>/drawings`` (created)."""
    path = cache_dir() / "drawings"
    path.mkdir(parents=True, exist_ok=True)
    return path


def source_id(src: SourceFile) -> str:
    """12-hex stable id of a source DXF: ``sha256("<package>/<member>")[:12]``."""
    return hashlib.sha256(f"{src.package}/{src.member}".encode("utf-8")).hexdigest()[:12]


def build_corpus(max_drawings: int | None = None) -> list[Drawing]:
    """Fetch the sources and render (or load from cache) the corpus sheets.

    Args:
        max_drawings: stop after this many sheet images (sources are processed in their fixed
            order, so the result is a prefix of the full corpus); ``None`` = all.

    Returns:
        Sheets ordered by source (``fetch_sources`` order) then sheet index.

    Raises:
        RuntimeError: the sources cannot be fetched (see ``fetch_sources``).
    """
    return build_corpus_report(max_drawings)[0]


def build_corpus_report(max_drawings: int | None = None) -> tuple[list[Drawing], list[FailedSource]]:
    """``build_corpus`` plus the sources that yielded no sheet, with reasons (also logged)."""
    out: list[Drawing] = []
    failed: list[FailedSource] = []
    for src in fetch_sources():
        if max_drawings is not None and len(out) >= max_drawings:
            break
        sheets, failure = _source_sheets(src)
        if failure is not None:
            logger.warning("corpus: skipped %s (%s): %s", src.member, failure.reason, failure.detail)
            failed.append(failure)
        out.extend(sheets)
    if max_drawings is not None:
        out = out[:max_drawings]
    return out, failed


def corpus_stats(drawings: Sequence[Drawing]) -> dict:
    """Counts over a corpus: sheets, sources, lines (all and unique by key), characters, the
    non-ASCII characters and the symbols (non-alphanumeric) with counts, entity types, vertical
    lines, dropped reasons and cap-height percentiles (px) of the unique lines."""
    from collections import Counter

    lines = [(d.source_id, k, t) for d in drawings for k, t in zip(d.text_keys, d.texts)]
    unique = {(s, k): t for s, k, t in lines}
    chars = Counter(c for t in unique.values() for c in t.text)
    dropped: Counter = Counter()
    for d in drawings:
        dropped.update(d.dropped)
    caps = np.array([t.cap_height_px for t in unique.values()]) if unique else np.zeros(1)
    return {
        "sheets": len(drawings),
        "sources": len({d.source_id for d in drawings}),
        "lines": len(lines),
        "unique_lines": len(unique),
        "characters": sum(chars.values()),
        "distinct_characters": len(chars),
        "non_ascii": _by_count({c: n for c, n in chars.items() if ord(c) > 127}),
        "symbols": _by_count({c: n for c, n in chars.items() if not c.isalnum() and c != " "}),
        "entity_types": dict(Counter(t.entity_type for t in unique.values())),
        "vertical_lines": sum(abs(abs(t.angle_deg) - 90) < 1 for t in unique.values()),
        "dropped": dict(dropped),
        "cap_height_px_p10_p50_p90": [float(x) for x in np.percentile(caps, [10, 50, 90])],
    }


def _by_count(counts: dict[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


# --------------------------------------------------------------------------------------------


def _settings() -> dict:
    return {
        "render_version": RENDER_VERSION,
        "target_cap_px": TARGET_CAP_PX,
        "max_side_px": MAX_SIDE_PX,
        "tile_overlap_px": TILE_OVERLAP_PX,
        "context_px": CONTEXT_PX,
        "cell_px": CELL_PX,
        "cluster_gap_cells": CLUSTER_GAP_CELLS,
        "max_tiles": MAX_TILES,
        "min_glyph_px": MIN_GLYPH_PX,
    }


def _provenance(src: SourceFile) -> dict:
    return {
        "package": src.package,
        "version": src.version,
        "member": src.member,
        "license": src.license,
        "sdist": src.sdist,
        "sdist_sha256": src.sdist_sha256,
        "sha256": src.sha256,
    }


def _source_sheets(src: SourceFile) -> tuple[list[Drawing], FailedSource | None]:
    """Sheets of one source, from cache when the index matches, else rendered and cached."""
    sid = source_id(src)
    root = drawings_dir()
    index_path = root / f"{sid}.index.json"
    fingerprint = {"settings": _settings(), "sha256": src.sha256}
    if index_path.exists():
        try:
            idx = json.loads(index_path.read_text())
            if idx.get("fingerprint") == fingerprint:
                if idx.get("failure"):
                    f = idx["failure"]
                    return [], FailedSource(sid, src.member, f["reason"], f["detail"])
                sheets = [Drawing.from_sidecar(root / f"{i}.json") for i in idx["sheets"]]
                if all(s.image_path.exists() for s in sheets):
                    return sheets, None
        except (OSError, KeyError, TypeError, ValueError) as exc:
            logger.warning("corpus: re-rendering %s, unreadable cache (%s)", src.member, exc)

    for stale in list(root.glob(f"{sid}-p*.png")) + list(root.glob(f"{sid}-p*.json")):
        stale.unlink(missing_ok=True)  # sheets of an older layout
    try:
        sheets = _render_source(src, sid, root)
        failure = None
        if not sheets:
            raise RenderError("no_legible_text", f"no sheet has a text of cap height >= {MIN_GLYPH_PX} px")
    except RenderError as exc:
        sheets = []
        failure = FailedSource(sid, src.member, exc.reason, exc.detail)
    index = {
        "fingerprint": fingerprint,
        "member": src.member,
        "sheets": [s.drawing_id for s in sheets],
        "failure": None if failure is None else {"reason": failure.reason, "detail": failure.detail},
    }
    atomic_write_text(index_path, json.dumps(index, indent=1, ensure_ascii=False))
    return sheets, failure


def _render_source(src: SourceFile, sid: str, root: Path) -> list[Drawing]:
    import cv2

    scene = load_scene(src.path)
    if scene.cap_heights().size == 0:
        raise RenderError("no_text_drawn", "the renderer drew no text")
    target = target_cap_px(sid)
    sheets: list[Drawing] = []
    for window, scale in _sheet_windows(scene, target):
        rendered = scene.render(scale, window)
        if not rendered.texts:
            continue
        drawing_id = f"{sid}-p{len(sheets)}"
        ok, png = cv2.imencode(".png", rendered.image)
        if not ok:
            raise RenderError("render_error", f"PNG encoding failed for {drawing_id}")
        keys = [_text_key(t, rendered.scale, rendered.window) for t in rendered.texts]
        h, w = rendered.image.shape[:2]
        sidecar = {
            "drawing_id": drawing_id,
            "source_id": sid,
            "width": w,
            "height": h,
            "scale": rendered.scale,
            "window": list(rendered.window),
            "texts": [{**t.to_json(), "key": k} for t, k in zip(rendered.texts, keys)],
            "dropped": rendered.drop_counts,
            "dropped_texts": [{**d.item.to_json(), "reason": d.reason} for d in rendered.dropped],
            "provenance": _provenance(src),
            "render": {**_settings(), "target_cap_px": target},
        }
        png_path = root / f"{drawing_id}.png"
        json_path = root / f"{drawing_id}.json"
        atomic_write_bytes(png_path, png.tobytes())
        atomic_write_text(json_path, json.dumps(sidecar, ensure_ascii=False, indent=1))
        sheets.append(Drawing.from_sidecar(json_path))
    return sheets


def target_cap_px(sid: str) -> float:
    """Rendered cap height (px) of the small text of a source: ``TARGET_CAP_PX`` ± 4 px, chosen by
    the source id (deterministic), so the corpus shows a spread of text sizes."""
    return TARGET_CAP_PX + (int(sid[:8], 16) % 9) - 4.0


def _text_key(t: TextItem, scale: float, window: tuple[float, float, float, float]) -> str:
    """Same CAD text on two sheets → same key: handle, label and drawing-unit centre."""
    cx, cy = t.polygon.mean(axis=0)
    ux = window[0] + cx / scale
    uy = window[3] - cy / scale
    q = max(t.cap_height_px / scale, 1e-9)  # quantise the centre to a cap height
    raw = f"{t.handle}|{t.text}|{round(ux / q)}|{round(uy / q)}"
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:16]


def _sheet_windows(scene: DrawingScene, target_px: float) -> list[tuple[tuple[float, float, float, float], float]]:
    """``(window, scale)`` of each sheet: clusters of text, each at its own scale, tiled to
    ``MAX_SIDE_PX``.

    Clusters are connected components of an occupancy grid marked by the boxes of the non-empty
    texts (cells of ``CELL_PX`` px at the drawing-wide scale, dilated by ``CLUSTER_GAP_CELLS``), so
    a framed sheet with a few far-apart views gives one sheet per view instead of one mostly empty
    page. A cluster's window is the box of its texts plus ``CONTEXT_PX`` of surrounding drawing; its
    scale renders the 10th percentile of its cap heights ``target_px`` high (views drawn at
    different scales in one modelspace each get legible text), lowered if the cluster would need
    more than ``MAX_TILES`` tiles. Order: clusters top-to-bottom then left-to-right, tiles row-major
    from the top-left.
    """
    import cv2

    texts = [t for t in scene.texts if t.text.strip()]
    if not texts:
        return []
    lo = np.array([t.outline.min(axis=0) for t in texts])
    hi = np.array([t.outline.max(axis=0) for t in texts])
    heights = np.array([t.cap_height for t in texts])
    x0, y0 = lo.min(axis=0)
    x1, y1 = hi.max(axis=0)
    base_scale = target_px / float(np.percentile(heights, 25))
    cell = CELL_PX / base_scale
    pad = CLUSTER_GAP_CELLS
    nx = max(1, math.ceil((x1 - x0) / cell))
    ny = max(1, math.ceil((y1 - y0) / cell))
    while nx * ny > 16_000_000:  # absurd extents (stray far-away text): coarser grid
        cell *= 2
        nx = max(1, math.ceil((x1 - x0) / cell))
        ny = max(1, math.ceil((y1 - y0) / cell))
    grid = np.zeros((ny + 2 * pad, nx + 2 * pad), dtype=np.uint8)
    # grid cell (row, col) covers x0 + (col - pad) * cell, y1 - (row - pad) * cell (row 0 = top)
    c0 = pad + np.clip(((lo[:, 0] - x0) / cell).astype(np.int64), 0, nx - 1)
    c1 = pad + np.clip(((hi[:, 0] - x0) / cell).astype(np.int64), 0, nx - 1)
    r0 = pad + np.clip(((y1 - hi[:, 1]) / cell).astype(np.int64), 0, ny - 1)
    r1 = pad + np.clip(((y1 - lo[:, 1]) / cell).astype(np.int64), 0, ny - 1)
    for a, b, c, d in zip(r0, r1, c0, c1):
        grid[a : b + 1, c : d + 1] = 1
    grid = cv2.dilate(grid, np.ones((2 * pad + 1, 2 * pad + 1), np.uint8))
    _, labels = cv2.connectedComponents(grid, connectivity=8)
    member = labels[r0, c0]  # the component of each text (its top-left cell is marked)
    clusters = []
    for comp in np.unique(member):
        idx = np.flatnonzero(member == comp)
        box = (lo[idx, 0].min(), lo[idx, 1].min(), hi[idx, 0].max(), hi[idx, 1].max())
        clusters.append((box, heights[idx]))
    clusters.sort(key=lambda c: (-c[0][3], c[0][0]))  # top edge first, then left edge
    out = []
    for (bx0, by0, bx1, by1), h in clusters:
        scale = target_px / float(np.percentile(h, 10))
        while True:
            margin = CONTEXT_PX / scale
            window = (bx0 - margin, by0 - margin, bx1 + margin, by1 + margin)
            if _tile_count(window, scale) <= MAX_TILES:
                break
            scale *= 0.8
        out.extend((tile, scale) for tile in _tiles(window, scale))
    return out


def _tile_count(window: tuple[float, float, float, float], scale: float) -> int:
    return len(_tiles(window, scale))


def _tiles(window: tuple[float, float, float, float], scale: float) -> list[tuple[float, float, float, float]]:
    x0, y0, x1, y1 = window
    side = MAX_SIDE_PX / scale
    overlap = TILE_OVERLAP_PX / scale

    def spans(lo: float, hi: float) -> list[tuple[float, float]]:
        length = hi - lo
        if length <= side:
            return [(lo, hi)]
        n = math.ceil((length - overlap) / (side - overlap))
        step = (length - side) / (n - 1)
        return [(lo + i * step, lo + i * step + side) for i in range(n)]

    xs = spans(x0, x1)
    ys = spans(y0, y1)[::-1]  # top row first
    return [(a, c, b, d) for (c, d) in ys for (a, b) in xs]


def line_crops(drawings: Sequence[Drawing], *, unique: bool = True) -> list[tuple[str, TextItem, np.ndarray]]:
    """Recognition crops of the corpus lines: ``(drawing_id, text_item, crop uint8 BGR [h, w, 3])``
    cut with ``crop.crop_line`` (PaddleOCR's ``get_rotate_crop_image`` warp) from the sheet images.
    The polygons are in reading order, so every crop is upright text; PaddleOCR's "rotate tall
    crops" rule is not applied (it would turn lone characters sideways).

    Args:
        drawings: sheets (e.g. from ``build_corpus``).
        unique: keep only the first sheet's copy of a text shown whole on several sheets.

    Raises:
        FileNotFoundError: a sheet PNG is missing.
    """
    from ocrloop.data.crop import crop_line

    out = []
    seen: set[tuple[str, str]] = set()
    for d in drawings:
        image = None
        for key, item in zip(d.text_keys, d.texts):
            if unique:
                if (d.source_id, key) in seen:
                    continue
                seen.add((d.source_id, key))
            if image is None:
                image = d.load_image()
            out.append((d.drawing_id, item, crop_line(image, item.polygon, rotate_tall=False)))
    return out
