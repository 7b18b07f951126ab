#!/usr/bin/env bash
# Builds the release .deb: a separate build tree without crash points or
# tests, then cpack. The package lands in build-release/.
#   scripts/package.sh            → build-release/crm-worker_<version>_amd64.deb
# Install it with `dpkg -i` (or `apt install ./crm-worker_*.deb` to pull the
# libraries in), then README "Operations".
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cmake -S . -B build-release -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCRM_WORKER_CRASH_POINTS=OFF -DCRM_WORKER_TESTS=OFF >/dev/null
cmake --build build-release -j "${CRM_BUILD_JOBS:-2}" --target crm-worker
(cd build-release && cpack -G DEB >/dev/null)
ls build-release/*.deb
