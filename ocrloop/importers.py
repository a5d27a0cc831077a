"""Annotations from other labeling tools → Ground Truth output manifest lines.

Local labeling jobs are completed by importing what annotators produced. Accepted formats:

* Ground Truth output manifest (JSON Lines; passed through unchanged);
* PPOCRLabel ``Label.txt``: ``<image path>\\t[{"transcription": str, "points": [[x, y] × 4], "difficult": bool}]``
  (https://github.com/PFCCLab/PPOCRLabel, "Label.txt" format);
* LabelMe JSON: ``{"imagePath", "imageWidth", "imageHeight", "shapes": [{"label", "points",
  "shape_type": "polygon"|"rectangle"}]}`` — the shape's ``label`` is the transcription.

Images are matched to the labeling job's input items by file name. Conversion errors are raised, not
skipped, because a half-imported job would silently lose labels; per-annotation problems (bad
polygons, empty text) are left to the manifest parser, which quarantines them with reasons.
Standard library only.
"""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any, Iterable, Sequence

from .manifest import output_manifest_line


class ImportError_(ValueError):
    """Raised when annotations cannot be matched to the job or are not in the stated format."""


def _by_name(items: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["source-ref"].rsplit("/", 1)[-1]: item for item in items}


def _quad(points: Sequence[Sequence[float]], shape_type: str = "polygon") -> list[list[float]]:
    if shape_type == "rectangle" and len(points) == 2:
        (x0, y0), (x1, y1) = points
        x0, x1, y0, y1 = min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)
        return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
    return [list(p) for p in points]


def from_ppocrlabel(text: str, items: Sequence[dict[str, Any]], sizes: dict[str, tuple[int, int]], job: str) -> str:
    """Convert a PPOCRLabel ``Label.txt``.

    Args:
        text: the file's content.
        items: the job's input manifest items (``LocalLabeling.input_items``).
        sizes: image file name → (width, height) px.
        job: labeling job name (written into the metadata).

    Raises:
        ImportError_: a line without a tab / JSON list, or an image that is not in the job.
    """
    by_name = _by_name(items)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat()
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise ImportError_(f"Label.txt line {n}: expected '<path>\\t<json>'")
        path, payload = line.split("\t", 1)
        name = path.replace("\\", "/").rsplit("/", 1)[-1]
        if name not in by_name:
            raise ImportError_(f"Label.txt line {n}: {name} is not in the labeling job")
        try:
            anns = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise ImportError_(f"Label.txt line {n}: {exc.msg}") from None
        if not isinstance(anns, list):
            raise ImportError_(f"Label.txt line {n}: annotations must be a JSON list")
        w, h = sizes[name]
        pairs = [(a.get("points"), a.get("transcription")) for a in anns if isinstance(a, dict)]
        out.append(output_manifest_line(by_name[name]["source-ref"], w, h, pairs, job, now))
    return "\n".join(out) + "\n"


def from_labelme(docs: Iterable[dict[str, Any]], items: Sequence[dict[str, Any]], job: str) -> str:
    """Convert LabelMe JSON documents (one per image).

    Raises:
        ImportError_: a document without imagePath/size, or an image that is not in the job.
    """
    by_name = _by_name(items)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat()
    out = []
    for doc in docs:
        try:
            name = str(doc["imagePath"]).replace("\\", "/").rsplit("/", 1)[-1]
            w, h = int(doc["imageWidth"]), int(doc["imageHeight"])
        except (KeyError, TypeError, ValueError):
            raise ImportError_("LabelMe document needs imagePath, imageWidth and imageHeight") from None
        if name not in by_name:
            raise ImportError_(f"LabelMe: {name} is not in the labeling job")
        pairs = [(_quad(s.get("points") or [], s.get("shape_type", "polygon")), s.get("label"))
                 for s in doc.get("shapes", []) if isinstance(s, dict)]
        out.append(output_manifest_line(by_name[name]["source-ref"], w, h, pairs, job, now))
    return "\n".join(out) + "\n"
