"""The documented event shapes (``tests/fixtures/events``) parse with the powertools parser models
the Lambdas validate against, and a malformed event is rejected before the core runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aws_lambda_powertools.utilities.parser import parse
from pydantic import ValidationError

from ocrloop import config, events
from ocrloop.aws.models import BY_DETAIL_TYPE, MODELS, EndpointStateChange, LabelingJobStateChange, ObjectCreated

FIXTURES = Path(__file__).parent / "fixtures" / "events"


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_fixture_parses_with_its_model(name):
    event = load(name)
    parsed = parse(event=event, model=BY_DETAIL_TYPE[event["detail-type"]])
    assert parsed.id == event["id"] and parsed.detail_type == event["detail-type"]


def test_fields_the_handlers_read():
    s3 = parse(event=load("s3_object_created.json"), model=ObjectCreated)
    assert s3.detail.bucket.name == "ocrloop-raw" and s3.detail.object.key == "drawings/flange-0001.png"
    gt = parse(event=load("labeling_job_completed.json"), model=LabelingJobStateChange)
    assert gt.detail.LabelingJobStatus == "Completed"
    assert events.name_from_arn(gt.resources[0]) == "ocrloop-0a1b2c3d4e"
    ep = parse(event=load("endpoint_in_service.json"), model=EndpointStateChange)
    assert ep.detail.EndpointStatus == "IN_SERVICE"
    assert ep.time.year == 2020  # "1583831889050": epoch milliseconds as a string, as documented


def test_events_built_by_the_local_runtime_parse_too():
    """The local bus publishes ``ocrloop.events`` builders' output: same models, same handlers."""
    built = [
        events.object_created("ocrloop-raw", "drawings/a.png", 10, "v1"),
        events.labeling_job_state_change("ocrloop-abc", "Completed"),
        events.training_job_state_change({"TrainingJobName": "ocrloop-x", "TrainingJobStatus": "Completed",
                                          "TrainingJobArn": events.arn("training-job", "ocrloop-x")}),
        events.model_package_state_change({"ModelPackageGroupName": "ocrloop-rec", "ModelApprovalStatus": "Approved",
                                           "ModelPackageArn": events.arn("model-package", "ocrloop-rec/1")}),
        events.endpoint_state_change({"EndpointName": "ocrloop-ocr", "EndpointStatus": "InService",
                                      "EndpointArn": events.arn("endpoint", "ocrloop-ocr")}),
    ]
    for event in built:
        parse(event=event, model=BY_DETAIL_TYPE[event["detail-type"]])


def test_malformed_events_are_rejected():
    bad = load("labeling_job_completed.json")
    bad["resources"] = []
    with pytest.raises(ValidationError):
        parse(event=bad, model=MODELS[config.ON_LABELING_COMPLETED])
    wrong = load("endpoint_in_service.json")
    with pytest.raises(ValidationError):
        parse(event=wrong, model=MODELS[config.ON_TRAINING_COMPLETED])
    status = load("model_package_approved.json")
    status["detail"]["ModelApprovalStatus"] = "Maybe"
    with pytest.raises(ValidationError):
        parse(event=status, model=MODELS[config.ON_MODEL_APPROVED])


def test_every_shared_pattern_has_a_model():
    assert set(MODELS) == set(config.Names().patterns())
