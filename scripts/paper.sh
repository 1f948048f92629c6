#!/usr/bin/env bash
# Paper trading in one command: installs what it needs (a virtualenv, from PyPI) and runs the
# worker on embedded defaults: the three example strategies, replayed example prices, five
# simulated hours in one real minute. Any argument is passed to `strategy-worker paper`.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/bootstrap.sh"
venv="${VENV:-$root/.venv}"
cd "$root"
exec "$venv/bin/strategy-worker" paper "$@"
