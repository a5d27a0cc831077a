"""Drawing index maintenance: embed new drawings, refresh OCR text after a model rollout.

``index_drawing`` is the target of the ``index_drawing`` rule (S3 Object Created under
``drawings/``): it embeds the drawing with the pluggable embedder and stores it with the text the
serving model reads (so searches can filter on part numbers, materials, title-block fields).
``refresh_index`` runs after a verified rollout: it re-reads every drawing with the new model and
updates the text metadata; when the embedder changed it builds a new index version, backfills it
and swaps the alias (``ocrloop.index.faiss_index``).

Needs numpy/onnxruntime (the embedder): on AWS it runs in the indexer function's container image.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

from .runtime import Runtime

log = logging.getLogger("ocrloop.indexing")
DRAWINGS_PREFIX = "drawings/"


def drawing_id_of(key: str) -> str:
    """``drawings/abc-p0.png`` → ``abc-p0``."""
    return key[len(DRAWINGS_PREFIX):].rsplit(".", 1)[0].replace("/", "_")


def ocr_text(rt: Runtime, image: bytes, content_type: str = "image/png") -> tuple[str, str | None]:
    """Text of a drawing as the serving endpoint reads it (lines joined by newlines) and the model
    version; ``("", None)`` when no endpoint is in service yet."""
    try:
        result = json.loads(rt.hosting.invoke(rt.names.endpoint_name, image, content_type))
    except Exception as exc:  # no endpoint yet: index the image, text follows on the next refresh
        log.info("no OCR text for the index yet: %s", exc)
        return "", None
    return "\n".join(line["text"] for line in result.get("lines", [])), result.get("model_version")


def index_one(rt: Runtime, embed: Callable[[bytes], Any], key: str) -> dict[str, Any]:
    image = rt.raw.get(key)
    from .handlers import content_type_of

    text, version = ocr_text(rt, image, content_type_of(key))
    did = drawing_id_of(key)
    get = getattr(rt.index, "get", None)
    previous = (get(did) if get is not None else None) or {}
    # Keep what clients registered with the drawing (file name, part number…); refresh the OCR fields.
    meta = {**previous, "key": key, "text": text, "ocr_model_version": version or ""}
    rt.index.upsert([did], embed(image)[None, :], [meta])  # type: ignore[union-attr]
    return {"drawing_id": did, "ocr_model_version": version, "text_chars": len(text)}


def make_index_handler(embed: Callable[[bytes], Any]) -> Callable[[dict[str, Any], Runtime], dict[str, Any]]:
    """Build the ``index_drawing`` handler around ``embed(image_bytes) -> float32 [D]``."""

    def index_drawing(event: dict[str, Any], rt: Runtime) -> dict[str, Any]:
        key = event["detail"]["object"]["key"]
        if not key.lower().endswith((".png", ".jpg", ".jpeg", ".tif", ".tiff")):
            return {"skipped": f"{key} is not an image"}
        return index_one(rt, embed, key)

    return index_drawing


def make_refresh(embed: Callable[[bytes], Any]) -> Callable[[Runtime, dict[str, Any]], dict[str, Any]]:
    """Build ``Runtime.refresh_index``: re-OCR every drawing with the newly deployed model."""

    def refresh(rt: Runtime, info: dict[str, Any]) -> dict[str, Any]:
        keys = [k for k in rt.raw.list(DRAWINGS_PREFIX)]
        updated = 0
        for key in keys:
            index_one(rt, embed, key)
            updated += 1
        return {"reindexed": updated, "model_version": info.get("model_version"), "count": rt.index.count()}  # type: ignore[union-attr]

    return refresh
