"""Searchable metadata of a drawing: title-block fields read out of its OCR text, and the one
filter semantics both index runtimes implement.

Field extraction (``extract_fields``)
    The indexer stores the OCR lines of a drawing as ``metadata["text"]`` (lines joined by
    newlines, reading order: top-to-bottom, then left-to-right). ``extract_fields`` derives

    ============== ==========================================================================
    field          found by
    ============== ==========================================================================
    part_number    a label (PART NO, P/N, PART NUMBER, ART.-NR., SACHNUMMER, TEILENUMMER …)
                   followed by a code with at least one digit
    drawing_number a label (DWG NO, DRAWING NO, DRG NO, DOC NO, IDENTIFICATION NUMBER (ISO
                   7200), ZEICHNUNGSNUMMER …) followed by a code with at least one digit
    material       a label (MATERIAL, MATL, WERKSTOFF, MATÉRIAU, MATERIAŁ …) followed by the
                   rest of the cell, *and* standard grade designations anywhere in the text:
                   EN 10025 steels (S235JR, S355J2+N), E295/E335/E360, EN 10083 C-steels
                   (C45E), alloy steels (42CrMo4, 16MnCr5, 100Cr6), stainless (X5CrNi18-10),
                   steel numbers (1.4301), AISI/SAE/ASTM grades, aluminium (EN AW-6082,
                   AlMgSi1, 6061-T6), copper alloys (CuZn39Pb3, CW614N), cast iron
                   (EN-GJL-250, GGG-40), reinforcing steel (B500B, BSt 500 S), concrete
                   classes (C25/30), engineering plastics (PA66, POM-C, PTFE, PEEK)
    scale          a label (SCALE, MASSSTAB, ÉCHELLE, SKALA) followed by a ratio, or a line
                   that is only a ratio (``1:2``, ``M 1:5``, ``(2:1)``); one side must be 1
                   (ISO 5455 scales; ``12:30`` is a time); written without spaces
                   (``1 : 25`` → ``1:25``)
    revision       a label (REV, REVISION, REVISION INDEX, INDEX, ÄNDERUNG) followed by a
                   1–3 character code (``B``, ``02``, ``A1``)
    title          a label (TITLE, DWG TITLE, BENENNUNG) followed by the rest of the cell
    ============== ==========================================================================

    A label's value is the rest of its line; when that is empty (an OCR engine reads the label
    cell and the value cell as two lines), the next two lines are tried. Unlabelled patterns are
    restricted to forms that rarely mean anything else on a drawing (a bare ``1:20`` inside a
    line can be a slope; a line that *is* ``1:20`` is a scale). Values keep their spelling
    (``AlMg3`` stays mixed-case): filters are case-insensitive anyway. Title-block labels are
    from ISO 7200 (data fields in title blocks), ASME Y14.1 and common German/French/Polish CAD
    templates; grade syntax from EN 10027-1/-2 (steel names and numbers), EN 573-1 (aluminium)
    and EN 1992-1-1 (concrete classes).

Derived fields in metadata (``with_derived_fields``)
    Both index runtimes call this on every upsert: the fields found in ``metadata["text"]`` are
    stored as top-level metadata keys (lists of strings), *unless the client supplied that key*
    (client values win), and ``metadata["derived_fields"]`` lists the keys that were derived, so
    a later upsert with new OCR text (``indexing.index_one`` keeps the previous metadata and
    replaces ``text``) drops the stale derived values and derives them again.

Filters (``check_filters``, ``filter_texts``)
    ``filters = {field: substring}``; a drawing matches when, for every field, the folded
    substring occurs in the folded text of that metadata field (``flatten_text``: list items and
    dict values joined by newlines, numbers via ``str``). Folding is ``fold``: NFKC case folding
    plus the look-alikes drawings and OCR disagree on (``⌀``/``Ø``, ``x``/``×``, dashes), so a
    filter ``⌀20`` finds an OCR text ``Ø20``. A field that is missing, ``None`` or flattens to
    ``""`` never matches, not even ``""``. Both runtimes store the *same* folded texts computed
    here (SQLite locally; a ``wildcard`` field per metadata key on OpenSearch), so folding never
    depends on a database's collation.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Iterator, Mapping

__all__ = [
    "DERIVED_KEY",
    "FIELDS",
    "FOLD_VERSION",
    "LOOKALIKES",
    "check_filters",
    "extract_fields",
    "filter_texts",
    "flatten_text",
    "fold",
    "fold_v1",
    "with_derived_fields",
]

DERIVED_KEY = "derived_fields"
"""Metadata key listing the keys ``with_derived_fields`` added (reserved)."""

FIELDS = ("part_number", "drawing_number", "material", "scale", "revision", "title")
"""Fields ``extract_fields`` can derive, in output order."""

MAX_VALUE_CHARS = 80
"""A labelled free-text value (material, title) longer than this is not a title-block cell."""

MAX_LINE_CHARS = 400
"""Lines are cut to this many characters before extraction: OCR lines of a drawing are short, and
the cut keeps the regexes linear on pathological input (metadata text sent by a client)."""


def flatten_text(value: Any) -> str:
    """Metadata value → the text a filter matches against: strings as-is, numbers/bools via
    ``str``, lists and dicts as their flattened items joined by newlines (recursively), ``None`` → "".
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return "\n".join(flatten_text(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return "\n".join(flatten_text(v) for v in value)
    return str(value)


LOOKALIKES = str.maketrans({
    **dict.fromkeys("øØ∅φΦ", "⌀"),  # diameter: the signs OCR and fonts use for ⌀ (U+2300)
    "×": "x",  # multiplication: "80x6" is typed with x in CAD text, read as × by PP-OCR rec
    **dict.fromkeys("‐‑‒–—―−", "-"),  # hyphen, dashes and minus
})
"""Characters ``fold`` maps to one look-alike: what drawings write one way and OCR reads another
(``bench/ocr_serving.py``'s ⌀ variants, ``x``/``×``, dash forms). Applied after case folding;
the upper-case ``Ø`` and ``Φ`` are listed for the reader, case folding already lowers them."""

FOLD_VERSION = 2
"""Version of ``fold``: 1 was ``str.casefold`` alone; 2 adds NFKC and ``LOOKALIKES``. Stored texts
folded by another version are folded again (``faiss_index``) or matched both ways (OpenSearch)."""


def fold(text: str) -> str:
    """Text → the form filters compare: Unicode NFKC case folding (NFKC, ``str.casefold``, NFKC
    again, close to ``NFKC_Casefold`` of Unicode UAX #44: ``"Maßstab"`` → ``"massstab"``, full-width
    ``"ｒｏ"`` → ``"ro"``), then ``LOOKALIKES`` (``"Ø20"`` → ``"⌀20"``, ``"80×6"`` → ``"80x6"``).

    On the bench's 27 test sheets, labelled strings of ≥ 3 characters found as a substring of the
    sheet's OCR text: 97.4 % with case folding alone, 99.1 % with this fold (dev sheets: 94.9 →
    97.0 %)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold()).translate(LOOKALIKES)


def fold_v1(text: str) -> str:
    """``fold`` version 1 (``str.casefold``), for texts stored before version 2."""
    return text.casefold()


def filter_texts(metadata: Mapping[str, Any]) -> dict[str, str]:
    """``{field: folded text}`` a filter can match, for every top-level metadata key whose
    flattened text is non-empty (see the module docstring)."""
    out = {}
    for key, value in metadata.items():
        text = flatten_text(value)
        if text:
            out[str(key)] = fold(text)
    return out


def check_filters(filters: Mapping[str, Any] | None) -> dict[str, str]:
    """Validate ``{field: substring}`` and fold the substrings.

    Returns:
        ``{field: folded substring}`` (``{}`` for ``None``).

    Raises:
        ValueError: not a mapping, or a field name / substring that is not a string, or an empty
            field name.
    """
    if filters is None:
        return {}
    if not isinstance(filters, Mapping):
        raise ValueError(f"filters must map field names to substrings, got {type(filters).__name__}")
    out = {}
    for field, needle in filters.items():
        if not isinstance(field, str) or not field or not isinstance(needle, str):
            raise ValueError(f"filters must map field names to substrings, got {field!r}: {needle!r}")
        out[field] = fold(needle)
    return out


# --------------------------------------------------------------------------------------------
# Field extraction
# --------------------------------------------------------------------------------------------

_SEP = r"[\s._\-]*"
_NO = r"(?:NO\b\.?|NR\b\.?|NUMBER|NUM\b\.?|#)"


def _label(*alternatives: str) -> re.Pattern[str]:
    """A label: one of ``alternatives`` (regex, upper case) not inside a longer word, followed by
    separators (``:``, ``.``, ``#``, ``=``, spaces)."""
    return re.compile(r"(?<![A-Z0-9ÄÖÜ])(?:" + "|".join(alternatives) + r")(?![A-Z0-9])[\s:.#=]*", re.IGNORECASE)


_LABELS: dict[str, re.Pattern[str]] = {
    "drawing_number": _label(rf"D(?:RA)?WG{_SEP}{_NO}", rf"DRG{_SEP}{_NO}", rf"DRAWING{_SEP}{_NO}",
                             rf"DOC(?:UMENT)?{_SEP}{_NO}", r"IDENTIFICATION\s+NUMBER", r"ZEICHNUNGS-?(?:NUMMER|NR\.?)",
                             r"ZEICHN\.?-?NR\.?", r"NUMER\s+RYSUNKU"),
    "part_number": _label(rf"PART{_SEP}{_NO}", r"P\s?/\s?N", rf"ART(?:ICLE|\.)?{_SEP}{_NO}",
                          r"SACH-?(?:NUMMER|NR\.?)", r"TEILE-?(?:NUMMER|NR\.?)", r"ITEM\s+CODE", r"ARTIKEL-?NR\.?"),
    "material": _label(r"MATERIAL[SE]?", r"MAT'?L", r"MATERIAU", r"MATÉRIAU", r"MATERIAŁ", r"WERKSTOFF"),
    "scale": _label(r"SCALE", r"MASSSTAB", r"MAẞSTAB", r"MAßSTAB", r"ÉCHELLE", r"ECHELLE", r"SKALA"),
    "revision": _label(r"REV(?:ISION)?(?:\s+INDEX)?", r"ÄNDERUNG(?:SINDEX)?"),
    "title": _label(r"(?:DWG[\s_]*)?TITLE", r"BENENNUNG", r"TITRE", r"TYTU[ŁL]"),
}

_RATIO = r"(\d{1,5}(?:[.,]\d{1,2})?)\s*:\s*(\d{1,5}(?:[.,]\d{1,2})?)"
_RATIO_RE = re.compile(r"(?<![\d.,:])" + _RATIO + r"(?![\d:])")
_RATIO_LINE_RE = re.compile(r"^\s*\(?\s*(?:M\s*)?" + _RATIO + r"\s*\)?\s*$", re.IGNORECASE)
_CODE_RE = re.compile(r"[A-Z0-9][A-Z0-9._/\-]*\d[A-Z0-9._/\-]*|\d", re.IGNORECASE)
_REVISION_RE = re.compile(r"^([A-Z0-9]{1,3})(?![A-Z0-9])", re.IGNORECASE)

_GRADES = re.compile("|".join(r"(?<![A-Za-z0-9])(?:" + p + r")(?![A-Za-z0-9])" for p in (
    r"S(?:185|235|275|355|420|460|500|550|620|690|890|960)(?:J[R0-2]|K2|NL?|ML?|QL?1?|MC|[GW])?(?:\+[A-Z]{1,2})?",
    r"E(?:295|335|360)",
    r"C(?:10|15|22|35|45|55|60)(?:E|R)?",
    r"\d{2,3}(?:Cr|Mn|Mo|Ni|Si|V|B)(?:Cr|Mn|Mo|Ni|Si|V|B|Al|S)*\d{1,2}(?:-\d{1,2}){0,3}",
    r"X\d{1,3}(?:Cr|Ni|Mo|Mn|Ti|Nb|Cu|N|Si)+\d{1,2}(?:-\d{1,2}){0,3}",
    r"1\.[0-8]\d{3}",
    r"AISI\s?\d{3}[LH]?", r"SAE\s?\d{4}", r"ASTM\s?A\d{2,4}",
    r"EN\s?AW[\s-]?\d{4}[A-Z]?(?:-T\d{1,4})?", r"[1-8]\d{3}-T\d{1,4}",
    r"Al(?:Mg|Si|Zn|Cu|Mn)(?:Mg|Si|Zn|Cu|Mn|Pb|Bi)*\d(?:[.,]\d)?(?:[A-Za-z]{1,2}\d?)?",
    r"Cu(?:Zn|Sn|Al|Ni)\d{1,2}(?:(?:Pb|Sn|Al|Fe|Ni|Mn|Si)\d{0,2})*", r"CW\d{3}[A-Z]",
    r"EN-GJ[LSMV]-\d{3,4}(?:-\d{1,2})?", r"GG-?\d{2}", r"GGG-?\d{2}",
    r"B\s?500\s?[ABC]", r"BSt\s?500\s?[SM]?", r"(?:L)?C\d{2,3}/\d{2,3}",
    r"PA\s?6(?:6|\.6)?", r"POM(?:-[CH])?", r"PTFE", r"PEEK", r"PVC", r"PMMA", r"UHMW-?PE", r"PE-?(?:HD|UHMW)",
)))


def _lines(text: str) -> list[str]:
    return [line.strip()[:MAX_LINE_CHARS] for line in text.splitlines() if line.strip()]


def _has_label(text: str) -> bool:
    return any(p.search(text) for p in _LABELS.values())


def _labelled(lines: list[str], field: str, *, window: int, extend: bool) -> Iterator[str]:
    """Candidate values after each occurrence of ``field``'s label.

    The value is the rest of the line up to the next label. OCR engines often read a label cell
    and its value cell as separate lines (or split a value: ``Scale: 1:`` then ``75``), so the
    following ``window`` lines are appended (``extend``: always, for codes and ratios searched by
    pattern; otherwise only when the rest of the line is empty, for free text), stopping at a line
    that holds a label.
    """
    pattern = _LABELS[field]
    for i, line in enumerate(lines):
        for m in pattern.finditer(line):
            rest = line[m.end():]
            cut = min((s for s in (p.search(rest) for p in _LABELS.values()) if s), key=lambda s: s.start(), default=None)
            rest = (rest[:cut.start()] if cut else rest).strip(" ;,|")
            if rest and (not extend or cut):
                yield rest
                continue
            following = []
            for nxt in lines[i + 1:i + 1 + window]:
                if _has_label(nxt):
                    break
                following.append(nxt)
            value = " ".join([rest, *following]).strip()
            if value:
                yield value


def _add(out: dict[str, list[str]], field: str, value: str) -> None:
    value = value.strip()
    if value and value not in out.setdefault(field, []):
        out[field].append(value)


def _ratio(m: re.Match[str]) -> str | None:
    """``"1:25"`` from a ratio match, or None unless one side is 1 (ISO 5455 scales are 1:X or X:1;
    ``12:30`` is a time)."""
    a, b = m.group(1), m.group(2)
    return f"{a}:{b}" if "1" in (a, b) else None


def extract_fields(text: str) -> dict[str, list[str]]:
    """Title-block fields found in OCR text (see the module docstring for the rules).

    Args:
        text: OCR lines joined by newlines (any ``str``; ``""`` gives ``{}``).

    Returns:
        ``{field: [values in order of appearance, distinct]}`` for the fields of ``FIELDS`` that
        were found (fields with no value are absent), ordered as ``FIELDS``.

    Raises:
        TypeError: ``text`` is not a string.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    lines = _lines(text)
    out: dict[str, list[str]] = {}
    for field in ("drawing_number", "part_number"):
        for value in _labelled(lines, field, window=2, extend=True):
            code = _CODE_RE.search(value)
            if code:
                _add(out, field, code.group(0).strip("._/-"))
    for value in _labelled(lines, "material", window=1, extend=False):
        grade = _GRADES.search(value)
        if grade:
            _add(out, "material", grade.group(0))
        elif len(value) <= MAX_VALUE_CHARS:
            _add(out, "material", value)
    for line in lines:
        for m in _GRADES.finditer(line):
            _add(out, "material", m.group(0))
    for value in _labelled(lines, "scale", window=2, extend=True):
        m = _RATIO_RE.search(value)
        if m and _ratio(m):
            _add(out, "scale", _ratio(m))
    for line in lines:
        m = _RATIO_LINE_RE.match(line)
        if m and _ratio(m):
            _add(out, "scale", _ratio(m))
    for value in _labelled(lines, "revision", window=1, extend=False):
        m = _REVISION_RE.match(value)
        if m:
            _add(out, "revision", m.group(1))
    for value in _labelled(lines, "title", window=1, extend=False):
        if len(value) <= MAX_VALUE_CHARS:
            _add(out, "title", value)
    return {f: out[f] for f in FIELDS if out.get(f)}


def with_derived_fields(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``metadata`` with the fields of ``extract_fields(metadata["text"])`` added.

    Keys listed in an existing ``metadata["derived_fields"]`` are removed first (they were
    derived from an earlier text); a derived field is only added when the key is not in the
    metadata (client-supplied values win); ``"derived_fields"`` then lists the added keys (absent
    when none). Metadata without a string/list ``text`` only loses stale derived keys.

    Args:
        metadata: one drawing's metadata (JSON object).

    Returns:
        a new dict.
    """
    meta = dict(metadata)
    stale = meta.pop(DERIVED_KEY, None)
    if isinstance(stale, list):
        for key in stale:
            if isinstance(key, str):
                meta.pop(key, None)
    text = meta.get("text")
    found = extract_fields(flatten_text(text)) if isinstance(text, (str, list, tuple)) else {}
    added = [key for key in found if key not in meta]
    for key in added:
        meta[key] = found[key]
    if added:
        meta[DERIVED_KEY] = added
    return meta
