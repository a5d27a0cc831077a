"""Lambda packaging: the zip functions import (and crop with Pillow) using only what Lambda's
python3.11 runtime has (standard library + boto3/botocore and their dependencies) plus the
staged code asset and the locally bundled layer; the container contexts hold what their
Dockerfiles copy."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

pytest_plugins = ["cdk_fixtures"]

STACK = "OcrLoop"
ZIP_MODULES = [
    "lambdas.start_labeling", "lambdas.on_labeling_completed", "lambdas.on_training_completed",
    "lambdas.on_model_approved", "lambdas.on_endpoint_updated", "lambdas.gt_pre_annotation",
    "lambdas.gt_consolidation", "lambdas.endpoint_autoscaling", "ocrloop.handlers", "ocrloop.aws.runtime",
]
#: What the Lambda python3.11 runtime ships besides the standard library.
LAMBDA_RUNTIME_PACKAGES = ["boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six"]


def _assets(synth):
    return json.loads((synth.outdir / f"{STACK}.assets.json").read_text())


def _staged(synth, predicate):
    out = []
    for asset in _assets(synth)["files"].values():
        path = synth.outdir / asset["source"]["path"]
        if path.is_dir() and predicate(path):
            out.append(path)
    return out


def _runtime_dir(tmp_path: Path) -> Path:
    """A folder with only the packages the Lambda runtime provides (symlinked from this venv)."""
    out = tmp_path / "lambda-runtime"
    out.mkdir()
    for name in LAMBDA_RUNTIME_PACKAGES:
        spec = importlib.util.find_spec(name)
        assert spec and spec.origin, name
        src = Path(spec.origin)
        src = src.parent if src.name == "__init__.py" else src
        (out / src.name).symlink_to(src)
    return out


def test_zip_functions_import_with_lambda_runtime_packages_only(cdk_app, tmp_path):
    code = _staged(cdk_app, lambda p: (p / "lambdas" / "start_labeling.py").exists())
    layer = _staged(cdk_app, lambda p: (p / "python" / "aws_lambda_powertools").exists())
    assert len(code) == 1 and len(layer) == 1
    assert not (code[0] / "lambdas" / "Dockerfile").exists() and not list(code[0].rglob("__pycache__"))
    runtime = _runtime_dir(tmp_path)
    script = f"""
import sys
sys.path[:0] = [{str(code[0])!r}, {str(layer[0] / 'python')!r}, {str(runtime)!r}]
import importlib
for name in {ZIP_MODULES!r}:
    importlib.import_module(name)
heavy = [m for m in ("numpy", "cv2", "onnxruntime", "paddle", "opensearchpy", "rapidfuzz") if m in sys.modules]
assert not heavy, heavy
for absent in ("numpy", "opensearchpy"):
    try:
        importlib.import_module(absent)
    except ImportError:
        pass
    else:
        raise SystemExit(absent + " is importable: the isolation is broken")
from PIL import Image
from ocrloop.dataset import crop_quad
crop = crop_quad(Image.new("RGB", (200, 100), "white"), [[10, 10], [150, 12], [150, 40], [10, 38]])
print("OK", crop.size, Image.__version__)
"""
    result = subprocess.run([sys.executable, "-S", "-E", "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("OK")


def test_container_contexts_hold_what_the_dockerfiles_copy(cdk_app):
    images = _assets(cdk_app)["dockerImages"].values()
    seen = set()
    for image in images:
        context = cdk_app.outdir / image["source"]["directory"]
        dockerfile = context / image["source"]["dockerFile"]
        seen.add(image["source"]["dockerFile"])
        for line in dockerfile.read_text().splitlines():
            m = re.match(r"^\s*COPY\s+(?!--from)(.+)$", line)
            if not m:
                continue
            parts = [p for p in m.group(1).split() if not p.startswith("--")]
            for src in parts[:-1]:
                if "*" in src:
                    continue  # optional globs such as README.md*
                assert (context / src).exists(), f"{dockerfile.name}: COPY {src} is not in the build context"
    assert {"training_image/Dockerfile", "inference_image/Dockerfile", "lambdas/Dockerfile"} <= seen


def test_image_functions_run_existing_handlers(cdk_app):
    root = Path(__file__).resolve().parents[1]
    fns = [f["Properties"] for f in cdk_app.resources(STACK, "AWS::Lambda::Function").values()
           if f["Properties"].get("PackageType") == "Image"]
    commands = sorted(f["ImageConfig"]["Command"][0] for f in fns)
    assert commands == ["lambdas.api.handler", "lambdas.indexer.handler", "lambdas.search_setup.handler"]
    for command in commands:
        module, _, attr = command.rpartition(".")
        source = (root / (module.replace(".", "/") + ".py")).read_text()
        assert f"def {attr}(" in source
