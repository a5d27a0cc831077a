"""The OCR benchmark's uncertainty figures (sheet-bootstrap intervals) and its count of readings that
overlap no label (bench/ocr_serving.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.ocr_serving import Sheet, direction_gap, gap_points as gap, recall_difference, sheet_bootstrap
from bench.pooled_gap import pool, pool_pairs


def test_identical_sheets_give_a_point_interval() -> None:
    counts = np.tile([38.0, 40.0, 9.0, 10.0], (12, 1))  # 95 % and 90 % on every sheet
    assert sheet_bootstrap(counts, gap) == [5.0, 5.0]


def test_interval_holds_the_estimate_and_repeats_with_the_seed() -> None:
    rng = np.random.default_rng(3)
    counts = np.stack([rng.integers(30, 41, 20), np.full(20, 40), rng.integers(5, 11, 20), np.full(20, 10)], 1).astype(float)
    point = gap(counts.sum(0, keepdims=True))[0]
    low, high = sheet_bootstrap(counts, gap)
    assert low < point < high
    assert sheet_bootstrap(counts, gap) == [low, high]
    assert sheet_bootstrap(counts, gap, seed=1) != [low, high]
    narrow = sheet_bootstrap(counts, gap, level=0.5)
    assert low < narrow[0] < narrow[1] < high


def test_interval_cuts_the_tails_the_level_leaves() -> None:
    """Two sheets, one line each, one read: a resample reads 0, 1 or 2 of 2 lines with chances
    1/4, 1/2, 1/4, so the 40 % interval (30th–70th percentiles) is the middle value alone and the
    90 % one (5th–95th) reaches both ends."""
    counts = np.array([[0.0, 1.0], [1.0, 1.0]])

    def share(c: np.ndarray) -> np.ndarray:
        return c[:, 0] / c[:, 1]

    assert sheet_bootstrap(counts, share, level=0.4) == [0.5, 0.5]
    assert sheet_bootstrap(counts, share, level=0.9) == [0.0, 1.0]


def test_sheet_resampling_covers_the_true_gap() -> None:
    """Sheets differ (each draws its own recall per direction); the 95 % interval from whole
    sheets holds the true 5-point gap in ≥ 88 % of 200 simulated benchmarks (resampling single
    lines instead covered 81 % of 100 in the same set-up: it ignores the sheet effect)."""
    rng = np.random.default_rng(1)
    covered = 0
    for sim in range(200):
        h, v = rng.beta(19, 1, 27), rng.beta(9, 1, 27)  # mean recall 0.95 and 0.90 per sheet
        counts = np.stack([rng.binomial(40, h), np.full(27, 40), rng.binomial(10, v), np.full(27, 10)], 1).astype(float)
        low, high = sheet_bootstrap(counts, gap, resamples=1000, seed=sim)
        covered += low <= 5.0 <= high
    assert covered >= 176


def test_undefined_resamples_are_dropped_or_answer_none() -> None:
    # One sheet of 27 has vertical lines: about 36 % of resamples lack it and are dropped.
    counts = np.zeros((27, 4))
    counts[:, :2] = [39, 40]
    counts[0] = [40, 40, 5, 10]
    low, high = sheet_bootstrap(counts, gap)
    assert low <= high and np.isfinite([low, high]).all()
    # A statistic defined on under half the resamples gives no interval.
    assert sheet_bootstrap(counts, lambda c: np.where(c[:, 3] >= 20, gap(c), np.nan)) is None
    assert sheet_bootstrap(np.zeros((0, 4)), gap) is None


@pytest.mark.parametrize("counts, level", [(np.zeros(4), 0.95), (np.zeros((3, 4)), 1.0), (np.zeros((3, 4)), 0.0)])
def test_bad_arguments_raise(counts: np.ndarray, level: float) -> None:
    with pytest.raises(ValueError):
        sheet_bootstrap(counts, gap, level=level)


def _sheet(sheet_id: str, angles: list[float]) -> Sheet:
    texts = [{"text": f"t{i}", "polygon": [[0, 0], [1, 0], [1, 1], [0, 1]], "angle_deg": a} for i, a in enumerate(angles)]
    return Sheet(sheet_id, Path("/nonexistent.png"), 10, 10, 150, 0, "m", texts)


def test_direction_gap_counts_lines_by_direction_and_sheet() -> None:
    sheets = [_sheet("a", [0, 0, 0, 0, 90, -90]), _sheet("b", [0, 0, 180, 45]), _sheet("c", [0, 0, 0, 0, 0, 0, 90, 90])]
    hits = [{"exact": [True, True, True, False, True, False]}, {"exact": [True, True, False, False]},
            {"exact": [True] * 6 + [True, True]}]
    out = direction_gap(sheets, hits)
    # horizontal 11 of 12, vertical 3 of 4 (180° and 45° lines count in neither)
    assert out["points"] == pytest.approx(100 * (11 / 12 - 3 / 4), abs=0.01)
    assert out["sheets"] == 3 and out["sheets_with_vertical"] == 2
    assert out["vertical_lines_by_sheet"] == {"a": 2, "c": 2}
    assert out["counts_by_sheet"] == {"a": [3, 4, 1, 2], "b": [2, 2, 0, 0], "c": [6, 6, 2, 2]}
    assert out["ci95_points"][0] <= out["points"] <= out["ci95_points"][1]
    none = direction_gap([_sheet("b", [0, 0])], [{"exact": [True, False]}])
    assert none["points"] is None and none["ci95_points"] is None


def _run(split: str, sheets: list[Sheet], rows: dict[str, list[dict]]) -> dict:
    return {"sheets": {"split": split, "count": len(sheets)},
            "rows": [{"key": k, "name": k, "direction_gap": direction_gap(sheets, hits)} for k, hits in rows.items()]}


def test_pooled_gap_sums_disjoint_runs_and_refuses_overlap() -> None:
    a = [_sheet("t1", [0] * 10 + [90] * 10), _sheet("t2", [0] * 10)]
    b = [_sheet("h1", [0] * 20 + [-90] * 20)]
    test = _run("test", a, {"engine": [{"exact": [True] * 10 + [True] * 5 + [False] * 5}, {"exact": [True] * 9 + [False]}],
                            "other": [{"exact": [False] * 20}, {"exact": [False] * 10}]})
    holdout = _run("holdout", b, {"engine": [{"exact": [True] * 20 + [True] * 19 + [False]}]})
    out = pool([test, holdout])
    assert list(out) == ["engine"]  # only rows that every run has
    runs, pooled = out["engine"]["runs"], out["engine"]["pooled"]
    assert [r["gap_points"] for r in runs] == [45.0, 5.0]  # 19/20 − 5/10, 20/20 − 19/20
    # pooled: horizontal 39 of 40, vertical 24 of 30
    assert (pooled["horizontal_lines"], pooled["vertical_lines"], pooled["sheets"]) == (40, 30, 3)
    assert pooled["gap_points"] == pytest.approx(100 * (39 / 40 - 24 / 30), abs=0.01)
    assert pooled["ci95_points"][0] <= pooled["gap_points"] <= pooled["ci95_points"][1]
    with pytest.raises(ValueError, match="repeats sheets"):
        pool([test, test])
    del holdout["rows"][0]["direction_gap"]["counts_by_sheet"]
    with pytest.raises(ValueError, match="counts_by_sheet"):
        pool([test, holdout])


def test_pooled_direction_pairs_sum_per_sheet_counts() -> None:
    # per sheet: standing read, lying read, lines (all paired lines), then the same for vertical lines
    test = {"direction_pairs": {"counts_by_sheet": {"t1": [8, 9, 10, 4, 5, 5], "t2": [10, 10, 10, 0, 0, 0]}}}
    holdout = {"direction_pairs": {"counts_by_sheet": {"h1": [15, 14, 20, 5, 4, 10]}}}
    out = pool_pairs([test, holdout])
    assert out["runs"][0]["all"]["lying_minus_standing_points"] == pytest.approx(5.0)  # 19 vs 18 of 20
    assert out["runs"][1]["vertical"]["lying_minus_standing_points"] == pytest.approx(-10.0)
    pooled = out["pooled"]
    assert (pooled["all"]["lines"], pooled["all"]["standing"], pooled["all"]["lying"]) == (40, 0.825, 0.825)
    assert pooled["vertical"]["lines"] == 15 and pooled["vertical"]["lying_minus_standing_points"] == pytest.approx(0.0)
    low, high = pooled["all"]["ci95_points"]
    assert low <= 0.0 <= high
    assert pool_pairs([test, {"direction_pairs": {}}]) is None


def test_recall_difference_is_paired() -> None:
    """Both rows are scored on the same resampled sheets: a row that reads one more line than
    the other on every sheet differs by exactly that, whatever the draw."""
    sheets = [_sheet(str(i), [0] * n) for i, n in enumerate([10, 20, 40, 5])]
    theirs = [{"exact": [True] * (len(s.texts) // 2) + [False] * (len(s.texts) - len(s.texts) // 2)} for s in sheets]
    ours = [{"exact": [True] * (len(s.texts) // 2 + 1) + [False] * (len(s.texts) - len(s.texts) // 2 - 1)} for s in sheets]
    low, high = recall_difference(sheets, ours, theirs)
    assert 0 < low < high  # one more line per sheet: 4 of 75 points in total, more where sheets are short
    assert recall_difference(sheets, ours, ours) == [0.0, 0.0]


def test_unlabelled_readings_count_what_overlaps_no_label() -> None:
    from bench.ocr_serving import unlabelled_readings

    def square(x0: float, y0: float, side: float = 10.0) -> np.ndarray:
        return np.array([[x0, y0], [x0 + side, y0], [x0 + side, y0 + side], [x0, y0 + side]], dtype=np.float32)

    sheet = _sheet("a", [0, 0])
    sheet.texts[0]["polygon"] = square(0, 0).tolist()
    sheet.texts[1]["polygon"] = square(100, 0).tolist()
    preds = [(square(2, 2), "600"),  # on a label
             (square(108, 0), "1"),  # a fifth of it on a label: counts as on it
             (square(109.5, 0), "x"),  # 5 % on a label: unlabelled
             (square(50, 50), "O"), (square(70, 50), "O")]  # marks read as text
    out = unlabelled_readings([sheet], [preds])
    assert {k: out[k] for k in ("readings", "stray", "predicted", "share", "top")} == {
        "readings": 3, "stray": 3, "predicted": 5, "share": 0.6, "top": [["O", 2], ["x", 1]]}
    assert unlabelled_readings([_sheet("b", [])], [[]])["share"] is None


def test_stray_readings_overlap_no_drawn_text() -> None:
    """Of the unlabelled readings, those on a text the renderer drew but did not label (a
    schedule's ``---``) are not stray; a hole read ``O`` is."""
    from bench.ocr_serving import unlabelled_readings

    def square(x0: float, y0: float, side: float = 10.0) -> list:
        return [[x0, y0], [x0 + side, y0], [x0 + side, y0 + side], [x0, y0 + side]]

    sheet = _sheet("a", [0])
    sheet.texts[0]["polygon"] = square(0, 0)
    sheet.other_texts = [{"text": "---", "polygon": square(50, 0), "angle_deg": 0.0, "reason": "punctuation_only"}]
    preds = [(np.asarray(square(1, 1), np.float32), "600"), (np.asarray(square(51, 0), np.float32), "---"),
             (np.asarray(square(90, 90), np.float32), "O")]
    out = unlabelled_readings([sheet], [preds])
    assert (out["readings"], out["stray"], out["predicted"]) == (2, 1, 3)
    assert out["stray_top"] == [["O", 1]] and out["stray_share"] == round(1 / 3, 4)


def test_seed_pairs_give_the_mean_difference_and_a_t_interval() -> None:
    """(c) − (b) per seed: 1, 0, 2 → mean 1, sample sd 1, half-width t(0.975, 2) / √3 = 4.303 / √3."""
    from bench.continual_seeds import paired

    out = paired([0.5, 0.7, 0.2], [1.5, 0.7, 2.2])
    assert out["diffs"] == pytest.approx([1.0, 0.0, 2.0])
    assert out["mean"] == pytest.approx(1.0)
    assert out["ci95"] == pytest.approx([1 - 4.303 / 3**0.5, 1 + 4.303 / 3**0.5])
    assert paired([0.5], [0.9])["ci95"] is None  # one seed has no spread
    same = paired([0.9, 0.8, 0.7, 0.6], [0.9, 0.8, 0.7, 0.6])
    assert same["mean"] == 0 and same["ci95"] == [0, 0]
