#!/usr/bin/env python
"""Whole sheets read by a model the loop fine-tuned, on drawings it never saw (cross-fitted).

``bench/ocr_serving.py`` measures the *base* model every deployment starts from (PP-OCRv5 mobile
rec). Users serve what the loop trains from their annotators' labels. This script asks what that
fine-tune changes on whole sheets, above all for the vertical lines, without letting the model see
a line of the drawing it is scored on:

1. The corpus's source drawings (``ocrloop.data.corpus``: one id per DXF file) are cut into
   ``--folds`` folds of about equal line count (``source_folds``).
2. For each fold, one training job fine-tunes v0 on the line crops of every *other* fold's
   drawings (``ocrloop.model.datasets.corpus_lines``; the CAD strings are the labels, as the
   annotators' answers are in the demo), mixed 7 : 3 with replayed general-text lines by the loop's
   own ``replay.mix``, with the loop's recipe (``LoopConfig().rec_hyperparameters()``: 240 steps ×
   16, backbone frozen, distillation from v0). It runs ``training_image/train.py`` under the
   SageMaker container contract, as ``bench/continual.py`` does; its validation channel is the
   fold's own lines, its old-domain channel general-text lines v0 reads exactly.
3. Every test page and held-out page of ``bench/ocr_serving.py`` (``build_sheets``: the same
   images and labels) is read twice by ``OcrEngine`` in-process: with v0, and with the fold model
   that did not train on the page's drawing. The det model is v0's in both.

Reported per page set (test, held-out, both): exact recall, horizontal and vertical recall, the
horizontal − vertical gap with its 95 % interval over sheets (``direction_gap``), misses by cause,
and the fine-tuned − v0 recall difference with its paired 95 % interval (``recall_difference``),
with the lines only one model reads (``changed_lines``); the fine-tuned models' direction pairs
(``direction_pairs``: every page read again turned by 90°, so each line is read standing and
lying by the same model); also per fold (the sources, the job's own gate metrics and the pages
it read). v0's reading must repeat
``bench/ocr_serving.py``'s engine row line for line (checked: ``v0_matches``), so both scripts
score the same thing.

Nothing here is timed: both models run the same graph (only weights differ), so speed is
``bench/ocr_serving.py``'s. Usage::

    .venv/bin/python bench/finetuned_sheets.py            # 3 folds: ≈ 40 min on 2 cores (3 jobs of ≈ 11 min)
    .venv/bin/python bench/finetuned_sheets.py --resume   # the jobs kept, pages read again (≈ 5 min)
    .venv/bin/python bench/finetuned_sheets.py --quick    # 2 folds, 4 steps, 3 pages a set (smoke)

Writes ``bench/results/finetuned_sheets[_quick].json``; job folders live under
``<cache>/bench/finetuned-jobs`` (``--resume`` reuses finished ones).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.continual import make_job, mixed_manifest, run_job  # noqa: E402
from bench.ocr_serving import (Sheet, build_sheets, direction, direction_pairs, engine_readings,  # noqa: E402
                               match_sheet, miss_causes, misses_by_cause, recall_difference, summarize)
from bench.pooled_gap import counts_array, pairs_summary  # noqa: E402

SPLIT_ARGS = {"test": (27, 2), "holdout": (99, 99)}
"""``build_sheets`` arguments (max sheets, per source) of the page sets ``bench/ocr_serving.py``
reports: ``--sheets 27 --per-source 2`` and ``--split holdout --per-source 99``."""


def source_folds(line_counts: Mapping[str, int], k: int) -> dict[str, int]:
    """Assign every source drawing to one of ``k`` folds so the folds hold about as many lines.

    Greedy longest-processing-time order (Graham 1969, "Bounds on multiprocessing timing
    anomalies"): sources by line count, largest first (ties by id), each to the fold with the fewest
    lines so far (ties: lowest fold). Deterministic; a drawing is never split.

    Args:
        line_counts: lines per source id (all > 0).
        k: number of folds, ≥ 2.

    Returns:
        ``{source id: fold}`` with folds ``0 … k-1``, every fold non-empty.

    Raises:
        ValueError: ``k`` < 2, fewer sources than folds, or a count ≤ 0.
    """
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    if len(line_counts) < k:
        raise ValueError(f"{len(line_counts)} sources cannot fill {k} folds")
    if any(n <= 0 for n in line_counts.values()):
        raise ValueError("every source needs at least one line")
    load = [0] * k
    out: dict[str, int] = {}
    for sid in sorted(line_counts, key=lambda s: (-line_counts[s], s)):
        fold = min(range(k), key=lambda f: (load[f], f))
        out[sid] = fold
        load[fold] += line_counts[sid]
    return out


def sheet_source(sheet: Sheet) -> str:
    """The source drawing id of a ``build_sheets`` page: its id is ``[split-]<source>-<dpi>dpi-…``.

    Raises:
        ValueError: the id does not have that form.
    """
    parts = sheet.sheet_id.split("-")
    if parts[0] in ("dev", "holdout"):
        parts = parts[1:]
    if len(parts) < 3 or not parts[1].endswith("dpi"):
        raise ValueError(f"not a build_sheets page id: {sheet.sheet_id!r}")
    return parts[0]


Readings = list[tuple[np.ndarray, str]]
"""One page's readings: ``[(polygon float32 [4, 2] px, text)]``."""


def read_pages(model_dir: Path, images: Iterable[np.ndarray]) -> list[Readings]:
    """Every page (BGR, decoded) read by ``OcrEngine(model_dir)`` in-process (v0's det model), in
    order; a generator of images keeps one decoded page in memory at a time."""
    from ocrloop.ocr.engine import OcrEngine

    engine = OcrEngine(model_dir)
    try:
        return [engine_readings(engine, image) for image in images]
    finally:
        engine.close()


def changed_lines(sheets: Sequence[Sheet], base: Sequence[dict], tuned: Sequence[dict],
                  tuned_preds: Sequence[Readings]) -> list[dict]:
    """Lines read exactly by one model only: page, label, direction, which model read it and, for
    the lines the fine-tuned model lost, why (``miss_causes``)."""
    out = []
    for s, hb, ht, p in zip(sheets, base, tuned, tuned_preds):
        causes = miss_causes(s.texts, p, ht["exact"])
        for t, a, b, cause in zip(s.texts, hb["exact"], ht["exact"], causes):
            if a != b:
                out.append({"sheet": s.sheet_id, "text": t["text"], "direction": direction(t["angle_deg"]),
                            "read_by": "finetuned" if b else "v0", **({"finetuned_miss": cause} if cause else {})})
    return out


def compare(sheets: Sequence[Sheet], base: Sequence[dict], tuned: Sequence[dict],
            base_preds: Sequence[Readings], tuned_preds: Sequence[Readings]) -> dict:
    """v0 vs fine-tuned on the same sheets (``match_sheet`` hits and the readings, per sheet):
    each one's ``summarize`` figures that matter here and misses by cause, the paired exact-recall
    difference (points, fine-tuned − v0) with its 95 % interval, and the lines only one reads."""
    def brief(hits):
        s = summarize(sheets, hits)
        return {"recall_exact": s["recall_exact"], "horizontal": s["horizontal"]["exact"], "vertical": s["vertical"]["exact"],
                "direction_gap": {k: s["direction_gap"][k] for k in ("points", "ci95_points", "sheets_with_vertical",
                                                                      "counts_by_sheet")}}

    b, t = brief(base), brief(tuned)
    b["misses_by_cause"] = misses_by_cause(sheets, base_preds, base)[0]
    t["misses_by_cause"] = misses_by_cause(sheets, tuned_preds, tuned)[0]
    n = sum(len(s.texts) for s in sheets)
    read_b = sum(sum(h["exact"]) for h in base)
    read_t = sum(sum(h["exact"]) for h in tuned)
    both = sum(x and y for hb, ht in zip(base, tuned) for x, y in zip(hb["exact"], ht["exact"]))
    return {"sheets": len(sheets), "lines": n, "v0": b, "finetuned": t,
            "difference_points": round(100.0 * (read_t - read_b) / n, 2) if n else None,
            "difference_ci95_points": recall_difference(sheets, tuned, base),
            "lines_read": {"both": both, "only_finetuned": read_t - both, "only_v0": read_b - both,
                           "neither": n - read_t - read_b + both},
            "changed_lines": changed_lines(sheets, base, tuned, tuned_preds)}


def _num(x: float | None, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def _interval(ci: Sequence[float] | None) -> str:
    return f" ({ci[0]:+.1f} … {ci[1]:+.1f})" if ci else ""


def table(sets: Mapping[str, dict]) -> str:
    """Markdown table of ``compare`` results by page set."""
    out = ["| pages | lines | model | exact | horiz | vert (lines) | H − V, 95 % over sheets | fine-tuned − v0, 95 % |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for split, r in sets.items():
        for key, label in (("v0", "v0 (base)"), ("finetuned", "fine-tuned, drawing unseen")):
            m, gap = r[key], r[key]["direction_gap"]
            diff = (_num(r["difference_points"], "+.1f") + _interval(r["difference_ci95_points"])) if key == "finetuned" else ""
            out.append(f"| {split} ({r['sheets']}) | {r['lines']} | {label} | {_num(m['recall_exact'], '.3f')} | "
                       f"{_num(m['horizontal']['recall'], '.3f')} | {_num(m['vertical']['recall'], '.3f')} "
                       f"({m['vertical']['lines']}) | {_num(gap['points'], '+.1f')}{_interval(gap['ci95_points'])} | {diff} |")
    out += ["", "| pages | fine-tuned, the same lines standing and lying | lines | standing | lying | lying − standing, 95 % |",
            "| --- | --- | --- | --- | --- | --- |"]
    for split, r in sets.items():
        for part in ("all", "vertical"):
            q = r["finetuned_direction_pairs"][part]
            out.append(f"| {split} ({r['sheets']}) | {part} lines | {q['lines']} | {_num(q['standing'], '.3f')} | "
                       f"{_num(q['lying'], '.3f')} | {_num(q['lying_minus_standing_points'], '+.2f')}{_interval(q['ci95_points'])} |")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 folds, 4 steps, 3 pages per set")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--pool", type=int, default=1500, help="general-text replay lines rendered (the 7:3 mix draws from them)")
    ap.add_argument("--old", type=int, default=200, help="old-domain lines (v0 reads them exactly) in each job's gate")
    ap.add_argument("--validation", type=int, default=400, help="at most this many of the fold's own lines in its job's gate")
    ap.add_argument("--resume", action="store_true", help="reuse finished job folders with the same hyperparameters")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    from ocrloop.config import LoopConfig, cache_dir
    from ocrloop.model.base import ensure_base_model
    from ocrloop.model.datasets import base_sets, corpus_lines, read_rows, subsample, write_channel

    t0 = time.perf_counter()
    load_start = os.getloadavg()
    folds_k = 2 if args.quick else args.folds
    config = LoopConfig(max_steps=4, batch_size=8) if args.quick else LoopConfig()
    suffix = "_quick" if args.quick else ""
    out_path = args.out or ROOT / "bench" / "results" / f"finetuned_sheets{suffix}.json"
    work = cache_dir() / "bench" / f"finetuned-jobs{suffix}"
    work.mkdir(parents=True, exist_ok=True)
    v0_dir = ensure_base_model()

    lines = corpus_lines()
    counts: dict[str, int] = {}
    for ln in lines:
        counts[ln.group] = counts.get(ln.group, 0) + 1
    folds = source_folds(counts, folds_k)
    print(f"{len(lines)} corpus lines of {len(counts)} drawings; folds: "
          + ", ".join(f"{f}: {sum(counts[s] for s in folds if folds[s] == f)} lines / "
                      f"{sum(1 for s in folds if folds[s] == f)} drawings" for f in range(folds_k)), flush=True)

    data = work / f"data-pool{args.pool}-old{args.old}-seed{config.seed}"  # built once per size and seed
    if not (data / "old_test" / "manifest.jsonl").is_file() or not (data / "pool" / "manifest.jsonl").is_file():
        pool, old_test, base_report = base_sets(args.pool, args.old, config.seed)
        write_channel(data / "pool", pool, "base")
        write_channel(data / "old_test", old_test, "base")
        (data / "base_report.json").write_text(json.dumps(base_report))
    base_report = json.loads((data / "base_report.json").read_text())
    pool_rows = [dict(r, _src=str(data / "pool")) for r in read_rows(data / "pool")]

    jobs = []
    for f in range(folds_k):
        train_lines = [ln for ln in lines if folds[ln.group] != f]
        own = [ln for ln in lines if folds[ln.group] == f]
        if args.quick:
            train_lines = subsample(train_lines, 60, config.seed)
        fold_dir = data / f"fold{f}"
        write_channel(fold_dir / "new_train", train_lines, "new")
        write_channel(fold_dir / "validation", subsample(own, 40 if args.quick else args.validation, config.seed + 1), "new")
        new_rows = [dict(r, _src=str(fold_dir / "new_train")) for r in read_rows(fold_dir / "new_train")]
        mixed, mix_report = mixed_manifest(new_rows, pool_rows, seed=config.seed)
        rows = [(Path(r.pop("_src")), {k: v for k, v in r.items() if k != "id"}) for r in mixed]
        hp = {**config.rec_hyperparameters(), "model_version": f"finetuned-fold{f}",
              "parent_version": "v0-ppocrv5-mobile-rec", "det_steps": 0}
        root = make_job(work, f"fold{f}", v0_dir, {"new_test": fold_dir / "validation", "old_test": data / "old_test"},
                        rows, hp, None, args.resume)
        print(f"[{time.strftime('%H:%M:%S')}] fold {f}: training on {len(train_lines)} drawing lines + "
              f"{len(rows) - len(train_lines)} replay, {hp['max_steps']} steps × {hp['batch_size']}", flush=True)
        metrics = run_job(root, work / f"fold{f}.log")
        cand, champ = metrics["candidate"], metrics["champion"]
        jobs.append({"fold": f, "sources": sorted(s for s in folds if folds[s] == f), "train_lines": len(train_lines),
                     "manifest_rows": len(rows), "mix": mix_report, "hyperparameters": hp, "model_dir": str(root / "model"),
                     "job_wall_s": metrics.get("job_wall_s"), "train_cpu_s": metrics["train"].get("cpu_s"),
                     "gate": {"passed": metrics["gate"]["passed"], "reasons": metrics["gate"]["reasons"]},
                     "own_lines_line_acc": {"v0": champ["validation"]["line_acc"], "finetuned": cand["validation"]["line_acc"]},
                     "old_domain_line_acc": {"v0": champ["olddomain"]["line_acc"], "finetuned": cand["olddomain"]["line_acc"]}})
        print(f"   own lines {jobs[-1]['own_lines_line_acc']}, old domain {jobs[-1]['old_domain_line_acc']}, "
              f"gate {'passed' if metrics['gate']['passed'] else 'failed'}", flush=True)

    reference = {}
    for split, name in (("test", "ocr_serving.json"), ("holdout", "ocr_serving-holdout.json")):
        path = ROOT / "bench" / "results" / name
        if path.is_file():
            rows_ = json.loads(path.read_text())["rows"]
            reference[split] = next((r for r in rows_ if r.get("key") == "engine"), None)

    sets: dict[str, dict] = {}
    every: dict[str, list] = {"sheets": [], "base": [], "tuned": [], "base_preds": [], "tuned_preds": []}
    pair_counts: dict[str, list[int]] = {}
    for split, (max_sheets, per_source) in SPLIT_ARGS.items():
        sheets = build_sheets(3 if args.quick else max_sheets, per_source, split)
        base_preds = read_pages(v0_dir, (s.load() for s in sheets))
        tuned_preds: list[Readings | None] = [None] * len(sheets)
        split_pairs: dict[str, list[int]] = {}
        for f in range(folds_k):
            idx = [i for i, s in enumerate(sheets) if folds.get(sheet_source(s)) == f]
            part = [sheets[i] for i in idx]
            if not part:
                continue
            model_dir = Path(jobs[f]["model_dir"])
            images = [s.load() for s in part]
            preds = read_pages(model_dir, images)
            for i, p in zip(idx, preds):
                tuned_preds[i] = p
            # the same lines read lying and standing by this fold's model (bench/ocr_serving.py's pairs)
            split_pairs.update(direction_pairs(part, images, preds, model_dir)["counts_by_sheet"])
            del images
        missing = [s.sheet_id for s, p in zip(sheets, tuned_preds) if p is None]
        if missing:
            raise RuntimeError(f"pages of drawings outside every fold: {missing}")
        base = [match_sheet(s.texts, p) for s, p in zip(sheets, base_preds)]
        tuned = [match_sheet(s.texts, p) for s, p in zip(sheets, tuned_preds)]
        result = compare(sheets, base, tuned, base_preds, tuned_preds)
        result["finetuned_direction_pairs"] = {**pairs_summary(counts_array(split_pairs, 6)), "counts_by_sheet": split_pairs}
        result["pages_by_fold"] = {str(f): sum(folds[sheet_source(s)] == f for s in sheets) for f in range(folds_k)}
        ref = reference.get(split)
        if ref and not args.quick:
            # the same lines read on every page (per-page counts by direction) and the same recall
            result["v0_matches"] = (ref["recall_exact"] == result["v0"]["recall_exact"] and ref["direction_gap"]["counts_by_sheet"]
                                    == result["v0"]["direction_gap"]["counts_by_sheet"])
        sets[split] = result
        pair_counts.update(split_pairs)
        for key, value in (("sheets", sheets), ("base", base), ("tuned", tuned), ("base_preds", base_preds),
                           ("tuned_preds", tuned_preds)):
            every[key] += value
        print(f"[{time.strftime('%H:%M:%S')}] {split}: {result['sheets']} pages, {result['lines']} lines: "
              f"v0 {result['v0']['recall_exact']} → fine-tuned {result['finetuned']['recall_exact']}", flush=True)
    sets["both"] = compare(every["sheets"], every["base"], every["tuned"], every["base_preds"], every["tuned_preds"])
    sets["both"]["finetuned_direction_pairs"] = pairs_summary(counts_array(pair_counts, 6))

    print("\n" + table(sets))
    out = {
        "command": "bench/finetuned_sheets.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_start": [round(x, 2) for x in load_start]},
        "folds": {s: folds[s] for s in sorted(folds)}, "fold_lines": {str(f): sum(counts[s] for s in folds if folds[s] == f)
                                                                     for f in range(folds_k)},
        "config": dataclasses.asdict(config), "base_pool": base_report, "jobs": jobs, "sets": sets,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(out, indent=1, ensure_ascii=False))
    print(f"\nwrote {out_path} ({out['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
