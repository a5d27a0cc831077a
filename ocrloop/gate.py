"""Promotion gate: candidate vs champion on the same held-out sets.

Both models are evaluated by the training job on the same sets (``metrics.json``: ``champion`` and
``candidate``, each with ``validation`` = new-domain holdout and ``olddomain`` = regression set).
The gate passes when the candidate

* gains at least ``gate_min_new_gain`` points of line accuracy on the new-domain holdout and is
  strictly better there on line or character accuracy, and
* loses at most ``gate_max_old_drop`` points of line accuracy on the old-domain set.

Standard library only.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .config import LoopConfig


@dataclasses.dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: tuple[str, ...]
    new_gain_pts: float
    old_drop_pts: float

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def decide(metrics: dict[str, Any], config: LoopConfig) -> GateDecision:
    """Gate decision from a training job's ``metrics.json``.

    Raises:
        KeyError: a required metric is missing (the caller treats the job as failed).
    """
    champ, cand = metrics["champion"], metrics["candidate"]
    new_gain = 100.0 * (cand["validation"]["line_acc"] - champ["validation"]["line_acc"])
    new_char_gain = 100.0 * (cand["validation"]["char_acc"] - champ["validation"]["char_acc"])
    old_drop = 100.0 * (champ["olddomain"]["line_acc"] - cand["olddomain"]["line_acc"])
    reasons = []
    passed = True
    if new_gain < config.gate_min_new_gain:
        passed = False
        reasons.append(f"new-domain line accuracy gain {new_gain:+.2f} pts < required {config.gate_min_new_gain:+.2f}")
    if config.gate_require_improvement and new_gain <= 0 and new_char_gain <= 0:
        passed = False
        reasons.append(f"no improvement on the new-domain holdout (line {new_gain:+.2f}, char {new_char_gain:+.2f} pts)")
    if old_drop > config.gate_max_old_drop:
        passed = False
        reasons.append(f"old-domain line accuracy drop {old_drop:.2f} pts > allowed {config.gate_max_old_drop:.2f}")
    if passed:
        reasons.append(f"new-domain {new_gain:+.2f} pts line / {new_char_gain:+.2f} pts char; "
                       f"old-domain drop {old_drop:.2f} pts ≤ {config.gate_max_old_drop:.2f}")
    return GateDecision(passed, tuple(reasons), round(new_gain, 4), round(old_drop, 4))
