#!/usr/bin/env bash
# Create or refresh .venv/ with mgc and its dependencies. Idempotent: when pyproject.toml has not
# changed since the last successful install, it only checks the import and returns in a second.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
PY=${PYTHON:-python3}
stamp=.venv/.mgc-installed
want=$(sha1sum pyproject.toml | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c "import mgc" 2>/dev/null; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
echo "setup: installing mgc and its dependencies into .venv (first time takes a few minutes)" >&2
.venv/bin/python -m pip install --disable-pip-version-check -q -e '.[dev]'
echo "$want" > "$stamp"
