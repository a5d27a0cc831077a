"""Lambda packaging without Docker (this project's CI has no Docker engine).

* ``code_asset()``: the zip functions' code — ``ocrloop/`` and ``lambdas/`` copied from the repository
  (an allowlist, so a stray data folder never ends up in a function).
* ``stage(...)``: build contexts are staged into a temporary folder holding only the allowlisted
  entries before CDK fingerprints them, so synthesis never walks ``.venv/`` or ``node_modules/``
  (tens of thousands of files) and a context cannot pick up local data by accident. The
  fingerprint depends on relative paths and contents only, so the asset hash is stable.
* ``deps_layer()``: a Lambda layer built from ``lambdas/requirements.txt`` by a local
  ``ILocalBundling``: ``pip download`` of manylinux2014 x86_64 / CPython 3.11 wheels
  (``--only-binary=:all:``, so nothing is compiled for the build machine) into a cache keyed by the
  requirements' hash, then ``pip install --no-index`` from that cache into ``python/`` of the layer.
  The asset hash is the hash of the requirements file, so a re-synth with the same requirements
  reuses the staged layer without running pip.

The Docker fallback image is never used: ``try_bundle`` either succeeds or raises.
"""

from __future__ import annotations

import atexit
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import jsii
from aws_cdk import aws_lambda as lambda_

from ocrloop.config import cache_dir

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "lambdas" / "requirements.txt"
PLATFORM = "manylinux2014_x86_64"
PYTHON_VERSION = "3.11"
RUNTIME = lambda_.Runtime.PYTHON_3_11
ARCHITECTURE = lambda_.Architecture.X86_64

#: Entries of the zip functions' code asset (relative to the repository root).
CODE_ENTRIES = ("ocrloop", "lambdas")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".*", "Dockerfile", "requirements*.txt")
#: Container build contexts keep Dockerfiles and requirement files.
IMAGE_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
_STAGED: dict[tuple[tuple[str, ...], int], Path] = {}


def stage(entries: tuple[str, ...], ignore=_IGNORE) -> Path:
    """A temporary folder with copies of ``entries`` (files or folders under the repository root).

    Raises:
        FileNotFoundError: an entry does not exist.
    """
    key = (tuple(entries), id(ignore))
    if key in _STAGED and _STAGED[key].exists():
        return _STAGED[key]
    out = Path(tempfile.mkdtemp(prefix="ocrloop-asset-"))
    atexit.register(shutil.rmtree, out, True)
    for entry in entries:
        src = ROOT / entry
        if src.is_dir():
            shutil.copytree(src, out / entry, ignore=ignore)
        elif src.is_file():
            (out / entry).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, out / entry)
        else:
            raise FileNotFoundError(src)
    _STAGED[key] = out
    return out


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"pip failed ({' '.join(cmd)}):\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")


def requirements_hash(path: Path = REQUIREMENTS) -> str:
    return hashlib.sha256(path.read_bytes() + f"|{PLATFORM}|{PYTHON_VERSION}".encode()).hexdigest()[:16]


def wheel_cache(path: Path = REQUIREMENTS) -> Path:
    """Folder of downloaded wheels for these requirements (``$OCRLOOP_CACHE/lambda-wheels/<hash>``);
    filled on first use (needs PyPI or a mirror), reused afterwards."""
    cache = cache_dir() / "lambda-wheels" / requirements_hash(path)
    marker = cache / ".complete"
    if not marker.exists():
        cache.mkdir(parents=True, exist_ok=True)
        _pip("download", "--only-binary=:all:", "--platform", PLATFORM, "--python-version", PYTHON_VERSION,
             "--implementation", "cp", "--dest", str(cache), "-r", str(path))
        marker.write_text("ok\n")
    return cache


@jsii.implements(cdk.ILocalBundling)
class PipLayerBundling:
    """Installs ``requirements`` for Lambda's Python 3.11 x86_64 into ``<output>/python``."""

    def __init__(self, requirements: Path = REQUIREMENTS) -> None:
        self.requirements = requirements

    def try_bundle(self, output_dir: str, *args: Any, **options: Any) -> bool:
        wheels = wheel_cache(self.requirements)
        target = Path(output_dir) / "python"
        if target.exists():
            shutil.rmtree(target)
        _pip("install", "--no-index", "--find-links", str(wheels), "--target", str(target),
             "--platform", PLATFORM, "--python-version", PYTHON_VERSION, "--implementation", "cp",
             "--only-binary=:all:", "--no-compile", "-r", str(self.requirements))
        # Console scripts point at the build machine's interpreter and are useless in a layer.
        shutil.rmtree(target / "bin", ignore_errors=True)
        return True


def deps_layer(scope: Any, construct_id: str) -> lambda_.LayerVersion:
    """The dependency layer (powertools + pydantic + Pillow), bundled locally."""
    source = REQUIREMENTS.parent
    return lambda_.LayerVersion(
        scope, construct_id,
        code=lambda_.Code.from_asset(
            str(source),
            asset_hash_type=cdk.AssetHashType.CUSTOM,
            asset_hash=requirements_hash(),
            bundling=cdk.BundlingOptions(
                # Never pulled: local bundling always succeeds or raises.
                image=cdk.DockerImage.from_registry("public.ecr.aws/sam/build-python3.11"),
                local=PipLayerBundling(),
            ),
        ),
        compatible_runtimes=[RUNTIME],
        compatible_architectures=[ARCHITECTURE],
        description="ocrloop Lambda dependencies: " + ", ".join(
            line.strip() for line in REQUIREMENTS.read_text().splitlines() if line.strip() and not line.startswith("#")),
    )


def code_asset() -> lambda_.Code:
    """The zip functions' code: ``ocrloop/`` + ``lambdas/`` from the repository root."""
    return lambda_.Code.from_asset(str(stage(CODE_ENTRIES)))
