#!/usr/bin/env bash
# bench_serve.sh — `make bench` part "serve": GET /health under load.
# `moonhive serve` runs pinned to one core and wrk (Debian's) to the other;
# three runs of 5 s with 100 connections, the median of each figure printed:
# requests/s, p50 and p99 latency. Run with the access log on (as deployed)
# and off. Called by bench/run.sh with BUILD set.
set -euo pipefail
source "$(dirname "$0")/serve_common.sh" serve
DURATION=${BENCH_SERVE_SECONDS:-5}

# wrk prints latencies as 812.00us / 1.20ms / 2.00s: to microseconds
to_us() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); print v} else if (v ~ /ms$/) {sub(/ms$/,"",v); print v*1000} else {sub(/s$/,"",v); print v*1000000}}'; }

one_case() { # label access_log
  local out port rps=() p50=() p99=()
  out=$(mktemp)
  MOONHIVE_ACCESS_LOG=$2 "${server_pin[@]}" "$BUILD/moonhive" serve --port 0 > "$out" 2> /dev/null &
  local pid=$!
  for _ in $(seq 100); do grep -q serving "$out" 2>/dev/null && break; sleep 0.05; done
  port=$(sed -n 's/.*127\.0\.0\.1:\([0-9]*\).*/\1/p' "$out" | head -1)
  for _ in 1 2 3; do
    local r
    r=$("${client_pin[@]}" wrk -t1 -c100 -d"${DURATION}s" --latency "http://127.0.0.1:$port/health")
    rps+=("$(awk '/^Requests\/sec:/ {print $2}' <<< "$r")")
    p50+=("$(awk '$1 == "50%" {print $2}' <<< "$r" | to_us)")
    p99+=("$(awk '$1 == "99%" {print $2}' <<< "$r" | to_us)")
  done
  kill -TERM "$pid"; wait "$pid" || true
  rm -f "$out"
  printf '  GET /health, access log %-3s  %9.0f req/s   p50 %6.0f us   p99 %6.0f us\n' "$1" \
    "$(printf '%s\n' "${rps[@]}" | median)" "$(printf '%s\n' "${p50[@]}" | median)" \
    "$(printf '%s\n' "${p99[@]}" | median)"
}

echo "serve: wrk -c100, ${DURATION}s x3, medians (server on one core; target >= 30,000 req/s)"
one_case on on
one_case off off
