"""Shared helpers and fixtures for the model tests (imported by tests/test_model_*.py and
tests/test_training_entrypoint.py only).

Channels are built from real rendered text lines (DejaVu Sans / WenQuanYi Micro Hei via
``ocrloop.model.lines.render_line``) written as PNG files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import pytest

# Short drawing-text lines: what the new-domain data looks like (⌀, ±, °, ×) plus replay text.
TRAIN_LINES = [
    ("⌀12 H7", "new"),
    ("±0.05", "new"),
    ("45°", "new"),
    ("2×M6", "new"),
    ("⌀8 THRU", "new"),
    ("R3 ±0.1", "new"),
    ("材料 Q235", "replay"),
    ("SCALE 1:5", "base"),
]
VALIDATION_LINES = ["⌀20 ±0.02", "4×⌀6", "30° ±1°", "⌀5.5"]
OLDDOMAIN_LINES = ["技术要求", "SHEET 2 OF 4", "未注圆角R2", "REV C"]


def write_channel(channel_dir: Path, items: Iterable[tuple[str, str] | str], extra: dict | None = None) -> Path:
    """Render each text into ``channel_dir/images/NNN.png`` and write ``manifest.jsonl``."""
    import cv2

    from ocrloop.model.lines import render_line

    images = channel_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, item in enumerate(items):
        text, origin = (item, "new") if isinstance(item, str) else item
        rel = f"images/{i:03d}.png"
        if not cv2.imwrite(str(channel_dir / rel), render_line(text)):
            raise RuntimeError(f"cannot write {rel}")
        rows.append({"image": rel, "text": text, "origin": origin, **(extra or {})})
    (channel_dir / "manifest.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    return channel_dir


def make_job_root(root: Path, champion_dir: Path, hyperparameters: dict[str, str]) -> Path:
    """A SageMaker-style ``/opt/ml`` tree under ``root`` with tiny train/validation/olddomain
    channels and the champion (symlinked) as the ``model`` channel."""
    data = root / "input" / "data"
    write_channel(data / "train", TRAIN_LINES, extra={"drawing": "d1"})
    write_channel(data / "validation", VALIDATION_LINES)
    write_channel(data / "olddomain", OLDDOMAIN_LINES)
    data.joinpath("model").symlink_to(champion_dir, target_is_directory=True)
    config = root / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (config / "inputdataconfig.json").write_text(
        json.dumps({c: {"ContentType": "application/jsonlines"} for c in ("train", "validation", "olddomain", "model")})
    )
    return root


@pytest.fixture(scope="session")
def base_model_dir() -> Path:
    """The cached v0 model folder (built once per cache; ≈20 s the first time)."""
    from ocrloop.model.base import ensure_base_model

    return ensure_base_model()


@pytest.fixture(scope="session")
def base_model(base_model_dir):
    """``(RecModel, classes)`` loaded from the v0 folder (tests must not modify it in place)."""
    from ocrloop.model.export import load_artifact

    return load_artifact(base_model_dir)


def paddle_inference_probs(model_dir: Path, x):
    """Softmax output float32 ``[N, T, C]`` of ``inference.json`` + ``inference.pdiparams`` in
    ``model_dir`` on a plain Paddle Inference CPU predictor (independent of ``ocrloop.ocr``) for
    ``x`` float32 ``[N, 3, 48, W]``."""
    import paddle.inference as pi

    config = pi.Config(str(model_dir / "inference.json"), str(model_dir / "inference.pdiparams"))
    config.disable_gpu()
    predictor = pi.create_predictor(config)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(list(x.shape))
    handle.copy_from_cpu(x)
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
