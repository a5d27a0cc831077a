"""Data: the KMS key and the four buckets (raw drawings, labeling, dataset versions, models) plus
the access-log bucket.

Every data bucket: SSE-KMS with the stack's customer managed key (bucket keys on), versioned,
TLS-only (``aws:SecureTransport`` deny, TLS ≥ 1.2), all public access blocked, object ownership
enforced (no ACLs), server access logs to the log bucket, lifecycle rules per bucket. The raw bucket
sends every object event to EventBridge (``NotificationConfiguration.EventBridgeConfiguration``,
set natively instead of through CDK's notifications custom resource) — the ``start_labeling`` rule
filters ``drawings/``.

Ground Truth's worker UI loads images from the browser, which needs CORS (GET) on the bucket holding
them (https://docs.aws.amazon.com/sagemaker/latest/dg/sms-cors-update.html).
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from .iam import ack
from .params import Params


class Data(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, params: Params) -> None:
        super().__init__(scope, construct_id)
        names = params.names
        removal = cdk.RemovalPolicy.RETAIN if params.retain_data else cdk.RemovalPolicy.DESTROY
        stack = cdk.Stack.of(self)

        self.key = kms.Key(
            self, "Key",
            alias=f"alias/{params.prefix}",
            description=f"{params.prefix}: buckets, queues, topic, idempotency table, training volumes",
            enable_key_rotation=True,
            removal_policy=removal,
        )
        # Services that write to resources encrypted with this key on our behalf: CloudWatch alarms
        # publishing to the SNS topic, EventBridge sending failed events to the SQS DLQs. Limited to
        # this account's resources with aws:SourceAccount.
        self.key.add_to_resource_policy(iam.PolicyStatement(
            sid="AllowAlarmsAndEventBridgeToUseTheKey",
            principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com"), iam.ServicePrincipal("events.amazonaws.com")],
            actions=["kms:Decrypt", "kms:GenerateDataKey"],
            resources=["*"],
            conditions={"StringEquals": {"aws:SourceAccount": stack.account}},
        ))

        self.access_logs = s3.Bucket(
            self, "AccessLogs",
            bucket_name=f"{params.prefix}-access-logs",
            # Server access log delivery supports SSE-S3 only on the target bucket.
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(
                id="expire-logs", expiration=Duration.days(400),
                noncurrent_version_expiration=Duration.days(30),
                abort_incomplete_multipart_upload_after=Duration.days(1))],
            removal_policy=removal,
            auto_delete_objects=False,
        )
        ack(self.access_logs, "AwsSolutions-S1",
            "This is the server-access-log target bucket; logging it into itself would recurse.")

        def bucket(cid: str, name: str, rules: list[s3.LifecycleRule], cors: bool = False) -> s3.Bucket:
            b = s3.Bucket(
                self, cid,
                bucket_name=name,
                encryption=s3.BucketEncryption.KMS,
                encryption_key=self.key,
                bucket_key_enabled=True,
                enforce_ssl=True,
                minimum_tls_version=1.2,
                versioned=True,
                block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
                object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
                server_access_logs_bucket=self.access_logs,
                server_access_logs_prefix=f"{name}/",
                lifecycle_rules=rules,
                cors=[s3.CorsRule(allowed_methods=[s3.HttpMethods.GET], allowed_origins=["*"],
                                  allowed_headers=["*"], exposed_headers=["Access-Control-Allow-Origin"])] if cors else None,
                removal_policy=removal,
            )
            return b

        common = [s3.LifecycleRule(id="abort-multipart", abort_incomplete_multipart_upload_after=Duration.days(7))]
        self.raw = bucket("Raw", names.raw_bucket, common + [
            s3.LifecycleRule(id="old-versions", noncurrent_version_expiration=Duration.days(90)),
            s3.LifecycleRule(id="tier-drawings", prefix="drawings/", transitions=[
                s3.Transition(storage_class=s3.StorageClass.INTELLIGENT_TIERING, transition_after=Duration.days(30))]),
        ], cors=True)
        self.labeling = bucket("Labeling", names.labeling_bucket, common + [
            s3.LifecycleRule(id="old-versions", noncurrent_version_expiration=Duration.days(30)),
            s3.LifecycleRule(id="batched-markers", prefix="batched/", expiration=Duration.days(90)),
        ], cors=True)
        self.datasets = bucket("Datasets", names.datasets_bucket, common + [
            # Dataset versions are immutable and kept; training channels are per-job copies.
            s3.LifecycleRule(id="training-channels", prefix="training/", expiration=Duration.days(60)),
            s3.LifecycleRule(id="old-versions", noncurrent_version_expiration=Duration.days(30)),
        ])
        self.models = bucket("Models", names.models_bucket, common + [
            s3.LifecycleRule(id="checkpoints", prefix="checkpoints/", expiration=Duration.days(14)),
            s3.LifecycleRule(id="old-versions", noncurrent_version_expiration=Duration.days(90)),
        ])
        raw_cfn = self.raw.node.default_child
        assert isinstance(raw_cfn, s3.CfnBucket)
        raw_cfn.add_property_override("NotificationConfiguration.EventBridgeConfiguration.EventBridgeEnabled", True)

    @property
    def buckets(self) -> dict[str, s3.Bucket]:
        return {"raw": self.raw, "labeling": self.labeling, "datasets": self.datasets, "models": self.models}
