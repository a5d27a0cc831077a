"""LocalHosting with real server processes: create, blue/green update under load, auto-rollback."""

from __future__ import annotations

import fcntl
import json
import os
import tarfile
import threading
import time
from pathlib import Path

import pytest

from serving_fixtures import make_rec_artifact, render_page

from ocrloop import config, events
from ocrloop.config import Names
from ocrloop.local.hosting import (EndpointBusy, EndpointNotFound, EndpointUnavailable, InvocationError, LocalHosting,
                                   blue_green_deployment_config)

EP = Names().endpoint_name
ALARMS = [f"{EP}-5xx", f"{EP}-latency"]  # the names handlers.deployment_config uses
CONFIG = blue_green_deployment_config(canary_percent=20, bake_s=1, alarm_names=ALARMS)


def _server_children() -> list[int]:
    """PIDs of serve.py processes whose parent is this test process (Linux /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and b"serve.py" in cmd and stat.rsplit(")", 1)[1].split()[0] != "Z":
            out.append(int(entry.name))
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    v2 = make_rec_artifact(root / "v2", "rec-v2")
    with tarfile.open(root / "v2.tar.gz", "w:gz") as tar:  # SageMaker's model.tar.gz form
        for f in sorted(v2.iterdir()):
            tar.add(f, arcname=f.name)
    return {
        "v1": make_rec_artifact(root / "v1", "rec-v1"),
        "v2": root / "v2.tar.gz",
        "v3": make_rec_artifact(root / "v3", "rec-v3", corrupt=True),
        "v4": make_rec_artifact(root / "v4", "rec-v4"),
    }


@pytest.fixture(scope="module")
def page_png():
    import cv2

    page = render_page([("SCALE 1:20", (40, 40), 26, 0), ("PART 4711", (40, 100), 26, 0)], size=(360, 180))
    return cv2.imencode(".png", page)[1].tobytes()


@pytest.fixture(scope="module")
def hosting(tmp_path_factory, models):
    """A LocalHosting whose endpoint was created with v1 (the first deploy is timed and recorded)."""
    emitted: list[dict] = []
    h = LocalHosting(tmp_path_factory.mktemp("endpoints"), emitted.append, canary_requests=5)
    h.emitted = emitted  # type: ignore[attr-defined]
    t0 = time.monotonic()
    h.first = {  # type: ignore[attr-defined]
        "name": h.deploy(EP, "arn:aws:sagemaker:us-east-1:000000000000:model-package/ocrloop-rec/1",
                         models["v1"].as_uri(), CONFIG),
        "elapsed_s": time.monotonic() - t0,
        "describe": h.describe_endpoint(EP),
    }
    yield h
    h.stop_all()
    assert _server_children() == [], "stop_all left server processes running"


def _serving_version(h: LocalHosting) -> str:
    return h.describe_endpoint(EP)["ProductionVariants"][0]["ModelVersion"]


def _version(h: LocalHosting, png: bytes) -> str:
    return json.loads(h.invoke(EP, png, "image/png"))["model_version"]


@pytest.fixture(scope="module")
def crop_json():
    """A rec-only request (one line crop): cheap, so the client below sends many during a switch."""
    import base64

    import cv2

    crop = render_page([("SCALE 1:20", (4, 4), 26, 0)], size=(170, 44))
    return json.dumps({"crops_b64": [base64.b64encode(cv2.imencode(".png", crop)[1].tobytes()).decode()]}).encode()


def test_first_deploy_creates_the_endpoint(hosting, models, page_png):
    name, d = hosting.first["name"], hosting.first["describe"]
    assert name == f"{EP}-rec-v1"
    assert d["EndpointStatus"] == "InService" and d["EndpointConfigName"] == name
    assert d["EndpointArn"] == events.arn("endpoint", EP) and "FailureReason" not in d
    (variant,) = d["ProductionVariants"]
    assert variant["VariantName"] == "AllTraffic" and variant["CurrentInstanceCount"] == 1
    assert variant["ModelDataUrl"] == models["v1"].as_uri() and variant["ModelVersion"] == "rec-v1"
    assert d["Url"].startswith("http://127.0.0.1:")
    event = hosting.emitted[0]
    assert json.loads(json.dumps(event)) == event
    assert event["detail-type"] == config.DT_ENDPOINT and event["source"] == "aws.sagemaker"
    assert event["resources"] == [d["EndpointArn"]]
    assert event["detail"]["EndpointStatus"] == "InService" and event["detail"]["EndpointConfigName"] == name
    assert events.matches(Names().patterns()[config.ON_ENDPOINT_UPDATED], event)
    assert _version(hosting, page_png) == _serving_version(hosting)
    print(f"first deploy (start + ping + canary): {hosting.first['elapsed_s']:.1f} s")


def test_blue_green_update_under_load_loses_no_request(hosting, models, crop_json):
    blue = hosting.describe_endpoint(EP)
    blue_pid, blue_version = blue["ServerPid"], _serving_version(hosting)
    n_events = len(hosting.emitted)
    seen: list[str] = []
    failures: list[BaseException] = []
    latencies: list[float] = []
    stop = threading.Event()
    statuses: set[str] = set()

    def client():
        while not stop.is_set():
            statuses.add(hosting.describe_endpoint(EP)["EndpointStatus"])
            t0 = time.perf_counter()
            try:
                body = json.loads(hosting.invoke(EP, crop_json, "application/json"))
                assert body["texts"][0]["text"].replace(" ", "") == "SCALE1:20", body
                seen.append(body["model_version"])
                latencies.append(time.perf_counter() - t0)
            except BaseException as exc:  # noqa: BLE001 - any failure counts
                failures.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    try:
        time.sleep(0.5)
        name = hosting.deploy(EP, "arn:aws:sagemaker:us-east-1:000000000000:model-package/ocrloop-rec/2",
                              models["v2"].as_uri(), CONFIG)
        deadline = time.monotonic() + 30
        while (not seen or seen[-1] != "rec-v2") and time.monotonic() < deadline and not failures:
            time.sleep(0.1)
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join(60)
    assert failures == []
    assert statuses == {"InService", "Updating"}
    assert seen[0] == blue_version and seen[-1] == "rec-v2"
    switch = seen.index("rec-v2")
    assert set(seen[switch:]) == {"rec-v2"}, "traffic went back to blue after the switch"
    d = hosting.describe_endpoint(EP)
    assert name == f"{EP}-rec-v2" and d["EndpointConfigName"] == name and d["EndpointStatus"] == "InService"
    assert d["ServerPid"] != blue_pid and "PendingDeploymentSummary" not in d
    assert d["LastDeploymentConfig"] == CONFIG
    assert len(hosting.emitted) == n_events + 1
    assert hosting.emitted[-1]["detail"]["EndpointConfigName"] == name
    assert _server_children() == [d["ServerPid"]], "blue was not stopped"
    print(f"{len(seen)} requests during the update, none failed; "
          f"rec-only latency median {sorted(latencies)[len(latencies) // 2] * 1000:.0f} ms")


def test_broken_green_rolls_back_and_blue_keeps_serving(hosting, models, page_png):
    before = hosting.describe_endpoint(EP)
    name = hosting.deploy(EP, "arn:aws:sagemaker:us-east-1:000000000000:model-package/ocrloop-rec/3",
                          models["v3"].as_uri(), CONFIG)
    assert name == f"{EP}-rec-v3"
    d = hosting.describe_endpoint(EP)
    assert d["EndpointStatus"] == "InService"
    assert d["EndpointConfigName"] == before["EndpointConfigName"] and d["ServerPid"] == before["ServerPid"]
    assert d["FailureReason"].startswith(f"{name}: server exited") and "cannot load ONNX model" in d["FailureReason"]
    assert _version(hosting, page_png) == _serving_version(hosting) == before["ProductionVariants"][0]["ModelVersion"]
    event = hosting.emitted[-1]
    assert event["detail"]["EndpointStatus"] == "InService" and event["detail"]["FailureReason"] == d["FailureReason"]
    assert event["detail"]["EndpointConfigName"] == before["EndpointConfigName"]
    assert _server_children() == [d["ServerPid"]]


def test_canary_alarm_breach_rolls_back(hosting, models, page_png):
    before = hosting.describe_endpoint(EP)
    strict = json.loads(json.dumps(CONFIG))
    strict["AutoRollbackConfiguration"]["Alarms"].append(
        {"AlarmName": "too-strict", "MetricName": "ModelLatency", "Statistic": "Maximum", "Threshold": 1000,
         "ComparisonOperator": "GreaterThanThreshold"})  # 1 ms: no real page is that fast
    hosting.deploy(EP, "arn:aws:sagemaker:us-east-1:000000000000:model-package/ocrloop-rec/4",
                   models["v4"].as_uri(), strict)
    d = hosting.describe_endpoint(EP)
    assert d["EndpointStatus"] == "InService" and d["EndpointConfigName"] == before["EndpointConfigName"]
    assert "auto-rollback: alarm too-strict in ALARM: Maximum ModelLatency" in d["FailureReason"]
    assert _version(hosting, page_png) == _serving_version(hosting) == before["ProductionVariants"][0]["ModelVersion"]
    assert _server_children() == [d["ServerPid"]]


def test_failed_first_deploy_and_errors(hosting, models, page_png):
    missing = (models["v1"].parent / "never-uploaded").as_uri()
    name = hosting.deploy("ocrloop-broken", "arn:x:model-package/g/9", missing, {})
    d = hosting.describe_endpoint("ocrloop-broken")
    assert name == "ocrloop-broken-9"  # no model card to read the version from: the package version
    assert d["EndpointStatus"] == "Failed" and "never-uploaded does not exist" in d["FailureReason"]
    assert "Url" in d and d["Url"] is None
    assert hosting.emitted[-1]["detail"]["EndpointStatus"] == "Failed"
    assert events.matches(Names("ocrloop").patterns()[config.ON_ENDPOINT_UPDATED],
                          {**hosting.emitted[-1], "detail": {**hosting.emitted[-1]["detail"], "EndpointName": EP}})
    with pytest.raises(EndpointUnavailable, match="Failed"):
        hosting.invoke("ocrloop-broken", page_png, "image/png")
    with pytest.raises(EndpointNotFound):
        hosting.describe_endpoint("nope")
    with pytest.raises(KeyError):  # handlers catch KeyError for "no endpoint yet"
        hosting.invoke("nope", page_png, "image/png")
    with pytest.raises(InvocationError) as err:
        hosting.invoke(EP, b"garbage", "image/png")
    assert err.value.status_code == 400 and "cannot decode image" in err.value.body
    with pytest.raises(InvocationError) as err:
        hosting.invoke(EP, page_png, "text/csv")
    assert err.value.status_code == 415
    with pytest.raises(ValueError, match="file://"):
        hosting.deploy(EP, "arn:x", "s3://bucket/model.tar.gz", CONFIG)
    with pytest.raises(ValueError, match="Type"):
        hosting.deploy(EP, "arn:x", models["v1"].as_uri(),
                       {"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": {"Type": "SOMETIMES"}}})
    with open(hosting.home / f".{EP}.lock", "w") as fh:  # another process is updating the endpoint
        fcntl.flock(fh, fcntl.LOCK_EX)
        with pytest.raises(EndpointBusy):
            hosting.deploy(EP, "arn:x", models["v1"].as_uri(), CONFIG)


def test_invoke_retries_once_after_rereading_state(hosting, page_png, monkeypatch):
    """A request that read the old Url just before a switch (blue gone) lands on the new server."""
    real = hosting._read
    stale = dict(real(EP), Url="http://127.0.0.1:9")  # nothing listens on the discard port
    calls = []

    def read(name):
        calls.append(name)
        return stale if len(calls) == 1 else real(name)

    expected = _serving_version(hosting)
    monkeypatch.setattr(hosting, "_read", read)
    assert _version(hosting, page_png) == expected and len(calls) == 2
    calls.clear()
    monkeypatch.setattr(hosting, "_read", lambda name: stale)
    with pytest.raises(EndpointUnavailable, match="ConnectError"):
        hosting.invoke(EP, page_png, "image/png")


def test_stop_all_drains_in_flight_requests(tmp_path, models):
    """Leaving the context manager SIGTERMs the server; a request already running still completes."""
    import cv2

    from serving_fixtures import PAGE_ITEMS

    four_up = [(t, (x + dx, y + dy), size, a) for dx, dy in ((0, 0), (950, 0), (0, 680), (950, 680))
               for t, (x, y), size, a in PAGE_ITEMS]
    big = cv2.imencode(".png", render_page(four_up, size=(1900, 1360)))[1].tobytes()
    results: list = []
    with LocalHosting(tmp_path / "eps", lambda e: None, canary_requests=1) as h:
        h.deploy(EP, "arn:x:model-package/g/1", models["v1"].as_uri(), {})
        pid = h.describe_endpoint(EP)["ServerPid"]
        t = threading.Thread(target=lambda: results.append(json.loads(h.invoke(EP, big, "image/png"))))
        t.start()
        time.sleep(0.6)  # the request is being processed (≈1.5-3 s) when the server is told to stop
    t.join(30)
    assert results and len(results[0]["lines"]) == 24, results
    # uvicorn began shutting down before it sent that response: the request was drained, not cut.
    (log,) = (tmp_path / "eps" / EP).glob("*/server.log")
    text = log.read_text()
    assert text.index("Shutting down") < text.rindex('"POST /invocations HTTP/1.1" 200'), text[-800:]
    assert pid not in _server_children()
    assert h.describe_endpoint(EP)["EndpointStatus"] == "OutOfService"
