#!/usr/bin/env bash
# Runs a benchmark against a throwaway PostgreSQL cluster (fsync on; and,
# for the outreach ones, the dev broker) and prints its figures. Arguments
# after the benchmark's name go to the benchmark:
#   bench/run.sh compare [--events N] [--rate R] [--rate-seconds S] [--peer-seconds S] [--pool-size P]
#       crm-worker against the peer (bench/peer.py) and the database's
#       ceiling, with latency and RSS: the table in the README
#   bench/run.sh all        compare, then sync and followup, with their defaults
#   bench/run.sh [outreach] [--events N] [--batch B]
#   bench/run.sh followup [--timers N] [--window S] [--executors E] [--rounds R] [--explain]
#   bench/run.sh sync [--records N] [--executors E] [--limit L] [--batch B]
# Without a name it runs the outreach benchmark, as it always did.
#
# Builds into build/ through scripts/build.sh; CRM_BENCH_BUILD_DIR=DIR builds
# and runs from DIR instead (a second build tree, e.g. while build/ is busy).
set -euo pipefail
cd "$(dirname "$0")/.."

bench=outreach
case ${1:-} in
  outreach | followup | sync | compare) bench=$1; shift ;;
  all)
    "$0" compare
    "$0" sync
    "$0" followup
    exit 0
    ;;
esac

case $bench in
  outreach) targets=(outreach_bench crm-worker) ;;
  compare) targets=(compare_bench crm-worker) ;;
  followup) targets=(followup_bench) ;;  # runs the executor in-process
  sync) targets=(sync_bench) ;;          # runs the executors in-process
esac

./scripts/install-deps.sh
build_dir=${CRM_BENCH_BUILD_DIR:-build}
if [[ $build_dir == build ]]; then
  ./scripts/build.sh "${targets[@]}"
else
  if [[ ! -f $build_dir/build.ninja ]]; then
    cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  fi
  cmake --build "$build_dir" -j "${CRM_BUILD_JOBS:-2}" --target "${targets[@]}"
fi

state=$(mktemp -d /tmp/crm-worker-bench.XXXXXX)
chmod 755 "$state"
trap './scripts/pg.sh stop "$state/pg" >/dev/null 2>&1 || true; rm -rf "$state"' EXIT
./scripts/pg.sh start "$state/pg" >/dev/null
# Commit timestamps, for compare's latency (published -> committed).
if [[ $bench == compare ]]; then
  psql -q "$(./scripts/pg.sh url "$state/pg")" -c 'ALTER SYSTEM SET track_commit_timestamp = on'
  ./scripts/pg.sh halt "$state/pg" fast >/dev/null
  ./scripts/pg.sh start "$state/pg" >/dev/null
fi
CRM_TEST_PG_DIR="$state/pg" "./$build_dir/bench/${bench}_bench" "$@"
