"""``EventBus`` on Amazon EventBridge (``PutEvents``).

The envelope the core builds (``ocrloop.events.envelope``) maps onto a ``PutEventsRequestEntry``:
``source`` → ``Source``, ``detail-type`` → ``DetailType``, ``detail`` → ``Detail`` (JSON string),
``resources`` → ``Resources``. ``id``, ``account``, ``region`` and ``time`` are assigned by
EventBridge (``Time`` may be given; it is passed through when it parses as ISO 8601).

Limits (https://docs.aws.amazon.com/eventbridge/latest/APIReference/API_PutEvents.html): at most 10
entries per call and 256 KB per request. Sources starting with ``aws.`` are reserved for AWS
services; a custom application cannot publish them, so the adapter rejects them up front rather than
getting a per-entry ``NotAuthorizedForSourceException``.
"""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any, Sequence

MAX_ENTRIES = 10
MAX_REQUEST_BYTES = 256 * 1024


class EventBusError(RuntimeError):
    """Some entries were not accepted (``FailedEntryCount`` > 0)."""


class EventBridgeBus:
    def __init__(self, client: Any, bus_name: str = "default") -> None:
        self._events = client
        self.bus_name = bus_name

    def _entry(self, event: dict[str, Any]) -> dict[str, Any]:
        source = event["source"]
        if source.startswith("aws."):
            raise ValueError(f"source {source!r} is reserved for AWS services and cannot be put")
        entry: dict[str, Any] = {
            "Source": source,
            "DetailType": event["detail-type"],
            "Detail": json.dumps(event.get("detail", {}), separators=(",", ":"), default=str),
            "Resources": list(event.get("resources", [])),
            "EventBusName": self.bus_name,
        }
        time = event.get("time")
        if isinstance(time, str):
            try:
                entry["Time"] = _dt.datetime.fromisoformat(time.replace("Z", "+00:00"))
            except ValueError:
                pass
        return entry

    def put_events(self, events: Sequence[dict[str, Any]]) -> None:
        """Publish ``events`` in batches of ≤ 10 entries / ≤ 256 KB.

        Raises:
            ValueError: an ``aws.*`` source, or a single event over 256 KB.
            EventBusError: EventBridge rejected entries (error codes listed).
        """
        batch: list[dict[str, Any]] = []
        size = 0
        for event in events:
            entry = self._entry(event)
            entry_size = len(json.dumps(entry, default=str).encode())
            if entry_size > MAX_REQUEST_BYTES:
                raise ValueError(f"event of {entry_size} bytes exceeds the 256 KB PutEvents limit")
            if batch and (len(batch) == MAX_ENTRIES or size + entry_size > MAX_REQUEST_BYTES):
                self._send(batch)
                batch, size = [], 0
            batch.append(entry)
            size += entry_size
        if batch:
            self._send(batch)

    def _send(self, entries: list[dict[str, Any]]) -> None:
        response = self._events.put_events(Entries=entries)
        if response.get("FailedEntryCount", 0):
            errors = [f"{e.get('ErrorCode')}: {e.get('ErrorMessage')}" for e in response["Entries"] if "ErrorCode" in e]
            raise EventBusError(f"{response['FailedEntryCount']} of {len(entries)} events rejected: {errors}")
