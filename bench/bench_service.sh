#!/usr/bin/env bash
# bench_service.sh — `make bench` part "service": POST /v1/agents/{name}/runs.
#
# 1. Overhead per POST. `moonhive serve` (pinned to one core; rate limit
#    off) runs agent `echo` (the in-process mock model, one model call per
#    run) for wrk (on the other core), which POSTs {"input":"[reply:hi]"}
#    for a few seconds over 16 keep-alive connections, and over one: with
#    ?wait=true (200 and the report) and without (202; the run goes on after
#    the answer), access log on and off. The server's CPU time (utime + stime
#    from /proc/PID/stat) from before wrk until the server is idle again,
#    divided by the POSTs it answered (its /metrics), is the CPU per POST.
#    The same agent run as many at a time in one `moonhive run` process
#    (agent:run in a loop: the same runs.start/event/finish records, no
#    HTTP, no launch), CPU measured with os.clock around the loop, is the
#    agent's own work; the difference is the service's overhead per request.
# 2. RSS with many waiting runs. A fresh server (the sandbox's memory cap
#    as configured, default 64M) gets WAITING POSTs (202) of agent `slow`,
#    whose one model call goes to the mock LLM server with [delay:60000]:
#    "in flight" lifts the model concurrency cap and the per-origin
#    connection cap, so every run's call is on the wire (the mock server has
#    received them all); "queued" keeps the defaults (32 calls in flight, the
#    other runs wait for a permit); MOONHIVE_DEADLINE=5m so none times out.
#    VmRSS at idle, after one warm-up run and with every run waiting; the
#    server's CPU per POST while they pile up; then SIGTERM (with
#    MOONHIVE_SHUTDOWN_GRACE_MS=200 it cancels them), the time to exit and
#    what is left behind. Last, how many waiting runs fit in the shared
#    sandbox under a 16M and a 32M cap.
#
# Figures are medians of three repetitions. Scratch project and data in a
# temporary folder. Called by bench/run.sh with BUILD set; runs alone too.
# BENCH_SERVICE_SECONDS (5), BENCH_SERVICE_CONNECTIONS (16) and
# BENCH_SERVICE_WAITING (10000) change the load; BENCH_SERVICE_PARTS=overhead
# or =waiting runs one part.
set -euo pipefail
source "$(dirname "$0")/serve_common.sh" service
DURATION=${BENCH_SERVICE_SECONDS:-5}
CONNS=${BENCH_SERVICE_CONNECTIONS:-16}
WAITING=${BENCH_SERVICE_WAITING:-10000}
BIN="$PWD/$BUILD/moonhive"
MOCKLLM="$PWD/$BUILD/tools/mockllm"
export MOONHIVE_RUNTIME="${MOONHIVE_RUNTIME:-$PWD/lua}" MOONHIVE_STDLIB="${MOONHIVE_STDLIB:-$PWD/stdlib}"
export MOONHIVE_RATE_LIMIT=0
unset OPENAI_API_KEY ANTHROPIC_API_KEY MOONHIVE_MODEL MOONHIVE_PROJECT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
TICK_US=$((1000000 / $(getconf CLK_TCK)))

SCRATCH=$(mktemp -d)
PROJECT="$SCRATCH/project"
SPID="" MPID=""
cleanup() {
  [ -n "$SPID" ] && kill -KILL "$SPID" 2>/dev/null
  [ -n "$MPID" ] && kill -TERM "$MPID" 2>/dev/null
  rm -rf "$SCRATCH"
}
trap cleanup EXIT
mkdir -p "$PROJECT/agents"
cat > "$PROJECT/agents/echo.lua" <<'EOF'
return agent{ name = "echo", description = "answers offline (the in-process mock model)", model = "mock/x",
              system = "You echo." }
EOF
cat > "$PROJECT/agents/slow.lua" <<'EOF'
return agent{ name = "slow", description = "waits on the mock LLM server", model = "openai/x", system = "You wait." }
EOF
# The agent alone: N runs, C at a time, in this one process; prints CPU µs per run.
cat > "$PROJECT/alone.lua" <<'EOF'
local n, c = tonumber(arg[1]), tonumber(arg[2])
local a = agent.load("echo")
a:run("[reply:warm]")
local cpu0 = os.clock()
local workers = {}
for w = 1, c do workers[w] = function() for _ = w, n, c do a:run("[reply:hi]") end end end
task.all(workers)
print(("%.1f"):format((os.clock() - cpu0) * 1e6 / n))
EOF
cat > "$SCRATCH/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = '{"input":"[reply:hi]"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
EOF

cpu_us() { awk -v t="$TICK_US" '{print ($14 + $15) * t}' "/proc/$SPID/stat"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$SPID/status"; }
now() { date +%s.%N; }

# start_serve NAME [VAR=VALUE...]: SPID, PORT, KEY, URL, DATA (its own), LOG (its stderr)
start_serve() {
  local out="$SCRATCH/$1.out"
  DATA="$SCRATCH/$1" LOG="$SCRATCH/$1.err"
  shift
  mkdir -p "$DATA"
  (cd "$PROJECT" && exec env MOONHIVE_DATA="$DATA" "$@" "${server_pin[@]}" "$BIN" serve --port 0 > "$out" 2> "$LOG") &
  SPID=$!
  for _ in $(seq 200); do grep -q '#key=' "$out" 2>/dev/null && break; sleep 0.05; done
  PORT=$(sed -n 's/.*127\.0\.0\.1:\([0-9]*\).*/\1/p' "$out" | head -1)
  KEY=$(grep -o 'mh_session_[0-9a-f]*' "$out" | head -1)
  if [ -z "$PORT" ] || [ -z "$KEY" ]; then echo "service: moonhive serve did not start:" >&2; cat "$LOG" >&2; exit 1; fi
  URL="http://127.0.0.1:$PORT"
}

stop_serve() {
  kill -TERM "$SPID"
  wait "$SPID" || true
  SPID=""
}

# post PATH BODY: the answer's body (curl, with the session key)
post() { curl -sS -H "Authorization: Bearer $KEY" -H "Content-Type: application/json" --data-binary "$2" "$URL$1"; }

# POSTs to the runs route the server has answered (any status)
posts_answered() {
  curl -sS -H "Authorization: Bearer $KEY" "$URL/metrics" |
    awk '/^moonhive_http_requests_total\{method="POST",route="\/v1\/agents\/\{name\}\/runs"/ {n += $NF} END {print n + 0}'
}

# waits until the server has used no CPU for 300 ms (runs started by 202s have ended)
settle() {
  local a b
  for _ in $(seq 100); do
    a=$(cpu_us); sleep 0.3; b=$(cpu_us)
    [ "$a" = "$b" ] && return
  done
}

# ---- 1. overhead per POST ----

# agent_alone C: CPU µs per run of agent echo run C at a time in one process (median of 3)
agent_alone() {
  local out=()
  for _ in 1 2 3; do
    mkdir -p "$SCRATCH/alone"
    out+=("$(cd "$PROJECT" && MOONHIVE_DATA="$SCRATCH/alone" "${server_pin[@]}" "$BIN" run alone.lua 5000 "$1" 2> "$SCRATCH/alone.err")") ||
      { echo "service: the agent alone failed:" >&2; cat "$SCRATCH/alone.err" >&2; exit 1; }
    rm -rf "$SCRATCH/alone"
  done
  printf '%s\n' "${out[@]}" | median
}

overhead_case() { # label query access_log connections alone_us
  local rps=() cpu=()
  start_serve "serve-$3-${2:-202}-$4" MOONHIVE_ACCESS_LOG="$3"
  export BENCH_KEY="$KEY"
  local check
  check=$(post "/v1/agents/echo/runs?wait=true" '{"input":"[reply:hi]"}')
  if [[ "$check" != *'"output":"hi"'* ]]; then echo "service: the echo agent did not answer: $check" >&2; exit 1; fi
  "${client_pin[@]}" wrk -t1 -c"$4" -d1s -s "$SCRATCH/post.lua" "$URL/v1/agents/echo/runs$2" > /dev/null # warm-up
  settle
  for _ in 1 2 3; do
    local c0 n0 r c1 n1
    c0=$(cpu_us); n0=$(posts_answered)
    r=$("${client_pin[@]}" wrk -t1 -c"$4" -d"${DURATION}s" -s "$SCRATCH/post.lua" "$URL/v1/agents/echo/runs$2")
    if grep -q "Non-2xx" <<< "$r"; then echo "service: some POSTs failed:" >&2; echo "$r" >&2; exit 1; fi
    settle
    c1=$(cpu_us); n1=$(posts_answered)
    rps+=("$(awk '/^Requests\/sec:/ {print $2}' <<< "$r")")
    cpu+=("$(awk -v c="$((c1 - c0))" -v n="$((n1 - n0))" 'BEGIN {printf "%.1f", c / n}')")
  done
  stop_serve
  local med
  med=$(printf '%s\n' "${cpu[@]}" | median)
  printf '  POST %-11s -c%-3d access log %-3s %6.0f req/s %6.0f us CPU per POST  overhead %4.0f us\n' "$1" "$4" "$3" \
    "$(printf '%s\n' "${rps[@]}" | median)" "$med" "$(awk -v a="$med" -v b="$5" 'BEGIN {print a - b}')"
}

overhead_part() {
  local alone_c alone_1
  alone_c=$(agent_alone "$CONNS")
  alone_1=$(agent_alone 1)
  echo "service: POST /v1/agents/echo/runs (in-process mock model), wrk ${DURATION}s x3, medians;" \
       "overhead = CPU per POST - the agent alone (target <= 100 us)"
  printf '  agent alone (moonhive run), %3d at a time %22.0f us CPU per run\n' "$CONNS" "$alone_c"
  printf '  agent alone (moonhive run), one at a time %22.0f us CPU per run\n' "$alone_1"
  overhead_case "?wait=true" "?wait=true" on "$CONNS" "$alone_c"
  overhead_case "?wait=true" "?wait=true" off "$CONNS" "$alone_c"
  overhead_case "(202)" "" on "$CONNS" "$alone_c"
  overhead_case "(202)" "" off "$CONNS" "$alone_c"
  overhead_case "?wait=true" "?wait=true" off 1 "$alone_1"
}

# ---- 2. RSS with WAITING runs waiting on a slow model ----

# A fresh mock LLM server for each case (the last one's delayed answers hold
# its connections open): MPID, MOCK
start_mock() {
  local port
  exec {mock_out}< <(exec "${client_pin[@]}" "$MOCKLLM" --port 0 < /dev/null)
  MPID=$!
  read -r _ port <&"$mock_out"
  exec {mock_out}<&-
  MOCK="http://127.0.0.1:$port"
}

stop_mock() {
  kill -TERM "$MPID"
  MPID=""
}

# start_slow NAME [VAR=VALUE...]: a fresh mock LLM server, and a server whose
# agent slow calls it (no access log; runs may wait 5 min; SIGTERM cancels
# what is left after 200 ms)
start_slow() {
  local name=$1
  shift
  start_mock
  start_serve "$name-$(date +%s%N)" OPENAI_BASE_URL="$MOCK/v1" OPENAI_API_KEY=sk-bench MOONHIVE_ACCESS_LOG=off \
    MOONHIVE_DEADLINE=5m MOONHIVE_SHUTDOWN_GRACE_MS=200 "$@"
}

mock_received() { curl -sS "$MOCK/_requests" | grep -o '"method":' | wc -l; }

# POSTs WAITING runs of agent slow (50 at a time) that wait a minute on the
# model; prints how many started (202)
post_waiting() {
  "${client_pin[@]}" curl -s -Z --parallel-max 50 -H "Authorization: Bearer $KEY" -H "Content-Type: application/json" \
    --data-binary '{"input":"[delay:60000] wait"}' -o /dev/null -w '%{http_code}\n' \
    "$URL/v1/agents/slow/runs?n=[1-$WAITING]" 2> "$SCRATCH/curl.err" | grep -c '^202$' || true
}

# waits until the mock server has received n requests (at most 60 s); prints how many it has
wait_mock() {
  local got=0
  for _ in $(seq 240); do
    got=$(mock_received)
    [ "$got" -ge "$1" ] && break
    sleep 0.25
  done
  echo "$got"
}

# waiting_case LABEL IN_FLIGHT(1|0): one line of figures on stdout: idle_kib
# warm_kib full_kib kib_per_run post_s cpu_us_per_post exit_s exit_code left_running cancelled
waiting_case() {
  local caps=() want=32
  if [ "$2" = 1 ]; then caps=(MOONHIVE_LLM_CONCURRENCY=$((WAITING + 1000)) MOONHIVE_HTTP_HOST_CONNECTIONS=0); want=$WAITING; fi
  start_slow "waiting-$1" "${caps[@]}"
  local idle warm full c0 c1 t0 t1 codes got
  idle=$(rss_kib)
  post "/v1/agents/slow/runs?wait=true" '{"input":"[delay:1] warm"}' > /dev/null
  warm=$(rss_kib)
  curl -sS -X POST "$MOCK/_reset" > /dev/null
  c0=$(cpu_us); t0=$(now)
  codes=$(post_waiting)
  t1=$(now); c1=$(cpu_us)
  if [ "$codes" != "$WAITING" ]; then
    echo "service: only $codes of $WAITING POSTs got 202; server log:" >&2
    tail -5 "$LOG" >&2
  fi
  got=$(wait_mock "$want")
  sleep 0.5
  full=$(rss_kib)
  if [ "$got" -lt "$want" ]; then
    echo "service: the mock server received $got of $want model calls; server log:" >&2
    tail -5 "$LOG" >&2
  fi
  local e0 e1 code=0 left cancelled
  e0=$(now)
  kill -TERM "$SPID"
  wait "$SPID" || code=$?
  e1=$(now)
  SPID=""
  stop_mock
  MOONHIVE_DATA="$DATA" "$BIN" runs list --limit $((WAITING + 10)) > "$SCRATCH/runs.txt" 2>&1 || true
  left=$(awk '$3 == "running"' "$SCRATCH/runs.txt" | wc -l)
  cancelled=$(awk '$3 == "cancelled"' "$SCRATCH/runs.txt" | wc -l)
  awk -v i="$idle" -v w="$warm" -v f="$full" -v n="$WAITING" -v t0="$t0" -v t1="$t1" -v c="$((c1 - c0))" \
      -v e0="$e0" -v e1="$e1" -v code="$code" -v left="$left" -v x="$cancelled" \
      'BEGIN {printf "%d %d %d %.2f %.2f %.0f %.2f %d %d %d\n", i, w, f, (f - w) / n, t1 - t0, c / n, e1 - e0, code, left, x}'
}

# cap_case LIMIT: how many of WAITING POSTs start a run (202) when the
# shared sandbox's memory cap is LIMIT (default model caps: the runs queue)
cap_case() {
  start_slow "cap-$1" MOONHIVE_MEMORY_LIMIT="$1"
  post_waiting
  stop_serve
  stop_mock
}

waiting_part() {
  echo "service: $WAITING runs of agent slow POSTed (202, 50 at a time), waiting on the mock LLM server" \
       "([delay:60000]), x3, medians"
  local mode label flag what
  for mode in "in flight:1" "queued:0"; do
    label=${mode%:*} flag=${mode#*:}
    if [ "$flag" = 1 ] && [ "$(ulimit -n)" -lt $((WAITING + 1024)) ]; then
      echo "  $label: skipped (ulimit -n $(ulimit -n) is too low for $WAITING connections)"
      continue
    fi
    : > "$SCRATCH/rows"
    for _ in 1 2 3; do waiting_case "${label// /-}" "$flag" >> "$SCRATCH/rows"; done
    col() { awk -v k="$1" '{print $k}' "$SCRATCH/rows" | median; }
    if [ "$flag" = 1 ]; then what="every model call on the wire (model and per-origin caps lifted)"
    else what="32 model calls on the wire, the other runs queued for a permit (default caps)"; fi
    printf '  %-9s %s\n' "$label" "$what"
    printf '            RSS idle %.1f MiB, after one run %.1f MiB, with %d waiting %.1f MiB: %.1f KiB per waiting run\n' \
      "$(awk -v k="$(col 1)" 'BEGIN {print k / 1024}')" "$(awk -v k="$(col 2)" 'BEGIN {print k / 1024}')" "$WAITING" \
      "$(awk -v k="$(col 3)" 'BEGIN {print k / 1024}')" "$(col 4)"
    printf '            POSTed in %.1f s, %.0f us server CPU per POST; SIGTERM: exit %d after %.2f s,' \
      "$(col 5)" "$(col 6)" "$(col 8)" "$(col 7)"
    printf ' %d runs cancelled, %d left running\n' "$(col 10)" "$(col 9)"
  done
  # The runs of one agent version share one sandbox and its memory cap: how
  # many fit under 16M and 32M, and so what each one holds in it.
  local n16 n32
  cap_case 16M > "$SCRATCH/n16"
  cap_case 32M > "$SCRATCH/n32"
  n16=$(cat "$SCRATCH/n16") n32=$(cat "$SCRATCH/n32")
  if [ "$n32" -lt "$WAITING" ] && [ "$n32" -gt "$n16" ]; then
    printf '  sandbox   a memory cap of 16M held %d waiting runs, 32M %d: %.1f KiB each in the shared sandbox;' \
      "$n16" "$n32" "$(awk -v a="$n16" -v b="$n32" 'BEGIN {print 16384 / (b - a)}')"
    printf ' the default 64M holds about %d\n' "$(awk -v a="$n16" -v b="$n32" 'BEGIN {printf "%d", int((a + 3 * (b - a)) / 100) * 100}')"
  else
    printf '  sandbox   a memory cap of 16M held %d of %d waiting runs, 32M %d\n' "$n16" "$WAITING" "$n32"
  fi
}

PARTS=${BENCH_SERVICE_PARTS:-overhead,waiting}
if [[ "$PARTS" == *overhead* ]]; then overhead_part; fi
if [[ "$PARTS" == *waiting* ]]; then waiting_part; fi
