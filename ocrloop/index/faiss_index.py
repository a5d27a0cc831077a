"""The embedded ``VectorIndex``: faiss HNSW on disk, versioned behind an alias.

Layout of ``home``::

    alias.json                 {"version": "0002-opennsfw-…", "embedder": …, "dim": …, "swapped_at": …}
    versions/<version>/
        meta.json              embedder name, dim, HNSW parameters, creation time
        index.faiss            faiss.IndexIDMap2(IndexHNSWFlat(dim, m, METRIC_INNER_PRODUCT))
        docs.sqlite            string id → int64 label, metadata JSON, folded text per field and
                               its FTS5 trigram index (``SCHEMA``)
    .lock                      fcntl lock serialising writers across processes

Why this shape (DESIGN.md "Facts"): faiss HNSW (M = 16) answers 1M × 512-d queries in ≈ 0.2 ms
with recall@10 ≈ 0.998, but cannot delete. So every upsert gets a fresh int64 *label*; the SQLite
``docs`` table maps each string id to its current label, and a label no row points to is a tombstone
that searches skip (over-fetching so tombstones and filters never starve the top-k). ``compact()``
rebuilds the graph from the live vectors (read back from the HNSW's flat storage, so vectors are not
stored twice). A new embedding model builds a new version next to the live one, backfills it, and
``swap_alias`` flips ``alias.json`` atomically (temp file + ``os.replace``); readers check the alias on
every call (a ``stat``) and reload when it changes, as OpenSearch index aliases behave on AWS.

Metadata and filters (``ocrloop.index.fields``): every upsert adds the title-block fields derived
from the OCR ``text`` (part/drawing number, material, scale, revision, title) and stores each key's
folded text (``fields.fold``: NFKC case folding plus the look-alikes drawings and OCR disagree on,
``⌀``/``Ø``, ``x``/``×``, dashes); ``search(filters=...)`` matches folded substrings, the same
semantics as the OpenSearch adapter. Filtering happens inside the search (``IndexVersion.search``):
broad filters over-fetch graph candidates, selective ones are found through the trigram index and
scored exactly, ``filter_plan`` picks between them from the share of matches among the first
candidates.

Crash consistency: writes save ``index.faiss`` (temp + ``os.replace``) *before* committing SQLite.
A crash in between leaves vectors no row points to, i.e. tombstones, never a row without its vector;
labels are allocated above both the SQLite counter and the largest label in the faiss file.

Scores are inner products of L2-normalised vectors (cosine similarity, in [-1, 1]).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import logging
import math
import os
import re
import shutil
import sqlite3
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import faiss
import numpy as np

from . import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M, UNNAMED
from .fields import FOLD_VERSION, check_filters, filter_texts, flatten_text, with_derived_fields

__all__ = ["FaissIndex", "IndexVersion", "flatten_text", "UNNAMED"]

log = logging.getLogger(__name__)

NORM_TOLERANCE = 1e-3
"""``upsert`` refuses vectors whose L2 norm differs from 1 by more than this (inner product equals
cosine only for unit vectors; float32 normalisation is exact to ≈ 1e-7)."""

SQLITE_BUSY_TIMEOUT_S = 600.0
"""How long a connection waits for another process's write lock (s; ``sqlite3.connect(timeout=)``,
default 5): opening a version folded by an older ``fields.FOLD_VERSION`` folds its texts again
under the lock, 8 s per 100k drawings here (≈ 80 s at 1M), and a second process opening it
meanwhile waits instead of failing with "database is locked"."""

EXACT_FILTER_MAX = 16384
"""A filter matching at most this many live drawings can be answered exactly: the matches are
enumerated through the trigram index (``_match_labels``) and scored against every one of them
(``_exact``), instead of by over-fetching the HNSW graph, which has to walk ≈ 2k / s candidates at
selectivity s: cheap for broad filters, hopeless for selective ones. The enumeration gives up
after this many matches, which bounds what a lone filter broader than it looked costs: ≈ 16k ×
``ENUM_COST_US`` ≈ 50 ms at 1M drawings (with several filters, the driver's rows that fail the
others add to that; ``filter_plan`` weighs them)."""

OVERFETCH = 4
"""A filtered search first fetches ``OVERFETCH × k`` HNSW candidates (plus the tombstone share):
enough when at least ≈ 1 in 4 drawings match. Otherwise ``filter_plan`` walks the graph deeper or
enumerates the matches."""

DEEP_FETCH_MAX = 4096
"""A walk ``filter_plan`` chooses stops at this many candidates (≈ 0.5 % selectivity at k = 10)
and the matches are enumerated instead, while that is the cheaper way on (``ENUM_COST_US`` ×
the driver's rows ≤ ``WALK_COST_US`` × this): a filter matching fewer than k drawings would
otherwise walk the whole graph."""

EXACT_CHUNK = 4096
"""Stored vectors gathered at a time by the exact path (``_exact``): 16 MB at 1024-d."""

WALK_COST_US = 20.0
"""Cost of one candidate of a deep filtered walk (µs): the HNSW search at the widened efSearch
plus the SQL check of its fields. Measured at 1M × 1024-d (efSearch 96, this 2-core machine,
2026-12-05): 19–26 µs over walks of 200–3,200 candidates for the five filters that walk (28–49 µs
for one that most candidates pass)."""

ENUM_COST_US = 3.0
"""Cost of one row of the driving filter on the exact path (µs): its trigram-index hit and join
(1.4–1.9 µs; ≈ 2.2 µs with a second filter checked per row) and the dot product of a match
(0.6–0.9 µs). Same measurement as ``WALK_COST_US``; a phrase query also pays ≈ 9–13 ms at 1M for
the long posting lists of common trigrams (``-00``, ``d-0``)."""

UNFILTERED_FETCH = 1.25
"""An unfiltered search fetches ``1.25 × k × ntotal / live`` candidates: the tombstone share plus
slack so that a fetch rarely needs a second round."""


TRIGRAM_MIN_CHARS = 3
"""Substrings of at least this many characters are looked up in the FTS5 trigram index (a phrase
query, ``_fts_phrase``); shorter ones scan the field's rows with ``instr``: a full-text query of
fewer than 3 characters matches no row with the trigram tokenizer (sqlite.org/fts5.html, "The
Trigram Tokenizer"), and SQLite 3.40.1 (this machine) also returns *no rows* for 2-character GLOB
patterns with a multi-byte character (``*ø2*``) instead of scanning."""

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS docs (
        id TEXT PRIMARY KEY, label INTEGER NOT NULL UNIQUE, metadata TEXT NOT NULL, updated TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS fields (
        id INTEGER PRIMARY KEY, label INTEGER NOT NULL, field TEXT NOT NULL, folded TEXT NOT NULL,
        UNIQUE (label, field))""",
    "CREATE INDEX IF NOT EXISTS fields_by_field ON fields (field)",
    # External-content FTS5 over fields.folded (texts are stored once). The texts are already
    # folded in Python (fields.fold), so the tokenizer must not fold again (case_sensitive 1).
    """CREATE VIRTUAL TABLE IF NOT EXISTS fields_fts USING fts5(
        folded, content='fields', content_rowid='id', tokenize='trigram case_sensitive 1')""",
    """CREATE TRIGGER IF NOT EXISTS fields_ai AFTER INSERT ON fields BEGIN
        INSERT INTO fields_fts (rowid, folded) VALUES (new.id, new.folded); END""",
    """CREATE TRIGGER IF NOT EXISTS fields_ad AFTER DELETE ON fields BEGIN
        INSERT INTO fields_fts (fields_fts, rowid, folded) VALUES ('delete', old.id, old.folded); END""",
    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
)
"""SQLite layout of a version: ``docs`` (string id → int64 label + metadata JSON), ``fields`` (the
folded text of each metadata key, ``fields.filter_texts``), ``fields_fts`` (trigram index
of those texts: substring lookups without scanning, like OpenSearch's ``wildcard`` field) and
``counters`` (``next_label``; ``fold_version``: the ``fields.FOLD_VERSION`` the texts were folded
with, older ones are folded again on open; ``live``: count of ``docs``, kept in step so
``count()`` does not scan a million rows on every search)."""


def filter_plan(k: int, live: int, seen: int, share: float, driver_share: float,
                looked: bool = False) -> tuple[str, float]:
    """Next step of a filtered search after ``seen`` HNSW candidates held fewer than ``k``
    matches, a fraction ``share`` of them; ``driver_share`` estimates the fraction of drawings
    matching the filter that would drive an enumeration (``_driver_share``; ``share`` for a lone
    filter); ``looked``: these candidates came from a second, deeper look.

    Costs: walking the graph deep enough to meet ``k`` matches takes ≈ ``2k / s`` candidates at
    selectivity s (``WALK_COST_US`` each); enumerating the matches reads the driver's
    ≈ ``driver_share × live`` rows (``ENUM_COST_US`` each) and gives up after
    ``EXACT_FILTER_MAX`` matches. With matches seen (s ≈ ``share``), the walk is taken when more
    than ``EXACT_FILTER_MAX`` matches are expected or when it is cheaper; else the enumeration.
    With none seen (s is then probably below ``3 / seen``: the 95 % "rule of three", Hanley &
    Lippman-Hand, JAMA 1983), the matches are enumerated when that costs less than a look 10×
    deeper, else after that look.

    Returns:
        ``("walk", factor)`` (over-fetch ``factor × k`` candidates, then deeper rounds),
        ``("look", factor)`` (one round of ``factor × k``, then plan again) or
        ``("enumerate", 0.0)``.
    """
    rows = driver_share * live
    if share > 0:
        walk = 2.0 * k / share
        if share * live > EXACT_FILTER_MAX or walk * WALK_COST_US <= rows * ENUM_COST_US:
            return "walk", 2.0 / share
        return "enumerate", 0.0
    if looked or rows * ENUM_COST_US <= 10.0 * seen * WALK_COST_US:
        return "enumerate", 0.0
    return "look", 10.0 * OVERFETCH


def _driver(filters: Mapping[str, str]) -> str:
    """The filter an enumeration of matches is driven by: the longest substring, which is the one
    most likely to have a trigram lookup (``TRIGRAM_MIN_CHARS``) and to be rare."""
    return max(filters, key=lambda f: len(filters[f]))


def _driver_share(filters: Mapping[str, str], shares: Mapping[str, float], seen: int) -> float:
    """Estimated fraction of drawings the driving filter (``_driver``) matches, from the share of
    ``seen`` candidates it passed: 1.0 for a needle without a trigram lookup (its enumeration
    reads every row of the field); the share itself for a lone filter (a share of 0 then means
    few matches, which the bounded enumeration finds); else the add-one (Laplace) estimate:
    candidates cluster around the query (a part family shares its material), so one filter
    passing none of them says little about how many drawings it matches."""
    driver = _driver(filters)
    if len(filters[driver]) < TRIGRAM_MIN_CHARS:
        return 1.0
    if len(filters) == 1:
        return shares[driver]
    return (shares[driver] * seen + 1.0) / (seen + 1.0)


def _fts_phrase(needle: str) -> str:
    """``needle`` as one FTS5 phrase: in double quotes, each ``"`` doubled (sqlite.org/fts5.html,
    "FTS5 Strings"). With the trigram tokenizer a phrase matches the rows holding it as a substring,
    from the index alone ("The Trigram Tokenizer"); GLOB ``*needle*`` also re-reads every
    candidate's text (100k drawings, warm: 1,371 matches in 1.9 vs 4.4 ms, 36,673 in 42 vs 101 ms)."""
    return '"' + needle.replace('"', '""') + '"'


SEARCH_THREADS = 1
"""OpenMP threads for a search. A query's HNSW walk is sequential; more threads only add barrier
overhead: 5k × 1024-d, k = 40 on this 2-core machine: 0.085 ms with 1 thread, 0.71 ms with 2."""


@contextlib.contextmanager
def _omp_threads(n: int | None) -> Iterator[None]:
    """Run a faiss call with ``n`` OpenMP threads (``None``: all cores), then restore the setting
    (process-global in faiss; concurrent callers can only change each other's parallelism)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n or os.cpu_count() or 1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fp:
            fp.write(data)
            fp.flush()
            os.fsync(fp.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _as_matrix(vectors: Any, dim: int, what: str) -> np.ndarray:
    """float32 C-contiguous ``[N, dim]`` from ``[dim]`` or ``[N, dim]``; ValueError otherwise."""
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"{what} must be float32 [{dim}] or [N, {dim}], got shape {tuple(np.shape(vectors))}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contain NaN or infinity")
    return np.ascontiguousarray(arr)


class IndexVersion:
    """One index version folder (``home/versions/<version>``): a faiss HNSW graph plus its SQLite
    id/metadata store. Implements the ``VectorIndex`` port; ``FaissIndex`` delegates to the live one
    and ``FaissIndex.begin_version`` returns one to backfill.

    Args:
        folder: the version folder (created with ``meta.json`` when ``meta`` is given).
        meta: for a new version: ``{"embedder", "dim", "m", "ef_construction", "ef_search"}``.
        lock_path: file used with ``fcntl.flock`` to serialise writers across processes.

    Raises:
        FileNotFoundError: ``folder`` has no ``meta.json`` and no ``meta`` was given.
    """

    def __init__(self, folder: Path, meta: dict[str, Any] | None = None, lock_path: Path | None = None) -> None:
        self.folder = Path(folder)
        self._meta_path = self.folder / "meta.json"
        self._index_path = self.folder / "index.faiss"
        self._lock_path = Path(lock_path) if lock_path else self.folder / ".lock"
        if meta is not None and not self._meta_path.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            _atomic_write_bytes(self._meta_path, json.dumps({**meta, "created": _now()}, indent=2).encode())
        if not self._meta_path.exists():
            raise FileNotFoundError(f"not an index version (no meta.json): {self.folder}")
        self.meta = json.loads(self._meta_path.read_text())
        self.version = self.folder.name
        self.dim = int(self.meta["dim"])
        self.embedder_name = str(self.meta["embedder"])
        self.ef_search = int(self.meta.get("ef_search", HNSW_EF_SEARCH))
        self._mutex = threading.RLock()
        self._db = sqlite3.connect(self.folder / "docs.sqlite", check_same_thread=False, isolation_level=None,
                                   timeout=SQLITE_BUSY_TIMEOUT_S)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._create_schema()
        self._index: faiss.IndexIDMap2 | None = None
        self._index_stamp: tuple[int, int] | None = None
        self._ids_cache: tuple[int, np.ndarray] | None = None  # (ntotal, labels); reset by _set_index
        self._load_index()

    def _create_schema(self) -> None:
        """Create the SQLite tables (see ``SCHEMA``) or migrate a version folder written before the
        trigram index: ``fields`` gets an integer key the FTS5 table can reference, empty texts are
        dropped (they never match), the live count is stored."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            columns = [r[1] for r in db.execute("PRAGMA table_info(fields)")]
            if columns and "id" not in columns:
                db.execute("ALTER TABLE fields RENAME TO fields_v1")
                db.execute("DROP INDEX IF EXISTS fields_by_field")
            for statement in SCHEMA:
                db.execute(statement)
            if columns and "id" not in columns:
                db.execute("INSERT INTO fields (label, field, folded) SELECT label, field, folded FROM fields_v1 "
                           "WHERE folded != '' ORDER BY label")
                db.execute("DROP TABLE fields_v1")
            if db.execute("SELECT 1 FROM counters WHERE name='live'").fetchone() is None:
                db.execute("INSERT INTO counters VALUES ('live', (SELECT count(*) FROM docs))")
            row = db.execute("SELECT value FROM counters WHERE name='fold_version'").fetchone()
            if row is None or row[0] != FOLD_VERSION:
                if row is not None or db.execute("SELECT 1 FROM docs LIMIT 1").fetchone():
                    self._refold()
                db.execute("INSERT OR REPLACE INTO counters VALUES ('fold_version', ?)", (FOLD_VERSION,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _refold(self) -> None:
        """Store every drawing's filter texts folded by the current ``fields.fold`` (a version
        written by another ``FOLD_VERSION``), from the metadata in ``docs``: ``fields`` is
        rewritten and its trigram index rebuilt in one go (FTS5 ``rebuild``), inside the caller's
        transaction."""
        db = self._db
        n = db.execute("SELECT count(*) FROM docs").fetchone()[0]
        log.warning("index version %s: folding the filter texts of %d drawings again (fold version %s)",
                    self.folder.name, n, FOLD_VERSION)
        db.execute("DROP TRIGGER IF EXISTS fields_ai")
        db.execute("DROP TRIGGER IF EXISTS fields_ad")
        db.execute("DELETE FROM fields")
        db.executemany("INSERT INTO fields (label, field, folded) VALUES (?, ?, ?)",
                       ((label, key, text) for label, meta in db.execute("SELECT label, metadata FROM docs ORDER BY label")
                        for key, text in filter_texts(json.loads(meta)).items()))
        db.execute("INSERT INTO fields_fts (fields_fts) VALUES ('rebuild')")
        for statement in SCHEMA:  # the triggers again
            db.execute(statement)

    # ---------------------------------------------------------------- faiss file
    def _new_index(self) -> faiss.IndexIDMap2:
        hnsw = faiss.IndexHNSWFlat(self.dim, int(self.meta.get("m", HNSW_M)), faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = int(self.meta.get("ef_construction", HNSW_EF_CONSTRUCTION))
        hnsw.hnsw.efSearch = self.ef_search
        return faiss.IndexIDMap2(hnsw)

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self._index_path.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def _set_index(self, index: faiss.IndexIDMap2) -> None:
        self._index = index
        self._ids_cache = None

    def _load_index(self) -> None:
        stamp = self._stamp()
        self._set_index(faiss.read_index(str(self._index_path)) if stamp else self._new_index())
        self._index_stamp = stamp

    def _refresh(self) -> None:
        """Reload ``index.faiss`` if another process replaced it since we read it."""
        if self._stamp() != self._index_stamp:
            self._load_index()

    def _save_index(self) -> None:
        tmp = self._index_path.with_name(f".index.faiss.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            faiss.write_index(self._index, str(tmp))
            os.replace(tmp, self._index_path)
        finally:
            if tmp.exists():
                tmp.unlink()
        self._index_stamp = self._stamp()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """In-process mutex + cross-process ``flock``; reloads the graph another writer saved."""
        with self._mutex:
            self._lock_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self._lock_path, "a+b") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    self._refresh()
                    yield
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)

    def _labels(self) -> np.ndarray:
        """int64 ``[ntotal]`` labels held by the graph (live and tombstoned), by position.

        Kept between calls until the graph grows or is replaced (copying ``id_map`` costs
        ≈ 0.7 ms at 1M drawings, and the exact path reads it once per ``EXACT_CHUNK``). Read-only.
        """
        ntotal = int(self._index.ntotal)
        cached = self._ids_cache
        if cached is None or cached[0] != ntotal:  # the same graph, grown by add_with_ids
            ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
            ids.flags.writeable = False
            self._ids_cache = cached = (ntotal, ids)
        return cached[1]

    def _vectors(self, labels: np.ndarray) -> np.ndarray:
        """Stored vectors float32 ``[n, D]`` of graph labels int64 ``[n]``, read from the HNSW's
        flat storage (a zero-copy view, then one gather; ``IndexIDMap2.reconstruct_batch`` looks up
        one id at a time: 28 ms vs ≈ 3 ms for 4096 × 1024-d).

        Raises:
            KeyError: a label is not in the graph.
        """
        ids = self._labels()
        # Labels are allocated increasing and compact() re-adds them sorted, so id_map is ascending.
        pos = np.searchsorted(ids, labels)
        if not (pos < ids.size).all() or not (ids[np.minimum(pos, ids.size - 1)] == labels).all():
            order = np.argsort(ids, kind="stable")  # not ascending after all (foreign file): slow path
            pos = order[np.clip(np.searchsorted(ids[order], labels), 0, ids.size - 1)]
            if not (ids[pos] == labels).all():
                raise KeyError(f"labels not in the graph: {sorted(set(labels.tolist()) - set(ids.tolist()))[:5]}")
        storage = faiss.downcast_index(faiss.downcast_index(self._index.index).storage)
        xb = faiss.rev_swig_ptr(storage.get_xb(), int(self._index.ntotal) * self.dim).reshape(-1, self.dim)
        return xb[pos]  # fancy indexing copies: safe after the graph is modified

    def _exact(self, q: np.ndarray, labels: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Exact top-k among ``labels`` (int64 ``[n]``, in the graph) for queries float32 ``[R, D]``:
        each label scores its best row; ``[(label, score)]`` best first, ties in label order.

        Gathers ``EXACT_CHUNK`` stored vectors at a time and multiplies (numpy GEMM), so the copy
        stays ≤ 16 MB at 1024-d. At 1M drawings (2026-12-05, this machine, idle): 2 labels
        0.04 ms, 1,024 0.9 ms, 4,096 5.0 ms, 16,384 24 ms; faiss's flat search with an
        ``IDSelectorBatch`` of the rows took 1.8 / 2.9 / 7.1 / 21 ms (it tests every row).
        """
        labels = np.sort(np.asarray(labels, np.int64))  # ascending: stable sort keeps label order on ties
        scores = np.empty(labels.size, np.float32)
        for start in range(0, labels.size, EXACT_CHUNK):
            part = labels[start:start + EXACT_CHUNK]
            scores[start:start + part.size] = (self._vectors(part) @ q.T).max(axis=1)
        order = np.argsort(-scores, kind="stable")[:k]
        return [(int(labels[i]), float(scores[i])) for i in order]

    def _next_labels(self, n: int) -> np.ndarray:
        row = self._db.execute("SELECT value FROM counters WHERE name='next_label'").fetchone()
        labels = self._labels()
        start = max(row[0] if row else 0, int(labels.max()) + 1 if labels.size else 0)
        self._db.execute("INSERT OR REPLACE INTO counters VALUES ('next_label', ?)", (start + n,))
        return np.arange(start, start + n, dtype=np.int64)

    # ---------------------------------------------------------------- VectorIndex port
    def upsert(self, ids: Sequence[str], vectors: Any, metadata: Sequence[dict[str, Any]] | None = None) -> None:
        """Add or replace drawings (replace = the old label becomes a tombstone).

        Args:
            ids: unique non-empty strings.
            vectors: float32 ``[N, D]`` (or ``[D]`` for one id), L2-normalised.
            metadata: one JSON-serialisable dict per id (``None`` → empty dicts). String/list fields
                (e.g. OCR text) are matched by ``search(filters=...)``.

        Raises:
            ValueError: length mismatch, duplicate or empty ids, wrong shape, non-finite or
                non-normalised vectors, metadata that is not a JSON object.
        """
        ids = list(ids)
        x = _as_matrix(vectors, self.dim, "vectors")
        metadata = [{} for _ in ids] if metadata is None else list(metadata)
        if not (len(ids) == x.shape[0] == len(metadata)):
            raise ValueError(f"upsert needs as many ids ({len(ids)}), vectors ({x.shape[0]}) and metadata ({len(metadata)})")
        if any(not isinstance(i, str) or not i for i in ids):
            raise ValueError("ids must be non-empty strings")
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate ids in one upsert")
        norms = np.linalg.norm(x, axis=1)
        bad = np.flatnonzero(np.abs(norms - 1.0) > NORM_TOLERANCE)
        if bad.size:
            raise ValueError(f"vectors must be L2-normalised; id {ids[bad[0]]!r} has norm {norms[bad[0]]:.4f}")
        rows, texts = [], []
        for doc_id, meta in zip(ids, metadata):
            if not isinstance(meta, Mapping):
                raise ValueError(f"metadata for {doc_id!r} must be a JSON object, got {type(meta).__name__}")
            meta = with_derived_fields(meta)
            try:
                rows.append(json.dumps(meta, ensure_ascii=False, sort_keys=True))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"metadata for {doc_id!r} is not JSON-serialisable: {exc}") from exc
            texts.append(filter_texts(meta))
        if not ids:
            return
        with self._writing():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                labels = self._next_labels(len(ids))
                with _omp_threads(None):  # graph construction parallelises over the batch
                    self._index.add_with_ids(x, labels)
                self._save_index()  # before the commit: a crash leaves only unreferenced vectors
                now = _now()
                added = 0
                for doc_id, label, meta_json, folded in zip(ids, labels.tolist(), rows, texts):
                    old = self._db.execute("SELECT label FROM docs WHERE id=?", (doc_id,)).fetchone()
                    if old:
                        self._db.execute("DELETE FROM fields WHERE label=?", (old[0],))
                    else:
                        added += 1
                    self._db.execute("INSERT OR REPLACE INTO docs VALUES (?, ?, ?, ?)", (doc_id, label, meta_json, now))
                    self._db.executemany("INSERT INTO fields (label, field, folded) VALUES (?, ?, ?)",
                                         [(label, k, v) for k, v in folded.items()])
                self._db.execute("UPDATE counters SET value = value + ? WHERE name='live'", (added,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._load_index()  # drop the in-memory additions; the saved file is the truth
                raise

    def delete(self, ids: Iterable[str]) -> int:
        """Tombstone drawings; unknown ids are ignored. Returns how many were deleted."""
        ids = list(ids)
        with self._writing():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                deleted = 0
                for doc_id in ids:
                    row = self._db.execute("SELECT label FROM docs WHERE id=?", (doc_id,)).fetchone()
                    if row:
                        self._db.execute("DELETE FROM fields WHERE label=?", (row[0],))
                        self._db.execute("DELETE FROM docs WHERE id=?", (doc_id,))
                        deleted += 1
                self._db.execute("UPDATE counters SET value = value - ? WHERE name='live'", (deleted,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return deleted

    def count(self) -> int:
        """Live (non-deleted) drawings (a stored counter: ``SELECT count(*)`` scans the table)."""
        with self._mutex:
            return int(self._db.execute("SELECT value FROM counters WHERE name='live'").fetchone()[0])

    def tombstones(self) -> int:
        """Vectors in the graph that no live id points to (removed by ``compact``)."""
        with self._mutex:
            self._refresh()
            return int(self._index.ntotal) - self.count()

    def get(self, doc_id: str) -> dict[str, Any] | None:
        """Metadata of a live drawing, or ``None``."""
        with self._mutex:
            row = self._db.execute("SELECT metadata FROM docs WHERE id=?", (doc_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def vector(self, doc_id: str) -> np.ndarray | None:
        """The stored float32 ``[D]`` vector of a live drawing, or ``None``."""
        with self._mutex:
            row = self._db.execute("SELECT label FROM docs WHERE id=?", (doc_id,)).fetchone()
            if not row:
                return None
            self._refresh()
            return self._vectors(np.array([row[0]], np.int64))[0]

    def ids(self) -> list[str]:
        """Live ids, sorted."""
        with self._mutex:
            return [r[0] for r in self._db.execute("SELECT id FROM docs ORDER BY id")]

    @staticmethod
    def _per_row_sql(filters: Mapping[str, str], alias: str = "d") -> tuple[str, list[Any]]:
        """SQL condition on ``<alias>.label`` for folded ``filters`` + params: one ``(label, field)``
        key lookup and an ``instr`` per filter (checking known candidates; never a scan)."""
        clauses, params = [], []
        for field, needle in filters.items():
            clauses.append(f"EXISTS (SELECT 1 FROM fields f WHERE f.label = {alias}.label AND f.field = ? "
                           "AND instr(f.folded, ?) > 0)")
            params += [field, needle]
        return " AND ".join(clauses), params

    def _match_labels(self, filters: Mapping[str, str], limit: int) -> np.ndarray | None:
        """Labels int64 ``[n]`` of the live drawings matching all folded ``filters``, or ``None``
        when more than ``limit`` match (the lookup stops there).

        The longest substring drives the lookup (``_driver``): through the trigram index
        (``fields_fts``, a phrase query) when it has ``TRIGRAM_MIN_CHARS`` characters, else a
        scan of that field's rows with ``instr``; the other filters are checked per row.
        """
        field = _driver(filters)
        needle = filters[field]
        if len(needle) >= TRIGRAM_MIN_CHARS:
            # CROSS JOIN pins the join order: the trigram index drives. With a plain JOIN SQLite
            # scans every row of the field and asks FTS5 about each (20k drawings: 3.9 s vs 21 ms).
            sql = ("SELECT m.label FROM fields_fts t CROSS JOIN fields m ON m.id = t.rowid "
                   "WHERE fields_fts MATCH ? AND m.field = ?")
            params: list[Any] = [_fts_phrase(needle), field]
        else:
            sql = "SELECT m.label FROM fields m WHERE m.field = ? AND instr(m.folded, ?) > 0"
            params = [field, needle]
        rest = {f: n for f, n in filters.items() if f != field}
        if rest:
            where, more = self._per_row_sql(rest, alias="m")
            sql += f" AND {where}"
            params += more
        rows = self._db.execute(f"{sql} LIMIT ?", [*params, int(limit) + 1]).fetchall()
        if len(rows) > limit:
            return None
        return np.fromiter((r[0] for r in rows), np.int64, len(rows))

    def matching_ids(self, filters: Mapping[str, str]) -> list[str]:
        """Ids of every live drawing matching ``filters`` (sorted): the filter alone, no vector.

        Raises:
            ValueError: malformed filters (``fields.check_filters``).
        """
        folded = check_filters(filters)
        with self._mutex:
            if not folded:
                return self.ids()
            labels = self._match_labels(folded, self.count() + 1)  # never None: no field has more rows
            ids = []
            for start in range(0, labels.size, 900):
                chunk = labels[start:start + 900].tolist()
                ids += [r[0] for r in self._db.execute(
                    f"SELECT id FROM docs WHERE label IN ({','.join('?' * len(chunk))})", chunk)]
            return sorted(ids)

    def search(self, vector: Any, k: int = 10, filters: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """Top-k live drawings by cosine similarity, optionally restricted by metadata filters.

        Filtering happens *inside* the search (like OpenSearch's efficient k-NN filtering), so a
        filter never returns fewer than ``k`` hits while ``k`` drawings match. A broad filter is
        answered from the first ``OVERFETCH × k`` HNSW candidates; otherwise ``filter_plan``
        chooses between walking the graph deeper until ``k`` candidates match and enumerating
        the matches through the trigram index (at most ``EXACT_FILTER_MAX``) to score them all
        exactly. Equal scores come out in label (insertion) order.

        Args:
            vector: float32 ``[D]``, or a query set ``[R, D]`` (e.g. rotations): each id scores its
                best row.
            k: results wanted (≥ 1).
            filters: ``{field: substring}``, all must match: folded substring (``fields.fold``) of
                the field's folded text (``fields.flatten_text``: list items such as OCR lines are joined by
                newlines). A missing or empty field never matches. Fields derived from the OCR
                text (``fields.extract_fields``: part_number, drawing_number, material, scale,
                revision, title) are filterable like any other key.

        Returns:
            ``[{"id", "score", "metadata"}]``, best first, at most ``k``.

        Raises:
            ValueError: wrong vector shape, non-finite values, ``k < 1``, malformed filters.
        """
        q = _as_matrix(vector, self.dim, "query vector")
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        k = int(k)
        filters = check_filters(filters)
        with self._mutex:
            self._refresh()
            if self._index.ntotal == 0:
                return []
            if not filters:
                return self._results(self._overfetch(q, k, {}, factor=UNFILTERED_FETCH)[0])
            # A broad filter: k matches are among the first OVERFETCH × k candidates. Otherwise
            # the share of matches among them decides (filter_plan).
            live = self.count()
            factor, looked = float(OVERFETCH), False
            while True:
                hits, complete, share, shares = self._overfetch(q, k, filters, factor=factor, max_fetch=0)
                if complete:
                    return self._results(hits)
                seen = int(math.ceil(factor * k))
                if share > 0 or looked:
                    # Several filters: the share if they were independent, when that is higher.
                    # Candidates cluster around the query, so either can be far off; a walk sized
                    # too short costs one more round, one sized too long can cost hundreds of ms.
                    share = max(share, math.prod(shares.values()))
                driver_share = _driver_share(filters, shares, seen)
                step, factor = filter_plan(k, live, seen, share, driver_share, looked)
                if step != "look":
                    break
                looked = True
            if step == "walk":
                # Bounded when the exact path is the cheaper way on: fewer than k drawings may match
                # at all (the walk would then fetch the whole graph), and it answers those.
                bound = DEEP_FETCH_MAX if driver_share * live * ENUM_COST_US <= DEEP_FETCH_MAX * WALK_COST_US else None
                hits, complete, _, _ = self._overfetch(q, k, filters, factor=factor, max_fetch=bound)
                if complete:
                    return self._results(hits)
            # A selective one: find all matches through the trigram index and score them exactly.
            labels = self._match_labels(filters, EXACT_FILTER_MAX)
            if labels is not None:
                return self._results(self._exact(q, labels, k)) if labels.size else []
            # More than EXACT_FILTER_MAX match, so s > EXACT_FILTER_MAX / live: a walk of
            # 2k × live / EXACT_FILTER_MAX candidates meets k of them (deeper rounds if not).
            return self._results(self._overfetch(q, k, filters, factor=max(4.0 * OVERFETCH, 2.0 * live / EXACT_FILTER_MAX))[0])

    def _overfetch(self, q: np.ndarray, k: int, filters: Mapping[str, str], *, factor: float,
                   max_fetch: int | None = None) -> tuple[list[tuple[int, float]], bool, float, dict[str, float]]:
        """HNSW candidates, best first, kept when live and matching the folded ``filters``.

        The first fetch is ``factor × k × ntotal / live`` (tombstones dilute the graph); each
        further round fetches 2–4× more, 1.5× what the hits so far say ``k`` need (at most
        ``max_fetch``; ``0``: one round only; ``None``: up to the whole graph), until ``k``
        hits are found or the whole graph was fetched. efSearch is ``ef_search`` scaled by
        ``fetch / k`` (at most ``2 × fetch``, at least ``fetch``): ``ef_search`` is tuned for the
        top k, and a deeper candidate list needs a wider beam to keep its recall.

        Returns:
            ``([(label, score)] at most k, complete, share, shares)``: ``complete`` is False when
            ``max_fetch`` stopped the rounds before ``k`` hits were found; ``share`` is the
            fraction of the last round's candidates that passed (the filters' selectivity,
            roughly), ``shares`` the fraction that passed each filter alone.
        """
        ntotal = int(self._index.ntotal)
        live = self.count()
        if live == 0:
            return [], True, 0.0, {f: 0.0 for f in filters}
        hnsw = faiss.downcast_index(self._index.index)
        fetch = min(ntotal, int(math.ceil(factor * k * ntotal / live)))
        limit = ntotal if max_fetch is None else min(ntotal, int(max_fetch))
        while True:
            # HNSW returns at most efSearch hits.
            hnsw.hnsw.efSearch = max(self.ef_search, fetch, min(2 * fetch, math.ceil(self.ef_search * fetch / k)))
            try:
                with _omp_threads(SEARCH_THREADS):
                    scores, labels = self._index.search(q, fetch)
            finally:
                hnsw.hnsw.efSearch = self.ef_search
            best: dict[int, float] = {}
            for row_scores, row_labels in zip(scores, labels):
                for sc, lab in zip(row_scores.tolist(), row_labels.tolist()):
                    if lab >= 0 and sc > best.get(lab, -math.inf):
                        best[lab] = sc
            candidates = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))  # ties: label order
            passed: dict[str, int] = {}
            usable = self._usable([lab for lab, _ in candidates], filters, passed)
            hits = [(lab, sc) for lab, sc in candidates if lab in usable]
            seen = max(1, len(candidates))
            share, shares = len(hits) / seen, {f: passed.get(f, 0) / seen for f in filters}
            if len(hits) >= k or fetch >= ntotal:
                return hits[:k], True, share, shares
            # The next round: 1.5× what this round's share says k hits take, 2–4× this one.
            grow = 4.0 if not hits else min(4.0, max(2.0, 1.5 * k / len(hits)))
            if min(int(math.ceil(fetch * grow)), limit) <= fetch:
                return hits[:k], False, share, shares
            fetch = min(int(math.ceil(fetch * grow)), limit)

    def _usable(self, labels: list[int], filters: Mapping[str, str], passed: dict[str, int] | None = None) -> set[int]:
        """The subset of ``labels`` that are live and match the folded ``filters``: one query per
        filter on ``fields`` by its ``(label, field)`` key (rows exist only for live drawings),
        intersected; without filters, liveness from ``docs``. ``passed`` (if given) is filled with
        how many of ``labels`` pass each filter alone (every filter is then queried)."""
        found: set[int] = set()
        for start in range(0, len(labels), 900):  # SQLite's default variable limit is 999 (< 3.32)
            chunk = labels[start:start + 900]
            marks = ",".join("?" * len(chunk))
            if not filters:
                found.update(r[0] for r in self._db.execute(f"SELECT label FROM docs WHERE label IN ({marks})", chunk))
                continue
            passing: set[int] | None = None
            for field, needle in filters.items():
                rows = self._db.execute(f"SELECT label FROM fields WHERE field = ? AND label IN ({marks}) "
                                        "AND instr(folded, ?) > 0", [field, *chunk, needle])
                got = {r[0] for r in rows}
                passing = got if passing is None else passing & got
                if passed is not None:
                    passed[field] = passed.get(field, 0) + len(got)
                elif not passing:
                    break
            found |= passing or set()
        return found

    def _results(self, hits: list[tuple[int, float]]) -> list[dict[str, Any]]:
        out = []
        for label, score in hits:
            row = self._db.execute("SELECT id, metadata FROM docs WHERE label=?", (label,)).fetchone()
            if row:
                out.append({"id": row[0], "score": float(score), "metadata": json.loads(row[1])})
        return out

    def compact(self) -> int:
        """Rebuild the HNSW graph from live vectors only (labels kept). Returns tombstones removed."""
        with self._writing():
            labels = np.array([r[0] for r in self._db.execute("SELECT label FROM docs ORDER BY label")], np.int64)
            removed = int(self._index.ntotal) - labels.size
            if removed == 0:
                return 0
            fresh = self._new_index()
            if labels.size:
                with _omp_threads(None):
                    fresh.add_with_ids(self._vectors(labels), labels)
            self._set_index(fresh)
            self._save_index()
            return removed

    def close(self) -> None:
        with self._mutex:
            self._db.close()


class FaissIndex:
    """``VectorIndex`` over the live version of ``home`` (see the module docstring for the layout).

    Args:
        home: index folder (created).
        dim: embedding width D of versions this object creates (the first one, and
            ``begin_version`` without ``dim``).
        m / ef_construction / ef_search: HNSW parameters of new versions (faiss ``IndexHNSWFlat``;
            M = 16 per DESIGN.md; efConstruction 200 / efSearch 64 are faiss-wiki defaults for
            recall ≥ 0.99). ``ef_search`` is raised per query to the over-fetch size.
        embedder_name: embedder of the first version when ``home`` has no alias yet (pass
            ``Embedder.name``; the default ``UNNAMED`` disables the API's embedder check).

    Raises:
        ValueError: ``dim < 1``.
    """

    def __init__(self, home: Path | str, dim: int, *, m: int = HNSW_M, ef_construction: int = HNSW_EF_CONSTRUCTION,
                 ef_search: int = HNSW_EF_SEARCH, embedder_name: str = UNNAMED) -> None:
        if int(dim) < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        self.home = Path(home)
        self.dim = int(dim)
        self.params = {"m": int(m), "ef_construction": int(ef_construction), "ef_search": int(ef_search)}
        self._alias_path = self.home / "alias.json"
        self._lock_path = self.home / ".lock"
        (self.home / "versions").mkdir(parents=True, exist_ok=True)
        self._mutex = threading.RLock()
        self._live: IndexVersion | None = None
        self._alias_stamp: tuple[int, int] | None = None
        self._open: dict[str, IndexVersion] = {}
        if not self._alias_path.exists():
            with self._flock():
                if not self._alias_path.exists():
                    self.swap_alias(self.begin_version(embedder_name).version)

    @contextlib.contextmanager
    def _flock(self) -> Iterator[None]:
        with open(self._lock_path, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # ---------------------------------------------------------------- versions
    def versions(self) -> list[str]:
        """Version folder names, oldest first."""
        return sorted(p.name for p in (self.home / "versions").iterdir() if (p / "meta.json").exists())

    def alias(self) -> dict[str, Any]:
        """Contents of ``alias.json`` (``version``, ``embedder``, ``dim``, ``swapped_at``)."""
        return json.loads(self._alias_path.read_text())

    def _version(self, version: str) -> IndexVersion:
        with self._mutex:
            if version not in self._open:
                folder = self.home / "versions" / version
                if not (folder / "meta.json").exists():
                    raise KeyError(f"no index version {version!r} in {self.home}")
                self._open[version] = IndexVersion(folder, lock_path=self._lock_path)
            return self._open[version]

    def begin_version(self, embedder_name: str, dim: int | None = None) -> IndexVersion:
        """Create an empty version for ``embedder_name`` to backfill; the alias is not touched.

        Returns:
            the ``IndexVersion`` writer; call ``swap_alias(writer.version)`` once it is filled.
        """
        if not embedder_name:
            raise ValueError("embedder_name must be non-empty")
        with self._mutex:
            existing = self.versions()
            n = max([int(v.split("-", 1)[0]) for v in existing if v.split("-", 1)[0].isdigit()], default=0) + 1
            slug = re.sub(r"[^A-Za-z0-9._-]+", "-", embedder_name).strip("-")[:80] or "embedder"
            version = f"{n:04d}-{slug}"
            meta = {"embedder": embedder_name, "dim": int(dim or self.dim), **self.params}
            writer = IndexVersion(self.home / "versions" / version, meta, lock_path=self._lock_path)
            self._open[version] = writer
            return writer

    def swap_alias(self, version: str) -> None:
        """Point the alias at ``version`` atomically (temp file + ``os.replace``).

        Raises:
            KeyError: no such version.
        """
        target = self._version(version)
        body = {"version": version, "embedder": target.embedder_name, "dim": target.dim, "swapped_at": _now()}
        _atomic_write_bytes(self._alias_path, json.dumps(body, indent=2).encode())

    def drop_version(self, version: str) -> None:
        """Delete a version folder that the alias does not point to.

        Raises:
            ValueError: it is the live version.
            KeyError: no such version.
        """
        if version == self.alias()["version"]:
            raise ValueError(f"{version} is live; swap the alias first")
        folder = self.home / "versions" / version
        if not folder.exists():
            raise KeyError(f"no index version {version!r}")
        with self._mutex:
            opened = self._open.pop(version, None)
            if opened:
                opened.close()
            shutil.rmtree(folder)

    def live(self) -> IndexVersion:
        """The version the alias points to, reloaded when ``alias.json`` changed on disk."""
        st = self._alias_path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        with self._mutex:
            if self._live is None or stamp != self._alias_stamp:
                self._live = self._version(self.alias()["version"])
                self._alias_stamp = stamp
            return self._live

    @property
    def version(self) -> str:
        return self.live().version

    @property
    def embedder_name(self) -> str:
        """Embedder the live version was built with (queries must use the same one)."""
        return self.live().embedder_name

    # ---------------------------------------------------------------- VectorIndex port (live version)
    def upsert(self, ids: Sequence[str], vectors: Any, metadata: Sequence[dict[str, Any]] | None = None) -> None:
        """See ``IndexVersion.upsert``."""
        self.live().upsert(ids, vectors, metadata)

    def delete(self, ids: Iterable[str]) -> int:
        """See ``IndexVersion.delete``."""
        return self.live().delete(ids)

    def search(self, vector: Any, k: int = 10, filters: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """See ``IndexVersion.search``."""
        return self.live().search(vector, k, filters)

    def count(self) -> int:
        return self.live().count()

    def matching_ids(self, filters: Mapping[str, str]) -> list[str]:
        """See ``IndexVersion.matching_ids``."""
        return self.live().matching_ids(filters)

    def get(self, doc_id: str) -> dict[str, Any] | None:
        return self.live().get(doc_id)

    def vector(self, doc_id: str) -> np.ndarray | None:
        return self.live().vector(doc_id)

    def compact(self) -> int:
        """See ``IndexVersion.compact``."""
        return self.live().compact()

    def close(self) -> None:
        with self._mutex:
            for v in self._open.values():
                v.close()
            self._open.clear()
            self._live = None
