#!/usr/bin/env bash
# The run command: does all set-up on a fresh machine (virtualenv), then runs intercede on the embedded default.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/intercede run "$@"
