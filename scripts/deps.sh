#!/usr/bin/env bash
# deps.sh — installs the Debian 12 packages moonhive builds, runs and tests with.
#   deps.sh install            install whatever is missing (apt-get; root or sudo)
#   deps.sh check-or-install   quick check; installs only when something is missing
set -euo pipefail

PACKAGES=(
  build-essential pkg-config
  liblua5.4-dev lua5.4
  libuv1-dev lua-luv
  lua-cjson lua-cjson-dev
  libcurl4-openssl-dev
  libhttp-parser-dev
  libsqlite3-dev
  libhiredis-dev redis-server
  libssl-dev
  libreadline-dev
  lua-busted libcmocka-dev libcjson-dev
  python3                      # tests/unit/test_proc.c runs python3 code
  curl wrk nghttp2-server openssl
  clang libclang-rt-14-dev     # make fuzz (libFuzzer)
  chromium                     # tests/browser: the dashboard in headless Chromium (playwright-core)
)

# Node.js for the test suites' real clients (tests/*/package.json): Debian's
# nodejs and npm, unless a node and npm are already there (another source's
# nodejs bundles npm, and Debian's npm package would conflict with it).
NODE_PACKAGES=(nodejs npm)

missing() {
  local out=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || out+=("$p")
  done
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then out+=("${NODE_PACKAGES[@]}"); fi
  echo "${out[@]:-}"
}

install_packages() {
  local need
  need=$(missing)
  [ -z "$need" ] && { echo "deps: all packages present"; return 0; }
  echo "deps: installing $need"
  local SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
      echo "deps: missing packages ($need) and not root; run as root: apt-get install $need" >&2
      exit 1
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "deps: apt-get not found; moonhive targets Debian 12. Install: $need" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # shellcheck disable=SC2086
  if ! $SUDO apt-get install -y -q $need; then
    $SUDO apt-get update -q
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -q $need || {
      echo "deps: apt-get could not install: $need (check the network or the package sources)" >&2
      exit 1
    }
  fi
}

case "${1:-install}" in
  install) install_packages ;;
  check-or-install) [ -z "$(missing)" ] || install_packages ;;
  list) printf '%s\n' "${PACKAGES[@]}" "${NODE_PACKAGES[@]}" ;;
  *) echo "usage: deps.sh install|check-or-install|list" >&2; exit 2 ;;
esac
