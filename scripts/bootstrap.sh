#!/usr/bin/env bash
# Create or refresh the project's virtual environment (.venv, or $VENV) — idempotent, cached.
# Reinstalls only when pyproject.toml or constraints.txt changed since the last install.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
py=${PYTHON:-python3}
venv="${VENV:-$root/.venv}"
stamp="$venv/.installed-hash"
want=$(cat pyproject.toml constraints.txt 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ]; then
  echo "bootstrap: creating virtual environment in $venv" >&2
  if ! "$py" -m venv "$venv" 2>/dev/null; then
    # Debian's system Python ships venv separately.
    echo "bootstrap: installing python3-venv" >&2
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    rm -rf "$venv" && "$py" -m venv "$venv"
  fi
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing dependencies (pinned in pyproject.toml, constraints.txt)" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade "pip==26.3"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]"
  echo "$want" > "$stamp"
fi
