"""Events: one EventBridge rule per loop transition, its handler function, retries and a DLQ.

Rule patterns are ``Names(prefix).patterns()`` — the dicts the embedded runtime's in-process bus
matches — passed through unchanged (``event_pattern_of``), so AWS and the local loop react to exactly
the same events. Each target gets EventBridge retries (``retry_attempts``, ``max_event_age``) and a
DLQ for events EventBridge could not deliver; the function additionally retries failed asynchronous
invocations itself and sends events that still fail to the same DLQ (on-failure destination).

``add_rule`` adds the rules of functions built elsewhere (``index_drawing`` → the indexer), and
``add_target`` a second consumer of an existing rule (the autoscaling function on
``on_endpoint_updated``).
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from ocrloop import config

from .data import Data
from .functions import FunctionFactory
from .iam import Policies, arn
from .ops import Ops
from .params import Params
from .registry import Registry
from .serving import Serving

TARGET_RETRIES = 8
TARGET_MAX_AGE = Duration.hours(6)

#: Timeout (s) and memory (MB) of each handler: on_labeling_completed builds the dataset version
#: (crops with Pillow) and copies training channels, the others make a few API calls.
SIZING = {
    config.START_LABELING: (300, 512),
    config.ON_LABELING_COMPLETED: (900, 2048),
    config.ON_TRAINING_COMPLETED: (300, 1024),
    config.ON_MODEL_APPROVED: (600, 256),
    config.ON_ENDPOINT_UPDATED: (120, 256),
}


def event_pattern_of(pattern: dict[str, Any]) -> events.EventPattern:
    """``events.EventPattern`` carrying exactly the shared dict (keys ``source``, ``detail-type``,
    ``detail``, ``resources``, ``account``, ``region``).

    Raises:
        ValueError: a key this mapping does not know (it would be silently dropped otherwise).
    """
    mapping = {"source": "source", "detail-type": "detail_type", "detail": "detail", "resources": "resources",
               "account": "account", "region": "region", "version": "version", "id": "id", "time": "time"}
    unknown = set(pattern) - set(mapping)
    if unknown:
        raise ValueError(f"pattern keys not supported: {sorted(unknown)}")
    return events.EventPattern(**{mapping[k]: v for k, v in pattern.items()})


class LoopEvents(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, params: Params, data: Data, ops: Ops,
                 policies: Policies, functions: FunctionFactory, registry: Registry, serving: Serving,
                 sagemaker_role: iam.IRole, labeling_role: iam.IRole) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        self.params = params
        self.ops = ops
        self.policies = policies
        names = params.names
        self.functions: dict[str, lambda_.Function] = {}
        self.roles: dict[str, iam.Role] = {}
        self.rules: dict[str, events.Rule] = {}
        self.dlqs = {}
        key = data.key.key_arn

        for name in (config.START_LABELING, config.ON_LABELING_COMPLETED, config.ON_TRAINING_COMPLETED,
                     config.ON_MODEL_APPROVED, config.ON_ENDPOINT_UPDATED):
            dlq = ops.dlq(name.replace("_", "-"))
            timeout, memory = SIZING[name]
            fn, role = functions.make(
                self, _cid(name), name=name.replace("_", "-"), handler=f"lambdas.{name}.handler",
                description=f"ocrloop loop transition {name} (ocrloop.handlers.{name})",
                timeout_s=timeout, memory_mb=memory, dlq=dlq)
            self.functions[name] = fn
            self.roles[name] = role
            self.dlqs[name] = dlq
            ops.watch_function(name, fn)
            policies.allow(role, ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"],
                           [ops.table.table_arn])
            policies.allow(role, ["kms:Decrypt", "kms:GenerateDataKey", "kms:Encrypt", "kms:DescribeKey"], [key])
            policies.allow(role, ["sns:Publish"], [ops.topic.topic_arn])
            rule = events.Rule(self, f"{_cid(name)}Rule", rule_name=f"{params.prefix}-{name.replace('_', '-')}",
                               description=f"ocrloop: {name} (pattern from ocrloop.config.Names().patterns())",
                               event_pattern=event_pattern_of(names.patterns()[name]))
            rule.add_target(targets.LambdaFunction(fn, dead_letter_queue=dlq, retry_attempts=TARGET_RETRIES,
                                                   max_event_age=TARGET_MAX_AGE))
            self.rules[name] = rule

        b = data
        job_prefix = f"{params.prefix}-*"
        # start_labeling: queue drawings, pre-annotate with the endpoint, create the labeling job.
        r = self.roles[config.START_LABELING]
        self._buckets_read(r, [b.raw], "drawings/*", "Drawings are uploaded by users under arbitrary names.")
        self._buckets_rw(r, [b.labeling], "Queue markers, manifests and job folders are keyed by drawing hashes "
                                          "and run-time job names.")
        serving.grant_invoke(r)
        policies.allow(r, ["sagemaker:CreateLabelingJob", "sagemaker:DescribeLabelingJob", "sagemaker:AddTags"],
                       [arn(stack, "sagemaker", f"labeling-job/{job_prefix}")],
                       why="Labeling job names are <prefix>-<hash of the batch>, known only at run time.")
        self._pass(r, labeling_role)
        # on_labeling_completed: output manifest → dataset version → training job.
        r = self.roles[config.ON_LABELING_COMPLETED]
        self._buckets_read(r, [b.raw, b.labeling, b.models], "*",
                           "Drawings, Ground Truth output and parent models are read by run-time keys.")
        self._buckets_rw(r, [b.datasets], "Dataset versions and training channels are named at run time.")
        policies.allow(r, ["sagemaker:DescribeLabelingJob"], [arn(stack, "sagemaker", f"labeling-job/{job_prefix}")],
                       why="Labeling job names are <prefix>-<hash of the batch>, known only at run time.")
        policies.allow(r, ["sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:AddTags"],
                       [arn(stack, "sagemaker", f"training-job/{job_prefix}")],
                       why="Training job names are <prefix>-<dataset version>-<hash>, known only at run time.",
                       conditions={"NumericLessThanEqualsIfExists": {"sagemaker:KeepAlivePeriod": params.warm_pool_s}})
        self._pass(r, sagemaker_role)
        registry.grant_read(r)
        # on_training_completed: metrics from model.tar.gz → model package.
        r = self.roles[config.ON_TRAINING_COMPLETED]
        self._buckets_read(r, [b.models, b.datasets], "*", "Model artifacts are written under run-time job names.")
        registry.grant_read(r)
        registry.grant_write(r)
        # on_model_approved: deploy (blue/green) or roll back.
        r = self.roles[config.ON_MODEL_APPROVED]
        registry.grant_read(r)
        registry.grant_write(r)
        serving.grant_deploy(r, sagemaker_role, [registry.package_arns])
        # on_endpoint_updated: verify, mark Deployed, refresh the index.
        r = self.roles[config.ON_ENDPOINT_UPDATED]
        registry.grant_read(r)
        registry.grant_write(r)
        serving.grant_describe(r)
        # The autoscaling function shares the on_endpoint_updated rule.
        self.add_target(config.ON_ENDPOINT_UPDATED, "endpoint-autoscaling", serving.autoscaling_fn)

    # ------------------------------------------------------------------------------------------
    def add_rule(self, name: str, fn: lambda_.IFunction) -> events.Rule:
        """The rule of pattern ``name`` (``Names().patterns()[name]``) targeting ``fn``, with a DLQ."""
        params = self.params
        dlq = self.ops.dlq(name.replace("_", "-"))
        rule = events.Rule(self, f"{_cid(name)}Rule", rule_name=f"{params.prefix}-{name.replace('_', '-')}",
                           description=f"ocrloop: {name} (pattern from ocrloop.config.Names().patterns())",
                           event_pattern=event_pattern_of(params.names.patterns()[name]))
        rule.add_target(targets.LambdaFunction(fn, dead_letter_queue=dlq, retry_attempts=TARGET_RETRIES,
                                               max_event_age=TARGET_MAX_AGE))
        self.rules[name] = rule
        self.dlqs[name] = dlq
        self.ops.watch_function(name, fn)
        return rule

    def add_target(self, rule_name: str, target_name: str, fn: lambda_.IFunction) -> None:
        """Another function on the rule of ``rule_name`` (same pattern), with its own DLQ."""
        dlq = self.ops.dlq(target_name)
        self.rules[rule_name].add_target(targets.LambdaFunction(
            fn, dead_letter_queue=dlq, retry_attempts=TARGET_RETRIES, max_event_age=TARGET_MAX_AGE))
        self.ops.watch_function(target_name, fn)

    def _pass(self, role: iam.Role, passed: iam.IRole) -> None:
        self.policies.allow(role, ["iam:PassRole"], [passed.role_arn],
                            conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}})

    def _buckets_read(self, role: iam.Role, buckets: list, keys: str, why: str) -> None:
        self.policies.allow(role, ["s3:ListBucket"], [x.bucket_arn for x in buckets])
        self.policies.allow(role, ["s3:GetObject"], [x.arn_for_objects(keys) for x in buckets], why=why)

    def _buckets_rw(self, role: iam.Role, buckets: list, why: str) -> None:
        self.policies.allow(role, ["s3:ListBucket"], [x.bucket_arn for x in buckets])
        self.policies.allow(role, ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
                            [x.arn_for_objects("*") for x in buckets], why=why)


def _cid(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))
