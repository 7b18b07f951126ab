#!/usr/bin/env bash
# Installs what crm-worker needs to build, test and run its demo, from
# Debian 12's own packages. Idempotent and fast when everything is there:
# apt-get runs only if a package is missing.
set -euo pipefail

packages=(
  g++ cmake ninja-build ccache pkg-config git curl
  librdkafka-dev libpqxx-dev libboost-json1.81-dev
  prometheus-cpp-dev libcivetweb-dev libgtest-dev libcurl4-openssl-dev
  libsystemd-dev libtomlplusplus-dev
  postgresql kcat
  # followups.default_time_zone is checked against the zone files (PostgreSQL
  # reads the same ones for the send windows).
  tzdata
  # Operations tests: promtool (in Debian's prometheus package) checks and
  # unit-tests the alert rules; systemd-analyze verifies the units; dpkg-deb
  # and fakeroot build the .deb with CPack.
  prometheus systemd dpkg-dev fakeroot
  # Security tests: a throwaway CA and server certificate for PostgreSQL over
  # TLS with sslmode=verify-full (tests/integration/pg_tls_test.cc).
  openssl
  # Timer scenarios: libfaketime (pulled in by faketime) runs a worker whose
  # wall clock is hours off, to show due times follow the database's clock
  # (tests/integration/scenario_external_test.cc).
  faketime
  # scripts/fuzz.sh: libFuzzer comes with clang, its runtime (and the
  # sanitizers') with libclang-rt-14-dev.
  clang libclang-rt-14-dev
  # bench/run.sh compare: the peer, a plain Python consumer (bench/peer.py).
  python3-confluent-kafka python3-psycopg2
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The postgresql package starts a system cluster on port 5432; the tests and
# the demo start their own throwaway clusters and do not need it.
echo "install-deps: done" >&2
