"""A local folder that behaves like a versioned S3 bucket.

Objects live at ``<root>/<key>``; every overwrite first moves the previous bytes to
``<root>/.versions/<key>/<version-id>`` (S3 versioning: nothing is lost), writes are atomic
(temp file + ``os.replace``), and ``if_absent`` gives S3's conditional write (``If-None-Match: *``).
URIs are ``file://`` URLs of the object path.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

from ..ports import ObjectExists


class FolderBlobStore:
    """BlobStore port over a folder.

    Args:
        root: the bucket folder (created).
        bucket: bucket name, used in events.
        on_put: called ``on_put(bucket, key, size, version_id)`` after each write (the local
            runtime publishes S3 ``Object Created`` events from it).
    """

    def __init__(self, root: Path, bucket: str, on_put: Callable[[str, str, int, str], None] | None = None):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.bucket = bucket
        self.on_put = on_put
        self._lock = threading.Lock()

    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or ".." in Path(key).parts or key.startswith(".versions"):
            raise ValueError(f"invalid key {key!r}")
        return self.root / key

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> str:
        path = self._path(key)
        version = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        with self._lock:
            if path.exists():
                if if_absent:
                    raise ObjectExists(key)
                old = self.root / ".versions" / key / version
                old.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, old)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        if self.on_put is not None:
            self.on_put(self.bucket, key, len(data), version)
        return version

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise KeyError(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        """Delete = keep the bytes as a noncurrent version (S3 delete marker semantics)."""
        path = self._path(key)
        with self._lock:
            if path.exists():
                old = self.root / ".versions" / key / f"{time.time_ns():020d}-deleted"
                old.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, old)

    def list(self, prefix: str) -> list[str]:
        base = self.root
        out = []
        for dirpath, dirnames, filenames in os.walk(base):
            rel_dir = os.path.relpath(dirpath, base)
            if rel_dir == ".versions" or rel_dir.startswith(".versions" + os.sep):
                dirnames[:] = []
                continue
            for name in filenames:
                if name.startswith(".") and name.endswith(".tmp"):
                    continue
                key = name if rel_dir == "." else f"{rel_dir.replace(os.sep, '/')}/{name}"
                if key.startswith(prefix):
                    out.append(key)
        return sorted(out)

    def uri(self, key: str) -> str:
        return (self.root.as_uri() + "/" + key) if key else self.root.as_uri() + "/"

    def path(self, key: str) -> Path:
        """Filesystem path of ``key`` (local runtime only)."""
        return self._path(key)

    def versions(self, key: str) -> list[str]:
        """Noncurrent version ids of ``key``, oldest first."""
        folder = self.root / ".versions" / key
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
