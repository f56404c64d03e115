#!/usr/bin/env bash
# Run the test suite: sets up .venv (first run), then pytest. Extra arguments go to pytest
# (avoid -v: it switches nnsight into debug mode).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure_env.sh
exec "$MECHSHIFT_PYTHON" -m pytest "$@"
