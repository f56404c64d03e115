#!/usr/bin/env bash
# Regenerate every figure: sets up .venv (first run), then executes notebooks/NN_*.py
# in order with papermill. Executed notebooks go to outputs/notebooks/, figures to figures/.
#   ./run_all.sh                                   # embedded pair, all notebooks
#   ./run_all.sh -p seed 1 -p device cpu           # any notebook parameter
#   ./run_all.sh --only 01                         # one notebook
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure_env.sh
# the checkout whose notebooks run: its own mechshift_utils, whatever the environment has installed
export MECHSHIFT_CHECKOUT="$(pwd -P)"
exec "$MECHSHIFT_PYTHON" -m mechshift_utils.notebook.runner "$@"
