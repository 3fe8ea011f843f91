# serve_common.sh — sourced by the benches that load `moonhive serve` with
# wrk (bench_serve.sh, bench_service.sh; $1: the part's name): the build,
# the cores (the server on core 0, its client on core 1, when there are two)
# and median (of numbers on stdin). Exits 0 when wrk is missing.
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/release}
if ! command -v wrk >/dev/null 2>&1; then echo "$1: wrk is not installed (make deps)"; exit 0; fi
server_pin=() client_pin=()
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
  server_pin=(taskset -c 0) client_pin=(taskset -c 1)
fi
median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
