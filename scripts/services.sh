#!/usr/bin/env bash
# The real PostgreSQL, Redis and Kafka that integration tests, CI and local runs use.
#   scripts/services.sh up        install what is missing, start on free loopback ports, write .services/env
#   scripts/services.sh down      stop only what `up` started (servers given by env vars are left alone)
#   scripts/services.sh status    what runs (exit 0 only when all are up); `env` prints .services/env
#   scripts/services.sh stop|start|restart postgres|redis|kafka   same port and data
#   scripts/services.sh instance up|stop|start|restart|down pg-NAME   a private PostgreSQL for
#       fault tests (tests use the postgres_control fixture); `up` prints its settings as JSON
# Logic: dev/services.py (run with the project's .venv, created by scripts/bootstrap.sh if missing).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
if [ ! -x .venv/bin/python ] || [ ! -f .venv/.installed-hash ]; then
  bash scripts/bootstrap.sh
fi
exec .venv/bin/python -m dev.services "$@"
