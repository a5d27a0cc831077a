"""Build the ``Runtime`` (ports + settings) for a Lambda from the environment the CDK app sets.

Called once per Lambda container (cold start) by ``lambdas/_common.py``; the clients are reused
across invocations. Retries use botocore's ``standard`` mode (exponential backoff with jitter, also
on throttling) with 5 attempts.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Mapping

from ..runtime import Runtime
from .eventbridge import EventBridgeBus
from .groundtruth import GroundTruthLabeling
from .opensearch import OpenSearchIndex, connect
from .s3 import S3BlobStore
from .sagemaker import SageMakerHosting, SageMakerRegistry, SageMakerTraining
from .settings import AwsSettings

log = logging.getLogger(__name__)


def sns_notifier(client: Any, topic_arn: str):
    """``notify(subject, message)`` publishing to SNS (subject truncated to SNS's 100 characters).

    With no topic configured the notification is logged instead."""

    def notify(subject: str, message: str) -> None:
        if not topic_arn:
            log.warning("notification (no topic): %s: %s", subject, message)
            return
        client.publish(TopicArn=topic_arn, Subject=subject[:100], Message=message)

    return notify


def lambda_index_refresher(client: Any, function_name: str):
    """``refresh_index(rt, info)`` that hands the work to the indexer Lambda (an asynchronous
    ``Invoke``): embeddings need numpy/onnxruntime, which only the indexer's container image has."""

    def refresh_index(rt: Runtime, info: dict[str, Any]) -> dict[str, Any]:
        payload = {"action": "refresh", "info": info}
        client.invoke(FunctionName=function_name, InvocationType="Event",
                      Payload=json.dumps(payload, default=str).encode())
        return {"indexer": function_name, "queued": True}

    return refresh_index


def from_env(environ: Mapping[str, str] | None = None, session: Any = None) -> Runtime:
    """A ``Runtime`` wired to S3, EventBridge, Ground Truth, SageMaker, SNS (and OpenSearch when
    ``OCRLOOP_OPENSEARCH_ENDPOINT`` is set).

    Args:
        environ: variables to read (default ``os.environ``).
        session: a ``boto3.session.Session`` (default: a new one in ``AWS_REGION``).

    Raises:
        ValueError: malformed settings (see ``AwsSettings.from_env``).
    """
    import os

    import boto3
    from botocore.config import Config

    environ = os.environ if environ is None else environ
    settings = AwsSettings.from_env(environ)
    session = session or boto3.session.Session(region_name=settings.region)
    cfg = Config(retries={"mode": "standard", "max_attempts": 5})

    def client(name: str) -> Any:
        return session.client(name, config=cfg)

    names = settings.names
    s3 = client("s3")
    sm = client("sagemaker")
    tags = [{"Key": "ocrloop:prefix", "Value": settings.prefix}]

    def store(bucket: str) -> S3BlobStore:
        return S3BlobStore(s3, bucket, settings.kms_key_arn)

    index = None
    if settings.opensearch_endpoint:
        index = OpenSearchIndex(connect(settings.opensearch_endpoint, settings.region,
                                        session.get_credentials()),
                                names.index_alias, settings.embedding_dim, replicas=settings.index_replicas)
    indexer = settings.indexer_function
    return Runtime(
        names=names,
        config=settings.loop,
        raw=store(names.raw_bucket),
        labeling_store=store(names.labeling_bucket),
        datasets=store(names.datasets_bucket),
        models=store(names.models_bucket),
        bus=EventBridgeBus(client("events"), settings.event_bus),
        labeling=GroundTruthLabeling(sm, settings.labeling_role_arn, tags),
        training=SageMakerTraining(
            sm,
            checkpoint_s3_prefix=f"s3://{names.models_bucket}/checkpoints/",
            capacity=settings.training_capacity,
            max_run_s=settings.training_max_run_s,
            max_wait_s=settings.training_max_wait_s,
            warm_pool_s=settings.warm_pool_s,
            volume_gb=settings.training_volume_gb,
            kms_key_arn=settings.kms_key_arn,
            subnet_ids=settings.subnet_ids,
            security_group_ids=settings.security_group_ids,
            tags=tags,
        ),
        registry=SageMakerRegistry(sm),
        hosting=SageMakerHosting(
            sm, client("sagemaker-runtime"), client("application-autoscaling"),
            role_arn=settings.sagemaker_role_arn,
            instance_type=settings.inference_instance_type,
            instance_count=settings.inference_instance_count,
            variant_name=names.variant_name,
            rollback_alarms=settings.rollback_alarms,
            autoscaling=(settings.autoscaling_min, settings.autoscaling_max,
                         settings.autoscaling_invocations_per_instance),
            tags=tags,
        ),
        index=index,
        training_image=settings.training_image,
        inference_image=settings.inference_image,
        training_instance_type=settings.training_instance_type,
        role_arn=settings.sagemaker_role_arn,
        workteam_arn=settings.workteam_arn,
        labeling_ui_template_uri=settings.ui_template_uri,
        pre_annotation_lambda_arn=settings.pre_annotation_lambda_arn,
        consolidation_lambda_arn=settings.consolidation_lambda_arn,
        notify=sns_notifier(client("sns"), settings.topic_arn),
        refresh_index=lambda_index_refresher(client("lambda"), indexer) if indexer else None,
    )
