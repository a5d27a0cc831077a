import json

import pytest
from hypothesis import given, strategies as st

from ocrloop import config, events


NAMES = config.Names()
PATTERNS = NAMES.patterns()


def test_every_handler_has_one_pattern():
    assert set(PATTERNS) == {config.START_LABELING, config.INDEX_DRAWING, config.ON_LABELING_COMPLETED,
                             config.ON_TRAINING_COMPLETED, config.ON_MODEL_APPROVED, config.ON_ENDPOINT_UPDATED}


def test_labeling_completed_matches_only_completed():
    ev = events.labeling_job_state_change("ocrloop-abc", "Completed")
    assert ev["resources"][0].endswith(":labeling-job/ocrloop-abc")
    assert ev["detail"] == {"LabelingJobStatus": "Completed"}
    assert events.matches(PATTERNS[config.ON_LABELING_COMPLETED], ev)
    assert not events.matches(PATTERNS[config.ON_LABELING_COMPLETED],
                              events.labeling_job_state_change("ocrloop-abc", "InProgress"))


def test_object_created_prefix_and_bucket():
    ev = events.object_created(NAMES.raw_bucket, "drawings/a.png", 10, "v1")
    assert events.matches(PATTERNS[config.START_LABELING], ev)
    assert not events.matches(PATTERNS[config.START_LABELING], events.object_created(NAMES.raw_bucket, "other/a.png", 1))
    assert not events.matches(PATTERNS[config.START_LABELING], events.object_created("x", "drawings/a.png", 1))


def test_endpoint_status_both_spellings():
    for status in ("InService", "IN_SERVICE"):
        ev = events.endpoint_state_change({"EndpointName": NAMES.endpoint_name, "EndpointStatus": status,
                                           "EndpointArn": "arn:aws:sagemaker:us-east-1:0:endpoint/x"})
        assert events.matches(PATTERNS[config.ON_ENDPOINT_UPDATED], ev)
    ev = events.endpoint_state_change({"EndpointName": NAMES.endpoint_name, "EndpointStatus": "Updating",
                                       "EndpointArn": "arn:aws:sagemaker:us-east-1:0:endpoint/x"})
    assert not events.matches(PATTERNS[config.ON_ENDPOINT_UPDATED], ev)


def test_training_prefix_filter():
    base = {"TrainingJobArn": "arn:aws:sagemaker:us-east-1:0:training-job/x", "TrainingJobStatus": "Completed"}
    assert events.matches(PATTERNS[config.ON_TRAINING_COMPLETED],
                          events.training_job_state_change(dict(base, TrainingJobName="ocrloop-1")))
    assert not events.matches(PATTERNS[config.ON_TRAINING_COMPLETED],
                              events.training_job_state_change(dict(base, TrainingJobName="someone-else")))


def test_unknown_operator_is_an_error():
    with pytest.raises(ValueError):
        events.matches({"a": [{"numeric": [">", 1]}]}, {"a": 2})


@given(st.text(min_size=0, max_size=12), st.text(min_size=0, max_size=5))
def test_prefix_semantics(value, prefix):
    assert events.matches({"k": [{"prefix": prefix}]}, {"k": value}) == value.startswith(prefix)


@given(st.lists(st.sampled_from(["a", "b", "c"]), max_size=3), st.sampled_from(["a", "b", "c"]))
def test_list_values_match_any_element(values, wanted):
    assert events.matches({"k": [wanted]}, {"k": values}) == (wanted in values)


def test_anything_but_and_exists():
    assert events.matches({"k": [{"anything-but": ["x"]}]}, {"k": "y"})
    assert not events.matches({"k": [{"anything-but": "x"}]}, {"k": "x"})
    assert events.matches({"k": [{"exists": False}]}, {})
    assert not events.matches({"k": [{"exists": True}]}, {})


def test_events_are_json():
    ev = events.object_created(NAMES.raw_bucket, "drawings/a.png", 10)
    assert json.loads(json.dumps(ev)) == ev
    assert set(ev) == {"version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"}
