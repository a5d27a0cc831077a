"""Core logic on the local adapters: blob store, bus, registry, labeling, dataset versions, gate,
and the handlers' idempotency (no paddle, no servers)."""

import io
import json

import pytest
from PIL import Image, ImageDraw

from ocrloop import config, dataset, events, gate, handlers
from ocrloop.config import LoopConfig, Names
from ocrloop.local.blobstore import FolderBlobStore
from ocrloop.local.bus import LocalBus
from ocrloop.local.labeling import LocalLabeling
from ocrloop.local.registry import SqliteRegistry
from ocrloop.manifest import output_manifest_line
from ocrloop.ports import ObjectExists
from ocrloop.runtime import Runtime


def test_blobstore_versioning_and_conditional_put(tmp_path):
    seen = []
    s = FolderBlobStore(tmp_path / "b", "b", on_put=lambda *a: seen.append(a))
    s.put("a/x.txt", b"1")
    s.put("a/x.txt", b"2")
    assert s.get("a/x.txt") == b"2"
    assert len(s.versions("a/x.txt")) == 1
    with pytest.raises(ObjectExists):
        s.put("a/x.txt", b"3", if_absent=True)
    assert s.get("a/x.txt") == b"2"
    assert s.list("a/") == ["a/x.txt"]
    s.delete("a/x.txt")
    assert not s.exists("a/x.txt") and len(s.versions("a/x.txt")) == 2
    with pytest.raises(KeyError):
        s.get("a/x.txt")
    with pytest.raises(ValueError):
        s.put("../escape", b"")
    assert [a[1] for a in seen] == ["a/x.txt", "a/x.txt"]
    assert s.uri("k").startswith("file://")


def test_bus_retries_then_dead_letters(tmp_path):
    bus = LocalBus(tmp_path / "dlq", max_attempts=3)
    calls = []

    def flaky(ev):
        calls.append(ev["id"])
        raise RuntimeError("boom")

    bus.add_rule("r", {"source": ["aws.s3"]}, flaky)
    ok = []
    bus.add_rule("ok", {"source": ["aws.s3"]}, lambda ev: ok.append(ev) or {"fine": 1})
    bus.put_events([events.object_created("b", "drawings/x.png", 1)])
    assert bus.run_until_idle(5) == 1
    assert len(calls) == 3 and len(ok) == 1
    (dead,) = bus.dead_letters()
    assert dead["rule"] == "r" and "boom" in dead["error"]


def test_registry_states_events_and_client_token(tmp_path):
    got = []
    reg = SqliteRegistry(tmp_path / "r.sqlite", got.append)
    req = {"ModelPackageGroupName": "g", "ClientToken": "job-1", "ModelApprovalStatus": "PendingManualApproval",
           "InferenceSpecification": {"Containers": [{"Image": "i", "ModelDataUrl": "file:///m"}]},
           "CustomerMetadataProperties": {"ocrloop:version": "job-1"}}
    arn = reg.create_model_package(req)
    assert reg.create_model_package(req) == arn  # idempotent
    assert len(got) == 1 and got[0]["detail-type"] == config.DT_MODEL_PACKAGE
    reg.update_model_package({"ModelPackageArn": arn, "ModelApprovalStatus": "Approved"})
    assert reg.describe_model_package(arn)["ModelApprovalStatus"] == "Approved"
    assert got[-1]["detail"]["ModelApprovalStatus"] == "Approved"
    assert [p["ModelPackageVersion"] for p in reg.list_model_packages("g", "Approved")] == [1]
    with pytest.raises(ValueError):
        reg.update_model_package({"ModelPackageArn": arn, "ModelApprovalStatus": "Deployed"})
    with pytest.raises(KeyError):
        reg.describe_model_package("arn:nope")


def _png(w=240, h=120, text="⌀12"):
    img = Image.new("RGB", (w, h), "white")
    ImageDraw.Draw(img).text((20, 20), text, fill="black")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


class RecordingTraining:
    """Training port double: records CreateTrainingJob requests (the e2e test runs real ones)."""

    def __init__(self):
        self.requests = {}

    def create_training_job(self, request):
        if request["TrainingJobName"] in self.requests:
            raise ObjectExists(request["TrainingJobName"])
        self.requests[request["TrainingJobName"]] = request
        return events.arn("training-job", request["TrainingJobName"])

    def describe_training_job(self, name):
        return {"TrainingJobName": name, "TrainingJobStatus": "InProgress"}


class NoEndpoint:
    def invoke(self, *a):
        raise KeyError("no endpoint")

    def describe_endpoint(self, name):
        raise KeyError(name)


@pytest.fixture
def rt(tmp_path):
    names = Names()
    bus = LocalBus(tmp_path / "dlq")
    emit = lambda e: bus.put_events([e])  # noqa: E731
    stores = {b: FolderBlobStore(tmp_path / b, b) for b in ("raw", "lab", "ds", "models")}

    def find(uri):
        for s in stores.values():
            if uri.startswith(s.uri("")):
                return s, uri[len(s.uri("")):]
        raise KeyError(uri)

    labeling = LocalLabeling(tmp_path / "labeling", lambda u: find(u)[0].get(find(u)[1]),
                             lambda u, d: find(u)[0].put(find(u)[1], d), emit)
    registry = SqliteRegistry(tmp_path / "reg.sqlite", emit)
    r = Runtime(names=names, config=LoopConfig(labeling_batch_size=2, holdout_fraction=0.5), raw=stores["raw"],
                labeling_store=stores["lab"], datasets=stores["ds"], models=stores["models"], bus=bus,
                labeling=labeling, training=RecordingTraining(), registry=registry, hosting=NoEndpoint())
    # a champion to fine-tune from
    registry.create_model_package({"ModelPackageGroupName": names.model_package_group, "ClientToken": "v0",
                                   "ModelApprovalStatus": "Approved",
                                   "InferenceSpecification": {"Containers": [{"Image": "i", "ModelDataUrl": stores["models"].uri("v0/model.tar.gz")}]},
                                   "CustomerMetadataProperties": {"ocrloop:version": "v0", handlers.STAGE: "Deployed"}})
    stores["ds"].put(handlers.BASE_TRAIN, b"".join(
        json.dumps({"id": f"b{i}", "image": f"base/crops/b{i}.png", "text": "base"}).encode() + b"\n" for i in range(10)))
    for i in range(10):
        stores["ds"].put(f"base/crops/b{i}.png", _png(60, 20, "base"))
    stores["ds"].put(handlers.BASE_OLDDOMAIN, b"")
    return r


def test_start_labeling_batches_and_is_idempotent(rt):
    for i in range(2):
        rt.raw.put(f"drawings/d{i}.png", _png())
    ev0 = events.object_created(rt.names.raw_bucket, "drawings/d0.png", 1)
    assert handlers.start_labeling(ev0, rt)["pending"] == 1
    assert handlers.start_labeling(ev0, rt)["pending"] == 1  # same event again: still one pending
    out = handlers.start_labeling(events.object_created(rt.names.raw_bucket, "drawings/d1.png", 1), rt)
    job = out["labeling_job"]
    items = rt.labeling.input_items(job)
    assert [i["source-ref"].rsplit("/", 1)[-1] for i in items] == ["d0.png", "d1.png"]
    assert "no endpoint" in items[0]["pre-annotations"]["error"]
    assert rt.labeling.describe_labeling_job(job)["LabelingJobStatus"] == "InProgress"
    assert rt.labeling_store.list("pending/") == []


def _complete_job(rt, n=8):
    keys = []
    for i in range(n):
        rt.raw.put(f"drawings/d{i}.png", _png())
        keys.append(f"drawings/d{i}.png")
    job = "ocrloop-testjob"
    rt.labeling_store.put(f"jobs/{job}/input.manifest", b"")
    rt.labeling.create_labeling_job(handlers.labeling_job_request(rt, job, rt.labeling_store.uri(f"jobs/{job}/input.manifest")))
    poly = [[10, 10], [110, 10], [110, 40], [10, 40]]
    lines = [output_manifest_line(rt.raw.uri(k), 240, 120, [(poly, f"⌀{i}2"), (poly, "M8x1.25")], job, "t")
             for i, k in enumerate(keys)]
    lines.insert(1, "{corrupt")
    rt.labeling.complete(job, "\n".join(lines) + "\n")
    return job


def test_labeling_completed_builds_version_and_starts_one_training_job(rt):
    job = _complete_job(rt)
    ev = events.labeling_job_state_change(job, "Completed")
    first = handlers.on_labeling_completed(ev, rt)
    again = handlers.on_labeling_completed(ev, rt)
    again2 = handlers.on_labeling_completed(ev, rt)
    assert first["started"] and not again["started"] and not again2["started"]
    assert len(rt.training.requests) == 1
    version = first["dataset_version"]
    summary = json.loads(rt.datasets.get(f"versions/{version}/version.json"))
    assert summary["quarantined"] == 1 and summary["drawings"] == 8
    assert summary["train_samples"] + summary["holdout_samples"] == 16 and summary["holdout_samples"] > 0
    q = dataset.read_jsonl(rt.datasets, f"versions/{version}/quarantine.jsonl")
    assert "invalid JSON" in q[0]["reason"]
    req = next(iter(rt.training.requests.values()))
    assert {c["ChannelName"] for c in req["InputDataConfig"]} == {"train", "validation", "olddomain", "model",
                                                                  "det_train", "det_validation"}
    hp = req["HyperParameters"]
    assert all(isinstance(v, str) for v in hp.values()) and hp["parent_version"] == "v0"
    assert hp["det_steps"] == str(rt.config.det_steps) and int(hp["det_steps"]) > 0
    # the continual-learning recipe of the loop config, in a form the training job accepts
    from ocrloop.model.train import Hyperparameters

    parsed = Hyperparameters.from_sagemaker(hp)
    assert (parsed.freeze, parsed.sampler, parsed.distill_rows) == (rt.config.freeze, "balanced", rt.config.distill_rows)
    assert parsed.replay_fraction == pytest.approx(0.3) and parsed.distill_alpha == rt.config.distill_alpha > 0
    # det channels: the sheets (copied) and PaddleOCR det labels, split by drawing like rec
    job_name = req["TrainingJobName"]
    det_held = {line.split("\t", 1)[0] for line in rt.datasets.get(f"versions/{version}/det/holdout.txt").decode().splitlines()}
    assert len(det_held) == summary["holdout_drawings"] and len(det_held) < summary["drawings"]
    for channel, n in (("det_train", summary["drawings"] - len(det_held)), ("det_validation", len(det_held))):
        labels = rt.datasets.get(f"training/{job_name}/{channel}/label.txt").decode().splitlines()
        assert len(labels) == n == first["channels"][channel]
        for line in labels:
            name, anns = line.split("\t", 1)
            assert rt.datasets.exists(f"training/{job_name}/{channel}/{name}")
            assert json.loads(anns)[1] == {"transcription": "M8x1.25", "points": [[10, 10], [110, 10], [110, 40], [10, 40]]}
    train = dataset.read_jsonl(rt.datasets, f"training/{req['TrainingJobName']}/train/manifest.jsonl")
    val = dataset.read_jsonl(rt.datasets, f"training/{req['TrainingJobName']}/validation/manifest.jsonl")
    n_new = sum(s["origin"] == "new" for s in train)
    assert n_new == summary["train_samples"]
    assert len(train) - n_new == round(n_new * 3 / 7)
    # whole drawings are held out, never split
    assert not ({s["drawing_id"] for s in val} & {s.get("drawing_id") for s in train})
    # channel folders hold every image their manifest names
    for s in train:
        assert rt.datasets.exists(f"training/{req['TrainingJobName']}/train/{s['image']}")


def test_dataset_version_is_immutable(rt):
    job = _complete_job(rt)
    handlers.on_labeling_completed(events.labeling_job_state_change(job, "Completed"), rt)
    (version,) = dataset.list_versions(rt.datasets)
    before = rt.datasets.get(f"versions/{version}/rec/train.jsonl")
    with pytest.raises(ObjectExists):
        rt.datasets.put(f"versions/{version}/rec/train.jsonl", b"tampered", if_absent=True)
    assert rt.datasets.get(f"versions/{version}/rec/train.jsonl") == before


def test_crop_quad_rotates_vertical_text():
    img = Image.new("RGB", (100, 300), "white")
    crop = dataset.crop_quad(img, [(10, 10), (40, 10), (40, 210), (10, 210)])
    assert crop.size == (200, 30)


def test_gate_policy():
    cfg = LoopConfig(gate_max_old_drop=1.0)
    m = lambda cv, co, nv, no: {"champion": {"validation": {"line_acc": cv, "char_acc": cv}, "olddomain": {"line_acc": co, "char_acc": co}},  # noqa: E731
                                "candidate": {"validation": {"line_acc": nv, "char_acc": nv}, "olddomain": {"line_acc": no, "char_acc": no}}}
    assert gate.decide(m(0.5, 0.9, 0.7, 0.895), cfg).passed
    d = gate.decide(m(0.5, 0.9, 0.7, 0.85), cfg)
    assert not d.passed and "old-domain" in d.reasons[0]
    assert not gate.decide(m(0.5, 0.9, 0.5, 0.9), cfg).passed
    # a drop of exactly the allowed points passes (1.0 − 0.99 is 1.0000000000000009 in floats)
    at_limit = gate.decide(m(0.5, 1.0, 0.7, 0.99), cfg)
    assert at_limit.passed and at_limit.old_drop_pts == 1.0, at_limit.reasons
    with pytest.raises(KeyError):
        gate.decide({"champion": {}}, cfg)


def test_split_keeps_groups_together_and_always_holds_something_out(rt):
    from ocrloop.manifest import LabeledImage, Annotation

    poly = ((10.0, 10.0), (110.0, 10.0), (110.0, 40.0), (10.0, 40.0))
    images = []
    for i in range(6):
        rt.raw.put(f"drawings/s{i}.png", _png())
        images.append(LabeledImage(rt.raw.uri(f"drawings/s{i}.png"), f"s{i}", 240, 120,
                                   (Annotation(poly, f"T{i}"),), i + 1, True, group=f"doc{i // 2}"))
    summary = dataset.build_version(rt.datasets, "ds-g", images, [], lambda u: rt.raw.get(u.split("/raw/", 1)[1]),
                                    labeling_job="j", holdout_fraction=0.01, seed=3)
    assert summary["holdout_forced"] and summary["holdout_groups"] == 1
    train = dataset.read_jsonl(rt.datasets, "versions/ds-g/rec/train.jsonl")
    held = dataset.read_jsonl(rt.datasets, "versions/ds-g/rec/holdout.jsonl")
    assert {s["group"] for s in train}.isdisjoint({s["group"] for s in held})
    assert len(held) == 2 and len(train) == 4
