#!/usr/bin/env bash
# Configures and builds crm-worker and its tests into build/ (one build for
# everything; ccache makes rebuilds cheap). Extra arguments name targets.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${CRM_BUILD_JOBS:-2}
if [[ ! -f build/build.ninja ]]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
if [[ $# -gt 0 ]]; then
  cmake --build build -j "$jobs" --target "$@"
else
  cmake --build build -j "$jobs"
fi
