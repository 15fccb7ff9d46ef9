#!/usr/bin/env bash
# scripts/tools.sh — the tools the deploy/ tests check with, from Debian's packages when missing:
# `prometheus` (the server, and promtool) and `systemd-analyze` (package systemd). Run as root or with
# sudo. Exits 1 when one is still missing (the tests then fail under REPLSCOPE_REQUIRE_SERVERS=1).
set -euo pipefail

missing=()
command -v promtool >/dev/null && command -v prometheus >/dev/null || missing+=(prometheus)
command -v systemd-analyze >/dev/null || missing+=(systemd)
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
echo "scripts/tools.sh: installing ${missing[*]} (Debian packages)" >&2
# The package's service is not wanted here: the tests start their own Prometheus on a free port.
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q >/dev/null
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
command -v promtool >/dev/null && command -v prometheus >/dev/null && command -v systemd-analyze >/dev/null
