"""``scripts/requirements.lock`` (the versions ``scripts/setup.sh`` installs) against ``pyproject.toml``:
every requirement of the project and its extras is pinned there, at a version its specifier allows,
and nothing is pinned twice. ``scripts/lock.sh`` regenerates the lock."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


def parse_lock(text: str) -> dict[str, Version]:
    """``name==version`` lines of a uv / pip-tools lock → ``{canonical name: version}``.

    Raises:
        ValueError: a package pinned twice, or a requirement line that is not a plain exact pin
            (the Dockerfiles pass the lock to ``pip -c``, and pip constraints cannot carry extras,
            URLs or editables).
    """
    pins: dict[str, Version] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = PIN.match(line)
        if not m:
            raise ValueError(f"line {n} is not a plain exact pin (name==version): {raw!r}")
        name = canonicalize_name(m.group(1))
        if name in pins:
            raise ValueError(f"line {n}: {name} pinned twice")
        pins[name] = Version(m.group(2))
    return pins


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra]
    return reqs


def test_parse_lock_rejects_loose_lines_and_doubles():
    assert parse_lock("# via x\nfoo-bar==1.2\n    # via y\nBaz==2.0\n") == {
        "foo-bar": Version("1.2"), "baz": Version("2.0")}
    for loose in ("numpy>=1.26", "baz[extra]==2.0", "-e .", "pkg @ https://example.com/pkg.whl"):
        with pytest.raises(ValueError, match="not a plain exact pin"):
            parse_lock(loose + "\n")
    with pytest.raises(ValueError, match="pinned twice"):
        parse_lock("Foo_Bar==1\nfoo-bar==2\n")


def test_every_project_requirement_is_pinned_within_its_specifier():
    pins = parse_lock((ROOT / "scripts" / "requirements.lock").read_text(encoding="utf-8"))
    env = default_environment() | {"python_version": "3.11", "sys_platform": "linux", "platform_system": "Linux"}
    missing, outside = [], []
    for req in project_requirements():
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = canonicalize_name(req.name)
        if name not in pins:
            missing.append(str(req))
        elif not req.specifier.contains(pins[name], prereleases=True):
            outside.append(f"{req} (locked {pins[name]})")
    assert not missing, f"not in scripts/requirements.lock (run scripts/lock.sh): {missing}"
    assert not outside, f"locked outside pyproject's specifier (run scripts/lock.sh): {outside}"
    # The override in scripts/uv-overrides.txt keeps paddlex's GUI OpenCV out.
    assert "opencv-contrib-python" not in pins and "opencv-python-headless" in pins


def requirement_lines(path: Path) -> list[Requirement]:
    out = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            out.append(Requirement(line))
    return out


@pytest.mark.parametrize("image", ["training_image", "inference_image"])
def test_container_images_install_the_locked_versions(image):
    """The SageMaker images (python:3.11-slim, glibc 2.36: the lock's manylinux_2_28 platform
    holds) install their requirements with the lock as constraints; a requirement the lock
    does not satisfy would fail the image build, so it fails here first."""
    pins = parse_lock((ROOT / "scripts" / "requirements.lock").read_text(encoding="utf-8"))
    for req in requirement_lines(ROOT / image / "requirements.txt"):
        name = canonicalize_name(req.name)
        assert name in pins, f"{image}/requirements.txt: {req} is not in scripts/requirements.lock"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{image}/requirements.txt: {req} excludes the locked {pins[name]}")
    dockerfile = (ROOT / image / "Dockerfile").read_text(encoding="utf-8")
    copied = re.search(r"^COPY\s+scripts/requirements\.lock\s+(\S+)\s*$", dockerfile, re.M)
    assert copied, f"{image}/Dockerfile does not copy scripts/requirements.lock"
    installs = re.findall(r"pip install -r (\S+)(.*)$", dockerfile, re.M)
    assert installs and all(f"-c {copied.group(1)}" in rest for _req, rest in installs)
