"""Training-manifest mixing: new labels : replayed old data = 7 : 3 by sample count.

Replay is what keeps a fine-tuned recogniser from forgetting (Rolnick et al., "Experience Replay for
Continual Learning", NeurIPS 2019; DESIGN.md measured PP-OCRv5 forgetting Chinese within 40 steps
without it). Replay samples are drawn *character-balanced*: each pick prefers the candidate whose
characters have been drawn least so far, so rare symbols keep appearing.

Standard library only (runs inside the ``on_labeling_completed`` Lambda).
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from typing import Any, Iterable, Sequence

Sample = dict[str, Any]
"""``{"id": str, "image": str, "text": str, "origin": "new"|"replay"|"base", ...}``."""


@dataclasses.dataclass(frozen=True)
class MixReport:
    n_new: int
    n_replay_target: int
    n_replay_versions: int
    n_replay_base: int
    replay_with_repeats: int

    def to_json(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def replay_count(n_new: int, new_ratio: int, replay_ratio: int) -> int:
    """Replay samples for ``n_new`` new ones: ``round(n_new × replay / new)`` (half away from zero).

    Raises:
        ValueError: ``new_ratio`` ≤ 0 or ``replay_ratio`` < 0.
    """
    if new_ratio <= 0 or replay_ratio < 0:
        raise ValueError(f"invalid ratio {new_ratio}:{replay_ratio}")
    return (2 * n_new * replay_ratio + new_ratio) // (2 * new_ratio)


def balanced_draw(pool: Sequence[Sample], n: int, rng: random.Random, seen: Counter | None = None,
                  candidates_per_pick: int = 32) -> tuple[list[Sample], int]:
    """Draw ``n`` samples from ``pool``, character-balanced.

    Each pick looks at up to ``candidates_per_pick`` random unused samples and takes the one whose
    characters have the lowest mean count among the picks so far (ties: first drawn). When the pool
    is exhausted it is reused (sampling with repeats); the number of such repeats is returned.

    Returns:
        (picked samples, repeats).
    """
    picked: list[Sample] = []
    counts = seen if seen is not None else Counter()
    if n <= 0 or not pool:
        return picked, 0
    while len(picked) < n:
        unused = list(range(len(pool)))
        rng.shuffle(unused)
        while unused and len(picked) < n:
            window = unused[:candidates_per_pick]
            best_pos, best_score = 0, None
            for pos, idx in enumerate(window):
                chars = set(pool[idx]["text"]) or {""}
                score = sum(counts[c] for c in chars) / len(chars)
                if best_score is None or score < best_score:
                    best_pos, best_score = pos, score
            idx = unused.pop(best_pos)
            sample = pool[idx]
            counts.update(set(sample["text"]))
            picked.append(sample)
    repeats = max(0, len(picked) - len(pool))
    return picked, repeats


def mix(new: Sequence[Sample], earlier: Sequence[Sample], base: Sequence[Sample], *, new_ratio: int = 7,
        replay_ratio: int = 3, base_share: float = 0.5, seed: int = 0,
        exclude_ids: Iterable[str] = ()) -> tuple[list[Sample], MixReport]:
    """Build a training manifest from new samples plus replay.

    Args:
        new: this dataset version's training samples (all used).
        earlier: training samples of earlier dataset versions (replay source 1).
        base: the base general-text pool (replay source 2).
        new_ratio / replay_ratio: the mix by sample count (default 7 : 3).
        base_share: share of the replay drawn from ``base`` when ``earlier`` is non-empty
            (all of it comes from ``base`` otherwise, and vice versa).
        seed: the result is a pure function of its inputs and this seed.
        exclude_ids: sample ids that must never be trained on (holdout sets); excluded from every
            source, including ``new``.

    Returns:
        (shuffled manifest, report). Replay samples get ``origin`` "replay" (from earlier versions) or
        "base"; new samples "new".

    Raises:
        ValueError: invalid ratio or ``base_share`` outside [0, 1].
    """
    if not 0.0 <= base_share <= 1.0:
        raise ValueError(f"base_share {base_share} outside [0, 1]")
    excluded = set(exclude_ids)
    new_ok = [dict(s, origin="new") for s in new if s["id"] not in excluded]
    earlier_ok = [s for s in earlier if s["id"] not in excluded]
    base_ok = [s for s in base if s["id"] not in excluded]
    n_replay = replay_count(len(new_ok), new_ratio, replay_ratio)
    if not earlier_ok:
        n_base = n_replay if base_ok else 0
    elif not base_ok:
        n_base = 0
    else:
        n_base = int(round(n_replay * base_share))
    n_earlier = n_replay - n_base if earlier_ok else 0
    rng = random.Random(seed)
    counts: Counter = Counter()
    for s in new_ok:
        counts.update(set(s["text"]))
    picked_earlier, rep1 = balanced_draw(earlier_ok, n_earlier, rng, counts)
    picked_base, rep2 = balanced_draw(base_ok, n_base, rng, counts)
    manifest = (new_ok + [dict(s, origin="replay") for s in picked_earlier]
                + [dict(s, origin="base") for s in picked_base])
    rng.shuffle(manifest)
    report = MixReport(len(new_ok), n_replay, len(picked_earlier), len(picked_base), rep1 + rep2)
    return manifest, report
