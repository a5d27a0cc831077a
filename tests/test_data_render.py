"""DXF rendering: labels equal the CAD strings as drawn, boxes are tight and inside the image."""

from __future__ import annotations

import re

import numpy as np
import pytest

from ocrloop.data.corpus import _sheet_windows
from ocrloop.data.fetch import fetch_sources
from ocrloop.data.render import RenderError, load_scene, render_dxf


def _norm(s: str) -> str:
    return " ".join(s.split())


@pytest.fixture(scope="module")
def sources():
    return {s.member.rsplit("/", 1)[-1]: s for s in fetch_sources()}


@pytest.fixture(scope="module")
def foundation(sources):
    """A real structural drawing (dxfstructure 01): one sheet with TEXT, MTEXT and DIMENSION."""
    import ezdxf

    src = sources["01_Concrete_Foundation_foot_EN.dxf"]
    scene = load_scene(src.path)
    for window, scale in _sheet_windows(scene, 16.0):
        rendered = scene.render(scale, window)
        types = {t.entity_type for t in rendered.texts}
        if len(rendered.texts) >= 10 and "DIMENSION" in types and "TEXT" in types:
            return ezdxf.readfile(src.path), rendered
    raise AssertionError("no sheet of the foundation drawing has TEXT and DIMENSION items")


def _cad_strings(doc, handle: str) -> list[str]:
    """Every plain string the CAD entity ``handle`` holds, itself or in its block (ezdxf API,
    independent of the renderer's text capture)."""
    entity = doc.entitydb[handle]
    kind = entity.dxftype()
    if kind in ("TEXT", "ATTRIB"):
        return [entity.plain_text()]
    if kind == "MTEXT":
        return [entity.plain_text(split=False)]
    if kind == "DIMENSION":
        block = doc.blocks.get(entity.dxf.geometry)
    elif kind == "INSERT":
        block = doc.blocks.get(entity.dxf.name)
    else:
        raise AssertionError(f"unexpected text source {kind}")
    out = []
    for e in block:
        if e.dxftype() == "MTEXT":
            out.append(e.plain_text(split=False))
        elif e.dxftype() in ("TEXT", "ATTDEF"):
            out.append(e.plain_text())
    return out


def test_labels_equal_cad_strings(foundation):
    doc, rendered = foundation
    for item in rendered.texts:
        cad = [_norm(s) for s in _cad_strings(doc, item.handle)]
        # a label is the whole string, or one line/word-wrapped piece, or one of the parts a run
        # of 2+ blanks separates
        pieces = {p for s in cad for line in s.split("\n") for p in re.split(r"\s{2,}", line)}
        assert any(item.text == s or item.text in pieces or item.text in s for s in cad), (item.text, cad)
        assert "%%" not in item.text and "\\" not in item.text and "{" not in item.text


def test_dimension_texts_are_the_block_measurements(foundation):
    doc, rendered = foundation
    dims = [t for t in rendered.texts if t.entity_type == "DIMENSION"]
    assert dims
    for t in dims:
        assert t.text in {_norm(s) for s in _cad_strings(doc, t.handle)}
        assert re.fullmatch(r"[0-9.,∅]+", t.text), t.text
    vertical = [t for t in dims if abs(t.angle_deg - 90) < 1]
    assert vertical, "this sheet has vertical dimension text"
    for t in vertical:
        w = np.linalg.norm(t.polygon[1] - t.polygon[0])
        h = np.linalg.norm(t.polygon[3] - t.polygon[0])
        assert w > h  # reading-direction box: long side runs along the baseline
        assert t.polygon[0][1] > t.polygon[1][1]  # text read bottom-to-top: TL is lowest


def test_polygons_inside_and_tight(foundation):
    _, rendered = foundation
    img = rendered.image
    h, w = img.shape[:2]
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    tight = 0
    horizontal = [t for t in rendered.texts if abs(t.angle_deg) < 1]
    for t in rendered.texts:
        assert t.polygon.dtype == np.float32 and t.polygon.shape == (4, 2)
        assert (t.polygon[:, 0] >= -1).all() and (t.polygon[:, 0] <= w + 1).all()
        assert (t.polygon[:, 1] >= -1).all() and (t.polygon[:, 1] <= h + 1).all()
        assert t.cap_height_px >= 10
    for t in horizontal:
        x0, x1 = t.polygon[:, 0].min(), t.polygon[:, 0].max()
        y0, y1 = t.polygon[:, 1].min(), t.polygon[:, 1].max()
        band = img[int(y0) + 1 : int(np.ceil(y1)) - 1, max(int(x0) - 3, 0) : int(np.ceil(x1)) + 3].min(axis=2)
        cols = np.flatnonzero((band < 128).any(axis=0))
        ink_x0, ink_x1 = max(int(x0) - 3, 0) + cols[0], max(int(x0) - 3, 0) + cols[-1] + 1
        tight += abs(ink_x0 - x0) <= 2 and abs(ink_x1 - x1) <= 2
    # lines crossing a label (leaders, dimension lines) widen the ink; most labels are clean
    assert tight >= 0.8 * len(horizontal), (tight, len(horizontal))


@pytest.fixture(scope="module")
def codes_dxf(tmp_path_factory):
    """A small DXF written with ezdxf to exercise control codes and drop rules."""
    import ezdxf

    doc = ezdxf.new("R2010")
    msp = doc.modelspace()
    msp.add_text("%%c12 %%p0.5 45%%d", height=5, dxfattribs={"insert": (0, 0)})
    msp.add_text("A1  B2", height=5, dxfattribs={"insert": (0, 20)})  # 2 blanks: two items
    msp.add_text("VERT 90", height=5, dxfattribs={"insert": (120, 0), "rotation": 90})
    msp.add_text("tiny", height=0.5, dxfattribs={"insert": (0, -10)})
    msp.add_text("------", height=5, dxfattribs={"insert": (60, -20)})
    msp.add_text("∅200", height=5, dxfattribs={"insert": (60, 20)})  # as dxfstructure writes ⌀
    msp.add_mtext("{\\C1;RED}\\Pline%%d two\\P\\A1;x=3", dxfattribs={"insert": (60, 0), "char_height": 4})
    msp.add_line((-5, -25), (130, 45))
    path = tmp_path_factory.mktemp("dxf") / "codes.dxf"
    doc.saveas(path)
    return path


def test_control_codes_resolved(codes_dxf):
    rendered = render_dxf(codes_dxf, scale=6.0)
    labels = [t.text for t in rendered.texts]
    assert "Ø12 ±0.5 45°" in labels  # %%c %%p %%d as ezdxf draws them
    assert "∅200" in labels
    assert {"A1", "B2"} <= set(labels)
    assert {"RED", "line° two", "x=3"} <= set(labels)  # \P line breaks, {\C1;} and \A1; dropped
    assert "VERT 90" in labels
    vert = rendered.texts[labels.index("VERT 90")]
    assert abs(vert.angle_deg - 90) < 1e-3
    counts = rendered.drop_counts
    assert counts.get("too_small") == 1 and counts.get("punctuation_only") == 1


def test_outside_window_is_dropped_with_reason(codes_dxf):
    scene = load_scene(codes_dxf)
    x0, y0, x1, y1 = scene.extents
    # a window whose right edge cuts through "Ø12 ±0.5 45°" (drawn from x=0)
    rendered = scene.render(6.0, (x0, y0, 20.0, y1))
    assert "Ø12 ±0.5 45°" not in [t.text for t in rendered.texts]
    assert any(d.reason == "outside_image" and d.item.text == "Ø12 ±0.5 45°" for d in rendered.dropped)


def test_slashed_glyphs_are_not_filled(codes_dxf):
    """ezdxf's matplotlib hole guess fills Ø/∅; glyphs must keep their counters."""
    rendered = render_dxf(codes_dxf, scale=6.0)
    item = next(t for t in rendered.texts if t.text == "∅200")
    x0, y0 = np.floor(item.polygon.min(axis=0)).astype(int)
    glyph_w = int(round(item.cap_height_px))  # ∅ is about as wide as it is tall
    cell = rendered.image[y0 : y0 + glyph_w, x0 : x0 + glyph_w].min(axis=2)
    assert (cell < 128).mean() < 0.45  # a ring with a slash, not a disc


def test_unparseable_file_raises(tmp_path):
    bad = tmp_path / "bad.dxf"
    bad.write_bytes(b"this is not a drawing\x00\xff" * 20)
    with pytest.raises(RenderError) as exc:
        load_scene(bad)
    assert exc.value.reason in {"parse_error", "empty"}
