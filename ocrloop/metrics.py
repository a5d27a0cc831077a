"""Recognition metrics, as PaddleOCR's ``RecMetric`` defines them.

* line accuracy: share of lines whose prediction equals the label exactly (after whitespace
  normalisation: leading/trailing removed, runs collapsed to one space);
* character accuracy: ``1 - mean normalised edit distance`` (PaddleOCR ``norm_edit_dis``), with
  Levenshtein distance from ``rapidfuzz``.

Values are fractions in [0, 1]; reports print them as percentages.
"""

from __future__ import annotations

from typing import Sequence


def normalize(text: str) -> str:
    return " ".join(text.split())


def line_accuracy(preds: Sequence[str], labels: Sequence[str]) -> float:
    """Exact-match share; raises ``ValueError`` on length mismatch; 0.0 for no lines."""
    if len(preds) != len(labels):
        raise ValueError(f"{len(preds)} predictions for {len(labels)} labels")
    if not labels:
        return 0.0
    return sum(normalize(p) == normalize(t) for p, t in zip(preds, labels)) / len(labels)


def char_accuracy(preds: Sequence[str], labels: Sequence[str]) -> float:
    """``1 - mean(Levenshtein.normalized_distance)``; raises ``ValueError`` on length mismatch."""
    from rapidfuzz.distance import Levenshtein

    if len(preds) != len(labels):
        raise ValueError(f"{len(preds)} predictions for {len(labels)} labels")
    if not labels:
        return 0.0
    dist = sum(Levenshtein.normalized_distance(normalize(p), normalize(t)) for p, t in zip(preds, labels))
    return 1.0 - dist / len(labels)


def summarize(preds: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """``{"line_acc", "char_acc", "n"}`` for one evaluation set."""
    return {"line_acc": line_accuracy(preds, labels), "char_acc": char_accuracy(preds, labels), "n": len(labels)}
