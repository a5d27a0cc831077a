"""The inference server: SageMaker's hosting container contract around ``OcrEngine``.

Contract (https://docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-inference-code.html): the
container is started with the argument ``serve``, listens on port 8080 (``SAGEMAKER_BIND_TO_PORT``
overrides it), answers ``GET /ping`` with 200 once the model is loaded and serves ``POST
/invocations``. The model is in ``/opt/ml/model`` (``SM_MODEL_DIR`` overrides it); a ``model.tar.gz``
found there is extracted to a temporary folder.

``POST /invocations``:

* ``image/png`` | ``image/jpeg`` | ``application/x-image``: raw image bytes, or ``application/json``
  ``{"image_b64": "<base64>"}`` → ``{"model_version", "lines": [{"polygon": [[x, y]×4] px, "text",
  "score"}], "latency_ms"}``;
* ``application/json`` ``{"crops_b64": ["<base64 line crop>", …]}`` → ``{"model_version", "texts":
  [{"text", "score"}], "latency_ms"}`` (recognition only; evaluation uses it).

Errors (JSON ``{"detail": message}``): 415 unsupported content type; 400 empty body, invalid JSON,
bad base64 or an undecodable image; 413 body over ``max_body_bytes`` or image over ``max_pixels``.

Environment for ``run_server``: ``SM_MODEL_DIR``, ``SAGEMAKER_BIND_TO_PORT``, ``OCRLOOP_BIND_HOST``
(default ``0.0.0.0`` as a container needs; the local hosting adapter passes ``127.0.0.1``),
``OCRLOOP_MAX_BODY_BYTES``, ``OCRLOOP_MAX_PIXELS``, ``OCRLOOP_MAX_CONCURRENCY`` (OCR calls at once;
default: CPU count, at most 4), ``OCRLOOP_INTRA_OP_THREADS`` (threads per inference call, default
1), ``OCRLOOP_REC_ENGINE`` (``onnx``, the default, or ``paddle``: recognition on Paddle Inference),
``OCRLOOP_PARENT_PID`` (exit when that process is gone, so a local endpoint never outlives its
owner). On a 2-core instance 2 concurrent requests × 1 thread give the most sheets/s (measured in
``bench/ocr_serving.py``, see ``bench/README.md``).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import os
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from .artifact import det_model_path, resolve_model_dir
from .engine import OcrEngine

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024
"""Request body limit (bytes): 20 MiB. SageMaker real-time endpoints cap payloads at 25 MB."""
DEFAULT_MAX_PIXELS = 160_000_000
"""Decoded image limit (pixels): an A0 sheet at 300 dpi is ≈140 MP."""
DEFAULT_PORT = 8080
DEFAULT_MODEL_DIR = "/opt/ml/model"
IMAGE_TYPES = ("image/png", "image/jpeg", "application/x-image")
JSON_TYPE = "application/json"


class RequestError(Exception):
    """A client error: ``status`` (400/413/415) and a message for the response body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Image file bytes (PNG, JPEG, or anything Pillow identifies and OpenCV decodes) → BGR uint8
    ``[H, W, 3]`` (grey and alpha images are converted, EXIF orientation applied).

    The size is read from the header first, so an oversized image is refused before it is decoded.

    Raises:
        RequestError: 400 empty or undecodable bytes; 413 over ``max_pixels``.
    """
    import cv2
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise RequestError(400, "empty image: the request carried no image bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as header:
                width, height = header.size
                fmt = header.format
    except Image.DecompressionBombError as exc:
        raise RequestError(413, f"image too large: {exc}") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise RequestError(400, f"cannot decode image ({len(data)} bytes): not a PNG/JPEG image") from exc
    if width * height > max_pixels:
        raise RequestError(413, f"image is {width}x{height} = {width * height} px, over the limit of {max_pixels} px")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise RequestError(400, f"cannot decode {fmt} image ({len(data)} bytes): corrupt or truncated data")
    return image


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise RequestError(400, f"{what} must be a base64 string, got {type(value).__name__}")
    if value.startswith("data:") and "," in value:  # data URL: data:image/png;base64,....
        value = value.split(",", 1)[1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(400, f"{what} is not valid base64: {exc}") from exc


def parse_json_request(body: bytes) -> tuple[str, Any]:
    """Parse a JSON invocation body → ``("image", bytes)`` or ``("crops", [bytes, …])``.

    Raises:
        RequestError: 400 invalid JSON, not an object, neither/both keys, bad base64.
    """
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(400, f"invalid JSON body: {exc}") from exc
    if not isinstance(payload, dict):
        raise RequestError(400, "JSON body must be an object with 'image_b64' or 'crops_b64'")
    keys = {"image_b64", "crops_b64"} & set(payload)
    if len(keys) != 1:
        raise RequestError(400, "JSON body must have exactly one of 'image_b64' (a page) or 'crops_b64' "
                                f"(a list of line crops); got keys {sorted(payload)}")
    if "image_b64" in keys:
        return "image", _b64(payload["image_b64"], "image_b64")
    crops = payload["crops_b64"]
    if not isinstance(crops, list):
        raise RequestError(400, f"crops_b64 must be a list of base64 strings, got {type(crops).__name__}")
    return "crops", [_b64(c, f"crops_b64[{i}]") for i, c in enumerate(crops)]


def create_app(model_dir: str | Path | None = None, *, engine: OcrEngine | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS,
               max_concurrency: int | None = None, intra_op_threads: int = 1,
               rec_engine: str = "onnx") -> FastAPI:
    """Build the FastAPI app serving one model version (loaded now, so ``/ping`` is 200 at once).

    Args:
        model_dir: model version folder (see ``OcrEngine``); its fine-tuned det model
            (``det/model.onnx``) is served when present, else the stock det. Ignored when
            ``engine`` is given.
        engine: a ready engine (tests share one).
        max_body_bytes: request body limit in bytes (413 above it).
        max_pixels: decoded image limit in pixels (413 above it).
        max_concurrency: OCR calls run at once in worker threads (default: CPU count, at most 4);
            others wait, while ``/ping`` stays responsive.
        intra_op_threads: threads per inference call when the engine is built here.
        rec_engine: recognition runtime when the engine is built here: ``"onnx"`` (ONNX Runtime)
            or ``"paddle"`` (Paddle Inference on the artifact's ``inference.json``).

    Raises:
        ModelLoadError: the model folder cannot be served.
        ValueError: neither ``model_dir`` nor ``engine``, or an unknown ``rec_engine``.
    """
    if engine is None:
        if model_dir is None:
            raise ValueError("create_app needs model_dir or engine")
        engine = OcrEngine(model_dir, intra_op_threads=intra_op_threads, engine=rec_engine,
                           det_model_path=det_model_path(model_dir))
    limiter = anyio.CapacityLimiter(max_concurrency or min(4, os.cpu_count() or 1))
    app = FastAPI(title="ocrloop inference", version=engine.model_version)
    app.state.engine = engine

    @app.exception_handler(RequestError)
    async def _request_error(_request: Request, exc: RequestError):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.get("/ping")
    async def ping() -> dict:
        # On the event loop, not a worker thread: answers at once even while OCR calls saturate the pool.
        return {"status": "ok", "model_version": engine.model_version}

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_body_bytes:
            raise RequestError(413, f"request body is {declared} bytes, over the limit of {max_body_bytes} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise RequestError(413, f"request body is over the limit of {max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def ocr_page(data: bytes) -> dict:
        t0 = time.perf_counter()
        image = decode_image(data, max_pixels)
        lines = engine.read(image)
        return {"model_version": engine.model_version, "lines": [line.to_dict() for line in lines],
                "latency_ms": round((time.perf_counter() - t0) * 1000, 2)}

    def ocr_crops(crops: list[bytes]) -> dict:
        t0 = time.perf_counter()
        images = []
        for i, data in enumerate(crops):
            try:
                images.append(decode_image(data, max_pixels))
            except RequestError as exc:
                raise RequestError(exc.status, f"crops_b64[{i}]: {exc.message}") from exc
        texts = engine.recognize(images) if images else []
        return {"model_version": engine.model_version,
                "texts": [{"text": t, "score": round(float(s), 5)} for t, s in texts],
                "latency_ms": round((time.perf_counter() - t0) * 1000, 2)}

    @app.post("/invocations")
    async def invocations(request: Request):
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in IMAGE_TYPES + (JSON_TYPE,):
            raise RequestError(415, f"unsupported content type {content_type or '(none)'!r}; use one of "
                                    f"{', '.join(IMAGE_TYPES + (JSON_TYPE,))}")
        body = await read_body(request)
        if not body:
            raise RequestError(400, "empty request body")
        if content_type == JSON_TYPE:
            kind, data = parse_json_request(body)
        else:
            kind, data = "image", body
        work = ocr_page if kind == "image" else ocr_crops
        return await anyio.to_thread.run_sync(work, data, limiter=limiter)

    return app


def _watch_parent(parent_pid: int, interval_s: float = 1.0) -> None:
    """Send ourselves SIGTERM (graceful uvicorn shutdown) once ``parent_pid`` is no longer our parent."""
    def loop() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent_pid:
                log.warning("parent process %d is gone; shutting down", parent_pid)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=loop, name="parent-watch", daemon=True).start()


def run_server() -> None:
    """Load the model named by the environment (see module doc) and serve until SIGTERM/SIGINT.

    Uvicorn finishes in-flight requests on SIGTERM (up to 30 s) before exiting.

    Raises:
        ArtifactError / ModelLoadError: no servable model (the process exits non-zero).
    """
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model_dir = resolve_model_dir(os.environ.get("SM_MODEL_DIR", DEFAULT_MODEL_DIR))
    t0 = time.perf_counter()
    app = create_app(
        model_dir,
        max_body_bytes=int(os.environ.get("OCRLOOP_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)),
        max_pixels=int(os.environ.get("OCRLOOP_MAX_PIXELS", DEFAULT_MAX_PIXELS)),
        max_concurrency=int(os.environ.get("OCRLOOP_MAX_CONCURRENCY") or 0) or None,
        intra_op_threads=int(os.environ.get("OCRLOOP_INTRA_OP_THREADS", "1")),
        rec_engine=os.environ.get("OCRLOOP_REC_ENGINE", "onnx"),
    )
    log.info("model %s loaded from %s in %.0f ms", app.state.engine.model_version, model_dir,
             (time.perf_counter() - t0) * 1000)
    if os.environ.get("OCRLOOP_PARENT_PID"):
        _watch_parent(int(os.environ["OCRLOOP_PARENT_PID"]))
    uvicorn.run(app, host=os.environ.get("OCRLOOP_BIND_HOST", "0.0.0.0"),
                port=int(os.environ.get("SAGEMAKER_BIND_TO_PORT", DEFAULT_PORT)),
                timeout_graceful_shutdown=30, log_level="info")
