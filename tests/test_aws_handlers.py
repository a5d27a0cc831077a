"""The Lambda entry points (``lambdas/*``) run the core handlers (``ocrloop.handlers``) on the AWS
adapters against moto: S3 buckets, DynamoDB idempotency table, SNS topic, SageMaker training jobs,
model packages and endpoints. Ground Truth (absent from moto) goes through botocore's Stubber, which
checks each request against the service model and fails on any call it was not told to expect.

Each handler receives the same event three times (EventBridge delivers at least once; SageMaker
may emit twice): one labeling job, one training job, one model package, one deployment, one
stage change — the second and third deliveries are answered from the idempotency record.
"""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

import aws_fixtures as fx
from aws_fixtures import (NAMES, REGION, LambdaContext, aws_credentials, moto_aws,  # noqa: F401
                          sagemaker_semantics)
from lambdas import _common, on_endpoint_updated, on_labeling_completed, on_model_approved, on_training_completed, start_labeling
from ocrloop import dataset, events, handlers
from ocrloop.aws.groundtruth import GroundTruthLabeling
from ocrloop.aws.runtime import from_env
from ocrloop.manifest import LABEL_ATTRIBUTE, output_manifest_line

FIXTURES = Path(__file__).parent / "fixtures" / "events"
DELIVERIES = 3


@pytest.fixture
def loop_env(moto_aws, monkeypatch):
    """Stack resources in moto, the functions' environment, a fresh container state."""
    fx.create_stack_resources()
    for key, value in fx.settings().to_env().items():
        monkeypatch.setenv(key, value)
    _common.reset()
    yield
    _common.reset()


@pytest.fixture
def gt_stub(loop_env):
    """The runtime with its Ground Truth client behind a Stubber (moto has no labeling jobs)."""
    rt = from_env()
    client = boto3.client("sagemaker", region_name=REGION)
    rt.labeling = GroundTruthLabeling(client, fx.LABELING_ROLE_ARN, tags=[{"Key": "ocrloop:prefix", "Value": "ocrloop"}])
    _common._RUNTIME = rt
    with Stubber(client) as stub:
        yield rt, stub
        stub.assert_no_pending_responses()


def deliver(handler, event) -> list[dict]:
    return [handler(json.loads(json.dumps(event)), LambdaContext()) for _ in range(DELIVERIES)]


def idempotency_items() -> list[dict]:
    return boto3.client("dynamodb", region_name=REGION).scan(TableName=fx.TABLE)["Items"]


def labeling_describe(job: str, output_uri: str, status: str = "Completed") -> dict:
    request = handlers.labeling_job_request(_common.runtime(), job, f"s3://{NAMES.labeling_bucket}/jobs/{job}/input.manifest")
    return {"LabelingJobStatus": status, "LabelCounters": {"TotalLabeled": 2}, "CreationTime": "2026-11-21T00:00:00Z",
            "LastModifiedTime": "2026-11-21T01:00:00Z", "JobReferenceCode": "ref", "LabelingJobName": job,
            "LabelingJobArn": events.arn("labeling-job", job, fx.ACCOUNT, REGION), "LabelAttributeName": LABEL_ATTRIBUTE,
            "InputConfig": request["InputConfig"], "OutputConfig": request["OutputConfig"],
            "RoleArn": fx.LABELING_ROLE_ARN, "HumanTaskConfig": request["HumanTaskConfig"],
            "LabelingJobOutput": {"OutputDatasetS3Uri": output_uri}}


def register_champion(sm) -> str:
    """The serving v0 model as the bootstrap registers it."""
    s3 = boto3.client("s3", region_name=REGION)
    s3.put_object(Bucket=NAMES.models_bucket, Key="base/v0/model.tar.gz",
                  Body=fx.model_tarball(fx.passing_metrics(), {"version": "ocrloop-v0"}))
    return sm.create_model_package(
        ModelPackageGroupName=NAMES.model_package_group, ModelApprovalStatus="Approved",
        InferenceSpecification={"Containers": [{"Image": fx.INFERENCE_IMAGE,
                                                "ModelDataUrl": f"s3://{NAMES.models_bucket}/base/v0/model.tar.gz"}],
                                "SupportedContentTypes": ["image/png"], "SupportedResponseMIMETypes": ["application/json"]},
        CustomerMetadataProperties={"ocrloop:version": "ocrloop-v0", "ocrloop:stage": "Deployed"})["ModelPackageArn"]


# --------------------------------------------------------------------------------------------
def test_start_labeling_three_deliveries_start_one_labeling_job(gt_stub):
    rt, stub = gt_stub
    event = json.loads((FIXTURES / "s3_object_created.json").read_text())
    key = event["detail"]["object"]["key"]
    boto3.client("s3", region_name=REGION).put_object(Bucket=NAMES.raw_bucket, Key=key, Body=fx.drawing_png())
    job = f"ocrloop-{handlers._short_hash(key)}"
    stub.add_client_error("describe_labeling_job", "ResourceNotFound", "not found", expected_params={"LabelingJobName": job})
    stub.add_response("create_labeling_job", {"LabelingJobArn": events.arn("labeling-job", job, fx.ACCOUNT, REGION)})

    results = deliver(start_labeling.handler, event)

    assert results[0]["labeling_job"] == job and results[0]["drawings"] == 1
    assert results[1] == results[0] == results[2]
    manifest = rt.labeling_store.get(f"jobs/{job}/input.manifest").decode().splitlines()
    line = json.loads(manifest[0])
    assert line["source-ref"] == f"s3://{NAMES.raw_bucket}/{key}"
    assert "annotations" in line["pre-annotations"]  # no endpoint yet: labeled from scratch, said so
    items = idempotency_items()
    assert len(items) == 1 and items[0]["status"]["S"] == "COMPLETED"


def test_on_labeling_completed_three_deliveries_start_one_training_job(gt_stub):
    rt, stub = gt_stub
    sm = boto3.client("sagemaker", region_name=REGION)
    s3 = boto3.client("s3", region_name=REGION)
    register_champion(sm)
    # Base pools: general text (replay) and the old-domain regression set.
    crop = fx.drawing_png(120, 32)
    base = []
    for i in range(4):
        s3.put_object(Bucket=NAMES.datasets_bucket, Key=f"base/crops/b{i}.png", Body=crop)
        base.append({"id": f"base-{i}", "image": f"base/crops/b{i}.png", "text": f"ABC{i}"})
    s3.put_object(Bucket=NAMES.datasets_bucket, Key=handlers.BASE_TRAIN,
                  Body="".join(json.dumps(b) + "\n" for b in base[:3]).encode())
    s3.put_object(Bucket=NAMES.datasets_bucket, Key=handlers.BASE_OLDDOMAIN, Body=(json.dumps(base[3]) + "\n").encode())
    # Ground Truth's output manifest for three annotated drawings (at least one lands in training).
    event = json.loads((FIXTURES / "labeling_job_completed.json").read_text())
    job = events.name_from_arn(event["resources"][0])
    lines = []
    for i in range(3):
        key = f"drawings/part-{i}.png"
        s3.put_object(Bucket=NAMES.raw_bucket, Key=key, Body=fx.drawing_png())
        lines.append(output_manifest_line(f"s3://{NAMES.raw_bucket}/{key}", 640, 320, [
            ([(40, 40), (200, 40), (200, 70), (40, 70)], "⌀12 H7"),
            ([(40, 120), (260, 120), (260, 150), (40, 150)], "R5 ±0.1")], job, "2026-11-21T00:00:00"))
    assert any(not dataset.holdout_drawing(f"part-{i}", rt.config.holdout_fraction, rt.config.seed) for i in range(3))
    out_key = f"output/{job}/manifests/output/output.manifest"
    s3.put_object(Bucket=NAMES.labeling_bucket, Key=out_key, Body="\n".join(lines).encode())
    stub.add_response("describe_labeling_job", labeling_describe(job, f"s3://{NAMES.labeling_bucket}/{out_key}"),
                      {"LabelingJobName": job})
    creates = fx.call_counter(rt.training._sm, "CreateTrainingJob")

    results = deliver(on_labeling_completed.handler, event)

    assert results[0]["started"] is True and results[1] == results[0] == results[2]
    assert creates["CreateTrainingJob"] == 1
    jobs = sm.list_training_jobs()["TrainingJobSummaries"]
    assert [j["TrainingJobName"] for j in jobs] == [results[0]["training_job"]]
    described = sm.describe_training_job(TrainingJobName=results[0]["training_job"])
    assert described["EnableManagedSpotTraining"] is True
    assert described["AlgorithmSpecification"]["TrainingImage"] == fx.TRAINING_IMAGE
    assert described["RoleArn"] == fx.ROLE_ARN
    channels = {c["ChannelName"] for c in described["InputDataConfig"]}
    assert channels == {"train", "validation", "olddomain", "model", "det_train", "det_validation"}
    assert int(described["HyperParameters"]["det_steps"]) > 0  # det fine-tuned on the annotators' boxes
    assert results[0]["mix"]["n_new"] > 0 and results[0]["mix"]["n_replay_base"] > 0  # 7 : 3 with replay


def test_on_training_completed_three_deliveries_register_one_package(loop_env):
    sm = boto3.client("sagemaker", region_name=REGION)
    s3 = boto3.client("s3", region_name=REGION)
    register_champion(sm)
    name = "ocrloop-0a1b2c3d4e-9f8e7d"
    sm.create_training_job(
        TrainingJobName=name, AlgorithmSpecification={"TrainingImage": fx.TRAINING_IMAGE, "TrainingInputMode": "File"},
        RoleArn=fx.ROLE_ARN, OutputDataConfig={"S3OutputPath": f"s3://{NAMES.models_bucket}/training-output/"},
        ResourceConfig={"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50},
        StoppingCondition={"MaxRuntimeInSeconds": 3600},
        HyperParameters={"parent_version": "ocrloop-v0", "dataset_versions": "[\"ds-0a1b2c3d4e\"]"})
    describe = sm.describe_training_job(TrainingJobName=name)
    describe.pop("ResponseMetadata")
    artifact = describe["ModelArtifacts"]["S3ModelArtifacts"]
    bucket, key = artifact[5:].split("/", 1)
    s3.put_object(Bucket=bucket, Key=key, Body=fx.model_tarball(fx.passing_metrics(), {"parent_version": "ocrloop-v0"}))
    event = json.loads(json.dumps(events.training_job_state_change(describe), default=str))
    registry = _common.runtime().registry
    creates = fx.call_counter(registry._sm, "CreateModelPackage")

    results = deliver(on_training_completed.handler, event)

    assert creates["CreateModelPackage"] == 1 and results[1] == results[0] == results[2]
    assert results[0]["approval"] == "Approved"
    packages = sm.list_model_packages(ModelPackageGroupName=NAMES.model_package_group)["ModelPackageSummaryList"]
    assert len(packages) == 2  # v0 + the new one
    new = sm.describe_model_package(ModelPackageName=results[0]["model_package"])
    assert new["CustomerMetadataProperties"]["ocrloop:version"] == name
    assert new["CustomerMetadataProperties"]["ocrloop:stage"] == "Registered"
    assert new["InferenceSpecification"]["Containers"][0]["Image"] == fx.INFERENCE_IMAGE
    assert new["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == artifact


def test_on_model_approved_three_deliveries_deploy_once(loop_env):
    sm = boto3.client("sagemaker", region_name=REGION)
    pkg = sm.create_model_package(
        ModelPackageGroupName=NAMES.model_package_group, ModelApprovalStatus="Approved",
        InferenceSpecification={"Containers": [{"Image": fx.INFERENCE_IMAGE, "ModelDataUrl":
                                                f"s3://{NAMES.models_bucket}/training-output/x/model.tar.gz"}],
                                "SupportedContentTypes": ["image/png"], "SupportedResponseMIMETypes": ["application/json"]},
        CustomerMetadataProperties={"ocrloop:version": "ocrloop-0a1b2c3d4e-9f8e7d", "ocrloop:stage": "Registered"},
    )["ModelPackageArn"]
    describe = sm.describe_model_package(ModelPackageName=pkg)
    describe.pop("ResponseMetadata")
    event = json.loads(json.dumps(events.model_package_state_change(describe), default=str))
    hosting = _common.runtime().hosting
    calls = fx.call_counter(hosting._sm, "CreateModel", "CreateEndpointConfig", "CreateEndpoint", "UpdateEndpoint")

    results = deliver(on_model_approved.handler, event)

    assert results[0]["deployed"] is True and results[1] == results[0] == results[2]
    assert calls == {"CreateModel": 1, "CreateEndpointConfig": 1, "CreateEndpoint": 1, "UpdateEndpoint": 0}
    endpoint = sm.describe_endpoint(EndpointName=NAMES.endpoint_name)
    assert endpoint["EndpointConfigName"] == results[0]["endpoint_config"] == "ocrloop-ocr-ocrloop-0a1b2c3d4e-9f8e7d"
    props = sm.describe_model_package(ModelPackageName=pkg)["CustomerMetadataProperties"]
    assert props["ocrloop:stage"] == "Deploying" and props["ocrloop:endpoint-config"] == endpoint["EndpointConfigName"]
    # SageMaker also emits a state change for the stage update itself (a new event id): no redeploy.
    again = json.loads(json.dumps(events.model_package_state_change(
        dict(describe, CustomerMetadataProperties=props)), default=str))
    assert on_model_approved.handler(again, LambdaContext())["deployed"] is False
    assert calls["CreateEndpoint"] == 1 and calls["UpdateEndpoint"] == 0


def test_on_endpoint_updated_three_deliveries_mark_deployed_once(loop_env):
    sm = boto3.client("sagemaker", region_name=REGION)
    old = register_champion(sm)
    pkg = sm.create_model_package(
        ModelPackageGroupName=NAMES.model_package_group, ModelApprovalStatus="Approved",
        InferenceSpecification={"Containers": [{"Image": fx.INFERENCE_IMAGE, "ModelDataUrl":
                                                f"s3://{NAMES.models_bucket}/training-output/y/model.tar.gz"}],
                                "SupportedContentTypes": ["image/png"], "SupportedResponseMIMETypes": ["application/json"]},
        CustomerMetadataProperties={"ocrloop:version": "ocrloop-1b2c3d4e5f-8e7d6c", "ocrloop:stage": "Registered"},
    )["ModelPackageArn"]
    rt = _common.runtime()
    config = rt.hosting.deploy(NAMES.endpoint_name, pkg, "s3://unused", handlers.deployment_config(rt))
    rt.registry.update_model_package({"ModelPackageArn": pkg, "CustomerMetadataProperties": {
        "ocrloop:stage": "Deploying", "ocrloop:endpoint-config": config}})
    describe = sm.describe_endpoint(EndpointName=NAMES.endpoint_name)
    describe.pop("ResponseMetadata")
    event = json.loads(json.dumps(events.endpoint_state_change(describe), default=str))
    updates = fx.call_counter(rt.registry._sm, "UpdateModelPackage")
    published = fx.call_counter(boto3.client("sns", region_name=REGION), "Publish")

    results = deliver(on_endpoint_updated.handler, event)

    assert results[0]["verified"] == ["ocrloop-1b2c3d4e5f-8e7d6c"] and results[1] == results[0] == results[2]
    assert updates["UpdateModelPackage"] == 2  # new → Deployed, previous Deployed (v0) → Retired
    stage = lambda arn: sm.describe_model_package(ModelPackageName=arn)["CustomerMetadataProperties"]["ocrloop:stage"]  # noqa: E731
    assert stage(pkg) == "Deployed" and stage(old) == "Retired"
    assert published["Publish"] == 0


def test_malformed_event_fails_before_the_core_and_leaves_no_record(loop_env):
    from pydantic import ValidationError

    event = json.loads((FIXTURES / "labeling_job_completed.json").read_text())
    event["resources"] = []
    with pytest.raises(ValidationError):
        on_labeling_completed.handler(event, LambdaContext())
    assert idempotency_items() == []  # a corrected redelivery runs normally
