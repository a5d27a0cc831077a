#!/usr/bin/env python
"""Horizontal − vertical recall gap pooled over several ``bench/ocr_serving.py`` runs on disjoint pages.

The test pages hold 250 vertical lines on 7 sheets, too few to tell a 3-point gap from none; a run on
other pages that no tuning has read (``--split holdout``) adds lines without touching the test
pages. This script pools the runs' per-sheet counts (``direction_gap.counts_by_sheet``) for every
row that all runs share and gives, per run and pooled: horizontal and vertical exact recall, the gap
in points and its sheet-bootstrap 95 % interval (``sheet_bootstrap``: whole sheets resampled, all
runs' sheets in one pool). It pools the direction pairs too (``direction_pairs.counts_by_sheet``:
the same lines read standing and lying by the ocrloop engine), which separate what the text's
direction costs from what the vertical lines' content costs. Sheet ids must not repeat across runs
(disjoint page sets).

Usage::

    .venv/bin/python bench/pooled_gap.py bench/results/ocr_serving.json \\
        bench/results/ocr_serving-holdout.json --out bench/results/pooled_gap.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ocr_serving import gap_points, lying_minus_standing, sheet_bootstrap  # noqa: E402


def counts_array(by_sheet: dict[str, list[int]], width: int) -> np.ndarray:
    """A ``counts_by_sheet`` mapping as float ``[S, width]``."""
    return np.array(list(by_sheet.values()), dtype=np.float64).reshape(-1, width)


def summarise(counts: np.ndarray) -> dict:
    """Recall and gap of per-sheet counts float ``[S, 4]`` (horizontal read, horizontal lines,
    vertical read, vertical lines): ``{"sheets", "horizontal", "vertical", "horizontal_lines",
    "vertical_lines", "gap_points", "ci95_points"}``; recalls and the gap are ``None`` where a
    direction has no line."""
    total = counts.sum(axis=0)
    h_ok, h_n, v_ok, v_n = (float(x) for x in total)
    defined = h_n > 0 and v_n > 0
    return {"sheets": int(counts.shape[0]), "horizontal_lines": int(h_n), "vertical_lines": int(v_n),
            "horizontal": round(h_ok / h_n, 4) if h_n else None, "vertical": round(v_ok / v_n, 4) if v_n else None,
            "gap_points": round(float(gap_points(total[None])[0]), 2) if defined else None,
            "ci95_points": sheet_bootstrap(counts, gap_points) if defined else None}


def summarise_pairs(counts: np.ndarray) -> dict:
    """Direction pairs from per-sheet counts float ``[S, 3]`` (standing read, lying read, lines):
    ``{"lines", "standing", "lying", "lying_minus_standing_points", "ci95_points"}`` (``None``
    without lines)."""
    st, ly, n = (float(x) for x in counts.sum(axis=0))
    return {"lines": int(n), "standing": round(st / n, 4) if n else None, "lying": round(ly / n, 4) if n else None,
            "lying_minus_standing_points": round(100.0 * (ly - st) / n, 2) if n else None,
            "ci95_points": sheet_bootstrap(counts, lying_minus_standing) if n else None}


def pairs_summary(counts: np.ndarray) -> dict:
    """``direction_pairs`` per-sheet counts float ``[S, 6]`` (standing read, lying read, lines for
    all paired lines, then for the vertical ones) as ``{"all", "vertical"}`` (``summarise_pairs``)."""
    return {"all": summarise_pairs(counts[:, :3]), "vertical": summarise_pairs(counts[:, 3:])}


def pool_pairs(runs: Sequence[dict]) -> dict | None:
    """Direction pairs per run and pooled, for all paired lines and for the vertical lines:
    ``{"runs": [{"all", "vertical"}], "pooled": {"all", "vertical"}}`` (``summarise_pairs``), or
    ``None`` when a run has no ``direction_pairs.counts_by_sheet``."""
    if not all("counts_by_sheet" in (run.get("direction_pairs") or {}) for run in runs):
        return None
    per_run = [counts_array(run["direction_pairs"]["counts_by_sheet"], 6) for run in runs]
    return {"runs": [pairs_summary(c) for c in per_run], "pooled": pairs_summary(np.concatenate(per_run))}


def pool(runs: Sequence[dict]) -> dict[str, dict]:
    """Per row key shared by all ``runs`` (parsed ``ocr_serving`` JSON): ``{"name", "runs":
    [summary per run], "pooled": summary}`` (``summarise``).

    Raises:
        ValueError: a run lacks ``counts_by_sheet`` (made before it was recorded), or a sheet id
            occurs in two runs (the page sets overlap, so pooling would count lines twice).
    """
    seen: set[str] = set()
    for i, run in enumerate(runs):
        if any("counts_by_sheet" not in r["direction_gap"] for r in run["rows"]):
            raise ValueError(f"run {i} has no direction_gap.counts_by_sheet; rerun bench/ocr_serving.py")
        ids = set(run["rows"][0]["direction_gap"]["counts_by_sheet"])
        if seen & ids:
            raise ValueError(f"run {i} repeats sheets of an earlier run: {sorted(seen & ids)[:3]}")
        seen |= ids
    rows = [{r["key"]: r for r in run["rows"]} for run in runs]
    out: dict[str, dict] = {}
    for key, first in rows[0].items():
        if all(key in by_key for by_key in rows):
            per_run = [counts_array(by_key[key]["direction_gap"]["counts_by_sheet"], 4) for by_key in rows]
            out[key] = {"name": first["name"], "runs": [summarise(c) for c in per_run],
                        "pooled": summarise(np.concatenate(per_run))}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", type=Path, help="ocr_serving JSON files on disjoint page sets")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "pooled_gap.json")
    args = ap.parse_args(argv)
    runs = [json.loads(p.read_text(encoding="utf-8")) for p in args.results]
    table = pool(runs)

    def fmt(s: dict) -> str:
        ci = s["ci95_points"]
        return (f"{s['horizontal']:.3f} | {s['vertical']:.3f} ({s['vertical_lines']}) | {s['gap_points']:+.1f} | "
                f"{ci[0]:+.1f} … {ci[1]:+.1f}" if s["gap_points"] is not None and ci else "— | — | — | —")

    labels = [f"{run['sheets']['split']} ({run['sheets']['count']} sheets)" for run in runs] + ["pooled"]
    print("| row | pages | horiz | vert (lines) | gap | 95 % over sheets |\n| --- | --- | --- | --- | --- | --- |")
    for row in table.values():
        for label, s in zip(labels, row["runs"] + [row["pooled"]]):
            print(f"| {row['name']} | {label} | {fmt(s)} |")
    pairs = pool_pairs(runs)
    if pairs:
        print("\nDirection pairs (ocrloop engine; the same lines read standing and lying)\n"
              "| pages | lines | standing | lying | lying − standing | 95 % over sheets |\n| --- | --- | --- | --- | --- | --- |")
        for label, p in zip(labels, pairs["runs"] + [pairs["pooled"]]):
            for part in ("all", "vertical"):
                q = p[part]
                ci = q["ci95_points"] or [float("nan")] * 2
                print(f"| {label}, {part} lines | {q['lines']} | {q['standing']} | {q['lying']} | "
                      f"{q['lying_minus_standing_points']:+.2f} | {ci[0]:+.2f} … {ci[1]:+.2f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "pooled_gap", "inputs": [str(p) for p in args.results],
                                    "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                                    "rows": table, "direction_pairs": pairs}, indent=1, ensure_ascii=False) + "\n",
                        encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
