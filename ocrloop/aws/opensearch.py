"""``VectorIndex`` on an Amazon OpenSearch Service domain (k-NN plugin, faiss HNSW), via
``opensearch-py`` with SigV4 request signing.

Layout: one concrete index per embedder version, ``<alias>-v<version>``, and the alias
``<alias>`` pointing at the one being served. A new embedding model builds a new index version,
backfills it, then :meth:`OpenSearchIndex.swap_alias` moves the alias atomically (``POST _aliases``
with remove + add in one request), so searches never see a half-built index. Every version gets the
same settings and mapping from the index template ``<alias>`` (pattern ``<alias>-v*``).

Mapping (https://docs.opensearch.org/latest/field-types/supported-field-types/knn-vector/ and
https://docs.opensearch.org/latest/vector-search/creating-vector-index/):
``embedding`` is a ``knn_vector`` with method ``hnsw``, engine ``faiss``, space ``innerproduct``
(vectors are L2-normalised, so inner product = cosine), ``m`` 16 and ``ef_construction`` 128
(DESIGN.md: faiss HNSW M=16 at 1M × 512-d gave recall@10 ≈ 0.998). Metadata strings are mapped as
``keyword`` (dynamic template) so ``filters`` are exact-match ``term`` filters, applied inside the
k-NN query (faiss efficient filtering, OpenSearch ≥ 2.9) rather than after it.

Query vectors may be ``[D]`` or ``[Q, D]`` (e.g. the four rotations ``Embedder.embed_query``
returns): a multi-vector query runs one k-NN search per row (``_msearch``) and keeps each id's best
score.

opensearch-py is imported lazily: this module is importable where the package is absent.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Sequence

HNSW_M = 16
HNSW_EF_CONSTRUCTION = 128
HNSW_EF_SEARCH = 128


def connect(endpoint: str, region: str, credentials: Any = None, *, timeout_s: float = 30.0) -> Any:
    """An ``OpenSearch`` client for a domain endpoint (host name, no scheme), SigV4-signed for the
    ``es`` service with the Lambda role's credentials (refreshable session credentials).

    Raises:
        ValueError: empty endpoint.
    """
    if not endpoint:
        raise ValueError("no OpenSearch endpoint configured")
    import boto3
    from opensearchpy import AWSV4SignerAuth, OpenSearch, RequestsHttpConnection

    credentials = credentials or boto3.Session().get_credentials()
    host = endpoint.removeprefix("https://").rstrip("/")
    return OpenSearch(
        hosts=[{"host": host, "port": 443}],
        http_auth=AWSV4SignerAuth(credentials, region, "es"),
        use_ssl=True,
        verify_certs=True,
        connection_class=RequestsHttpConnection,
        timeout=timeout_s,
        max_retries=3,
        retry_on_timeout=True,
        http_compress=True,
    )


def _floats(vector: Any) -> list[float]:
    values = vector.tolist() if hasattr(vector, "tolist") else list(vector)
    return [float(v) for v in values]


def _rows(vectors: Any) -> list[list[float]]:
    """``[D]`` → one row, ``[Q, D]`` → Q rows (numpy arrays or nested sequences)."""
    values = vectors.tolist() if hasattr(vectors, "tolist") else list(vectors)
    if values and isinstance(values[0], (list, tuple)):
        return [_floats(v) for v in values]
    return [_floats(values)]


def merge_hits(responses: Sequence[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """Top-k ``{"id", "score", "metadata"}`` over one or more ``_search`` responses, each id at its
    best score (several query vectors: the drawing's best rotation wins).

    Raises:
        RuntimeError: a response of ``_msearch`` carries an error.
    """
    best: dict[str, dict[str, Any]] = {}
    for response in responses:
        if "error" in response:
            raise RuntimeError(f"k-NN search failed: {response['error']}")
        for hit in response["hits"]["hits"]:
            hid = hit["_id"]
            if hid not in best or hit["_score"] > best[hid]["score"]:
                best[hid] = {"id": hid, "score": float(hit["_score"]),
                             "metadata": hit.get("_source", {}).get("metadata", {})}
    return sorted(best.values(), key=lambda h: (-h["score"], h["id"]))[:k]


class OpenSearchIndex:
    """The drawing-similarity index.

    Args:
        client: an ``opensearchpy.OpenSearch`` (``connect(...)``).
        alias: the served alias (``Names().index_alias``).
        dim: embedding width D (the embedder's ``dim``).
        replicas: replica shards per index (1 on a 2-node domain; 0 on a single node).
    """

    def __init__(self, client: Any, alias: str, dim: int, *, replicas: int = 1) -> None:
        if dim <= 0:
            raise ValueError("dim must be positive")
        self._os = client
        self.alias = alias
        self.dim = dim
        self.replicas = replicas

    # layout -----------------------------------------------------------------------------------
    def index_name(self, version: str) -> str:
        """``<alias>-v<version>``, lower-cased, characters OpenSearch forbids replaced by ``-``."""
        clean = re.sub(r"[^a-z0-9_\-]+", "-", str(version).lower()).strip("-")
        if not clean:
            raise ValueError(f"empty index version from {version!r}")
        return f"{self.alias}-v{clean}"[:255]

    def template_body(self) -> dict[str, Any]:
        """Body of ``PUT _index_template/<alias>``."""
        return {
            "index_patterns": [f"{self.alias}-v*"],
            "priority": 100,
            "template": {
                "settings": {
                    "index": {
                        "knn": True,
                        "number_of_shards": 1,
                        "number_of_replicas": self.replicas,
                        "refresh_interval": "5s",
                    }
                },
                "mappings": {
                    "dynamic_templates": [{
                        "metadata_strings": {
                            "path_match": "metadata.*",
                            "match_mapping_type": "string",
                            "mapping": {"type": "keyword", "ignore_above": 1024},
                        }
                    }],
                    "properties": {
                        "embedding": {
                            "type": "knn_vector",
                            "dimension": self.dim,
                            "method": {
                                "name": "hnsw",
                                "engine": "faiss",
                                "space_type": "innerproduct",
                                "parameters": {"m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION,
                                               "ef_search": HNSW_EF_SEARCH},
                            },
                        },
                        "drawing_id": {"type": "keyword"},
                        "metadata": {"type": "object"},
                    },
                },
            },
        }

    def ensure_template(self) -> None:
        """Create or update the index template (idempotent PUT)."""
        self._os.indices.put_index_template(name=self.alias, body=self.template_body())

    def current_index(self) -> str | None:
        """The concrete index behind the alias, or None when the alias does not exist yet."""
        if not self._os.indices.exists_alias(name=self.alias):
            return None
        targets = sorted(self._os.indices.get_alias(name=self.alias))
        return targets[0] if targets else None

    def create_version(self, version: str, *, serve_if_first: bool = True) -> str:
        """Create ``<alias>-v<version>`` (template applied) if missing; point the alias at it when no
        version is served yet. Returns the index name."""
        self.ensure_template()
        name = self.index_name(version)
        if not self._os.indices.exists(index=name):
            self._os.indices.create(index=name)
        if serve_if_first and self.current_index() is None:
            self._os.indices.put_alias(index=name, name=self.alias)
        return name

    def swap_alias(self, new_index: str) -> str | None:
        """Atomically point the alias at ``new_index``; returns the index it pointed at before."""
        old = self.current_index()
        actions: list[dict[str, Any]] = []
        if old and old != new_index:
            actions.append({"remove": {"index": old, "alias": self.alias}})
        actions.append({"add": {"index": new_index, "alias": self.alias}})
        self._os.indices.update_aliases(body={"actions": actions})
        return old

    @property
    def version(self) -> str | None:
        """The concrete index the alias serves (``<alias>-v<embedder>``), or None."""
        return self.current_index()

    @property
    def embedder_name(self) -> str | None:
        """The embedder the served version was built with (the API refuses to mix embedders)."""
        current = self.current_index()
        prefix = f"{self.alias}-v"
        return current[len(prefix):] if current and current.startswith(prefix) else None

    # port -------------------------------------------------------------------------------------
    def upsert(self, ids: Sequence[str], vectors: Any, metadata: Sequence[dict[str, Any]], *,
               index: str | None = None) -> None:
        """Index (add or replace) drawings by id. ``vectors``: float32 [N, D], L2-normalised.

        Args:
            index: a concrete index (backfilling a new version); default the alias.

        Raises:
            ValueError: length or dimension mismatch.
            RuntimeError: the bulk request reported item errors.
        """
        rows = _rows(vectors) if len(ids) else []
        if not (len(ids) == len(rows) == len(metadata)):
            raise ValueError(f"{len(ids)} ids, {len(rows)} vectors, {len(metadata)} metadata")
        body: list[dict[str, Any]] = []
        for drawing_id, row, meta in zip(ids, rows, metadata):
            if len(row) != self.dim:
                raise ValueError(f"vector of {len(row)} values for a {self.dim}-d index")
            body.append({"index": {"_index": index or self.alias, "_id": drawing_id}})
            body.append({"drawing_id": drawing_id, "embedding": row, "metadata": dict(meta)})
        if body:
            self._bulk(body)

    def delete(self, ids: Iterable[str], *, index: str | None = None) -> None:
        """Remove drawings; ids that are not indexed are ignored."""
        body = [{"delete": {"_index": index or self.alias, "_id": i}} for i in ids]
        if body:
            self._bulk(body, ignore_not_found=True)

    def knn_query(self, vector: Sequence[float], k: int, filters: dict[str, str] | None = None) -> dict[str, Any]:
        """The ``_search`` body of one k-NN query (pure)."""
        knn: dict[str, Any] = {"vector": list(vector), "k": k}
        if filters:
            knn["filter"] = {"bool": {"filter": [{"term": {f"metadata.{key}": value}}
                                                 for key, value in sorted(filters.items())]}}
        return {"size": k, "_source": {"excludes": ["embedding"]}, "query": {"knn": {"embedding": knn}}}

    def search(self, vector: Any, k: int = 10, filters: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Top-k ``{"id", "score", "metadata"}``, best first."""
        rows = _rows(vector)
        for row in rows:
            if len(row) != self.dim:
                raise ValueError(f"query of {len(row)} values for a {self.dim}-d index")
        if len(rows) == 1:
            responses = [self._os.search(index=self.alias, body=self.knn_query(rows[0], k, filters))]
        else:
            body: list[dict[str, Any]] = []
            for row in rows:
                body.append({"index": self.alias})
                body.append(self.knn_query(row, k, filters))
            responses = self._os.msearch(body=body)["responses"]
        return merge_hits(responses, k)

    def count(self) -> int:
        if self.current_index() is None:
            return 0
        return int(self._os.count(index=self.alias)["count"])

    def _bulk(self, body: list[dict[str, Any]], ignore_not_found: bool = False) -> None:
        response = self._os.bulk(body=body, refresh="wait_for")
        if not response.get("errors"):
            return
        failures = []
        for item in response["items"]:
            (op, result), = item.items()
            if "error" in result and not (ignore_not_found and result.get("status") == 404):
                failures.append(f"{op} {result.get('_id')}: {result['error']}")
        if failures:
            raise RuntimeError(f"bulk request failed for {len(failures)} items: {failures[:5]}")
