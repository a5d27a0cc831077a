"""Promotion gate: candidate vs champion on the same held-out sets.

Both models are evaluated by the training job on the same sets (``metrics.json``: ``champion`` and
``candidate``, each with ``validation`` = new-domain holdout and ``olddomain`` = regression set).
The gate passes when the candidate

* gains at least ``gate_min_new_gain`` points of line accuracy on the new-domain holdout and is
  strictly better there on line or character accuracy, and
* loses at most ``gate_max_old_drop`` points of line accuracy on the old-domain set, and
* (when the sets carry per-character recall, ``char_recall``) loses at most
  ``gate_max_class_recall_drop`` points of recall on any *character class* with at least
  ``gate_min_class_support`` occurrences in the set: every single character (a CTC class) and the
  script groups of ``char_group`` (digit, latin, cjk, symbol, other). Each such regression is
  reported by name, e.g. ``olddomain: '技' recall 100.0% → 80.0% (-20.0 pts, n=25)``, and
* (when the job fine-tuned detection and promoted it into the candidate — the job keeps the
  champion's det when its own check fails, ``det.promoted`` False — and ``candidate.det`` and
  ``champion.det`` hold
  ``ocrloop.model.det_eval`` results on the held-out drawings) loses at most
  ``gate_max_det_hmean_drop`` points of detection hmean and at most ``gate_max_det_read_drop``
  points of the share of held-out lines the engine reads exactly with the candidate det instead of
  the champion's (same rec model; tighter boxes can raise hmean yet cut glyphs off the crops).

Standard library only.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from typing import Any

from .config import LoopConfig

CLASS_SETS = ("olddomain", "validation")
"""Evaluation sets whose per-class recall the gate checks."""
MAX_REPORTED = 3
"""Regressions named in ``reasons``/``regressions`` (largest first), so the decision stays short
enough for registry metadata; ``class_regressions`` gives the full list."""


@dataclasses.dataclass(frozen=True)
class GateDecision:
    """``passed``; human-readable ``reasons``; the new-domain line-accuracy gain and old-domain
    drop in points; ``det_hmean_drop_pts``: champion − candidate detection hmean in points (None
    when detection was not trained); ``det_read_drop_pts``: the same for the share of held-out lines
    read exactly with each det; ``regressions``: ``{"set", "class", "champion", "candidate", "drop_pts", "n"}``
    for the (up to ``MAX_REPORTED``) character classes that regressed most beyond the threshold
    (recalls in [0, 1])."""

    passed: bool
    reasons: tuple[str, ...]
    new_gain_pts: float
    old_drop_pts: float
    regressions: tuple[dict[str, Any], ...] = ()
    det_hmean_drop_pts: float | None = None
    det_read_drop_pts: float | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def char_group(ch: str) -> str:
    """Script group of one character: ``digit`` (Unicode Nd), ``latin`` (letters named LATIN),
    ``cjk`` (CJK ideographs and CJK punctuation/fullwidth forms), ``symbol`` (Unicode S* or P*
    outside CJK) or ``other``."""
    cat = unicodedata.category(ch)
    if cat == "Nd":
        return "digit"
    name = unicodedata.name(ch, "")
    if "CJK" in name or "IDEOGRAPH" in name or "FULLWIDTH" in name or "\u3000" <= ch <= "\u303f":
        return "cjk"
    if cat.startswith("L") and name.startswith("LATIN"):
        return "latin"
    if cat[0] in "SP":
        return "symbol"
    return "other"


def class_recalls(char_recall: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per-class recall from a ``char_recall`` mapping (``{char: {"recall", "n"}}``): every
    character as its own class, plus ``group:<name>`` classes pooled (micro-averaged) by
    ``char_group``."""
    out = {ch: {"recall": float(r["recall"]), "n": int(r["n"])} for ch, r in char_recall.items()}
    pooled: dict[str, list[float]] = {}
    for ch, r in char_recall.items():
        hits_n = pooled.setdefault(f"group:{char_group(ch)}", [0.0, 0.0])
        hits_n[0] += float(r["recall"]) * int(r["n"])
        hits_n[1] += int(r["n"])
    for name, (hits, n) in pooled.items():
        out[name] = {"recall": hits / n if n else 0.0, "n": int(n)}
    return out


def class_regressions(champion: dict[str, Any], candidate: dict[str, Any], config: LoopConfig) -> list[dict[str, Any]]:
    """Character classes of the ``CLASS_SETS`` whose recall drops by more than
    ``config.gate_max_class_recall_drop`` points with champion support ≥
    ``config.gate_min_class_support``, largest drop first. Sets without ``char_recall`` are
    skipped; a class the candidate's set lacks counts as recall 0."""
    found = []
    for split in CLASS_SETS:
        champ_set, cand_set = champion.get(split) or {}, candidate.get(split) or {}
        if "char_recall" not in champ_set or "char_recall" not in cand_set:
            continue
        before, after = class_recalls(champ_set["char_recall"]), class_recalls(cand_set["char_recall"])
        for cls, r in before.items():
            if r["n"] < config.gate_min_class_support:
                continue
            new = after.get(cls, {"recall": 0.0})["recall"]
            drop = points(r["recall"], new)
            if drop > config.gate_max_class_recall_drop:
                found.append({"set": split, "class": cls, "champion": r["recall"], "candidate": new,
                              "drop_pts": round(drop, 4), "n": r["n"]})
    return sorted(found, key=lambda g: -g["drop_pts"])


def points(a: float, b: float) -> float:
    """``a − b`` of two rates in [0, 1] as percentage points, rounded to 1e-6 so a threshold
    compares the way it reads (1.0 − 0.99 is 1.0000000000000009 points in floating point)."""
    return round(100.0 * (a - b), 6)


def decide(metrics: dict[str, Any], config: LoopConfig) -> GateDecision:
    """Gate decision from a training job's ``metrics.json``.

    Raises:
        KeyError: a required metric is missing (the caller treats the job as failed).
    """
    champ, cand = metrics["champion"], metrics["candidate"]
    new_gain = points(cand["validation"]["line_acc"], champ["validation"]["line_acc"])
    new_char_gain = points(cand["validation"]["char_acc"], champ["validation"]["char_acc"])
    old_drop = points(champ["olddomain"]["line_acc"], cand["olddomain"]["line_acc"])
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
    regressions = class_regressions(champ, cand, config) if config.gate_check_classes else []
    if regressions:
        passed = False
    for g in regressions[:MAX_REPORTED]:
        label = g["class"] if g["class"].startswith("group:") else repr(g["class"])
        reasons.append(
            f"{g['set']}: {label} recall {100 * g['champion']:.1f}% → {100 * g['candidate']:.1f}% "
            f"(-{g['drop_pts']:.1f} pts, n={g['n']}) > allowed {config.gate_max_class_recall_drop:.1f}"
        )
    if len(regressions) > MAX_REPORTED:
        reasons.append(f"{len(regressions) - MAX_REPORTED} more character classes regressed "
                       f"(ocrloop.gate.class_regressions lists them all)")
    det_info = metrics.get("det") or {}
    if det_info.get("trained") and det_info.get("promoted") is False:
        # the job kept the champion's det: nothing of the fine-tuned det ships, nothing to gate
        det_drop = read_drop = None
        reasons.append("det fine-tuned but not promoted (the candidate serves the champion's det): "
                       + "; ".join(det_info.get("not_promoted_reasons") or []))
    else:
        det_drop = det_hmean_drop(champ, cand)
        read_drop = det_read_drop(champ, cand)
    if det_drop is not None and det_drop > config.gate_max_det_hmean_drop:
        passed = False
        reasons.append(f"detection hmean {100 * champ['det']['hmean']:.2f}% → {100 * cand['det']['hmean']:.2f}% "
                       f"(-{det_drop:.2f} pts) > allowed {config.gate_max_det_hmean_drop:.2f}")
    if read_drop is not None and read_drop > config.gate_max_det_read_drop:
        passed = False
        reasons.append(f"lines read with the candidate det {100 * champ['det']['read_line_acc']:.2f}% → "
                       f"{100 * cand['det']['read_line_acc']:.2f}% (-{read_drop:.2f} pts) > allowed "
                       f"{config.gate_max_det_read_drop:.2f}")
    if passed:
        reasons.append(f"new-domain {new_gain:+.2f} pts line / {new_char_gain:+.2f} pts char; "
                       f"old-domain drop {old_drop:.2f} pts ≤ {config.gate_max_old_drop:.2f}")
        if det_drop is not None:
            reasons.append(f"detection hmean {100 * champ['det']['hmean']:.2f}% → {100 * cand['det']['hmean']:.2f}% "
                           f"(drop {det_drop:+.2f} pts ≤ {config.gate_max_det_hmean_drop:.2f})")
        if read_drop is not None:
            reasons.append(f"lines read with the candidate det {100 * champ['det']['read_line_acc']:.2f}% → "
                           f"{100 * cand['det']['read_line_acc']:.2f}% (drop {read_drop:+.2f} pts ≤ "
                           f"{config.gate_max_det_read_drop:.2f})")
    return GateDecision(passed, tuple(reasons), round(new_gain, 4), round(old_drop, 4),
                        tuple(regressions[:MAX_REPORTED]), None if det_drop is None else round(det_drop, 4),
                        None if read_drop is None else round(read_drop, 4))


def det_read_drop(champion: dict[str, Any], candidate: dict[str, Any]) -> float | None:
    """Champion − candidate ``det.read_line_acc`` in points when both carry it, else None."""
    a, b = (champion.get("det") or {}), (candidate.get("det") or {})
    if not isinstance(a, dict) or not isinstance(b, dict) or "read_line_acc" not in a or "read_line_acc" not in b:
        return None
    return points(float(a["read_line_acc"]), float(b["read_line_acc"]))


def det_hmean_drop(champion: dict[str, Any], candidate: dict[str, Any]) -> float | None:
    """Champion − candidate detection hmean in points when both carry ``det`` results (the job
    fine-tuned detection), else None.

    Raises:
        KeyError: a ``det`` entry without ``hmean``.
    """
    if not isinstance(champion.get("det"), dict) or not isinstance(candidate.get("det"), dict):
        return None
    return points(float(champion["det"]["hmean"]), float(candidate["det"]["hmean"]))
