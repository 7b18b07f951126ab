#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/) with clang into build-fuzz/ and runs
# each for SECONDS (default 60), two at a time, each on a temporary copy of
# its committed corpus (fuzz/corpus/<name>/), so the repository's corpus
# never grows by itself. One line per target; exits non-zero if any target
# crashed, leaked, timed out, ran out of memory or broke an invariant, and
# copies the input that did it to fuzz/crashes/ (reproduce it with
# `build-fuzz/fuzz/<name>_fuzz fuzz/crashes/<file>`, see fuzz/README.md).
#   scripts/fuzz.sh          all targets, 60 s each (CI: about 5 minutes)
#   scripts/fuzz.sh 600      all targets, 10 minutes each
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
if [[ ! $seconds =~ ^[0-9]+$ || $seconds -eq 0 ]]; then
  echo "usage: scripts/fuzz.sh [seconds per target]" >&2
  exit 2
fi

./scripts/install-deps.sh
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCRM_WORKER_FUZZ=ON -DCRM_WORKER_TESTS=OFF >/dev/null
cmake --build build-fuzz -j "${CRM_BUILD_JOBS:-2}" --target fuzz_targets

# The longest input each target gets. The decoders run under limits of
# 8 KiB per message (fuzz/support.cc), so inputs must be able to cross them;
# a header block or a time is short, and short inputs mean more runs.
max_len_of() {
  case $1 in
    rfc3339) echo 64 ;;
    rate_limit_headers) echo 1024 ;;
    hubspot_response) echo 4096 ;;
    *) echo 12288 ;;
  esac
}

work=$(mktemp -d /tmp/crm-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p fuzz/crashes

# UBSan stops at its first report (it is built with -fno-sanitize-recover);
# the stack trace says where. ASan's default 256 MB quarantine of freed
# memory, and the allocator caches behind it, grow a target's RSS towards
# -rss_limit_mb in runs of ten minutes without anything leaking; 64 MB still
# catches a use after free of any recent allocation.
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export ASAN_OPTIONS=detect_leaks=1:quarantine_size_mb=64

run_target() {
  local name=$1
  local dir=$work/$name
  mkdir -p "$dir/artifacts"
  cp -r "fuzz/corpus/$name" "$dir/corpus"
  local args=(-max_total_time="$seconds" -max_len="$(max_len_of "$name")" -rss_limit_mb=2048
              -timeout=10 -print_final_stats=1 -artifact_prefix="$dir/artifacts/")
  if [[ -f fuzz/$name.dict ]]; then args+=(-dict="fuzz/$name.dict"); fi
  local status=0
  "build-fuzz/fuzz/${name}_fuzz" "${args[@]}" "$dir/corpus" >"$dir/log" 2>&1 || status=$?
  echo "$status" >"$dir/status"
}

# One line per target from its log: what libFuzzer printed last.
report() {
  local name=$1
  local dir=$work/$name
  local status
  status=$(cat "$dir/status")
  local runs cov ft
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$dir/log" | tail -1 | cut -d' ' -f2)
  ft=$(grep -o 'ft: [0-9]*' "$dir/log" | tail -1 | cut -d' ' -f2)
  local seeds corpus
  seeds=$(find "fuzz/corpus/$name" -type f | wc -l)
  corpus=$(find "$dir/corpus" -type f | wc -l)
  local result=ok
  # A sanitizer report or a broken invariant fails the run even if the
  # exit status somehow did not say so.
  local alarm='ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|invariant violated'
  if [[ $status -ne 0 ]] || grep -qE "$alarm" "$dir/log"; then
    result=FAILED
  fi
  printf '%-22s %-6s %10s runs  cov %-5s ft %-6s corpus %s -> %s\n' \
    "$name" "$result" "${runs:-?}" "${cov:-?}" "${ft:-?}" "$seeds" "$corpus"
  if [[ $result == ok ]]; then return 0; fi
  local artifact kept
  for artifact in "$dir"/artifacts/{crash,leak,timeout,oom}-*; do
    [[ -f $artifact ]] || continue
    kept="fuzz/crashes/$name-$(basename "$artifact")"
    cp "$artifact" "$kept"
    echo "    input: $kept"
  done
  grep -m 3 -E 'invariant violated|runtime error:|ERROR: |SUMMARY: ' "$dir/log" | sed 's/^/    /'
  echo "    log tail:"
  tail -n 40 "$dir/log" | sed 's/^/      /'
  return 1
}

targets=()
for source in fuzz/*_fuzz.cc; do
  name=$(basename "$source" _fuzz.cc)
  targets+=("$name")
done

# Two at a time: the machine has two cores.
running=0
for name in "${targets[@]}"; do
  if [[ $running -ge 2 ]]; then
    wait -n
    running=$((running - 1))
  fi
  run_target "$name" &
  running=$((running + 1))
done
wait

failed=0
for name in "${targets[@]}"; do
  report "$name" || failed=1
done
if [[ $failed -ne 0 ]]; then
  echo "fuzz: FAILED; reproduce with build-fuzz/fuzz/<name>_fuzz fuzz/crashes/<file>" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, no crash, leak, timeout or sanitizer report"
