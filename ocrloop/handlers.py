"""The loop's transitions: one function per EventBridge rule (DESIGN.md "The loop").

Each handler takes ``(event, rt)``: the event exactly as EventBridge delivers it and the
``Runtime`` of ports. Handlers are idempotent (SageMaker may deliver an event more than once): names
are derived from their inputs, writes are ``if_absent``, CreateModelPackage carries a ClientToken,
and deploys check what the endpoint already runs. Standard library only (Lambda path).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import posixpath
import tarfile
from typing import Any

from . import config as cfg
from . import dataset, gate, replay
from .events import name_from_arn
from .manifest import LABEL_ATTRIBUTE, parse_output_manifest
from .ports import BlobStore, ObjectExists
from .runtime import Runtime

log = logging.getLogger("ocrloop.handlers")

STAGE = "ocrloop:stage"
"""CustomerMetadataProperties key: Registered → Deploying → Deployed / DeployFailed / Retired."""
METRIC_REGEXES = [
    {"Name": name, "Regex": f"METRIC {name}=([0-9.eE+-]+)"}
    for name in ("train_loss", "validation_line_acc", "validation_char_acc", "olddomain_line_acc",
                 "olddomain_char_acc", "det_hmean", "det_precision", "det_recall", "champion_det_hmean",
                 "det_read_line_acc", "champion_det_read_line_acc", "det_final_loss")
]
"""SageMaker MetricDefinitions for the ``METRIC name=value`` lines the training entrypoint prints
(anchored on ``METRIC `` so ``det_hmean`` does not also match ``champion_det_hmean``)."""
BASE_TRAIN = "base/train.jsonl"
BASE_OLDDOMAIN = "base/olddomain.jsonl"


def _short_hash(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:10]


def resolve(rt: Runtime, uri: str) -> tuple[BlobStore, str]:
    """Map a blob URI (``s3://bucket/key`` or ``file://…``) to (store, key).

    Raises:
        KeyError: the URI is in none of the runtime's stores.
    """
    for store in (rt.raw, rt.labeling_store, rt.datasets, rt.models):
        root = store.uri("")
        if uri.startswith(root):
            return store, uri[len(root):]
    raise KeyError(f"{uri} is in none of ocrloop's buckets")


def read_uri(rt: Runtime, uri: str) -> bytes:
    store, key = resolve(rt, uri)
    return store.get(key)


# --------------------------------------------------------------------------- start_labeling

def start_labeling(event: dict[str, Any], rt: Runtime) -> dict[str, Any]:
    """S3 ``Object Created`` under ``drawings/`` → queue the drawing; when ``labeling_batch_size``
    drawings wait, create one labeling job for them, pre-annotated by the serving model.

    Pre-annotation: each drawing is OCR'd by the serving endpoint and the lines go into the input
    manifest as ``pre-annotations`` (annotators correct instead of typing). Without an endpoint the
    job starts without them.
    """
    detail = event["detail"]
    key = detail["object"]["key"]
    if not key.lower().endswith((".png", ".jpg", ".jpeg", ".tif", ".tiff")):
        return {"skipped": f"{key} is not an image"}
    marker = f"pending/{_short_hash(key)}.json"
    try:
        rt.labeling_store.put(marker, json.dumps({"key": key, "version_id": detail["object"].get("version-id")}).encode(),
                              if_absent=True)
    except ObjectExists:
        pass
    pending = sorted(k for k in rt.labeling_store.list("pending/"))
    if len(pending) < rt.config.labeling_batch_size:
        return {"queued": key, "pending": len(pending)}
    batch = pending[: rt.config.labeling_batch_size]
    keys = sorted(json.loads(rt.labeling_store.get(m))["key"] for m in batch)
    job = f"{rt.names.prefix}-{_short_hash(*keys)}"
    lines = []
    for k in keys:
        line: dict[str, Any] = {"source-ref": rt.raw.uri(k)}
        try:
            result = json.loads(rt.hosting.invoke(rt.names.endpoint_name, rt.raw.get(k), content_type_of(k)))
            line["pre-annotations"] = {"model_version": result.get("model_version"), "annotations": [
                {"polygon": ln["polygon"], "transcription": ln["text"], "score": ln["score"]} for ln in result["lines"]]}
        except Exception as exc:  # no endpoint yet, or it failed: label from scratch, say so
            line["pre-annotations"] = {"error": str(exc)[:300], "annotations": []}
        lines.append(json.dumps(line, ensure_ascii=False))
    manifest_key = f"jobs/{job}/input.manifest"
    try:
        rt.labeling_store.put(manifest_key, ("\n".join(lines) + "\n").encode(), if_absent=True)
    except ObjectExists:
        pass
    request = labeling_job_request(rt, job, rt.labeling_store.uri(manifest_key))
    try:
        arn = rt.labeling.create_labeling_job(request)
    except ObjectExists:
        arn = None
    for m in batch:
        rt.labeling_store.put(f"batched/{job}/{m.rsplit('/', 1)[-1]}", rt.labeling_store.get(m))
        _delete(rt.labeling_store, m)
    return {"labeling_job": job, "arn": arn, "drawings": len(keys)}


def content_type_of(key: str) -> str:
    """MIME type of a drawing by its extension (what the endpoint's /invocations accepts)."""
    ext = key.rsplit(".", 1)[-1].lower()
    return {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png"}.get(ext, "application/x-image")


def _delete(store: BlobStore, key: str) -> None:
    delete = getattr(store, "delete", None)
    if delete is not None:
        delete(key)


def labeling_job_request(rt: Runtime, job: str, manifest_uri: str) -> dict[str, Any]:
    """CreateLabelingJob request for ocrloop's custom task (boxes + transcription)."""
    return {
        "LabelingJobName": job,
        "LabelAttributeName": LABEL_ATTRIBUTE,
        "InputConfig": {
            "DataSource": {"S3DataSource": {"ManifestS3Uri": manifest_uri}},
            "DataAttributes": {"ContentClassifiers": ["FreeOfPersonallyIdentifiableInformation"]},
        },
        "OutputConfig": {"S3OutputPath": rt.labeling_store.uri("output/")},
        "RoleArn": rt.role_arn,
        "HumanTaskConfig": {
            "WorkteamArn": rt.workteam_arn,
            "UiConfig": {"UiTemplateS3Uri": rt.labeling_ui_template_uri or rt.labeling_store.uri("templates/ocr.liquid.html")},
            "PreHumanTaskLambdaArn": rt.pre_annotation_lambda_arn or "arn:aws:lambda:us-east-1:000000000000:function:ocrloop-pre",
            "TaskTitle": "Transcribe the text of an engineering drawing",
            "TaskDescription": "Correct each box around a text line and its transcription (⌀ ± ° GD&T symbols).",
            "TaskKeywords": ["OCR", "drawing", "transcription"],
            "NumberOfHumanWorkersPerDataObject": 1,
            "TaskTimeLimitInSeconds": 3600,
            "TaskAvailabilityLifetimeInSeconds": 864000,
            "MaxConcurrentTaskCount": 100,
            "AnnotationConsolidationConfig": {
                "AnnotationConsolidationLambdaArn": rt.consolidation_lambda_arn
                or "arn:aws:lambda:us-east-1:000000000000:function:ocrloop-consolidate"},
        },
        "Tags": [{"Key": "ocrloop:project", "Value": rt.names.prefix}],
    }


# --------------------------------------------------------------------------- labeling → training

def champion(rt: Runtime) -> dict[str, Any] | None:
    """The serving model package (stage Deployed), else the newest Approved one, else None.
    Returns the DescribeModelPackage dict."""
    approved = rt.registry.list_model_packages(rt.names.model_package_group, "Approved")
    described = [rt.registry.describe_model_package(p["ModelPackageArn"]) for p in approved]
    for d in described:
        if (d.get("CustomerMetadataProperties") or {}).get(STAGE) == "Deployed":
            return d
    return described[0] if described else None


def model_data_url(package: dict[str, Any]) -> str:
    return package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]


def on_labeling_completed(event: dict[str, Any], rt: Runtime) -> dict[str, Any]:
    """Labeling job Completed → dataset version → 7:3 training manifest → training job."""
    job = name_from_arn(event["resources"][0])
    if not job.startswith(f"{rt.names.prefix}-"):
        return {"skipped": f"labeling job {job} is not ocrloop's"}
    desc = rt.labeling.describe_labeling_job(job)
    if desc.get("LabelingJobStatus") != "Completed":
        return {"skipped": f"labeling job {job} is {desc.get('LabelingJobStatus')}"}
    out_uri = desc["LabelingJobOutput"]["OutputDatasetS3Uri"]
    lines = read_uri(rt, out_uri).decode("utf-8", errors="replace").splitlines()
    images, quarantine = parse_output_manifest(lines, desc.get("LabelAttributeName", LABEL_ATTRIBUTE))
    version = f"ds-{job[len(rt.names.prefix) + 1:]}"
    summary = dataset.build_version(rt.datasets, version, images, quarantine, lambda uri: read_uri(rt, uri),
                                    labeling_job=job, holdout_fraction=rt.config.holdout_fraction,
                                    seed=rt.config.seed)
    if summary["train_samples"] == 0:
        rt.notify("ocrloop: labeling job without usable lines",
                  f"{job}: {summary['quarantined']} quarantined, nothing to train on")
        return {"dataset_version": version, "training_job": None, "reason": "no training samples"}
    return start_training(rt, version)


def start_training(rt: Runtime, version: str) -> dict[str, Any]:
    """Build the channels for dataset ``version`` and create the training job (idempotent)."""
    versions = dataset.list_versions(rt.datasets)
    earlier = [v for v in versions if v < version]
    prefix = dataset.VERSIONS_PREFIX
    new = dataset.read_jsonl(rt.datasets, f"{prefix}{version}/rec/train.jsonl")
    earlier_train = [s for v in earlier for s in dataset.read_jsonl(rt.datasets, f"{prefix}{v}/rec/train.jsonl")]
    holdout = [s for v in versions if v <= version for s in dataset.read_jsonl(rt.datasets, f"{prefix}{v}/rec/holdout.jsonl")]
    base_train = dataset.read_jsonl(rt.datasets, BASE_TRAIN)
    olddomain = dataset.read_jsonl(rt.datasets, BASE_OLDDOMAIN)
    exclude = {s["id"] for s in holdout} | {s["id"] for s in olddomain}
    manifest, report = replay.mix(new, earlier_train, base_train, new_ratio=rt.config.new_ratio,
                                  replay_ratio=rt.config.replay_ratio, base_share=rt.config.base_pool_share,
                                  seed=rt.config.seed, exclude_ids=exclude)
    champ = champion(rt)
    if champ is None:
        raise RuntimeError("no Approved model package to fine-tune from: bootstrap v0 first")
    parent = champ["CustomerMetadataProperties"]["ocrloop:version"]
    job = f"{rt.names.prefix}-{version[3:]}-{_short_hash(version, parent)[:6]}"
    channels = {"train": manifest, "validation": holdout, "olddomain": olddomain}
    input_config = []
    for channel, samples in channels.items():
        base = f"training/{job}/{channel}/"
        for s in samples:
            rel = s["image"].rsplit("/", 1)[-1]
            if not rt.datasets.exists(base + rel):
                rt.datasets.put(base + rel, rt.datasets.get(s["image"]))
        body = "".join(json.dumps(dict(s, image=s["image"].rsplit("/", 1)[-1]), ensure_ascii=False) + "\n"
                       for s in samples)
        if not rt.datasets.exists(base + "manifest.jsonl"):
            rt.datasets.put(base + "manifest.jsonl", body.encode(), if_absent=True)
        input_config.append({"ChannelName": channel, "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": rt.datasets.uri(base), "S3DataDistributionType": "FullyReplicated"}},
            "InputMode": "File"})
    det_counts = {}
    det_versions = [v for v in versions if v <= version]
    det_sets = {"det_train": _det_lines(rt, det_versions, "train"),
                "det_validation": _det_lines(rt, det_versions, "holdout")}
    det_on = rt.config.det_steps > 0 and all(det_sets.values())
    for channel, lines in det_sets.items() if det_on else ():
        base = f"training/{job}/{channel}/"
        labels = []
        for key, body in lines:
            name = hashlib.sha256(key.encode()).hexdigest()[:16] + (posixpath.splitext(key)[1].lower() or ".png")
            if not rt.datasets.exists(base + name):
                try:
                    rt.datasets.put(base + name, read_uri(rt, key))
                except KeyError as exc:
                    log.warning("det sheet %s unreadable, skipped: %s", key, exc)
                    continue
            labels.append(f"{name}\t{body}\n")
        if not rt.datasets.exists(base + "label.txt"):
            rt.datasets.put(base + "label.txt", "".join(labels).encode(), if_absent=True)
        det_counts[channel] = len(labels)
        input_config.append({"ChannelName": channel, "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": rt.datasets.uri(base), "S3DataDistributionType": "FullyReplicated"}},
            "InputMode": "File"})
    input_config.append({"ChannelName": "model", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": model_data_url(champ), "S3DataDistributionType": "FullyReplicated"}},
        "InputMode": "File"})
    versions_used = sorted({s.get("dataset_version", "base") for s in manifest})
    hyper = {
        **rt.config.rec_hyperparameters(),
        "model_version": job, "parent_version": parent, "dataset_versions": json.dumps(versions_used),
        "det_steps": rt.config.det_steps if det_on else 0,
        "gate_config": json.dumps({k: v for k, v in rt.config.to_dict().items() if k.startswith("gate_")}),
    }
    if det_on:
        hyper.update(det_batch_size=rt.config.det_batch_size, det_crop_px=rt.config.det_crop_px,
                     det_learning_rate=rt.config.det_learning_rate, det_label_pad=rt.config.det_label_pad)
    mix_key = f"training/{job}/mix_report.json"
    if not rt.datasets.exists(mix_key):
        rt.datasets.put(mix_key, json.dumps({"dataset_version": version, "parent": parent, **report.to_json(),
                                             "channels": {k: len(v) for k, v in channels.items()}}).encode())
    request = {
        "TrainingJobName": job,
        "AlgorithmSpecification": {"TrainingImage": rt.training_image, "TrainingInputMode": "File",
                                   "MetricDefinitions": METRIC_REGEXES},
        "RoleArn": rt.role_arn,
        "HyperParameters": {k: str(v) for k, v in hyper.items()},
        "InputDataConfig": input_config,
        "OutputDataConfig": {"S3OutputPath": rt.models.uri("training-output/")},
        "ResourceConfig": {"InstanceType": rt.training_instance_type, "InstanceCount": 1, "VolumeSizeInGB": 50},
        "StoppingCondition": {"MaxRuntimeInSeconds": 4 * 3600, "MaxWaitTimeInSeconds": 8 * 3600},
        "EnableManagedSpotTraining": True,
        "CheckpointConfig": {"S3Uri": rt.models.uri(f"checkpoints/{job}/")},
        "Tags": [{"Key": "ocrloop:dataset-version", "Value": version}, {"Key": "ocrloop:parent", "Value": parent}],
    }
    try:
        arn = rt.training.create_training_job(request)
        started = True
    except ObjectExists:
        arn, started = None, False
    return {"dataset_version": version, "training_job": job, "arn": arn, "started": started,
            "mix": report.to_json(), "channels": {**{k: len(v) for k, v in channels.items()}, **det_counts}}


def _det_lines(rt: Runtime, versions: list[str], split: str) -> list[tuple[str, str]]:
    """``(image key, annotations JSON)`` of the PaddleOCR det labels ``det/<split>.txt`` (``train`` or
    ``holdout``) of dataset ``versions`` (versions written before the det split have none)."""
    out = []
    for v in versions:
        key = f"{dataset.VERSIONS_PREFIX}{v}/det/{split}.txt"
        if rt.datasets.exists(key):
            out += [tuple(line.split("\t", 1)) for line in rt.datasets.get(key).decode("utf-8").splitlines() if "\t" in line]
    return out


# --------------------------------------------------------------------------- training → registry

def read_artifact_json(rt: Runtime, model_url: str, name: str) -> dict[str, Any]:
    """Read ``name`` (e.g. metrics.json) from a model artifact: a ``model.tar.gz`` or a folder URI."""
    if model_url.endswith(".tar.gz"):
        with tarfile.open(fileobj=io.BytesIO(read_uri(rt, model_url)), mode="r:gz") as tar:
            for member in tar.getmembers():
                if member.name.lstrip("./") == name:
                    return json.load(tar.extractfile(member))
        raise KeyError(f"{name} not in {model_url}")
    return json.loads(read_uri(rt, model_url.rstrip("/") + "/" + name))


def on_training_completed(event: dict[str, Any], rt: Runtime) -> dict[str, Any]:
    """Training job ended → gate vs the champion → register a model package with metrics and
    lineage: Approved (gate passed and auto-approve) / PendingManualApproval / Rejected."""
    detail = event["detail"]
    job = detail["TrainingJobName"]
    status = detail["TrainingJobStatus"]
    if status != "Completed":
        rt.notify(f"ocrloop: training job {job} {status}", str(detail.get("FailureReason", "")))
        return {"training_job": job, "status": status, "registered": False}
    url = detail["ModelArtifacts"]["S3ModelArtifacts"]
    metrics = read_artifact_json(rt, url, "metrics.json")
    card = read_artifact_json(rt, url, "model_card.json")
    try:
        decision = gate.decide(metrics, rt.config)
    except KeyError as exc:
        decision = gate.GateDecision(False, (f"metrics.json lacks {exc}",), 0.0, 0.0)
    if decision.passed:
        status_out = "Approved" if rt.config.auto_approve else "PendingManualApproval"
    else:
        status_out = "Rejected"
    hp = detail.get("HyperParameters", {})
    arn = rt.registry.create_model_package({
        "ModelPackageGroupName": rt.names.model_package_group,
        "ModelPackageDescription": f"{job}: " + "; ".join(decision.reasons),
        "ClientToken": job,
        "InferenceSpecification": {
            "Containers": [{"Image": rt.inference_image, "ModelDataUrl": url}],
            "SupportedContentTypes": ["image/png", "image/jpeg", "application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        "ModelApprovalStatus": status_out,
        "CustomerMetadataProperties": {
            "ocrloop:version": job,
            "ocrloop:parent": hp.get("parent_version", card.get("parent_version", "")),
            "ocrloop:training-job": job,
            "ocrloop:dataset-versions": hp.get("dataset_versions", "[]"),
            "ocrloop:gate": json.dumps(decision.to_json(), ensure_ascii=False)[:1024],
            "ocrloop:metrics": json.dumps({k: metrics[k] for k in ("champion", "candidate") if k in metrics})[:1024],
            "ocrloop:det": json.dumps(_det_summary(metrics))[:1024],
            STAGE: "Registered",
        },
    })
    if status_out == "PendingManualApproval":
        rt.notify("ocrloop: model pending approval", f"{job} passed the gate: {'; '.join(decision.reasons)}")
    return {"training_job": job, "model_package": arn, "approval": status_out, "gate": decision.to_json()}


def _det_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """Registry view of the job's detection result: trained or not, steps, hmean of both models."""
    det = metrics.get("det") or {}
    out: dict[str, Any] = {"trained": bool(det.get("trained")), "inherited": bool(det.get("inherited"))}
    if det.get("trained"):
        out["promoted"] = bool(det.get("promoted", True))
        out["steps"] = (det.get("train") or {}).get("steps")
        for side in ("champion", "candidate"):
            res = (metrics.get(side) or {}).get("det") or {}
            out[f"{side}_hmean"] = res.get("hmean")
            out[f"{side}_read_line_acc"] = res.get("read_line_acc")
    return out


# --------------------------------------------------------------------------- approval → deploy

def deployment_config(rt: Runtime) -> dict[str, Any]:
    """SageMaker DeploymentConfig: blue/green canary, baking period, auto-rollback on alarms."""
    return {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {
                "Type": "CANARY",
                "WaitIntervalInSeconds": int(max(0, rt.config.canary_bake_s)),
                "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": rt.config.canary_percent},
            },
            # Keep blue for the baking period after the full shift too, so a late alarm can roll back.
            "TerminationWaitInSeconds": int(max(0, rt.config.canary_bake_s)),
            "MaximumExecutionTimeoutInSeconds": 1800,
        },
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": f"{rt.names.endpoint_name}-5xx"},
                                                 {"AlarmName": f"{rt.names.endpoint_name}-latency"}]},
    }


def _set_stage(rt: Runtime, arn: str, stage: str, **extra: str) -> None:
    desc = rt.registry.describe_model_package(arn)
    props = dict(desc.get("CustomerMetadataProperties") or {})
    props[STAGE] = stage
    props.update(extra)
    rt.registry.update_model_package({"ModelPackageArn": arn, "CustomerMetadataProperties": props})


def deploy(rt: Runtime, package: dict[str, Any]) -> dict[str, Any]:
    """Blue/green deploy ``package`` unless the endpoint already runs it (idempotent).

    The endpoint config name is the one ``Hosting.deploy`` returns; it is recorded on the package
    (``ocrloop:endpoint-config``) so ``on_endpoint_updated`` can verify what really runs.
    """
    props = package.get("CustomerMetadataProperties") or {}
    try:
        current = rt.hosting.describe_endpoint(rt.names.endpoint_name)
    except KeyError:
        current = None
    recorded = props.get("ocrloop:endpoint-config")
    if (current and recorded and current.get("EndpointConfigName") == recorded
            and current.get("EndpointStatus") == "InService"):
        return {"deployed": False, "reason": f"endpoint already runs {recorded}"}
    _set_stage(rt, package["ModelPackageArn"], "Deploying")
    requested = rt.hosting.deploy(rt.names.endpoint_name, package["ModelPackageArn"], model_data_url(package),
                                  deployment_config(rt))
    _set_stage(rt, package["ModelPackageArn"], "Deploying", **{"ocrloop:endpoint-config": requested})
    return {"deployed": True, "endpoint_config": requested}


def on_model_approved(event: dict[str, Any], rt: Runtime) -> dict[str, Any]:
    """Approved → blue/green update of the endpoint; Rejected of the serving model → redeploy the
    last Approved one."""
    detail = event["detail"]
    arn = detail["ModelPackageArn"]
    status = detail["ModelApprovalStatus"]
    package = rt.registry.describe_model_package(arn)
    stage = (package.get("CustomerMetadataProperties") or {}).get(STAGE)
    if status == "Approved":
        if stage in ("Deploying", "Deployed", "Retired", "DeployFailed"):
            # SageMaker also emits this event for our own metadata updates: nothing to do.
            return {"deployed": False, "reason": f"package is {stage}"}
        return dict(deploy(rt, package), model_package=arn)
    if status == "Rejected" and stage in ("Deployed", "Deploying"):
        _set_stage(rt, arn, "Retired")
        fallback = next((p for p in (rt.registry.describe_model_package(s["ModelPackageArn"]) for s in
                                     rt.registry.list_model_packages(rt.names.model_package_group, "Approved"))
                         if p["ModelPackageArn"] != arn), None)
        if fallback is None:
            rt.notify("ocrloop: serving model rejected, nothing to roll back to", arn)
            return {"deployed": False, "reason": "no other Approved package"}
        return dict(deploy(rt, fallback), model_package=fallback["ModelPackageArn"], rolled_back_from=arn)
    return {"deployed": False, "reason": f"{status} of a package that is not serving"}


# --------------------------------------------------------------------------- endpoint → Deployed

def on_endpoint_updated(event: dict[str, Any], rt: Runtime) -> dict[str, Any]:
    """Endpoint update ended → verify it runs the requested config (a silent rollback is a
    failure) → mark Deployed (previous Deployed → Retired) → refresh the vector index."""
    detail = event["detail"]
    status = str(detail.get("EndpointStatus", "")).upper().replace("_", "")
    current = rt.hosting.describe_endpoint(rt.names.endpoint_name)
    running = current.get("EndpointConfigName")
    packages = [rt.registry.describe_model_package(s["ModelPackageArn"])
                for s in rt.registry.list_model_packages(rt.names.model_package_group)]
    deploying = [p for p in packages if (p.get("CustomerMetadataProperties") or {}).get(STAGE) == "Deploying"]
    result: dict[str, Any] = {"endpoint_config": running, "verified": [], "failed": []}
    for p in deploying:
        props = p["CustomerMetadataProperties"]
        if status == "INSERVICE" and props.get("ocrloop:endpoint-config") == running:
            for q in packages:
                if q is not p and (q.get("CustomerMetadataProperties") or {}).get(STAGE) == "Deployed":
                    _set_stage(rt, q["ModelPackageArn"], "Retired")
            _set_stage(rt, p["ModelPackageArn"], "Deployed")
            result["verified"].append(props["ocrloop:version"])
        else:
            reason = current.get("FailureReason") or f"endpoint runs {running}, not {props.get('ocrloop:endpoint-config')}"
            _set_stage(rt, p["ModelPackageArn"], "DeployFailed", **{"ocrloop:deploy-failure": reason[:256]})
            result["failed"].append({"version": props["ocrloop:version"], "reason": reason})
            rt.notify("ocrloop: deployment failed", f"{props['ocrloop:version']}: {reason}")
    if result["verified"] and rt.refresh_index is not None:
        result["index"] = rt.refresh_index(rt, {"model_version": result["verified"][-1]})
    return result


HANDLERS = {
    cfg.START_LABELING: start_labeling,
    cfg.ON_LABELING_COMPLETED: on_labeling_completed,
    cfg.ON_TRAINING_COMPLETED: on_training_completed,
    cfg.ON_MODEL_APPROVED: on_model_approved,
    cfg.ON_ENDPOINT_UPDATED: on_endpoint_updated,
}
