#!/usr/bin/env python
"""Replay (b) against replay + distillation (c) over several seeds: does the loop's default
distillation earn its cost?

``bench/continual.py`` runs each arm once (seed 17). One run cannot tell a 1.5-point difference
between (b) and (c) from the spread of training itself, so this runs ``continual.py --runs b,c
--seed S`` for each seed on the same data set (``<cache>/bench/continual/<key>``) and pairs the
arms by seed. The seed moves the 7:3 replay draw (``ocrloop.replay.mix``) and the training job's
seed (batch order, the new CTC-head rows); the data, the settings and v0 stay fixed.

Reported per seed and arm, from the served model (ONNX Runtime on ``model.onnx``,
``continual.rescore``): new-domain line accuracy, fresh symbol lines (1,000, never tuned on),
old-domain line accuracy and its drop from v0 in points, the gate's decision (in-job scores,
``ocrloop.gate`` defaults) and training CPU seconds. Then the mean of each and the paired
difference (c) − (b): mean, and a 95 % t interval over seeds (Student 1908; ``T975``).

Usage::

    .venv/bin/python bench/continual_seeds.py    # seeds 17–21 (75 min on 2 cores on 2026-12-06; ≈ 17 min a new seed)

Seed 17 reuses the finished jobs of ``bench/continual.py`` (``--resume``). Writes
``bench/results/continual_seeds.json`` and ``.md``; each seed's own ``continual.json`` is kept
under ``<cache>/bench/continual-seeds/seed<S>``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import continual  # noqa: E402

# Two-sided 95 % quantiles of Student's t for 1..10 degrees of freedom (NIST/SEMATECH e-Handbook of
# Statistical Methods, 1.3.6.7.2, "Critical values of the Student's t distribution"; scipy is not
# a dependency).
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)
ARMS = {"b": "(b) replay 7:3", "c": "(c) replay 7:3 + KD"}


def arm_figures(result: dict, key: str) -> dict:
    """One arm of one seed's ``continual.json``: served scores (exact), drop, gate, CPU s."""
    name = ARMS[key]
    served, v0 = result["served_scores"][name], result["served_scores"]["v0"]
    summary = result["runs"][key]["summary"]
    return {
        "new_line_acc": served["new"]["exact"]["line_acc"],
        "fresh_symbols_line_acc": served["fresh_symbols"]["exact"]["line_acc"],
        "old_line_acc": served["old"]["exact"]["line_acc"],
        "old_drop_pts": round(100 * (v0["old"]["exact"]["line_acc"] - served["old"]["exact"]["line_acc"]), 3),
        "gate_passed": summary["gate_passed"],
        "train_cpu_s": summary["train_cpu_s"],
        "train_wall_s": summary["train_wall_s"],
    }


def paired(values_b: list[float], values_c: list[float]) -> dict:
    """Mean of (c) − (b) over seeds and its 95 % t interval (``None`` with fewer than 2 seeds, or
    more than ``len(T975) + 1``)."""
    diffs = [c - b for b, c in zip(values_b, values_c)]
    n = len(diffs)
    mean = statistics.fmean(diffs)
    if not 2 <= n <= len(T975) + 1:
        return {"mean": mean, "ci95": None, "diffs": diffs}
    half = T975[n - 2] * statistics.stdev(diffs) / math.sqrt(n)
    return {"mean": mean, "ci95": [mean - half, mean + half], "diffs": diffs}


def table(per_seed: dict[int, dict], summary: dict) -> str:
    cols = [("new_line_acc", "new-domain line acc %", 100), ("fresh_symbols_line_acc", "fresh symbols %", 100),
            ("old_drop_pts", "old drop (pts)", 1), ("train_cpu_s", "train CPU s", 1)]
    lines = ["| seed | arm | " + " | ".join(c[1] for c in cols) + " | gate |", "|" + "---|" * (len(cols) + 3)]
    for seed, arms in per_seed.items():
        for key in ARMS:
            f = arms[key]
            cells = " | ".join(f"{f[c] * scale:.1f}" if c != "old_drop_pts" else f"{f[c]:+.2f}" for c, _, scale in cols)
            lines.append(f"| {seed} | {ARMS[key]} | {cells} | {'pass' if f['gate_passed'] else 'reject'} |")
    lines.append("")
    lines.append("| figure | (b) mean | (c) mean | (c) − (b) mean | 95 % t interval |")
    lines.append("|---|---|---|---|---|")
    for c, label, scale in cols:
        s = summary[c]
        ci = "–" if s["c_minus_b"]["ci95"] is None else \
            f"{s['c_minus_b']['ci95'][0] * scale:+.2f} … {s['c_minus_b']['ci95'][1] * scale:+.2f}"
        lines.append(f"| {label} | {s['b_mean'] * scale:.2f} | {s['c_mean'] * scale:.2f} | "
                     f"{s['c_minus_b']['mean'] * scale:+.2f} | {ci} |")
    lines.append(f"| gate passes | {summary['gate_passes']['b']} of {len(per_seed)} | "
                 f"{summary['gate_passes']['c']} of {len(per_seed)} | | |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="17,18,19,20,21", help="comma-separated training seeds (the committed result: 17–21)")
    ap.add_argument("--quick", action="store_true", help="continual.py's smoke settings (small data, a few steps)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--work", type=Path, default=None,
                    help="per-seed continual.json folders (default <cache>/bench/continual-seeds)")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not seeds or len(set(seeds)) != len(seeds):
        raise SystemExit(f"--seeds {args.seeds!r}: give distinct integers")
    from ocrloop.config import cache_dir

    work = args.work or cache_dir() / "bench" / "continual-seeds"
    suffix = "_quick" if args.quick else ""
    t0 = time.perf_counter()
    per_seed: dict[int, dict] = {}
    for seed in seeds:
        out = work / f"seed{seed}"
        continual.log(f"seed {seed}: (b) and (c)")
        rc = continual.main(["--runs", "b,c", "--seed", str(seed), "--resume", "--out", str(out)]
                            + (["--quick"] if args.quick else []))
        if rc != 0:
            raise SystemExit(f"seed {seed}: continual.py returned {rc}")
        result = json.loads((out / f"continual{suffix}.json").read_text())
        per_seed[seed] = {key: arm_figures(result, key) for key in ARMS} | {"data_dir": result["data_dir"]}
    data_dirs = {v["data_dir"] for v in per_seed.values()}
    if len(data_dirs) != 1:
        raise SystemExit(f"the seeds ran on different data sets: {sorted(data_dirs)}")
    summary = {}
    for c in ("new_line_acc", "fresh_symbols_line_acc", "old_drop_pts", "train_cpu_s"):
        b = [per_seed[s]["b"][c] for s in seeds]
        cc = [per_seed[s]["c"][c] for s in seeds]
        summary[c] = {"b_mean": statistics.fmean(b), "c_mean": statistics.fmean(cc), "c_minus_b": paired(b, cc)}
    summary["gate_passes"] = {k: sum(per_seed[s][k]["gate_passed"] for s in seeds) for k in ARMS}
    text = table(per_seed, summary)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"mode": "quick" if args.quick else "full", "seeds": seeds, "data_dir": data_dirs.pop(), "per_seed": per_seed, "summary": summary,
              "wall_s": round(time.perf_counter() - t0, 1)}
    (args.out / f"continual_seeds{suffix}.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
    (args.out / f"continual_seeds{suffix}.md").write_text(
        f"# Replay against replay + distillation, over seeds{' (quick)' if args.quick else ''}\n\n{text}\n")
    continual.log(f"wrote {args.out / f'continual_seeds{suffix}.json'} in {result['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
