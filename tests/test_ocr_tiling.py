"""Large-sheet OCR: tiling and merging of lines cut by tile borders, text regions, orientation,
width batching and the Paddle Inference rec engine — on rendered text read by the real PP-OCRv5
det + rec models (ONNX Runtime), plus the geometry helpers on exact synthetic boxes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest_model import base_model_dir  # noqa: F401  (fixture)
from serving_fixtures import make_rec_artifact, norm, render_page

from ocrloop.ocr.engine import OcrEngine, rec_batch_width
from ocrloop.ocr.tiling import (
    TileParams,
    dedup_lines,
    det_scale_for,
    glyph_components,
    merge_tile_boxes,
    text_regions,
    tile_grid,
    tile_spans,
    tiles_with_glyphs,
)


def _rect(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32)


# --- geometry ------------------------------------------------------------------------------------


def test_tile_spans_cover_with_equal_tiles_and_enough_overlap():
    assert tile_spans(900, 1024, 128) == [(0, 900)]
    for length in (1025, 3000, 4961):
        spans = tile_spans(length, 1024, 128)
        assert spans[0][0] == 0 and spans[-1][1] == length
        assert all(b - a == 1024 for a, b in spans)
        assert all(prev[1] - nxt[0] >= 128 for prev, nxt in zip(spans, spans[1:]))
    grid = tile_grid(2000, 3000, TileParams(tile_px=1024, overlap_px=128), origin=(10, 20))
    assert len(grid) == 3 * 4 and grid[0][:2] == (10, 20) and grid[-1][2:] == (3010, 2020)


def test_merge_keeps_one_box_per_line_across_tile_borders():
    tiles = [(0, 0, 1000, 600), (800, 0, 1800, 600)]  # 200 px shared strip x ∈ [800, 1000)
    whole_in_both = _rect(850, 50, 950, 80)
    cut_in_a = _rect(900, 150, 999, 180)           # tile A sees the start, cut at x = 999
    whole_in_b = _rect(900, 150, 1150, 180)        # tile B sees it whole
    long_a = _rect(500, 300, 999, 330)             # 700 px line, longer than the strip:
    long_b = _rect(800, 300, 1200, 330)            # each tile sees a cut piece
    separate = _rect(860, 335, 990, 365)           # a different line just below the long one
    merged = merge_tile_boxes([(tiles[0], np.stack([whole_in_both, cut_in_a, long_a, separate])),
                               (tiles[1], np.stack([whole_in_both + 0.5, whole_in_b, long_b]))], (600, 1800))
    spans = sorted((float(b[:, 0].min()), float(b[:, 0].max()), float(b[:, 1].min())) for b in merged)
    assert len(merged) == 4, spans
    assert (500.0, 1200.0, 300.0) in [(round(a), round(b), round(c)) for a, b, c in spans]  # union of the pieces
    assert (900.0, 1150.0, 150.0) in [(round(a), round(b), round(c)) for a, b, c in spans]  # the whole copy
    assert any(abs(c - 335) < 1 for _, _, c in spans)  # the neighbour line survives


def test_merge_leaves_boxes_of_one_tile_alone_and_handles_nothing():
    boxes = np.stack([_rect(0, 0, 50, 20), _rect(10, 5, 60, 25)])  # overlapping, same tile
    assert len(merge_tile_boxes([((0, 0, 100, 100), boxes)], (100, 100))) == 2
    assert merge_tile_boxes([((0, 0, 100, 100), np.zeros((0, 4, 2)))], (100, 100)).shape == (0, 4, 2)


def test_dedup_keeps_the_longer_read():
    polys = [_rect(0, 0, 100, 20), _rect(0, 0, 60, 20), _rect(200, 0, 260, 20)]
    assert dedup_lines(polys, ["HE 120 B", "HE 12", "HE 12"], [0.9, 0.99, 0.5]) == [0, 2]
    assert dedup_lines(polys[:1], ["x"], [1.0]) == [0]


def test_glyphs_give_text_height_and_survive_lines_through_text():
    items = [("DIMENSION 1250", (100, 100), 30, 0), ("SECTION A-A", (100, 300), 30, 0), ("NOTE 4", (600, 200), 30, 0)]
    page = render_page(items, size=(1000, 500))
    gray = page[:, :, 0].copy()
    stats = glyph_components(gray)
    assert stats.median_height is not None and 18 <= stats.median_height <= 26  # 30 px DejaVu: caps ≈ 22 px
    # A long line drawn through the text glyphs (text on a dimension line) must not hide them.
    crossed = gray.copy()
    crossed[112:114, 50:950] = 0
    crossed[290:340, 98:100] = 0
    assert len(glyph_components(crossed).boxes) >= 0.8 * len(stats.boxes)
    assert len(glyph_components(crossed, TileParams(line_px=0)).boxes) < len(stats.boxes) - 8
    regions = text_regions(stats.boxes, gray.shape, margin_px=30)
    cx = stats.boxes[:, 0] + stats.boxes[:, 2] / 2
    cy = stats.boxes[:, 1] + stats.boxes[:, 3] / 2
    assert all(any(x0 <= x < x1 and y0 <= y < y1 for x0, y0, x1, y1 in regions) for x, y in zip(cx, cy))
    assert sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in regions) < 0.5 * gray.size
    assert tiles_with_glyphs([(0, 0, 500, 250), (0, 400, 1000, 500)], stats.boxes) == [True, False]
    assert det_scale_for(40.0, TileParams(det_text_px=16)) == 0.4
    assert det_scale_for(10.0) == 1.0 and det_scale_for(None) == 1.0


# --- engine on rendered sheets -------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_rec_artifact(tmp_path_factory.mktemp("rec") / "v1", "rec-tiling")


@pytest.fixture(scope="module")
def engine(model_dir):
    return OcrEngine(model_dir)


SMALL_TILES = TileParams(tile_px=1024, overlap_px=128, regions=False, det_text_px=None)
"""On a 3000 × 2000 sheet: tiles start at x = 0, 659, 1317, 1976 and y = 0, 488, 976."""

SHEET_ITEMS = [
    ("BOLT M24x80 GRADE 8.8", (850, 150), 30, 0),            # crosses x = 1024 (end of the first tile)
    ("SECTION B-B", (560, 600), 30, 0),                      # crosses x = 659 (start of the second tile)
    ("REINFORCEMENT SCHEDULE SHEET 2 OF 4", (500, 760), 30, 0),  # longer than the 365 px shared strip
    ("CONCRETE C30/37", (2300, 1000), 30, 0),                # crosses y = 1024 (end of the first row)
    ("HEIGHT 2400", (1300, 1250), 30, 90),                   # vertical, crosses y = 1512
    ("DETAIL 7", (200, 1800), 30, 0),                        # inside one tile
]


@pytest.fixture(scope="module")
def big_sheet():
    return render_page(SHEET_ITEMS, size=(3000, 2000))


@pytest.mark.parametrize("tiles", [SMALL_TILES, TileParams(det_text_px=None)], ids=["grid-1024", "text-regions"])
def test_lines_crossing_tile_borders_are_read_once(model_dir, big_sheet, tiles):
    engine = OcrEngine(model_dir, tile_params=tiles)
    lines = engine.read(big_sheet)
    got = [norm(line.text) for line in lines]
    want = [norm(t) for t, *_ in SHEET_ITEMS]
    assert sorted(got) == sorted(want), got
    if tiles is SMALL_TILES:  # the borders really cut those lines: several tiles saw them
        assert engine.last_timings["det_rects"] >= 6


def test_vertical_and_upside_down_text(engine):
    items = [("LENGTH 1250", (80, 60), 28, 90), ("WIDTH 860", (160, 60), 28, 90),
             ("DEPTH 420", (240, 60), 28, 90), ("HEIGHT 2100", (320, 60), 28, 90),
             ("GRID LINE C", (700, 60), 28, -90), ("SCALE 1:50", (420, 80), 28, 0),
             ("MATERIAL S355", (420, 200), 28, 0), ("SHEET 3 OF 7", (420, 320), 28, 0),
             ("REV B", (420, 440), 28, 0)]
    page = render_page(items, size=(800, 560))
    want = sorted(norm(t) for t, *_ in items)
    for turned in (page, np.ascontiguousarray(np.rot90(page, 2))):  # upright, and a scan fed upside down
        got = sorted(norm(line.text) for line in engine.read(turned))
        assert got == want


def test_vertical_numbers_read_from_the_bottom(engine):
    """Vertical dimension numbers (ISO 129-1: read from the bottom) on an upright sheet and on the
    same sheet upside down; ``600`` turned 180° looks like ``009``, so the drawing convention, not
    the reading confidence, has to pick the direction."""
    items = [("LENGTH 1250", (80, 60), 28, 90), ("300", (160, 100), 28, 90), ("600", (240, 100), 28, 90),
             ("1250", (320, 100), 28, 90), ("SCALE 1:50", (420, 80), 28, 0), ("MATERIAL S355", (420, 200), 28, 0),
             ("SHEET 3 OF 7", (420, 320), 28, 0), ("REV B", (420, 440), 28, 0)]
    page = render_page(items, size=(800, 560))
    want = sorted(norm(t) for t, *_ in items)
    for turned in (page, np.ascontiguousarray(np.rot90(page, 2))):
        assert sorted(norm(line.text) for line in engine.read(turned)) == want


def test_small_two_digit_vertical_numbers_are_turned(engine):
    """Two-digit vertical dimensions in small type get nearly square boxes, which
    ``get_rotate_crop_image`` leaves lying (``20`` was read ``2``); their glyphs lie one above the
    other, so the crop is turned and read upright."""
    items = [("30", (160, 100), 14, 90), ("50", (240, 100), 14, 90), ("20", (320, 300), 14, 90),
             ("45", (360, 200), 14, 90), ("LENGTH 1250", (80, 200), 14, 90), ("SCALE 1:50", (420, 80), 14, 0),
             ("MATERIAL S355", (420, 200), 14, 0), ("REV B", (420, 440), 14, 0)]
    page = render_page(items, size=(800, 560))
    assert sorted(norm(line.text) for line in engine.read(page)) == sorted(norm(t) for t, *_ in items)


def test_glyphs_run_across_tells_a_squat_column_from_a_row():
    from ocrloop.ocr.engine import _glyphs_run_across

    box = _rect(0, 0, 22, 24)  # clockwise from the crop's top-left: "along" is +x
    column = np.array([[11.0, 6.0], [11.5, 17.0]])  # "3" above "0"
    row = np.array([[6.0, 12.0], [16.0, 12.5]])
    assert _glyphs_run_across(column, box) and not _glyphs_run_across(row, box)
    assert not _glyphs_run_across(column[:1], box)  # one glyph: no direction
    assert not _glyphs_run_across(column + 100, box)  # glyphs outside the box do not count
    turned = np.array([[22, 0], [22, 24], [0, 24], [0, 0]], dtype=np.float32)  # the same box read downwards
    assert _glyphs_run_across(row, turned) and not _glyphs_run_across(column, turned)


def _dimension_page():
    """Dimension values with their dimension lines running into both ends (as the dxfstructure
    drawings place them), horizontal and vertical, plus a typed ``-0,70`` and plain labels."""
    from PIL import Image, ImageDraw, ImageFont

    from serving_fixtures import font_path

    items = [("1650", (200, 100), 24, 0), ("3300", (200, 300), 24, 0), ("600", (600, 150), 24, 90),
             ("1450", (700, 150), 24, 90), ("150", (460, 300), 24, 0), ("-0,70", (200, 450), 24, 0),
             ("SCALE 1:50", (420, 80), 24, 0), ("MATERIAL S355", (420, 450), 24, 0)]
    page = Image.fromarray(render_page(items, size=(900, 640))[..., 0])
    draw = ImageDraw.Draw(page)
    font = ImageFont.truetype(str(font_path()), 24)
    for text, (x, y), _px, angle in items[:4]:  # render_page pads each text's box by 4 px a side
        left, top, right, bottom = font.getbbox(text)
        w, h = right - left + 8, bottom - top + 8
        if angle == 0:
            cy = y + h // 2
            draw.line((x - 150, cy, x + 1, cy), fill=0, width=2)
            draw.line((x + w - 1, cy, x + w + 150, cy), fill=0, width=2)
        else:
            cx = x + h // 2
            draw.line((cx, y - 150, cx, y + 1), fill=0, width=2)
            draw.line((cx, y + w - 1, cx, y + w + 150), fill=0, width=2)
    # A leader that meets "150" from the left and turns down 20 px out.
    left, top, right, bottom = font.getbbox("150")
    cy = 300 + (bottom - top + 8) // 2
    draw.line((440, cy, 461, cy), fill=0, width=2)
    draw.line((440, cy, 440, cy + 80), fill=0, width=2)
    return np.repeat(np.asarray(page)[:, :, None], 3, axis=2).copy(), [t for t, *_ in items]


def test_dimension_lines_running_into_values_are_not_read_as_dashes(engine, monkeypatch):
    import ocrloop.ocr.engine as engine_module

    page, texts = _dimension_page()
    assert sorted(line.text for line in engine.read(page)) == sorted(texts)  # "-0,70" keeps its minus
    monkeypatch.setattr(engine_module, "DASHES", "")  # without the check the lines are read as dashes
    assert any(line.text[:1] == "-" or line.text[-1:] == "-" for line in engine.read(page) if line.text != "-0,70")


def test_line_leaves_box_tells_a_line_from_a_typed_dash_and_glyphs():
    from ocrloop.ocr.engine import line_leaves_box

    m, h, w = 6, 12, 20  # the box is view[6:18, 6:26]
    paper = np.full((h + 2 * m, w + 2 * m), 255, np.uint8)

    def view(*strokes):
        v = paper.copy()
        for rows, cols in strokes:
            v[rows, cols] = 0
        return v

    mid = slice(11, 13)  # 2 px thick, in the middle of the text height
    assert not line_leaves_box(paper, m, "start") and not line_leaves_box(paper, m, "end")
    through = view((mid, slice(0, 10)))  # a dimension line from the left edge into the box
    assert line_leaves_box(through, m, "start") and not line_leaves_box(through, m, "end")
    assert line_leaves_box(view((mid, slice(20, 32))), m, "end")
    assert not line_leaves_box(view((mid, slice(3, 10))), m, "start")  # a stub 3 px out: a typed dash's end
    corner = view((mid, slice(2, 10)), (slice(11, 24), slice(2, 4)))  # turns down 4 px out, to the view's edge
    assert line_leaves_box(corner, m, "start")
    broken = view((mid, slice(0, 10)))
    broken[:, 3] = 255  # a 1 px break (anti-aliasing at a crossing)
    assert line_leaves_box(broken, m, "start")
    assert not line_leaves_box(view((slice(9, 15), slice(1, 7))), m, "start")  # a neighbouring glyph's blob
    with pytest.raises(ValueError):
        line_leaves_box(through, m, "left")


def _dimension_scene(value, *, touching=False, above=False, mark=False, turns=0):
    """A short dimension in osifont (the corpus' ISO 3098 lettering) and the box det gives it: the
    value centred between extension lines 24 px away, the dimension line ending in arrowheads whose
    tips touch them (ISO 129-1), and the box around the value and the arrowheads, up to the
    extension lines (as on the dev pages' ``1600`` for ``600``). ``touching``: no arrowheads, but a
    dimension line that runs into the value's first glyph; ``above``: the dimension line runs on
    under the value (ISO 129-1's placement above the line) and the box takes it in; ``mark``: a
    short free-standing stroke after the value (a tick or an apostrophe, no line). Returns (grey sheet uint8 ``[H, W]``,
    box float32 ``[4, 2]`` clockwise from its top-left), turned by ``np.rot90(…, turns)`` with the
    box turned along (``turns=1``: the value reads bottom-to-top)."""
    from pathlib import Path

    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(Path("/usr/share/fonts/truetype/osifont/osifont.ttf")), 26)
    page = Image.new("L", (400, 200), 255)
    draw = ImageDraw.Draw(page)
    left, top, right, bottom = font.getbbox(value)
    x0, y0 = 160, 90
    draw.text((x0 - left, y0 - top), value, font=font, fill=0)
    x1, y1, cy = x0 + right - left, y0 + bottom - top, y0 + (bottom - top) // 2
    ext0, ext1 = x0 - 24, x1 + 24
    for ext in (ext0, ext1):
        draw.line((ext, cy - 50, ext, cy + 50), fill=0, width=2)
    if touching:
        stem = x0 + int(np.argmax(np.asarray(page)[cy, x0:x1] < 128))  # the first glyph's ink at mid-height
        draw.line((ext0, cy, stem, cy), fill=0, width=2)
        draw.line((x1 + 4, cy, ext1, cy), fill=0, width=2)
    else:
        line_y = y1 + 5 if above else cy
        for tip, out in ((ext0, -1), (ext1, 1)):  # 13 px arrowheads pointing out at the extension lines
            draw.polygon([(tip, line_y), (tip - 13 * out, line_y - 4), (tip - 13 * out, line_y + 4)], fill=0)
            draw.line((tip, line_y, (ext0 + ext1) // 2 if above else tip - 16 * out, line_y), fill=0, width=2)
    if mark:
        draw.line((x1 + 6, y0, x1 + 6, y0 + 7), fill=0, width=2)
    gray = np.asarray(page).copy()
    box = _rect(ext0 + 2, y0 - 8, ext1 - 2, y1 + (14 if above else 8))
    for _ in range(turns % 4):  # np.rot90 turns counter-clockwise: (x, y) -> (y, W - 1 - x)
        w = gray.shape[1]
        gray = np.ascontiguousarray(np.rot90(gray))
        box = np.roll(np.stack([box[:, 1], w - 1 - box[:, 0]], axis=1).astype(np.float32), -1, axis=0)
    return gray, box


def test_line_end_runs_tell_arrowheads_from_glyphs():
    from ocrloop.ocr.engine import line_end_runs, line_view

    def runs(value, **kw):
        gray, box = _dimension_scene(value, **kw)
        return line_end_runs(*line_view(gray, box, 0))

    assert runs("600") == [True, False, False, False, True]  # arrowhead, 6, 0, 0, arrowhead
    # Under the value, the dimension line would make one run of the whole box; it goes as a long line.
    assert runs("600", above=True) == [True, False, False, False, True]
    assert runs("600", above=True, mark=True) == [True, False, False, False, False, True]  # the mark is no line
    # The line into the first glyph goes with the long lines and the glyph stays; the stub on the right
    # is a line end (rec did not read it: "1650" keeps its "1", see below).
    assert runs("1650", touching=True) == [False, False, False, False, True]
    assert runs("2001", touching=True) == [False, False, False, False, True]
    assert line_end_runs(np.full((40, 60), 255, np.uint8), 10) == []  # no ink


@pytest.mark.parametrize("turns", [0, 1])
def test_strip_line_ends_drops_what_rec_read_from_arrowheads(turns):
    """``1600`` / ``16001`` / ``1600↓`` for ``600`` between arrowheads lose the arrowheads' readings;
    a ``1`` that is a glyph stays, also where a line runs into it or a count leaves it open."""
    import ocrloop.ocr.engine as engine_module
    from ocrloop.ocr.engine import strip_line_ends

    gray, box = _dimension_scene("600", turns=turns)  # turns=1: written upwards, read turned back
    read_turns = turns
    for reading in ("1600", "6001", "16001", "1600↓", "600"):
        assert strip_line_ends(reading, gray, box, read_turns) == "600", reading
    above, abox = _dimension_scene("600", above=True)
    assert strip_line_ends("16001", above, abox, 0) == "600"
    marked, mbox = _dimension_scene("600", above=True, mark=True)
    assert strip_line_ends("160011", marked, mbox, 0) == "6001"  # both arrowheads go, the mark stays
    assert strip_line_ends("16001", marked, mbox, 0) == "16001"  # one of two ends read: which one is open
    # Both ends read, but the last as a glyph ("0"): the count does not tell which "1" is which.
    assert strip_line_ends("1I6000", gray, box, read_turns) == "1I6000"
    touched, tbox = _dimension_scene("1650", touching=True)
    assert strip_line_ends("1650", touched, tbox, 0) == "1650"
    plain, pbox = _dimension_scene("2001", touching=True)
    assert strip_line_ends("2001", plain, pbox, 0) == "2001"
    monkey = pytest.MonkeyPatch()
    monkey.setattr(engine_module, "LINE_END_CHARS", "")
    try:
        assert strip_line_ends("1600", gray, box, read_turns) == "1600"
    finally:
        monkey.undo()


def _ring_scene(kind, size=22):
    """A grey sheet with one mark centred in a ``size`` px box: ``"circle"`` (a hole or a bar's
    section, drawn 2 px wide), ``"crossed"`` (the same with centre lines running out of the box),
    ``"dot"`` (filled), or a glyph (``"osifont O"``, ``"osifont 0"``, ``"DejaVu 0"``). Returns (gray, box)."""
    from pathlib import Path

    import cv2
    from PIL import Image, ImageDraw, ImageFont

    from serving_fixtures import font_path

    cx, cy = 100, 100
    if kind in ("circle", "crossed", "dot"):
        gray = np.full((200, 200), 255, np.uint8)
        cv2.circle(gray, (cx, cy), size // 2 - 4, 0, -1 if kind == "dot" else 2, cv2.LINE_AA)
        if kind == "crossed":
            cv2.line(gray, (cx - 40, cy), (cx + 40, cy), 0, 1, cv2.LINE_AA)
            cv2.line(gray, (cx, cy - 40), (cx, cy + 40), 0, 1, cv2.LINE_AA)
    else:
        face, char = kind.split()
        file = Path("/usr/share/fonts/truetype/osifont/osifont.ttf") if face == "osifont" else font_path()
        font = ImageFont.truetype(str(file), size - 6)
        page = Image.new("L", (200, 200), 255)
        left, top, right, bottom = font.getbbox(char)
        ImageDraw.Draw(page).text((cx - (left + right) / 2, cy - (top + bottom) / 2), char, font=font, fill=0)
        gray = np.asarray(page).copy()
    half = size / 2
    return gray, _rect(cx - half, cy - half, cx + half, cy + half)


@pytest.mark.parametrize("size", [16, 22, 34])
def test_a_drawn_circle_read_as_a_letter_is_dropped(size):
    from ocrloop.ocr.engine import drop_lone_ring

    for kind in ("circle", "crossed"):
        gray, box = _ring_scene(kind, size)
        for reading in ("O", "o", "Q", " O "):
            assert drop_lone_ring(reading, gray, box, 0) == "", (kind, reading)
        assert drop_lone_ring("C", gray, box, 0) == "C" and drop_lone_ring("0", gray, box, 0) == "0"  # only letters
        assert drop_lone_ring("OO", gray, box, 0) == "OO"
    for kind in ("osifont O", "osifont 0", "DejaVu 0", "dot"):  # glyphs taller than wide, a filled dot
        gray, box = _ring_scene(kind, size)
        assert drop_lone_ring("O", gray, box, 0) == "O", kind
    import ocrloop.ocr.engine as engine_module

    gray, box = _ring_scene("circle", size)
    monkey = pytest.MonkeyPatch()
    monkey.setattr(engine_module, "RING_READINGS", "")
    try:
        assert drop_lone_ring("O", gray, box, 0) == "O"
    finally:
        monkey.undo()


def _chain_scene(values=("50", "50"), *, through=None, stop_short=False, arrow_only=False, reach=25):
    """A dimension chain in osifont: ``values`` side by side, each between extension lines that run
    ``reach`` px above and below the lettering (a chain's lines cross det's box of the merged values,
    which reaches 6 px beyond the lettering), and the box around the whole chain, inside the outer
    extension lines. ``through``: a vertical line
    through the middle of the first value's glyph of that index (a centre line through a glyph); ``stop_short``: the
    extension lines between the values stop 3 px short of the lettering (drawn broken at the text);
    ``arrow_only``: one value with an arrowhead beyond the inner line, no second value. Returns
    (grey sheet uint8 ``[H, W]``, box float32 ``[4, 2]``, x spans of the values' ink)."""
    from pathlib import Path

    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(Path("/usr/share/fonts/truetype/osifont/osifont.ttf")), 26)
    page = Image.new("L", (400, 200), 255)
    draw = ImageDraw.Draw(page)
    y0, x, spans = 90, 120, []
    lines = [x - 6]
    for value in values[:1] if arrow_only else values:
        left, top, right, bottom = font.getbbox(value)
        draw.text((x - left, y0 - top), value, font=font, fill=0)
        spans.append((x, x + right - left))
        x += right - left + 12
        lines.append(x - 6)
    h = max(font.getbbox(v)[3] - font.getbbox(v)[1] for v in values)
    for i, lx in enumerate(lines):
        inner = 0 < i < len(lines) - 1 or (arrow_only and i == 1)
        if stop_short and inner:
            draw.line((lx, y0 - reach, lx, y0 - 3), fill=0, width=2)
            draw.line((lx, y0 + h + 3, lx, y0 + h + reach), fill=0, width=2)
        else:
            draw.line((lx, y0 - reach, lx, y0 + h + reach), fill=0, width=2)
    right_edge = lines[-1] - 2
    if arrow_only:
        tip = lines[-1] + 1
        draw.polygon([(tip, y0 + h // 2), (tip + 13, y0 + h // 2 - 4), (tip + 13, y0 + h // 2 + 4)], fill=0)
        right_edge = tip + 16
    if through is not None:  # through the middle of the first value's glyph number `through`
        v = values[0]
        mid = spans[0][0] + (font.getbbox(v[:through])[2] + font.getbbox(v[:through + 1])[2]) // 2 - font.getbbox(v)[0]
        draw.line((mid, y0 - 25, mid, y0 + h + 25), fill=0, width=2)
    return np.asarray(page).copy(), _rect(lines[0] + 2, y0 - 6, right_edge, y0 + h + 6), spans


def test_crossing_line_pieces_split_a_chain_between_its_values():
    from ocrloop.ocr.engine import crossing_line_pieces, line_view

    def pieces(gray, box):
        return crossing_line_pieces(*line_view(gray, box, 0))

    for values in (("50", "50"), ("60", "60"), ("150", "150"), ("250", "350", "450")):
        gray, box, spans = _chain_scene(values)
        got = pieces(gray, box)
        assert len(got) == len(values), values
        for (x0, x1), (s0, s1) in zip(got, spans):  # each piece holds one value's ink, and only it
            assert box[0, 0] + x0 <= s0 and s1 <= box[0, 0] + x1 < s1 + 12, (values, got, spans)
    gray, box, _ = _chain_scene(("20000",))
    assert pieces(gray, box) == []  # no line between glyphs
    for glyph in range(1, 5):
        gray, box, _ = _chain_scene(("20000",), through=glyph)
        assert pieces(gray, box) == [], glyph  # a centre line through a "0"
    gray, box, _ = _chain_scene(("50", "50"), stop_short=True)
    assert pieces(gray, box) == []  # lines broken at the lettering do not cross the box
    gray, box, _ = _chain_scene(("50", "50"), reach=6)
    assert pieces(gray, box) == []  # lines that end at the box's edges: no longer than a glyph could be
    gray, box, _ = _chain_scene(("50", "50"), reach=9)
    assert len(pieces(gray, box)) == 2  # 3 px out on both sides
    gray, box, _ = _chain_scene(("300", "1"), arrow_only=True)
    assert pieces(gray, box) == []  # beyond the line only an arrowhead: one piece of text


def test_a_dimension_chain_read_as_one_number_is_split_at_its_lines(engine, monkeypatch):
    """det boxes ``150|150`` as one line (rec: ``150 150``); the engine reads the two values, each
    with its own box (``crossing_line_pieces`` tells such lines from lines through a glyph)."""
    import ocrloop.ocr.engine as engine_module

    gray, box, spans = _chain_scene(("150", "150"))
    page = np.repeat(gray[:, :, None], 3, axis=2).copy()
    lines = sorted(engine.read(page), key=lambda line: min(x for x, _ in line.polygon))
    assert [line.text for line in lines] == ["150", "150"]
    for line, (s0, s1) in zip(lines, spans):
        xs = [x for x, _ in line.polygon]
        assert min(xs) <= s0 and s1 <= max(xs) and max(xs) - min(xs) < 2 * (s1 - s0)
    monkeypatch.setattr(engine_module, "SPLIT_READINGS", None)
    assert [norm(line.text) for line in engine.read(page)] == ["150150"]


@settings(max_examples=25, deadline=None)
@given(turns=st.integers(0, 3), data=st.data())
def test_piece_box_cuts_the_crop_as_read(turns, data):
    """The piece's own ``margin_view`` is the crop's columns ``x0 … x1``, whatever the turn."""
    from ocrloop.ocr.engine import margin_view, piece_box

    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    gray = rng.integers(0, 256, (120, 160), dtype=np.uint8)
    x, y = data.draw(st.integers(0, 40)), data.draw(st.integers(0, 30))
    w, h = data.draw(st.integers(8, 100)), data.draw(st.integers(8, 80))
    box = _rect(x, y, x + w, y + h)
    crop = margin_view(gray, box, turns, 0)
    x0 = data.draw(st.integers(0, crop.shape[1] - 2))
    x1 = data.draw(st.integers(x0 + 1, crop.shape[1]))
    assert np.array_equal(margin_view(gray, piece_box(box, turns, x0, x1), turns, 0), crop[:, x0:x1])


def _tracked_page(lines):
    """Lines in osifont (the corpus' ISO lettering font) with CAD-like tracking: ``(text, tracking)``
    with the blank between glyphs as a share of the font size, and a space 0.45 of it."""
    from pathlib import Path

    from PIL import Image, ImageDraw, ImageFont

    font_file = Path("/usr/share/fonts/truetype/osifont/osifont.ttf")  # scripts/setup.sh installs it
    font = ImageFont.truetype(str(font_file), 28)
    page = Image.new("L", (900, 100 + 70 * len(lines)), 255)
    draw = ImageDraw.Draw(page)
    for n, (text, tracking) in enumerate(lines):
        x, y = 60, 50 + 70 * n
        for ch in text:
            if ch == " ":
                x += int(0.45 * font.size)
                continue
            left, _top, right, _bottom = font.getbbox(ch)
            draw.text((x - left, y), ch, font=font, fill=0)
            x += right - left + int(tracking * font.size)
    return np.repeat(np.asarray(page)[:, :, None], 3, axis=2).copy()


def test_spaces_follow_the_gaps_between_glyphs(engine, monkeypatch):
    import ocrloop.ocr.engine as engine_module

    lines = [("* [89.15] *", 0.14), ("(3)-HE 120 B", 0.14), ("Beam_1 x 1", 0.14), ("asfdfsdf", 0.3),
             ("(2)-IPE 240", 0.3)]
    page = _tracked_page(lines)
    assert sorted(line.text for line in engine.read(page)) == sorted(t for t, _ in lines)
    monkeypatch.setattr(engine_module, "RESPACE", False)  # rec alone drops word spaces and adds some
    assert sorted(line.text for line in engine.read(page)) != sorted(t for t, _ in lines)


def _blob_crop(widths, gaps, h=30, underline=False):
    """A grey line crop of solid glyph blobs ``widths`` px wide with ``gaps`` px blank between them."""
    crop = np.full((h, sum(widths) + sum(gaps) + 20), 255, np.uint8)
    x = 10
    for k, w in enumerate(widths):
        crop[6:h - 6, x:x + w] = 0
        x += w + (gaps[k] if k < len(gaps) else 0)
    if underline:
        crop[h - 3, 5:-5] = 0
    return crop


def test_glyph_spans_ignore_an_underline():
    from ocrloop.ocr.engine import glyph_spans

    plain = glyph_spans(_blob_crop([10, 11, 10], [4, 16]))
    assert plain == [(10, 20), (24, 35), (51, 61)]
    assert glyph_spans(_blob_crop([10, 11, 10], [4, 16], underline=True)) == plain


def test_respace_keeps_what_it_cannot_pair_or_measure():
    from ocrloop.ocr.engine import respace

    crop = _blob_crop([10] * 5, [4, 4, 18, 4])
    assert respace("ab cde", crop) == "abc de"  # rec's space moves to the wide gap
    assert respace("abcdef", crop) == "abcdef"  # six characters, five blobs: as read
    assert respace("a b c", _blob_crop([10] * 3, [4, 4])) == "a b c"  # too few gaps for a median
    # A "1" in a fixed-width digit cell: a wide blank beside it, but the pitch is the line's, so
    # no space is added; gap and pitch disagree, so rec's reading stands.
    digits = _blob_crop([4, 10, 10, 10], [10, 4, 4])
    assert respace("1150", digits) == "1150" and respace("1 150", digits) == "1 150"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(3, 6), min_size=1, max_size=4), st.integers(3, 5), st.data())
def test_respace_recovers_words_whatever_rec_did_with_spaces(word_lengths, letter_gap, data):
    """ISO 3098-0 type B lettering: 0.2 h between characters, at least 0.6 h between words. Rec's
    spaces, dropped or added anywhere, give way to the glyph gaps."""
    from ocrloop.ocr.engine import respace

    n = sum(word_lengths)
    widths = data.draw(st.lists(st.integers(10, 11), min_size=n, max_size=n))
    gaps, ends = [], set(np.cumsum(word_lengths)[:-1].tolist())
    for k in range(1, n):
        gaps.append(data.draw(st.integers(16, 22)) if k in ends else letter_gap)
    letters = "abcdefghjkmnpqrstuvwxyz"
    words = ["".join(data.draw(st.sampled_from(letters)) for _ in range(m)) for m in word_lengths]
    truth = " ".join(words)
    chars = truth.replace(" ", "")
    flips = data.draw(st.lists(st.booleans(), min_size=n - 1, max_size=n - 1))
    read = chars[0] + "".join((" " if ((k in ends) != flip) else "") + chars[k]
                              for k, flip in zip(range(1, n), flips))
    assert respace(read, _blob_crop(widths, gaps)) == (truth if n >= 4 else read)


def test_x_and_times_are_read_as_drawn(engine, monkeypatch):
    """osifont (ISO 3098 lettering) draws the letter x on the baseline and the sign × raised and
    square; rec alone confuses them both ways on this page."""
    from pathlib import Path

    from PIL import Image, ImageDraw, ImageFont

    import ocrloop.ocr.engine as engine_module

    font = ImageFont.truetype(str(Path("/usr/share/fonts/truetype/osifont/osifont.ttf")), 28)
    lines = ["80x6,3", "4x(13)", "2×M16", "150x90x12", "Element 1 x 2", "4× M10"]
    page = Image.new("L", (700, 100 + 70 * len(lines)), 255)
    draw = ImageDraw.Draw(page)
    for n, text in enumerate(lines):
        draw.text((60, 50 + 70 * n), text, font=font, fill=0)
    page = np.repeat(np.asarray(page)[:, :, None], 3, axis=2).copy()
    assert sorted(line.text for line in engine.read(page)) == sorted(lines)
    monkeypatch.setattr(engine_module, "READ_X_GLYPHS", False)
    assert sorted(line.text for line in engine.read(page)) != sorted(lines)


def _glyph_crop(glyphs, h=40, gap=5):
    """A grey line crop of solid glyph blobs ``(width, top, bottom)`` px, ``gap`` px apart."""
    crop = np.full((h, sum(w for w, _t, _b in glyphs) + gap * len(glyphs) + 20), 255, np.uint8)
    x = 10
    for w, top, bottom in glyphs:
        crop[top:bottom, x:x + w] = 0
        x += w + gap
    return crop


DIGIT = (11, 10, 30)  # capital height 20 px, baseline at row 30


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.integers(0, 4), st.sampled_from("x×"), st.data())
def test_x_or_times_follows_where_the_glyph_stands(before, after, read_as, data):
    """Whatever rec read, a narrow x-height glyph on the baseline is the letter and a raised
    square one the sign; an x-height square on the baseline (DejaVu's ×) is left to rec."""
    from ocrloop.ocr.engine import x_or_times

    letter = (data.draw(st.integers(9, 11)), data.draw(st.integers(16, 17)), 30)  # 0.65-0.7 h tall
    sign = (data.draw(st.integers(9, 11)), 13, 13 + data.draw(st.integers(9, 11)))  # 0.35 h up
    square = (14, 15, 30)
    digits = "1234567890"
    text = digits[:before] + read_as + digits[:after]
    line = [DIGIT] * before + [letter] + [DIGIT] * after
    assert x_or_times(text, _glyph_crop(line)) == text.replace(read_as, "x")
    line[before] = sign
    assert x_or_times(text, _glyph_crop(line)) == text.replace(read_as, "×")
    line[before] = square
    assert x_or_times(text, _glyph_crop(line)) == text


def test_x_or_times_leaves_what_it_cannot_pair_or_measure():
    from ocrloop.ocr.engine import x_or_times

    letter = (9, 16, 30)
    assert x_or_times("80×6", _glyph_crop([DIGIT, DIGIT, letter])) == "80×6"  # 4 characters, 3 blobs
    assert x_or_times("a×b", _glyph_crop([letter, letter, letter])) == "a×b"  # no capital or digit
    assert x_or_times("80 × 6", _glyph_crop([DIGIT, DIGIT, letter, DIGIT])) == "80 x 6"  # spaces kept
    assert x_or_times("806", _glyph_crop([DIGIT] * 3)) == "806"


def test_glyph_boxes_drop_a_line_running_out_of_the_crop():
    """A leader crossing the crop's top edge is no glyph; a glyph touching a side edge is kept."""
    from ocrloop.ocr.engine import glyph_boxes

    crop = _glyph_crop([DIGIT, DIGIT])
    plain = glyph_boxes(crop)
    assert plain == [(10, 21, 10, 30), (26, 37, 10, 30)]
    leader = crop.copy()
    for k in range(8):  # a 1 px diagonal from the top edge, clear of the glyphs
        leader[k, crop.shape[1] - 12 + k] = 0
    assert glyph_boxes(leader) == plain
    edge = crop[:, 10:].copy()  # the first glyph now touches the left edge
    assert glyph_boxes(edge)[0] == (0, 11, 10, 30)
    comma = crop.copy()
    comma[30:, 22:24] = 0  # a comma's tail between the glyphs, down to the bottom edge
    assert glyph_boxes(comma) == plain[:1] + [(22, 24, 30, 40)] + plain[1:]
    slanted = crop.copy()
    for k in range(crop.shape[1]):  # an underline dropping 2 px along the line, clear of the glyphs
        slanted[37 + (2 * k) // crop.shape[1], k] = 0
    assert glyph_boxes(slanted) == plain


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_margin_view_shows_the_surroundings_as_the_crop_is_read(turns):
    from rapidocr.utils.process_img import get_rotate_crop_image

    from ocrloop.ocr.engine import margin_view

    gray = np.full((100, 120), 255, np.uint8)
    gray[40:60, 20:80] = np.arange(60, dtype=np.uint8)[None, :] * 2  # the box: a left-to-right ramp
    gray[50, 15] = 7  # 5 px left of the box
    box = np.array([[20, 40], [80, 40], [80, 60], [20, 60]], dtype=np.float32)
    view = margin_view(gray, box, turns, 10)
    plain = np.rot90(margin_view(gray, box, 0, 10), turns)
    assert np.array_equal(view, plain)
    base = margin_view(gray, box, 0, 10)
    assert base.shape == (20 + 20, 60 + 20) and base[20, 5] == 7
    inner = base[10:30, 10:70].astype(int)
    crop = get_rotate_crop_image(gray, box.copy()).astype(int)  # the same warp (cubic vs linear)
    assert inner.shape == crop.shape and np.abs(inner - crop).max() <= 4


def test_width_batching_reads_what_single_crops_read(engine):
    from ocrloop.model.lines import render_line

    texts = ["⌀12 H7", "2×M6", "SCALE 1:20", "45°", "R3 ±0.1", "MATERIAL STEEL S235 JR",
             "SECTION A-A", "1250", "4×⌀6 THRU ALL", "NOTE", "SHEET 2 OF 4", "DRAWING NO 4711-B-03"]
    crops = [render_line(t, size=s) for t, s in zip(texts, [24, 32, 28, 36] * 3)]
    single, batched = engine.rec_batch_size, None
    try:
        engine.rec_batch_size = 1
        single = engine.recognize(crops)
        engine.rec_batch_size = 8
        batched = engine.recognize(crops)
    finally:
        engine.rec_batch_size = 8
    assert [t for t, _ in batched] == [t for t, _ in single]
    assert np.allclose([s for _, s in batched], [s for _, s in single], atol=0.02)
    assert sum(norm(t) == norm(w) for (t, _), w in zip(single, texts)) >= 10
    assert rec_batch_width(crops[:2], 320) == 320 and rec_batch_width(crops, 0) % 8 == 0


def test_paddle_engine_reads_like_the_onnx_engine(base_model_dir):
    """``engine="paddle"`` runs ``inference.json``/``.pdiparams`` on Paddle Inference; the same
    crops must decode to the same strings as ``model.onnx`` on ONNX Runtime."""
    pytest.importorskip("paddle")
    from ocrloop.model.lines import render_line

    texts = ["⌀20 ±0.02", "SECTION B-B", "材料 Q235", "4×M12", "REV C", "SCALE 1:100"]
    crops = [render_line(t) for t in texts]
    onnx = OcrEngine(base_model_dir, orientation="vertical-both")
    paddle = OcrEngine(base_model_dir, engine="paddle", orientation="vertical-both")
    a, b = onnx.recognize(crops), paddle.recognize(crops)
    assert [t for t, _ in a] == [t for t, _ in b]
    assert np.allclose([s for _, s in a], [s for _, s in b], atol=1e-3)
    assert paddle.model_version == onnx.model_version


def test_engine_rejects_unknown_settings(model_dir):
    with pytest.raises(ValueError, match="engine"):
        OcrEngine(model_dir, engine="tensorrt")
    with pytest.raises(ValueError, match="orientation"):
        OcrEngine(model_dir, orientation="sideways")
    with pytest.raises(ValueError):
        TileParams(tile_px=100, overlap_px=60)


# --- text direction: glyph chains, turned sheets ------------------------------------------------


from ocrloop.ocr.tiling import glyph_chains, sheet_turn, turn_glyph_boxes, turn_points, unturn_points  # noqa: E402


def _word(x, y, n, size=20, gap=3, vertical=False):
    """``n`` glyph boxes (x, y, w, h) of a word starting at (x, y), running right or down."""
    w, h = (size, int(size * 0.6)) if vertical else (int(size * 0.6), size)
    step = (h if vertical else w) + gap
    return [(x, y + i * step, w, h) if vertical else (x + i * step, y, w, h) for i in range(n)]


def test_glyph_chains_tell_rows_from_columns():
    boxes = np.array(_word(100, 100, 5) + _word(400, 100, 4, vertical=True) + [(700, 700, 12, 20)], dtype=np.int32)
    row, col = glyph_chains(boxes)
    assert row[:5].all() and not col[:5].any()
    assert col[5:9].all() and not row[5:9].any()
    assert not row[9] and not col[9]  # a lone glyph chains nowhere
    assert sheet_turn(row, col) == 0
    # Lines of a paragraph one line height apart do not chain in columns.
    para = np.array(_word(0, 0, 6) + _word(0, 40, 6) + _word(0, 80, 6), dtype=np.int32)
    assert not glyph_chains(para)[1].any()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 2000), st.integers(1, 60), st.integers(1, 60)),
                min_size=0, max_size=40))
def test_glyph_chains_swap_when_the_boxes_are_transposed(boxes):
    b = np.array(boxes, dtype=np.int32).reshape(-1, 4)
    row, col = glyph_chains(b)
    row_t, col_t = glyph_chains(b[:, [1, 0, 3, 2]])
    assert (row == col_t).all() and (col == row_t).all()


def test_sheet_turn_needs_a_clear_majority_of_columns():
    yes, no = np.ones(30, bool), np.zeros(30, bool)
    assert sheet_turn(no, yes) == 1 and sheet_turn(yes, no) == 0
    assert sheet_turn(np.r_[yes[:12], no[:18]], np.r_[no[:12], yes[:18]]) == 0  # 18 vs 12: not dominant
    assert sheet_turn(no[:5], yes[:5]) == 0  # too few glyphs to say


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 400), st.integers(1, 400), st.integers(0, 3), st.data())
def test_turned_boxes_and_points_match_cv2_rotate(h, w, turns, data):
    import cv2

    x = data.draw(st.integers(0, w - 1))
    y = data.draw(st.integers(0, h - 1))
    bw = data.draw(st.integers(1, w - x))
    bh = data.draw(st.integers(1, h - y))
    img = np.zeros((h, w), np.uint8)
    img[y:y + bh, x:x + bw] = 1
    if turns:
        img = cv2.rotate(img, (cv2.ROTATE_90_CLOCKWISE, cv2.ROTATE_180, cv2.ROTATE_90_COUNTERCLOCKWISE)[turns - 1])
    ys, xs = np.nonzero(img)
    want = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    assert turn_glyph_boxes(np.array([[x, y, bw, bh]]), turns, (h, w))[0].tolist() == want
    p = np.array([[x, y], [x + bw - 1, y + bh - 1]], dtype=np.float64)
    q = turn_points(p, turns, (h, w))
    assert all(img[int(py), int(px)] == 1 for px, py in q)
    assert np.allclose(unturn_points(q, turns, (h, w)), p)


def test_a_sheet_turned_by_90_degrees_reads_like_the_upright_one(engine):
    """A scan fed turned by 90° either way: its text runs in columns, so the engine detects it in
    the sheet turned back (``tiling.sheet_turn``); the vertical line reads horizontally there."""
    items = [("SCALE 1:50", (60, 60), 28, 0), ("MATERIAL S355", (60, 160), 28, 0),
             ("SHEET 3 OF 7", (60, 260), 28, 0), ("REV B", (60, 360), 28, 0),
             ("DRAWING 4711", (420, 60), 28, 0), ("GRID LINE C", (700, 120), 28, 90)]
    page = render_page(items, size=(800, 560))
    want = sorted(norm(t) for t, *_ in items)
    for turned in (np.ascontiguousarray(np.rot90(page, 1)), np.ascontiguousarray(np.rot90(page, -1))):
        got = sorted(norm(line.text) for line in engine.read(turned))
        assert got == want
        assert engine.last_timings["turn"] == 1


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1900), st.integers(0, 1400), st.integers(3, 40), st.integers(3, 40)),
                min_size=1, max_size=30), st.integers(8, 40))
def test_tight_regions_hold_their_glyphs_inside_the_grown_clusters(boxes, pad):
    b = np.array(boxes, dtype=np.int32)
    hw = (1500, 2000)
    loose = text_regions(b, hw, 60)
    tight = text_regions(b, hw, 60, pad_px=pad)
    assert len(tight) == len(loose)
    for x, y, w, h in b:  # every glyph, with its pad (clipped to the image), lies in a tight region
        gx0, gy0 = max(0, x - pad), max(0, y - pad)
        gx1, gy1 = min(hw[1], x + w + pad), min(hw[0], y + h + pad)
        assert any(r[0] <= gx0 and r[1] <= gy0 and r[2] >= gx1 and r[3] >= gy1 for r in tight)
    assert sum((r[2] - r[0]) * (r[3] - r[1]) for r in tight) <= sum((r[2] - r[0]) * (r[3] - r[1]) for r in loose)
