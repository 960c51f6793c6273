#!/usr/bin/env bash
# The test command: does all set-up on a fresh machine (virtualenv, container engine, base and stack images),
# then runs the linters, the type checker, the layer contracts and the whole test suite against real backends.
# Extra arguments go to pytest, e.g.  scripts/test.sh -m transport
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
eval "$(bash stacks/engine/setup.sh)"
echo "[test] ruff, mypy --strict, import-linter" >&2
.venv/bin/ruff check src tests stacks benchmarks
.venv/bin/mypy
.venv/bin/lint-imports
echo "[test] pytest" >&2
# Two workers (tests/conftest.py groups the tests so each stack, and Ray, lives on one): INTERCEDE_TEST_WORKERS=0
# runs everything in this process.
exec .venv/bin/pytest -n "${INTERCEDE_TEST_WORKERS:-2}" --dist loadgroup "$@"
