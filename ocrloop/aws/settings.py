"""Environment variables the CDK app sets on every Lambda and ``ocrloop.aws.runtime.from_env`` reads.

One definition for both sides: ``infra/`` builds the environment with :meth:`AwsSettings.to_env` and
the Lambda reads it back with :meth:`AwsSettings.from_env`, so a renamed variable cannot drift.
Lambda limits all environment variables of a function to 4 KB in total
(https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html); the values here are ARNs,
names and a small JSON config, well under that.

Standard library only (Lambda path).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

from ..config import LoopConfig, Names

ENV_PREFIX = "OCRLOOP_"

#: Variant name SageMaker autoscaling and alarms refer to (same across blue/green updates).
VARIANT_NAME = Names().variant_name

#: ``training_capacity`` values. SageMaker managed warm pools "cannot be used with spot instances"
#: (https://docs.aws.amazon.com/sagemaker/latest/dg/train-warm-pools.html#train-warm-pools-considerations),
#: so a deployment picks one: ``spot`` (managed spot + S3 checkpoints, cheaper) or ``warm``
#: (on-demand + KeepAlivePeriodInSeconds, faster back-to-back jobs).
TRAINING_CAPACITY = ("spot", "warm")


@dataclasses.dataclass(frozen=True)
class AwsSettings:
    """Deployment settings of the AWS runtime.

    Attributes:
        prefix: resource-name prefix (``Names(prefix)``: buckets, model package group, endpoint).
        loop: the loop config (``LoopConfig``), serialised as JSON in ``OCRLOOP_LOOP``.
        region / account: where the stack is deployed (Lambda sets ``AWS_REGION`` itself).
        training_image / inference_image: ECR image URIs (CDK DockerImageAssets).
        training_instance_type: e.g. ``ml.g5.xlarge`` (1× A10G, 24 GB).
        training_volume_gb: ML storage volume per training instance (GB).
        training_max_run_s: ``StoppingCondition.MaxRuntimeInSeconds`` (s).
        training_max_wait_s: ``StoppingCondition.MaxWaitTimeInSeconds`` for spot (s, ≥ max_run).
        training_capacity: ``spot`` or ``warm`` (see ``TRAINING_CAPACITY``).
        warm_pool_s: ``ResourceConfig.KeepAlivePeriodInSeconds`` when capacity is ``warm`` (0–3600 s).
        sagemaker_role_arn: execution role of training jobs and models.
        labeling_role_arn: role Ground Truth assumes for labeling jobs.
        workteam_arn: private workteam doing the labeling.
        ui_template_uri: ``s3://`` URI of the Liquid worker template.
        pre_annotation_lambda_arn / consolidation_lambda_arn: the custom task's Lambdas.
        kms_key_arn: the data key (buckets, training volumes and outputs).
        inference_instance_type / inference_instance_count: endpoint production variant.
        rollback_alarms: CloudWatch alarm names for ``AutoRollbackConfiguration``.
        autoscaling_min / autoscaling_max: instance bounds of the variant.
        autoscaling_invocations_per_instance: target of the target-tracking policy
            (``SageMakerVariantInvocationsPerInstance``, invocations per instance per minute).
        topic_arn: SNS topic for failures and pending approvals.
        event_bus: EventBridge bus name for ``put_events`` (``default``).
        idempotency_table: DynamoDB table of the powertools idempotency layer.
        opensearch_endpoint: domain endpoint host (no scheme), empty when search is off.
        embedding_dim: vector dimension of the drawing embedder (1024 for the default
            ``ocrloop.index.embed.ResNetDrawingEmbedder``).
        index_replicas: replica shards per index version (data nodes − 1, at most 1).
        indexer_function: name of the indexer Lambda that refreshes the vector index.
        subnet_ids / security_group_ids: VPC placement of training jobs (empty: no VPC).
    """

    prefix: str = "ocrloop"
    loop: LoopConfig = dataclasses.field(default_factory=LoopConfig)
    region: str = "us-east-1"
    account: str = ""
    training_image: str = ""
    inference_image: str = ""
    training_instance_type: str = "ml.g5.xlarge"
    training_volume_gb: int = 50
    training_max_run_s: int = 3 * 3600
    training_max_wait_s: int = 6 * 3600
    training_capacity: str = "spot"
    warm_pool_s: int = 0
    sagemaker_role_arn: str = ""
    labeling_role_arn: str = ""
    workteam_arn: str = ""
    ui_template_uri: str = ""
    pre_annotation_lambda_arn: str = ""
    consolidation_lambda_arn: str = ""
    kms_key_arn: str = ""
    inference_instance_type: str = "ml.c5.xlarge"
    inference_instance_count: int = 1
    rollback_alarms: tuple[str, ...] = ()
    autoscaling_min: int = 1
    autoscaling_max: int = 2
    autoscaling_invocations_per_instance: int = 60
    topic_arn: str = ""
    event_bus: str = "default"
    idempotency_table: str = ""
    opensearch_endpoint: str = ""
    embedding_dim: int = 1024
    index_replicas: int = 1
    indexer_function: str = ""
    subnet_ids: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.training_capacity not in TRAINING_CAPACITY:
            raise ValueError(f"training_capacity must be one of {TRAINING_CAPACITY}, got {self.training_capacity!r}")
        if not 0 <= self.warm_pool_s <= 3600:
            raise ValueError("warm_pool_s must be within 0..3600 s (SageMaker's KeepAlivePeriodInSeconds limit)")
        if self.training_capacity == "spot" and self.training_max_wait_s < self.training_max_run_s:
            raise ValueError("training_max_wait_s must be >= training_max_run_s for managed spot training")

    @property
    def names(self) -> Names:
        return Names(self.prefix)

    @staticmethod
    def env_name(field: str) -> str:
        """``training_image`` → ``OCRLOOP_TRAINING_IMAGE``."""
        return ENV_PREFIX + field.upper()

    def to_env(self) -> dict[str, str]:
        """Environment for a Lambda function (all values strings; CDK tokens pass through)."""
        env: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "region":
                continue  # Lambda sets AWS_REGION itself (a reserved variable).
            if isinstance(value, LoopConfig):
                value = json.dumps(value.to_dict(), sort_keys=True)
            elif isinstance(value, tuple):
                value = ",".join(value)
            elif isinstance(value, bool):
                value = "true" if value else "false"
            env[self.env_name(f.name)] = str(value)
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "AwsSettings":
        """Read the settings back; missing variables keep their defaults.

        Raises:
            ValueError: a malformed value (bad JSON in ``OCRLOOP_LOOP``, non-integer counts, an
                unknown loop-config key, an invalid capacity mode).
        """
        environ = os.environ if environ is None else environ
        kwargs: dict[str, Any] = {}
        defaults = cls()
        for f in dataclasses.fields(cls):
            key = cls.env_name(f.name)
            if f.name == "region":
                raw = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
            else:
                raw = environ.get(key)
            if raw is None:
                continue
            default = getattr(defaults, f.name)
            if isinstance(default, LoopConfig):
                kwargs[f.name] = LoopConfig.from_mapping(json.loads(raw)) if raw else LoopConfig()
            elif isinstance(default, tuple):
                kwargs[f.name] = tuple(x for x in raw.split(",") if x)
            elif isinstance(default, bool):
                kwargs[f.name] = raw.lower() in ("1", "true", "yes")
            elif isinstance(default, int):
                kwargs[f.name] = int(raw)
            else:
                kwargs[f.name] = raw
        return cls(**kwargs)
