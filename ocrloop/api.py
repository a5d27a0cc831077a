"""The ocrloop HTTP API: one ASGI app for both runtimes (uvicorn locally; API Gateway → Lambda via
Mangum on AWS).

Endpoints (OpenAPI at ``/docs``, schema at ``/openapi.json``):

* ``GET /health`` — liveness plus the live index version and embedder.
* ``POST /v1/ocr`` — OCR a drawing with the serving endpoint (``Hosting.invoke``). Body: multipart
  field ``file`` or the raw image (``image/*`` / ``application/octet-stream``).
* ``POST /v1/drawings`` — register a drawing: store ``drawings/<id>.png``, embed, upsert into the
  index. Multipart: ``file``, optional ``drawing_id``, ``replace``, ``ocr``, ``metadata`` (a JSON
  object) and any other text fields (stored as metadata strings).
* ``POST /v1/search`` — similar drawings. Multipart ``file`` (+ ``k``, ``filters``), or JSON /
  form ``{"drawing_id", "k", "filters"}``. ``filters`` (``{field: substring}``, all must match,
  case-insensitive substring of the field's text, with OCR look-alikes such as ``Ø``/``⌀`` and
  ``×``/``x`` equal: ``fields.fold``) run inside the similarity search on both
  runtimes, so ``k`` matching drawings come back whenever ``k`` exist. Filterable fields: any
  metadata key, the OCR ``text``, and the title-block fields derived from it
  (``ocrloop.index.fields``: ``part_number``, ``drawing_number``, ``material``, ``scale``,
  ``revision``, ``title``), e.g. ``{"material": "S235", "scale": "1:2"}``.
* ``GET /v1/models``, ``GET /v1/models/{version}`` — model packages of the registry group.

Errors are JSON ``{"detail": message}``: 400 undecodable image / malformed body, 404 unknown
drawing or model, 409 drawing exists, 413 body or image too large, 415 unsupported media type,
422 invalid parameter (``k``, ``drawing_id``, ``filters``), 502 the OCR endpoint answered garbage or
failed, 503 no OCR endpoint in service / index built by another embedder.

Size limits: behind API Gateway + Lambda a synchronous request is at most 6 MB (Lambda payload
quota, https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html), ≈ 4.5 MB of binary
after API Gateway's base64 encoding; ``ApiServices.max_upload_bytes`` guards the local server.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import re
import uuid
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from . import __version__
from .config import Names
from .handlers import STAGE
from .indexing import DRAWINGS_PREFIX
from .index.embed import Embedder, ImageTooLarge, MAX_PIXELS, decode_image
from .index import UNNAMED
from .index.fields import FIELDS, with_derived_fields
from .ports import BlobStore, Hosting, Registry, VectorIndex

log = logging.getLogger("ocrloop.api")

__all__ = ["ApiServices", "create_app"]

DRAWING_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
"""Drawing ids become blob keys (``drawings/<id>.png``) and S3 object keys: letters, digits, ``.``,
``_``, ``-``, at most 128 characters, not starting with a separator (no path traversal)."""

IMAGE_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "TIFF": "image/tiff", "BMP": "image/bmp",
               "WEBP": "image/webp", "GIF": "image/gif"}
ENDPOINT_TYPES = ("image/png", "image/jpeg")
"""Content types the inference server accepts (model package ``SupportedContentTypes``); other image
formats are re-encoded to PNG before invoking."""

RESERVED_FORM_FIELDS = {"file", "drawing_id", "replace", "ocr", "metadata", "k", "filters"}

FILTERS_HELP = ('JSON object {field: substring}, all must match (case-insensitive substring of the field\'s text; '
                'Ø ø ∅ Φ match ⌀, × matches x, dashes match -), '
                'e.g. {"text": "M8"} or {"material": "S235", "scale": "1:2"}. Fields: any metadata key, the OCR '
                f'"text", and the title-block fields derived from it: {", ".join(FIELDS)}.')


@dataclasses.dataclass
class ApiServices:
    """What the API needs. Attributes are the ports (``ocrloop.ports``) and the embedder.

    Attributes:
        hosting: serving endpoint (``invoke``).
        registry: model registry (``list_model_packages`` / ``describe_model_package``).
        index: vector index (``FaissIndex`` locally, OpenSearch on AWS).
        embedder: drawing embedder; must be the one the live index version was built with.
        names: resource names (endpoint, model package group).
        drawings: blob store holding ``drawings/<id>.png`` (the raw bucket).
        max_upload_bytes: request body limit (default 20 MiB; see the module docstring for AWS).
        max_pixels: decoded image limit (``embed.MAX_PIXELS``).
        max_k: largest ``k`` a search may ask for.
    """

    hosting: Hosting
    registry: Registry
    index: VectorIndex
    embedder: Embedder
    names: Names
    drawings: BlobStore
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = MAX_PIXELS
    max_k: int = 100


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise HTTPException(422, f"{name} must be true or false, got {value!r}")


def _hosting_status(exc: Exception) -> int:
    """HTTP status for a failed ``Hosting.invoke``: the model server's 4xx → 400 (bad image for the
    model), its 5xx → 502, anything else (no endpoint, not InService, unreachable) → 503."""
    status = getattr(exc, "status_code", None)
    if status is None:  # botocore ModelError carries the container's status
        status = getattr(exc, "response", {}).get("OriginalStatusCode") if isinstance(getattr(exc, "response", None), dict) else None
    if isinstance(status, int):
        return 400 if 400 <= status < 500 else 502
    return 503


def create_app(services: ApiServices) -> FastAPI:
    """Build the ASGI app around ``services``.

    Args:
        services: ports and limits (``ApiServices``).

    Returns:
        a FastAPI app; serve it with uvicorn or wrap it with ``mangum.Mangum``.
    """
    s = services
    app = FastAPI(title="ocrloop", version=__version__,
                  description="OCR of engineering drawings, drawing similarity search and model versions.")

    # ------------------------------------------------------------------ body helpers
    async def read_body(request: Request) -> bytes:
        """The whole body, refusing more than ``max_upload_bytes`` (413) before reading it all."""
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > s.max_upload_bytes:
            raise HTTPException(413, f"request body is {declared} bytes; the limit is {s.max_upload_bytes} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > s.max_upload_bytes:
                raise HTTPException(413, f"request body exceeds the limit of {s.max_upload_bytes} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
        request._body = body  # noqa: SLF001  lets request.form()/json() parse the bytes already read
        return body

    async def read_form(request: Request) -> Any:
        await read_body(request)
        try:
            return await request.form(max_files=1, max_fields=200, max_part_size=1024 * 1024)
        except HTTPException:
            raise
        except Exception as exc:  # starlette MultiPartException, malformed urlencoding
            raise HTTPException(400, f"malformed form body: {exc}") from exc

    async def image_from_upload(upload: Any) -> tuple[bytes, str]:
        if not isinstance(upload, UploadFile):
            raise HTTPException(422, "field 'file' must be a file upload (multipart/form-data)")
        ctype = (upload.content_type or "").split(";", 1)[0].strip().lower()
        if ctype and not (ctype.startswith("image/") or ctype == "application/octet-stream"):
            raise HTTPException(415, f"file has media type {ctype!r}; send an image (PNG, JPEG, TIFF, BMP, WebP, GIF)")
        return await upload.read(), ctype

    async def read_image(request: Request, form: Any | None = None) -> tuple[bytes, str]:
        """Image bytes and declared media type from multipart ``file`` or a raw image body."""
        media = _media_type(request)
        if form is not None or media == "multipart/form-data":
            form = form if form is not None else await read_form(request)
            if "file" not in form:
                raise HTTPException(422, "multipart body has no 'file' field")
            return await image_from_upload(form["file"])
        if media.startswith("image/") or media in ("application/octet-stream", ""):
            return await read_body(request), media
        raise HTTPException(415, f"unsupported media type {media!r}; send multipart/form-data with a 'file' "
                                 "field or the raw image (image/png, image/jpeg, …)")

    def decode(data: bytes):
        try:
            return decode_image(data, s.max_pixels)
        except ImageTooLarge as exc:
            raise HTTPException(413, str(exc)) from exc
        except ValueError as exc:
            raise HTTPException(400, f"not an image: {exc}") from exc

    def check_embedder() -> None:
        built_with = getattr(s.index, "embedder_name", None)
        if built_with and built_with != UNNAMED and built_with != s.embedder.name:
            raise HTTPException(503, f"the live index version was built with embedder {built_with!r} but the API "
                                     f"embeds with {s.embedder.name!r}; a rebuild of the index is pending")

    def parse_k(value: Any) -> int:
        try:
            k = int(str(value).strip())
        except (TypeError, ValueError):
            raise HTTPException(422, f"k must be an integer between 1 and {s.max_k}, got {value!r}") from None
        if not 1 <= k <= s.max_k:
            raise HTTPException(422, f"k must be between 1 and {s.max_k}, got {k}")
        return k

    def parse_filters(value: Any) -> dict[str, str]:
        if value in (None, ""):
            return {}
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise HTTPException(422, f"filters must be a JSON object of field → substring: {exc}") from exc
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise HTTPException(422, 'filters must be a JSON object of field → substring, e.g. {"text": "M8"}')
        return value

    def parse_drawing_id(value: Any) -> str:
        text = str(value).strip()
        if not DRAWING_ID_RE.match(text):
            raise HTTPException(422, f"drawing_id {text!r} is invalid: use 1-128 letters, digits, '.', '_' or '-', "
                                     "starting with a letter or digit")
        return text

    async def invoke_ocr(data: bytes, image: Any, declared: str) -> dict[str, Any]:
        """Send the image to the endpoint (PNG/JPEG as is, other formats re-encoded to PNG)."""
        if declared in ENDPOINT_TYPES:
            body, ctype = data, declared
        else:
            fmt = _sniff(data)
            if fmt in ("PNG", "JPEG"):
                body, ctype = data, IMAGE_TYPES[fmt]
            else:
                body, ctype = _encode_png(image), "image/png"
        try:
            raw = await run_in_threadpool(s.hosting.invoke, s.names.endpoint_name, body, ctype)
        except Exception as exc:  # noqa: BLE001  ports raise their own types (local / botocore)
            status = _hosting_status(exc)
            what = {400: "the OCR model refused the image", 502: "the OCR endpoint failed",
                    503: "no OCR endpoint is in service"}[status]
            raise HTTPException(status, f"{what}: {exc}") from exc
        try:
            result = json.loads(raw)
            lines = [{"polygon": [[float(x), float(y)] for x, y in line["polygon"]], "text": str(line["text"]),
                      "score": float(line["score"])} for line in result["lines"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise HTTPException(502, f"the OCR endpoint returned an unexpected response: {exc!r}") from exc
        return {"model_version": result.get("model_version"), "lines": lines}

    # ------------------------------------------------------------------ endpoints
    @app.get("/health", summary="Liveness and index state")
    async def health() -> dict[str, Any]:
        info: dict[str, Any] = {"status": "ok", "version": __version__, "embedder": s.embedder.name}
        try:
            info["index"] = {"count": await run_in_threadpool(s.index.count),
                             "version": getattr(s.index, "version", None),
                             "embedder": getattr(s.index, "embedder_name", None)}
        except Exception as exc:  # noqa: BLE001  health reports, never fails on a sick dependency
            info["status"] = "degraded"
            info["index"] = {"error": str(exc)}
        return info

    image_body = {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                           "properties": {"file": {"type": "string", "format": "binary"}}}},
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}

    @app.post("/v1/ocr", summary="OCR a drawing with the serving model", openapi_extra=image_body)
    async def ocr(request: Request) -> dict[str, Any]:
        data, declared = await read_image(request)
        image = decode(data)
        return await invoke_ocr(data, image, declared)

    @app.post("/v1/drawings", status_code=201, summary="Register a drawing in the similarity index", openapi_extra={
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file"], "properties": {
                "file": {"type": "string", "format": "binary"},
                "drawing_id": {"type": "string", "pattern": DRAWING_ID_RE.pattern},
                "replace": {"type": "boolean", "default": False},
                "ocr": {"type": "boolean", "default": False,
                        "description": "read the drawing's text with the serving model and store it as 'text'"},
                "metadata": {"type": "string", "description": "JSON object stored with the drawing"}},
            "additionalProperties": {"type": "string", "description": "stored as metadata"}}}}}})
    async def register(request: Request) -> JSONResponse:
        if _media_type(request) != "multipart/form-data":
            raise HTTPException(415, f"unsupported media type {_media_type(request)!r}; register drawings with "
                                     "multipart/form-data (field 'file' plus optional metadata fields)")
        form = await read_form(request)
        data, declared = await read_image(request, form)
        drawing_id = parse_drawing_id(form["drawing_id"]) if form.get("drawing_id") else uuid.uuid4().hex
        replace = _parse_bool("replace", form.get("replace", "false"))
        metadata: dict[str, Any] = {}
        if form.get("metadata"):
            try:
                metadata = json.loads(form["metadata"])
            except json.JSONDecodeError as exc:
                raise HTTPException(422, f"metadata must be a JSON object: {exc}") from exc
            if not isinstance(metadata, dict):
                raise HTTPException(422, "metadata must be a JSON object")
        for key, value in form.multi_items():
            if key not in RESERVED_FORM_FIELDS and isinstance(value, str):
                metadata[key] = value
        image = decode(data)
        check_embedder()
        key = f"{DRAWINGS_PREFIX}{drawing_id}.png"
        exists = await run_in_threadpool(s.drawings.exists, key)
        if exists and not replace:
            raise HTTPException(409, f"drawing {drawing_id!r} already exists; send replace=true to overwrite it")
        if _parse_bool("ocr", form.get("ocr", "false")):
            result = await invoke_ocr(data, image, declared)
            metadata["text"] = "\n".join(line["text"] for line in result["lines"])
            metadata["ocr_model_version"] = result["model_version"] or ""
        vector = (await run_in_threadpool(s.embedder.embed, [image]))[0]
        png = data if _sniff(data) == "PNG" else _encode_png(image)
        metadata.update({"key": key, "filename": getattr(form["file"], "filename", None) or "",
                         "width": int(image.shape[1]), "height": int(image.shape[0]),
                         "sha256": hashlib.sha256(png).hexdigest(), "registered_at": _now(),
                         "embedder": s.embedder.name})
        # The index derives title-block fields from "text" on upsert; doing it here as well (same
        # function, idempotent) lets the response show what was stored.
        metadata = with_derived_fields(metadata)
        await run_in_threadpool(s.drawings.put, key, png)
        await run_in_threadpool(s.index.upsert, [drawing_id], vector[None, :], [metadata])
        return JSONResponse(status_code=201, content={
            "drawing_id": drawing_id, "replaced": bool(exists), "metadata": metadata,
            "index_version": getattr(s.index, "version", None)})

    @app.post("/v1/search", summary="Find similar drawings", openapi_extra={
        "requestBody": {"required": True, "content": {
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "file": {"type": "string", "format": "binary"}, "drawing_id": {"type": "string"},
                "k": {"type": "integer", "default": 5, "minimum": 1},
                "filters": {"type": "string", "description": FILTERS_HELP}}}},
            "application/json": {"schema": {"type": "object", "required": ["drawing_id"], "properties": {
                "drawing_id": {"type": "string"}, "k": {"type": "integer", "default": 5, "minimum": 1},
                "filters": {"type": "object", "additionalProperties": {"type": "string"},
                            "description": FILTERS_HELP}}}}}}})
    async def search(request: Request) -> dict[str, Any]:
        media = _media_type(request)
        if media == "application/json":
            await read_body(request)
            try:
                params = await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise HTTPException(400, f"malformed JSON body: {exc}") from exc
            if not isinstance(params, dict):
                raise HTTPException(422, "JSON body must be an object with drawing_id, k, filters")
            upload = None
        elif media in ("multipart/form-data", "application/x-www-form-urlencoded"):
            params = await read_form(request)
            upload = params.get("file")
        else:
            raise HTTPException(415, f"unsupported media type {media!r}; send multipart/form-data with 'file', or "
                                     "JSON / form data with 'drawing_id'")
        k = parse_k(params.get("k", 5))
        filters = parse_filters(params.get("filters"))
        check_embedder()
        exclude = None
        if upload is not None:
            data, _ = await image_from_upload(upload)
            image = decode(data)
        elif params.get("drawing_id"):
            exclude = parse_drawing_id(params["drawing_id"])
            try:
                data = await run_in_threadpool(s.drawings.get, f"{DRAWINGS_PREFIX}{exclude}.png")
            except KeyError:
                raise HTTPException(404, f"unknown drawing_id {exclude!r}") from None
            image = decode(data)
        else:
            raise HTTPException(422, "send an image in 'file' or a registered 'drawing_id'")
        queries = await run_in_threadpool(s.embedder.embed_query, image)
        try:
            hits = await run_in_threadpool(s.index.search, queries, k + (1 if exclude else 0), filters or None)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        results = [{"drawing_id": h["id"], "score": round(float(h["score"]), 6), "metadata": h["metadata"]}
                   for h in hits if h["id"] != exclude][:k]
        return {"results": results, "k": k, "index_version": getattr(s.index, "version", None),
                "embedder": s.embedder.name}

    def package_summary(desc: dict[str, Any]) -> dict[str, Any]:
        props = desc.get("CustomerMetadataProperties") or {}
        metrics: Any = props.get("ocrloop:metrics")
        if isinstance(metrics, str):
            try:
                metrics = json.loads(metrics)
            except json.JSONDecodeError:
                pass  # SageMaker caps property values at 1,024 characters: keep the truncated text
        containers = (desc.get("InferenceSpecification") or {}).get("Containers") or [{}]
        return {"version": props.get("ocrloop:version") or str(desc.get("ModelPackageVersion")),
                "package_version": desc.get("ModelPackageVersion"), "arn": desc.get("ModelPackageArn"),
                "approval": desc.get("ModelApprovalStatus"), "stage": props.get(STAGE),
                "parent": props.get("ocrloop:parent") or None, "metrics": metrics,
                "created": str(desc.get("CreationTime") or ""),
                "model_data_url": containers[0].get("ModelDataUrl")}

    async def packages() -> list[dict[str, Any]]:
        summaries = await run_in_threadpool(s.registry.list_model_packages, s.names.model_package_group)
        return [await run_in_threadpool(s.registry.describe_model_package, p["ModelPackageArn"]) for p in summaries]

    @app.get("/v1/models", summary="Model versions of the registry group, newest first")
    async def models() -> dict[str, Any]:
        return {"group": s.names.model_package_group, "models": [package_summary(d) for d in await packages()]}

    @app.get("/v1/models/{version}", summary="One model version (ocrloop:version or package version number)")
    async def model(version: str) -> dict[str, Any]:
        for desc in await packages():
            summary = package_summary(desc)
            if version in (summary["version"], str(summary["package_version"])):
                props = desc.get("CustomerMetadataProperties") or {}
                return {**summary, "description": desc.get("ModelPackageDescription", ""),
                        "approval_description": desc.get("ApprovalDescription"), "properties": props}
        raise HTTPException(404, f"no model version {version!r} in group {s.names.model_package_group}")

    return app


def _sniff(data: bytes) -> str | None:
    """Image format from the header (Pillow's identification, no decoding): ``PNG``, ``JPEG``, …"""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.format
    except Exception:  # noqa: BLE001  not an image Pillow knows
        return None


def _encode_png(image: Any) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise HTTPException(400, "image could not be re-encoded to PNG")
    return buf.tobytes()
