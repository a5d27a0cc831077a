"""Lambda (container image ``lambdas/Dockerfile``): the drawing-similarity indexer.

Events:
* S3 ``Object Created`` under ``drawings/`` (the ``index_drawing`` rule): embed the drawing and
  upsert it (``ocrloop.indexing.make_index_handler``), under powertools idempotency like the loop
  handlers;
* ``{"action": "refresh", "info": {...}}`` (async invoke from ``on_endpoint_updated`` through
  ``Runtime.refresh_index``): re-read every drawing with the newly deployed model
  (``ocrloop.indexing.make_refresh``);
* ``{"action": "rebuild", "start_after": key}`` (from the search setup custom resource when the
  embedder changed, then from itself chunk by chunk): backfill a new index version and swap the alias
  (``ocrloop.aws.search.rebuild``).

numpy/onnxruntime/opensearch-py come from the image; the embedder model was prepared at image build
(``OCRLOOP_CACHE``), so a cold start only loads it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import boto3

from ocrloop import config

from ._common import json_safe, logger, loop_handler, runtime

#: Seconds kept in reserve when a rebuild chunk stops (re-invocation + last upsert).
REBUILD_RESERVE_S = 90
_EMBEDDER: Any = None


def embedder() -> Any:
    global _EMBEDDER
    if _EMBEDDER is None:
        from ocrloop.index.embed import ResNetDrawingEmbedder

        _EMBEDDER = ResNetDrawingEmbedder()
    return _EMBEDDER


def embed(image: bytes) -> Any:
    """Drawing bytes → L2-normalised float32 [D]."""
    from ocrloop.index.embed import decode_image

    return embedder().embed([decode_image(image)])[0]


def _index_drawing(event: dict[str, Any], rt: Any) -> dict[str, Any]:
    from ocrloop.indexing import make_index_handler

    return make_index_handler(embed)(event, rt)


_on_object_created = loop_handler(config.INDEX_DRAWING, core=_index_drawing)


def handler(event: dict[str, Any], context: Any) -> Any:
    action = event.get("action")
    if action == "refresh":
        from ocrloop.indexing import make_refresh

        return json_safe(make_refresh(embed)(runtime(), event.get("info", {})))
    if action == "rebuild":
        from ocrloop.aws.search import rebuild

        rt = runtime()
        remaining_s = context.get_remaining_time_in_millis() / 1000.0
        result = rebuild(rt, rt.index, embed, embedder().name, start_after=event.get("start_after", ""),
                         deadline=time.monotonic() + max(0.0, remaining_s - REBUILD_RESERVE_S))
        if not result["done"]:
            boto3.client("lambda").invoke(
                FunctionName=context.invoked_function_arn, InvocationType="Event",
                Payload=json.dumps({"action": "rebuild", "start_after": result["last_key"]}).encode())
        logger.info("rebuild chunk", extra=result)
        return json_safe(result)
    return _on_object_created(event, context)
