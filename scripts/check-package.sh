#!/usr/bin/env bash
# Builds the .deb from a build tree (cpack) into a temporary directory and
# checks it holds what an operator needs: the binary, both systemd units,
# the configuration as a conffile, the documentation, the SQL roles, and
# dependencies on the shared libraries the binary links.
#   scripts/check-package.sh BUILD_DIR
set -euo pipefail
build=$(cd "${1:?usage: check-package.sh BUILD_DIR}" && pwd)
out=$(mktemp -d /tmp/crm-worker-package.XXXXXX)
trap 'rm -rf "$out"' EXIT

cpack -G DEB --config "$build/CPackConfig.cmake" -B "$out" >"$out/cpack.log" 2>&1 || {
  cat "$out/cpack.log" >&2
  exit 1
}
deb=$(ls "$out"/*.deb)
contents=$(dpkg-deb -c "$deb" | awk '{print $6}')
info=$(dpkg-deb -I "$deb")
status=0
expect_file() {
  if ! grep -qx "\\./$1" <<<"$contents"; then
    echo "missing from the package: /$1" >&2
    status=1
  fi
}
expect_file usr/bin/crm-worker
expect_file usr/lib/systemd/system/crm-worker.service
expect_file usr/lib/systemd/system/crm-worker@.service
expect_file etc/crm-worker/crm-worker.toml
expect_file usr/share/doc/crm-worker/crm-worker.toml.example
expect_file usr/share/doc/crm-worker/README.md
expect_file usr/share/crm-worker/sql/roles.sql
expect_file usr/share/crm-worker/monitoring/grafana/crm-worker.json
expect_file usr/share/crm-worker/monitoring/prometheus/alerts.yml
expect_file usr/share/crm-worker/monitoring/prometheus/scrape.yml
expect_file usr/share/crm-worker/monitoring/README.md

conffiles=$(dpkg-deb -f "$deb" Package >/dev/null && dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)
if ! grep -qx /etc/crm-worker/crm-worker.toml <<<"$conffiles"; then
  echo "/etc/crm-worker/crm-worker.toml is not a conffile (an upgrade would overwrite it)" >&2
  status=1
fi
depends=$(dpkg-deb -f "$deb" Depends)
for lib in librdkafka libpqxx libcurl libsystemd systemd; do
  if ! grep -q "$lib" <<<"$depends"; then
    echo "Depends lacks $lib: $depends" >&2
    status=1
  fi
done
# The binary in the package is the daemon and runs.
tmp_root="$out/root"
dpkg-deb -x "$deb" "$tmp_root"
if ! "$tmp_root/usr/bin/crm-worker" version >/dev/null; then
  echo "the packaged binary does not run" >&2
  status=1
fi
echo "$(basename "$deb"): $(wc -l <<<"$contents") entries; Depends: $depends"
exit $status
