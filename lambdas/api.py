"""Lambda (container image ``lambdas/Dockerfile``): the HTTP API behind API Gateway.

The same ASGI app the local API serves under uvicorn (``ocrloop.api.create_app``), adapted to API
Gateway REST proxy events by Mangum, with the AWS ports: the endpoint (OCR), the registry (model
versions), the OpenSearch index and the raw bucket (drawings). Built once per container;
``lifespan="off"``: nothing to start or stop per request.

Uploads are capped at 4.5 MiB: a synchronous Lambda payload is at most 6 MB and API Gateway
base64-encodes binary bodies (4/3 larger).
"""

from __future__ import annotations

from typing import Any

from ._common import runtime

MAX_UPLOAD_BYTES = 4_718_592
_HANDLER: Any = None


def services() -> Any:
    """``ApiServices`` wired to the container's runtime."""
    from ocrloop.api import ApiServices
    from ocrloop.index.embed import ResNetDrawingEmbedder

    rt = runtime()
    if rt.index is None:
        raise RuntimeError("OCRLOOP_OPENSEARCH_ENDPOINT is not set: the API needs the search domain")
    return ApiServices(hosting=rt.hosting, registry=rt.registry, index=rt.index, embedder=ResNetDrawingEmbedder(),
                       names=rt.names, drawings=rt.raw, max_upload_bytes=MAX_UPLOAD_BYTES)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _HANDLER
    if _HANDLER is None:
        from mangum import Mangum

        from ocrloop.api import create_app

        _HANDLER = Mangum(create_app(services()), lifespan="off")
    return _HANDLER(event, context)
