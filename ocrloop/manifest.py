"""Ground Truth output manifests for ocrloop's custom labeling task (boxes + transcription).

One JSON object per line (JSON Lines), as Ground Truth writes ``manifests/output/output.manifest``
(https://docs.aws.amazon.com/sagemaker/latest/dg/sms-data-output.html). ocrloop's custom task
(template in ``infra/assets``; consolidation Lambda) writes under the label attribute name
``LABEL_ATTRIBUTE``::

    {"source-ref": "s3://bucket/drawings/abc.png",
     "ocr-labels": {"image_size": [{"width": 2000, "height": 1400, "depth": 3}],
                    "annotations": [{"polygon": [[x, y], [x, y], [x, y], [x, y]],
                                     "transcription": "⌀12 H7", "class": "text"}]},
     "ocr-labels-metadata": {"type": "groundtruth/custom", "job-name": "…", "human-annotated": "yes",
                             "creation-date": "2026-11-21T08:00:00.000000"}}

Polygons are 4 points in pixels: top-left, top-right, bottom-right, bottom-left in reading
direction (PaddleOCR's det label convention). Failed objects carry ``"failure-reason"`` in the
metadata instead of a label.

Nothing is dropped silently: every manifest line yields either a ``LabeledImage`` or a
``Quarantined`` entry with its reason, and every bad annotation inside a good line is quarantined on
its own while the line's other annotations proceed. Standard library only (Lambda path).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Iterable

LABEL_ATTRIBUTE = "ocr-labels"
MAX_TEXT_LEN = 200


@dataclasses.dataclass(frozen=True)
class Annotation:
    """One text line: ``polygon`` 4 × (x, y) px, ``text`` its transcription."""

    polygon: tuple[tuple[float, float], ...]
    text: str


@dataclasses.dataclass(frozen=True)
class LabeledImage:
    """One drawing image of the manifest with its accepted annotations."""

    source_ref: str
    drawing_id: str
    width: int
    height: int
    annotations: tuple[Annotation, ...]
    line_no: int
    human_annotated: bool
    group: str = ""
    """Split key: images of one source document (tiles/sheets of one drawing) share it, so a
    document is never both trained on and held out. Defaults to ``drawing_id``."""


@dataclasses.dataclass(frozen=True)
class Quarantined:
    """A manifest line (``annotation_index`` None) or one annotation that was set aside."""

    line_no: int
    reason: str
    raw: str
    source_ref: str | None = None
    annotation_index: int | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ManifestError(ValueError):
    """Raised for a line that cannot be accepted; the message is the quarantine reason."""


def drawing_id_from_ref(source_ref: str) -> str:
    """``s3://b/drawings/abc-p0.png`` → ``abc-p0`` (file stem)."""
    name = source_ref.rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name


def _polygon(raw: Any, width: int, height: int) -> tuple[tuple[float, float], ...]:
    if not isinstance(raw, list) or len(raw) != 4:
        raise ManifestError("polygon must be a list of 4 [x, y] points")
    points = []
    for point in raw:
        if isinstance(point, dict):
            point = [point.get("x"), point.get("y")]
        if (not isinstance(point, (list, tuple)) or len(point) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in point)):
            raise ManifestError(f"polygon point {point!r} is not [x, y] numbers")
        x, y = float(point[0]), float(point[1])
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ManifestError("polygon point is not finite")
        tol = 2.0  # px: annotators' boxes may touch the border
        if x < -tol or y < -tol or x > width + tol or y > height + tol:
            raise ManifestError(f"polygon point ({x:.1f}, {y:.1f}) outside the {width}x{height} image")
        points.append((min(max(x, 0.0), float(width)), min(max(y, 0.0), float(height))))
    area = 0.5 * abs(sum(points[i][0] * points[(i + 1) % 4][1] - points[(i + 1) % 4][0] * points[i][1]
                         for i in range(4)))
    if area < 16.0:
        raise ManifestError(f"polygon area {area:.1f} px² is degenerate")
    return tuple(points)


def parse_line(line: str, line_no: int, label_attribute: str = LABEL_ATTRIBUTE
               ) -> tuple[LabeledImage, list[Quarantined]]:
    """Parse one manifest line.

    Returns:
        the image with its valid annotations, and the quarantined annotations of that line.

    Raises:
        ManifestError: the whole line is unusable (bad JSON, no source-ref, failed object, no label,
            bad image size); the message is the reason.
    """
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"invalid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(obj, dict):
        raise ManifestError("line is not a JSON object")
    source_ref = obj.get("source-ref")
    if not isinstance(source_ref, str) or not source_ref:
        raise ManifestError("missing source-ref")
    meta = obj.get(f"{label_attribute}-metadata") or {}
    if isinstance(meta, dict) and meta.get("failure-reason"):
        raise ManifestError(f"labeling failed for this object: {meta['failure-reason']}")
    label = obj.get(label_attribute)
    if not isinstance(label, dict):
        raise ManifestError(f"missing label attribute {label_attribute!r}")
    sizes = label.get("image_size")
    size = sizes[0] if isinstance(sizes, list) and sizes else sizes
    try:
        width, height = int(size["width"]), int(size["height"])
    except (TypeError, KeyError, ValueError):
        raise ManifestError("image_size must give width and height") from None
    if width <= 0 or height <= 0:
        raise ManifestError(f"image_size {width}x{height} is not positive")
    annotations = label.get("annotations")
    if not isinstance(annotations, list):
        raise ManifestError("annotations must be a list")
    accepted: list[Annotation] = []
    quarantined: list[Quarantined] = []
    for i, ann in enumerate(annotations):
        try:
            if not isinstance(ann, dict):
                raise ManifestError("annotation is not an object")
            text = ann.get("transcription")
            if not isinstance(text, str):
                raise ManifestError("transcription missing or not a string")
            text = " ".join(text.split())
            if not text:
                raise ManifestError("empty transcription")
            if len(text) > MAX_TEXT_LEN:
                raise ManifestError(f"transcription longer than {MAX_TEXT_LEN} characters")
            accepted.append(Annotation(_polygon(ann.get("polygon"), width, height), text))
        except ManifestError as exc:
            quarantined.append(Quarantined(line_no, str(exc), json.dumps(ann, ensure_ascii=False)[:2000],
                                           source_ref, i))
    human = str(meta.get("human-annotated", "yes")).lower() == "yes" if isinstance(meta, dict) else True
    drawing_id = str(obj.get("drawing-id") or drawing_id_from_ref(source_ref))
    image = LabeledImage(source_ref, drawing_id, width, height, tuple(accepted), line_no, human,
                         str(obj.get("drawing-group") or drawing_id))
    return image, quarantined


def parse_output_manifest(lines: Iterable[str], label_attribute: str = LABEL_ATTRIBUTE
                          ) -> tuple[list[LabeledImage], list[Quarantined]]:
    """Parse a whole output manifest (an iterable of lines; blank lines are skipped).

    A line whose drawing id repeats an earlier line is quarantined as a duplicate (the first wins),
    so one drawing never lands in both training and holdout.
    """
    images: list[LabeledImage] = []
    quarantine: list[Quarantined] = []
    seen: set[str] = set()
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            image, bad = parse_line(line, line_no, label_attribute)
        except ManifestError as exc:
            quarantine.append(Quarantined(line_no, str(exc), line[:2000]))
            continue
        if image.drawing_id in seen:
            quarantine.append(Quarantined(line_no, f"duplicate drawing {image.drawing_id}", line[:2000],
                                          image.source_ref))
            continue
        seen.add(image.drawing_id)
        images.append(image)
        quarantine.extend(bad)
    return images, quarantine


def output_manifest_line(source_ref: str, width: int, height: int, annotations: Iterable[tuple[Any, str]],
                         job_name: str, creation_date: str, label_attribute: str = LABEL_ATTRIBUTE,
                         drawing_id: str | None = None, group: str | None = None) -> str:
    """Serialise one output-manifest line (what the consolidation Lambda writes).

    ``drawing_id`` / ``group`` are optional extra keys (``drawing-id``, ``drawing-group``) carried
    through from the input manifest; see ``LabeledImage.group``."""
    obj: dict[str, Any] = {"source-ref": source_ref}
    if drawing_id:
        obj["drawing-id"] = drawing_id
    if group:
        obj["drawing-group"] = group
    obj[label_attribute] = {
        "image_size": [{"width": int(width), "height": int(height), "depth": 3}],
        "annotations": [
            {"polygon": [[round(float(x), 2), round(float(y), 2)] for x, y in poly], "transcription": text,
             "class": "text"}
            for poly, text in annotations
        ],
    }
    obj[f"{label_attribute}-metadata"] = {"type": "groundtruth/custom", "job-name": job_name,
                                          "human-annotated": "yes", "creation-date": creation_date}
    return json.dumps(obj, ensure_ascii=False)
