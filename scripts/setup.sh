#!/usr/bin/env bash
# Create .venv and install buttress into it (editable). Sourced by demo.sh and test.sh.
# Usage: source scripts/setup.sh [dev]   (the demo extra by default; dev includes it)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
extras="[demo]"
[ "${1:-}" = "dev" ] && extras="[dev]"
# Reinstall only when pyproject.toml changed since the last install.
stamp=".venv/.buttress-installed${extras}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet -e ".${extras}"
  touch "$stamp"
fi
