from collections import Counter

import pytest
from hypothesis import given, settings, strategies as st

from ocrloop import replay


def samples(prefix, texts):
    return [{"id": f"{prefix}{i}", "image": f"{prefix}{i}.png", "text": t} for i, t in enumerate(texts)]


texts = st.lists(st.text(alphabet="abcdefgh⌀±°中文", min_size=1, max_size=8), max_size=60)


@settings(max_examples=150, deadline=None)
@given(texts, texts, texts, st.integers(1, 10), st.integers(0, 10), st.floats(0, 1), st.integers(0, 2**16))
def test_mix_properties(new_t, old_t, base_t, new_ratio, replay_ratio, share, seed):
    new, old, base = samples("n", new_t), samples("o", old_t), samples("b", base_t)
    holdout = {s["id"] for s in (new[:2] + old[:2] + base[:2])}
    out, report = replay.mix(new, old, base, new_ratio=new_ratio, replay_ratio=replay_ratio, base_share=share,
                             seed=seed, exclude_ids=holdout)
    # never a holdout sample
    assert not ({s["id"] for s in out} & holdout)
    n_new = sum(s["origin"] == "new" for s in out)
    n_rep = len(out) - n_new
    assert n_new == len([s for s in new if s["id"] not in holdout])
    # ratio exact to rounding whenever a replay source exists
    target = replay.replay_count(n_new, new_ratio, replay_ratio)
    assert abs(target - n_new * replay_ratio / new_ratio) <= 0.5
    has_source = any(s["id"] not in holdout for s in old + base)
    assert n_rep == (target if has_source else 0)
    # deterministic under the seed
    again, _ = replay.mix(new, old, base, new_ratio=new_ratio, replay_ratio=replay_ratio, base_share=share,
                          seed=seed, exclude_ids=holdout)
    assert again == out
    assert report.n_replay_versions + report.n_replay_base == n_rep


def test_seven_to_three():
    new = samples("n", ["x"] * 70)
    out, report = replay.mix(new, samples("o", ["y"] * 100), samples("b", ["z"] * 100), seed=1)
    c = Counter(s["origin"] for s in out)
    assert c["new"] == 70 and c["replay"] + c["base"] == 30
    assert c["replay"] == 15 and c["base"] == 15


def test_character_balanced_draw_prefers_rare_chars():
    # 95 lines of common text, 5 lines holding the only ⌀: a balanced draw of 20 takes all five.
    pool = samples("p", ["aaaa"] * 95 + ["⌀12"] * 5)
    import random
    picked, repeats = replay.balanced_draw(pool, 20, random.Random(0), candidates_per_pick=200)
    assert sum("⌀" in s["text"] for s in picked) == 5
    assert repeats == 0


def test_repeats_when_pool_is_small():
    import random
    picked, repeats = replay.balanced_draw(samples("p", ["a", "b"]), 5, random.Random(0))
    assert len(picked) == 5 and repeats == 3


def test_bad_ratios():
    with pytest.raises(ValueError):
        replay.replay_count(10, 0, 3)
    with pytest.raises(ValueError):
        replay.mix([], [], [], base_share=1.5)
