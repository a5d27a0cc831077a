"""Synthetic engineering drawings for index tests, benchmarks and demos.

Each drawing is a seeded mechanical part drawn the way CAD output looks: one to three orthographic
views (plates with holes and slots, stepped shafts, L-brackets, flanges with bolt circles), hidden and
centre lines (ISO 128 line types: continuous thick outlines, dashed hidden edges, dash-dot centre
lines), hatched sections, dimension lines with arrowheads and values (``Ø25``, ``R8``, ``120 ±0.1``),
leaders with item balloons and a notes block. ``add_frame`` puts a drawing on a sheet with an ISO 5457
style double border and an ISO 7200 style title block; ``scan`` adds scanner artefacts.

Text is drawn with OpenCV's Hershey simplex font (a single-stroke font, the same construction as
CAD/ISO 3098 lettering); ``Ø`` is drawn as a circle with a slash since Hershey lacks it.

All functions return uint8 BGR ``[H, W, 3]`` images on a white background.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

__all__ = ["Drawing", "drawing", "add_frame", "scan", "library"]

INK = (0, 0, 0)
FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclasses.dataclass
class Drawing:
    """A generated drawing: ``image`` uint8 BGR ``[H, W, 3]`` and the ``texts`` written on it."""

    image: np.ndarray
    texts: list[str]
    part: str


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, texts: list[str], *,
          center: bool = False, thickness: int = 1) -> None:
    """Draw ``text`` (``Ø`` handled) with its baseline at ``org`` (or centred on it)."""
    texts.append(text)
    plain = text.replace("Ø", "O")
    (tw, th), _ = cv2.getTextSize(plain, FONT, scale, thickness)
    x, y = org
    if center:
        x, y = int(x - tw / 2), int(y + th / 2)
    cv2.putText(img, plain, (x, y), FONT, scale, INK, thickness, cv2.LINE_AA)
    if "Ø" in text:
        # Overstrike the "O" stand-ins with a slash: ⌀ / Ø as drafted.
        for i, ch in enumerate(text):
            if ch == "Ø":
                (pw, _), _ = cv2.getTextSize(plain[:i], FONT, scale, thickness)
                (cw, _), _ = cv2.getTextSize("O", FONT, scale, thickness)
                x0 = x + pw
                cv2.line(img, (x0, y + 2), (x0 + cw, y - th - 2), INK, thickness, cv2.LINE_AA)


def _dashed(img: np.ndarray, p0, p1, pattern: tuple[int, ...], thickness: int = 1) -> None:
    """Polyline segment with a dash pattern (px on, px off, …): ISO 128 dashed / dash-dot lines."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    length = float(np.linalg.norm(p1 - p0))
    if length < 1:
        return
    direction = (p1 - p0) / length
    pos, i = 0.0, 0
    while pos < length:
        seg = pattern[i % len(pattern)]
        if i % 2 == 0:
            a = p0 + direction * pos
            b = p0 + direction * min(length, pos + seg)
            cv2.line(img, tuple(int(round(v)) for v in a), tuple(int(round(v)) for v in b), INK, thickness, cv2.LINE_AA)
        pos += seg
        i += 1


def _centre(img, p0, p1):
    _dashed(img, p0, p1, (18, 4, 3, 4))


def _hidden(img, p0, p1):
    _dashed(img, p0, p1, (8, 5), 1)


def _arrow(img: np.ndarray, tip, tail, size: int = 10) -> None:
    """Filled arrowhead at ``tip`` pointing away from ``tail``."""
    tip, tail = np.asarray(tip, float), np.asarray(tail, float)
    d = tip - tail
    n = np.linalg.norm(d)
    if n < 1:
        return
    d /= n
    perp = np.array([-d[1], d[0]])
    pts = np.array([tip, tip - d * size + perp * size * 0.3, tip - d * size - perp * size * 0.3])
    cv2.fillPoly(img, [np.round(pts).astype(np.int32)], INK, cv2.LINE_AA)


def _dim_linear(img, a, b, offset: int, label: str, texts: list[str], scale: float = 0.55) -> None:
    """Linear dimension between points ``a`` and ``b`` (horizontal if their y match closer than x),
    extension lines ``offset`` px out, arrows and the value centred above the dimension line."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    horizontal = abs(a[0] - b[0]) >= abs(a[1] - b[1])
    if horizontal:
        y = min(a[1], b[1]) - offset if offset > 0 else max(a[1], b[1]) - offset
        pa, pb = np.array([a[0], y]), np.array([b[0], y])
        for p, q in ((a, pa), (b, pb)):
            cv2.line(img, (int(p[0]), int(p[1] - 3 * np.sign(offset))), (int(q[0]), int(q[1] - 4 * np.sign(offset))), INK, 1)
        mid = ((pa + pb) / 2).astype(int)
        text_at = (int(mid[0]), int(mid[1] - 12))
    else:
        x = min(a[0], b[0]) - offset if offset > 0 else max(a[0], b[0]) - offset
        pa, pb = np.array([x, a[1]]), np.array([x, b[1]])
        for p, q in ((a, pa), (b, pb)):
            cv2.line(img, (int(p[0] - 3 * np.sign(offset)), int(p[1])), (int(q[0] - 4 * np.sign(offset)), int(q[1])), INK, 1)
        mid = ((pa + pb) / 2).astype(int)
        text_at = (int(mid[0] - 14 - 6 * len(label)), int(mid[1]))
    cv2.line(img, tuple(pa.astype(int)), tuple(pb.astype(int)), INK, 1, cv2.LINE_AA)
    _arrow(img, pa, pb)
    _arrow(img, pb, pa)
    _text(img, label, text_at, scale, texts, center=True)


def _leader(img, tip, elbow, label: str, texts: list[str]) -> None:
    cv2.line(img, tuple(int(v) for v in tip), tuple(int(v) for v in elbow), INK, 1, cv2.LINE_AA)
    _arrow(img, tip, elbow, 9)
    cv2.line(img, tuple(int(v) for v in elbow), (int(elbow[0]) + 12 * len(label) + 10, int(elbow[1])), INK, 1)
    _text(img, label, (int(elbow[0]) + 4, int(elbow[1]) - 5), 0.5, texts)


def _hatch(img, polygon: np.ndarray, spacing: int, angle_deg: float = 45.0) -> None:
    """Section hatching: parallel thin lines at ``angle_deg`` clipped to ``polygon`` (int32 [P, 2])."""
    x, y, w, h = cv2.boundingRect(polygon)
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(mask, [polygon], 255)
    lines = np.zeros_like(mask)
    t = math.tan(math.radians(angle_deg))
    for c in range(-h, w + h, spacing):
        cv2.line(lines, (x + c, y + h), (x + c + int(h / t), y), 255, 1, cv2.LINE_AA)
    sel = (lines > 0) & (mask > 0)
    img[sel] = np.minimum(img[sel], 255 - lines[sel][:, None])


def _plate(img, rng, cx, cy, s, texts, section: bool) -> None:
    w, h = int(s * rng.uniform(1.0, 1.6)), int(s * rng.uniform(0.6, 1.0))
    x0, y0 = cx - w // 2, cy - h // 2
    c = int(rng.integers(0, max(2, s // 8)))
    pts = np.array([[x0 + c, y0], [x0 + w - c, y0], [x0 + w, y0 + c], [x0 + w, y0 + h], [x0, y0 + h], [x0, y0 + c]], np.int32)
    if section:
        _hatch(img, pts, int(rng.integers(9, 16)))
    cv2.polylines(img, [pts], True, INK, 2, cv2.LINE_AA)
    n_holes = int(rng.integers(1, 5))
    d = int(rng.integers(max(6, s // 14), max(8, s // 7)))
    for i in range(n_holes):
        hx = x0 + int(w * (i + 1) / (n_holes + 1))
        hy = cy + int(rng.integers(-h // 6, h // 6 + 1))
        cv2.circle(img, (hx, hy), d, INK, 2, cv2.LINE_AA)
        _centre(img, (hx - d - 8, hy), (hx + d + 8, hy))
        _centre(img, (hx, hy - d - 8), (hx, hy + d + 8))
    if rng.random() < 0.5:  # slot
        sw, sh = int(w * 0.3), max(8, d)
        sx, sy = cx - sw // 2, y0 + h - sh - 12
        cv2.ellipse(img, (sx, sy + sh // 2), (sh // 2, sh // 2), 0, 90, 270, INK, 2, cv2.LINE_AA)
        cv2.ellipse(img, (sx + sw, sy + sh // 2), (sh // 2, sh // 2), 0, -90, 90, INK, 2, cv2.LINE_AA)
        cv2.line(img, (sx, sy), (sx + sw, sy), INK, 2, cv2.LINE_AA)
        cv2.line(img, (sx, sy + sh), (sx + sw, sy + sh), INK, 2, cv2.LINE_AA)
    _dim_linear(img, (x0, y0 + c), (x0 + w, y0 + c), 30 + c, f"{w // 2}", texts)
    _dim_linear(img, (x0, y0 + c), (x0, y0 + h), 30, f"{h // 2}", texts)
    _leader(img, (x0 + int(w / (n_holes + 1)) + int(d * 0.7), cy - int(d * 0.7)),
            (x0 + w + 20, y0 - 25), f"{n_holes}x Ø{d // 2 * 2} THRU", texts)


def _shaft(img, rng, cx, cy, s, texts, section: bool) -> None:
    steps = int(rng.integers(3, 6))
    lengths = rng.uniform(0.5, 1.3, steps)
    lengths = (lengths / lengths.sum() * s * rng.uniform(1.6, 2.2)).astype(int)
    radii = (rng.uniform(0.15, 0.45, steps) * s).astype(int)
    x = cx - int(lengths.sum()) // 2
    _centre(img, (x - 20, cy), (x + int(lengths.sum()) + 20, cy))
    xs = [x]
    for L, r in zip(lengths, radii):
        cv2.rectangle(img, (x, cy - r), (x + L, cy + r), INK, 2, cv2.LINE_AA)
        if section and rng.random() < 0.4:
            _hatch(img, np.array([[x, cy - r], [x + L, cy - r], [x + L, cy], [x, cy]], np.int32), 10)
        x += L
        xs.append(x)
    r = radii[int(np.argmax(radii))]
    i = int(np.argmax(radii))
    _dim_linear(img, (xs[i], cy + r), (xs[i], cy - r), -(lengths[i] + 30), f"Ø{2 * r // 4}", texts)
    # Overall length above the largest step: offset from the taller end so it clears every step.
    _dim_linear(img, (xs[0], cy - radii[0]), (xs[-1], cy - radii[-1]), 50 + int(r) - int(max(radii[0], radii[-1])),
                f"{int(lengths.sum()) // 3} ±0.1", texts)
    if rng.random() < 0.6:
        k = int(rng.integers(0, steps))
        kx = xs[k] + lengths[k] // 2
        kw = max(10, lengths[k] // 3)
        cv2.rectangle(img, (kx - kw // 2, cy - radii[k]), (kx + kw // 2, cy - radii[k] + max(4, radii[k] // 3)), INK, 1, cv2.LINE_AA)
        _leader(img, (kx, cy - radii[k] + 2), (kx + 30, cy - r - 60), f"KEYWAY {kw // 3}x{kw // 5 + 2}", texts)


def _bracket(img, rng, cx, cy, s, texts, section: bool) -> None:
    w, h = int(s * rng.uniform(1.0, 1.5)), int(s * rng.uniform(0.9, 1.4))
    t = int(s * rng.uniform(0.12, 0.25))
    x0, y0 = cx - w // 2, cy - h // 2
    pts = np.array([[x0, y0], [x0 + t, y0], [x0 + t, y0 + h - t], [x0 + w, y0 + h - t], [x0 + w, y0 + h], [x0, y0 + h]], np.int32)
    if section:
        _hatch(img, pts, int(rng.integers(8, 14)), 135.0)
    cv2.polylines(img, [pts], True, INK, 2, cv2.LINE_AA)
    fr = max(6, t // 2)
    cv2.ellipse(img, (x0 + t + fr, y0 + h - t - fr), (fr, fr), 0, 90, 180, INK, 1, cv2.LINE_AA)
    for k in range(int(rng.integers(1, 3))):
        hy = y0 + int(h * (k + 1) / 4)
        _hidden(img, (x0, hy - t // 4), (x0 + t, hy - t // 4))
        _hidden(img, (x0, hy + t // 4), (x0 + t, hy + t // 4))
        _centre(img, (x0 - 10, hy), (x0 + t + 10, hy))
    _dim_linear(img, (x0, y0 + h), (x0 + w, y0 + h), -30, f"{w // 2}", texts)
    _dim_linear(img, (x0, y0), (x0, y0 + h), 30, f"{h // 2}", texts)
    _dim_linear(img, (x0 + w, y0 + h - t), (x0 + w, y0 + h), -30, f"{t // 2}", texts)
    _leader(img, (x0 + t + int(fr * 0.3), y0 + h - t - int(fr * 0.3)), (x0 + t + 40, y0 + h // 3), f"R{fr // 2}", texts)


def _flange(img, rng, cx, cy, s, texts, section: bool) -> None:
    ro = int(s * rng.uniform(0.45, 0.65))
    ri = int(ro * rng.uniform(0.3, 0.5))
    rb = (ro + ri) // 2 + int(rng.integers(-4, 5))
    n = int(rng.choice([3, 4, 6, 8]))
    d = max(5, (ro - ri) // 6)
    cv2.circle(img, (cx, cy), ro, INK, 2, cv2.LINE_AA)
    cv2.circle(img, (cx, cy), ri, INK, 2, cv2.LINE_AA)
    cv2.circle(img, (cx, cy), rb, INK, 1, cv2.LINE_AA)
    phase = rng.uniform(0, math.pi)
    for k in range(n):
        a = phase + 2 * math.pi * k / n
        hx, hy = int(cx + rb * math.cos(a)), int(cy + rb * math.sin(a))
        cv2.circle(img, (hx, hy), d, INK, 2, cv2.LINE_AA)
    _centre(img, (cx - ro - 15, cy), (cx + ro + 15, cy))
    _centre(img, (cx, cy - ro - 15), (cx, cy + ro + 15))
    _dim_linear(img, (cx - ro, cy + ro), (cx + ro, cy + ro), -35, f"Ø{ro // 2 * 2}", texts)
    _leader(img, (int(cx + rb * math.cos(phase)) + d, int(cy + rb * math.sin(phase)) - d),
            (cx + ro + 10, cy - ro - 10), f"{n}x Ø{d * 2} EQ SP", texts)
    if section:
        # Side section of the flange beside it.
        sx = cx + ro + 60
        th = int(ro * rng.uniform(0.25, 0.5))
        outer = np.array([[sx, cy - ro], [sx + th, cy - ro], [sx + th, cy + ro], [sx, cy + ro]], np.int32)
        _hatch(img, np.array([[sx, cy - ro], [sx + th, cy - ro], [sx + th, cy - ri], [sx, cy - ri]], np.int32), 9)
        _hatch(img, np.array([[sx, cy + ri], [sx + th, cy + ri], [sx + th, cy + ro], [sx, cy + ro]], np.int32), 9)
        cv2.polylines(img, [outer], True, INK, 2, cv2.LINE_AA)
        cv2.line(img, (sx, cy - ri), (sx + th, cy - ri), INK, 2)
        cv2.line(img, (sx, cy + ri), (sx + th, cy + ri), INK, 2)
        _dim_linear(img, (sx, cy - ro), (sx + th, cy - ro), 25, f"{th // 2}", texts)


PARTS = {"plate": _plate, "shaft": _shaft, "bracket": _bracket, "flange": _flange}
NOTES = ["BREAK ALL SHARP EDGES 0.5", "GENERAL TOL. ISO 2768-m", "MATERIAL: S235JR", "FINISH: ZINC PLATED",
         "DEBURR ALL HOLES", "SURFACE Ra 3.2", "HARDEN 45-50 HRC", "PAINT RAL 7035"]


def drawing(seed: int, size: tuple[int, int] = (1400, 1000), part: str | None = None) -> Drawing:
    """Generate one drawing.

    Args:
        seed: RNG seed; the same seed gives the same drawing.
        size: ``(width, height)`` in px.
        part: one of ``PARTS`` (default: chosen by the seed).

    Returns:
        ``Drawing`` with a uint8 BGR ``[height, width, 3]`` image.
    """
    rng = np.random.default_rng(seed)
    w, h = size
    img = np.full((h, w, 3), 255, np.uint8)
    texts: list[str] = []
    part = part or str(rng.choice(sorted(PARTS)))
    n_views = int(rng.integers(1, 4))
    s = int(min(w / (n_views + 0.8), h) * rng.uniform(0.32, 0.42))
    for v in range(n_views):
        cx = int(w * (v + 1) / (n_views + 1) + rng.integers(-20, 21))
        cy = int(h * rng.uniform(0.4, 0.55))
        kind = part if v == 0 else str(rng.choice(sorted(PARTS)))
        PARTS[kind](img, rng, cx, cy, s, texts, section=bool(v > 0 or rng.random() < 0.3))
        if n_views > 1:
            _text(img, f"VIEW {'ABC'[v]}-{'ABC'[v]}", (cx, int(h * 0.9)), 0.6, texts, center=True, thickness=2)
    notes = list(rng.choice(NOTES, size=int(rng.integers(1, 4)), replace=False))
    x, y = 30, int(h * 0.78)
    _text(img, "NOTES:", (x, y), 0.5, texts, thickness=2)
    for i, note in enumerate(notes):
        _text(img, f"{i + 1}. {note}", (x, y + 22 * (i + 1)), 0.45, texts)
    return Drawing(img, texts, part)


def add_frame(image: np.ndarray, seed: int = 0, *, margin: float = 0.06, title: dict[str, str] | None = None,
              title_block: bool = True) -> np.ndarray:
    """Put ``image`` on a larger sheet with an ISO 5457 style border and an ISO 7200 style title block.

    The sheet is ``1 + 2 × margin + 0.1`` times the drawing; the border is a thin trimming line at the
    sheet edge and a thick border inside it; zone marks sit between them; the title block (≈ 38 % of
    the border width, 5 rows) is in the bottom-right corner below the drawing.

    Args:
        image: uint8 BGR ``[H, W, 3]``.
        seed: picks title texts and small layout jitter.
        margin: border margin as a fraction of the sheet side.
        title: title-block fields (default: generated).
        title_block: draw the title block.

    Returns:
        uint8 BGR sheet ``[H', W', 3]``.
    """
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    tb_h = int(0.22 * h) if title_block else 0
    mx, my = int(margin * w), int(margin * h)
    W, H = w + 2 * mx + 40, h + 2 * my + tb_h + 40
    sheet = np.full((H, W, 3), 255, np.uint8)
    sheet[my + 20:my + 20 + h, mx + 20:mx + 20 + w] = image
    cv2.rectangle(sheet, (4, 4), (W - 5, H - 5), INK, 1)  # trimming line
    bx0, by0, bx1, by1 = mx // 2, my // 2, W - mx // 2, H - my // 2
    cv2.rectangle(sheet, (bx0, by0), (bx1, by1), INK, 3)  # border (0.7 mm)
    texts: list[str] = []
    for i in range(1, 8):  # zone marks
        zx = bx0 + (bx1 - bx0) * i // 8
        cv2.line(sheet, (zx, 4), (zx, by0), INK, 1)
        cv2.line(sheet, (zx, by1), (zx, H - 5), INK, 1)
    if title_block:
        fields = title or {
            "COMPANY": str(rng.choice(["ACME GMBH", "NORDTECH AB", "KOVO S.R.O.", "DELTA WORKS"])),
            "TITLE": str(rng.choice(["BEARING SUPPORT", "DRIVE SHAFT", "MOUNTING PLATE", "COVER FLANGE"])),
            "DWG NO": f"D-{int(rng.integers(10000, 99999))}",
            "SCALE": str(rng.choice(["1:1", "1:2", "2:1", "1:5"])),
            "REV": str(rng.choice(list("ABCD"))),
        }
        tw = int(0.38 * (bx1 - bx0))
        th = tb_h
        tx0, ty0 = bx1 - tw, by1 - th
        cv2.rectangle(sheet, (tx0, ty0), (bx1, by1), INK, 2)
        rows = len(fields)
        for r, (key, value) in enumerate(fields.items()):
            ry = ty0 + th * r // rows
            if r:
                cv2.line(sheet, (tx0, ry), (bx1, ry), INK, 1)
            _text(sheet, key, (tx0 + 8, ry + th // rows // 2 + 5), 0.45, texts)
            _text(sheet, value, (tx0 + tw // 3 + 8, ry + th // rows // 2 + 7), 0.6, texts, thickness=2)
        cv2.line(sheet, (tx0 + tw // 3, ty0), (tx0 + tw // 3, by1), INK, 1)
    return sheet


def scan(image: np.ndarray, seed: int = 0, *, skew_deg: float = 0.8, noise: float = 6.0, jpeg_quality: int = 70) -> np.ndarray:
    """Scanner artefacts: small skew, slight blur, grey-level noise, JPEG compression.

    Args:
        image: uint8 BGR ``[H, W, 3]``.
        skew_deg: maximum absolute skew (degrees), drawn uniformly.
        noise: std of additive Gaussian grey noise (grey levels).
        jpeg_quality: JPEG quality of the final round trip (0-100).

    Returns:
        uint8 BGR ``[H, W, 3]``.
    """
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(-skew_deg, skew_deg)), 1.0)
    out = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(255, 255, 255))
    out = cv2.GaussianBlur(out, (3, 3), 0.6)
    out = np.clip(out.astype(np.float32) + rng.normal(0, noise, out.shape[:2])[..., None], 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def library(n: int, seed: int = 0, size: tuple[int, int] = (1400, 1000)) -> list[Drawing]:
    """``n`` distinct drawings, part types cycled so every type appears (seeds ``seed … seed+n-1``)."""
    kinds = sorted(PARTS)
    return [drawing(seed + i, size, kinds[i % len(kinds)]) for i in range(n)]
