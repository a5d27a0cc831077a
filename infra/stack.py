"""The ocrloop stack: everything in DESIGN.md's AWS column, one construct per concern.

    data      KMS key, raw/labeling/datasets/models buckets, access logs        (infra/data.py)
    ops       SNS topic, idempotency table, DLQs, alarms, dashboard            (infra/ops.py)
    training  training/inference images, SageMaker execution role             (infra/training.py)
    labeling  Ground Truth template, pre/post Lambdas, labeling role           (infra/labeling.py)
    registry  model package group                                              (infra/registry.py)
    serving   rollback alarms, autoscaling function, deploy permissions        (infra/serving.py)
    events    one rule per transition + handler function + DLQ                 (infra/events.py)
    search    OpenSearch domain, indexer, index setup                          (infra/search.py)
    api       API Gateway → API function                                      (infra/api.py)
"""

from __future__ import annotations

import dataclasses

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from ocrloop import config
from ocrloop.aws.settings import AwsSettings

from .api import Api
from .data import Data
from .events import LoopEvents
from .functions import FunctionFactory, retention
from .iam import Policies, arn
from .labeling import Labeling
from .ops import Ops
from .params import Params
from .registry import Registry
from .search import Search
from .serving import Serving
from .training import Training


class OcrLoopStack(cdk.Stack):
    def __init__(self, scope: Construct, construct_id: str, *, params: Params, **kwargs) -> None:
        super().__init__(scope, construct_id, description="ocrloop: continuous training of PaddleOCR on engineering "
                                                          "drawings (labeling → training → registry → endpoint → search)",
                         **kwargs)
        self.params = params
        names = params.names
        policies = Policies()
        self.policies = policies
        cdk.Tags.of(self).add("project", "ocrloop")
        cdk.Tags.of(self).add("ocrloop:prefix", params.prefix)

        data = Data(self, "Data", params=params)
        ops = Ops(self, "Ops", params=params, key=data.key)
        vpc, security_group, vpc_config = self._network(params)
        training = Training(self, "Training", params=params, data=data, policies=policies)

        fn_prefix = lambda name: arn(self, "lambda", f"function:{params.prefix}-{name}")  # noqa: E731
        settings = AwsSettings(
            prefix=params.prefix,
            loop=params.loop,
            account=self.account,
            training_image=training.training_image.image_uri,
            inference_image=training.inference_image.image_uri,
            training_instance_type=params.training_instance_type,
            training_max_run_s=params.training_max_run_s,
            training_max_wait_s=params.training_max_wait_s,
            training_capacity=params.training_capacity,
            warm_pool_s=params.warm_pool_s,
            sagemaker_role_arn=training.role.role_arn,
            workteam_arn=params.workteam_arn,
            pre_annotation_lambda_arn=fn_prefix("gt-pre-annotation"),
            consolidation_lambda_arn=fn_prefix("gt-consolidation"),
            kms_key_arn=data.key.key_arn,
            inference_instance_type=params.inference_instance_type,
            inference_instance_count=params.inference_instance_count,
            autoscaling_min=params.inference_instance_count,
            autoscaling_max=params.autoscaling_max,
            autoscaling_invocations_per_instance=params.autoscaling_invocations_per_instance,
            topic_arn=ops.topic.topic_arn,
            idempotency_table=ops.table.table_name,
            embedding_dim=params.embedding_dim,
            index_replicas=min(1, params.opensearch_nodes - 1),
            indexer_function=f"{params.prefix}-indexer",
            subnet_ids=tuple(s.subnet_id for s in vpc.private_subnets) if vpc else (),
            security_group_ids=(security_group.security_group_id,) if security_group else (),
        )
        functions = FunctionFactory(self, policies, params.prefix, settings, retention(params.log_retention_days),
                                    vpc_config=vpc_config)
        labeling = Labeling(self, "Labeling", params=params, data=data, policies=policies, functions=functions)
        registry = Registry(self, "Registry", params=params, policies=policies)
        serving = Serving(self, "Serving", params=params, policies=policies, functions=functions)
        functions.settings = dataclasses.replace(
            settings, labeling_role_arn=labeling.role.role_arn, ui_template_uri=labeling.template_uri,
            rollback_alarms=serving.alarm_names)
        loop = LoopEvents(self, "Events", params=params, data=data, ops=ops, policies=policies, functions=functions,
                          registry=registry, serving=serving, sagemaker_role=training.role,
                          labeling_role=labeling.role)
        search = Search(self, "Search", params=params, data=data, policies=policies, functions=functions,
                        serving=serving, vpc=vpc, security_group=security_group)
        loop.add_rule(config.INDEX_DRAWING, search.indexer)
        missing = set(names.patterns()) - set(loop.rules)
        if missing:
            raise ValueError(f"no rule for the shared patterns {sorted(missing)}")
        policies.allow(loop.roles[config.ON_ENDPOINT_UPDATED], ["lambda:InvokeFunction"],
                       [search.indexer.function_arn])
        api = Api(self, "Api", params=params, data=data, policies=policies, functions=functions, registry=registry,
                  serving=serving, search=search)
        search.allow_domain_principals([search.admin_role, api.role])
        search.setup.node.add_dependency(api.role)
        cfn_setup = search.setup.node.default_child
        assert isinstance(cfn_setup, cdk.CfnResource)
        cfn_setup.add_property_override("ApiRoleArns", [api.role.role_arn])

        for alarm in (serving.alarm_5xx, serving.alarm_latency):
            alarm.add_alarm_action(ops.action)  # SageMaker rolls back; operators hear about it
            ops.alarms.append(alarm)
        ops.watch_function("api", api.fn)
        ops.watch_function("gt-consolidation", labeling.consolidation)
        ops.dashboard(serving.widgets(), search.widgets() + api.widgets())

        self.data, self.ops, self.training, self.labeling = data, ops, training, labeling
        self.registry, self.serving, self.loop, self.search, self.api = registry, serving, loop, search, api
        self.acknowledged = policies.finalize(self)

        cdk.CfnOutput(self, "ApiUrl", value=api.url, description="Base URL of the ocrloop API (IAM auth)")
        cdk.CfnOutput(self, "RawBucket", value=data.raw.bucket_name,
                      description="Upload drawings under drawings/ to start the loop")
        cdk.CfnOutput(self, "TopicArn", value=ops.topic.topic_arn, description="Failures and pending approvals")
        cdk.CfnOutput(self, "ModelPackageGroup", value=names.model_package_group)
        cdk.CfnOutput(self, "SearchEndpoint", value=search.endpoint)

    def _network(self, params: Params):
        if not params.use_vpc:
            return None, None, None
        vpc = ec2.Vpc(self, "Vpc", max_azs=2, nat_gateways=1, subnet_configuration=[
            ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
            ec2.SubnetConfiguration(name="private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=22),
        ], gateway_endpoints={"S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)})
        vpc.add_flow_log("FlowLogs", traffic_type=ec2.FlowLogTrafficType.REJECT)
        sg = ec2.SecurityGroup(self, "SearchClients", vpc=vpc, allow_all_outbound=True,
                               description="ocrloop functions and the OpenSearch domain (HTTPS between members)")
        sg.add_ingress_rule(sg, ec2.Port.tcp(443), "HTTPS from ocrloop functions to the search domain")
        vpc_config = dict(vpc=vpc, vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
                          security_groups=[sg])
        return vpc, sg, vpc_config
