#!/usr/bin/env bash
# Installs what is needed, builds, and runs the whole test suite: unit tests
# and integration tests against a throwaway PostgreSQL (started and stopped
# by ctest's pg fixture) and the dev broker, with the fault scenarios at
# their reduced sizes. Extra arguments go to ctest, e.g.
# `scripts/test.sh -L unit` or `scripts/test.sh -R ConsumeLoop`.
#
#   scripts/test.sh --full    the fault scenarios at TESTPLAN's full sizes
#                             (ctest label `full`; about an hour)
set -euo pipefail
cd "$(dirname "$0")/.."
labels=(-LE full)
if [[ ${1:-} == --full ]]; then
  shift
  labels=(-L full)
fi
./scripts/install-deps.sh
./scripts/build.sh
cd build
# Integration tests mostly wait on processes and the database: three at a
# time keeps two cores busy without starving the brokers' timers.
ctest --output-on-failure --timeout 300 -j "${CRM_TEST_JOBS:-3}" "${labels[@]}" "$@"
