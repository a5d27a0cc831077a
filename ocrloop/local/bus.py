"""In-process event bus with EventBridge rule semantics.

Rules are the same patterns the CDK app deploys (``ocrloop.config.event_patterns``). Delivery is
asynchronous like EventBridge: ``put_events`` only enqueues; ``run_until_idle`` delivers, retrying a
failing target (EventBridge retry policy, ``max_attempts``) and then writing the event with the error
to a dead-letter folder, as an SQS DLQ would. Thread-safe: training and hosting adapters publish from
their own threads.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

from ..events import matches

log = logging.getLogger("ocrloop.bus")

Target = Callable[[dict[str, Any]], Any]


class LocalBus:
    """EventBus port.

    Args:
        dlq_dir: folder receiving undeliverable events (one JSON file each).
        max_attempts: deliveries per event and rule before it goes to the DLQ (EventBridge
            default retry policy is 185 attempts over 24 h; locally 3 immediate attempts).
    """

    def __init__(self, dlq_dir: Path, max_attempts: int = 3):
        self.rules: list[tuple[str, dict[str, Any], Target]] = []
        self._queue: "queue.Queue[dict[str, Any]]" = queue.Queue()
        self._busy = 0
        self._lock = threading.Lock()
        self.dlq_dir = Path(dlq_dir)
        self.max_attempts = max_attempts
        self.delivered: list[tuple[str, str, Any]] = []  # (rule, detail-type, result)
        self.history: list[dict[str, Any]] = []

    def add_rule(self, name: str, pattern: dict[str, Any], target: Target) -> None:
        self.rules.append((name, pattern, target))

    def put_events(self, events: Sequence[dict[str, Any]]) -> None:
        for event in events:
            self._queue.put(json.loads(json.dumps(event)))  # deliver a copy, as JSON over the wire

    def hold(self) -> None:
        """Mark background work in flight (e.g. a training process) so ``run_until_idle`` waits."""
        with self._lock:
            self._busy += 1

    def release(self) -> None:
        with self._lock:
            self._busy -= 1

    def run_until_idle(self, timeout_s: float = 3600.0, poll_s: float = 0.2) -> int:
        """Deliver events until the queue is empty and no background work is held.

        Returns:
            number of events delivered.

        Raises:
            TimeoutError: still busy after ``timeout_s`` seconds.
        """
        deadline = time.monotonic() + timeout_s
        count = 0
        while True:
            try:
                event = self._queue.get(timeout=poll_s)
            except queue.Empty:
                with self._lock:
                    idle = self._busy == 0
                if idle and self._queue.empty():
                    return count
                if time.monotonic() > deadline:
                    raise TimeoutError(f"bus still busy after {timeout_s:.0f} s")
                continue
            count += 1
            self.history.append(event)
            self._dispatch(event)

    def _dispatch(self, event: dict[str, Any]) -> None:
        for name, pattern, target in self.rules:
            if not matches(pattern, event):
                continue
            for attempt in range(1, self.max_attempts + 1):
                try:
                    result = target(event)
                    self.delivered.append((name, event["detail-type"], result))
                    log.info("%s <- %s: %s", name, event["detail-type"], _short(result))
                    break
                except Exception as exc:  # delivered to the DLQ after the last attempt
                    log.warning("%s failed on attempt %d: %s", name, attempt, exc)
                    if attempt == self.max_attempts:
                        self.dlq_dir.mkdir(parents=True, exist_ok=True)
                        (self.dlq_dir / f"{event['id']}-{name}.json").write_text(json.dumps(
                            {"rule": name, "event": event, "error": repr(exc),
                             "traceback": traceback.format_exc()}, indent=2, ensure_ascii=False))
                        self.delivered.append((name, event["detail-type"], {"error": repr(exc)}))

    def dead_letters(self) -> list[dict[str, Any]]:
        if not self.dlq_dir.is_dir():
            return []
        return [json.loads(p.read_text()) for p in sorted(self.dlq_dir.glob("*.json"))]


def _short(result: Any) -> str:
    text = json.dumps(result, default=str, ensure_ascii=False)
    return text if len(text) < 300 else text[:300] + "…"
