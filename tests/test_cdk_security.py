"""Security properties of the synthesized template: encryption, versioning, TLS, public access,
logging, lifecycle, least-privilege IAM (every ``*`` resource justified by the API that needs it),
API auth/throttling/access logs, search domain protection."""

from __future__ import annotations

import json

from ocrloop.config import Names

pytest_plugins = ["cdk_fixtures"]

STACK = "OcrLoop"

#: Every IAM action allowed on ``Resource: "*"``, with the reason the API needs it. A new ``*`` fails
#: this test until it is listed here.
STAR_ACTIONS = {
    "ecr:GetAuthorizationToken": "no resource-level permissions (registry-wide auth token)",
    "cloudwatch:PutMetricData": "no resource-level permissions; restricted by the cloudwatch:namespace condition",
    "sagemaker:ListModelPackages": "List* has no resource type in the Service Authorization Reference",
    "sagemaker:ListTrainingJobs": "List* has no resource type",
    "sagemaker:ListLabelingJobs": "List* has no resource type",
    "application-autoscaling:RegisterScalableTarget": "scalable-target ARNs hold a service-generated id; "
                                                      "service-namespace/scalable-dimension conditions",
    "application-autoscaling:PutScalingPolicy": "as RegisterScalableTarget",
    "application-autoscaling:DeregisterScalableTarget": "as RegisterScalableTarget",
    "application-autoscaling:DescribeScalableTargets": "Describe* has no resource-level permissions",
    "application-autoscaling:DescribeScalingPolicies": "Describe* has no resource-level permissions",
    # VPC variant only: Lambda and SageMaker create ENIs at run time.
    "ec2:CreateNetworkInterface": "ENI ids are created at run time",
    "ec2:CreateNetworkInterfacePermission": "ENI ids are created at run time",
    "ec2:DeleteNetworkInterface": "ENI ids are created at run time",
    "ec2:DeleteNetworkInterfacePermission": "ENI ids are created at run time",
    "ec2:DescribeNetworkInterfaces": "Describe* has no resource-level permissions",
    "ec2:DescribeVpcs": "Describe* has no resource-level permissions",
    "ec2:DescribeDhcpOptions": "Describe* has no resource-level permissions",
    "ec2:DescribeSubnets": "Describe* has no resource-level permissions",
    "ec2:DescribeSecurityGroups": "Describe* has no resource-level permissions",
    "ec2:AssignPrivateIpAddresses": "ENI ids are created at run time",
    "ec2:UnassignPrivateIpAddresses": "ENI ids are created at run time",
}


def _statements(template):
    for logical, res in template["Resources"].items():
        if res["Type"] == "AWS::IAM::Policy":
            for st in res["Properties"]["PolicyDocument"]["Statement"]:
                yield logical, st
        if res["Type"] == "AWS::IAM::Role":
            for pol in res["Properties"].get("Policies", []):
                for st in pol["PolicyDocument"]["Statement"]:
                    yield logical, st


def _as_list(v):
    return v if isinstance(v, list) else [v]


def test_iam_star_resources_are_only_where_the_api_requires_them(cdk_app):
    for stack in cdk_app.templates:
        for logical, st in _statements(cdk_app.template(stack)):
            if "*" in _as_list(st["Resource"]):
                for action in _as_list(st["Action"]):
                    assert action in STAR_ACTIONS, f"{stack}/{logical}: {action} on Resource '*'"
            for action in _as_list(st["Action"]):
                assert action != "*" and not action.endswith(":*"), f"{logical}: service-wide action {action}"


def test_star_statements_carry_conditions_where_the_api_supports_them(cdk_app):
    for logical, st in _statements(cdk_app.template(STACK)):
        if "*" not in _as_list(st["Resource"]):
            continue
        actions = set(_as_list(st["Action"]))
        if "cloudwatch:PutMetricData" in actions:
            assert "cloudwatch:namespace" in json.dumps(st["Condition"])
        if actions & {"application-autoscaling:RegisterScalableTarget", "application-autoscaling:DeregisterScalableTarget"}:
            assert st["Condition"]["StringEquals"]["application-autoscaling:service-namespace"] == "sagemaker"


def test_only_acknowledged_managed_policies(cdk_app):
    """Roles carry inline policies; the two AWS managed policies are the API Gateway logging role
    and the CDK Provider framework (both acknowledged with reasons)."""
    managed = []
    for logical, res in cdk_app.resources(STACK, "AWS::IAM::Role").items():
        for arn in res["Properties"].get("ManagedPolicyArns", []):
            managed.append((logical, json.dumps(arn)))
    assert len(managed) == 2, managed
    assert any("AmazonAPIGatewayPushToCloudWatchLogs" in a for _, a in managed)
    assert any("AWSLambdaBasicExecutionRole" in a and "SetupProvider" in lg for lg, a in managed)


def test_passrole_is_scoped_to_sagemaker(cdk_app):
    n = 0
    for logical, st in _statements(cdk_app.template(STACK)):
        if "iam:PassRole" in _as_list(st["Action"]):
            n += 1
            assert st["Condition"]["StringEquals"]["iam:PassedToService"] == "sagemaker.amazonaws.com"
            assert "*" not in json.dumps(st["Resource"])
    assert n >= 3


def test_buckets_encrypted_versioned_tls_only_private_logged(cdk_app):
    names = Names()
    buckets = {b["Properties"]["BucketName"]: b["Properties"] for b in cdk_app.resources(STACK, "AWS::S3::Bucket").values()}
    data = [names.raw_bucket, names.labeling_bucket, names.datasets_bucket, names.models_bucket]
    assert set(data) | {"ocrloop-access-logs"} == set(buckets)
    policies = {json.dumps(p["Properties"]["Bucket"]): p["Properties"]["PolicyDocument"]
                for p in cdk_app.resources(STACK, "AWS::S3::BucketPolicy").values()}
    for name, props in buckets.items():
        assert props["VersioningConfiguration"]["Status"] == "Enabled"
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
        sse = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        assert props["LifecycleConfiguration"]["Rules"]
        if name in data:
            assert sse["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
            assert "KMSMasterKeyID" in sse["ServerSideEncryptionByDefault"]
            assert sse["BucketKeyEnabled"] is True
            assert props["LoggingConfiguration"]["LogFilePrefix"] == f"{name}/"
            assert any(r.get("AbortIncompleteMultipartUpload") for r in props["LifecycleConfiguration"]["Rules"])
    tls_denies = 0
    for doc in policies.values():
        for st in doc["Statement"]:
            if st["Effect"] == "Deny" and st.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false":
                tls_denies += 1
    assert tls_denies >= len(buckets)
    raw = buckets[names.raw_bucket]
    assert raw["NotificationConfiguration"]["EventBridgeConfiguration"]["EventBridgeEnabled"] is True
    assert raw["CorsConfiguration"]["CorsRules"][0]["AllowedMethods"] == ["GET"]


def test_queues_topic_table_key_encrypted(cdk_app):
    key = next(iter(cdk_app.resources(STACK, "AWS::KMS::Key").values()))["Properties"]
    assert key["EnableKeyRotation"] is True
    for q in cdk_app.resources(STACK, "AWS::SQS::Queue").values():
        assert "KmsMasterKeyId" in q["Properties"]
        assert q["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
    topic = next(iter(cdk_app.resources(STACK, "AWS::SNS::Topic").values()))["Properties"]
    assert "KmsMasterKeyId" in topic
    table = next(iter(cdk_app.resources(STACK, "AWS::DynamoDB::Table").values()))["Properties"]
    assert table["SSESpecification"]["SSEEnabled"] is True
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    # Services writing into encrypted queues/topics may use the key, for this account only.
    statements = key["KeyPolicy"]["Statement"]
    service = [s for s in statements if "Service" in s.get("Principal", {})]
    assert service and all(s["Condition"]["StringEquals"]["aws:SourceAccount"] == "123456789012" for s in service)


def test_every_function_has_its_own_role_and_log_retention(cdk_app):
    fns = cdk_app.resources(STACK, "AWS::Lambda::Function")
    roles = [f["Properties"]["Role"]["Fn::GetAtt"][0] for f in fns.values()
             if f["Properties"].get("FunctionName", "").startswith("ocrloop-")]
    shared = {r for r in roles if roles.count(r) > 1}
    # The indexer and the index setup share the search-admin role (the domain's master user).
    assert len(shared) == 1 and "AdminRole" in next(iter(shared))
    for lg in cdk_app.resources(STACK, "AWS::Logs::LogGroup").values():
        assert lg["Properties"]["RetentionInDays"] == 90


def test_api_requires_iam_auth_is_throttled_and_logged(cdk_app):
    methods = cdk_app.resources(STACK, "AWS::ApiGateway::Method")
    assert methods and all(m["Properties"]["AuthorizationType"] == "AWS_IAM" for m in methods.values())
    stage = next(iter(cdk_app.resources(STACK, "AWS::ApiGateway::Stage").values()))["Properties"]
    settings = stage["MethodSettings"][0]
    assert settings["ThrottlingRateLimit"] == 20 and settings["ThrottlingBurstLimit"] == 40
    assert settings["LoggingLevel"] == "ERROR"
    assert "DestinationArn" in stage["AccessLogSetting"]
    assert "$context.identity.user" in stage["AccessLogSetting"]["Format"]
    api = next(iter(cdk_app.resources(STACK, "AWS::ApiGateway::RestApi").values()))["Properties"]
    assert "image/*" in api["BinaryMediaTypes"]
    fn = next(f for f in cdk_app.resources(STACK, "AWS::Lambda::Function").values()
              if f["Properties"].get("FunctionName") == "ocrloop-api")
    assert fn["Properties"]["PackageType"] == "Image"
    assert fn["Properties"]["ImageConfig"]["Command"] == ["lambdas.api.handler"]


def test_search_domain_is_encrypted_https_only_and_access_controlled(cdk_app):
    for stack in cdk_app.templates:
        domain = next(iter(cdk_app.resources(stack, "AWS::OpenSearchService::Domain").values()))["Properties"]
        assert domain["EngineVersion"].startswith("OpenSearch_")
        assert domain["EncryptionAtRestOptions"]["Enabled"] is True
        assert domain["NodeToNodeEncryptionOptions"]["Enabled"] is True
        assert domain["DomainEndpointOptions"]["EnforceHTTPS"] is True
        assert domain["DomainEndpointOptions"]["TLSSecurityPolicy"].startswith("Policy-Min-TLS-1-2")
        adv = domain["AdvancedSecurityOptions"]
        assert adv["Enabled"] is True and adv["InternalUserDatabaseEnabled"] is False
        assert "MasterUserARN" in adv["MasterUserOptions"]
        assert set(domain["LogPublishingOptions"]) >= {"SEARCH_SLOW_LOGS", "INDEX_SLOW_LOGS", "ES_APPLICATION_LOGS",
                                                       "AUDIT_LOGS"}
        access = domain["AccessPolicies"]["Statement"]
        assert len(access) == 1 and len(access[0]["Principal"]["AWS"]) == 2  # admin role + API role
        if stack == "OcrLoopVpc":
            assert domain["VPCOptions"]["SubnetIds"]
        else:
            assert "VPCOptions" not in domain


def test_vpc_variant_places_search_clients_in_private_subnets(cdk_app):
    fns = cdk_app.resources("OcrLoopVpc", "AWS::Lambda::Function")
    in_vpc = sorted(f["Properties"]["FunctionName"] for f in fns.values() if "VpcConfig" in f["Properties"])
    assert in_vpc == ["ocrloopvpc-api", "ocrloopvpc-indexer", "ocrloopvpc-search-setup"]
    assert cdk_app.resources("OcrLoopVpc", "AWS::EC2::FlowLog")
    env = next(f for f in fns.values() if f["Properties"].get("FunctionName") == "ocrloopvpc-on-labeling-completed")
    variables = env["Properties"]["Environment"]["Variables"]
    assert variables["OCRLOOP_TRAINING_CAPACITY"] == "warm" and variables["OCRLOOP_WARM_POOL_S"] == "1800"
    assert variables["OCRLOOP_SUBNET_IDS"] and variables["OCRLOOP_SECURITY_GROUP_IDS"]
