"""bench/finetuned_sheets.py's cross-fitting: which drawings each fold's model may train on, and
which drawing a benchmark page comes from."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from bench.finetuned_sheets import sheet_source, source_folds
from bench.ocr_serving import Sheet

counts = st.dictionaries(st.text("0123456789abcdef", min_size=12, max_size=12), st.integers(1, 2000), min_size=2, max_size=30)


@given(counts, st.integers(2, 6))
def test_every_drawing_is_in_exactly_one_non_empty_fold(line_counts: dict[str, int], k: int) -> None:
    if len(line_counts) < k:
        with pytest.raises(ValueError):
            source_folds(line_counts, k)
        return
    folds = source_folds(line_counts, k)
    assert set(folds) == set(line_counts)
    assert set(folds.values()) == set(range(k))
    assert source_folds(dict(reversed(list(line_counts.items()))), k) == folds  # order of the input is irrelevant
    # Graham's bound for greedy largest-first: no fold exceeds the mean by more than the largest drawing
    load = [sum(n for s, n in line_counts.items() if folds[s] == f) for f in range(k)]
    assert max(load) - sum(load) / k <= max(line_counts.values())


def test_folds_balance_the_corpus_shape() -> None:
    # the corpus's line counts per drawing (4,085 lines, 18 drawings)
    sizes = [970, 454, 451, 353, 287, 265, 205, 192, 187, 170, 146, 143, 139, 59, 22, 21, 20, 1]
    folds = source_folds({f"d{i:02d}": n for i, n in enumerate(sizes)}, 3)
    load = [sum(n for i, n in enumerate(sizes) if folds[f"d{i:02d}"] == f) for f in range(3)]
    assert sorted(load) == [1354, 1364, 1367]


def test_bad_fold_requests_are_refused() -> None:
    with pytest.raises(ValueError):
        source_folds({"a": 1, "b": 2}, 1)
    with pytest.raises(ValueError):
        source_folds({"a": 1, "b": 0}, 2)


def _sheet(sheet_id: str) -> Sheet:
    return Sheet(sheet_id, Path(f"{sheet_id}.png"), 10, 10, 150, 0, "m", [])


def test_page_ids_name_their_drawing() -> None:
    assert sheet_source(_sheet("27f18c37474c-300dpi-01")) == "27f18c37474c"
    assert sheet_source(_sheet("5b2194919f05-300dpi-19-r180")) == "5b2194919f05"
    assert sheet_source(_sheet("holdout-edf051f9d971-150dpi-03-r90")) == "edf051f9d971"
    assert sheet_source(_sheet("dev-d2851f8069b1-150dpi-10")) == "d2851f8069b1"
    for bad in ("drawing.png", "holdout-abc", "abc-def-01"):
        with pytest.raises(ValueError):
            sheet_source(_sheet(bad))


def _box(x: float, y: float, w: float, h: float) -> list[list[float]]:
    return [[x, y], [x + w, y], [x + w, y + h], [x, y + h]]


def test_compare_counts_lines_each_model_reads_and_why_the_other_missed() -> None:
    import numpy as np

    from bench.finetuned_sheets import compare
    from bench.ocr_serving import match_sheet, misses_by_cause

    texts = [{"text": "M16x150", "polygon": _box(10, 10, 100, 20), "angle_deg": 0.0},
             {"text": "Ilosc", "polygon": _box(10, 60, 60, 20), "angle_deg": 0.0},
             {"text": "50", "polygon": _box(200, 10, 20, 40), "angle_deg": 90.0},
             {"text": "A", "polygon": _box(300, 10, 20, 20), "angle_deg": 180.0}]
    sheet = Sheet("holdout-abc-150dpi-01", Path("p.png"), 400, 100, 150, 0, "m", texts)

    def read(*pairs):
        return [(np.asarray(_box(*box), dtype=np.float32), text) for box, text in pairs]

    v0 = read(((10, 10, 100, 20), "M16×150"), ((10, 60, 60, 20), "Ilosc"), ((200, 10, 20, 40), "50"))
    tuned = read(((10, 10, 100, 20), "M16x150"), ((10, 60, 60, 20), "llosc"), ((200, 10, 20, 90), "5055"))
    hv, ht = match_sheet(texts, v0), match_sheet(texts, tuned)
    assert misses_by_cause([sheet], [v0], [hv]) == (
        {"horizontal": {"confusable": 1}, "vertical": {}}, [])
    causes, vertical = misses_by_cause([sheet], [tuned], [ht])
    assert causes == {"horizontal": {"misread": 1}, "vertical": {"merged": 1}}
    assert vertical == [{"sheet": sheet.sheet_id, "text": "50", "cause": "merged"}]

    r = compare([sheet], [hv], [ht], [v0], [tuned])
    assert r["lines_read"] == {"both": 0, "only_finetuned": 1, "only_v0": 2, "neither": 1}
    assert r["difference_points"] == -25.0
    assert {(c["text"], c["read_by"], c.get("finetuned_miss")) for c in r["changed_lines"]} == {
        ("M16x150", "finetuned", None), ("Ilosc", "v0", "misread"), ("50", "v0", "merged")}
    assert r["v0"]["vertical"] == {"recall": 1.0, "lines": 1} and r["finetuned"]["vertical"] == {"recall": 0.0, "lines": 1}
