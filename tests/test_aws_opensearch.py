"""OpenSearch vector index: template, versions, alias swap, bulk upsert/delete, count, get and the
filter clause against osmem-server (an in-memory server speaking the OpenSearch REST API for
indices, mappings, templates, aliases, bulk and ordinary queries — not k-NN queries, so the k-NN
request body and the hit merging are checked as data), filter parity with the local faiss index,
SigV4 signing of the real client, and — only when ``OPENSEARCH_URL`` names a cluster — the k-NN
query itself against real OpenSearch."""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest
import requests

from ocrloop.aws.opensearch import (OpenSearchIndex, connect, cosine_from_score, filter_clauses, filter_field,
                                    merge_hits)
from ocrloop.index import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M
from ocrloop.index.faiss_index import FaissIndex
from ocrloop.index.fields import DERIVED_KEY


@pytest.fixture
def index(osmem_clone):
    from opensearchpy import OpenSearch

    return OpenSearchIndex(OpenSearch(hosts=[osmem_clone.url]), "ocrloop-drawings", 4, replicas=0)


def test_versions_alias_swap_and_bulk(index):
    client = index._os
    first = index.create_version("opennsfw-r50-gmp1024-v1-864bb37b")
    assert first == "ocrloop-drawings-vopennsfw-r50-gmp1024-v1-864bb37b"
    assert index.current_index() == first
    mapping = client.indices.get_mapping(index=first)[first]["mappings"]["properties"]["embedding"]
    assert mapping["type"] == "knn_vector" and mapping["dimension"] == 4
    assert mapping["method"] == {"name": "hnsw", "engine": "faiss", "space_type": "innerproduct",
                                 "parameters": {"m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION,
                                                "ef_search": HNSW_EF_SEARCH}}
    props = client.indices.get_mapping(index=first)[first]["mappings"]["properties"]
    assert props["metadata"] == {"type": "object", "enabled": False}
    settings = client.indices.get_settings(index=first)[first]["settings"]["index"]
    assert str(settings["knn"]).lower() == "true"
    vectors = np.eye(4, dtype=np.float32)[:3]
    index.upsert(["d1", "d2", "d3"], vectors, [{"key": f"drawings/d{i}.png", "part": "P-1"} for i in range(3)])
    assert index.count() == 3
    index.upsert(["d1"], vectors[:1], [{"key": "drawings/d1.png", "part": "P-2"}])  # replace, not add
    assert index.count() == 3
    assert client.get(index=index.alias, id="d1")["_source"]["metadata"]["part"] == "P-2"
    assert index.get("d1") == {"key": "drawings/d1.png", "part": "P-2"} and index.get("never-indexed") is None
    # Metadata is not indexed: a key that is a number here and an object there is no mapping conflict.
    index.upsert(["d2", "d3"], vectors[1:], [{"rev": 3, "text": ""}, {"rev": {"letter": "B"}, "text": ["REV", "B"]}])
    assert index.get("d3")["revision"] == ["B"] and index.get("d3")[DERIVED_KEY] == ["revision"]
    index.delete(["d2", "never-indexed"])
    assert index.count() == 2
    # A new embedder: build the next version aside, then swap atomically.
    second = index.create_version("clip-v2", serve_if_first=False)
    assert index.current_index() == first
    index.upsert(["d1"], vectors[:1], [{"key": "drawings/d1.png"}], index=second)
    assert index.swap_alias(second) == first
    assert index.current_index() == second and index.count() == 1
    with pytest.raises(ValueError):
        index.upsert(["x"], [[1.0, 0.0]], [{}])


def test_knn_query_body_filters_inside_the_knn_clause():
    idx = OpenSearchIndex(None, "ocrloop-drawings", 3)
    body = idx.knn_query([0.1, 0.2, 0.3], 5, {"part": "P-1", "material": "S235*?", "a.b": ""})
    assert body["size"] == 5 and body["_source"] == {"excludes": ["embedding", "filter_text"]}
    knn = body["query"]["knn"]["embedding"]
    assert knn["vector"] == [0.1, 0.2, 0.3] and knn["k"] == 5
    assert knn["method_parameters"] == {"ef_search": max(HNSW_EF_SEARCH, 5)}
    # Efficient filtering: the filter sits inside the knn clause (not a bool/post_filter around it);
    # substrings are case-folded and wildcard-escaped; an empty substring means "field present".
    assert knn["filter"] == {"bool": {"filter": [{"exists": {"field": "filter_text.a%2Eb"}},
                                                 {"wildcard": {"filter_text.material": {"value": "*s235\\*\\?*"}}},
                                                 {"wildcard": {"filter_text.part": {"value": "*p-1*"}}}]}}
    assert set(body["query"]) == {"knn"} and "post_filter" not in body
    assert "filter" not in idx.knn_query([0, 0, 1], 1)["query"]["knn"]["embedding"]
    assert idx.knn_query([0, 0, 1], 500)["query"]["knn"]["embedding"]["method_parameters"] == {"ef_search": 500}
    with pytest.raises(ValueError):
        idx.knn_query([0, 0, 1], 1, {"part": 3})
    assert filter_field("Maß stab/ü") == "filter_text.Ma%C3%9F%20stab%2F%C3%BC"


PARITY_DOCS = [
    {"text": "TITLE BEARING SUPPORT\nMATERIAL: S235JR\nSCALE 1:2\nØ25 H7", "part": "P-100", "customer": "Acme"},
    {"text": "Werkstoff 42CrMo4\nMaßstab 1:5\n⌀12 ±0.1", "a.b": "dotted key", "qty": 3},
    {"text": "a*b?c\\d [x]\nDWG NO D-77", "empty": "", "none": None, "lines": ["X", {"y": "ZZ"}]},
    {"text": ["2x(1)-HE 200 A-8000-S355", "B500A", "1:25"], "material": "client: S355 (as ordered)"},
    {"key": "drawings/no-text.png"},
]
PARITY_FILTERS = [
    {"text": "s235"}, {"material": "S2"}, {"material": "s355"}, {"scale": "1:"}, {"scale": "1:2"},
    {"text": "ø2"}, {"text": "Ø25 h"}, {"text": "⌀1"}, {"text": "MASSSTAB"}, {"text": "*"}, {"text": "a*b"},
    {"text": "?c\\"}, {"text": "[x]"}, {"a.b": "KEY"}, {"qty": "3"}, {"empty": ""}, {"none": ""},
    {"lines": "zz"}, {"lines": "x\nz"}, {"text": ""}, {"nope": ""}, {"drawing_number": "d-7"},
    {"derived_fields": "scale"}, {"text": "1:", "material": "42"}, {"customer": "ACME", "part": "p-1"},
    {"title": "bearing"}, {"key": "no-text"},
]


def test_filters_select_the_same_drawings_as_the_local_index(index, tmp_path):
    """One filter semantics on both runtimes: the filter clause sent inside the k-NN query,
    run by osmem as a plain query, selects exactly what FaissIndex's trigram/instr lookups select."""
    ids = [f"d{i}" for i in range(len(PARITY_DOCS))]
    vectors = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0]]
    index.create_version("v1")
    index.upsert(ids, vectors, PARITY_DOCS)
    local = FaissIndex(tmp_path / "idx", 4)
    local.upsert(ids, vectors, PARITY_DOCS)
    try:
        nonempty = 0
        for filters in PARITY_FILTERS:
            remote = index.matching_ids(filters)
            assert remote == local.matching_ids(filters), filters
            nonempty += bool(remote)
        assert nonempty >= 20  # the comparison is not vacuous
        assert index.matching_ids({"material": "s355"}) == ["d3"]  # client value wins over derived S355
        assert index.matching_ids({"scale": "1:25"}) == ["d3"]      # derived from a list of OCR lines
        assert index.matching_ids({"text": ""}, page=2) == ["d0", "d1", "d2", "d3"]  # paged with search_after
        # Stored metadata (what search hits return) is identical too.
        for i in ids:
            assert index.get(i) == local.get(i) or "a.b" in PARITY_DOCS[int(i[1:])], i
    finally:
        local.close()


def test_an_index_folded_by_an_older_fold_still_matches_and_gains_the_lookalikes(index, monkeypatch):
    """Indexes created before fold version 2 hold ``str.casefold`` texts: filters match either fold
    of the substring, so nothing found before the upgrade is lost; a new version (re-indexed)
    records the fold in its mapping and needs one fold only."""
    import ocrloop.aws.opensearch as opensearch_module
    from ocrloop.index.fields import FOLD_VERSION, flatten_text, fold_v1

    docs = [{"text": "Ø20 H7\nPLAT 80×6,3"}, {"text": "⌀20 H7\nPLAT 80x6,3"}]
    old_template = index.template_body()
    del old_template["template"]["mappings"]["_meta"]
    monkeypatch.setattr(index, "template_body", lambda: old_template)
    monkeypatch.setattr(opensearch_module, "filter_texts",  # what the adapter stored before version 2
                        lambda meta: {k: fold_v1(flatten_text(v)) for k, v in meta.items() if flatten_text(v)})
    old = index.create_version("v1")
    index.upsert(["old-o", "old-d"], np.eye(4, dtype=np.float32)[:2], docs)
    monkeypatch.undo()
    assert index.fold_version() == 1
    # Version-1 texts hold "ø20" and "×" as read; both folds of each substring are tried, so what a
    # filter found before the upgrade it still finds ("Ø20" found old-o; now old-d as well).
    assert index.matching_ids({"text": "Ø20"}) == ["old-d", "old-o"]
    assert index.matching_ids({"text": "80×6"}) == ["old-d", "old-o"]
    assert index.matching_ids({"text": "⌀20"}) == ["old-d"]  # "ø20" stored by fold 1: until re-indexed
    clause = filter_clauses({"text": "Ø20"}, fold_version=1)[0]
    assert clause == {"bool": {"should": [{"wildcard": {filter_field("text"): {"value": "*⌀20*"}}},
                                          {"wildcard": {filter_field("text"): {"value": "*ø20*"}}}],
                               "minimum_should_match": 1}}
    assert filter_clauses({"text": "h7"}, fold_version=1) == filter_clauses({"text": "h7"})  # one fold, one query
    # Re-indexed into a new version: the mapping records the fold, look-alikes match each other.
    new = index.create_version("v2", serve_if_first=False)
    index.upsert(["new-o", "new-d"], np.eye(4, dtype=np.float32)[:2], docs, index=new)
    assert index.swap_alias(new) == old
    mapping = index._os.indices.get_mapping(index=new)[new]["mappings"]
    assert mapping["_meta"] == {"ocrloop_fold_version": FOLD_VERSION} and index.fold_version() == FOLD_VERSION
    assert index.matching_ids({"text": "⌀20"}) == ["new-d", "new-o"]
    assert index.matching_ids({"text": "80x6"}) == ["new-d", "new-o"]
    body = index.knn_query([1.0, 0.0, 0.0, 0.0], 2, {"text": "Ø20"})
    assert body["query"]["knn"]["embedding"]["filter"]["bool"]["filter"] == filter_clauses({"text": "⌀20"})


def test_filter_clauses_validate():
    assert filter_clauses(None) == [] and filter_clauses({}) == []
    with pytest.raises(ValueError):
        filter_clauses({"x": ["list"]})


def test_multi_vector_hits_keep_each_drawings_best_score():
    rotations = [
        {"hits": {"hits": [{"_id": "a", "_score": 1.2, "_source": {"metadata": {"key": "a"}}},
                           {"_id": "b", "_score": 1.1, "_source": {"metadata": {"key": "b"}}}]}},
        {"hits": {"hits": [{"_id": "b", "_score": 1.9, "_source": {"metadata": {"key": "b"}}},
                           {"_id": "c", "_score": 1.0, "_source": {}}]}},
    ]
    merged = merge_hits(rotations, 2)
    assert [(h["id"], h["metadata"]) for h in merged] == [("b", {"key": "b"}), ("a", {"key": "a"})]
    # _score of faiss innerproduct is ip + 1 (ip > 0) or 1 / (1 - ip): reported back as the cosine.
    assert [h["score"] for h in merged] == [pytest.approx(0.9), pytest.approx(0.2)]
    assert cosine_from_score(0.5) == pytest.approx(-1.0) and cosine_from_score(1.0) == 0.0
    with pytest.raises(ValueError):
        cosine_from_score(0.0)
    with pytest.raises(RuntimeError):
        merge_hits([{"error": {"type": "x"}}], 1)


def test_client_signs_requests_with_sigv4_for_es():
    from botocore.credentials import Credentials

    client = connect("search-ocrloop-abc.us-east-1.es.amazonaws.com", "us-east-1",
                     Credentials("AKIDEXAMPLE", "secret", "token"))
    conn = client.transport.get_connection()
    assert conn.host == "https://search-ocrloop-abc.us-east-1.es.amazonaws.com:443"
    request = requests.Request("GET", "https://search-ocrloop-abc.us-east-1.es.amazonaws.com/_count").prepare()
    signed = conn.session.auth(request)
    auth = signed.headers["Authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/us-east-1/es/aws4_request" in auth
    assert signed.headers["X-Amz-Security-Token"] == "token"
    with pytest.raises(ValueError):
        connect("", "us-east-1")


# --------------------------------------------------------------------------------------------
# A real cluster (k-NN plugin): only when OPENSEARCH_URL is set, e.g. http://localhost:9200
# --------------------------------------------------------------------------------------------

@pytest.mark.skipif(not os.environ.get("OPENSEARCH_URL"),
                    reason="OPENSEARCH_URL is not set: no OpenSearch cluster with the k-NN plugin to run k-NN queries "
                           "against (osmem-server does not implement them)")
def test_knn_search_with_filters_on_a_real_cluster(tmp_path):
    from opensearchpy import OpenSearch

    client = OpenSearch(hosts=[os.environ["OPENSEARCH_URL"]], timeout=60)
    alias = f"ocrloop-test-{uuid.uuid4().hex[:8]}"
    idx = OpenSearchIndex(client, alias, 16, replicas=0)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = [f"d{i:03d}" for i in range(200)]
    meta = [{"text": f"MATERIAL {'S235JR' if i % 4 == 0 else 'AlMg3'}\nSCALE 1:{1 + i % 3}", "n": i} for i in range(200)]
    local = FaissIndex(tmp_path / "idx", 16)
    try:
        first = idx.create_version("v1")
        idx.upsert(ids, x, meta)
        local.upsert(ids, x, meta)
        client.indices.refresh(index=first)
        hits = idx.search(x[7], k=5)
        assert hits[0]["id"] == "d007" and hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
        assert [h["score"] for h in hits] == pytest.approx([h["score"] for h in local.search(x[7], 5)], abs=1e-3)
        filtered = idx.search(x[7], k=10, filters={"material": "s235"})
        assert len(filtered) == 10 and all(int(h["id"][1:]) % 4 == 0 for h in filtered)
        assert [h["id"] for h in filtered] == [h["id"] for h in local.search(x[7], 10, filters={"material": "s235"})]
        rotations = np.stack([x[9], x[11]])
        assert {h["id"] for h in idx.search(rotations, k=2)} == {"d009", "d011"}
        assert idx.matching_ids({"scale": "1:3"}) == local.matching_ids({"scale": "1:3"})
        second = idx.create_version("v2", serve_if_first=False)
        idx.upsert(ids[:3], x[:3], meta[:3], index=second)
        client.indices.refresh(index=second)
        assert idx.swap_alias(second) == first and idx.count() == 3
    finally:
        local.close()
        client.indices.delete(index=f"{alias}-v*", ignore=[404])
        client.indices.delete_index_template(name=alias, ignore=[404])
