"""Vector-index versions on OpenSearch: bootstrap at deploy time, rebuild when the embedder changes.

An index version is named after the embedder (``Embedder.name``: model + preprocessing identity),
so a new image with a different embedder produces a new version:

1. ``setup_index`` (CloudFormation custom resource, on every deploy of the search image): put the
   index template, create the version for the current embedder and, when nothing is served yet,
   point the alias at it. If the alias serves another version, the answer says a rebuild is due.
   ``map_api_roles`` gives the API function's role read/write access to the drawing indices.
2. ``rebuild`` (indexer Lambda, ``{"action": "rebuild"}``): embed every drawing of the raw bucket
   into the new version in chunks that fit the Lambda's time budget (each chunk re-invokes the
   function with the last key done), then swap the alias atomically. Searches keep hitting the old
   version until the swap.

Needs numpy/onnxruntime through ``embed``: runs in the indexer's container image.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from ..indexing import DRAWINGS_PREFIX, drawing_id_of, ocr_text
from ..runtime import Runtime
from .opensearch import OpenSearchIndex

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


API_ROLE = "ocrloop_api"


def map_api_roles(index: OpenSearchIndex, role_arns: list[str]) -> dict[str, Any]:
    """Fine-grained access control: a security role that reads and writes the drawing indices
    (search, register drawings) but cannot manage templates or aliases, mapped to ``role_arns`` as
    backend roles (IAM principals). Both PUTs replace the previous definition (idempotent).

    https://docs.opensearch.org/latest/security/access-control/api/#create-role
    """
    client = index._os
    body = {
        "cluster_permissions": ["cluster_composite_ops", "cluster_monitor"],
        "index_permissions": [{
            "index_patterns": [f"{index.alias}*"],
            "allowed_actions": ["crud", "search", "indices_monitor", "indices:admin/aliases/get"],
        }],
    }
    client.transport.perform_request("PUT", f"/_plugins/_security/api/roles/{API_ROLE}", body=body)
    client.transport.perform_request("PUT", f"/_plugins/_security/api/rolesmapping/{API_ROLE}",
                                     body={"backend_roles": list(role_arns)})
    return {"role": API_ROLE, "backend_roles": list(role_arns)}


def setup_index(index: OpenSearchIndex, embedder_name: str) -> dict[str, Any]:
    """Template + version for ``embedder_name``; returns ``{"index", "served", "rebuild_needed"}``."""
    name = index.create_version(embedder_name, serve_if_first=True)
    served = index.current_index()
    return {"index": name, "served": served, "rebuild_needed": served != name}


def rebuild(rt: Runtime, index: OpenSearchIndex, embed: Callable[[bytes], Any], embedder_name: str, *,
            start_after: str = "", deadline: float | None = None) -> dict[str, Any]:
    """Backfill the version of ``embedder_name`` from ``start_after`` on; swap the alias when done.

    Args:
        embed: ``embed(image_bytes) -> float32 [D]``.
        start_after: last drawing key already indexed by a previous chunk ("" from the start).
        deadline: ``time.monotonic()`` value to stop at (None: no limit).

    Returns:
        ``{"index", "indexed", "done", "last_key"}``; when ``done`` the alias serves ``index`` and
        ``"previous"`` names the version it replaced.
    """
    name = index.create_version(embedder_name, serve_if_first=True)
    keys = [k for k in rt.raw.list(DRAWINGS_PREFIX) if k > start_after and k.lower().endswith(IMAGE_SUFFIXES)]
    indexed = 0
    last = start_after
    for key in keys:
        if deadline is not None and time.monotonic() > deadline:
            return {"index": name, "indexed": indexed, "done": False, "last_key": last}
        image = rt.raw.get(key)
        text, version = ocr_text(rt, image)
        vector = embed(image)
        index.upsert([drawing_id_of(key)], [vector], [{"key": key, "text": text, "ocr_model_version": version or ""}],
                     index=name)
        indexed += 1
        last = key
    previous = index.swap_alias(name) if index.current_index() != name else None
    return {"index": name, "indexed": indexed, "done": True, "last_key": last, "previous": previous}
