#!/usr/bin/env bash
# Set up everything ocrloop needs on a fresh Debian machine with Python 3.11 (idempotent, fast when done):
#   Debian fonts that draw Chinese and drawing symbols (WenQuanYi Micro Hei, osifont, Symbola), a venv in .venv with the project and all extras,
#   and (for the CDK tests) the pinned CDK CLI in node_modules/.
# Python packages are installed at the versions in scripts/requirements.lock (regenerate it with scripts/lock.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
fc-list 2>/dev/null | grep -qi "wenquanyi micro hei" || need_apt+=(fonts-wqy-microhei)
fc-list 2>/dev/null | grep -qi "osifont" || need_apt+=(fonts-osifont)
[ -f /usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf ] || need_apt+=(fonts-symbola)
command -v fc-list >/dev/null || need_apt+=(fontconfig)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "== apt: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
stamp=.venv/.ocrloop-installed
want=$(cat pyproject.toml scripts/uv-overrides.txt scripts/requirements.lock | sha256sum | cut -c1-16)
if [ ! -x .venv/bin/python ]; then
  echo "== venv (.venv)"
  "$PY" -m venv .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== python packages (uv, then the project with all extras at the versions in scripts/requirements.lock)"
  .venv/bin/python -m pip install -q --upgrade pip uv
  .venv/bin/uv pip install -q --python .venv/bin/python --override scripts/uv-overrides.txt \
    -c scripts/requirements.lock -e ".[aws,serve,train,data,cdk,dev]"
  echo "$want" > "$stamp"
fi
if [ -x scripts/setup_cdk.sh ]; then
  scripts/setup_cdk.sh
fi
