"""The ``ocrloop`` CLI against the real API served by uvicorn on 127.0.0.1 (background thread)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import httpx
import pytest
import uvicorn

from ocrloop import cli
from ocrloop.api import ApiServices, create_app
from ocrloop.config import Names
from ocrloop.index import synth
from ocrloop.index.embed import ResNetDrawingEmbedder
from ocrloop.index.faiss_index import FaissIndex
from test_api import FakeHosting, FakeRegistry, MemoryBlobStore

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    embedder = ResNetDrawingEmbedder()
    services = ApiServices(hosting=FakeHosting(), registry=FakeRegistry(),
                           index=FaissIndex(tmp / "index", embedder.dim, embedder_name=embedder.name),
                           embedder=embedder, names=Names(), drawings=MemoryBlobStore())
    services.registry.create_model_package({
        "ModelPackageGroupName": Names().model_package_group, "ModelApprovalStatus": "Approved",
        "CustomerMetadataProperties": {"ocrloop:version": "v0", "ocrloop:stage": "Deployed",
                                       "ocrloop:metrics": json.dumps({"candidate": {"line_acc": 0.9}})}})
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(services), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    files = []
    for i, part in enumerate(["plate", "shaft", "flange", "bracket"]):
        path = tmp / f"dwg{i}.png"
        cv2.imwrite(str(path), synth.drawing(300 + i, (900, 640), part).image)
        files.append(path)
    yield {"url": f"http://127.0.0.1:{port}", "files": files, "services": services, "tmp": tmp}
    srv.should_exit = True
    thread.join(10)


def run(capsys, *argv):
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ocr_prints_a_table_and_json(server, capsys):
    code, out, err = run(capsys, "ocr", str(server["files"][0]), "--url", server["url"])
    assert code == 0, err
    assert "model ocrloop-v1: 2 lines" in out and "Ø25 H7" in out and "10,10-110,40" in out
    code, out, _ = run(capsys, "ocr", str(server["files"][0]), "--url", server["url"], "--json")
    assert code == 0 and json.loads(out)["lines"][1]["text"] == "SIZE 900x640"


def test_add_then_search_by_file_and_by_id(server, capsys):
    url = server["url"]
    for i, path in enumerate(server["files"]):
        code, out, err = run(capsys, "add", str(path), "--drawing-id", f"cli-{i}", "--meta", f"sheet=S{i}", "--url", url)
        assert code == 0, err
        assert f"registered cli-{i}" in out
    code, _, err = run(capsys, "add", str(server["files"][0]), "--drawing-id", "cli-0", "--url", url)
    assert code == 1 and "API error 409" in err

    rotated = server["tmp"] / "query.png"
    cv2.imwrite(str(rotated), cv2.rotate(cv2.imread(str(server["files"][2])), cv2.ROTATE_90_COUNTERCLOCKWISE))
    code, out, err = run(capsys, "search", str(rotated), "-k", "3", "--url", url)
    assert code == 0, err
    rows = out.strip().splitlines()
    assert rows[0].split() == ["#", "drawing_id", "score", "text"] and len(rows) == 2 + 3
    assert rows[2].split()[1] == "cli-2"

    code, out, err = run(capsys, "search", "--drawing-id", "cli-1", "-k", "2", "--json", "--url", url)
    assert code == 0, err
    results = json.loads(out)["results"]
    assert len(results) == 2 and "cli-1" not in {r["drawing_id"] for r in results}
    code, out, _ = run(capsys, "search", "--drawing-id", "cli-1", "--filter", "sheet=s3", "--json", "--url", url)
    assert [r["drawing_id"] for r in json.loads(out)["results"]] == ["cli-3"]


def test_models_table(server, capsys):
    code, out, err = run(capsys, "models", "--url", server["url"])
    assert code == 0, err
    header, _, row = out.strip().splitlines()
    assert header.split() == ["package_version", "version", "approval", "stage", "parent", "metrics"]
    assert row.split()[:4] == ["1", "v0", "Approved", "Deployed"] and '"line_acc": 0.9' in row


def test_errors_have_clear_messages_and_exit_codes(server, capsys):
    dead = f"http://127.0.0.1:{free_port()}"
    code, _, err = run(capsys, "ocr", str(server["files"][0]), "--url", dead)
    assert code == 2 and "cannot reach the ocrloop API" in err and "ocrloop up" in err
    code, _, err = run(capsys, "models", "--url", dead)
    assert code == 2
    code, _, err = run(capsys, "ocr", str(server["tmp"] / "nope.png"), "--url", server["url"])
    assert code == 2 and "cannot read" in err
    code, _, err = run(capsys, "search", "--url", server["url"])
    assert code == 2 and "either FILE or --drawing-id" in err
    code, _, err = run(capsys, "search", "--drawing-id", "ghost", "--url", server["url"])
    assert code == 1 and "404" in err and "ghost" in err
    code, _, err = run(capsys, "search", "--drawing-id", "cli-1", "-k", "0", "--url", server["url"])
    assert code == 1 and "422" in err
    text = server["tmp"] / "notes.txt"
    text.write_text("not a drawing")
    code, _, err = run(capsys, "ocr", str(text), "--url", server["url"])
    assert code == 1 and "415" in err
    code, _, err = run(capsys, "add", str(server["files"][0]), "--meta", "novalue", "--url", server["url"])
    assert code == 2 and "KEY=VALUE" in err


def test_up_serves_the_local_runtime_and_stops_cleanly(tmp_path, capsys):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "ocrloop.cli", "up", "--home", str(tmp_path / "home"),
                             "--port", str(port), "--log-level", "warning"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                health = httpx.get(f"{url}/health", timeout=2).json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "ocrloop up did not answer within 90 s"
                time.sleep(0.3)
        assert health["status"] == "ok" and health["index"]["count"] == 0
        code, out, err = run(capsys, "models", "--url", url)
        assert code == 0 and "no model versions in ocrloop-rec" in out, err
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "ocrloop API stopped" in out and "Traceback" not in out


def test_console_script_entry_point_and_demo_delegation(monkeypatch):
    r = subprocess.run([sys.executable, "-m", "ocrloop.cli", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0
    for command in ("up", "ocr", "add", "search", "models", "demo"):
        assert command in r.stdout
    seen = []
    import ocrloop.demo

    monkeypatch.setattr(ocrloop.demo, "main", lambda argv: seen.append(argv) or 0)
    assert cli.main(["demo", "--max-steps", "5", "--help"]) == 0
    assert seen == [["--max-steps", "5", "--help"]]
