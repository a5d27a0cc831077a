"""Render a DXF drawing to a raster image together with every visible text line and its box.

Rendering uses ezdxf's drawing add-on (https://ezdxf.mozman.at/docs/addons/drawing.html): the
``Frontend`` decomposes entities (INSERT block references, DIMENSION blocks, ACAD_TABLE, MTEXT ...)
into primitives, a ``Recorder`` backend keeps them, and a matplotlib Agg canvas rasterises them
headlessly. Text is captured *inside* that pipeline: every call of
``RenderPipeline2d.draw_text`` (one call per line of TEXT/ATTRIB/simple MTEXT, one per word of
MTEXT with inline formatting) is recorded with the exact string the renderer draws, after
``%%c``/``%%d``/``%%p``/``\\P``/``\\A1;``/``{\\F...;}`` have been resolved by ezdxf, and with the glyph
outlines that the backend received. Labels therefore equal what is visible and boxes are the
extents of the rendered glyphs.

Coordinates: drawing units (WCS x right, y up) map to pixels by
``px = (x - window.x0) * scale``, ``py = (window.y1 - y) * scale`` (image y points down).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

logger = logging.getLogger(__name__)

MIN_GLYPH_PX = 10.0
"""Cap height (px) below which a text is not legible at the render scale and is dropped."""

DEFAULT_SHX_FONT = "osifont.ttf"
"""Substitute for SHX fonts (AutoCAD stroke fonts such as txt.shx/isocp.shx are not distributable
and not installed). osifont (Debian ``fonts-osifont``, GPL-3 with font exception) follows the ISO
3098 lettering that isocp.shx implements; ezdxf would otherwise fall back to DejaVu Sans Condensed."""

SYMBOLS = frozenset("∅⌀ØøΦφ°±×%#&@$€£§²³µΩΔ")
"""Non-alphanumeric characters that make a string text rather than a drawn rule: a label needs at
least one alphanumeric character or one of these (``-----`` table rules, lone ``-``/``.``/``(`` from
word-wrapped MTEXT are dropped as ``punctuation_only``)."""

DPI = 100.0
"""Matplotlib canvas dpi; DXF lineweights (mm) become ``mm / 25.4 * DPI`` px wide (min 1 px)."""


class RenderError(ValueError):
    """A DXF that cannot be parsed or has nothing to render; ``reason`` is a short machine key."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class TextItem:
    """One rendered line of text.

    Attributes:
        text: the string as drawn (control codes resolved, whitespace runs collapsed to one space,
            stripped).
        polygon: float32 ``[4, 2]`` pixel corners (x, y) tight around the rendered glyphs, in
            reading order: top-left, top-right, bottom-right, bottom-left *of the text* (for text
            rotated by 90° the first corner is at the bottom-left of the image box).
        angle_deg: baseline direction in the image, degrees counter-clockwise from +x
            (0 = normal left-to-right, 90 = reading bottom-to-top), in ``(-180, 180]``.
        entity_type: ``TEXT``, ``MTEXT``, ``ATTRIB`` or ``DIMENSION`` (measurement/override text of
            a dimension block).
        handle: DXF handle of the top-level entity that produced it (the INSERT, DIMENSION or
            ACAD_TABLE for block content).
        cap_height_px: rendered cap height (px).
    """

    text: str
    polygon: np.ndarray
    angle_deg: float
    entity_type: str
    handle: str
    cap_height_px: float

    def to_json(self) -> dict:
        """JSON-ready dict (polygon as ``[[x, y] * 4]`` rounded to 0.01 px)."""
        return {
            "text": self.text,
            "polygon": [[round(float(x), 2), round(float(y), 2)] for x, y in self.polygon],
            "angle_deg": round(self.angle_deg, 3),
            "entity_type": self.entity_type,
            "handle": self.handle,
            "cap_height_px": round(self.cap_height_px, 2),
        }

    @classmethod
    def from_json(cls, data: dict) -> "TextItem":
        """Inverse of ``to_json`` (extra keys such as ``key`` are ignored)."""
        return cls(
            text=data["text"],
            polygon=np.asarray(data["polygon"], dtype=np.float32).reshape(4, 2),
            angle_deg=float(data["angle_deg"]),
            entity_type=data["entity_type"],
            handle=data["handle"],
            cap_height_px=float(data["cap_height_px"]),
        )


@dataclasses.dataclass(frozen=True)
class DroppedText:
    """A text that is visible (or would be) but is not a usable line label, with the reason:
    ``too_small`` (cap height < ``MIN_GLYPH_PX``), ``empty``, ``punctuation_only`` (no
    alphanumeric character nor a ``SYMBOLS`` member: the dash rules of schedules),
    ``outside_image`` (box not entirely inside the image), ``overlaps_other_text``, ``duplicate``
    (same string drawn twice at the same place: one copy kept), ``glyph_missing`` (font lacks a
    character, the renderer would draw a placeholder), ``mirrored``, ``occluded`` (the box between
    the glyphs is mostly ink, e.g. text on a solid fill). Detection training can use these boxes as
    "don't care" regions."""

    item: TextItem
    reason: str


@dataclasses.dataclass
class RenderedDrawing:
    """A raster of (a window of) a drawing and its text lines.

    Attributes:
        image: uint8 BGR ``[H, W, 3]``, black drawing on white.
        texts: usable text lines, in drawing (redraw) order.
        scale: pixels per drawing unit.
        window: ``(x0, y0, x1, y1)`` drawing units covered by the image.
        dropped: texts left out, with reasons.
        drop_counts: ``{reason: count}`` over ``dropped``.
    """

    image: np.ndarray
    texts: list[TextItem]
    scale: float
    window: tuple[float, float, float, float]
    dropped: list[DroppedText]

    @property
    def drop_counts(self) -> dict[str, int]:
        """``{reason: count}`` of ``dropped``, sorted by reason."""
        return dict(sorted(Counter(d.reason for d in self.dropped).items()))


@dataclasses.dataclass(frozen=True)
class SceneText:
    """A text line in drawing units, before rasterisation (see ``DrawingScene``).

    ``glyphs``: per glyph path a float64 ``[N, 2]`` array of outline control points (drawing
    units); ``outline``: all of them stacked; ``u``/``v``: unit baseline direction and the up
    direction perpendicular to it; ``baseline``/``cap_top``: coordinates along ``v`` of the
    baseline and of the cap line; ``cap_height``: drawing units; ``missing``: characters the font
    lacks."""

    text: str
    glyphs: list
    u: np.ndarray
    v: np.ndarray
    baseline: float
    cap_top: float
    cap_height: float
    entity_type: str
    handle: str
    mirrored: bool
    missing: str

    @property
    def outline(self) -> np.ndarray:
        return np.concatenate(self.glyphs, axis=0)


@dataclasses.dataclass
class DrawingScene:
    """A parsed and recorded DXF layout, ready to be rasterised at any scale/window.

    Attributes:
        path: source file.
        extents: ``(x0, y0, x1, y1)`` drawing units of everything drawn.
        texts: every text line the renderer drew (unfiltered), in drawing order.
        player: ezdxf ``Player`` with the recorded primitives.
        audit_errors: number of errors ``ezdxf.recover`` fixed (0 when the file read cleanly).
    """

    path: Path
    extents: tuple[float, float, float, float]
    texts: list[SceneText]
    player: object
    audit_errors: int = 0
    _boxes: np.ndarray | None = dataclasses.field(default=None, init=False, repr=False)

    def record_boxes(self) -> np.ndarray:
        """float64 ``[N, 4]`` (x0, y0, x1, y1) drawing-unit boxes of the recorded primitives."""
        if self._boxes is None:
            boxes = np.full((len(self.player.records), 4), np.nan)
            for i, r in enumerate(self.player.records):
                b = r.bbox()
                if b.has_data:
                    boxes[i] = (b.extmin.x, b.extmin.y, b.extmax.x, b.extmax.y)
            self._boxes = boxes
        return self._boxes

    def _player_for(self, window: tuple[float, float, float, float]):
        """A Player holding only the records whose box meets ``window`` (matplotlib would clip the
        others anyway; skipping them keeps tiles of large sheets fast)."""
        from ezdxf.addons.drawing.recorder import Player

        x0, y0, x1, y1 = window
        b = self.record_boxes()
        with np.errstate(invalid="ignore"):
            hit = (b[:, 0] <= x1) & (b[:, 2] >= x0) & (b[:, 1] <= y1) & (b[:, 3] >= y0)
        sub = Player()
        sub.config = self.player.config
        sub.background = self.player.background
        sub.properties = self.player.properties
        sub.records = [r for r, h in zip(self.player.records, hit) if h]
        sub.has_shared_recordings = True
        return sub

    def cap_heights(self) -> np.ndarray:
        """float64 ``[N]`` cap heights (drawing units) of the non-empty texts."""
        return np.array([t.cap_height for t in self.texts if t.text], dtype=np.float64)

    def render(
        self,
        scale: float,
        window: tuple[float, float, float, float] | None = None,
        *,
        min_glyph_px: float = MIN_GLYPH_PX,
    ) -> RenderedDrawing:
        """Rasterise ``window`` (drawing units, default: the extents) at ``scale`` px/unit.

        Raises:
            ValueError: non-positive scale or an empty window, or an image side over 20,000 px.
        """
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        x0, y0, x1, y1 = window if window is not None else self.extents
        width = int(math.ceil((x1 - x0) * scale))
        height = int(math.ceil((y1 - y0) * scale))
        if width <= 0 or height <= 0:
            raise ValueError(f"empty window {window}")
        if max(width, height) > 20_000:
            raise ValueError(f"image of {width}x{height} px is too large; lower the scale")
        # Snap the window to whole pixels so the mapping is exact.
        x1 = x0 + width / scale
        y1 = y0 + height / scale
        image = _rasterise(self._player_for((x0, y0, x1, y1)), (x0, y0, x1, y1), width, height)
        kept, dropped = _place_texts(self.texts, image, scale, (x0, y0, x1, y1), min_glyph_px)
        return RenderedDrawing(image=image, texts=kept, scale=scale, window=(x0, y0, x1, y1), dropped=dropped)


def load_scene(path: str | os.PathLike[str], *, shx_font: str = DEFAULT_SHX_FONT) -> DrawingScene:
    """Parse ``path`` and record its modelspace through ezdxf's drawing frontend.

    The file is read with ``ezdxf.readfile`` and, if that fails with a structure error, with
    ``ezdxf.recover.readfile`` (which repairs what it can). Text styles whose font is an SHX font or
    not installed are switched, in memory, to ``shx_font``.

    Raises:
        RenderError: ``parse_error`` (unreadable even by recover), ``empty`` (nothing drawn).
    """
    import ezdxf
    from ezdxf import recover
    from ezdxf.addons.drawing.config import (
        BackgroundPolicy,
        ColorPolicy,
        Configuration,
        ProxyGraphicPolicy,
    )
    from ezdxf.addons.drawing.frontend import UniversalFrontend
    from ezdxf.addons.drawing.properties import RenderContext
    from ezdxf.addons.drawing.recorder import Recorder

    path = Path(path)
    audit_errors = 0
    try:
        doc = ezdxf.readfile(path)
    except (ezdxf.DXFStructureError, ezdxf.DXFError, UnicodeDecodeError, ValueError) as first:
        try:
            doc, auditor = recover.readfile(path)
        except Exception as exc:  # recover raises a variety of errors on garbage
            raise RenderError("parse_error", f"{type(first).__name__}: {first}; recover: {exc}") from exc
        audit_errors = len(auditor.errors)
    except OSError as exc:
        raise RenderError("parse_error", str(exc)) from exc

    _substitute_shx_fonts(doc, shx_font)
    msp = doc.modelspace()
    ctx = RenderContext(doc)
    recorder = Recorder()
    pipeline = _capture_pipeline(recorder)
    config = Configuration(
        color_policy=ColorPolicy.BLACK,
        background_policy=BackgroundPolicy.WHITE,
        proxy_graphic_policy=ProxyGraphicPolicy.SHOW,
    )
    frontend = UniversalFrontend(ctx, pipeline, config=config)
    frontend.log_message = lambda message: logger.debug("ezdxf: %s", message)  # type: ignore[method-assign]
    try:
        frontend.draw_layout(msp, finalize=True)
    except Exception as exc:  # a renderer crash on one file must not stop a corpus build
        raise RenderError("render_error", f"{type(exc).__name__}: {exc}") from exc
    player = recorder.player()
    bbox = player.bbox()
    if not bbox.has_data or bbox.size.x <= 0 or bbox.size.y <= 0:
        raise RenderError("empty", "modelspace draws nothing")
    extents = [bbox.extmin.x, bbox.extmin.y, bbox.extmax.x, bbox.extmax.y]
    texts = pipeline.finish_texts()
    for t in texts:  # text boxes reach the cap line, which may lie above every glyph ("mass")
        corners = _corners(t)
        extents[0] = min(extents[0], float(corners[:, 0].min()))
        extents[1] = min(extents[1], float(corners[:, 1].min()))
        extents[2] = max(extents[2], float(corners[:, 0].max()))
        extents[3] = max(extents[3], float(corners[:, 1].max()))
    return DrawingScene(path=path, extents=tuple(extents), texts=texts, player=player, audit_errors=audit_errors)


def render_dxf(
    path: str | os.PathLike[str],
    *,
    max_side_px: int = 2000,
    scale: float | None = None,
    window: tuple[float, float, float, float] | None = None,
    min_glyph_px: float = MIN_GLYPH_PX,
    shx_font: str = DEFAULT_SHX_FONT,
) -> RenderedDrawing:
    """Render the modelspace of a DXF file and return the image with its text lines.

    Args:
        path: DXF file.
        max_side_px: when ``scale`` is None, the whole extents are fitted into this many pixels
            on the longer side.
        scale: px per drawing unit (overrides ``max_side_px``).
        window: ``(x0, y0, x1, y1)`` in drawing units (default: the drawing extents).
        min_glyph_px: texts with a smaller cap height (px) are dropped as ``too_small``.
        shx_font: substitute font for SHX/uninstalled fonts (see ``DEFAULT_SHX_FONT``).

    Returns:
        ``RenderedDrawing`` (image uint8 BGR ``[H, W, 3]``, texts with float32 ``[4, 2]`` px polygons).

    Raises:
        RenderError: the file cannot be parsed or draws nothing.
    """
    scene = load_scene(path, shx_font=shx_font)
    x0, y0, x1, y1 = window if window is not None else scene.extents
    if scale is None:
        scale = max_side_px / max(x1 - x0, y1 - y0)
    return scene.render(scale, (x0, y0, x1, y1), min_glyph_px=min_glyph_px)


# --------------------------------------------------------------------------------------------
# Internals


def _substitute_shx_fonts(doc, shx_font: str) -> None:
    from ezdxf.fonts import fonts

    for style in doc.styles:
        font = (style.dxf.get("font", "") or "").strip()
        ttf = fonts.map_shx_to_ttf(font) if font else ""
        if not font or fonts.is_shx_font_name(font) or not fonts.font_manager.has_font(ttf):
            style.dxf.font = shx_font


def _visible_string(text: str, dxftype: str) -> str:
    from ezdxf.addons.drawing.pipeline import prepare_string_for_rendering

    return prepare_string_for_rendering(text, dxftype)


@dataclasses.dataclass
class _Fragment:
    text: str
    glyphs: list  # per glyph path: float64 [N, 2] control points, drawing units
    origin: np.ndarray  # [2]
    ux: np.ndarray  # [2] transform x axis (scaled)
    uy: np.ndarray  # [2] transform y axis (scaled)
    advance: float  # drawing units along the baseline
    space: float  # advance of one blank, drawing units
    cap_height: float  # drawing units
    entity_type: str
    handle: str
    owner: int  # serial of the entity that produced it (MTEXT words are grouped by it)
    is_word: bool  # produced by the complex-MTEXT renderer (one call per word)
    missing: str


def _make_capture_pipeline_class():
    from ezdxf.addons.drawing.pipeline import RenderPipeline2d
    from ezdxf.math import Matrix44

    class TextCapturePipeline(RenderPipeline2d):
        """RenderPipeline2d that remembers, for each ``draw_text`` call, the visible string and
        the glyph primitives the backend (a Recorder) stored for it."""

        def __init__(self, backend):
            super().__init__(backend)
            self._stack: list = []  # entities being drawn, outermost first
            self._serials: list[int] = []  # a unique number per entered entity (ids get reused)
            self._entered = 0
            self._fragments: list[_Fragment] = []

        def enter_entity(self, entity, properties) -> None:
            self._stack.append(entity)
            self._entered += 1
            self._serials.append(self._entered)
            super().enter_entity(entity, properties)

        def exit_entity(self, entity) -> None:
            if self._stack:
                self._stack.pop()
                self._serials.pop()
            super().exit_entity(entity)

        def draw_text(self, text, transform, properties, cap_height, dxftype="TEXT") -> None:
            records = self.backend.records
            n0 = len(records)
            super().draw_text(text, transform, properties, cap_height, dxftype)
            new = records[n0:]
            if not new:
                return
            for r in new:
                r.ocrloop_text = True  # glyph fills: rasterised with the font's own winding
            pts = [r_pts for r in new for r_pts in _record_points(r)]
            if not pts:
                return
            visible = _visible_string(text, dxftype)
            font_face = properties.font if properties.font is not None else self.default_font_face
            engine = self.text_engine
            font = engine.get_font(font_face)
            cmap = getattr(getattr(font, "glyph_cache", None), "cmap", None)
            # blank advance (get_text_line_width ignores blanks); fonts are made at cap height 1
            space = float(font.space_width()) * float(cap_height)
            # A run of two or more blanks is a visible gap: a text detector would cut the line
            # there, so each segment becomes its own item, boxed by its own glyphs (laid out by
            # the same text engine at the same advance the renderer used).
            segments = [(m.start(), m.group()) for m in re.finditer(r"\S+(?: \S+)*", visible)]
            if len(segments) > 1:
                pieces = []
                for start, seg in segments:
                    dx = float(engine.get_text_line_width(visible[:start], font_face, cap_height)) if start else 0.0
                    m = Matrix44.translate(dx, 0, 0) @ transform
                    paths = engine.get_text_glyph_paths(seg, font_face, cap_height)
                    seg_pts = [np.asarray(p.np_vertices(), dtype=np.float64)[:, :2] for p in paths if len(p)]
                    if not seg_pts:
                        continue
                    pieces.append((seg, [_apply_matrix(m, g) for g in seg_pts], m))
            else:
                pieces = [(visible, pts, transform)]
            top = self._stack[0] if self._stack else None
            owner = self._stack[-1] if self._stack else None
            types = [e.dxftype() for e in self._stack]
            if "DIMENSION" in types or "ARC_DIMENSION" in types or "LARGE_RADIAL_DIMENSION" in types:
                entity_type = "DIMENSION"
            elif owner is not None and owner.dxftype() in ("TEXT", "MTEXT", "ATTRIB", "ATTDEF"):
                entity_type = owner.dxftype()
            else:
                entity_type = dxftype
            handle = ""
            for ent in self._stack:
                if not ent.is_virtual:
                    handle = ent.dxf.handle or ""
                    break
            if not handle and top is not None:
                handle = top.dxf.get("handle", "") or ""
            is_word = owner is not None and owner.dxftype() == "MTEXT" and dxftype == "TEXT"
            for seg, glyphs, m in pieces:
                missing = ""
                if cmap is not None:
                    missing = "".join(sorted({c for c in seg if not c.isspace() and ord(c) not in cmap}))
                self._fragments.append(
                    _Fragment(
                        text=seg,
                        glyphs=glyphs,
                        origin=np.array([m.origin.x, m.origin.y]),
                        ux=np.array([m.ux.x, m.ux.y]),
                        uy=np.array([m.uy.x, m.uy.y]),
                        advance=float(engine.get_text_line_width(seg, font_face, cap_height)) * _axis_len(m),
                        space=space * _axis_len(m),
                        cap_height=float(cap_height) * float(math.hypot(m.uy.x, m.uy.y)),
                        entity_type=entity_type,
                        handle=handle,
                        owner=self._serials[-1] if self._serials else 0,
                        is_word=is_word,
                        missing=missing,
                    )
                )

        def finish_texts(self) -> list[SceneText]:
            return _fragments_to_lines(self._fragments)

    return TextCapturePipeline


_PIPELINE_CLASS = None


def _capture_pipeline(backend):
    """A ``TextCapturePipeline`` (class built on first use: ezdxf is imported lazily)."""
    global _PIPELINE_CLASS
    if _PIPELINE_CLASS is None:
        _PIPELINE_CLASS = _make_capture_pipeline_class()
    return _PIPELINE_CLASS(backend)


def _record_points(record) -> list[np.ndarray]:
    """Control points (drawing units) of a Recorder record: float64 ``[N, 2]`` arrays."""
    from ezdxf.addons.drawing import recorder as rec

    out = []
    if isinstance(record, rec.FilledPathsRecord):
        for p in record.paths:
            v = p.np_vertices()
            if len(v):
                out.append(np.asarray(v, dtype=np.float64)[:, :2])
    elif isinstance(record, rec.PathRecord):
        v = record.path.np_vertices()
        if len(v):
            out.append(np.asarray(v, dtype=np.float64)[:, :2])
    elif isinstance(record, rec.PointsRecord):
        v = record.points.np_vertices()
        if len(v):
            out.append(np.asarray(v, dtype=np.float64)[:, :2])
    return out


def _apply_matrix(m, pts: np.ndarray) -> np.ndarray:
    """Apply an ezdxf ``Matrix44`` (row-vector convention) to float64 ``[N, 2]`` points."""
    a = np.asarray(m.get_2d_transformation(), dtype=np.float64).reshape(3, 3)
    return pts @ a[:2, :2] + a[2, :2]


def _axis_len(m) -> float:
    """Length of the transformed unit x vector (the transform's scale along the baseline)."""
    return float(math.hypot(m.ux.x, m.ux.y))


def _unit_frame(ux: np.ndarray, uy: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    u = ux / (np.linalg.norm(ux) or 1.0)
    v = np.array([-u[1], u[0]])  # u rotated +90°: "up" for unmirrored text
    mirrored = float(np.dot(v, uy)) < 0  # text y axis points "down": mirrored/upside-down text
    return u, v, mirrored


def _fragments_to_lines(fragments: Sequence[_Fragment]) -> list[SceneText]:
    """One SceneText per ``draw_text`` call, except complex-MTEXT words, which are joined per line
    (same owner, same baseline) with one space where the layout left a gap."""
    lines: list[SceneText] = []
    i = 0
    n = len(fragments)
    while i < n:
        frag = fragments[i]
        if not frag.is_word:
            u, v, mirrored = _unit_frame(frag.ux, frag.uy)
            base, cap = _baseline_cap(frag, v)
            lines.append(
                SceneText(
                    text=frag.text,
                    glyphs=frag.glyphs,
                    u=u,
                    v=v,
                    baseline=base,
                    cap_top=cap,
                    cap_height=frag.cap_height,
                    entity_type=frag.entity_type,
                    handle=frag.handle,
                    mirrored=mirrored,
                    missing=frag.missing,
                )
            )
            i += 1
            continue
        # collect the consecutive words of this MTEXT entity
        j = i
        while j < n and fragments[j].is_word and fragments[j].owner == frag.owner:
            j += 1
        words = fragments[i:j]
        i = j
        u, v, mirrored = _unit_frame(words[0].ux, words[0].uy)
        groups: list[list[_Fragment]] = []
        for w in words:
            b = float(np.dot(w.origin, v))
            for g in groups:
                g0 = g[0]
                if abs(float(np.dot(g0.origin, v)) - b) < 0.3 * max(g0.cap_height, w.cap_height):
                    g.append(w)
                    break
            else:
                groups.append([w])
        runs: list[list[_Fragment]] = []
        for g in groups:
            g.sort(key=lambda w: float(np.dot(w.origin, u)))
            run = [g[0]]
            for prev, cur in zip(g, g[1:]):
                gap = float(np.dot(cur.origin, u)) - (float(np.dot(prev.origin, u)) + prev.advance)
                if gap > 1.5 * max(prev.space, cur.space):  # two blanks or more: separate items
                    runs.append(run)
                    run = []
                run.append(cur)
            runs.append(run)
        for g in runs:
            parts = [g[0].text]
            for prev, cur in zip(g, g[1:]):
                gap = float(np.dot(cur.origin, u)) - (float(np.dot(prev.origin, u)) + prev.advance)
                parts.append(" " if gap > 0.5 * max(prev.space, cur.space) else "")
                parts.append(cur.text)
            levels = [_baseline_cap(w, v) for w in g]
            lines.append(
                SceneText(
                    text="".join(parts),
                    glyphs=[p for w in g for p in w.glyphs],
                    u=u,
                    v=v,
                    baseline=min(b for b, _ in levels),
                    cap_top=max(c for _, c in levels),
                    cap_height=max(w.cap_height for w in g),
                    entity_type=g[0].entity_type,
                    handle=g[0].handle,
                    mirrored=mirrored,
                    missing="".join(sorted({c for w in g for c in w.missing})),
                )
            )
    return lines


def _baseline_cap(frag: _Fragment, v: np.ndarray) -> tuple[float, float]:
    """Coordinates along ``v`` of a fragment's baseline (its transform origin) and cap line."""
    base = float(np.dot(frag.origin, v))
    uy_len = float(np.linalg.norm(frag.uy)) or 1.0
    return base, base + frag.cap_height * float(np.dot(frag.uy / uy_len, v))


def _rasterise(player, window: tuple[float, float, float, float], width: int, height: int) -> np.ndarray:
    """Replay recorded primitives on a matplotlib Agg canvas of exactly ``width × height`` px."""
    from ezdxf.addons.drawing.matplotlib import MatplotlibBackend
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ezdxf.addons.drawing.recorder import FilledPathsRecord
    from ezdxf.npshapes import to_matplotlib_path
    from matplotlib.patches import PathPatch

    text_fills = {
        id(r.paths)
        for r in player.records
        if isinstance(r, FilledPathsRecord) and getattr(r, "ocrloop_text", False)
    }

    class GlyphAwareBackend(MatplotlibBackend):
        """ezdxf's matplotlib backend re-orients every filled path to guess holes; that guess
        fills the counter of overlapping glyph contours (Ø, ∅ render as black discs). Glyph
        outlines from a font already carry the right winding, so text fills skip the guess and
        use matplotlib's nonzero rule directly; hatches keep ezdxf's handling."""

        def draw_filled_paths(self, paths, properties):
            if id(paths) not in text_fills:
                return super().draw_filled_paths(paths, properties)
            try:
                patch = PathPatch(
                    to_matplotlib_path(paths, detect_holes=False),
                    color=properties.color,
                    linewidth=0,
                    fill=True,
                    zorder=self._get_z(),
                )
            except ValueError as exc:
                logger.debug("ignored matplotlib error in glyph fill: %s", exc)
                return
            self.ax.add_patch(patch)

    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    backend = GlyphAwareBackend(ax, adjust_figure=False)
    player.replay(backend)
    x0, y0, x1, y1 = window
    ax.set_aspect("auto")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_facecolor("white")
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    if rgba.shape[0] != height or rgba.shape[1] != width:
        raise RuntimeError(f"canvas is {rgba.shape[1]}x{rgba.shape[0]}, expected {width}x{height}")
    bgr = np.ascontiguousarray(rgba[:, :, 2::-1])
    fig.clear()
    return bgr


def _corners(t: SceneText) -> np.ndarray:
    """Box of a text in drawing units, float64 ``[4, 2]``: TL TR BR BL in reading order.

    Along the baseline it is tight around the glyph outlines; across it spans the glyphs and at
    least baseline..cap line, so ``mass`` or ``---`` get the line height a labeller would draw
    rather than a sliver of x-height."""
    pu = t.outline @ t.u
    pv = t.outline @ t.v
    umin, umax = pu.min(), pu.max()
    vmin, vmax = min(pv.min(), t.baseline), max(pv.max(), t.cap_top)
    return np.array(
        [
            umin * t.u + vmax * t.v,
            umax * t.u + vmax * t.v,
            umax * t.u + vmin * t.v,
            umin * t.u + vmin * t.v,
        ]
    )


def _polygon_px(t: SceneText, scale: float, window: tuple[float, float, float, float]) -> np.ndarray:
    """``_corners`` in pixels of the window → float32 ``[4, 2]``."""
    x0, _, _, y1 = window
    corners = _corners(t)
    px = np.empty((4, 2), dtype=np.float64)
    px[:, 0] = (corners[:, 0] - x0) * scale
    px[:, 1] = (y1 - corners[:, 1]) * scale
    return px.astype(np.float32)


def _normalise_label(text: str) -> str:
    return " ".join(text.split())


def _place_texts(
    texts: Sequence[SceneText],
    image: np.ndarray,
    scale: float,
    window: tuple[float, float, float, float],
    min_glyph_px: float,
) -> tuple[list[TextItem], list[DroppedText]]:
    import cv2

    height, width = image.shape[:2]
    x0, _, _, y1 = window
    candidates: list[tuple[TextItem, SceneText]] = []
    dropped: list[DroppedText] = []
    for t in texts:
        poly = _polygon_px(t, scale, window)
        angle = math.degrees(math.atan2(t.u[1], t.u[0]))  # y up in drawing = up in the image
        angle = 180.0 if angle <= -180.0 else angle
        item = TextItem(
            text=_normalise_label(t.text),
            polygon=poly,
            angle_deg=float(angle),
            entity_type=t.entity_type,
            handle=t.handle,
            cap_height_px=float(t.cap_height * scale),
        )
        xs, ys = poly[:, 0], poly[:, 1]
        if xs.max() < 0 or ys.max() < 0 or xs.min() > width or ys.min() > height:
            continue  # entirely outside this window: not part of this image at all
        if not item.text:
            reason = "empty"
        elif not any(c.isalnum() or c in SYMBOLS for c in item.text):
            reason = "punctuation_only"
        elif xs.min() < -1 or ys.min() < -1 or xs.max() > width + 1 or ys.max() > height + 1:
            reason = "outside_image"
        elif item.cap_height_px < min_glyph_px:
            reason = "too_small"
        elif t.mirrored:
            reason = "mirrored"
        elif t.missing:
            reason = "glyph_missing"
        else:
            reason = ""
        if reason:
            dropped.append(DroppedText(item, reason))
        else:
            candidates.append((item, t))

    # duplicates and overlaps between the remaining boxes
    n = len(candidates)
    polys = [c.polygon for c, _ in candidates]
    boxes = [cv2.boundingRect(p.reshape(-1, 1, 2)) for p in polys]
    areas = [max(float(cv2.contourArea(p)), 1e-6) for p in polys]
    status = [""] * n
    for i in range(n):
        for j in range(i + 1, n):
            if status[j] == "duplicate":
                continue
            bx, by, bw, bh = boxes[i]
            cx, cy, cw, ch = boxes[j]
            if bx > cx + cw or cx > bx + bw or by > cy + ch or cy > by + bh:
                continue
            inter, _ = cv2.intersectConvexConvex(polys[i], polys[j])
            if inter <= 0:
                continue
            smaller = min(areas[i], areas[j])
            union = areas[i] + areas[j] - inter
            if candidates[i][0].text == candidates[j][0].text and inter / union > 0.8:
                status[j] = "duplicate"
            elif inter / smaller > 0.15:
                status[i] = status[i] or "overlaps_other_text"
                status[j] = status[j] or "overlaps_other_text"
    kept: list[TextItem] = []
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    for (item, t), st in zip(candidates, status):
        if not st:
            glyphs_px = [
                np.stack([(g[:, 0] - x0) * scale, (y1 - g[:, 1]) * scale], axis=1) for g in t.glyphs
            ]
            if _background_ink(gray, item.polygon, glyphs_px) > 0.5:
                st = "occluded"
        if st:
            dropped.append(DroppedText(item, st))
        else:
            kept.append(item)
    return kept, dropped


def _background_ink(gray: np.ndarray, polygon: np.ndarray, glyphs_px: Sequence[np.ndarray]) -> float:
    """Share of dark pixels in the text box *between* the glyphs (glyph hulls dilated by 2 px are
    excluded): near 1 when the text sits on a solid fill and cannot be read."""
    import cv2

    x, y, w, h = cv2.boundingRect(polygon.reshape(-1, 1, 2))
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, gray.shape[1]), min(y + h, gray.shape[0])
    if x1 <= x0 or y1 <= y0:
        return 0.0
    box = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    cv2.fillConvexPoly(box, np.round(polygon - [x0, y0]).astype(np.int32), 1)
    glyph = np.zeros_like(box)
    for g in glyphs_px:
        if len(g) >= 3:
            hull = cv2.convexHull(np.round(g - [x0, y0]).astype(np.int32))
            cv2.fillConvexPoly(glyph, hull, 1)
    glyph = cv2.dilate(glyph, np.ones((5, 5), np.uint8))
    background = box.astype(bool) & ~glyph.astype(bool)
    if background.sum() < 4:
        return 0.0
    return float((gray[y0:y1, x0:x1][background] < 128).mean())
