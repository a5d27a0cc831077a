"""Data for continual training and its benchmark: new-domain lines, the replay pool and the
old-domain regression set, written as training-job channels with leak-free splits.

* **New domain** = real drawing lines + rendered symbol lines.
  - Real lines: ``ocrloop.data.corpus.build_corpus`` (DXF drawings rendered with the CAD strings as
    ground truth) cut by ``line_crops``; split **by source drawing** (``source_id``: every sheet and
    tile of one DXF lands on the same side), so no drawing of the test set is trained on.
  - Symbol lines: ``ocrloop.model.symbols`` (⌀ ⌴ ⌵ ↧ ⌖ ⏥ ⌭ ⊥ ∥ ◎ ⌒ in annotations); split **by text
    string**: a test string is never rendered for training (in any font).
* **Old domain**: general Latin + Chinese printed lines (``ocrloop.data.base_pool``). The regression
  set keeps only lines the v0 model reads exactly (``filter_readable``), so a drop is forgetting,
  not difficulty; the replay pool is drawn from *other* texts (disjoint by string).

``write_channel`` lays a set out as a channel folder (``images/*.png`` + ``manifest.jsonl`` with
``image``, ``text``, ``origin``, ``kind`` and ``group``), the format ``ocrloop.model.train`` reads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

DATA_VERSION = 3
"""Bump when the content of ``build_continual_data`` changes (cache key)."""


@dataclasses.dataclass(frozen=True)
class Line:
    """One line crop: ``image`` uint8 BGR ``[h, w, 3]``, ``text`` label, ``kind`` (``corpus`` /
    ``symbol`` / ``base``) and ``group``: the split unit (source drawing id or text string)."""

    image: np.ndarray
    text: str
    kind: str
    group: str


class LeakError(AssertionError):
    """A split unit (drawing or text) is on both sides of a split."""


def assert_disjoint(a: Iterable[Line], b: Iterable[Line]) -> None:
    """Raise ``LeakError`` if a ``group`` or (for rendered kinds) a text occurs in both."""
    ga = {ln.group for ln in a}
    shared = ga & {ln.group for ln in b}
    if shared:
        raise LeakError(f"{len(shared)} split groups on both sides, e.g. {sorted(shared)[:3]}")


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


# --- new domain: real drawings ----------------------------------------------------------------------


def corpus_lines(max_drawings: int | None = None) -> list[Line]:
    """Every unique text line of the drawing corpus as a crop (``group`` = source DXF id).
    Crops smaller than 4 px on a side and empty labels are left out."""
    from ocrloop.data.corpus import build_corpus, line_crops

    drawings = build_corpus(max_drawings)
    source = {d.drawing_id: d.source_id for d in drawings}
    out = []
    for drawing_id, item, crop in line_crops(drawings):
        if crop.ndim != 3 or min(crop.shape[:2]) < 4 or not item.text.strip():
            continue
        out.append(Line(crop, item.text, "corpus", source[drawing_id]))
    return out


def split_by_group(lines: Sequence[Line], test_share: float, seed: int, max_group_share: float = 0.5
                   ) -> tuple[list[Line], list[Line]]:
    """Split ``lines`` so each ``group`` is wholly on one side.

    Groups are visited in a seeded hash order and go to test while the test side holds fewer than
    ``test_share`` of the lines; a group larger than ``max_group_share × test_share × total`` always
    goes to train (one huge drawing must not be the whole test set).

    Returns:
        ``(train, test)``. Raises ``ValueError`` for ``test_share`` outside (0, 1).
    """
    if not 0 < test_share < 1:
        raise ValueError(f"test_share {test_share} outside (0, 1)")
    sizes: dict[str, int] = {}
    for ln in lines:
        sizes[ln.group] = sizes.get(ln.group, 0) + 1
    target = test_share * len(lines)
    test_groups: set[str] = set()
    n_test = 0
    for g in sorted(sizes, key=lambda g: _rank(seed, g)):
        if n_test >= target:
            break
        if sizes[g] > max_group_share * target:
            continue
        test_groups.add(g)
        n_test += sizes[g]
    train = [ln for ln in lines if ln.group not in test_groups]
    test = [ln for ln in lines if ln.group in test_groups]
    return train, test


def subsample(lines: Sequence[Line], n: int, seed: int) -> list[Line]:
    """``n`` lines (all when fewer) chosen by a seeded permutation, original order kept."""
    if n >= len(lines):
        return list(lines)
    keep = sorted(np.random.default_rng([seed, 17]).permutation(len(lines))[:n])
    return [lines[i] for i in keep]


# --- new domain: symbol lines ------------------------------------------------------------------------


def symbol_sets(n_train: int, n_test: int, seed: int, train_copies: int = 2) -> tuple[list[Line], list[Line]]:
    """Rendered symbol lines split by text: ``n_train`` strings (each rendered ``train_copies``
    times in different fonts/styles) and ``n_test`` other strings (rendered once). The 11
    single-symbol strings are in the training part."""
    from .symbols import render_symbol_lines, symbol_texts

    texts = symbol_texts(n_train + n_test, seed)
    head, rest = texts[:11], texts[11:]
    order = np.random.default_rng([seed, 5]).permutation(len(rest))
    rest = [rest[i] for i in order]
    train_texts = head + rest[: max(0, n_train - len(head))]
    test_texts = rest[max(0, n_train - len(head)) :][:n_test]
    train = [Line(s.image, s.text, "symbol", s.text) for s in render_symbol_lines(train_texts, seed + 1, train_copies)]
    test = [Line(s.image, s.text, "symbol", s.text) for s in render_symbol_lines(test_texts, seed + 2, 1)]
    return train, test


# --- old domain -------------------------------------------------------------------------------------


def base_sets(n_pool: int, n_old: int, seed: int, recognize: Callable[[list[np.ndarray]], list[str]] | None = None
              ) -> tuple[list[Line], list[Line], dict]:
    """The replay pool and the old-domain regression set from ``render_base_lines``.

    The first distinct texts are offered to ``recognize`` (default: the v0 ONNX model,
    ``base_pool.default_recognizer``) until ``n_old`` are read exactly, both in a batch
    (``filter_readable``) and alone (v0's reading of a few lines depends on the batch's padded
    width); the pool takes ``n_pool`` lines among the remaining texts, so the two never share a
    string.

    Returns:
        ``(pool, old_test, report)``; ``report`` counts candidates, kept and dropped lines.

    Raises:
        RuntimeError: not enough readable lines among the rendered candidates.
    """
    from ocrloop.data.base_pool import default_recognizer, filter_readable, render_base_lines

    rendered = render_base_lines(n_pool + 3 * n_old + 64, seed)
    distinct, seen = [], set()
    for b in rendered:
        if b.text not in seen:
            seen.add(b.text)
            distinct.append(b)
    recognize = recognize or default_recognizer()
    kept, dropped, unstable, offered = [], 0, 0, 0
    while len(kept) < n_old and offered < len(distinct):
        chunk = distinct[offered : offered + max(64, n_old - len(kept))]
        offered += len(chunk)
        ok, bad = filter_readable(chunk, recognize)
        dropped += len(bad)
        # PP-OCR's reading of a line can change with the padded batch width (the SVTR neck attends
        # over the padding): keep only lines read exactly in a batch *and* alone.
        for b in ok:
            if recognize([b.image])[0].strip() == b.text.strip():
                kept.append(b)
            else:
                unstable += 1
    if len(kept) < n_old:
        raise RuntimeError(f"only {len(kept)} of {offered} old-domain lines are read exactly by v0")
    old = kept[:n_old]
    used = {b.text for b in distinct[:offered]}
    pool_src = [b for b in distinct[offered:] if b.text not in used][:n_pool]
    if len(pool_src) < n_pool:
        more = render_base_lines(2 * (n_pool - len(pool_src)) + 64, seed + 1)
        have = used | {b.text for b in pool_src}
        for b in more:
            if len(pool_src) >= n_pool:
                break
            if b.text not in have:
                have.add(b.text)
                pool_src.append(b)
    pool = [Line(b.image, b.text, "base", b.text) for b in pool_src]
    old_test = [Line(b.image, b.text, "base", b.text) for b in old]
    report = {"offered": offered, "readable": len(kept), "unreadable": dropped, "batch_dependent": unstable,
              "old_test": len(old_test),
              "pool": len(pool), "langs_old": _count(b.lang for b in old), "langs_pool": _count(b.lang for b in pool_src)}
    return pool, old_test, report


def _count(items: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for it in items:
        out[it] = out.get(it, 0) + 1
    return out


# --- channels ---------------------------------------------------------------------------------------


def write_channel(channel_dir: str | Path, lines: Sequence[Line], origin: str) -> Path:
    """Write ``images/NNNNNN.png`` + ``manifest.jsonl`` (``image``, ``text``, ``origin``, ``kind``,
    ``group``) into ``channel_dir`` (replaced if present). Raises ``RuntimeError`` if a PNG cannot
    be written."""
    import cv2

    channel_dir = Path(channel_dir)
    if channel_dir.exists():
        shutil.rmtree(channel_dir)
    (channel_dir / "images").mkdir(parents=True)
    rows = []
    for i, ln in enumerate(lines):
        rel = f"images/{i:06d}.png"
        if not cv2.imwrite(str(channel_dir / rel), ln.image):
            raise RuntimeError(f"cannot write {channel_dir / rel}")
        rows.append({"image": rel, "text": ln.text, "origin": origin, "kind": ln.kind, "group": ln.group})
    (channel_dir / "manifest.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return channel_dir


def read_rows(channel_dir: str | Path) -> list[dict]:
    """The manifest rows of a channel written by ``write_channel``."""
    text = (Path(channel_dir) / "manifest.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def link_channel(channel_dir: str | Path, sources: Sequence[tuple[Path, dict]]) -> Path:
    """A channel made of rows of other channels: ``sources`` = ``(source channel dir, row)``; the
    images are hard-linked (copied across file systems) into ``channel_dir/images``, so the channel
    is self-contained as ``read_manifest`` requires."""
    channel_dir = Path(channel_dir)
    if channel_dir.exists():
        shutil.rmtree(channel_dir)
    (channel_dir / "images").mkdir(parents=True)
    rows = []
    for i, (src_dir, row) in enumerate(sources):
        rel = f"images/{i:06d}.png"
        src = Path(src_dir) / row["image"]
        try:
            os.link(src, channel_dir / rel)
        except OSError:
            shutil.copyfile(src, channel_dir / rel)
        rows.append({**row, "image": rel})
    (channel_dir / "manifest.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return channel_dir


@dataclasses.dataclass(frozen=True)
class DataSizes:
    """Sizes of ``build_continual_data`` (lines). ``corpus_train``/``corpus_test`` cap the drawing
    lines after the by-drawing split (seeded subsample); symbol counts are *strings*."""

    corpus_train: int = 1200
    corpus_test: int = 500
    corpus_test_share: float = 0.25
    symbol_train: int = 400
    symbol_test: int = 200
    symbol_train_copies: int = 2
    old_test: int = 400
    pool: int = 12000


def build_continual_data(root: str | Path, sizes: DataSizes = DataSizes(), seed: int = 17,
                         log: Callable[[str], None] = print) -> dict:
    """Build (or reuse) the channels under ``root/<fingerprint>/``:

    * ``new_train`` (origin ``new``): drawing lines of the train drawings + symbol train strings;
    * ``pool`` (origin ``base``): general-text replay pool (also the "old data" of full retraining);
    * ``new_test``: drawing lines of the held-out drawings (``kind`` corpus) + held-out symbol
      strings (``kind`` symbol);
    * ``old_test``: the old-domain regression set (v0 reads every line).

    Returns:
        ``{"dir": Path, "channels": {name: Path}, "report": {...}}`` (report: sizes, split units,
        v0 readability filter counts, leak checks).

    Raises:
        LeakError: a split unit on both sides (never expected; checked before writing).
    """
    from . import symbols

    # the symbol lines depend on the fonts present (a machine without Symbola draws them in other
    # fonts): a font set other than the full one (what scripts/setup.sh installs) is part of the
    # key, so such data never passes for the usual one, which keeps the key it has always had
    fonts = sorted(f.name for f in symbols.candidate_fonts())
    key = json.dumps({"v": DATA_VERSION, "seed": seed, **dataclasses.asdict(sizes)}, sort_keys=True)
    if fonts != sorted(f.name for f in symbols.all_candidate_fonts()):
        key += json.dumps(fonts)
    out = Path(root) / hashlib.sha256(key.encode()).hexdigest()[:12]
    names = ("new_train", "pool", "new_test", "old_test")
    done = out / "report.json"
    if done.is_file():
        return {"dir": out, "channels": {n: out / n for n in names}, "report": json.loads(done.read_text())}
    log(f"building continual-learning data in {out}")
    corpus = corpus_lines()
    c_train, c_test = split_by_group(corpus, sizes.corpus_test_share, seed)
    assert_disjoint(c_train, c_test)
    c_train = subsample(c_train, sizes.corpus_train, seed)
    c_test = subsample(c_test, sizes.corpus_test, seed + 1)
    s_train, s_test = symbol_sets(sizes.symbol_train, sizes.symbol_test, seed)
    assert_disjoint(s_train, s_test)
    log(f"corpus {len(c_train)} train / {len(c_test)} test lines; symbols {len(s_train)} / {len(s_test)}")
    pool, old_test, base_report = base_sets(sizes.pool, sizes.old_test, seed)
    assert_disjoint(pool, old_test)
    log(f"old domain: {len(old_test)} readable lines, pool {len(pool)}")
    out.mkdir(parents=True, exist_ok=True)
    write_channel(out / "new_train", c_train + s_train, "new")
    write_channel(out / "pool", pool, "base")
    write_channel(out / "new_test", c_test + s_test, "new")
    write_channel(out / "old_test", old_test, "base")
    report = {
        "sizes": dataclasses.asdict(sizes),
        "seed": seed,
        "lines": {"corpus_train": len(c_train), "corpus_test": len(c_test), "symbol_train": len(s_train),
                  "symbol_test": len(s_test), "pool": len(pool), "old_test": len(old_test)},
        "corpus_drawings": {"train": sorted({ln.group for ln in c_train}), "test": sorted({ln.group for ln in c_test})},
        "old_domain_filter": base_report,
        "leak_checks": "drawings (corpus) and strings (symbols, base) disjoint between train and test",
    }
    done.write_text(json.dumps(report, indent=1, ensure_ascii=False))
    return {"dir": out, "channels": {n: out / n for n in names}, "report": report}
