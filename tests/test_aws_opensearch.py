"""OpenSearch vector index: template, versions, alias swap, bulk upsert/delete and count against
osmem-server (an in-memory server speaking the OpenSearch REST API for indices, mappings,
templates, aliases and bulk — not k-NN queries, so the query body and the hit merging are checked
as data), and SigV4 signing of the real client."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from ocrloop.aws.opensearch import OpenSearchIndex, connect, merge_hits


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
                                 "parameters": {"m": 16, "ef_construction": 128, "ef_search": 128}}
    settings = client.indices.get_settings(index=first)[first]["settings"]["index"]
    assert str(settings["knn"]).lower() == "true"
    vectors = np.eye(4, dtype=np.float32)[:3]
    index.upsert(["d1", "d2", "d3"], vectors, [{"key": f"drawings/d{i}.png", "part": "P-1"} for i in range(3)])
    assert index.count() == 3
    index.upsert(["d1"], vectors[:1], [{"key": "drawings/d1.png", "part": "P-2"}])  # replace, not add
    assert index.count() == 3
    assert client.get(index=index.alias, id="d1")["_source"]["metadata"]["part"] == "P-2"
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


def test_knn_query_body_uses_efficient_filtering():
    idx = OpenSearchIndex(None, "ocrloop-drawings", 3)
    body = idx.knn_query([0.1, 0.2, 0.3], 5, {"part": "P-1", "material": "S235"})
    assert body["size"] == 5 and body["_source"] == {"excludes": ["embedding"]}
    knn = body["query"]["knn"]["embedding"]
    assert knn["vector"] == [0.1, 0.2, 0.3] and knn["k"] == 5
    assert knn["filter"] == {"bool": {"filter": [{"term": {"metadata.material": "S235"}},
                                                 {"term": {"metadata.part": "P-1"}}]}}
    assert "filter" not in idx.knn_query([0, 0, 1], 1)["query"]["knn"]["embedding"]


def test_multi_vector_hits_keep_each_drawings_best_score():
    rotations = [
        {"hits": {"hits": [{"_id": "a", "_score": 1.2, "_source": {"metadata": {"key": "a"}}},
                           {"_id": "b", "_score": 1.1, "_source": {"metadata": {"key": "b"}}}]}},
        {"hits": {"hits": [{"_id": "b", "_score": 1.9, "_source": {"metadata": {"key": "b"}}},
                           {"_id": "c", "_score": 1.0, "_source": {}}]}},
    ]
    assert merge_hits(rotations, 2) == [{"id": "b", "score": 1.9, "metadata": {"key": "b"}},
                                        {"id": "a", "score": 1.2, "metadata": {"key": "a"}}]
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
