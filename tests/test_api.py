"""The API through FastAPI's TestClient: real embedder, real FaissIndex; test doubles only for the
ports owned by other modules (hosting, registry, blob store), each honouring the port protocol."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from ocrloop.api import ApiServices, create_app
from ocrloop.config import Names
from ocrloop.index import synth
from ocrloop.index.embed import ResNetDrawingEmbedder
from ocrloop.index.faiss_index import FaissIndex
from ocrloop.ports import ObjectExists

SIZE = (900, 640)


# --------------------------------------------------------------------------------------------
# Test doubles (ports.Hosting, ports.Registry, ports.BlobStore)
# --------------------------------------------------------------------------------------------

class InvocationError(RuntimeError):
    """Shaped like ``ocrloop.local.hosting.InvocationError``: the model server's status code."""

    def __init__(self, status_code: int, body: str) -> None:
        super().__init__(f"model server returned {status_code}: {body}")
        self.status_code = status_code


class FakeHosting:
    """``Hosting``: one endpoint answering like the inference server (``ocrloop.ocr.service``)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes, str]] = []
        self.fail: Exception | None = None
        self.response: bytes | None = None

    def deploy(self, endpoint_name, model_package_arn, model_data_url, deployment_config):
        return f"{endpoint_name}-cfg"

    def describe_endpoint(self, endpoint_name):
        return {"EndpointName": endpoint_name, "EndpointStatus": "InService"}

    def invoke(self, endpoint_name: str, body: bytes, content_type: str) -> bytes:
        self.calls.append((endpoint_name, body, content_type))
        if self.fail is not None:
            raise self.fail
        if self.response is not None:
            return self.response
        img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        h, w = img.shape[:2]
        return json.dumps({"model_version": "ocrloop-v1", "latency_ms": 3.0, "lines": [
            {"polygon": [[10, 10], [110, 10], [110, 40], [10, 40]], "text": "Ø25 H7", "score": 0.97},
            {"polygon": [[0, h - 30], [w, h - 30], [w, h], [0, h]], "text": f"SIZE {w}x{h}", "score": 0.91},
        ]}).encode()


class FakeRegistry:
    """``Registry``: model packages in a list, DescribeModelPackage shapes."""

    def __init__(self) -> None:
        self.packages: list[dict] = []

    def create_model_package(self, request):
        n = len(self.packages) + 1
        arn = f"arn:aws:sagemaker:us-east-1:000000000000:model-package/{request['ModelPackageGroupName']}/{n}"
        self.packages.append({"ModelPackageGroupName": request["ModelPackageGroupName"], "ModelPackageVersion": n,
                              "ModelPackageArn": arn, "CreationTime": f"2025-01-0{n}T00:00:00Z",
                              "ModelApprovalStatus": request.get("ModelApprovalStatus", "PendingManualApproval"),
                              "ModelPackageDescription": request.get("ModelPackageDescription", ""),
                              "InferenceSpecification": request.get("InferenceSpecification", {}),
                              "CustomerMetadataProperties": dict(request.get("CustomerMetadataProperties", {}))})
        return arn

    def describe_model_package(self, arn):
        for p in self.packages:
            if p["ModelPackageArn"] == arn:
                return json.loads(json.dumps(p))
        raise KeyError(arn)

    def list_model_packages(self, group, approval_status=None):
        return [{k: p[k] for k in ("ModelPackageArn", "ModelPackageVersion", "ModelApprovalStatus")}
                for p in reversed(self.packages) if p["ModelPackageGroupName"] == group
                and (approval_status is None or p["ModelApprovalStatus"] == approval_status)]

    def update_model_package(self, request):
        self.describe_model_package(request["ModelPackageArn"])
        for p in self.packages:
            if p["ModelPackageArn"] == request["ModelPackageArn"]:
                p["CustomerMetadataProperties"].update(request.get("CustomerMetadataProperties", {}))


class MemoryBlobStore:
    """``BlobStore`` in a dict (versions counted)."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put(self, key, data, *, if_absent=False):
        if if_absent and key in self.objects:
            raise ObjectExists(key)
        self.objects[key] = bytes(data)
        return str(len(self.objects))

    def get(self, key):
        return self.objects[key]

    def exists(self, key):
        return key in self.objects

    def list(self, prefix):
        return sorted(k for k in self.objects if k.startswith(prefix))

    def uri(self, key):
        return f"memory:///{key}"


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def embedder():
    return ResNetDrawingEmbedder()  # edited model cached under ocrloop.config.cache_dir()


@pytest.fixture(scope="module")
def drawings():
    return [synth.drawing(200 + i, SIZE, part) for i, part in enumerate(["plate", "shaft", "bracket", "flange"] * 2)]


def png(img) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


@pytest.fixture
def services(tmp_path, embedder):
    return ApiServices(hosting=FakeHosting(), registry=FakeRegistry(),
                       index=FaissIndex(tmp_path / "index", embedder.dim, embedder_name=embedder.name),
                       embedder=embedder, names=Names(), drawings=MemoryBlobStore())


@pytest.fixture
def client(services):
    with TestClient(create_app(services)) as c:
        yield c


@pytest.fixture
def registered(client, drawings):
    for i, d in enumerate(drawings):
        r = client.post("/v1/drawings", files={"file": (f"d{i}.png", png(d.image), "image/png")},
                        data={"drawing_id": f"dwg-{i}", "part": d.part, "metadata": json.dumps({"texts": d.texts})})
        assert r.status_code == 201, r.text
    return drawings


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------

def test_health_and_openapi(client, embedder):
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["embedder"] == embedder.name
    assert body["index"]["count"] == 0 and body["index"]["embedder"] == embedder.name
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/ocr", "/v1/drawings", "/v1/search", "/v1/models", "/v1/models/{version}"} <= set(paths)
    assert "multipart/form-data" in paths["/v1/ocr"]["post"]["requestBody"]["content"]


def test_ocr_multipart_and_raw_body(client, services, drawings):
    data = png(drawings[0].image)
    r = client.post("/v1/ocr", files={"file": ("a.png", data, "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == "ocrloop-v1"
    assert body["lines"][0] == {"polygon": [[10.0, 10.0], [110.0, 10.0], [110.0, 40.0], [10.0, 40.0]],
                                "text": "Ø25 H7", "score": 0.97}
    assert body["lines"][1]["text"] == f"SIZE {SIZE[0]}x{SIZE[1]}"
    endpoint, sent, ctype = services.hosting.calls[-1]
    assert endpoint == Names().endpoint_name and sent == data and ctype == "image/png"

    jpg = cv2.imencode(".jpg", drawings[1].image)[1].tobytes()
    r = client.post("/v1/ocr", content=jpg, headers={"content-type": "image/jpeg"})
    assert r.status_code == 200 and services.hosting.calls[-1][2] == "image/jpeg"

    # A TIFF (not accepted by the endpoint) is re-encoded to PNG on the way.
    tif = cv2.imencode(".tiff", drawings[2].image)[1].tobytes()
    r = client.post("/v1/ocr", content=tif, headers={"content-type": "application/octet-stream"})
    assert r.status_code == 200
    assert services.hosting.calls[-1][2] == "image/png" and services.hosting.calls[-1][1][:8] == b"\x89PNG\r\n\x1a\n"


def test_ocr_bad_input_is_4xx_with_a_clear_message(tmp_path, services, drawings):
    services.max_upload_bytes = 200_000
    services.max_pixels = 1_000_000
    client = TestClient(create_app(services))
    r = client.post("/v1/ocr", content=b"hello", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "unsupported media type 'text/plain'" in r.json()["detail"]
    r = client.post("/v1/ocr", files={"file": ("notes.txt", b"hello", "text/plain")})
    assert r.status_code == 415 and "send an image" in r.json()["detail"]
    r = client.post("/v1/ocr", content=b"\x89PNG garbage", headers={"content-type": "image/png"})
    assert r.status_code == 400 and r.json()["detail"].startswith("not an image")
    r = client.post("/v1/ocr", files={"file": ("x.png", b"", "image/png")})
    assert r.status_code == 400 and "empty" in r.json()["detail"]
    r = client.post("/v1/ocr", data={"other": "x"}, files={"nofile": ("x.png", b"1", "image/png")})
    assert r.status_code == 422 and "'file'" in r.json()["detail"]
    big = np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)  # ≈ 480 kB PNG
    r = client.post("/v1/ocr", content=png(big), headers={"content-type": "image/png"})
    assert r.status_code == 413 and "limit is 200000 bytes" in r.json()["detail"]
    wide = png(np.full((800, 1400), 255, np.uint8))  # small file, 1.12 MP > 1 MP
    r = client.post("/v1/ocr", files={"file": ("w.png", wide, "image/png")})
    assert r.status_code == 413 and "pixels" in r.json()["detail"]
    assert services.hosting.calls == []  # nothing reached the endpoint


def test_ocr_endpoint_failures_map_to_400_502_503(client, services, drawings):
    data = png(drawings[0].image)
    services.hosting.fail = KeyError("no endpoint ocrloop-ocr")
    r = client.post("/v1/ocr", content=data, headers={"content-type": "image/png"})
    assert r.status_code == 503 and "no OCR endpoint is in service" in r.json()["detail"]
    services.hosting.fail = InvocationError(400, "image too small for the detector")
    r = client.post("/v1/ocr", content=data, headers={"content-type": "image/png"})
    assert r.status_code == 400 and "image too small" in r.json()["detail"]
    services.hosting.fail = InvocationError(500, "CUDA error")
    assert client.post("/v1/ocr", content=data, headers={"content-type": "image/png"}).status_code == 502
    services.hosting.fail = None
    services.hosting.response = b'{"lines": [{"txt": 1}]}'
    r = client.post("/v1/ocr", content=data, headers={"content-type": "image/png"})
    assert r.status_code == 502 and "unexpected response" in r.json()["detail"]


def test_register_drawing_stores_png_and_indexes_it(client, services, drawings):
    jpg = cv2.imencode(".jpg", drawings[0].image)[1].tobytes()
    r = client.post("/v1/drawings", files={"file": ("front.jpg", jpg, "image/jpeg")},
                    data={"drawing_id": "D-100.a", "customer": "ACME", "metadata": '{"material": "S235JR"}'})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["drawing_id"] == "D-100.a" and body["replaced"] is False
    meta = body["metadata"]
    assert meta["customer"] == "ACME" and meta["material"] == "S235JR" and meta["filename"] == "front.jpg"
    assert (meta["width"], meta["height"]) == SIZE and meta["key"] == "drawings/D-100.a.png"
    stored = services.drawings.get("drawings/D-100.a.png")
    assert stored[:8] == b"\x89PNG\r\n\x1a\n"  # re-encoded losslessly from the decoded JPEG
    assert services.index.count() == 1 and services.index.get("D-100.a")["customer"] == "ACME"

    r = client.post("/v1/drawings", files={"file": ("f.png", png(drawings[1].image), "image/png")},
                    data={"drawing_id": "D-100.a"})
    assert r.status_code == 409 and "replace=true" in r.json()["detail"]
    r = client.post("/v1/drawings", files={"file": ("f.png", png(drawings[1].image), "image/png")},
                    data={"drawing_id": "D-100.a", "replace": "true", "ocr": "true"})
    assert r.status_code == 201 and r.json()["replaced"] is True
    assert services.index.count() == 1
    assert services.index.get("D-100.a")["text"] == f"Ø25 H7\nSIZE {SIZE[0]}x{SIZE[1]}"
    assert services.index.get("D-100.a")["ocr_model_version"] == "ocrloop-v1"

    r = client.post("/v1/drawings", files={"file": ("f.png", png(drawings[2].image), "image/png")})
    assert r.status_code == 201 and len(r.json()["drawing_id"]) == 32  # generated id


def test_title_block_fields_from_ocr_are_filterable(client, services, drawings):
    """OCR text → derived fields (material, scale, drawing number) → one query combining image
    similarity and a filter on them."""
    title_block = ["TITLE MOUNTING PLATE", "MATERIAL S355J2+N", "SCALE 1 : 2", "DWG NO D-40417", "REV C"]
    for i, d in enumerate(drawings[:4]):
        lines = title_block if i in (1, 3) else ["MATERIAL AlMg3", "SCALE 1:1"]
        services.hosting.response = json.dumps({"model_version": "v7", "lines": [
            {"polygon": [[0, 20 * j], [100, 20 * j], [100, 20 * j + 15], [0, 20 * j + 15]], "text": t, "score": 0.9}
            for j, t in enumerate(lines)]}).encode()
        r = client.post("/v1/drawings", files={"file": ("d.png", png(d.image), "image/png")},
                        data={"drawing_id": f"tb-{i}", "ocr": "true"})
        assert r.status_code == 201, r.text
    meta = r.json()["metadata"]
    assert meta["material"] == ["S355J2+N"] and meta["scale"] == ["1:2"] and meta["drawing_number"] == ["D-40417"]
    assert meta["revision"] == ["C"] and meta["title"] == ["MOUNTING PLATE"]
    assert services.index.get("tb-3") == meta
    # Query with drawing 0's image: nearest overall is tb-0, but the filter keeps only S355 drawings.
    r = client.post("/v1/search", files={"file": ("q.png", png(drawings[0].image), "image/png")},
                    data={"k": "3", "filters": '{"material": "s355", "scale": "1:2"}'})
    assert r.status_code == 200, r.text
    assert sorted(h["drawing_id"] for h in r.json()["results"]) == ["tb-1", "tb-3"]
    r = client.post("/v1/search", json={"drawing_id": "tb-1", "k": 5, "filters": {"material": "almg"}})
    assert sorted(h["drawing_id"] for h in r.json()["results"]) == ["tb-0", "tb-2"]
    r = client.post("/v1/search", json={"drawing_id": "tb-1", "k": 5, "filters": {"drawing_number": "d-404"}})
    assert [h["drawing_id"] for h in r.json()["results"]] == ["tb-3"]


def test_register_refuses_bad_input(client, drawings):
    ok = png(drawings[0].image)
    for bad_id in ("../etc/passwd", "a b", "-x", "x" * 129):
        r = client.post("/v1/drawings", files={"file": ("f.png", ok, "image/png")}, data={"drawing_id": bad_id})
        assert r.status_code == 422 and "drawing_id" in r.json()["detail"], bad_id
    r = client.post("/v1/drawings", files={"file": ("f.png", ok, "image/png")}, data={"metadata": "[1, 2]"})
    assert r.status_code == 422 and "JSON object" in r.json()["detail"]
    r = client.post("/v1/drawings", files={"file": ("f.png", ok, "image/png")}, data={"replace": "maybe"})
    assert r.status_code == 422
    r = client.post("/v1/drawings", content=ok, headers={"content-type": "image/png"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]
    r = client.post("/v1/drawings", files={"file": ("f.pdf", b"%PDF-1.7", "application/pdf")})
    assert r.status_code == 415


def test_search_by_file_finds_the_rotated_framed_drawing(client, registered):
    for i in (1, 6):
        query = cv2.rotate(synth.add_frame(registered[i].image, seed=i), cv2.ROTATE_90_CLOCKWISE)
        r = client.post("/v1/search", files={"file": ("q.png", png(query), "image/png")}, data={"k": "3"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["results"]) == 3 and body["k"] == 3
        top = body["results"][0]
        assert top["drawing_id"] == f"dwg-{i}" and top["score"] > 0.99
        assert top["metadata"]["part"] == registered[i].part


def test_search_by_drawing_id_and_filters(client, registered):
    r = client.post("/v1/search", json={"drawing_id": "dwg-2", "k": 4})
    assert r.status_code == 200, r.text
    ids = [h["drawing_id"] for h in r.json()["results"]]
    assert len(ids) == 4 and "dwg-2" not in ids
    # Form-encoded works too, and filters restrict to matching metadata (case-insensitive substring).
    r = client.post("/v1/search", data={"drawing_id": "dwg-2", "k": "5", "filters": '{"part": "FLANGE"}'})
    assert r.status_code == 200
    assert {h["drawing_id"] for h in r.json()["results"]} == {"dwg-3", "dwg-7"}
    note = registered[5].texts[-1]
    r = client.post("/v1/search", json={"drawing_id": "dwg-0", "k": 5, "filters": {"texts": note.lower()}})
    assert "dwg-5" in {h["drawing_id"] for h in r.json()["results"]}


def test_search_errors(client, registered):
    assert client.post("/v1/search", json={"drawing_id": "missing", "k": 3}).status_code == 404
    assert "unknown drawing_id 'missing'" in client.post("/v1/search", json={"drawing_id": "missing"}).json()["detail"]
    for k in (0, 101, "abc", -1):
        r = client.post("/v1/search", json={"drawing_id": "dwg-1", "k": k})
        assert r.status_code == 422 and "k must" in r.json()["detail"], k
    r = client.post("/v1/search", json={"drawing_id": "dwg-1", "filters": {"part": 3}})
    assert r.status_code == 422 and "filters" in r.json()["detail"]
    r = client.post("/v1/search", data={"drawing_id": "dwg-1", "filters": "{not json"})
    assert r.status_code == 422
    r = client.post("/v1/search", json={"k": 3})
    assert r.status_code == 422 and "drawing_id" in r.json()["detail"]
    r = client.post("/v1/search", content=b"x", headers={"content-type": "text/csv"})
    assert r.status_code == 415
    r = client.post("/v1/search", content=b"{oops", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "malformed JSON" in r.json()["detail"]
    r = client.post("/v1/search", files={"file": ("q.png", b"not an image", "image/png")})
    assert r.status_code == 400


def test_index_built_by_another_embedder_is_503(tmp_path, services, drawings):
    services.index = FaissIndex(tmp_path / "other", services.embedder.dim, embedder_name="clip-vit-b32-v1")
    client = TestClient(create_app(services))
    r = client.post("/v1/search", files={"file": ("q.png", png(drawings[0].image), "image/png")})
    assert r.status_code == 503 and "clip-vit-b32-v1" in r.json()["detail"]


def test_models_list_and_detail(client, services):
    reg = services.registry
    group = Names().model_package_group
    spec = {"Containers": [{"Image": "inference", "ModelDataUrl": "file:///models/v0/model.tar.gz"}]}
    reg.create_model_package({"ModelPackageGroupName": group, "ModelApprovalStatus": "Approved",
                              "InferenceSpecification": spec,
                              "CustomerMetadataProperties": {"ocrloop:version": "v0", "ocrloop:stage": "Deployed"}})
    reg.create_model_package({"ModelPackageGroupName": group, "ModelApprovalStatus": "PendingManualApproval",
                              "InferenceSpecification": spec, "CustomerMetadataProperties": {
                                  "ocrloop:version": "ocrloop-train-2", "ocrloop:stage": "Registered",
                                  "ocrloop:parent": "v0",
                                  "ocrloop:metrics": json.dumps({"candidate": {"new_line_acc": 0.91}})}})
    reg.create_model_package({"ModelPackageGroupName": "someone-else", "CustomerMetadataProperties": {}})
    r = client.get("/v1/models")
    assert r.status_code == 200
    models = r.json()["models"]
    assert [m["version"] for m in models] == ["ocrloop-train-2", "v0"]
    assert models[0]["approval"] == "PendingManualApproval" and models[0]["stage"] == "Registered"
    assert models[0]["metrics"] == {"candidate": {"new_line_acc": 0.91}} and models[0]["parent"] == "v0"
    assert models[1]["stage"] == "Deployed" and models[1]["model_data_url"] == "file:///models/v0/model.tar.gz"

    r = client.get("/v1/models/v0")
    assert r.status_code == 200 and r.json()["package_version"] == 1 and r.json()["properties"]["ocrloop:stage"] == "Deployed"
    assert client.get("/v1/models/2").json()["version"] == "ocrloop-train-2"  # by package version number
    r = client.get("/v1/models/v9")
    assert r.status_code == 404 and "v9" in r.json()["detail"]
