"""Search: the OpenSearch domain (k-NN, faiss HNSW), the indexer and the index-setup custom resource.

Domain: OpenSearch 2.19, encryption at rest, node-to-node encryption, HTTPS only (TLS 1.2),
fine-grained access control with an IAM master user (the search-admin role the indexer and the setup
function share), slow/application/audit logs to CloudWatch, zone awareness over two AZs. Without a
VPC the endpoint is public but every request must be SigV4-signed by one of the two roles the access
policy names; with ``use_vpc`` it lives in private subnets behind a security group.

The index template (faiss HNSW ``knn_vector``, ``ocrloop.aws.opensearch.OpenSearchIndex.template_body``)
is put by a custom resource running in the search image on every deploy of a new image; it also maps
the API role to a read-only security role and starts a rebuild when the embedder changed
(``ocrloop.aws.search``).
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_opensearchservice as opensearch
from aws_cdk import custom_resources as cr
from constructs import Construct

from .data import Data
from .functions import FunctionFactory
from .iam import Policies, ack, arn, flatten
from .params import Params
from .serving import Serving


class Search(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, params: Params, data: Data, policies: Policies,
                 functions: FunctionFactory, serving: Serving, vpc: ec2.IVpc | None,
                 security_group: ec2.ISecurityGroup | None) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        self.params = params
        self.policies = policies
        self.domain_name = f"{params.prefix}-search"[:28]
        self.domain_arn = arn(stack, "es", f"domain/{self.domain_name}")
        self.paths_arn = arn(stack, "es", f"domain/{self.domain_name}/*")

        log_groups = {kind: logs.LogGroup(self, f"{kind}Logs", log_group_name=f"/aws/opensearch/{self.domain_name}/{kind}",
                                          retention=functions.log_retention,
                                          removal_policy=cdk.RemovalPolicy.DESTROY)
                      for kind in ("slow-search", "slow-index", "application", "audit")}
        logs.ResourcePolicy(self, "LogsPolicy", resource_policy_name=f"{self.domain_name}-logs",
                            policy_statements=[iam.PolicyStatement(
                                principals=[iam.ServicePrincipal("es.amazonaws.com")],
                                actions=["logs:PutLogEvents", "logs:CreateLogStream"],
                                resources=[g.log_group_arn for g in log_groups.values()],
                                conditions={"StringEquals": {"aws:SourceAccount": stack.account}})])

        # Roles first: the domain names them (access policy, master user).
        indexer_name = f"{params.prefix}-indexer"
        self.admin_role = policies.role(self, "AdminRole", "lambda.amazonaws.com",
                                        "Search admin: indexer and index setup (OpenSearch master user)")
        vpc_options = {}
        if vpc is not None and security_group is not None:
            vpc_options = dict(vpc=vpc, vpc_subnets=[ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)],
                               security_groups=[security_group])
        self.domain = opensearch.Domain(
            self, "Domain",
            domain_name=self.domain_name,
            version=opensearch.EngineVersion.OPENSEARCH_2_19,
            capacity=opensearch.CapacityConfig(
                data_nodes=params.opensearch_nodes,
                data_node_instance_type=params.opensearch_instance_type,
                master_nodes=3 if params.opensearch_dedicated_masters else None,
                master_node_instance_type="m7g.large.search" if params.opensearch_dedicated_masters else None,
                multi_az_with_standby_enabled=False),
            ebs=opensearch.EbsOptions(volume_size=params.opensearch_volume_gb, volume_type=ec2.EbsDeviceVolumeType.GP3),
            zone_awareness=opensearch.ZoneAwarenessConfig(enabled=params.opensearch_nodes > 1,
                                                          availability_zone_count=2 if params.opensearch_nodes > 1 else None),
            encryption_at_rest=opensearch.EncryptionAtRestOptions(enabled=True),
            node_to_node_encryption=True,
            enforce_https=True,
            tls_security_policy=opensearch.TLSSecurityPolicy.TLS_1_2,
            fine_grained_access_control=opensearch.AdvancedSecurityOptions(master_user_arn=self.admin_role.role_arn),
            logging=opensearch.LoggingOptions(
                slow_search_log_enabled=True, slow_search_log_group=log_groups["slow-search"],
                slow_index_log_enabled=True, slow_index_log_group=log_groups["slow-index"],
                app_log_enabled=True, app_log_group=log_groups["application"],
                audit_log_enabled=True, audit_log_group=log_groups["audit"]),
            suppress_logs_resource_policy=True,
            removal_policy=cdk.RemovalPolicy.RETAIN if params.retain_data else cdk.RemovalPolicy.DESTROY,
            **vpc_options,
        )
        self.endpoint = self.domain.domain_endpoint
        if not params.opensearch_dedicated_masters:
            ack(self.domain, "AwsSolutions-OS4",
                "No dedicated master nodes at the stated workload (≤ 100k drawings, 2 data nodes); "
                "set opensearch_dedicated_masters=true for larger clusters.")
        if vpc is None:
            ack(self.domain, "AwsSolutions-OS1",
                "use_vpc=false: public endpoint, but every request must be SigV4-signed by the two roles the "
                "access policy names, and fine-grained access control maps them to index permissions.")
        ack(self.domain, "AwsSolutions-OS3",
            "Access is restricted by IAM principal (two named roles) and fine-grained access control, not by "
            "source IP: the callers are Lambda functions without fixed addresses.")
        if params.opensearch_nodes < 2:
            ack(self.domain, "AwsSolutions-OS7", "Single-node domain requested (opensearch_nodes=1) for a test deployment.")

        search_env = {"OCRLOOP_OPENSEARCH_ENDPOINT": self.endpoint}
        self.indexer, _ = functions.make(
            self, "Indexer", name="indexer", image_cmd=["lambdas.indexer.handler"],
            description="Embeds drawings into the OpenSearch k-NN index; refreshes and rebuilds index versions",
            timeout_s=900, memory_mb=3008, env=search_env, in_vpc=True, role_override=self.admin_role)
        self.setup_fn, _ = functions.make(
            self, "Setup", name="search-setup", image_cmd=["lambdas.search_setup.handler"],
            description="Custom resource: index template, index version of the embedder, role mapping",
            timeout_s=600, memory_mb=2048, env=search_env, in_vpc=True, role_override=self.admin_role)
        assert self.indexer.function_name is not None
        role = self.admin_role
        self.grant_http(role, write=True)
        for b in (data.raw,):
            policies.allow(role, ["s3:ListBucket"], [b.bucket_arn])
            policies.allow(role, ["s3:GetObject"], [b.arn_for_objects("drawings/*")],
                           why="Drawings are uploaded by users under arbitrary names.")
        policies.allow(role, ["kms:Decrypt", "kms:DescribeKey"], [data.key.key_arn])
        policies.allow(role, ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"],
                       [arn(stack, "dynamodb", f"table/{params.prefix}-idempotency")])
        policies.allow(role, ["lambda:InvokeFunction"], [arn(stack, "lambda", f"function:{indexer_name}")])
        serving.grant_invoke(role)

        provider = cr.Provider(self, "SetupProvider", on_event_handler=self.setup_fn,
                               log_group=logs.LogGroup(self, "ProviderLogs", retention=functions.log_retention,
                                                       removal_policy=cdk.RemovalPolicy.DESTROY))
        self.setup = cdk.CustomResource(self, "IndexSetup", service_token=provider.service_token,
                                        resource_type="Custom::OcrloopIndexSetup",
                                        properties={"Endpoint": self.endpoint, "Alias": params.names.index_alias,
                                                    "Dimension": str(params.embedding_dim)})
        self.setup.node.add_dependency(self.domain)
        self.provider = provider
        ack(provider, "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
            "The CDK custom-resource Provider framework's own function; the managed policy only grants writing its "
            "CloudWatch logs.")
        flat = flatten(cdk.Stack.of(self).resolve(self.setup_fn.function_arn))
        ack(provider, f"AwsSolutions-IAM5[Resource::{flat}:*]",
            "The Provider framework invokes any version/alias of the one setup function (<function ARN>:*).")

    def grant_http(self, role: iam.Role, write: bool = False) -> None:
        """Signed HTTP access to the domain (fine-grained access control decides per index)."""
        actions = ["es:ESHttpGet", "es:ESHttpHead", "es:ESHttpPost"]
        if write:
            actions += ["es:ESHttpPut", "es:ESHttpDelete"]
        self.policies.allow(role, actions, [self.paths_arn],
                            why="Index names are <alias>-v<embedder version>, created at run time; the domain's "
                                "fine-grained access control restricts each role to its indices.")

    def allow_domain_principals(self, roles: list[iam.IRole]) -> None:
        """Resource (access) policy of the domain: only these roles may call it."""
        cfn = self.domain.node.default_child
        assert isinstance(cfn, opensearch.CfnDomain)
        cfn.access_policies = {
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"AWS": [r.role_arn for r in roles]},
                "Action": "es:ESHttp*",
                "Resource": self.paths_arn,
            }],
        }

    def widgets(self) -> list[cw.IWidget]:
        return [
            cw.GraphWidget(title="Search: latency / searchable documents", width=12,
                           left=[self.domain.metric_search_latency()], right=[self.domain.metric_searchable_documents()]),
            cw.GraphWidget(title="Search: JVM memory pressure / free storage", width=12,
                           left=[self.domain.metric_jvm_memory_pressure()], right=[self.domain.metric_free_storage_space()]),
        ]
