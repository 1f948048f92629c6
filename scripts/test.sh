#!/usr/bin/env bash
# The project's test command (CI runs it through .ci/run):
#   bootstrap .venv -> proto stubs up to date -> ruff check -> ruff format --check -> mypy
#   -> scripts/services.sh up -> pytest tests/unit tests/integration, and beside it (niced, so
#   it only takes the CPU the servers' tests leave idle while they wait) pytest tests/simulation
#   -> scripts/services.sh down
# Every check runs even after one fails, so one run shows everything to fix; the exit code is 0
# only when all of them passed (pytest's "no tests collected", exit 5, is a failure too).
# Extra arguments go to one pytest over all three folders instead:  scripts/test.sh -x -k kafka
# The servers are taken down at the end even when tests fail or the run is interrupted, unless
# they were already up before this run started (then they belong to whoever started them).
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

run_started=$EPOCHREALTIME
summary=()
failed=0
services_ours=0

elapsed() { # seconds since $1 (an EPOCHREALTIME), one decimal
  awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'
}

# step NAME CMD...: run one check under a header, time it, remember the outcome.
step() {
  local name=$1 started=$EPOCHREALTIME rc
  shift
  printf '\n==== %s: %s\n' "$name" "$*"
  "$@"
  rc=$?
  local took
  took=$(elapsed "$started")
  if [ "$rc" -eq 0 ]; then
    printf -- '---- %s: ok (%s s)\n' "$name" "$took"
    summary+=("$(printf '%-16s ok       %6s s' "$name" "$took")")
  else
    printf -- '---- %s: FAILED with exit code %s (%s s)\n' "$name" "$rc" "$took"
    summary+=("$(printf '%-16s FAILED   %6s s  (exit %s)' "$name" "$took" "$rc")")
    failed=1
  fi
  return "$rc"
}

skip() {
  printf '\n==== %s: skipped (%s)\n' "$1" "$2"
  summary+=("$(printf '%-16s skipped            (%s)' "$1" "$2")")
  failed=1
}

finish() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$services_ours" -eq 1 ]; then
    step "services down" bash scripts/services.sh down
  fi
  printf '\n==== summary (total %s s)\n' "$(elapsed "$run_started")"
  printf '%s\n' "${summary[@]}"
  if [ "$failed" -ne 0 ] || [ "$rc" -ne 0 ]; then
    printf 'RESULT: FAILED\n'
    exit 1
  fi
  printf 'RESULT: all passed\n'
  exit 0
}
# pytest sees the servers' settings; a subshell keeps them out of this script's environment.
run_pytest() {
  (. .services/env && exec .venv/bin/pytest -ra "$@")
}

sim_pid=""
# The simulation (CPU only, virtual time) runs beside the unit and integration tests at the
# lowest priority: those mostly wait on servers, so it takes their idle CPU without slowing
# them. Its output is printed after theirs, its outcome is a summary line of its own.
run_pytest_beside_simulation() {
  local sim_log=.services/simulation-pytest.log sim_started=$EPOCHREALTIME rc took
  (. .services/env && exec nice -n 19 .venv/bin/pytest -ra -p no:cacheprovider tests/simulation) \
    >"$sim_log" 2>&1 &
  sim_pid=$!
  step pytest run_pytest tests/unit tests/integration
  printf '\n==== simulation: pytest tests/simulation (niced, beside the pytest above)\n'
  wait "$sim_pid"
  rc=$?
  sim_pid=""
  cat "$sim_log"
  took=$(elapsed "$sim_started")
  if [ "$rc" -eq 0 ]; then
    printf -- '---- simulation: ok (%s s)\n' "$took"
    summary+=("$(printf '%-16s ok       %6s s' simulation "$took")")
  else
    printf -- '---- simulation: FAILED with exit code %s (%s s)\n' "$rc" "$took"
    summary+=("$(printf '%-16s FAILED   %6s s  (exit %s)' simulation "$took" "$rc")")
    failed=1
  fi
}

trap finish EXIT
trap 'printf "\ninterrupted\n"; failed=1; [ -n "$sim_pid" ] && kill "$sim_pid"; exit 130' INT TERM

if ! step bootstrap bash scripts/bootstrap.sh; then
  printf 'cannot continue without the virtual environment\n'
  exit 1
fi
if [ -f scripts/generate_protos.sh ]; then
  step "proto stubs" bash scripts/generate_protos.sh --check
fi
step "ruff check" .venv/bin/ruff check .
step "ruff format" .venv/bin/ruff format --check .
step mypy .venv/bin/mypy

if bash scripts/services.sh status --quiet >/dev/null 2>&1; then
  printf '\nservices were already up before this run: using them and leaving them up\n'
else
  services_ours=1 # from here on `down` runs at exit, whatever happens
fi
if step "services up" bash scripts/services.sh up; then
  if [ "$#" -eq 0 ]; then
    run_pytest_beside_simulation
  else
    step pytest run_pytest tests/unit tests/integration tests/simulation "$@"
  fi
else
  skip pytest "servers not up"
fi
