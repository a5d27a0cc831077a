"""API: API Gateway (REST, regional) in front of the ASGI app (Mangum) in a container Lambda.

* Auth: IAM (SigV4) on every method — callers are services and operators with AWS credentials;
  grant ``execute-api:Invoke`` on the API to them (``infra/DEPLOY.md``).
* Throttling on the stage (``api_rate_limit`` requests/s, ``api_burst_limit`` burst); API Gateway's
  10 MB payload and 29 s integration limits bound a drawing upload and an OCR call.
* Access logs (JSON, standard fields) to a CloudWatch log group; execution logs at ERROR level.
* Binary media types for drawing uploads (images, multipart forms).

The function reads and writes ``drawings/`` of the raw bucket (register drawings), reads the
registry (model versions), invokes the endpoint (OCR) and reads/writes the drawing indices of the
search domain (security role ``ocrloop_api``; no template or alias management).
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_logs as logs
from constructs import Construct

from .data import Data
from .functions import FunctionFactory
from .iam import Policies, ack
from .params import Params
from .registry import Registry
from .search import Search
from .serving import Serving


class Api(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, params: Params, data: Data, policies: Policies,
                 functions: FunctionFactory, registry: Registry, serving: Serving, search: Search) -> None:
        super().__init__(scope, construct_id)
        self.fn, role = functions.make(
            self, "Function", name="api", image_cmd=["lambdas.api.handler"],
            description="ocrloop HTTP API (Mangum around ocrloop.api.create_app)",
            timeout_s=29, memory_mb=3008, env={"OCRLOOP_OPENSEARCH_ENDPOINT": search.endpoint}, in_vpc=True)
        self.role = role
        policies.allow(role, ["s3:ListBucket"], [data.raw.bucket_arn])
        policies.allow(role, ["s3:GetObject", "s3:PutObject"], [data.raw.arn_for_objects("drawings/*")],
                       why="Clients register drawings as drawings/<drawing id>.png; ids are chosen at run time.")
        policies.allow(role, ["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"], [data.key.key_arn])
        registry.grant_read(role)
        serving.grant_invoke(role)
        # Registering a drawing writes the index; fine-grained access control maps this role to the
        # ocrloop_api security role (crud/search on the drawing indices only).
        search.grant_http(role, write=True)

        access_logs = logs.LogGroup(self, "AccessLogs", log_group_name=f"/aws/apigateway/{params.prefix}-api",
                                    retention=functions.log_retention, removal_policy=cdk.RemovalPolicy.DESTROY)
        self.api = apigw.LambdaRestApi(
            self, "Api",
            rest_api_name=f"{params.prefix}-api",
            description="ocrloop: OCR drawings, search similar drawings, manage model versions",
            handler=self.fn,
            proxy=True,
            endpoint_types=[apigw.EndpointType.REGIONAL],
            binary_media_types=["image/*", "application/octet-stream", "multipart/form-data", "application/pdf"],
            default_method_options=apigw.MethodOptions(authorization_type=apigw.AuthorizationType.IAM),
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=cdk.RemovalPolicy.DESTROY,
            deploy_options=apigw.StageOptions(
                stage_name="v1",
                throttling_rate_limit=params.api_rate_limit,
                throttling_burst_limit=params.api_burst_limit,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,
                metrics_enabled=True,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True, http_method=True, ip=True, protocol=True, request_time=True,
                    resource_path=True, response_length=True, status=True, user=True),
            ),
        )
        ack(self.api, "AwsSolutions-APIG2",
            "Request validation happens in the ASGI app (FastAPI/pydantic models per route); the proxy "
            "integration has no API Gateway models to validate against.")
        ack(self.api, "AwsSolutions-APIG3",
            "Every method requires SigV4 (IAM) auth and the stage is throttled; a WAF web ACL adds cost "
            "without protecting unauthenticated paths, since there are none.")
        ack(self.api, "AwsSolutions-COG4",
            "IAM authorization instead of a Cognito user pool: the callers are services and operators "
            "holding AWS credentials.")
        ack(self.api, "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]",
            "The account-level role API Gateway needs to write execution logs; AWS's managed policy is the "
            "documented one and only grants CloudWatch Logs writes.")
        self.url = self.api.url

    def widgets(self) -> list[cw.IWidget]:
        return [cw.GraphWidget(title="API: requests, 4xx, 5xx, latency", width=24,
                               left=[self.api.metric_count(), self.api.metric_client_error(), self.api.metric_server_error()],
                               right=[self.api.metric_latency()])]
