#!/usr/bin/env bash
# run.sh — runs every test suite and ends with one line "N passed, N failed".
#
# Suites: C unit tests and C end-to-end tests (cmocka, TAP output) from
# build/<mode>/tests/, then the busted specs (tests/spec, TAP output), which
# drive the real binary, then the node suites (tests/*/package.json: the
# openai client, the dashboard in Chromium). BUILD picks the build (release
# or sanitize).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/release}
export MOONHIVE_BIN="$PWD/$BUILD/moonhive"
export TESTSERVER="$PWD/$BUILD/tools/testserver"
export MOONHIVE_ROOT="$PWD"
# Binaries under build/ find the runtime's Lua files and stdlib/ here.
export MOONHIVE_RUNTIME="$PWD/lua" MOONHIVE_STDLIB="$PWD/stdlib"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# Tests run with their own data directory, never the developer's.
export MOONHIVE_DATA="$(mktemp -d)"
trap 'rm -rf "$MOONHIVE_DATA"' EXIT

passed=0
failed=0
failures=()

count_tap() { # file suite
  local p f
  p=$(grep -cE '^ok ' "$1" || true)
  f=$(grep -cE '^not ok ' "$1" || true)
  passed=$((passed + p))
  failed=$((failed + f))
  if [ "$f" -gt 0 ]; then failures+=("$2: $(grep -E '^not ok ' "$1" | head -5 | tr '\n' ';')"); fi
  printf '%-28s %4d passed, %d failed\n' "$2" "$p" "$f"
}

log=$(mktemp -d)
for t in "$BUILD"/tests/test_*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  "$t" > "$log/$name.tap" 2> "$log/$name.err"
  rc=$?
  count_tap "$log/$name.tap" "$name"
  if [ $rc -ne 0 ] && ! grep -qE '^not ok ' "$log/$name.tap"; then
    failed=$((failed + 1))
    failures+=("$name exited with status $rc: $(tail -5 "$log/$name.err" | tr '\n' ' ')")
  fi
done

if command -v busted >/dev/null 2>&1; then
  busted --output=TAP tests/spec > "$log/busted.tap" 2> "$log/busted.err"
  rc=$?
  count_tap "$log/busted.tap" "busted specs"
  if [ $rc -ne 0 ] && ! grep -qE '^not ok ' "$log/busted.tap"; then
    failed=$((failed + 1))
    failures+=("busted exited with status $rc: $(tail -5 "$log/busted.err" | tr '\n' ' ')")
  fi
else
  failed=$((failed + 1))
  failures+=("busted is not installed (make deps)")
fi

# Node suites (tests/*/package.json): real clients (the openai npm package,
# a headless browser) against the real binary. Their packages are installed
# on first use from package-lock.json; each suite's `npm test` prints TAP.
for pkg in tests/*/package.json; do
  [ -f "$pkg" ] || continue
  dir=$(dirname "$pkg")
  name="node $(basename "$dir")"
  if ! command -v npm >/dev/null 2>&1; then
    failed=$((failed + 1))
    failures+=("$name: npm is not installed (make deps)")
    continue
  fi
  if [ ! -d "$dir/node_modules" ] && ! (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error > "$log/${name// /_}.npm" 2>&1); then
    failed=$((failed + 1))
    failures+=("$name: npm ci failed: $(tail -3 "$log/${name// /_}.npm" | tr '\n' ' ')")
    continue
  fi
  (cd "$dir" && npm test --silent) > "$log/${name// /_}.tap" 2> "$log/${name// /_}.err"
  rc=$?
  count_tap "$log/${name// /_}.tap" "$name"
  if [ $rc -ne 0 ] && ! grep -qE '^not ok ' "$log/${name// /_}.tap"; then
    failed=$((failed + 1))
    failures+=("$name exited with status $rc: $(tail -5 "$log/${name// /_}.err" | tr '\n' ' ')")
  fi
done

if [ ${#failures[@]} -gt 0 ]; then
  echo
  echo "failures:"
  for f in "${failures[@]}"; do echo "  $f"; done
  echo "(full output in $log)"
fi
echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
