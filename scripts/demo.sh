#!/usr/bin/env bash
# README command 1: set up, then run the whole loop on real drawings (≈15 min on 2 cores, first run
# included). Extra arguments go to `ocrloop demo` (e.g. --max-steps 300 for a longer fine-tune).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/ocrloop demo "$@"
