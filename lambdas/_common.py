"""Shared wiring of the loop's Lambda functions.

* ``runtime()``: the ``Runtime`` built once per container (``ocrloop.aws.runtime.from_env``) and
  reused by every invocation the container serves.
* ``loop_handler(name)``: the Lambda handler of one transition: parse the event with its powertools
  parser model (``ocrloop.aws.models``), then call ``ocrloop.handlers.<name>`` under powertools
  idempotency backed by DynamoDB, keyed on the EventBridge event ``id`` plus its ``detail``
  (EventBridge delivers at least once and SageMaker may emit an event twice; a redelivery with the
  same id and detail returns the stored result without calling the core again). A failed call
  deletes its idempotency record, so the Lambda's retries and DLQ redrives run it again.

Idempotency records expire after ``IDEMPOTENCY_TTL_S`` (7 days, longer than EventBridge's 24 h
retry window and Lambda's 6 h maximum event age) via the table's TTL attribute ``expiration``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent,
)
from aws_lambda_powertools.utilities.parser import parse

from ocrloop.aws.models import MODELS
from ocrloop.aws.runtime import from_env
from ocrloop.aws.settings import AwsSettings
from ocrloop.runtime import Runtime

IDEMPOTENCY_TTL_S = 7 * 24 * 3600
IDEMPOTENCY_KEY = "[id, detail]"

logger = Logger(service="ocrloop")
_RUNTIME: Runtime | None = None
_BUILT: list[dict[str, Any]] = []


def runtime() -> Runtime:
    """The container's ``Runtime`` (built on first use)."""
    global _RUNTIME
    if _RUNTIME is None:
        _RUNTIME = from_env()
    return _RUNTIME


def reset() -> None:
    """Forget the cached runtime and idempotency wiring (tests switch environments between cases)."""
    global _RUNTIME
    _RUNTIME = None
    for built in _BUILT:
        built.clear()


def json_safe(value: Any) -> Any:
    """The core's result as plain JSON (datetimes as ISO strings): Lambda and the idempotency
    store both serialise it."""
    return json.loads(json.dumps(value, default=str))


def persistence() -> DynamoDBPersistenceLayer:
    table = os.environ.get(AwsSettings.env_name("idempotency_table"))
    if not table:
        raise RuntimeError(f"{AwsSettings.env_name('idempotency_table')} is not set")
    return DynamoDBPersistenceLayer(table_name=table)


def loop_handler(name: str, core: Callable[[dict[str, Any], Runtime], dict[str, Any]] | None = None
                 ) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """Lambda handler ``(event, context)`` for the transition ``name`` (``ocrloop.config``)."""
    model = MODELS[name]
    built: dict[str, Callable[[dict[str, Any], Any], Any]] = {}
    _BUILT.append(built)

    def call_core(event: dict[str, Any], context: Any) -> dict[str, Any]:
        parse(event=event, model=model)  # raises pydantic.ValidationError on a malformed event
        fn = core
        if fn is None:
            from ocrloop import handlers

            fn = handlers.HANDLERS[name]
        result = fn(event, runtime())
        logger.info("handled", extra={"handler": name, "result": result})
        return json_safe(result)

    # The idempotency key is "<Lambda function name>.<module>.<qualname>#<hash of [id, detail]>":
    # name the core call after the transition so records of different handlers never collide.
    call_core.__name__ = call_core.__qualname__ = name

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        # Built on first call, not at import: the table name comes from the environment.
        if "fn" not in built:
            config = IdempotencyConfig(event_key_jmespath=IDEMPOTENCY_KEY, raise_on_no_idempotency_key=True,
                                       expires_after_seconds=IDEMPOTENCY_TTL_S)
            built["fn"] = idempotent(persistence_store=persistence(), config=config)(call_core)
        logger.append_keys(handler=name, event_id=event.get("id"))
        return built["fn"](event, context)

    handler.__name__ = name
    return handler
