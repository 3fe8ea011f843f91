#!/usr/bin/env bash
# run.sh — `make bench`: starts the local test server and prints the host's
# figures (bench/bench_host.c), the workflow journal's cost per step
# (bench/bench_wf.c) and the W3 agent workload, as agents and as a workflow
# (bench/bench_w3.c). Numbers are medians of several repetitions.
# BENCH_ONLY=llm,w3 (any of sleep, state, memory, http, llm, journal, w3,
# serve, service) picks parts; bench/bench_serve.sh loads `moonhive serve` with
# wrk, bench/bench_service.sh its agent runs route (overhead, waiting runs).
# With two or more cores the server and the benchmark are pinned to different
# cores (taskset), so they do not steal each other's CPU time.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/release}
server_pin=() bench_pin=()
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
  server_pin=(taskset -c 1) bench_pin=(taskset -c 0)
fi
export MOONHIVE_RUNTIME="$PWD/lua" MOONHIVE_STDLIB="$PWD/stdlib"
unset OPENAI_API_KEY ANTHROPIC_API_KEY MOONHIVE_MODEL
# The bench records its runs in a scratch store, never the developer's.
export MOONHIVE_DATA="$(mktemp -d)"
# Thousands of concurrent connections, on both ends (raised before the servers start).
ulimit -n 65536 2>/dev/null || ulimit -n 16384 2>/dev/null || true
coproc SERVER { exec "${server_pin[@]}" "$BUILD/tools/testserver" --port 0; }
read -r _ port <&"${SERVER[0]}"
exec {mock_out}< <(exec "${server_pin[@]}" "$BUILD/tools/mockllm" --port 0 < /dev/null)
MOCK_PID=$!
read -r _ mock_port <&"$mock_out"
trap 'kill $SERVER_PID $MOCK_PID 2>/dev/null || true; rm -rf "$MOONHIVE_DATA"' EXIT
echo "moonhive bench ($(nproc) cores; test server on port $port, mock LLM on $mock_port${server_pin:+; servers on core 1, bench on core 0})"
"${bench_pin[@]}" "$BUILD/bench/bench_host" "$port" "$mock_port"
if [ -z "${BENCH_ONLY:-}" ] || [[ "$BENCH_ONLY" == *journal* ]]; then
  "${bench_pin[@]}" "$BUILD/bench/bench_wf"
fi
if [ -z "${BENCH_ONLY:-}" ] || [[ "$BENCH_ONLY" == *w3* ]]; then
  "${bench_pin[@]}" "$BUILD/bench/bench_w3" "$mock_port"
fi
if [ -z "${BENCH_ONLY:-}" ] || [[ "$BENCH_ONLY" == *serve* ]]; then
  BUILD="$BUILD" bench/bench_serve.sh
fi
if [ -z "${BENCH_ONLY:-}" ] || [[ "$BENCH_ONLY" == *service* ]]; then
  BUILD="$BUILD" bench/bench_service.sh
fi
