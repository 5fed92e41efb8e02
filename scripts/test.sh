#!/usr/bin/env bash
# Set up and run the whole test suite: lint, types, and every test (slow ones included).
# Extra arguments go to pytest, e.g. -m "not slow" for the fast tests only.
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
bash "$here/system-packages.sh"
source "$here/setup.sh" dev
.venv/bin/ruff check src tests examples bench
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
