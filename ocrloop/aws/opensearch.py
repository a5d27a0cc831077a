"""``VectorIndex`` on an Amazon OpenSearch Service domain (k-NN plugin, faiss HNSW), via
``opensearch-py`` with SigV4 request signing.

Layout: one concrete index per embedder version, ``<alias>-v<version>``, and the alias
``<alias>`` pointing at the one being served. A new embedding model builds a new index version,
backfills it, then :meth:`OpenSearchIndex.swap_alias` moves the alias atomically (``POST _aliases``
with remove + add in one request), so searches never see a half-built index. Every version gets the
same settings and mapping from the index template ``<alias>`` (pattern ``<alias>-v*``).

Mapping (https://docs.opensearch.org/latest/field-types/supported-field-types/knn-vector/ and
https://docs.opensearch.org/latest/vector-search/creating-vector-index/):

* ``embedding``: ``knn_vector``, method ``hnsw``, engine ``faiss``, space ``innerproduct`` (vectors
  are L2-normalised, so inner product = cosine), ``m`` / ``ef_construction`` / ``ef_search`` from
  ``ocrloop.index`` (the values ``bench/search.py`` tuned on the local faiss HNSW; the same library
  builds OpenSearch's per-segment graphs).
* ``metadata``: the drawing's metadata, kept in ``_source`` but not indexed (``enabled: false``):
  clients register arbitrary JSON, and a key that is a number in one drawing and a string in the
  next would otherwise be a mapping conflict that fails the bulk request.
* ``filter_text.<key>``: one ``wildcard`` field (OpenSearch ≥ 2.15; n-gram indexed, for arbitrary
  substrings) per metadata key holding ``fields.filter_texts(metadata)``: the folded
  (``fields.fold``), flattened text of the key. The key is percent-encoded (``filter_field``) so
  ``.`` in client keys cannot create object paths. The mapping's ``_meta.ocrloop_fold_version``
  records the fold (``OpenSearchIndex.fold_version``).

Filters (``filters={field: substring}``) have the semantics of ``ocrloop.index.fields`` on both
runtimes: the substring, folded in Python (``fields.fold``), must occur in the folded text, i.e. a
``wildcard`` query ``*<escaped substring>*`` on ``filter_text.<key>`` (an empty substring:
``exists``). They run *inside* the k-NN query (``knn.<field>.filter``: efficient filtering,
faiss engine, OpenSearch ≥ 2.9), which returns ``k`` matching drawings whenever ``k`` exist — not a
post-filter that can return fewer
(https://docs.opensearch.org/latest/vector-search/filter-search-knn/efficient-knn-filtering/).
Every k-NN query sends ``method_parameters.ef_search`` (OpenSearch ≥ 2.16), so the recall/latency
point is the one benchmarked, whatever the index setting says. The domain runs 2.19 (``infra/search.py``).

Query vectors may be ``[D]`` or ``[Q, D]`` (e.g. the four rotations ``Embedder.embed_query``
returns): a multi-vector query runs one k-NN search per row (``_msearch``) and keeps each id's best
score.

opensearch-py is imported lazily: this module is importable where the package is absent.
"""

from __future__ import annotations

import re
import time
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import quote

from ..index import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M
from ..index.fields import FOLD_VERSION, check_filters, filter_texts, fold_v1, with_derived_fields

FOLD_VERSION_TTL_S = 300.0
"""How long ``OpenSearchIndex.fold_version`` trusts its last look at the served index's mapping (s):
an alias swapped by another process is noticed within this time."""

FILTER_TEXT = "filter_text"
"""Object holding one ``wildcard`` field per metadata key (``filter_field``)."""


def encode_key(key: str) -> str:
    """Metadata key → field name under ``filter_text``: percent-encoded UTF-8, everything but
    ``A-Z a-z 0-9 _ -`` escaped (``.`` too, so ``"a.b"`` stays one field instead of an object path)."""
    return quote(key, safe="_-").replace(".", "%2E")


def filter_field(key: str) -> str:
    """Path of the filterable text of metadata ``key``: ``filter_text.<encode_key(key)>``."""
    return f"{FILTER_TEXT}.{encode_key(key)}"


def wildcard_literal(text: str) -> str:
    """``text`` escaped for a Lucene ``wildcard`` pattern (``\\``, ``*`` and ``?`` get a backslash)."""
    return re.sub(r"([\\*?])", r"\\\1", text)


def filter_clauses(filters: Mapping[str, str] | None, fold_version: int = FOLD_VERSION) -> list[dict[str, Any]]:
    """Query DSL clauses (all must match) for ``filters``, same semantics as the local index.

    ``fold_version``: the ``fields.FOLD_VERSION`` the index's texts were folded with. Texts of an
    older index (version 1: ``str.casefold`` alone) are matched by either fold of the substring,
    so a filter finds what it found before the upgrade, and the look-alikes once re-indexed.

    Raises:
        ValueError: malformed filters (``fields.check_filters``).
    """
    clauses: list[dict[str, Any]] = []
    folded = check_filters(filters)
    for key, needle in sorted(folded.items()):
        if not needle:
            clauses.append({"exists": {"field": filter_field(key)}})
            continue
        values = [needle]
        if fold_version < FOLD_VERSION and fold_v1(filters[key]) != needle:
            values.append(fold_v1(filters[key]))
        queries = [{"wildcard": {filter_field(key): {"value": f"*{wildcard_literal(v)}*"}}} for v in values]
        clauses.append(queries[0] if len(queries) == 1 else {"bool": {"should": queries, "minimum_should_match": 1}})
    return clauses


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


def cosine_from_score(score: float) -> float:
    """Inner product (= cosine for unit vectors) from OpenSearch's ``_score`` of a faiss
    ``innerproduct`` field, which is ``ip + 1`` for ``ip > 0`` and ``1 / (1 - ip)`` otherwise
    (https://docs.opensearch.org/latest/mappings/supported-field-types/knn-spaces/), so that both
    runtimes report the same score as the local index.

    Raises:
        ValueError: ``score <= 0`` (not a score this space produces).
    """
    if score <= 0:
        raise ValueError(f"not a faiss innerproduct score: {score}")
    return score - 1.0 if score >= 1.0 else 1.0 - 1.0 / score


def merge_hits(responses: Sequence[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """Top-k ``{"id", "score", "metadata"}`` over one or more ``_search`` responses, each id at its
    best score (several query vectors: the drawing's best rotation wins). ``score`` is the cosine
    similarity (``cosine_from_score``), as on the local index.

    Raises:
        RuntimeError: a response of ``_msearch`` carries an error.
    """
    best: dict[str, dict[str, Any]] = {}
    for response in responses:
        if "error" in response:
            raise RuntimeError(f"k-NN search failed: {response['error']}")
        for hit in response["hits"]["hits"]:
            hid = hit["_id"]
            if hid not in best or cosine_from_score(float(hit["_score"])) > best[hid]["score"]:
                best[hid] = {"id": hid, "score": cosine_from_score(float(hit["_score"])),
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
        self._fold: tuple[int, float] | None = None  # (fold version of the served index, when looked up)

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
                        "filter_texts": {
                            "path_match": f"{FILTER_TEXT}.*",
                            "match_mapping_type": "string",
                            "mapping": {"type": "wildcard"},
                        }
                    }],
                    "_meta": {"ocrloop_fold_version": FOLD_VERSION},
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
                        "metadata": {"type": "object", "enabled": False},
                        FILTER_TEXT: {"type": "object"},
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
            self._fold = None
        return name

    def swap_alias(self, new_index: str) -> str | None:
        """Atomically point the alias at ``new_index``; returns the index it pointed at before."""
        old = self.current_index()
        actions: list[dict[str, Any]] = []
        if old and old != new_index:
            actions.append({"remove": {"index": old, "alias": self.alias}})
        actions.append({"add": {"index": new_index, "alias": self.alias}})
        self._os.indices.update_aliases(body={"actions": actions})
        self._fold = None
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

        Each drawing's metadata gets the fields derived from its OCR text
        (``fields.with_derived_fields``) and its filterable texts (``filter_text``), exactly as the
        local index stores them.

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
            meta = with_derived_fields(meta)
            body.append({"index": {"_index": index or self.alias, "_id": drawing_id}})
            body.append({"drawing_id": drawing_id, "embedding": row, "metadata": meta,
                         FILTER_TEXT: {encode_key(key): text for key, text in filter_texts(meta).items()}})
        if body:
            self._bulk(body)

    def delete(self, ids: Iterable[str], *, index: str | None = None) -> None:
        """Remove drawings; ids that are not indexed are ignored."""
        body = [{"delete": {"_index": index or self.alias, "_id": i}} for i in ids]
        if body:
            self._bulk(body, ignore_not_found=True)

    def fold_version(self) -> int:
        """``fields.FOLD_VERSION`` of the served index's filter texts: the mapping's
        ``_meta.ocrloop_fold_version``, 1 for indexes created before it was recorded. Looked up
        once per ``FOLD_VERSION_TTL_S`` (and after ``swap_alias``), not on every search."""
        now = time.monotonic()
        if self._fold is None or now - self._fold[1] > FOLD_VERSION_TTL_S:
            version = FOLD_VERSION
            if self.current_index() is not None:
                mappings = self._os.indices.get_mapping(index=self.alias)
                metas = [(m.get("mappings") or {}).get("_meta") or {} for m in mappings.values()]
                version = min((int(meta.get("ocrloop_fold_version", 1)) for meta in metas), default=FOLD_VERSION)
            self._fold = (version, now)
        return self._fold[0]

    def knn_query(self, vector: Sequence[float], k: int, filters: Mapping[str, str] | None = None, *,
                  ef_search: int = HNSW_EF_SEARCH, fold_version: int = FOLD_VERSION) -> dict[str, Any]:
        """The ``_search`` body of one k-NN query (pure): ``k`` nearest drawings with the filters
        applied inside the graph search and ``method_parameters.ef_search = max(ef_search, k)``;
        ``fold_version`` as in ``filter_clauses``.

        Raises:
            ValueError: malformed filters.
        """
        knn: dict[str, Any] = {"vector": list(vector), "k": k,
                               "method_parameters": {"ef_search": max(int(ef_search), int(k))}}
        clauses = filter_clauses(filters, fold_version)
        if clauses:
            knn["filter"] = {"bool": {"filter": clauses}}
        return {"size": k, "_source": {"excludes": ["embedding", FILTER_TEXT]}, "query": {"knn": {"embedding": knn}}}

    def search(self, vector: Any, k: int = 10, filters: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Top-k ``{"id", "score", "metadata"}``, best first."""
        rows = _rows(vector)
        for row in rows:
            if len(row) != self.dim:
                raise ValueError(f"query of {len(row)} values for a {self.dim}-d index")
        fold_version = self.fold_version() if filters else FOLD_VERSION
        if len(rows) == 1:
            responses = [self._os.search(index=self.alias,
                                         body=self.knn_query(rows[0], k, filters, fold_version=fold_version))]
        else:
            body: list[dict[str, Any]] = []
            for row in rows:
                body.append({"index": self.alias})
                body.append(self.knn_query(row, k, filters, fold_version=fold_version))
            responses = self._os.msearch(body=body)["responses"]
        return merge_hits(responses, k)

    def count(self) -> int:
        if self.current_index() is None:
            return 0
        return int(self._os.count(index=self.alias)["count"])

    def get(self, drawing_id: str) -> dict[str, Any] | None:
        """Metadata of an indexed drawing, or None (``indexing.index_one`` keeps it on refresh)."""
        from opensearchpy.exceptions import NotFoundError

        try:
            doc = self._os.get(index=self.alias, id=drawing_id, _source_includes=["metadata"])
        except NotFoundError:
            return None
        return doc["_source"].get("metadata", {}) if doc.get("found") else None

    def matching_ids(self, filters: Mapping[str, str], *, page: int = 1000) -> list[str]:
        """Ids of every drawing matching ``filters`` (sorted), no vector: the filter clause of
        ``knn_query`` run as a plain query, paged with ``search_after`` on ``drawing_id``.

        Raises:
            ValueError: malformed filters.
        """
        clauses = filter_clauses(filters, self.fold_version() if filters else FOLD_VERSION)
        query = {"bool": {"filter": clauses}} if clauses else {"match_all": {}}
        ids: list[str] = []
        after: list[Any] | None = None
        while True:
            body: dict[str, Any] = {"size": page, "_source": False, "query": query, "sort": [{"drawing_id": "asc"}]}
            if after is not None:
                body["search_after"] = after
            hits = self._os.search(index=self.alias, body=body)["hits"]["hits"]
            ids += [h["_id"] for h in hits]
            if len(hits) < page:
                return ids
            after = hits[-1]["sort"]

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
