#!/usr/bin/env bash
# README command 2: set up, then run the whole test suite (unit, adapters, CDK synth, real training, e2e).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/node_modules/.bin:$PATH"
exec .venv/bin/python -m pytest -q "$@"
