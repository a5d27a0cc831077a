"""The inference server's SageMaker contract (ping, invocations, errors) through FastAPI's TestClient."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving_fixtures import PAGE_ITEMS, encode_jpeg, encode_png, make_rec_artifact, norm, render_page

from ocrloop.ocr.artifact import ArtifactError, resolve_model_dir
from ocrloop.ocr.engine import OcrEngine
from ocrloop.ocr.service import create_app

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = ["DRAWINGNO4711-B", "SCALE1:20", "MATERIALSTEELS235", "HEIGHT1250", "WIDTH860", "SECTIONA-A"]
LIMIT = 300_000  # bytes: small so the 413 path is cheap to hit


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return OcrEngine(make_rec_artifact(tmp_path_factory.mktemp("rec") / "v7", "rec-v7"))


@pytest.fixture(scope="module")
def client(engine):
    return TestClient(create_app(engine=engine, max_body_bytes=LIMIT, max_pixels=4_000_000))


@pytest.fixture(scope="module")
def page():
    return render_page(PAGE_ITEMS)


def _post(client, body, content_type):
    return client.post("/invocations", content=body, headers={"Content-Type": content_type})


def test_ping(client):
    r = client.get("/ping")
    assert r.status_code == 200 and r.json()["model_version"] == "rec-v7"


def test_png_page(client, page):
    r = _post(client, encode_png(page), "image/png")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == "rec-v7"
    assert [norm(line["text"]) for line in body["lines"]] == EXPECTED
    assert all(len(line["polygon"]) == 4 and 0 < line["score"] <= 1 for line in body["lines"])
    assert body["latency_ms"] > 0


def test_jpeg_as_x_image_and_json_b64(client, page):
    jpeg = encode_jpeg(page)
    r = _post(client, jpeg, "application/x-image")
    assert r.status_code == 200 and [norm(x["text"]) for x in r.json()["lines"]] == EXPECTED
    r = client.post("/invocations", json={"image_b64": base64.b64encode(jpeg).decode()})
    assert r.status_code == 200 and [norm(x["text"]) for x in r.json()["lines"]] == EXPECTED
    # charset parameter and a data URL are accepted too
    r = _post(client, ('{"image_b64": "data:image/jpeg;base64,' + base64.b64encode(jpeg).decode() + '"}').encode(),
              "application/json; charset=utf-8")
    assert r.status_code == 200 and len(r.json()["lines"]) == 6


def test_crops_rec_only(client, page):
    crops = [page[44:86, 56:392], page[125:163, 56:236], np.full((40, 120, 3), 255, np.uint8)]
    r = client.post("/invocations", json={"crops_b64": [base64.b64encode(encode_png(c)).decode() for c in crops]})
    assert r.status_code == 200, r.text
    texts = r.json()["texts"]
    assert [norm(t["text"]) for t in texts] == ["DRAWINGNO4711-B", "SCALE1:20", ""]
    assert texts[0]["score"] > 0.8 and texts[2]["score"] == 0.0
    assert r.json()["model_version"] == "rec-v7"
    r = client.post("/invocations", json={"crops_b64": []})
    assert r.status_code == 200 and r.json()["texts"] == []


@pytest.mark.parametrize("content_type", ["text/plain", "image/tiff", ""])
def test_415_unsupported_content_type(client, content_type):
    r = _post(client, b"abc", content_type)
    assert r.status_code == 415
    assert "unsupported content type" in r.json()["detail"] and "image/png" in r.json()["detail"]


@pytest.mark.parametrize("body, content_type, message", [
    (b"", "image/png", "empty request body"),
    (b"not an image at all", "image/jpeg", "cannot decode image"),
    (b"{broken", "application/json", "invalid JSON"),
    (b"[1, 2]", "application/json", "must be an object"),
    (b'{"image": "x"}', "application/json", "exactly one of 'image_b64'"),
    (b'{"image_b64": "x", "crops_b64": []}', "application/json", "exactly one of"),
    (b'{"image_b64": "%%%not base64"}', "application/json", "not valid base64"),
    (b'{"image_b64": 42}', "application/json", "must be a base64 string"),
    (b'{"image_b64": ""}', "application/json", "empty image"),
    (b'{"crops_b64": "abc"}', "application/json", "must be a list"),
    (b'{"crops_b64": ["aGVsbG8="]}', "application/json", "crops_b64[0]: cannot decode image"),
])
def test_400_bad_input(client, body, content_type, message):
    r = _post(client, body, content_type)
    assert r.status_code == 400, r.text
    assert message in r.json()["detail"]


def test_400_truncated_png(client, page):
    r = _post(client, encode_png(page)[:3000], "image/png")
    assert r.status_code == 400 and "corrupt or truncated" in r.json()["detail"]


def test_413_body_and_pixel_limits(client):
    r = _post(client, b"\x89PNG" + b"0" * LIMIT, "image/png")
    assert r.status_code == 413 and f"limit of {LIMIT} bytes" in r.json()["detail"]

    # Chunked upload without Content-Length is cut off while streaming.
    def chunks():
        for _ in range(40):
            yield b"0" * 10_000

    r = client.post("/invocations", content=chunks(), headers={"Content-Type": "image/png"})
    assert r.status_code == 413 and "over the limit" in r.json()["detail"]

    # A small file that decodes to a huge image is refused from its header, before decoding.
    big = np.full((2500, 2000), 255, np.uint8)
    data = encode_png(np.repeat(big[:, :, None], 3, axis=2))
    assert len(data) < LIMIT
    r = _post(client, data, "image/png")
    assert r.status_code == 413 and "2000x2500 = 5000000 px" in r.json()["detail"]


def test_grey_and_alpha_images_are_converted(client, page):
    grey = cv2.cvtColor(page, cv2.COLOR_BGR2GRAY)
    ok, buf = cv2.imencode(".png", grey)  # 8-bit grey PNG
    r = _post(client, buf.tobytes(), "image/png")
    assert r.status_code == 200 and len(r.json()["lines"]) == 6
    bgra = cv2.cvtColor(page, cv2.COLOR_BGR2BGRA)
    ok, buf = cv2.imencode(".png", bgra)
    r = _post(client, buf.tobytes(), "image/png")
    assert r.status_code == 200 and len(r.json()["lines"]) == 6


def test_model_tar_gz_is_extracted(tmp_path):
    src = make_rec_artifact(tmp_path / "src", "rec-tar")
    opt_ml_model = tmp_path / "opt_ml_model"
    opt_ml_model.mkdir()
    with tarfile.open(opt_ml_model / "model.tar.gz", "w:gz") as tar:
        for f in sorted(src.iterdir()):
            tar.add(f, arcname=f.name)
    out = resolve_model_dir(opt_ml_model, extract_to=tmp_path / "x")
    assert out == tmp_path / "x" and (out / "model.onnx").read_bytes() == (src / "model.onnx").read_bytes()
    assert resolve_model_dir(src) == src
    with pytest.raises(ArtifactError, match="does not exist"):
        resolve_model_dir(tmp_path / "nope")
    # An archive trying to escape the target folder is refused.
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(ArtifactError):
        resolve_model_dir(evil, extract_to=tmp_path / "y")
    assert not (tmp_path / "escaped.txt").exists()


def test_serve_script_requires_serve_argument():
    r = subprocess.run([sys.executable, str(ROOT / "inference_image" / "serve.py")], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2 and "usage: serve.py serve" in r.stderr
