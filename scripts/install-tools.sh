#!/usr/bin/env bash
# Installs the offline tools the tests need and pip cannot provide, from Debian's packages:
#   promtool (package prometheus) for tests/deploy;
#   chromium + chromedriver (packages chromium, chromium-driver) for the page test
#   (tests/service/gateway/test_page_browser.py; Selenium itself comes from requirements/dev.txt).
# Idempotent: installs only what is missing from PATH. Needs root (CI runs as root) and the Debian registry.
# The PyPI tools (kubernetes-validate, hadolint, the kubectl wheel, selenium) come from requirements/dev.txt.
set -euo pipefail

packages=()
if ! command -v promtool >/dev/null 2>&1; then
  packages+=(prometheus)
fi
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  packages+=(chromium)
fi
if ! command -v chromedriver >/dev/null 2>&1; then
  packages+=(chromium-driver)
fi
if [[ ${#packages[@]} -eq 0 ]]; then
  exit 0
fi
if [[ "$(id -u)" -ne 0 ]]; then
  echo "install-tools: missing ${packages[*]}; run as root or: sudo apt-get install --no-install-recommends ${packages[*]}" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-tools: missing ${packages[*]} and apt-get is not available; install them by hand" >&2
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

echo "install-tools: installing Debian packages: ${packages[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
for tool in promtool chromedriver; do
  command -v "$tool" >/dev/null 2>&1 || { echo "install-tools: $tool still missing after apt-get" >&2; exit 1; }
done
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
  || { echo "install-tools: chromium still missing after apt-get" >&2; exit 1; }
promtool --version 2>&1 | head -n 1
chromedriver --version 2>&1 | head -n 1
