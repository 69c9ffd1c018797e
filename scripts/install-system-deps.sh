#!/usr/bin/env bash
# Installs, as root, the Debian packages the test suite needs that pip cannot provide:
#   debian-archive-keyring  checks the packages scripts/install-tools.sh downloads
#   docker-compose          (1.29, Python) validates compose/docker-compose.yml offline; no engine needed
#   tmux                    a real terminal for the `subagent-telemetry top` tests (send-keys, capture-pane)
#   chromium                renders the `subagent-telemetry report` HTML headless to a screenshot
#   fonts-dejavu-core       a font for Chromium's text and matplotlib's charts
# The servers themselves (prometheus, alertmanager, redis, ...) go to a project-local folder through
# scripts/install-tools.sh, which needs nothing else from the system.
# Idempotent: packages already installed are skipped, and `apt-get update` runs only when needed.
set -euo pipefail

PACKAGES=(debian-archive-keyring docker-compose tmux chromium fonts-dejavu-core)

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null | grep -qx installed; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]} == 0)); then
    echo "install-system-deps: all present (${PACKAGES[*]})"
    exit 0
fi

if ((EUID != 0)); then
    echo "install-system-deps: error: run as root to install: ${missing[*]}" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
install() {
    apt-get -qq install -y --no-install-recommends "${missing[@]}" >"$log" 2>&1 && return 0
    cat "$log" >&2
    return 1
}
# Lists are fetched only when apt does not know a package yet (a fresh image has empty lists), or when
# the install fails on stale lists (a version that left the mirror).
if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
    apt-get -qq update >/dev/null
    install
elif ! install; then
    apt-get -qq update >/dev/null
    install
fi
echo "install-system-deps: installed ${missing[*]}"
