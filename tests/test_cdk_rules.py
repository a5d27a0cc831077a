"""EventBridge rules: one per loop transition, the pattern is exactly the shared one
(``ocrloop.config.Names().patterns()``), each target has retries and a DLQ; the handler functions
run the ``lambdas`` modules with an idempotency table and on-failure destinations."""

from __future__ import annotations

import json
from pathlib import Path

from ocrloop import config, events
from ocrloop.config import Names

pytest_plugins = ["cdk_fixtures"]

FIXTURES = Path(__file__).parent / "fixtures" / "events"
HANDLERS = (config.START_LABELING, config.ON_LABELING_COMPLETED, config.ON_TRAINING_COMPLETED,
            config.ON_MODEL_APPROVED, config.ON_ENDPOINT_UPDATED)
#: Every shared pattern has its rule; INDEX_DRAWING's target is the indexer (container image).
RULES = tuple(Names().patterns())


def _rules(synth, stack):
    return synth.resources(stack, "AWS::Events::Rule")


def _function_of(synth, stack, target):
    logical = target["Arn"]["Fn::GetAtt"][0]
    return synth.resources(stack)[logical]


def test_one_rule_per_transition_with_the_shared_pattern(cdk_app):
    for stack, prefix in (("OcrLoop", "ocrloop"), ("OcrLoopVpc", "ocrloopvpc")):
        patterns = Names(prefix).patterns()
        rules = {r["Properties"]["Name"]: r for r in _rules(cdk_app, stack).values()}
        assert sorted(rules) == sorted(f"{prefix}-{h.replace('_', '-')}" for h in patterns)
        for handler in patterns:
            rule = rules[f"{prefix}-{handler.replace('_', '-')}"]
            assert rule["Properties"]["EventPattern"] == patterns[handler], handler
            assert rule["Properties"]["State"] == "ENABLED"


def test_each_rule_targets_its_handler_module(cdk_app):
    rules = {r["Properties"]["Name"]: r for r in _rules(cdk_app, "OcrLoop").values()}
    for handler in HANDLERS:
        targets = rules[f"ocrloop-{handler.replace('_', '-')}"]["Properties"]["Targets"]
        handlers = {_function_of(cdk_app, "OcrLoop", t)["Properties"].get("Handler") for t in targets}
        assert f"lambdas.{handler}.handler" in handlers
    index = rules["ocrloop-index-drawing"]["Properties"]["Targets"]
    assert [_function_of(cdk_app, "OcrLoop", t)["Properties"]["FunctionName"] for t in index] == ["ocrloop-indexer"]
    # A second consumer of the same pattern: autoscaling once the endpoint is InService.
    updated = rules["ocrloop-on-endpoint-updated"]["Properties"]["Targets"]
    assert {_function_of(cdk_app, "OcrLoop", t)["Properties"]["FunctionName"] for t in updated} == {
        "ocrloop-on-endpoint-updated", "ocrloop-endpoint-autoscaling"}


def test_every_target_has_retries_and_its_own_dlq(cdk_app):
    queues = cdk_app.resources("OcrLoop", "AWS::SQS::Queue")
    dlq_ids = []
    for rule in _rules(cdk_app, "OcrLoop").values():
        for target in rule["Properties"]["Targets"]:
            assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 3
            assert 3600 <= target["RetryPolicy"]["MaximumEventAgeInSeconds"] <= 86400
            dlq = target["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0]
            assert dlq in queues
            dlq_ids.append(dlq)
    assert len(dlq_ids) == len(set(dlq_ids)) == len(RULES) + 1  # + the autoscaling target


def test_handler_functions_async_failures_go_to_the_same_dlq(cdk_app):
    res = cdk_app.resources("OcrLoop")
    configs = cdk_app.resources("OcrLoop", "AWS::Lambda::EventInvokeConfig")
    by_function = {c["Properties"]["FunctionName"]["Ref"]: c["Properties"] for c in configs.values()}
    rules = {r["Properties"]["Name"]: r for r in _rules(cdk_app, "OcrLoop").values()}
    for handler in HANDLERS:
        target = rules[f"ocrloop-{handler.replace('_', '-')}"]["Properties"]["Targets"][0]
        fn = target["Arn"]["Fn::GetAtt"][0]
        cfg = by_function[fn]
        assert cfg["MaximumRetryAttempts"] == 2
        assert cfg["DestinationConfig"]["OnFailure"]["Destination"] == target["DeadLetterConfig"]["Arn"]
        env = res[fn]["Properties"]["Environment"]["Variables"]
        assert env["OCRLOOP_IDEMPOTENCY_TABLE"] == {"Ref": next(
            k for k, v in res.items() if v["Type"] == "AWS::DynamoDB::Table")}
        assert json.loads(env["OCRLOOP_LOOP"])["canary_bake_s"] == 600.0


def test_fixtures_match_exactly_their_rules():
    """Each documented event shape matches its transition's pattern and no other (the same
    matcher the local bus uses); a new drawing also goes to the indexer."""
    patterns = Names().patterns()
    expected = {
        "s3_object_created.json": config.START_LABELING,
        "labeling_job_completed.json": config.ON_LABELING_COMPLETED,
        "training_job_completed.json": config.ON_TRAINING_COMPLETED,
        "model_package_approved.json": config.ON_MODEL_APPROVED,
        "endpoint_in_service.json": config.ON_ENDPOINT_UPDATED,
    }
    for name, handler in expected.items():
        event = json.loads((FIXTURES / name).read_text())
        matched = [h for h, p in patterns.items() if events.matches(p, event)]
        extra = [config.INDEX_DRAWING] if handler == config.START_LABELING else []
        assert sorted(matched) == sorted([handler] + extra), (name, matched)
