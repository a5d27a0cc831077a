"""Lambda function factory: one role, one log group, explicit permissions per function.

Zip functions run Python 3.11 on x86_64 with ``packaging.code_asset()`` and the dependency layer;
container functions run the image built from ``lambdas/Dockerfile``. Every function gets:
its own IAM role (no managed policies; only its log group for logging), a log group with the
stack's retention, an environment built from ``ocrloop.aws.settings.AwsSettings``, and — when it is
invoked asynchronously — Lambda's own retries plus an on-failure destination (the SQS DLQ).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import aws_cdk as cdk
from aws_cdk import Duration
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from ocrloop.aws.settings import AwsSettings

from . import packaging
from .iam import Policies, ack

#: The container image's build context: what ``lambdas/Dockerfile`` copies.
IMAGE_CONTEXT = ("ocrloop", "lambdas")

#: Retention values CloudWatch Logs accepts, in days.
_RETENTION = {1: logs.RetentionDays.ONE_DAY, 7: logs.RetentionDays.ONE_WEEK, 14: logs.RetentionDays.TWO_WEEKS,
              30: logs.RetentionDays.ONE_MONTH, 90: logs.RetentionDays.THREE_MONTHS,
              180: logs.RetentionDays.SIX_MONTHS, 365: logs.RetentionDays.ONE_YEAR}


def retention(days: int) -> logs.RetentionDays:
    try:
        return _RETENTION[days]
    except KeyError:
        raise ValueError(f"log_retention_days must be one of {sorted(_RETENTION)}") from None


def image_code(cmd: list[str]) -> lambda_.DockerImageCode:
    """The search/API container image with a handler ``cmd`` (same asset for every function)."""
    context = packaging.stage(IMAGE_CONTEXT, ignore=packaging.IMAGE_IGNORE)
    return lambda_.DockerImageCode.from_image_asset(
        str(context),
        file="lambdas/Dockerfile",
        cmd=cmd,
        platform=ecr_assets.Platform.LINUX_AMD64,
    )


@dataclasses.dataclass
class FunctionFactory:
    """Shared inputs of every function of the stack."""

    scope: Construct
    policies: Policies
    prefix: str
    settings: AwsSettings
    log_retention: logs.RetentionDays
    code: lambda_.Code | None = None
    layer: lambda_.ILayerVersion | None = None
    vpc_config: dict[str, Any] | None = None

    def zip_code(self) -> tuple[lambda_.Code, lambda_.ILayerVersion]:
        if self.code is None:
            self.code = packaging.code_asset()
            self.layer = packaging.deps_layer(self.scope, "DepsLayer")
        assert self.layer is not None
        return self.code, self.layer

    def make(self, scope: Construct, construct_id: str, *, name: str, handler: str | None = None,
             image_cmd: list[str] | None = None, description: str, timeout_s: int = 60,
             memory_mb: int = 512, env: dict[str, str] | None = None, dlq: sqs.IQueue | None = None,
             async_retries: int = 2, in_vpc: bool = False,
             role_override: iam.Role | None = None) -> tuple[lambda_.Function, iam.Role]:
        """A function named ``<prefix>-<name>`` with its role and log group.

        Args:
            handler: ``lambdas.<module>.handler`` for a zip function; ``image_cmd`` for the image.
            dlq: on-failure destination of asynchronous invocations (after ``async_retries``).
            in_vpc: attach to the stack's VPC (when ``use_vpc``).
            role_override: share an existing role (functions that act as one principal).
        """
        function_name = f"{self.prefix}-{name}"
        role = role_override or self.policies.role(scope, f"{construct_id}Role", "lambda.amazonaws.com",
                                                    f"Execution role of the {function_name} function")
        log_group = logs.LogGroup(scope, f"{construct_id}Logs", log_group_name=f"/aws/lambda/{function_name}",
                                  retention=self.log_retention, removal_policy=cdk.RemovalPolicy.DESTROY)
        self.policies.allow(role, ["logs:CreateLogStream", "logs:PutLogEvents"], [log_group.log_group_arn])
        environment = dict(self.settings.to_env())
        environment.update(env or {})
        environment["POWERTOOLS_SERVICE_NAME"] = "ocrloop"
        common: dict[str, Any] = dict(
            function_name=function_name,
            description=description,
            role=role,
            timeout=Duration.seconds(timeout_s),
            memory_size=memory_mb,
            environment=environment,
            log_group=log_group,
            architecture=packaging.ARCHITECTURE,
        )
        if dlq is not None:
            common.update(retry_attempts=async_retries, max_event_age=Duration.hours(6),
                          on_failure=destinations.SqsDestination(dlq))
            reason = ("Added by CDK's grant for the on-failure SQS destination (queue.grantSendMessages): the "
                      "KMS-encrypted DLQ needs GenerateDataKey*/ReEncrypt* variants, on the stack key only.")
            ack(role, "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]", reason)
            ack(role, "AwsSolutions-IAM5[Action::kms:ReEncrypt*]", reason)
        if in_vpc and self.vpc_config:
            common.update(self.vpc_config)
            self.policies.allow(
                role, ["ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DeleteNetworkInterface",
                       "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"], ["*"],
                why="Lambda creates the function's ENIs in the VPC at run time; ec2:DescribeNetworkInterfaces "
                    "has no resource-level permissions.")
        if image_cmd is not None:
            fn: lambda_.Function = lambda_.DockerImageFunction(scope, construct_id, code=image_code(image_cmd),
                                                               **common)
        else:
            assert handler is not None
            code, layer = self.zip_code()
            fn = lambda_.Function(scope, construct_id, runtime=packaging.RUNTIME, handler=handler, code=code,
                                  layers=[layer], **common)
            ack(fn, "AwsSolutions-L1",
                "Pinned to Python 3.11, the project's interpreter (requires-python <3.12): the bundled "
                "cp311 manylinux2014 wheels and the tests run on it.")
        return fn, role
