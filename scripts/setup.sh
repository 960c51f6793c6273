#!/usr/bin/env bash
# Shared set-up for the project's commands: a virtualenv in .venv with intercede and its extras installed.
# Re-installs only when pyproject.toml changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($python --version)" >&2
  "$python" -m venv .venv
fi
stamp=.venv/.intercede-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing intercede and its extras (test, notebook, service, htcondor, arc) into .venv" >&2
  log=.venv/install.log
  if ! { .venv/bin/python -m pip install --upgrade pip && .venv/bin/python -m pip install -e ".[test,notebook,service,htcondor,arc]"; } \
      >"$log" 2>&1; then
    tail -n 40 "$log" >&2; echo "[setup] pip install failed; full log in $log" >&2; exit 1
  fi
  echo "$want" >"$stamp"
fi
