"""Serving: the guardrail alarms of the endpoint, its autoscaling, and the permissions to deploy it.

The endpoint itself is created at run time (first approved model: CreateEndpoint; later ones:
UpdateEndpoint with a blue/green canary DeploymentConfig, ``ocrloop.aws.sagemaker.SageMakerHosting``),
so the stack holds what must exist before that:

* two CloudWatch alarms with the names ``ocrloop.handlers.deployment_config`` lists in
  ``AutoRollbackConfiguration`` — ``<endpoint>-5xx`` (any ``Invocation5XXErrors`` in a minute) and
  ``<endpoint>-latency`` (average ``ModelLatency`` above the threshold for 2 minutes), the same
  definitions as ``ocrloop.local.hosting.default_alarms``;
* the autoscaling function (target of the ``on_endpoint_updated`` rule next to the handler) that
  registers the ``AllTraffic`` variant with Application Auto Scaling once the endpoint is InService.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_iam as iam
from constructs import Construct

from .functions import FunctionFactory
from .iam import Policies, arn
from .params import Params

SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"


def rollback_alarm_names(endpoint_name: str) -> tuple[str, str]:
    """(5xx alarm, latency alarm) — the names ``handlers.deployment_config`` puts in
    ``AutoRollbackConfiguration``."""
    return f"{endpoint_name}-5xx", f"{endpoint_name}-latency"


class Serving(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, params: Params, policies: Policies,
                 functions: FunctionFactory) -> None:
        super().__init__(scope, construct_id)
        self.params = params
        self.policies = policies
        stack = cdk.Stack.of(self)
        self.stack = stack
        names = params.names
        self.endpoint_name = names.endpoint_name
        dims = {"EndpointName": names.endpoint_name, "VariantName": names.variant_name}
        five_xx_name, latency_name = rollback_alarm_names(names.endpoint_name)
        self.metric_5xx = cw.Metric(namespace="AWS/SageMaker", metric_name="Invocation5XXErrors",
                                    dimensions_map=dims, statistic="Sum", period=Duration.minutes(1))
        self.metric_latency = cw.Metric(namespace="AWS/SageMaker", metric_name="ModelLatency",
                                        dimensions_map=dims, statistic="Average", period=Duration.minutes(1),
                                        unit=cw.Unit.MICROSECONDS)
        self.metric_invocations = cw.Metric(namespace="AWS/SageMaker", metric_name="Invocations",
                                            dimensions_map=dims, statistic="Sum", period=Duration.minutes(5))
        self.alarm_5xx = cw.Alarm(
            self, "Alarm5xx", alarm_name=five_xx_name, metric=self.metric_5xx,
            alarm_description="Deployment guardrail: any 5xx from the endpoint rolls a blue/green update back.",
            threshold=0, comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1, treat_missing_data=cw.TreatMissingData.NOT_BREACHING)
        self.alarm_latency = cw.Alarm(
            self, "AlarmLatency", alarm_name=latency_name, metric=self.metric_latency,
            alarm_description=f"Deployment guardrail: average ModelLatency above {params.latency_alarm_us} µs "
                              "for 2 minutes rolls a blue/green update back.",
            threshold=params.latency_alarm_us, comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=2, datapoints_to_alarm=2, treat_missing_data=cw.TreatMissingData.NOT_BREACHING)
        self.alarm_names = (five_xx_name, latency_name)

        ep = names.endpoint_name
        self.endpoint_arn = arn(stack, "sagemaker", f"endpoint/{ep}")
        self.config_arns = arn(stack, "sagemaker", f"endpoint-config/{ep}-*")
        self.model_arns = arn(stack, "sagemaker", f"model/{ep}-*")
        self.alarm_arns = [arn(stack, "cloudwatch", f"alarm:{a}") for a in self.alarm_names]

        self.autoscaling_fn, role = functions.make(
            self, "Autoscaling", name="endpoint-autoscaling", handler="lambdas.endpoint_autoscaling.handler",
            description="Registers the endpoint variant with Application Auto Scaling once InService",
            timeout_s=60, memory_mb=256)
        self.grant_describe(role)
        self.grant_autoscaling(role)

    # permissions -----------------------------------------------------------------------------
    def grant_describe(self, role: iam.Role) -> None:
        self.policies.allow(role, ["sagemaker:DescribeEndpoint", "sagemaker:DescribeEndpointConfig"],
                            [self.endpoint_arn, self.config_arns],
                            why="Endpoint configs are named <endpoint>-<model version> at deploy time.")

    def grant_invoke(self, role: iam.Role) -> None:
        self.policies.allow(role, ["sagemaker:InvokeEndpoint"], [self.endpoint_arn])

    def grant_autoscaling(self, role: iam.Role) -> None:
        stack = self.stack
        conditions = {"StringEquals": {"application-autoscaling:service-namespace": "sagemaker",
                                       "application-autoscaling:scalable-dimension": SCALABLE_DIMENSION}}
        self.policies.allow(
            role, ["application-autoscaling:RegisterScalableTarget", "application-autoscaling:PutScalingPolicy",
                   "application-autoscaling:DeregisterScalableTarget"], ["*"],
            why="Scalable-target ARNs carry a service-generated id unknown before registration; the "
                "statement is limited to SageMaker variant instance counts by condition keys.",
            conditions=conditions)
        self.policies.allow(
            role, ["application-autoscaling:DescribeScalableTargets", "application-autoscaling:DescribeScalingPolicies"],
            ["*"], why="Application Auto Scaling Describe* calls have no resource-level permissions.")
        # RegisterScalableTarget for SageMaker checks the caller can describe and resize the variant.
        self.policies.allow(role, ["sagemaker:UpdateEndpointWeightsAndCapacities"], [self.endpoint_arn])
        # Target tracking creates and maintains its CloudWatch alarms with the caller's permissions.
        self.policies.allow(
            role, ["cloudwatch:PutMetricAlarm", "cloudwatch:DescribeAlarms", "cloudwatch:DeleteAlarms"],
            [arn(stack, "cloudwatch", f"alarm:TargetTracking-endpoint/{self.endpoint_name}/*")],
            why="Target tracking names its alarms TargetTracking-<resource id>-AlarmHigh/Low-<uuid>.")
        self.policies.allow(
            role, ["iam:CreateServiceLinkedRole"],
            [cdk.Fn.join("", ["arn:", cdk.Aws.PARTITION, ":iam::", stack.account,
                              ":role/aws-service-role/sagemaker.application-autoscaling.amazonaws.com/"
                              "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"])],
            conditions={"StringLike": {"iam:AWSServiceName": "sagemaker.application-autoscaling.amazonaws.com"}})

    def grant_deploy(self, role: iam.Role, sagemaker_role: iam.IRole, package_arns: list[str]) -> None:
        """CreateModel/CreateEndpointConfig/CreateEndpoint/UpdateEndpoint of this endpoint."""
        self.policies.allow(
            role, ["sagemaker:CreateModel", "sagemaker:CreateEndpointConfig", "sagemaker:CreateEndpoint",
                   "sagemaker:UpdateEndpoint", "sagemaker:DeleteEndpoint", "sagemaker:DescribeEndpoint",
                   "sagemaker:DescribeEndpointConfig", "sagemaker:DescribeModel", "sagemaker:AddTags"],
            [self.endpoint_arn, self.config_arns, self.model_arns],
            why="Models and endpoint configs are named <endpoint>-<model version> when a version is deployed.")
        # CreateModel from a model package reads the package.
        self.policies.allow(role, ["sagemaker:DescribeModelPackage"], package_arns,
                            why="Model package versions are numbered by the registry at run time.")
        self.policies.allow(role, ["iam:PassRole"], [sagemaker_role.role_arn],
                            conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}})
        # AutoRollbackConfiguration: SageMaker checks the caller may read the alarms.
        self.policies.allow(role, ["cloudwatch:DescribeAlarms"], self.alarm_arns)
        # An update that changes the instance type deregisters the scalable target first.
        conditions = {"StringEquals": {"application-autoscaling:service-namespace": "sagemaker",
                                       "application-autoscaling:scalable-dimension": SCALABLE_DIMENSION}}
        self.policies.allow(role, ["application-autoscaling:DeregisterScalableTarget"], ["*"],
                            why="Scalable-target ARNs carry a service-generated id; limited to SageMaker variant "
                                "instance counts by condition keys.", conditions=conditions)
        self.policies.allow(role, ["application-autoscaling:DescribeScalableTargets"], ["*"],
                            why="Application Auto Scaling Describe* calls have no resource-level permissions.")

    def widgets(self) -> list[cw.IWidget]:
        return [
            cw.GraphWidget(title="Endpoint: invocations and 5xx", width=12,
                           left=[self.metric_invocations], right=[self.metric_5xx]),
            cw.GraphWidget(title="Endpoint: model latency (µs)", width=12, left=[self.metric_latency],
                           left_annotations=[cw.HorizontalAnnotation(value=self.params.latency_alarm_us,
                                                                     label="rollback threshold")]),
        ]
