"""Run stock PaddleOCR 3.x / PaddleX next to ``opencv-python-headless``.

paddlex's ``ocr-core`` extra pins ``opencv-contrib-python``, a second build of ``cv2`` that would
replace the headless one ocrloop installs (and needs libGL); ``scripts/uv-overrides.txt`` keeps it
out. paddlex then refuses to build its predictors, because ``paddlex.utils.deps`` asks
``importlib.metadata.version("opencv-contrib-python")`` — a distribution-name check, not an import
check. ``accept_installed_opencv`` answers that question with the installed ``cv2.__version__``;
no PaddleOCR or PaddleX code is changed. Used by the export test (stock ``paddleocr`` loads an
ocrloop model with ``model_dir``) and ``bench/ocr_serving.py``.
"""

from __future__ import annotations

import importlib.metadata


def accept_installed_opencv() -> None:
    """Make ``importlib.metadata.version("opencv-contrib-python")`` return ``cv2.__version__``
    when that distribution is absent. Call it before paddlex is imported (paddlex caches the
    answer). Idempotent.

    Raises:
        ImportError: OpenCV (``cv2``) is not installed.
    """
    import cv2

    real = importlib.metadata.version
    if getattr(real, "_ocrloop_opencv", False):
        return

    def version(name: str) -> str:
        if name == "opencv-contrib-python":
            try:
                return real(name)
            except importlib.metadata.PackageNotFoundError:
                return cv2.__version__
        return real(name)

    version._ocrloop_opencv = True  # type: ignore[attr-defined]
    importlib.metadata.version = version
