"""Rendered drawing-annotation lines with GD&T and hole-callout symbols (⌀ ⌴ ⌵ ↧ ⌖ ⏥ ⌭ ⊥ ∥ ◎ ⌒).

The real drawings of ``ocrloop.data.corpus`` hardly use these symbols (their CAD text writes
``%%c``/``∅`` or nothing), so they are rendered here. Texts follow ASME Y14.5 / ISO 1101 usage:
hole callouts (``⌴⌀11 ↧6.5``, ``4× ⌀6.6 THRU ⌵⌀12×90°``) and feature-control-frame contents
(``⌖ ⌀0.1 A B``, ``⊥ 0.05 A``, ``⏥ 0.02``), sometimes drawn inside a frame with cell dividers
(the frame is not part of the label), and single-symbol cells.

Fonts (``SYMBOL_FONTS``, those present on the machine): Symbola (Debian ``fonts-symbola``: all 11
symbols), osifont (Debian ``fonts-osifont``, ISO 3098 lettering: all but ⊥ ∥), STIX General and
DejaVu Sans / Sans Mono / Serif (shipped with matplotlib) and WenQuanYi Micro Hei. A line is only
drawn in a font whose cmap has every character (fontTools) *and* whose glyph for each symbol puts
ink on the page (Pillow); coverage found on this machine::

    Symbola   ⌀⌴⌵↧⌖⏥⌭⊥∥◎⌒      osifont  ⌀⌴⌵↧⌖⏥⌭◎⌒      STIXGeneral ⌀↧⌖⏥⌭⊥∥◎⌒
    DejaVuSans ⌀↧⏥⊥∥◎          DejaVuSansMono ⌀⌵↧⊥◎⌒     DejaVuSerif ↧⊥∥◎     WQY ↧⊥∥◎⌒

Rendering style follows ``ocrloop.data.base_pool`` (18–40 px, grey 0–70 on 215–255, light blur on a
third, Gaussian noise σ ≤ 6). Deterministic for a given seed, Pillow and font set.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Sequence

import numpy as np

from .continual import DRAWING_SYMBOLS

SYMBOLA = Path("/usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf")
OSIFONT = Path("/usr/share/fonts/truetype/osifont/osifont.ttf")
WQY_MICROHEI = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
MPL_FONTS = ("STIXGeneral.ttf", "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf",
             "DejaVuSansMono.ttf", "DejaVuSerif.ttf")
"""matplotlib's bundled fonts used here (``mpl-data/fonts/ttf``); LastResortHE is *not* one: it
draws placeholder boxes for every code point."""

DATUMS = "ABCDEFGH"
TOLERANCES = ("0.005", "0.01", "0.02", "0.03", "0.04", "0.05", "0.06", "0.08", "0.1", "0.12", "0.15",
              "0.2", "0.25", "0.3", "0.4", "0.5")


@dataclasses.dataclass(frozen=True)
class SymbolLine:
    """One rendered line: ``image`` uint8 BGR ``[h, w, 3]``, its ``text`` label, the ``font`` file
    name, ``size_px`` and whether a feature-control ``frame`` was drawn around it."""

    image: np.ndarray
    text: str
    font: str
    size_px: int
    frame: bool


def all_candidate_fonts() -> list[Path]:
    """Every symbol-capable font file this module looks for, present or not (see the module doc)."""
    import matplotlib

    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return [SYMBOLA, OSIFONT, *(ttf / f for f in MPL_FONTS), WQY_MICROHEI]


def candidate_fonts() -> list[Path]:
    """The symbol-capable font files present on this machine (see the module doc)."""
    return [p for p in all_candidate_fonts() if p.is_file()]


@functools.lru_cache(maxsize=None)
def font_coverage(path: str) -> frozenset[str]:
    """Characters of ``DRAWING_SYMBOLS`` + ASCII letters/digits/punctuation + ``×°±`` that the font
    at ``path`` maps (fontTools cmap) *and* draws with ink (Pillow, at 32 px)."""
    from fontTools.ttLib import TTFont
    from PIL import Image, ImageDraw, ImageFont

    font = TTFont(path, fontNumber=0, lazy=True)
    cmap = set(font.getBestCmap())
    font.close()
    pil = ImageFont.truetype(path, 32, index=0)
    wanted = DRAWING_SYMBOLS + "".join(chr(c) for c in range(0x21, 0x7F)) + "×°±"
    out = set()
    for ch in wanted:
        if ord(ch) not in cmap:
            continue
        left, top, right, bottom = pil.getbbox(ch)
        if right - left < 1 or bottom - top < 1:
            continue
        img = Image.new("L", (right - left + 4, bottom - top + 4), 255)
        ImageDraw.Draw(img).text((2 - left, 2 - top), ch, font=pil, fill=0)
        if np.asarray(img).min() < 128:
            out.add(ch)
    return frozenset(out)


def fonts_for(text: str, fonts: Sequence[Path] | None = None) -> list[Path]:
    """Fonts (of ``fonts``, default ``candidate_fonts()``) that draw every non-space character of
    ``text``."""
    chars = {ch for ch in text if not ch.isspace()}
    return [f for f in (fonts or candidate_fonts()) if chars <= font_coverage(str(f))]


# --- texts ---------------------------------------------------------------------------------------


def _num(rng: np.random.Generator, lo: float, hi: float) -> str:
    value = rng.uniform(lo, hi)
    decimals = int(rng.choice([0, 0, 1, 1, 2]))
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _datums(rng: np.random.Generator, k: int) -> list[str]:
    return list(rng.choice(list(DATUMS), size=k, replace=False))


def _tolerance(rng: np.random.Generator) -> str:
    """A geometric tolerance value: one of the common ``TOLERANCES`` or, as often, any value in
    0.002–0.6 mm written with 2–3 decimals and no trailing zeros (ISO 1101 frames: ``0.015``)."""
    if rng.random() < 0.5:
        return str(rng.choice(TOLERANCES))
    decimals = int(rng.choice([2, 3]))
    value = round(float(rng.uniform(0.002, 0.6)), decimals) or 10.0 ** -decimals
    return f"{value:.{decimals}f}".rstrip("0").rstrip(".")


def symbol_text(rng: np.random.Generator) -> str:
    """One random annotation with at least one ``DRAWING_SYMBOLS`` character.

    Thirteen kinds of annotation are equally likely; flatness (⏥) and cylindricity (⌭) frames are
    a kind each, so no symbol is a rarity only because it shares a kind with another."""
    times = str(rng.choice(["×", "X", "x"]))
    sep = " " if rng.random() < 0.8 else ""
    d = _num(rng, 2, 40)
    big = _num(rng, float(d) + 2, float(d) + 20)
    depth = _num(rng, 1, 30)
    tol = _tolerance(rng)
    count = f"{int(rng.integers(2, 9))}{times}{sep}" if rng.random() < 0.35 else ""
    kind = int(rng.integers(0, 13))
    if kind == 0:
        return f"{count}⌀{d} THRU" if rng.random() < 0.5 else f"{count}⌀{d}{sep}↧{depth}"
    if kind == 1:
        return f"{count}⌀{d}{sep}⌴⌀{big}{sep}↧{depth}" if rng.random() < 0.6 else f"⌴⌀{big}{sep}↧{depth}"
    if kind == 2:
        angle = str(rng.choice(["90°", "82°", "100°", "120°", "60°"]))
        return f"{count}⌀{d}{sep}⌵⌀{big}{sep}{times}{sep}{angle}" if rng.random() < 0.5 else f"⌵⌀{big}{times}{angle}"
    if kind == 3:
        mod = "⌀" if rng.random() < 0.8 else ""
        return " ".join(["⌖", f"{mod}{tol}", *_datums(rng, int(rng.integers(1, 4)))])
    if kind == 4:
        return f"⏥{sep}{tol}"
    if kind == 12:
        return f"⌭{sep}{tol}"
    if kind == 5:
        return " ".join(["⊥", f"{'⌀' if rng.random() < 0.3 else ''}{tol}", *_datums(rng, 1)])
    if kind == 6:
        return " ".join(["∥", tol, *_datums(rng, int(rng.integers(1, 3)))])
    if kind == 7:
        return " ".join(["◎", f"⌀{tol}", *_datums(rng, 1)])
    if kind == 8:
        return " ".join(["⌒", tol, *_datums(rng, int(rng.integers(0, 3)))])
    if kind == 9:
        return str(rng.choice(list(DRAWING_SYMBOLS)))
    if kind == 10:
        return f"{str(rng.choice(list(DRAWING_SYMBOLS)))}{sep}{tol}"
    return f"⌀{d} H7{sep}{str(rng.choice(['⊥', '◎', '⌖']))}{sep}⌀{tol}{sep}{_datums(rng, 1)[0]}"


def symbol_texts(n: int, seed: int) -> list[str]:
    """``n`` distinct ``symbol_text`` strings (deterministic). Every symbol of
    ``DRAWING_SYMBOLS`` occurs in the result when ``n ≥ 11`` (single-symbol lines come first).

    Raises:
        ValueError: negative ``n``; RuntimeError: fewer than ``n`` distinct strings after many
        draws."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng([seed, 1101])
    out: list[str] = []
    seen: set[str] = set()
    if n >= len(DRAWING_SYMBOLS):
        out = list(DRAWING_SYMBOLS)
        seen = set(out)
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 200 * n + 1000:
            raise RuntimeError(f"only {len(out)} distinct symbol texts after {tries} draws")
        t = symbol_text(rng)
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


# --- rendering -------------------------------------------------------------------------------------


def render_symbol_line(text: str, rng: np.random.Generator, fonts: Sequence[Path] | None = None,
                       frame_prob: float = 0.25) -> SymbolLine:
    """Draw ``text`` in a random font that covers it (``fonts_for``).

    With probability ``frame_prob`` (and a text with spaces) a feature-control frame is drawn:
    a rectangle around the text and a divider in the middle of every space.

    Raises:
        ValueError: empty text or no font draws every character.
    """
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    if not text.strip():
        raise ValueError("empty text")
    usable = fonts_for(text, fonts)
    if not usable:
        raise ValueError(f"no font draws every character of {text!r}")
    font_path = usable[int(rng.integers(len(usable)))]
    size = int(rng.integers(18, 41))
    font = ImageFont.truetype(str(font_path), size, index=0)
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
    frame = " " in text.strip() and rng.random() < frame_prob
    margin = int(rng.integers(4, 9)) if frame else 0
    pad = rng.integers(2, 9, size=4) + margin
    w = int(right - left + pad[0] + pad[2])
    h = int(bottom - top + pad[1] + pad[3])
    bg = int(rng.integers(215, 256))
    fg = int(rng.integers(0, 71))
    img = Image.new("L", (w, h), bg)
    draw = ImageDraw.Draw(img)
    x0, y0 = int(pad[0] - left), int(pad[1] - top)
    draw.text((x0, y0), text, fill=fg, font=font)
    if frame:
        lw = int(rng.integers(1, 3))
        box = (int(pad[0]) - margin, int(pad[1]) - margin, w - int(pad[2]) + margin - 1, h - int(pad[3]) + margin - 1)
        draw.rectangle(box, outline=fg, width=lw)
        for i, ch in enumerate(text):
            if ch == " " and i > 0:
                mid = x0 + (font.getlength(text[:i]) + font.getlength(text[: i + 1])) / 2
                draw.line([(mid, box[1]), (mid, box[3])], fill=fg, width=lw)
    if rng.random() < 1 / 3:
        img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 0.8))))
    arr = np.asarray(img, dtype=np.float32)
    arr = arr + rng.normal(0, float(rng.uniform(0, 6)), size=arr.shape).astype(np.float32)
    gray = np.clip(np.round(arr), 0, 255).astype(np.uint8)
    image = np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    return SymbolLine(image, text, font_path.name, size, bool(frame))


def render_symbol_lines(texts: Sequence[str], seed: int, copies: int = 1, frame_prob: float = 0.25) -> list[SymbolLine]:
    """Render each text ``copies`` times (each copy draws its own font, size and style), in order.
    Deterministic for ``(texts, seed, copies)``."""
    rng = np.random.default_rng([seed, 3098])
    fonts = candidate_fonts()
    return [render_symbol_line(t, rng, fonts, frame_prob) for t in texts for _ in range(copies)]
