#!/usr/bin/env bash
# Installs promtool (the Prometheus rule and exposition checker) when it is
# missing: only /usr/bin/promtool is unpacked from Debian's `prometheus`
# package into /usr/local/bin, so no prometheus user, unit or daemon is
# installed or started. Used by .ci/run and by the tests that check the
# alert rules and /metrics (src/testkit.rs, `promtool()`), so a plain
# `cargo test` on a fresh machine installs it too. Needs root and the Debian
# package mirror. Idempotent.
set -euo pipefail
if command -v promtool >/dev/null 2>&1; then
    exit 0
fi
echo "installing promtool from the Debian prometheus package" >&2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
apt-get update -qq
(cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root prometheus >/dev/null)
dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb | tar -x -C "$tmp" ./usr/bin/promtool
install -m 0755 "$tmp/usr/bin/promtool" /usr/local/bin/promtool
