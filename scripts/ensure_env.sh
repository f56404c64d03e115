# Sourced by run_all.sh and run_tests.sh: creates (or reuses) the local
# virtual environment .venv and installs the pinned dependencies into it.
# Reinstalls only when pyproject.toml changed since the last install.
set -euo pipefail
MECHSHIFT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MECHSHIFT_VENV:-$MECHSHIFT_ROOT/.venv}"

if [ ! -x "$VENV/bin/python" ]; then
    PY=""
    for cand in python3.11 python3 python; do
        if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
            PY="$cand"; break
        fi
    done
    if [ -z "$PY" ]; then
        echo "mechshift: Python 3.11 is required (python3.11, python3 or python on PATH)" >&2
        exit 1
    fi
    echo "mechshift: creating virtual environment in $VENV"
    "$PY" -m venv "$VENV"
fi

STAMP="$VENV/.mechshift-installed"
WANT="$(sha256sum "$MECHSHIFT_ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    echo "mechshift: installing pinned dependencies into $VENV (first run: about 1-2 minutes)"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    # torch first and alone, so the pinned CPU wheel is what satisfies every later requirement
    "$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
    "$VENV/bin/python" -m pip install --quiet -e "$MECHSHIFT_ROOT[test]"
    echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export MECHSHIFT_PYTHON="$VENV/bin/python"
