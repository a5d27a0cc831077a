"""Render text lines as BGR crops (the equivalence check and the tests use real rendered lines).

Fonts: DejaVu Sans (ships with matplotlib: ``matplotlib/mpl-data/fonts/ttf/DejaVuSans.ttf``; covers
Latin and the drawing symbols ⌀ ± ° ×) and WenQuanYi Micro Hei
(``/usr/share/fonts/truetype/wqy/wqy-microhei.ttc``, Debian ``fonts-wqy-microhei``) for CJK.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WQY_MICROHEI = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")

EQUIVALENCE_LINES = [
    "M12x1.75 THREAD DEPTH 20",
    "⌀25 H7 ±0.02",
    "R5 TYP. 45° CHAMFER 2×45°",
    "技术要求 未注倒角C1",
    "材料 Q235 表面处理 镀锌",
    "SCALE 1:2 SHEET 3 OF 5",
    "Ra 3.2 ⌀8.5 THRU ALL",
    "DRAWING NO. A-10234 REV B",
]
"""Lines for the ONNX-vs-Paddle equivalence check: Latin, Chinese and ⌀/±/°/× drawing text."""


def dejavu_sans() -> Path:
    """Path of matplotlib's bundled DejaVu Sans. Raises ``FileNotFoundError`` if missing."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


def has_cjk(text: str) -> bool:
    """True if ``text`` holds a CJK Unified Ideograph or CJK punctuation (U+3000–U+9FFF)."""
    return any("\u3000" <= ch <= "\u9fff" for ch in text)


def default_font(text: str) -> Path:
    """WenQuanYi Micro Hei for CJK text, DejaVu Sans otherwise."""
    if has_cjk(text):
        if not WQY_MICROHEI.is_file():
            raise FileNotFoundError(WQY_MICROHEI)
        return WQY_MICROHEI
    return dejavu_sans()


def render_line(text: str, font: str | Path | None = None, size: int = 32, pad: int = 6) -> np.ndarray:
    """Render ``text`` black on white: BGR uint8 ``[H, W, 3]`` tightly cropped around the ink
    plus ``pad`` px. ``size`` is the font size in px (32 px gives ≈ 40 px tall crops).

    Raises:
        ValueError: empty ``text``.
    """
    from PIL import Image, ImageDraw, ImageFont

    if not text.strip():
        raise ValueError("empty text")
    pil_font = ImageFont.truetype(str(font or default_font(text)), size)
    left, top, right, bottom = pil_font.getbbox(text)
    img = Image.new("RGB", (right - left + 2 * pad, bottom - top + 2 * pad), "white")
    ImageDraw.Draw(img).text((pad - left, pad - top), text, font=pil_font, fill="black")
    rgb = np.asarray(img, dtype=np.uint8)
    return np.ascontiguousarray(rgb[:, :, ::-1])
