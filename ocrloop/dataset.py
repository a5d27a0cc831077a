"""Immutable dataset versions built from a completed labeling job.

Layout of one version in the datasets store (every object written with ``if_absent=True``; a
version is never rewritten — a re-delivered event finds ``version.json`` and reuses it)::

    versions/<version>/det/label.txt          PaddleOCR det labels: "<image key>\\t[{"transcription", "points"}]"
    versions/<version>/det/train.txt          the same lines, training drawings only
    versions/<version>/det/holdout.txt        the same lines, held-out drawings only (det gate)
    versions/<version>/rec/crops/<id>.png     line crops (PaddleOCR get_rotate_crop_image rule)
    versions/<version>/rec/train.jsonl        training samples {"id", "image", "text", "drawing_id"}
    versions/<version>/rec/holdout.jsonl      held-out samples (whole drawings held out)
    versions/<version>/quarantine.jsonl       every manifest line / annotation set aside, with reason
    versions/<version>/version.json           summary, counts, source labeling job, created time

Cropping uses Pillow (``Image.transform`` QUAD), which is light enough for the Lambda path.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import math
from typing import Any, Callable, Sequence

from .manifest import LabeledImage, Quarantined
from .ports import BlobStore, ObjectExists

VERSIONS_PREFIX = "versions/"


def split_value(drawing_id: str, seed: int) -> float:
    """Stable position of a drawing (or group) in [0, 1): SHA-256 of seed and id."""
    digest = hashlib.sha256(f"{seed}:{drawing_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def holdout_drawing(drawing_id: str, fraction: float, seed: int) -> bool:
    """Deterministic split by drawing: True when ``drawing_id`` is held out.

    The split never depends on batch order, so a drawing stays on its side across versions.
    """
    return split_value(drawing_id, seed) < fraction


def crop_quad(image: Any, polygon: Sequence[Sequence[float]]) -> Any:
    """Rectify one text quadrilateral from a Pillow image.

    Args:
        image: ``PIL.Image.Image`` (any mode; converted to RGB).
        polygon: 4 × (x, y) px: top-left, top-right, bottom-right, bottom-left.

    Returns:
        RGB ``PIL.Image.Image`` of size (w, h) with w = max top/bottom edge, h = max left/right
        edge; rotated 90° counter-clockwise when h / w ≥ 1.5 (PaddleOCR ``get_rotate_crop_image``).
    """
    from PIL import Image

    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = [(float(x), float(y)) for x, y in polygon]
    w = max(1, int(round(max(math.dist((x0, y0), (x1, y1)), math.dist((x3, y3), (x2, y2))))))
    h = max(1, int(round(max(math.dist((x0, y0), (x3, y3)), math.dist((x1, y1), (x2, y2))))))
    # QUAD data: upper-left, lower-left, lower-right, upper-right source corners.
    out = image.convert("RGB").transform((w, h), Image.Transform.QUAD,
                                         (x0, y0, x3, y3, x2, y2, x1, y1), resample=Image.Resampling.BICUBIC)
    if h / w >= 1.5:
        out = out.transpose(Image.Transpose.ROTATE_90)
    return out


def sample_id(drawing_id: str, index: int, text: str) -> str:
    return f"{drawing_id}-{index:03d}-{hashlib.sha1(text.encode()).hexdigest()[:6]}"


def build_version(store: BlobStore, version: str, images: Sequence[LabeledImage],
                  quarantine: Sequence[Quarantined], read_image: Callable[[str], bytes], *,
                  labeling_job: str, holdout_fraction: float, seed: int) -> dict[str, Any]:
    """Write dataset version ``version`` and return its ``version.json`` summary.

    Args:
        store: the datasets blob store.
        images: parsed manifest images (``manifest.parse_output_manifest``).
        quarantine: entries already set aside by the parser; images that cannot be read are added.
        read_image: source-ref → image bytes (PNG/JPEG).
        labeling_job: lineage.
        holdout_fraction / seed: drawing-level split (``holdout_drawing``).

    Idempotent: if ``version.json`` exists its content is returned and nothing is written.
    """
    from PIL import Image, UnidentifiedImageError

    prefix = f"{VERSIONS_PREFIX}{version}/"
    if store.exists(prefix + "version.json"):
        return json.loads(store.get(prefix + "version.json"))
    quarantine = list(quarantine)
    det_lines, det_held, train, holdout = [], [], [], []
    groups = {img.group or img.drawing_id for img in images}
    held_groups = {g for g in groups if holdout_drawing(g, holdout_fraction, seed)}
    forced = False
    if not held_groups and len(groups) >= 2 and holdout_fraction > 0:
        # A small batch can miss the holdout by chance; hold out its lowest-ranked group so the
        # gate always has new-domain data (recorded as holdout_forced).
        held_groups = {min(groups, key=lambda g: split_value(g, seed))}
        forced = True
    for img in images:
        try:
            pil = Image.open(io.BytesIO(read_image(img.source_ref)))
            pil.load()
        except (KeyError, OSError, UnidentifiedImageError) as exc:
            quarantine.append(Quarantined(img.line_no, f"image unreadable: {exc}", img.source_ref, img.source_ref))
            continue
        if (pil.width, pil.height) != (img.width, img.height):
            quarantine.append(Quarantined(
                img.line_no, f"image is {pil.width}x{pil.height}, manifest says {img.width}x{img.height}",
                img.source_ref, img.source_ref))
            continue
        held = (img.group or img.drawing_id) in held_groups
        det_lines.append(img.source_ref + "\t" + json.dumps(
            [{"transcription": a.text, "points": [[round(x, 2), round(y, 2)] for x, y in a.polygon]}
             for a in img.annotations], ensure_ascii=False))
        det_held.append(held)
        for i, ann in enumerate(img.annotations):
            sid = sample_id(img.drawing_id, i, ann.text)
            buf = io.BytesIO()
            crop_quad(pil, ann.polygon).save(buf, format="PNG")
            key = f"{prefix}rec/crops/{sid}.png"
            try:
                store.put(key, buf.getvalue(), if_absent=True)
            except ObjectExists:
                pass  # same id → same bytes (deterministic crop); a retried run
            sample = {"id": sid, "image": key, "text": ann.text, "drawing_id": img.drawing_id,
                      "group": img.group or img.drawing_id, "dataset_version": version}
            (holdout if held else train).append(sample)
    summary = {
        "version": version,
        "labeling_job": labeling_job,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "drawings": len(det_lines),
        "holdout_drawings": len({s["drawing_id"] for s in holdout}),
        "holdout_groups": len({s["group"] for s in holdout}),
        "train_samples": len(train),
        "holdout_samples": len(holdout),
        "quarantined": len(quarantine),
        "holdout_fraction": holdout_fraction,
        "holdout_forced": forced,
        "seed": seed,
    }
    files = {
        "det/label.txt": "\n".join(det_lines) + "\n",
        "det/train.txt": "".join(line + "\n" for line, h in zip(det_lines, det_held) if not h),
        "det/holdout.txt": "".join(line + "\n" for line, h in zip(det_lines, det_held) if h),
        "rec/train.jsonl": "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in train),
        "rec/holdout.jsonl": "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in holdout),
        "quarantine.jsonl": "".join(json.dumps(q.to_json(), ensure_ascii=False) + "\n" for q in quarantine),
    }
    for name, text in files.items():
        store.put(prefix + name, text.encode(), if_absent=True)
        summary.setdefault("sha256", {})[name] = hashlib.sha256(text.encode()).hexdigest()
    store.put(prefix + "version.json", json.dumps(summary, indent=2).encode(), if_absent=True)
    return summary


def read_jsonl(store: BlobStore, key: str) -> list[dict[str, Any]]:
    if not store.exists(key):
        return []
    return [json.loads(line) for line in store.get(key).decode().splitlines() if line.strip()]


def list_versions(store: BlobStore) -> list[str]:
    """Completed dataset versions (those with ``version.json``), oldest first (ids sort by time)."""
    keys = store.list(VERSIONS_PREFIX)
    return sorted({k[len(VERSIONS_PREFIX):].split("/", 1)[0] for k in keys if k.endswith("/version.json")})
