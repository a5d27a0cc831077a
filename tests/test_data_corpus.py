"""Corpus sheets: stable ids, PNG + JSON sidecar with provenance, cached, legible crops."""

from __future__ import annotations

import hashlib
import json
import re
import time

import numpy as np
import pytest

from ocrloop.data.corpus import build_corpus, corpus_stats, drawings_dir, line_crops, source_id
from ocrloop.data.fetch import fetch_sources


@pytest.fixture(scope="module")
def sheets():
    # the first two sheets of the first source; rendered once per cache, then read back
    return build_corpus(max_drawings=2)


def test_ids_files_and_provenance(sheets):
    assert len(sheets) == 2
    first = fetch_sources()[0]
    sid = hashlib.sha256(f"{first.package}/{first.member}".encode()).hexdigest()[:12]
    assert source_id(first) == sid
    assert [s.drawing_id for s in sheets] == [f"{sid}-p0", f"{sid}-p1"]
    for s in sheets:
        assert s.image_path == drawings_dir() / f"{s.drawing_id}.png"
        side = json.loads(s.json_path.read_text(encoding="utf-8"))
        assert side["drawing_id"] == s.drawing_id and side["source_id"] == sid
        prov = side["provenance"]
        assert prov["package"] == first.package and prov["member"] == first.member
        assert prov["sha256"] == first.sha256 and prov["license"]
        img = s.load_image()
        assert img.shape == (s.height, s.width, 3) and img.dtype == np.uint8
        assert s.texts and len(s.text_keys) == len(s.texts)
        for t in s.texts:
            assert (t.polygon >= -1).all()
            assert (t.polygon[:, 0] <= s.width + 1).all() and (t.polygon[:, 1] <= s.height + 1).all()
            assert t.cap_height_px >= 10 and t.text == " ".join(t.text.split())


def test_second_build_reads_the_cache(sheets):
    t0 = time.perf_counter()
    again = build_corpus(max_drawings=2)
    assert time.perf_counter() - t0 < 5.0
    assert [s.drawing_id for s in again] == [s.drawing_id for s in sheets]
    assert [[t.text for t in s.texts] for s in again] == [[t.text for t in s.texts] for s in sheets]


def test_crops_are_upright_lines(sheets):
    crops = line_crops(sheets)
    assert crops
    for _, _item, crop in crops:
        assert crop.dtype == np.uint8 and crop.shape[2] == 3
        # reading-order crops: as tall as the text, at least as wide as one character
        assert crop.shape[0] >= 10 and crop.shape[1] >= 0.15 * crop.shape[0]
    stats = corpus_stats(sheets)
    assert stats["sheets"] == 2 and stats["unique_lines"] <= stats["lines"]
    assert all(not re.fullmatch(r"[-_=.]+", t.text) for s in sheets for t in s.texts)
