#!/usr/bin/env bash
# One command for every benchmark: bench/run.sh [--full] [--profile] [--only SECTIONS]
# Bootstraps the virtualenv if missing, brings up the service harness if it is not running
# (and takes down only what it brought up), then runs bench/run.py with the arguments.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
if [ ! -x .venv/bin/python ]; then
  bash scripts/bootstrap.sh
fi
started_services=0
if ! scripts/services.sh status >/dev/null 2>&1; then
  scripts/services.sh up
  started_services=1
fi
cleanup() {
  if [ "$started_services" = 1 ]; then
    scripts/services.sh down || true
  fi
}
trap cleanup EXIT
.venv/bin/python bench/run.py "$@"
