"""Shared set-up of the AWS adapter and handler tests (``tests/test_aws_*.py``): moto accounts,
the resources the CDK stack would have created, the environment the CDK app sets on the functions.

Import the fixtures into a test module (``from aws_fixtures import moto_aws, ...``).

moto 5.2 differs from SageMaker in one place these tests rely on: ``UpdateModelPackage`` without
``ModelApprovalStatus`` resets the status to None and *replaces* ``CustomerMetadataProperties``,
whereas SageMaker keeps the status and merges the properties (UpdateModelPackage API reference:
"CustomerMetadataProperties — The metadata properties associated with the model package versions";
removal is the separate ``CustomerMetadataPropertiesToRemove``). ``sagemaker_semantics`` patches
moto's backend to behave like the service; everything else is moto as shipped.
"""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

import pytest

from ocrloop.aws.settings import AwsSettings
from ocrloop.config import LoopConfig, Names

ACCOUNT = "123456789012"
REGION = "us-east-1"
NAMES = Names()
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/ocrloop-sagemaker"
LABELING_ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/ocrloop-labeling"
WORKTEAM_ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:workteam/private-crowd/ocrloop"
TRAINING_IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/cdk-hnb659fds-container-assets-{ACCOUNT}-{REGION}:train"
INFERENCE_IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/cdk-hnb659fds-container-assets-{ACCOUNT}-{REGION}:serve"
TABLE = "ocrloop-idempotency"


class LambdaContext:
    """The attributes of Lambda's context object that powertools reads."""

    function_name = "ocrloop-test"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:ocrloop-test"
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e812345678"
    log_group_name = "/aws/lambda/ocrloop-test"
    log_stream_name = "2026/11/21/[$LATEST]abc"

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


@pytest.fixture
def aws_credentials(monkeypatch):
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def sagemaker_semantics(monkeypatch):
    from moto.sagemaker.models import SageMakerModelBackend

    original = SageMakerModelBackend.update_model_package

    def update_model_package(self, model_package_arn, model_approval_status, approval_description,
                             customer_metadata_properties, customer_metadata_properties_to_remove,
                             additional_inference_specifications_to_add):
        name = self.model_package_name_mapping.get(model_package_arn, model_package_arn)
        package = self.model_packages.get(name)
        if package is not None:
            model_approval_status = model_approval_status or package.model_approval_status
            approval_description = approval_description or package.approval_description
            customer_metadata_properties = dict(package.customer_metadata_properties or {},
                                                **(customer_metadata_properties or {}))
        return original(self, model_package_arn, model_approval_status, approval_description,
                        customer_metadata_properties, customer_metadata_properties_to_remove,
                        additional_inference_specifications_to_add)

    monkeypatch.setattr(SageMakerModelBackend, "update_model_package", update_model_package)


@pytest.fixture
def moto_aws(aws_credentials, sagemaker_semantics):
    from moto import mock_aws

    with mock_aws():
        yield


def settings(**overrides: Any) -> AwsSettings:
    """What the CDK app sets on the loop functions, with test values."""
    base = dict(
        prefix=NAMES.prefix, loop=LoopConfig(labeling_batch_size=1, canary_bake_s=600), account=ACCOUNT,
        region=REGION, training_image=TRAINING_IMAGE, inference_image=INFERENCE_IMAGE, sagemaker_role_arn=ROLE_ARN,
        labeling_role_arn=LABELING_ROLE_ARN, workteam_arn=WORKTEAM_ARN,
        ui_template_uri="s3://cdk-hnb659fds-assets-123456789012-us-east-1/template.liquid.html",
        pre_annotation_lambda_arn=f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:ocrloop-gt-pre-annotation",
        consolidation_lambda_arn=f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:ocrloop-gt-consolidation",
        inference_instance_type="ml.c5.xlarge", rollback_alarms=("ocrloop-ocr-5xx", "ocrloop-ocr-latency"),
        topic_arn=f"arn:aws:sns:{REGION}:{ACCOUNT}:ocrloop-notifications", idempotency_table=TABLE,
    )
    base.update(overrides)
    return AwsSettings(**base)


def create_stack_resources(topic: bool = True) -> None:
    """Buckets, idempotency table, topic and model package group as the stack creates them."""
    import boto3

    s3 = boto3.client("s3", region_name=REGION)
    for bucket in (NAMES.raw_bucket, NAMES.labeling_bucket, NAMES.datasets_bucket, NAMES.models_bucket):
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    ddb = boto3.client("dynamodb", region_name=REGION)
    ddb.create_table(TableName=TABLE, KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                     BillingMode="PAY_PER_REQUEST")
    ddb.update_time_to_live(TableName=TABLE, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiration"})
    if topic:
        boto3.client("sns", region_name=REGION).create_topic(Name="ocrloop-notifications")
    boto3.client("sagemaker", region_name=REGION).create_model_package_group(
        ModelPackageGroupName=NAMES.model_package_group)


def drawing_png(width: int = 640, height: int = 320) -> bytes:
    """A drawing-like PNG: white sheet, a border and two dark text-like bars."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle([5, 5, width - 6, height - 6], outline="black", width=2)
    draw.text((40, 40), "D12 H7", fill="black")
    draw.text((40, 120), "R5 +-0.1", fill="black")
    return buf_png(img)


def buf_png(img: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def model_tarball(metrics: dict[str, Any], card: dict[str, Any]) -> bytes:
    """A ``model.tar.gz`` with ``metrics.json`` and ``model_card.json`` (what the training image
    writes next to the inference model)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, payload in (("metrics.json", metrics), ("model_card.json", card)):
            data = json.dumps(payload).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def passing_metrics() -> dict[str, Any]:
    return {
        "champion": {"validation": {"line_acc": 0.50, "char_acc": 0.80}, "olddomain": {"line_acc": 0.90, "char_acc": 0.97}},
        "candidate": {"validation": {"line_acc": 0.75, "char_acc": 0.92}, "olddomain": {"line_acc": 0.895, "char_acc": 0.97}},
    }


def call_counter(client: Any, *operations: str) -> dict[str, int]:
    """Count calls of ``operations`` made through ``client`` (botocore ``before-call`` events)."""
    counts = {op: 0 for op in operations}
    service = client.meta.service_model.service_name if hasattr(client.meta, "service_model") else "sagemaker"
    event_service = client.meta.service_model.service_id.hyphenize()

    for op in operations:
        def bump(op=op, **_: Any) -> None:
            counts[op] += 1

        client.meta.events.register(f"before-call.{event_service}.{op}", bump, unique_id=f"count-{service}-{op}")
    return counts
