#!/usr/bin/env bash
# Regenerate scripts/requirements.lock: every package scripts/setup.sh installs (the project and all
# its extras), pinned, for Linux x86_64 and Python 3.11 (this machine, CI and the SageMaker images).
# setup.sh and the training and inference Dockerfiles install with the lock as constraints, so a
# fresh clone and the images get the versions the README's demo figures were measured with. Its
# replay pool is drawn from the installed distributions' license texts and descriptions
# (ocrloop.data.base_pool), so an unpinned release of, say, boto3 changes the pool and the model.
# Kept versions are preferred; pass --upgrade (or --upgrade-package NAME) to move them.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/uv ] || { echo "run scripts/setup.sh first (it installs uv into .venv)" >&2; exit 1; }
.venv/bin/uv pip compile pyproject.toml \
  --all-extras \
  --override scripts/uv-overrides.txt \
  --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
  --custom-compile-command "scripts/lock.sh" \
  --quiet -o scripts/requirements.lock "$@"
