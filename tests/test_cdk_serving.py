"""Serving guardrails and training settings as deployed: the rollback alarms the core's
DeploymentConfig names exist with the local definitions; the functions get the settings the
adapters need (images, roles, spot/warm pool, KMS); dashboard and alarms notify the topic."""

from __future__ import annotations

import json
from types import SimpleNamespace

from ocrloop import handlers
from ocrloop.config import LoopConfig, Names
from ocrloop.local.hosting import default_alarms

pytest_plugins = ["cdk_fixtures"]

STACK = "OcrLoop"


def _alarms(synth, stack=STACK):
    return {a["Properties"]["AlarmName"]: a["Properties"] for a in synth.resources(stack, "AWS::CloudWatch::Alarm").values()
            if isinstance(a["Properties"].get("AlarmName"), str)}


def test_rollback_alarms_named_by_the_core_exist_with_the_local_definitions(cdk_app):
    alarms = _alarms(cdk_app)
    rt = SimpleNamespace(names=Names(), config=LoopConfig(canary_bake_s=600))
    wanted = [a["AlarmName"] for a in handlers.deployment_config(rt)["AutoRollbackConfiguration"]["Alarms"]]
    assert wanted
    local = default_alarms(Names())
    for name in wanted:
        alarm = alarms[name]
        spec = local[name]
        assert alarm["Namespace"] == "AWS/SageMaker"
        assert alarm["MetricName"] == spec["MetricName"]
        assert alarm["Statistic"] == spec["Statistic"]
        assert alarm["Threshold"] == spec["Threshold"]
        assert alarm["ComparisonOperator"] == spec["ComparisonOperator"]
        dims = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
        assert dims == {"EndpointName": "ocrloop-ocr", "VariantName": "AllTraffic"}
        assert alarm["Period"] == 60
        assert alarm["TreatMissingData"] == "notBreaching"


def test_deploy_function_knows_the_alarms_and_the_guardrail_settings(cdk_app):
    fns = {f["Properties"].get("FunctionName"): f["Properties"] for f in cdk_app.resources(STACK, "AWS::Lambda::Function").values()}
    env = fns["ocrloop-on-model-approved"]["Environment"]["Variables"]
    assert env["OCRLOOP_ROLLBACK_ALARMS"] == "ocrloop-ocr-5xx,ocrloop-ocr-latency"
    loop = json.loads(env["OCRLOOP_LOOP"])
    assert loop["canary_percent"] == 10 and loop["canary_bake_s"] == 600
    assert env["OCRLOOP_INFERENCE_INSTANCE_TYPE"] == "ml.c5.xlarge"
    assert env["OCRLOOP_AUTOSCALING_MAX"] == "2"
    # Images are ECR asset URIs, the roles and the template are real references.
    train_env = fns["ocrloop-on-labeling-completed"]["Environment"]["Variables"]
    assert "dkr.ecr" in json.dumps(train_env["OCRLOOP_TRAINING_IMAGE"])
    assert train_env["OCRLOOP_TRAINING_CAPACITY"] == "spot"
    assert "Fn::GetAtt" in json.dumps(train_env["OCRLOOP_SAGEMAKER_ROLE_ARN"])
    labeling_env = fns["ocrloop-start-labeling"]["Environment"]["Variables"]
    assert "Fn::GetAtt" in json.dumps(labeling_env["OCRLOOP_LABELING_ROLE_ARN"])
    assert json.dumps(labeling_env["OCRLOOP_UI_TEMPLATE_URI"]).startswith('"s3://') or "s3://" in json.dumps(
        labeling_env["OCRLOOP_UI_TEMPLATE_URI"])
    assert "function:ocrloop-gt-pre-annotation" in json.dumps(labeling_env["OCRLOOP_PRE_ANNOTATION_LAMBDA_ARN"])
    assert "function:ocrloop-gt-consolidation" in json.dumps(labeling_env["OCRLOOP_CONSOLIDATION_LAMBDA_ARN"])
    assert fns["ocrloop-gt-pre-annotation"] and fns["ocrloop-gt-consolidation"]


def test_warm_pool_is_capped_by_iam_condition(cdk_app):
    """CreateTrainingJob is allowed only with KeepAlivePeriodInSeconds ≤ the configured warm pool
    (0 in the spot deployment: no warm pools at all)."""
    for stack, cap in (("OcrLoop", 0), ("OcrLoopVpc", 1800)):
        found = False
        for res in cdk_app.resources(stack, "AWS::IAM::Policy").values():
            for st in res["Properties"]["PolicyDocument"]["Statement"]:
                actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
                if "sagemaker:CreateTrainingJob" in actions:
                    found = True
                    assert st["Condition"]["NumericLessThanEqualsIfExists"]["sagemaker:KeepAlivePeriod"] == cap
        assert found


def test_every_alarm_notifies_the_topic(cdk_app):
    topic = next(iter(cdk_app.resources(STACK, "AWS::SNS::Topic")))
    alarms = _alarms(cdk_app)
    for name, alarm in alarms.items():
        assert alarm["AlarmActions"] == [{"Ref": topic}], name
    assert len(alarms) >= 2 + 7 + 8  # guardrails + DLQs + function error alarms


def test_dashboard_covers_loop_endpoint_search_and_api(cdk_app):
    board = next(iter(cdk_app.resources(STACK, "AWS::CloudWatch::Dashboard").values()))["Properties"]
    body = json.dumps(board["DashboardBody"])
    for needle in ("Loop functions", "Dead-letter queues", "ModelLatency", "Invocation5XXErrors", "Search", "API"):
        assert needle in body, needle


def test_sagemaker_role_is_scoped_to_the_buckets_and_key(cdk_app):
    res = cdk_app.resources(STACK)
    role = next(k for k, v in res.items() if v["Type"] == "AWS::IAM::Role" and "SageMakerRole" in k)
    trust = res[role]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    statements = [st for v in res.values() if v["Type"] == "AWS::IAM::Policy"
                  and {"Ref": role} in v["Properties"]["Roles"] for st in v["Properties"]["PolicyDocument"]["Statement"]]
    s3 = json.dumps([st for st in statements if any(a.startswith("s3:") for a in
                                                    (st["Action"] if isinstance(st["Action"], list) else [st["Action"]]))])
    assert "ocrloop-datasets" in s3 or "Datasets" in s3
    assert "ocrloop-raw" not in s3 and "DataRaw" not in s3  # training never reads raw uploads
    writes = [st for st in statements if "s3:PutObject" in (st["Action"] if isinstance(st["Action"], list) else [st["Action"]])]
    assert writes and all("training-output/*" in json.dumps(st["Resource"]) or "checkpoints/*" in json.dumps(st["Resource"])
                          for st in writes)
