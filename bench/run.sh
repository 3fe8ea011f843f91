#!/usr/bin/env bash
# run.sh — `make bench`: starts the local test server and prints the host's
# figures (bench/bench_host.c). Numbers are medians of several repetitions.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/release}
coproc SERVER { exec "$BUILD/tools/testserver" --port 0; }
read -r _ port <&"${SERVER[0]}"
trap 'kill $SERVER_PID 2>/dev/null || true' EXIT
ulimit -n 65536 2>/dev/null || ulimit -n 16384 2>/dev/null || true
echo "moonhive bench ($(nproc) cores; test server on port $port)"
"$BUILD/bench/bench_host" "$port"
