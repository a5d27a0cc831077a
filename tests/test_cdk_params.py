"""Deployment parameters from CDK context: defaults, overrides, and refusals of invalid input
(no synthesis needed)."""

from __future__ import annotations

import json

import pytest

from infra.params import Params
from infra.training import is_gpu
from ocrloop.aws.settings import AwsSettings
from ocrloop.config import LoopConfig


def test_cdk_json_context_is_valid_and_bakes_for_ten_minutes():
    from pathlib import Path

    context = json.loads((Path(__file__).resolve().parents[1] / "cdk.json").read_text())["context"]["ocrloop"]
    params = Params.from_context(context)
    assert params.loop.canary_bake_s == 600 and params.loop.canary_percent == 10
    assert params.loop.replay_ratio == 3 and params.loop.new_ratio == 7
    assert params.names.raw_bucket == "ocrloop-raw"


def test_overrides_from_a_json_string_merge_into_the_loop_config():
    params = Params.from_context('{"prefix": "acme-ocrloop", "loop": {"replay_ratio": 4, "auto_approve": "false"}, '
                                 '"use_vpc": "true", "autoscaling_max": "3"}')
    assert params.prefix == "acme-ocrloop" and params.use_vpc is True and params.autoscaling_max == 3
    assert params.loop.replay_ratio == 4 and params.loop.auto_approve is False
    assert params.loop.canary_bake_s == 600  # the deployment default survives a partial override


@pytest.mark.parametrize("bad", [
    {"prefx": "typo"},
    {"loop": {"canary_percentage": 5}},
    {"prefix": "Bad_Prefix"},
    {"training_capacity": "spot", "warm_pool_s": 600},
    {"training_capacity": "warm", "warm_pool_s": 7200},
    {"autoscaling_max": 0},
    {"loop": {"canary_bake_s": 4000}},
])
def test_invalid_context_is_refused(bad):
    with pytest.raises(ValueError):
        Params.from_context(bad)


def test_gpu_instance_families():
    assert is_gpu("ml.g5.xlarge") and is_gpu("ml.p4d.24xlarge") and not is_gpu("ml.c5.xlarge")
    assert not is_gpu("ml.m5.large")


def test_settings_round_trip_through_the_environment():
    settings = AwsSettings(prefix="acme-ocrloop", loop=LoopConfig(replay_ratio=4), training_capacity="warm",
                           warm_pool_s=900, rollback_alarms=("a-5xx", "a-latency"), subnet_ids=("subnet-1", "subnet-2"),
                           embedding_dim=512, topic_arn="arn:aws:sns:us-east-1:123456789012:t")
    env = settings.to_env()
    assert all(k.startswith("OCRLOOP_") for k in env) and "OCRLOOP_REGION" not in env
    back = AwsSettings.from_env(dict(env, AWS_REGION="eu-west-1"))
    assert back == AwsSettings(**{**settings.__dict__, "region": "eu-west-1"})
    with pytest.raises(ValueError):
        AwsSettings.from_env({"OCRLOOP_LOOP": json.dumps({"no_such_key": 1})})
    with pytest.raises(ValueError):
        AwsSettings(training_capacity="spot", training_max_run_s=7200, training_max_wait_s=3600)
