#!/usr/bin/env bash
# Set up and run the whole test suite: lint, types, and every test (slow ones included).
# Extra arguments go to pytest, e.g. -m "not slow" for the fast tests only.
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
bash "$here/system-packages.sh"
source "$here/setup.sh" dev
# MLServer in a venv of its own (its pins clash with ours); tests/test_oip.py calls it.
mlserver_venv="$PWD/.venv-mlserver"
if [ ! -x "$mlserver_venv/bin/mlserver" ]; then
  python3 -m venv "$mlserver_venv"
  "$mlserver_venv/bin/pip" install --quiet mlserver mlserver-sklearn \
    || echo "MLServer did not install: its interoperability test will be skipped" >&2
fi
export BUTTRESS_MLSERVER="$mlserver_venv/bin/mlserver"
.venv/bin/ruff check src tests examples bench
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
