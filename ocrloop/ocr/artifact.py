"""Locating a rec model version folder: a plain folder or a ``model.tar.gz`` (SageMaker's form).

Standard library only, so the local hosting adapter can prepare model folders without importing the
inference stack.
"""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path

MODEL_FILE = "model.onnx"
ARCHIVE_FILE = "model.tar.gz"
DET_MODEL_FILE = "det/model.onnx"
"""A fine-tuned det model inside a model version folder (``ocrloop.model.det_train``)."""


class ArtifactError(Exception):
    """The model location holds neither a model folder nor a usable ``model.tar.gz``."""


def extract_model_archive(archive: str | Path, dest: str | Path) -> Path:
    """Extract a ``.tar.gz`` model archive into ``dest`` (created) and return the folder that holds
    ``model.onnx`` (``dest`` itself, or its single sub-folder when the archive has one top folder).

    Members are extracted with tarfile's ``"data"`` filter (no absolute paths, no ``..``, no links
    out of ``dest``, no device files).

    Raises:
        ArtifactError: unreadable archive, unsafe member, or no ``model.onnx`` inside.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(dest, filter="data")
    except (OSError, tarfile.TarError) as exc:
        raise ArtifactError(f"cannot extract {archive}: {exc}") from exc
    return find_model_folder(dest)


def find_model_folder(root: str | Path) -> Path:
    """``root`` if it holds ``model.onnx``, else its only sub-folder that does.

    Raises:
        ArtifactError: no (or more than one) candidate folder.
    """
    root = Path(root)
    if (root / MODEL_FILE).is_file():
        return root
    found = [p for p in sorted(root.iterdir()) if p.is_dir() and (p / MODEL_FILE).is_file()] if root.is_dir() else []
    if len(found) != 1:
        raise ArtifactError(f"no single folder with {MODEL_FILE} in {root} (found {[str(p) for p in found]})")
    return found[0]


def det_model_path(model_dir: str | Path) -> Path | None:
    """The fine-tuned det ONNX of a model version folder (``det/model.onnx``), or None when the
    version has none (serving then uses the stock PP-OCRv5 mobile det)."""
    path = Path(model_dir) / DET_MODEL_FILE
    return path if path.is_file() else None


def resolve_model_dir(path: str | Path, extract_to: str | Path | None = None) -> Path:
    """The model folder to serve from ``path`` (SageMaker's ``/opt/ml/model`` or ``SM_MODEL_DIR``).

    ``path`` may be a model folder, a folder holding ``model.tar.gz`` (extracted to ``extract_to``, or
    to a fresh temporary folder because ``/opt/ml/model`` is read-only on SageMaker), or a
    ``.tar.gz`` file itself.

    Raises:
        ArtifactError: nothing servable at ``path``.
    """
    path = Path(path)
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
        archive = path
    elif (path / MODEL_FILE).is_file():
        return path
    elif (path / ARCHIVE_FILE).is_file():
        archive = path / ARCHIVE_FILE
    elif path.is_dir():
        return find_model_folder(path)
    else:
        raise ArtifactError(f"model path {path} does not exist")
    target = Path(extract_to) if extract_to else Path(tempfile.mkdtemp(prefix="ocrloop-model-"))
    return extract_model_archive(archive, target)
