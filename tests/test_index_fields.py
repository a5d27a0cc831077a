"""Title-block fields from OCR text, derived metadata, and the filter semantics the local index
implements (substring after Unicode case folding), checked against Python's ``in`` on tricky text."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocrloop.index.faiss_index import EXACT_FILTER_MAX, FaissIndex
from ocrloop.index.fields import (DERIVED_KEY, check_filters, extract_fields, filter_texts, flatten_text, fold,
                                  with_derived_fields)


@pytest.mark.parametrize("text, expected", [
    # ISO 7200-style block read cell by cell (label line, then value line) and row by row.
    ("COMPANY\nACME GMBH\nTITLE\nBEARING SUPPORT\nDWG NO\nD-48213\nSCALE\n1:2\nREV\nB",
     {"drawing_number": ["D-48213"], "scale": ["1:2"], "revision": ["B"], "title": ["BEARING SUPPORT"]}),
    ("TITLE BEARING SUPPORT\nDWG. NO. D-48213\nSCALE 1 : 2\nREV B",
     {"drawing_number": ["D-48213"], "scale": ["1:2"], "revision": ["B"], "title": ["BEARING SUPPORT"]}),
    # Several labels on one OCR line; material grade with a delivery condition.
    ("MATERIAL: S235JR+N  SCALE 1 : 5\nPART NO. 4711-002-A\nØ25 H7\n120 ±0.1",
     {"part_number": ["4711-002-A"], "material": ["S235JR+N"], "scale": ["1:5"]}),
    # German title block (Maßstab, Werkstoff, Benennung, Zeichnungsnummer).
    ("Werkstoff: 42CrMo4\nMaßstab M 1:1\nZeichnungsnummer 12345.678\nBenennung: Welle",
     {"drawing_number": ["12345.678"], "material": ["42CrMo4"], "scale": ["1:1"], "title": ["Welle"]}),
    # The real corpus (dxfstructure / ezdxf sheets): member call-outs, rebar grade, a scale line,
    # and a title block whose scale is split over two text items ("Scale:" "1:" "75").
    ("2x(1)-HE 200 A-8000-S355\n4x(1)-IPE 300-1200-S235\nB500A\n1:25\nSLOPE 1:20",
     {"material": ["S355", "S235", "B500A"], "scale": ["1:25"]}),
    ("Project:\nThornhill Farmhouse\nDrawing No. 1\nTitle:\nEast Elevation\nScale: 1:\n75\nContract No: 100701",
     {"drawing_number": ["1"], "scale": ["1:75"], "title": ["East Elevation"]}),
    # Unlabelled grades of other families.
    ("MATL 6061-T6 ANODIZE\nP/N 100-2233\nGREY CAST IRON EN-GJL-250\nC25/30\nX5CrNi18-10 1.4301\nCuZn39Pb3 PA66 POM-C",
     {"part_number": ["100-2233"],
      "material": ["6061-T6", "EN-GJL-250", "C25/30", "X5CrNi18-10", "1.4301", "CuZn39Pb3", "PA66", "POM-C"]}),
    # Nothing here is a title-block field: a time, a slope inside a line, a revision-table header,
    # notes, a chamfer and a thread.
    ("NOTES:\n1. DEBURR ALL HOLES\n2. SURFACE Ra 3.2\nC2 CHAMFER\nM8x1.25\n12:30\nSLOPE 1:20\nREV DESCRIPTION DATE", {}),
    ("", {}),
])
def test_extract_fields(text, expected):
    assert extract_fields(text) == expected


def test_extract_fields_refuses_non_text():
    with pytest.raises(TypeError):
        extract_fields(None)  # type: ignore[arg-type]


def test_derived_fields_client_values_win_and_stale_ones_are_rederived():
    meta = with_derived_fields({"text": "MATERIAL S355J2\nSCALE 1:2\nDWG NO D-1", "material": "as ordered: S235"})
    assert meta["material"] == "as ordered: S235"  # the client's key is kept
    assert meta["scale"] == ["1:2"] and meta["drawing_number"] == ["D-1"]
    assert meta[DERIVED_KEY] == ["drawing_number", "scale"]
    # A refresh keeps the previous metadata and replaces the text (indexing.index_one).
    again = with_derived_fields({**meta, "text": "SCALE 2:1"})
    assert again == {"text": "SCALE 2:1", "material": "as ordered: S235", "scale": ["2:1"], DERIVED_KEY: ["scale"]}
    assert with_derived_fields({**again, "text": ""}) == {"text": "", "material": "as ordered: S235"}
    # No text: nothing derived; a foreign "derived_fields" value that is not a list is ignored.
    assert with_derived_fields({"part": "P-1", DERIVED_KEY: "part"}) == {"part": "P-1"}
    # OCR text given as a list of lines works the same.
    assert with_derived_fields({"text": ["SCALE", "1:5"]})["scale"] == ["1:5"]


def test_filter_texts_and_check_filters():
    assert filter_texts({"a": "Maße Ø", "n": 3, "l": ["X", {"y": "Z"}], "e": "", "none": None, "el": []}) == {
        "a": "masse ⌀", "n": "3", "l": "x\nz"}
    assert flatten_text(["a", {"b": 1, "c": [2.5, None]}]) == "a\n1\n2.5\n"
    assert check_filters({"text": "ØSTRASSE"}) == {"text": "⌀strasse"}
    assert check_filters(None) == {}
    for bad in ({"a": 3}, {3: "a"}, {"": "a"}, ["a"]):
        with pytest.raises(ValueError):
            check_filters(bad)


@pytest.mark.parametrize("drawing, ocr", [
    ("⌀20 H7", "Ø20 H7"), ("⌀20", "ø20"), ("⌀20", "∅20"), ("⌀20", "Φ20"), ("⌀20", "φ20"),  # diameter signs
    ("PLAT 80x6,3", "PLAT 80×6,3"), ("4xM16", "4×M16"),  # CAD's x, rec's ×
    ("S355 - JR", "S355 – JR"), ("-0,70", "−0,70"),  # dashes and minus
    ("profilu", "pｒｏfilu"), ("file", "ﬁle"), ("Maßstab", "MASSSTAB"),  # NFKC, full case folding
])
def test_fold_makes_what_drawings_write_and_ocr_reads_match(drawing, ocr):
    assert fold(drawing) == fold(ocr)
    assert check_filters({"text": drawing})["text"] in filter_texts({"text": f"NOTE\n{ocr}\nEND"})["text"]


def test_fold_keeps_distinct_text_distinct():
    for a, b in [("x", "y"), ("1", "l"), ("⌀", "o"), ("+", "-"), ("S235", "S355")]:
        assert fold(a) != fold(b)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=20))
def test_fold_is_idempotent(text):
    """Stored texts and filter substrings are folded once each; folding twice must change nothing."""
    assert fold(fold(text)) == fold(text)


# --------------------------------------------------------------------------------------------
# The local index's filter lookups (trigram index, scans, per-row checks) against Python ``in``
# --------------------------------------------------------------------------------------------

ALPHABET = "aAbßSs25Øø⌀±.:*?[]\\\n -\"'"
_INDEX: dict[str, object] = {}


def _docs() -> list[dict[str, str]]:
    rng = random.Random(5)
    return [{"text": "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 12))),
             "other": rng.choice(["S235", "s355jr", "", "Ø25"])} for _ in range(120)]


@pytest.fixture(scope="module")
def filter_index(tmp_path_factory):
    ix = FaissIndex(tmp_path_factory.mktemp("filters"), 8)
    x = np.random.default_rng(0).normal(size=(120, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    docs = _docs()
    ix.upsert([f"d{i:03d}" for i in range(120)], x, docs)
    _INDEX["ix"], _INDEX["x"], _INDEX["docs"] = ix, x, docs
    yield ix
    ix.close()


def expected_ids(docs, filters):
    folded = check_filters(filters)
    return sorted(f"d{i:03d}" for i, d in enumerate(docs)
                  if all(filter_texts(with_derived_fields(d)).get(f) is not None and n in filter_texts(with_derived_fields(d))[f]
                         for f, n in folded.items()))


@settings(max_examples=150, deadline=None)
@given(needle=st.text(alphabet=ALPHABET, max_size=5), other=st.sampled_from([None, "s", "35", "Ø2", "s235"]))
def test_filter_lookups_agree_with_python_substring(filter_index, needle, other):
    docs, x = _INDEX["docs"], _INDEX["x"]
    filters = {"text": needle} if other is None else {"text": needle, "other": other}
    want = expected_ids(docs, filters)
    assert filter_index.matching_ids(filters) == want
    # search() filters the same way (120 docs: the exact path, all matches ranked).
    assert len(docs) <= EXACT_FILTER_MAX
    got = filter_index.search(x[0], k=len(docs), filters=filters)
    assert sorted(h["id"] for h in got) == want


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_trigram_lookups_agree_with_python_substring_on_needles_the_docs_hold(filter_index, data):
    """Needles cut from the indexed texts themselves (random ones rarely occur): the FTS5 phrase
    lookup finds exactly the drawings whose folded text holds them, quotes and newlines included."""
    docs = _INDEX["docs"]
    text = fold(data.draw(st.sampled_from([d["text"] for d in docs if len(d["text"]) >= 3])))
    start = data.draw(st.integers(0, len(text) - 3))
    needle = text[start:data.draw(st.integers(start + 3, len(text)))]
    want = expected_ids(docs, {"text": needle})
    assert want
    assert filter_index.matching_ids({"text": needle}) == want


def test_short_multibyte_needles_do_not_hit_the_sqlite_trigram_bug(filter_index):
    # SQLite 3.40's trigram GLOB returns no rows for 2-character patterns with a multi-byte
    # character; these needles must still find their drawings.
    docs = _INDEX["docs"]
    for needle in ("ø2", "⌀", "ß", "Ø", "±.", "ss"):
        want = expected_ids(docs, {"text": needle})
        assert want, needle  # the corpus has each of them
        assert filter_index.matching_ids({"text": needle}) == want, needle


def test_extraction_stays_fast_on_pathological_text():
    import time

    t = time.perf_counter()
    extract_fields("PART NO " + "A" * 200_000 + "\n" + "REV " * 50_000 + "\n" + "SCALE\n" * 20_000)
    assert time.perf_counter() - t < 2.0
