"""FaissIndex: the real faiss HNSW + SQLite store on disk (no mocks)."""

from __future__ import annotations

import json
import multiprocessing
import threading

import numpy as np
import pytest

from ocrloop.index.faiss_index import EXACT_FILTER_MAX, FaissIndex, IndexVersion, flatten_text

D = 32


def unit(rng, n, d=D):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.fixture
def index(tmp_path):
    ix = FaissIndex(tmp_path / "idx", D, embedder_name="test-emb")
    yield ix
    ix.close()


def test_upsert_search_returns_nearest_with_metadata(index, rng):
    x = unit(rng, 300)
    ids = [f"dwg-{i}" for i in range(300)]
    index.upsert(ids, x, [{"title": f"Part {i}", "n": i} for i in range(300)])
    assert index.count() == 300
    for i in (0, 17, 299):
        hits = index.search(x[i], k=5)
        assert hits[0]["id"] == ids[i]
        assert hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
        assert hits[0]["metadata"] == {"title": f"Part {i}", "n": i}
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
        assert len(hits) == 5
    # HNSW agrees with brute force on the top-10 for random queries.
    q = unit(rng, 20)
    exact = np.argsort(-(q @ x.T), axis=1)[:, :10]
    recall = np.mean([len({ids[j] for j in exact[r]} & {h["id"] for h in index.search(q[r], 10)}) / 10 for r in range(20)])
    assert recall >= 0.95


def test_query_set_scores_each_id_by_its_best_row(index, rng):
    x = unit(rng, 50)
    index.upsert([f"d{i}" for i in range(50)], x, [{} for _ in range(50)])
    q = np.stack([unit(rng, 1)[0], x[7], unit(rng, 1)[0]])  # only the middle row matches d7
    hits = index.search(q, k=3)
    assert hits[0]["id"] == "d7" and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert len({h["id"] for h in hits}) == 3  # an id appears once, with its best score


def test_upsert_replaces_and_delete_tombstones_then_compact(index, rng):
    x = unit(rng, 100)
    ids = [f"d{i}" for i in range(100)]
    index.upsert(ids, x, [{"v": 1} for _ in ids])
    new = unit(rng, 1)[0]
    index.upsert(["d5"], new[None, :], [{"v": 2}])
    assert index.count() == 100
    live = index.live()
    assert live.tombstones() == 1
    assert index.search(new, 1)[0] == {"id": "d5", "score": pytest.approx(1.0, abs=1e-5), "metadata": {"v": 2}}
    assert all(h["id"] != "d5" for h in index.search(x[5], 3))  # the old vector is gone from results

    assert index.delete(["d1", "d2", "nope"]) == 2
    assert index.count() == 98 and live.tombstones() == 3
    assert index.get("d1") is None and index.get("d3") == {"v": 1}
    assert index.search(x[1], 1)[0]["id"] != "d1"

    assert index.compact() == 3
    assert live.tombstones() == 0 and index.count() == 98
    assert index.search(x[50], 1)[0]["id"] == "d50"
    assert index.search(new, 1)[0]["id"] == "d5"
    np.testing.assert_allclose(index.vector("d50"), x[50], atol=1e-6)


def test_tombstones_near_the_query_do_not_starve_top_k(index, rng):
    # 60 near-duplicates of the query are deleted; the 5 best live ones must still come back.
    base = unit(rng, 1)[0]
    near = base + 0.05 * rng.normal(size=(60, D)).astype(np.float32)
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    far = unit(rng, 200)
    index.upsert([f"near{i}" for i in range(60)], near, [{} for _ in range(60)])
    index.upsert([f"far{i}" for i in range(200)], far, [{} for _ in range(200)])
    index.delete([f"near{i}" for i in range(60)])
    hits = index.search(base, k=5)
    assert len(hits) == 5
    expected = [f"far{i}" for i in np.argsort(-(far @ base))[:5]]
    assert [h["id"] for h in hits] == expected


def test_filters_substring_case_insensitive_on_text_fields(index, rng):
    x = unit(rng, 400)
    meta = [{"text": ["BEARING SUPPORT", f"D-{10000 + i}", "Ø25 H7"] if i % 40 == 0 else ["COVER", f"D-{10000 + i}"],
             "material": "S235JR" if i % 2 else "AlMg3", "rev": i % 3}
            for i in range(400)]
    index.upsert([f"d{i}" for i in range(400)], x, meta)
    hits = index.search(x[3], k=20, filters={"text": "bearing"})
    assert sorted(h["id"] for h in hits) == sorted(f"d{i}" for i in range(0, 400, 40))
    hits = index.search(x[80], k=3, filters={"text": "ø25 h7", "material": "almg"})
    assert hits[0]["id"] == "d80" and all(int(h["id"][1:]) % 40 == 0 for h in hits)
    assert index.search(x[0], 5, filters={"material": "nothing"}) == []
    assert index.search(x[0], 5, filters={"no_such_field": ""}) == []
    assert [h["id"] for h in index.search(x[5], 1, filters={"rev": "2"})] == ["d5"]
    # A broad filter (over EXACT_FILTER_MAX matches would take the HNSW over-fetch path; here half
    # the index matches) keeps exact top-k order among matching ids.
    hits = index.search(x[9], k=4, filters={"material": "s235"})
    odd = np.array([i for i in range(400) if i % 2])
    assert [h["id"] for h in hits] == [f"d{i}" for i in odd[np.argsort(-(x[odd] @ x[9]))[:4]]]


def test_filtered_search_paths(tmp_path, rng, monkeypatch):
    """Broad filter: one over-fetch round, no enumeration of matches. Otherwise filter_plan picks a
    deeper walk (bounded by DEEP_FETCH_MAX, then the exact path) or the enumeration of the matches:
    scored exactly when at most EXACT_FILTER_MAX, else a walk sized by that bound. Every path
    returns the exact filtered top-k here."""
    import ocrloop.index.faiss_index as fi

    monkeypatch.setattr(fi, "EXACT_FILTER_MAX", 10)
    rounds, lookups = [], []
    overfetch, match = IndexVersion._overfetch, IndexVersion._match_labels
    monkeypatch.setattr(IndexVersion, "_overfetch", lambda self, *a, **kw: rounds.append(kw["factor"]) or overfetch(self, *a, **kw))
    monkeypatch.setattr(IndexVersion, "_match_labels", lambda self, *a, **kw: lookups.append(a[1]) or match(self, *a, **kw))
    ix = FaissIndex(tmp_path / "i", D)
    x = unit(rng, 300)
    ix.upsert([f"d{i}" for i in range(300)], x,
              [{"group": ("half" if i % 2 else "") + (" tenth" if i % 10 == 0 else "") + (" few" if i % 50 == 0 else "")}
               for i in range(300)])

    def exact(members, q, k):
        members = np.asarray(members)
        return [f"d{i}" for i in members[np.argsort(-(x[members] @ q))[:k]]]

    def search(q, k, group):
        rounds.clear()
        lookups.clear()
        return [h["id"] for h in ix.search(q, k=k, filters={"group": group})]

    assert search(x[21], 5, "half") == exact(range(1, 300, 2), x[21], 5)
    assert rounds == [fi.OVERFETCH] and lookups == []
    # Chosen by filter_plan from what the first round saw: exact either way.
    assert search(x[50], 3, "few") == exact(range(0, 300, 50), x[50], 3)
    assert rounds[0] == fi.OVERFETCH and len(rounds) <= 2
    # Enumerated: 6 matches ≤ EXACT_FILTER_MAX are scored exactly.
    monkeypatch.setattr(fi, "filter_plan", lambda *a: ("enumerate", 0.0))
    assert search(x[100], 10, "few") == exact(range(0, 300, 50), x[100], 10)
    assert rounds == [fi.OVERFETCH] and lookups == [10]
    # Enumerated, but 30 matches > EXACT_FILTER_MAX: a walk of 2k × live / EXACT_FILTER_MAX.
    assert search(x[20], 5, "tenth") == exact(range(0, 300, 10), x[20], 5)
    assert rounds == [fi.OVERFETCH, 2.0 * 300 / 10] and lookups == [10]
    # A walk that meets k matches.
    monkeypatch.setattr(fi, "filter_plan", lambda *a: ("walk", 20.0))
    assert search(x[30], 5, "tenth") == exact(range(0, 300, 10), x[30], 5)
    assert rounds == [fi.OVERFETCH, 20.0] and lookups == []
    # A walk that does not meet k matches within DEEP_FETCH_MAX candidates (only 6 drawings match)
    # falls back to the exact path instead of fetching the whole graph.
    monkeypatch.setattr(fi, "DEEP_FETCH_MAX", 100)
    monkeypatch.setattr(fi, "filter_plan", lambda *a: ("walk", 2.0))
    hits = search(x[100], 10, "few")
    assert hits == exact(range(0, 300, 50), x[100], 10) and len(hits) == 6
    assert rounds == [fi.OVERFETCH, 2.0] and lookups == [10]
    assert EXACT_FILTER_MAX == 16384  # the module default is untouched outside this test


@pytest.mark.parametrize("chunk", [4096, 7])
def test_exact_path_scores_query_sets_like_brute_force_and_keeps_label_order_on_ties(tmp_path, rng, monkeypatch, chunk):
    """The exact path (stored vectors gathered in chunks) against numpy on the original vectors:
    every label scores its best query row, ties come out in label order, replaced vectors never."""
    import ocrloop.index.faiss_index as fi

    monkeypatch.setattr(fi, "EXACT_CHUNK", chunk)
    ix = FaissIndex(tmp_path / "i", D)
    x = unit(rng, 240)
    x[41:45] = x[40]  # five drawings with the same vector
    ix.upsert([f"d{i}" for i in range(240)], x, [{"group": "sel" if i % 4 == 0 or 40 <= i < 45 else "rest"} for i in range(240)])
    ix.delete(["d8"])
    x[12] = unit(rng, 1)[0]
    ix.upsert(["d12"], x[12], [{"group": "sel"}])  # its first label is now a tombstone
    members = np.array([i for i in range(240) if (i % 4 == 0 or 40 <= i < 45) and i != 8])
    live = ix.live()
    labels = np.array(sorted(live._match_labels({"group": "sel"}, 10_000)), np.int64)
    assert labels.size == members.size
    for queries in (x[40][None], unit(rng, 1), unit(rng, 4)):
        scores = (x[members] @ queries.T).max(axis=1)
        order = np.argsort(-scores, kind="stable")[:9]
        got = live._exact(queries, labels, 9)
        assert [ix.live()._db.execute("SELECT id FROM docs WHERE label=?", (lab,)).fetchone()[0] for lab, _ in got] == \
            [f"d{i}" for i in members[order]]
        assert [sc for _, sc in got] == pytest.approx(scores[order].tolist(), abs=1e-5)
    hits = ix.search(x[40], k=3, filters={"group": "sel"})
    assert [h["id"] for h in hits] == ["d40", "d41", "d42"]  # equal scores: label (insertion) order
    assert live._exact(x[:1], labels[:2], 10) == sorted(live._exact(x[:1], labels[:2], 10), key=lambda t: -t[1])
    assert len(live._exact(x[:1], labels[:2], 10)) == 2  # fewer matches than k


def test_persistence_and_reload_by_a_second_instance(tmp_path, rng):
    home = tmp_path / "idx"
    a = FaissIndex(home, D, embedder_name="e1")
    x = unit(rng, 40)
    a.upsert([f"d{i}" for i in range(40)], x, [{"i": i} for i in range(40)])
    b = FaissIndex(home, D)  # a reader, e.g. the API process
    assert b.count() == 40 and b.search(x[3], 1)[0]["id"] == "d3"
    a.upsert(["extra"], unit(rng, 1), [{"i": -1}])
    a.delete(["d3"])
    assert b.count() == 40  # 41 - 1
    assert b.search(x[3], 1)[0]["id"] != "d3"
    a.close()
    b.close()
    c = FaissIndex(home, D)
    assert c.count() == 40 and c.get("extra") == {"i": -1} and c.embedder_name == "e1"


def test_new_embedder_version_backfill_and_atomic_alias_swap(tmp_path, rng):
    home = tmp_path / "idx"
    ix = FaissIndex(home, D, embedder_name="emb-v1")
    reader = FaissIndex(home, D)
    x1 = unit(rng, 30)
    ix.upsert([f"d{i}" for i in range(30)], x1, [{"i": i} for i in range(30)])
    v1 = ix.version

    writer = ix.begin_version("emb-v2 (64-d)", dim=64)
    assert isinstance(writer, IndexVersion) and writer.version.startswith("0002-emb-v2")
    x2 = unit(rng, 30, 64)
    writer.upsert([f"d{i}" for i in range(30)], x2, [{"i": i, "v": 2} for i in range(30)])
    # Until the swap, readers see v1.
    assert reader.version == v1 and reader.search(x1[4], 1)[0]["id"] == "d4"
    with pytest.raises(ValueError, match="query vector"):
        reader.search(x2[4], 1)

    ix.swap_alias(writer.version)
    alias = json.loads((home / "alias.json").read_text())
    assert alias["version"] == writer.version and alias["embedder"] == "emb-v2 (64-d)" and alias["dim"] == 64
    assert not list(home.glob(".alias.json*"))  # no temp file left behind
    assert reader.version == writer.version and reader.embedder_name == "emb-v2 (64-d)"
    assert reader.search(x2[4], 1)[0] == {"id": "d4", "score": pytest.approx(1.0, abs=1e-5), "metadata": {"i": 4, "v": 2}}

    with pytest.raises(ValueError, match="live"):
        ix.drop_version(writer.version)
    ix.drop_version(v1)
    assert ix.versions() == [writer.version]
    with pytest.raises(KeyError):
        ix.swap_alias(v1)


def test_concurrent_readers_during_writes(index, rng):
    x = unit(rng, 200)
    index.upsert([f"d{i}" for i in range(100)], x[:100], [{} for _ in range(100)])
    errors = []

    def read():
        try:
            for i in range(60):
                hits = index.search(x[i % 100], 3)
                assert hits[0]["id"] == f"d{i % 100}"
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for j in range(100, 200, 20):
        index.upsert([f"d{i}" for i in range(j, j + 20)], x[j:j + 20], [{} for _ in range(20)])
    for t in threads:
        t.join()
    assert errors == [] and index.count() == 200


def _write_from_process(home, start):
    rng = np.random.default_rng(start)
    ix = FaissIndex(home, D)
    x = unit(rng, 25)
    for i in range(25):
        ix.upsert([f"p{start}-{i}"], x[i:i + 1], [{"start": start}])


def test_two_processes_writing_the_same_index_lose_nothing(tmp_path):
    home = tmp_path / "idx"
    FaissIndex(home, D).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_from_process, args=(home, s)) for s in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    ix = FaissIndex(home, D)
    assert ix.count() == 50
    assert ix.live().tombstones() == 0
    rng = np.random.default_rng(2)
    assert ix.search(unit(rng, 25)[24], 1)[0]["id"] == "p2-24"


def test_bad_input_is_refused_with_clear_errors(index, rng):
    x = unit(rng, 3)
    with pytest.raises(ValueError, match="as many ids"):
        index.upsert(["a", "b"], x, [{}, {}])
    with pytest.raises(ValueError, match="duplicate"):
        index.upsert(["a", "a", "b"], x, [{}, {}, {}])
    with pytest.raises(ValueError, match=r"\[3, 32\]|float32"):
        index.upsert(["a"], np.ones((1, 5), np.float32), [{}])
    with pytest.raises(ValueError, match="L2-normalised"):
        index.upsert(["a"], 2 * x[:1], [{}])
    with pytest.raises(ValueError, match="NaN"):
        index.upsert(["a"], np.full((1, D), np.nan, np.float32), [{}])
    with pytest.raises(ValueError, match="JSON"):
        index.upsert(["a"], x[:1], [{"when": object()}])
    with pytest.raises(ValueError, match="non-empty strings"):
        index.upsert([""], x[:1], [{}])
    with pytest.raises(ValueError, match="k must be"):
        index.search(x[0], 0)
    with pytest.raises(ValueError, match="filters"):
        index.search(x[0], 1, filters={"a": 3})
    assert index.count() == 0
    assert index.search(x[0], 3) == []  # empty index
    # A failed upsert leaves nothing behind.
    index.upsert(["ok"], x[:1], [{}])
    with pytest.raises(ValueError):
        index.upsert(["x", "y"], x[:2], [{}, {"bad": object()}])
    assert index.count() == 1 and index.live().tombstones() == 0


def test_flatten_text():
    assert flatten_text(["a", {"b": 1, "c": [2.5, None]}]) == "a\n1\n2.5\n"
    assert flatten_text(None) == "" and flatten_text(True) == "True"


def test_version_written_before_the_trigram_index_is_migrated(tmp_path, rng):
    import sqlite3

    home = tmp_path / "idx"
    ix = FaissIndex(home, D)
    x = unit(rng, 30)
    ix.upsert([f"d{i}" for i in range(30)], x, [{"text": f"MATERIAL {'S235JR' if i % 3 == 0 else 'AlMg3'}", "i": i}
                                                for i in range(30)])
    folder = ix.live().folder
    ix.close()
    # Rewrite docs.sqlite the way the first release laid it out: fields keyed by (label, field),
    # a row for every key (empty texts too), no FTS table, no stored live count.
    db = sqlite3.connect(folder / "docs.sqlite", isolation_level=None)
    rows = db.execute("SELECT label, field, folded FROM fields").fetchall()
    db.executescript("""
        DROP TRIGGER fields_ai; DROP TRIGGER fields_ad; DROP TABLE fields_fts; DROP TABLE fields;
        CREATE TABLE fields (label INTEGER NOT NULL, field TEXT NOT NULL, folded TEXT NOT NULL,
                             PRIMARY KEY (label, field));
        CREATE INDEX fields_by_field ON fields (field);
        DELETE FROM counters WHERE name = 'live';""")
    labels = sorted({label for label, _, _ in rows})
    db.executemany("INSERT INTO fields VALUES (?, ?, ?)", rows + [(label, "empty", "") for label in labels[:5]])
    db.close()

    again = FaissIndex(home, D)
    assert again.count() == 30
    assert again.matching_ids({"material": "s235"}) == sorted(f"d{i}" for i in range(0, 30, 3))
    assert again.matching_ids({"text": "almg3"}) == sorted(f"d{i}" for i in range(30) if i % 3)
    assert again.matching_ids({"empty": ""}) == []  # empty texts never match (they were stored before)
    assert again.search(x[4], 1, filters={"text": "material"})[0]["id"] == "d4"
    again.delete(["d0"])
    assert again.count() == 29 and again.matching_ids({"material": "s235"})[0] == "d12"
    again.close()


def test_texts_folded_by_an_older_fold_are_folded_again_on_open(tmp_path, rng):
    import sqlite3

    from ocrloop.index.fields import FOLD_VERSION, fold_v1

    home = tmp_path / "idx"
    ix = FaissIndex(home, D)
    x = unit(rng, 12)
    docs = [{"text": f"PLAT {80 + i}×6,3\nØ{20 + i} H7", "part": f"P–{i}"} for i in range(12)]
    ix.upsert([f"d{i}" for i in range(12)], x, docs)
    folder = ix.live().folder
    ix.close()
    # Store the texts the way fold version 1 (str.casefold) did, with no fold version recorded.
    db = sqlite3.connect(folder / "docs.sqlite", isolation_level=None)
    rows = db.execute("SELECT label, metadata FROM docs").fetchall()
    db.execute("DELETE FROM fields")
    for label, meta in rows:
        for key, value in json.loads(meta).items():
            if flatten_text(value):
                db.execute("INSERT INTO fields (label, field, folded) VALUES (?, ?, ?)",
                           (label, key, fold_v1(flatten_text(value))))
    db.execute("DELETE FROM counters WHERE name = 'fold_version'")
    assert db.execute("SELECT count(*) FROM fields_fts WHERE folded GLOB '*ø25*'").fetchone()[0] == 1
    db.close()

    again = FaissIndex(home, D)
    assert again.matching_ids({"text": "⌀25 h7"}) == ["d5"]  # trigram path: ⌀ and Ø fold alike now
    assert again.matching_ids({"text": "80x6"}) == ["d0"]
    assert again.matching_ids({"text": "ø2"}) == sorted(f"d{i}" for i in range(10))  # short needle: scan path
    assert again.matching_ids({"part": "p-11"}) == ["d11"]
    assert again.search(x[7], 1, filters={"text": "87x6,3"})[0]["id"] == "d7"
    again.close()
    db = sqlite3.connect(folder / "docs.sqlite", isolation_level=None)
    assert db.execute("SELECT value FROM counters WHERE name = 'fold_version'").fetchone()[0] == FOLD_VERSION
    assert db.execute("SELECT count(*) FROM fields_fts WHERE folded GLOB '*ø25*'").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM fields_fts WHERE folded GLOB '*⌀25*'").fetchone()[0] == 1
    db.close()


def test_filter_plan_chooses_the_cheaper_of_walking_and_enumerating():
    from ocrloop.index.faiss_index import DEEP_FETCH_MAX, EXACT_FILTER_MAX, OVERFETCH, filter_plan

    seen = OVERFETCH * 10
    # 5 % of a million drawings match (2 of 40 seen): 50,000 are too many to score; a walk of
    # ≈ 400 candidates meets 10.
    assert filter_plan(10, 1_000_000, seen, 0.05, 0.05) == ("walk", pytest.approx(40.0))
    # 2.5 % of 10,000 (1 of 40): 250 matches are cheaper to enumerate and score than 800 candidates.
    assert filter_plan(10, 10_000, seen, 0.025, 0.025) == ("enumerate", 0.0)
    # A long walk (2 × DEEP_FETCH_MAX here) loses to enumerating a few thousand rows, not to
    # enumerating rows the enumeration would give up on, nor to rows that cost more.
    tiny = 2.0 * 10 / (DEEP_FETCH_MAX * 2)
    assert filter_plan(10, 10**6, seen, tiny, tiny)[0] == "enumerate"
    assert filter_plan(10, 10**8, seen, tiny, tiny) == ("walk", pytest.approx(2.0 / tiny))
    assert filter_plan(10, 10**6, seen, tiny, 0.3) == ("walk", pytest.approx(2.0 / tiny))
    # Nothing matched among the first candidates: enumerate (giving up after EXACT_FILTER_MAX rows).
    assert filter_plan(10, 1_000_000, seen, 0.0, 0.0) == ("enumerate", 0.0)
    assert filter_plan(10, 1_000, seen, 0.0, 0.0) == ("enumerate", 0.0)
    # …unless the filter that would drive the enumeration looks broad (two filters, 4 of 40 passed
    # the rarer one, none both; or a short needle that scans its field): look 10× deeper once.
    assert filter_plan(10, 1_000_000, seen, 0.0, 0.1) == ("look", 10.0 * OVERFETCH)
    assert filter_plan(10, 1_000_000, seen, 0.0, 1.0) == ("look", 10.0 * OVERFETCH)
    assert filter_plan(10, 1_000_000, 10 * seen, 0.0, 0.1, looked=True) == ("enumerate", 0.0)
    assert filter_plan(10, 100_000, seen, 0.0, 0.1) == ("look", 10.0 * OVERFETCH)  # 10,000 rows: 30 ms > 8
    assert filter_plan(10, 100_000, seen, 0.0, 0.025) == ("enumerate", 0.0)  # 2,500 rows: 7.5 ms
    # Expected driver rows over EXACT_FILTER_MAX: the walk, whatever the costs say.
    share = 4 / seen
    assert filter_plan(10, 10 * EXACT_FILTER_MAX, seen, share, share) == ("walk", pytest.approx(2.0 / share))
    assert filter_plan(10, 1_000_000, seen, 1 / seen, 0.1) == ("walk", pytest.approx(2.0 * seen))


def test_driver_and_its_estimated_share():
    from ocrloop.index.faiss_index import _driver, _driver_share

    assert _driver({"a": "almg", "b": "1:2"}) == "a"
    assert _driver({"a": "x", "b": "5:"}) == "b"
    assert _driver_share({"a": "almg"}, {"a": 0.0}, 40) == 0.0  # a lone filter: its share
    assert _driver_share({"a": "almg"}, {"a": 0.1}, 40) == 0.1
    # Several: add-one, so none of 40 candidates passing the driver is not "no drawing matches".
    assert _driver_share({"a": "almg", "b": "1:2"}, {"a": 0.0, "b": 0.5}, 40) == pytest.approx(1 / 41)
    assert _driver_share({"a": "5:"}, {"a": 0.0}, 40) == 1.0  # no trigram lookup: a scan
