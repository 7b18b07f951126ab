#!/usr/bin/env bash
# Runs the outreach benchmark against a throwaway PostgreSQL cluster and the
# dev broker, and prints its figures. Arguments go to the benchmark:
#   bench/run.sh [--events N] [--batch B]
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh outreach_bench crm-worker
state=$(mktemp -d /tmp/crm-worker-bench.XXXXXX)
chmod 755 "$state"
trap './scripts/pg.sh stop "$state/pg" >/dev/null 2>&1 || true; rm -rf "$state"' EXIT
./scripts/pg.sh start "$state/pg" >/dev/null
CRM_TEST_PG_DIR="$state/pg" ./build/bench/outreach_bench "$@"
