"""EventBridge events in the shapes AWS sends them, and EventBridge pattern matching.

Builders produce the envelope of https://docs.aws.amazon.com/eventbridge/latest/ref/overiew-event-structure.html
with the ``detail`` documented for each SageMaker / S3 detail-type
(https://docs.aws.amazon.com/sagemaker/latest/dg/automating-sagemaker-with-eventbridge.html). The
local runtime publishes exactly these, so the handlers never see a local-only shape.

Standard library only (Lambda path).
"""

from __future__ import annotations

import datetime as _dt
import uuid
from typing import Any

from . import config

DEFAULT_ACCOUNT = "000000000000"
DEFAULT_REGION = "us-east-1"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def envelope(detail_type: str, source: str, detail: dict[str, Any], resources: list[str],
             account: str = DEFAULT_ACCOUNT, region: str = DEFAULT_REGION) -> dict[str, Any]:
    """Wrap ``detail`` in the EventBridge envelope (version "0", random id, UTC time)."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": source,
        "account": account,
        "time": _now(),
        "region": region,
        "resources": resources,
        "detail": detail,
    }


def arn(resource: str, name: str, account: str = DEFAULT_ACCOUNT, region: str = DEFAULT_REGION) -> str:
    """SageMaker ARN, e.g. ``arn:aws:sagemaker:us-east-1:000000000000:labeling-job/name``
    (labeling/training job names are lower-cased in ARNs, as SageMaker does)."""
    return f"arn:aws:sagemaker:{region}:{account}:{resource}/{name.lower()}"


def name_from_arn(value: str) -> str:
    """Last path segment of an ARN (``…:labeling-job/abc`` → ``abc``)."""
    return value.rsplit("/", 1)[-1]


def object_created(bucket: str, key: str, size: int, version_id: str | None = None, etag: str = "") -> dict[str, Any]:
    """S3 ``Object Created`` (EventBridge notifications enabled on the bucket)."""
    detail = {
        "version": "0",
        "bucket": {"name": bucket},
        "object": {"key": key, "size": size, "etag": etag, "sequencer": uuid.uuid4().hex[:18].upper()},
        "request-id": uuid.uuid4().hex[:16].upper(),
        "requester": DEFAULT_ACCOUNT,
        "reason": "PutObject",
    }
    if version_id:
        detail["object"]["version-id"] = version_id
    return envelope(config.DT_OBJECT_CREATED, "aws.s3", detail, [f"arn:aws:s3:::{bucket}"])


def labeling_job_state_change(job_name: str, status: str) -> dict[str, Any]:
    """Ground Truth: detail has only ``LabelingJobStatus``; the job ARN is ``resources[0]``."""
    return envelope(config.DT_LABELING_JOB, "aws.sagemaker", {"LabelingJobStatus": status},
                    [arn("labeling-job", job_name)])


def training_job_state_change(describe: dict[str, Any]) -> dict[str, Any]:
    """Training Job State Change: the detail mirrors the DescribeTrainingJob response."""
    return envelope(config.DT_TRAINING_JOB, "aws.sagemaker", dict(describe), [describe["TrainingJobArn"]])


def model_package_state_change(describe: dict[str, Any]) -> dict[str, Any]:
    """Model Package State Change: the detail mirrors the DescribeModelPackage response."""
    return envelope(config.DT_MODEL_PACKAGE, "aws.sagemaker", dict(describe), [describe["ModelPackageArn"]])


def endpoint_state_change(describe: dict[str, Any]) -> dict[str, Any]:
    """Endpoint State Change: the detail mirrors DescribeEndpoint (status as the API spells it)."""
    return envelope(config.DT_ENDPOINT, "aws.sagemaker", dict(describe), [describe["EndpointArn"]])


# --- EventBridge content filtering -----------------------------------------------------------

def _match_value(rule: Any, value: Any) -> bool:
    if isinstance(rule, dict):
        if "prefix" in rule:
            return isinstance(value, str) and value.startswith(rule["prefix"])
        if "suffix" in rule:
            return isinstance(value, str) and value.endswith(rule["suffix"])
        if "anything-but" in rule:
            banned = rule["anything-but"]
            banned = banned if isinstance(banned, list) else [banned]
            return value not in banned
        if "exists" in rule:
            return (value is not _MISSING) == bool(rule["exists"])
        raise ValueError(f"unsupported pattern operator: {sorted(rule)}")
    return value == rule


_MISSING = object()


def matches(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    """True when ``event`` matches the EventBridge ``pattern``.

    Implements the documented semantics for the operators ocrloop uses: a list of alternatives per
    field (any may match; a list value in the event matches if any element matches), nested
    objects, ``prefix``, ``suffix``, ``anything-but`` and ``exists``.

    Raises:
        ValueError: an operator outside that subset (so a pattern never silently mismatches).
    """
    for key, rule in pattern.items():
        value = event.get(key, _MISSING) if isinstance(event, dict) else _MISSING
        if isinstance(rule, dict):
            if value is _MISSING or not isinstance(value, dict):
                return False
            if not matches(rule, value):
                return False
            continue
        alternatives = rule if isinstance(rule, list) else [rule]
        values = value if isinstance(value, list) else [value]
        ok = False
        for alt in alternatives:
            if isinstance(alt, dict) and "exists" in alt:
                ok = _match_value(alt, value)
            else:
                ok = any(v is not _MISSING and _match_value(alt, v) for v in values)
            if ok:
                break
        if not ok:
            return False
    return True
