"""Shared pytest set-up. Heavy artefacts (base model, rendered drawings) are cached under
``ocrloop.config.cache_dir()`` and built once per machine."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
# Keep ONNX Runtime / Paddle to the 2 cores CI has, and quiet.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("FLAGS_call_stack_level", "0")
os.environ.setdefault("CDK_DISABLE_VERSION_CHECK", "1")
os.environ.setdefault("CDK_DISABLE_CLI_TELEMETRY", "true")
