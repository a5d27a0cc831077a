"""AWS adapters against moto (S3, SageMaker training jobs / model packages / endpoints,
Application Auto Scaling, EventBridge → SQS) and botocore's Stubber where moto lacks the API
(UpdateEndpoint with DeploymentConfig): the Stubber validates each request against the service model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import boto3
import pytest
from botocore.stub import ANY, Stubber

from aws_fixtures import (ACCOUNT, INFERENCE_IMAGE, NAMES, REGION, ROLE_ARN, TRAINING_IMAGE,  # noqa: F401
                          aws_credentials, create_stack_resources, moto_aws, sagemaker_semantics)
from ocrloop import events, handlers
from ocrloop.aws.eventbridge import EventBridgeBus, EventBusError
from ocrloop.aws.s3 import S3BlobStore, split_s3_uri
from ocrloop.aws.sagemaker import (EndpointBusy, SageMakerHosting, SageMakerRegistry, SageMakerTraining)
from ocrloop.config import Names
from ocrloop.ports import ObjectExists

FIXTURES = Path(__file__).parent / "fixtures" / "events"


def test_s3_blob_store_versioned_immutable_writes(moto_aws):
    create_stack_resources(topic=False)
    store = S3BlobStore(boto3.client("s3", region_name=REGION), NAMES.datasets_bucket)
    v1 = store.put("versions/ds-1/version.json", b"{}", if_absent=True)
    assert v1 and v1 != "null"
    with pytest.raises(ObjectExists):
        store.put("versions/ds-1/version.json", b"{\"changed\": true}", if_absent=True)
    assert store.get("versions/ds-1/version.json") == b"{}"
    v2 = store.put("pending/a.json", b"1")
    store.put("pending/a.json", b"2")
    assert store.get("pending/a.json") == b"2" and v2 != "null"
    assert store.list("pending/") == ["pending/a.json"]
    assert store.exists("pending/a.json") and not store.exists("pending/b.json")
    store.delete("pending/a.json")
    assert not store.exists("pending/a.json") and store.list("pending/") == []
    with pytest.raises(KeyError):
        store.get("pending/a.json")
    assert store.uri("x/y") == f"s3://{NAMES.datasets_bucket}/x/y"
    assert split_s3_uri(store.uri("x/y")) == (NAMES.datasets_bucket, "x/y")


def test_eventbridge_bus_batches_and_refuses_aws_sources(moto_aws):
    ev = boto3.client("events", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    queue = sqs.create_queue(QueueName="sink")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    ev.put_rule(Name="ocrloop-custom", EventPattern=json.dumps({"source": ["ocrloop.test"]}))
    ev.put_targets(Rule="ocrloop-custom", Targets=[{"Id": "sink", "Arn": arn}])
    calls = []
    ev.meta.events.register("before-parameter-build.eventbridge.PutEvents",
                            lambda params, **_: calls.append(len(params["Entries"])))
    bus = EventBridgeBus(ev)
    batch = [events.envelope("Drawing Registered", "ocrloop.test", {"n": i}, []) for i in range(23)]
    bus.put_events(batch)
    assert calls == [10, 10, 3]
    received = []
    while True:
        msgs = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        if not msgs:
            break
        received += [json.loads(m["Body"]) for m in msgs]
        for m in msgs:
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
    assert sorted(m["detail"]["n"] for m in received) == list(range(23))
    assert {m["detail-type"] for m in received} == {"Drawing Registered"}
    with pytest.raises(ValueError, match="reserved"):
        bus.put_events([events.labeling_job_state_change("ocrloop-abc", "Completed")])


def test_eventbridge_bus_reports_rejected_entries():
    client = boto3.client("events", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        stub.add_response("put_events", {"FailedEntryCount": 1, "Entries": [
            {"ErrorCode": "InternalFailure", "ErrorMessage": "try again"}]})
        with pytest.raises(EventBusError, match="InternalFailure"):
            EventBridgeBus(client).put_events([events.envelope("X", "ocrloop.test", {}, [])])


def test_shared_patterns_route_documented_events_in_moto_eventbridge(moto_aws):
    """moto's own EventBridge pattern matcher (independent of ocrloop.events.matches) routes each
    documented event to exactly the rules of its transition."""
    ev = boto3.client("events", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    queues = {}
    for name, pattern in Names().patterns().items():
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        ev.put_rule(Name=name, EventPattern=json.dumps(pattern))
        ev.put_targets(Rule=name, Targets=[{"Id": name, "Arn": arn}])
        queues[name] = url
    for path in sorted(FIXTURES.glob("*.json")):
        event = json.loads(path.read_text())
        ev.put_events(Entries=[{"Source": event["source"], "DetailType": event["detail-type"],
                                "Detail": json.dumps(event["detail"]), "Resources": event["resources"]}])
    got = {name: len(sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []))
           for name, url in queues.items()}
    assert got == {name: 1 for name in queues}


# --- training -------------------------------------------------------------------------------

def _core_training_request(name: str) -> dict:
    """The request shape ``handlers.start_training`` builds (fields the adapter must keep)."""
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": TRAINING_IMAGE, "TrainingInputMode": "File",
                                   "MetricDefinitions": handlers.METRIC_REGEXES},
        "RoleArn": ROLE_ARN,
        "HyperParameters": {"max_steps": "60"},
        "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": f"s3://{NAMES.datasets_bucket}/training/{name}/train/",
            "S3DataDistributionType": "FullyReplicated"}}, "InputMode": "File"}],
        "OutputDataConfig": {"S3OutputPath": f"s3://{NAMES.models_bucket}/training-output/"},
        "ResourceConfig": {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50},
        "StoppingCondition": {"MaxRuntimeInSeconds": 4 * 3600, "MaxWaitTimeInSeconds": 8 * 3600},
        "EnableManagedSpotTraining": True,
        "CheckpointConfig": {"S3Uri": f"s3://{NAMES.models_bucket}/checkpoints/{name}/"},
    }


def test_metric_definitions_parse_the_entrypoint_lines():
    lines = ("step 60\nMETRIC train_loss=1.5e-05\nMETRIC validation_line_acc=0.8125\nMETRIC olddomain_char_acc=0.97\n"
             "METRIC champion_det_hmean=0.485\nMETRIC det_hmean=0.98\n")
    found = {}
    for definition in handlers.METRIC_REGEXES:
        m = re.search(definition["Regex"], lines)
        if m:
            found[definition["Name"]] = float(m.group(1))
    assert found == {"train_loss": 1.5e-05, "validation_line_acc": 0.8125, "olddomain_char_acc": 0.97,
                     "champion_det_hmean": 0.485, "det_hmean": 0.98}  # det_hmean not taken from champion_det_hmean
    names = {d["Name"] for d in handlers.METRIC_REGEXES}
    assert names == {"train_loss", "validation_line_acc", "validation_char_acc", "olddomain_line_acc", "olddomain_char_acc",
                     "det_hmean", "det_precision", "det_recall", "champion_det_hmean", "det_read_line_acc",
                     "champion_det_read_line_acc", "det_final_loss"}


def test_training_spot_and_warm_pool_modes_exclude_each_other():
    kms = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234"
    spot = SageMakerTraining(None, checkpoint_s3_prefix=f"s3://{NAMES.models_bucket}/checkpoints/", kms_key_arn=kms,
                             tags=[{"Key": "ocrloop:prefix", "Value": "ocrloop"}])
    req = spot.complete_request(_core_training_request("ocrloop-a-1"))
    assert req["EnableManagedSpotTraining"] is True
    assert req["StoppingCondition"] == {"MaxRuntimeInSeconds": 14400, "MaxWaitTimeInSeconds": 28800}
    assert req["CheckpointConfig"] == {"S3Uri": f"s3://{NAMES.models_bucket}/checkpoints/ocrloop-a-1/",
                                       "LocalPath": "/opt/ml/checkpoints"}
    assert "KeepAlivePeriodInSeconds" not in req["ResourceConfig"]
    assert req["ResourceConfig"]["VolumeKmsKeyId"] == kms and req["OutputDataConfig"]["KmsKeyId"] == kms
    assert req["AlgorithmSpecification"]["MetricDefinitions"] == handlers.METRIC_REGEXES
    warm = SageMakerTraining(None, checkpoint_s3_prefix=f"s3://{NAMES.models_bucket}/checkpoints/", capacity="warm",
                             warm_pool_s=1800)
    req = warm.complete_request(_core_training_request("ocrloop-a-2"))
    assert req["EnableManagedSpotTraining"] is False
    assert req["ResourceConfig"]["KeepAlivePeriodInSeconds"] == 1800
    assert "MaxWaitTimeInSeconds" not in req["StoppingCondition"]
    with pytest.raises(ValueError):
        SageMakerTraining(None, checkpoint_s3_prefix="s3://b/", capacity="both")


def test_training_job_created_once_per_name(moto_aws):
    sm = boto3.client("sagemaker", region_name=REGION)
    sent = []
    sm.meta.events.register("before-parameter-build.sagemaker.CreateTrainingJob", lambda params, **_: sent.append(params))
    training = SageMakerTraining(sm, checkpoint_s3_prefix=f"s3://{NAMES.models_bucket}/checkpoints/")
    arn = training.create_training_job(_core_training_request("ocrloop-abc-123456"))
    assert arn.endswith("training-job/ocrloop-abc-123456")
    with pytest.raises(ObjectExists):
        training.create_training_job(_core_training_request("ocrloop-abc-123456"))
    described = training.describe_training_job("ocrloop-abc-123456")
    assert described["EnableManagedSpotTraining"] is True
    assert described["CheckpointConfig"]["S3Uri"].endswith("/checkpoints/ocrloop-abc-123456/")
    assert len(sent) == 1  # the duplicate was refused before CreateTrainingJob
    assert sent[0]["AlgorithmSpecification"]["MetricDefinitions"] == handlers.METRIC_REGEXES
    assert len(sm.list_training_jobs()["TrainingJobSummaries"]) == 1


# --- registry ------------------------------------------------------------------------------

def _package(registry: SageMakerRegistry, version: str, status: str) -> str:
    return registry.create_model_package({
        "ModelPackageGroupName": NAMES.model_package_group,
        "InferenceSpecification": {"Containers": [{"Image": INFERENCE_IMAGE, "ModelDataUrl":
                                                   f"s3://{NAMES.models_bucket}/training-output/{version}/output/model.tar.gz"}],
                                   "SupportedContentTypes": ["image/png"], "SupportedResponseMIMETypes": ["application/json"]},
        "ModelApprovalStatus": status,
        "CustomerMetadataProperties": {"ocrloop:version": version, "ocrloop:stage": "Registered"},
    })


def test_registry_lists_newest_first_and_merges_stage_metadata(moto_aws):
    create_stack_resources(topic=False)
    registry = SageMakerRegistry(boto3.client("sagemaker", region_name=REGION))
    a = _package(registry, "ocrloop-v0", "Approved")
    b = _package(registry, "ocrloop-v1", "PendingManualApproval")
    c = _package(registry, "ocrloop-v2", "Approved")
    assert [p["ModelPackageArn"] for p in registry.list_model_packages(NAMES.model_package_group)] == [c, b, a]
    assert [p["ModelPackageArn"] for p in registry.list_model_packages(NAMES.model_package_group, "Approved")] == [c, a]
    registry.update_model_package({"ModelPackageArn": c, "CustomerMetadataProperties": {"ocrloop:stage": "Deployed"}})
    described = registry.describe_model_package(c)
    assert described["ModelApprovalStatus"] == "Approved"
    assert described["CustomerMetadataProperties"] == {"ocrloop:version": "ocrloop-v2", "ocrloop:stage": "Deployed"}
    assert "ResponseMetadata" not in described


# --- hosting -------------------------------------------------------------------------------

def _hosting(sm, **kw) -> SageMakerHosting:
    return SageMakerHosting(sm, boto3.client("sagemaker-runtime", region_name=REGION),
                            boto3.client("application-autoscaling", region_name=REGION),
                            role_arn=ROLE_ARN, instance_type="ml.c5.xlarge",
                            rollback_alarms=["ocrloop-ocr-5xx", "ocrloop-ocr-latency"], autoscaling=(1, 3, 60), **kw)


def _deployment_config() -> dict:
    rt = type("RT", (), {"names": NAMES, "config": __import__("ocrloop.config", fromlist=["LoopConfig"]).LoopConfig(
        canary_percent=10, canary_bake_s=600)})()
    return handlers.deployment_config(rt)


def test_first_deploy_creates_the_endpoint_then_autoscaling(moto_aws):
    create_stack_resources(topic=False)
    sm = boto3.client("sagemaker", region_name=REGION)
    registry = SageMakerRegistry(sm)
    pkg = _package(registry, "ocrloop-4a5b6c7d8e-123abc", "Approved")
    hosting = _hosting(sm)
    config = hosting.deploy(NAMES.endpoint_name, pkg, "s3://unused", _deployment_config())
    assert config == "ocrloop-ocr-ocrloop-4a5b6c7d8e-123abc"
    endpoint = hosting.describe_endpoint(NAMES.endpoint_name)
    assert endpoint["EndpointConfigName"] == config and endpoint["EndpointStatus"] == "InService"
    cfg = sm.describe_endpoint_config(EndpointConfigName=config)
    assert cfg["ProductionVariants"][0]["VariantName"] == "AllTraffic"
    assert cfg["ProductionVariants"][0]["ModelName"] == config
    assert "KmsKeyId" not in cfg  # KMS-enabled endpoints lose the deployment guardrails
    model = sm.describe_model(ModelName=config)
    assert model["PrimaryContainer"]["ModelPackageName"] == pkg
    # Redelivery: nothing new is created.
    assert hosting.deploy(NAMES.endpoint_name, pkg, "s3://unused", _deployment_config()) == config
    assert len(sm.list_endpoints()["Endpoints"]) == 1
    scaling = hosting.ensure_autoscaling(NAMES.endpoint_name)
    aas = boto3.client("application-autoscaling", region_name=REGION)
    target = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"][0]
    assert target["ResourceId"] == "endpoint/ocrloop-ocr/variant/AllTraffic"
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 3)
    policy = aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"][0]
    tt = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tt["PredefinedMetricSpecification"]["PredefinedMetricType"] == "SageMakerVariantInvocationsPerInstance"
    assert scaling["ResourceId"] == target["ResourceId"]
    with pytest.raises(KeyError):
        hosting.describe_endpoint("no-such-endpoint")


def test_update_endpoint_sends_blue_green_deployment_config_with_rollback_alarms():
    """Second version: CreateModel + CreateEndpointConfig + UpdateEndpoint(DeploymentConfig) — the
    request validated against SageMaker's service model by the Stubber."""
    sm = boto3.client("sagemaker", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    aas = boto3.client("application-autoscaling", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    pkg = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/ocrloop-rec/2"
    new = "ocrloop-ocr-ocrloop-9f9f9f9f9f-abcdef"
    old = "ocrloop-ocr-ocrloop-4a5b6c7d8e-123abc"
    dc = _deployment_config()
    expected_dc = {
        "BlueGreenUpdatePolicy": dc["BlueGreenUpdatePolicy"],
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "ocrloop-ocr-5xx"}, {"AlarmName": "ocrloop-ocr-latency"}]},
    }
    assert expected_dc["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"] == {
        "Type": "CANARY", "WaitIntervalInSeconds": 600, "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10}}
    with Stubber(sm) as stub, Stubber(aas) as aas_stub:
        stub.add_response("describe_model_package", {
            "ModelPackageName": "ocrloop-rec", "ModelPackageArn": pkg, "CreationTime": "2026-11-21T00:00:00Z",
            "ModelPackageStatus": "Completed", "ModelPackageStatusDetails": {"ValidationStatuses": []},
            "CustomerMetadataProperties": {"ocrloop:version": "ocrloop-9f9f9f9f9f-abcdef"}},
            {"ModelPackageName": pkg})
        stub.add_response("create_model", {"ModelArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/{new}"},
                          {"ModelName": new, "ExecutionRoleArn": ROLE_ARN, "PrimaryContainer": {"ModelPackageName": pkg}})
        stub.add_response("create_endpoint_config", {"EndpointConfigArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint-config/{new}"},
                          {"EndpointConfigName": new, "ProductionVariants": [{
                              "VariantName": "AllTraffic", "ModelName": new, "InstanceType": "ml.c5.xlarge",
                              "InitialInstanceCount": 1}]})
        stub.add_response("describe_endpoint", {
            "EndpointName": "ocrloop-ocr", "EndpointArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/ocrloop-ocr",
            "EndpointConfigName": old, "EndpointStatus": "InService", "CreationTime": "2026-11-20T00:00:00Z",
            "LastModifiedTime": "2026-11-20T00:00:00Z"}, {"EndpointName": "ocrloop-ocr"})
        stub.add_response("describe_endpoint_config", {
            "EndpointConfigName": old, "EndpointConfigArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint-config/{old}",
            "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": old, "InstanceType": "ml.c5.xlarge",
                                    "InitialInstanceCount": 1}], "CreationTime": "2026-11-20T00:00:00Z"},
            {"EndpointConfigName": old})
        stub.add_response("update_endpoint", {"EndpointArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/ocrloop-ocr"},
                          {"EndpointName": "ocrloop-ocr", "EndpointConfigName": new, "RetainAllVariantProperties": False,
                           "DeploymentConfig": expected_dc})
        hosting = SageMakerHosting(sm, None, aas, role_arn=ROLE_ARN, instance_type="ml.c5.xlarge",
                                   rollback_alarms=["ocrloop-ocr-5xx", "ocrloop-ocr-latency"])
        assert hosting.deploy("ocrloop-ocr", pkg, "s3://unused", dc) == new
        stub.assert_no_pending_responses()
        aas_stub.assert_no_pending_responses()


def test_update_refused_while_a_rollout_runs_and_instance_type_change_releases_autoscaling():
    sm = boto3.client("sagemaker", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    aas = boto3.client("application-autoscaling", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    pkg = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/ocrloop-rec/3"
    new, old = "ocrloop-ocr-3", "ocrloop-ocr-ocrloop-old"
    base = {"EndpointName": "ocrloop-ocr", "EndpointArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/ocrloop-ocr",
            "EndpointConfigName": old, "CreationTime": "2026-11-20T00:00:00Z", "LastModifiedTime": "2026-11-20T00:00:00Z"}
    pkg_desc = {"ModelPackageName": "ocrloop-rec", "ModelPackageArn": pkg, "CreationTime": "2026-11-21T00:00:00Z",
                "ModelPackageStatus": "Completed", "ModelPackageStatusDetails": {"ValidationStatuses": []}}
    hosting = SageMakerHosting(sm, None, aas, role_arn=ROLE_ARN, instance_type="ml.g5.xlarge")
    with Stubber(sm) as stub, Stubber(aas) as aas_stub:
        def artefacts():
            stub.add_response("describe_model_package", pkg_desc)
            stub.add_response("create_model", {"ModelArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/{new}"})
            stub.add_client_error("create_endpoint_config", "ValidationException",
                                  "Cannot create already existing endpoint configuration")

        artefacts()
        stub.add_response("describe_endpoint", dict(base, EndpointStatus="Updating"))
        with pytest.raises(EndpointBusy):
            hosting.deploy("ocrloop-ocr", pkg, "s3://unused", _deployment_config())
        artefacts()
        stub.add_response("describe_endpoint", dict(base, EndpointStatus="InService"))
        stub.add_response("describe_endpoint_config", {
            "EndpointConfigName": old, "EndpointConfigArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint-config/{old}",
            "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": old, "InstanceType": "ml.c5.xlarge"}],
            "CreationTime": "2026-11-20T00:00:00Z"})
        aas_stub.add_response("describe_scalable_targets", {"ScalableTargets": [{
            "ServiceNamespace": "sagemaker", "ResourceId": "endpoint/ocrloop-ocr/variant/AllTraffic",
            "ScalableDimension": "sagemaker:variant:DesiredInstanceCount", "MinCapacity": 1, "MaxCapacity": 2,
            "RoleARN": "arn:aws:iam::123456789012:role/x", "CreationTime": "2026-11-20T00:00:00Z"}]})
        aas_stub.add_response("deregister_scalable_target", {}, {
            "ServiceNamespace": "sagemaker", "ResourceId": "endpoint/ocrloop-ocr/variant/AllTraffic",
            "ScalableDimension": "sagemaker:variant:DesiredInstanceCount"})
        stub.add_response("update_endpoint", {"EndpointArn": base["EndpointArn"]},
                          {"EndpointName": "ocrloop-ocr", "EndpointConfigName": new,
                           "RetainAllVariantProperties": False, "DeploymentConfig": ANY})
        assert hosting.deploy("ocrloop-ocr", pkg, "s3://unused", _deployment_config()) == new
        stub.assert_no_pending_responses()
        aas_stub.assert_no_pending_responses()


def test_deployment_config_merges_configured_alarms_once():
    hosting = SageMakerHosting(None, None, None, role_arn=ROLE_ARN, rollback_alarms=["ocrloop-ocr-5xx", "extra"])
    merged = hosting.deployment_config(_deployment_config())
    assert [a["AlarmName"] for a in merged["AutoRollbackConfiguration"]["Alarms"]] == [
        "ocrloop-ocr-5xx", "ocrloop-ocr-latency", "extra"]
    assert merged["BlueGreenUpdatePolicy"] == _deployment_config()["BlueGreenUpdatePolicy"]
    with pytest.raises(ValueError):
        SageMakerHosting(None, None, None, role_arn=ROLE_ARN,
                         rollback_alarms=[f"a{i}" for i in range(11)]).deployment_config({})
