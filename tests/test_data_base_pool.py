"""Base (replay) pool: real prose, Latin and Chinese, deterministic; readability filter."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest

from ocrloop.data.base_pool import (
    MAX_CHARS,
    MIN_CHARS,
    default_recognizer,
    filter_readable,
    render_base_lines,
)

CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def lines():
    return render_base_lines(40, seed=7)


def test_deterministic_under_seed(lines):
    again = render_base_lines(40, seed=7)
    assert [ln.text for ln in again] == [ln.text for ln in lines]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(again, lines))
    other = render_base_lines(40, seed=8)
    assert [ln.text for ln in other] != [ln.text for ln in lines]


def test_mixes_latin_and_chinese(lines):
    langs = {ln.lang for ln in lines}
    assert langs == {"latin", "zh"}
    for ln in lines:
        assert MIN_CHARS <= len(ln.text) <= MAX_CHARS
        assert ln.image.dtype == np.uint8 and ln.image.ndim == 3 and ln.image.shape[2] == 3
        assert ln.image.shape[0] >= 18 and ln.image.shape[1] > ln.image.shape[0]
        if ln.lang == "zh":
            assert len(CJK.findall(ln.text)) >= 2 and ln.font.startswith("wqy")
        else:
            assert not CJK.search(ln.text)
    fonts = {ln.font for ln in lines}
    assert {"DejaVuSans.ttf", "DejaVuSerif.ttf"} & fonts and "wqy-microhei.ttc" in fonts


def test_text_comes_from_the_named_source(lines):
    for ln in lines:
        path = Path(ln.source)
        raw = gzip.decompress(path.read_bytes()).decode("utf-8", "ignore") if path.suffix == ".gz" else path.read_text(
            encoding="utf-8", errors="ignore"
        )
        flat = " ".join(raw.split())
        if ln.lang == "latin":
            assert all(word in flat for word in ln.text.split()), (ln.text, ln.source)
        else:
            # every run of Chinese characters of the line occurs in the file once roff font changes
            # (``\fB``, ``\fP``: markup inside a run, e.g. manpath.1 ``中的\fB搜索路径\fP一节以``) are removed
            text = re.sub(r"\\f(\(..|\[[^\]]*\]|.)", "", raw) if path.suffix == ".gz" else raw
            assert all(run in text for run in re.findall(r"[\u4e00-\u9fff]+", ln.text)), (ln.text, ln.source)


def test_filter_keeps_only_exact_reads(lines):
    truth = {id(ln.image): ln.text for ln in lines}

    def half_wrong(images):  # reads every other crop with a typo
        return [truth[id(im)] if i % 2 == 0 else truth[id(im)] + "x" for i, im in enumerate(images)]

    kept, dropped = filter_readable(lines, half_wrong, batch_size=7)
    assert len(kept) + len(dropped) == len(lines)
    assert all(pred == line.text + "x" for line, pred in dropped)
    with pytest.raises(ValueError):
        filter_readable(lines[:3], lambda ims: ["a"])


def test_filter_with_the_v0_model(lines):
    recognize = default_recognizer()
    kept, dropped = filter_readable(lines[:16], recognize)
    assert len(kept) >= 8  # the base model reads most clean general text
    assert [r.strip() for r in recognize([ln.image for ln in kept])] == [ln.text for ln in kept]
    assert all(pred.strip() != line.text for line, pred in dropped)
