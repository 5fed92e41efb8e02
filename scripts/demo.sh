#!/usr/bin/env bash
# Set up and run the discount demo on embedded defaults (no server to install).
# Extra arguments go to `buttress demo`, e.g. --port 8080, --traffic, --redis redis://127.0.0.1:6379/0
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
exec .venv/bin/buttress demo "$@"
