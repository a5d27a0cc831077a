"""Lambda: keep the serving variant registered with Application Auto Scaling.

Second target of the ``on_endpoint_updated`` rule (same shared pattern). Registering a scalable
target needs the variant to exist, so it runs when the endpoint reports InService — after the first
creation, and after an update that changed the instance type (``SageMakerHosting.deploy``
deregisters the target before such an update). Both API calls are upserts, so redelivered events are
harmless and no idempotency record is needed.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.parser import parse

from ocrloop.aws.models import EndpointStateChange

from ._common import json_safe, logger, runtime


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    parsed = parse(event=event, model=EndpointStateChange)
    status = parsed.detail.EndpointStatus.upper().replace("_", "")
    rt = runtime()
    if parsed.detail.EndpointName != rt.names.endpoint_name:
        return {"skipped": f"endpoint {parsed.detail.EndpointName} is not ocrloop's"}
    if status != "INSERVICE":
        return {"skipped": f"endpoint is {parsed.detail.EndpointStatus}"}
    result = rt.hosting.ensure_autoscaling(rt.names.endpoint_name)  # type: ignore[attr-defined]
    logger.info("autoscaling ensured", extra=result)
    return json_safe(result)
