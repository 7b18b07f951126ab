#!/usr/bin/env bash
# Installs what is needed, builds, and runs the whole test suite: unit tests
# and integration tests against a throwaway PostgreSQL (started and stopped
# by ctest's pg fixture) and the dev broker. Extra arguments go to ctest,
# e.g. `scripts/test.sh -L unit` or `scripts/test.sh -R ConsumeLoop`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh
cd build
# Integration tests mostly wait on processes and the database: three at a
# time keeps two cores busy without starving the brokers' timers.
ctest --output-on-failure --timeout 300 -j "${CRM_TEST_JOBS:-3}" "$@"
