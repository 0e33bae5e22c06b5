#!/usr/bin/env bash
# Runs every test suite for one build variant and ends with the line
# "N passed, N failed" summed over all of them (the line CI reads).
# Usage: tests/run.sh [release|asan|tsan]
set -uo pipefail
variant=${1:-release}
cd "$(dirname "$0")/.."
bindir=build/$variant
if [ "$variant" = release ]; then bin=build/jobd; else bin=$bindir/jobd; fi
passed=0 failed=0 skipped=0
log=build/test-$variant.log
mkdir -p build && : >"$log"

case $variant in
  asan) export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ;;
  tsan) export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" ;;
esac

# Adds the counts from a "N passed, N failed[, N skipped]" style line.
add_counts() {
  local line=$1 p f s
  p=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+' || true)
  f=$(grep -oE '[0-9]+ (failed|error|errors)' <<<"$line" | grep -oE '[0-9]+' | awk '{s+=$1} END {print s+0}')
  s=$(grep -oE '[0-9]+ skipped' <<<"$line" | grep -oE '[0-9]+' || true)
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0})); skipped=$((skipped + ${s:-0}))
}

echo "== unit tests ($variant)"
for t in "$bindir"/tests/test_*; do
  [ -x "$t" ] || continue
  out=$("$t" 2>&1); rc=$?
  printf '%s\n' "$out" >>"$log"
  last=$(grep -E '^[0-9]+ passed, [0-9]+ failed' <<<"$out" | tail -1)
  printf '  %-24s %s\n' "$(basename "$t")" "${last:-no summary (exit $rc)}"
  if [ -z "$last" ]; then failed=$((failed + 1)); printf '%s\n' "$out" | tail -20; continue; fi
  grep -E '^not ok|CHECK failed' <<<"$out" | head -20
  add_counts "$last"
  # A sanitizer report or a crash after the summary still fails the suite.
  if [ $rc -ne 0 ] && ! grep -qE ' [1-9][0-9]* failed' <<<"$last"; then failed=$((failed + 1)); printf '%s\n' "$out" | tail -30; fi
done

# Integration test files run on JOBD_TEST_WORKERS pytest-xdist workers
# (default 4; 1 runs them in this process): the suite mostly waits on its
# servers (starts, drains, timeouts), not on the CPU. A file's tests stay on
# one worker, in order, so a module's fixtures are made once.
echo "== integration tests ($variant)"
workers=${JOBD_TEST_WORKERS:-4}
xdist=()
if [ "$workers" -gt 1 ] && /usr/bin/python3 -c 'import xdist' 2>/dev/null; then
  xdist=(-n "$workers" --dist loadfile)
fi
if [ -x "$bin" ]; then
  out=$(JOBD_BIN="$bin" JOBD_VARIANT="$variant" /usr/bin/python3 -m pytest -q -p no:cacheprovider "${xdist[@]}" tests/integration 2>&1); rc=$?
  printf '%s\n' "$out" >>"$log"
  last=$(grep -E '[0-9]+ (passed|failed|error)' <<<"$out" | tail -1)
  grep -E '^(FAILED|ERROR)' <<<"$out" | head -30
  echo "  pytest: ${last:-no summary (exit $rc)}"
  if [ -z "$last" ]; then failed=$((failed + 1)); printf '%s\n' "$out" | tail -30; else add_counts "$last"; fi
else
  echo "  $bin is missing"; failed=$((failed + 1))
fi

# The dashboard in a real browser (tests/browser: chromium + playwright-core,
# which it installs with npm ci the first time). Release only: it tests the
# page, not the server's memory or threads.
if [ "$variant" = release ]; then
  echo "== browser tests"
  out=$(JOBD_BIN="$bin" node tests/browser/run.js 2>&1 </dev/null); rc=$?
  printf '%s\n' "$out" >>"$log"
  last=$(grep -E '^[0-9]+ passed, [0-9]+ failed' <<<"$out" | tail -1)
  awk '/^not ok/ {p = 1; print; next} /^    / {if (p) print; next} {p = 0}' <<<"$out" | head -60
  echo "  tests/browser/run.js: ${last:-no summary (exit $rc)} (screenshots in build/screenshots)"
  if [ -z "$last" ]; then failed=$((failed + 1)); printf '%s\n' "$out" | tail -30; else add_counts "$last"; fi
  if [ $rc -ne 0 ] && [ -n "$last" ] && ! grep -qE ' [1-9][0-9]* failed' <<<"$last"; then failed=$((failed + 1)); fi
fi

# The fuzz targets' corpus and regression inputs, replayed once each through
# the targets built for this variant (tests/fuzz, `make fuzz-regress`; no clang).
echo "== fuzz regressions ($variant)"
if [ -d "$bindir/replay" ]; then
  out=$(tests/fuzz/run.sh replay "$bindir" 2>&1 </dev/null); rc=$?
  printf '%s\n' "$out" >>"$log"
  last=$(grep -E '^[0-9]+ passed, [0-9]+ failed' <<<"$out" | tail -1)
  grep -E '^  ' <<<"$out" | head -40
  if [ -z "$last" ]; then failed=$((failed + 1)); printf '%s\n' "$out" | tail -30; else add_counts "$last"; fi
  if [ $rc -ne 0 ] && [ -n "$last" ] && ! grep -qE ' [1-9][0-9]* failed' <<<"$last"; then failed=$((failed + 1)); fi
else
  echo "  $bindir/replay is missing (make VARIANT=$variant unit builds it)"; failed=$((failed + 1))
fi

# The container image (tests/container, `make test-container`): in CI, or where
# podman is already set up (the first build on a machine takes minutes).
if [ "$variant" = release ]; then
  echo "== container tests"
  if [ "${CI:-}" = true ] || { command -v podman >/dev/null 2>&1 &&
       [ -e "${PODMAN_SETUP_DIR:-/var/tmp/podman-setup}/containers.conf" ]; }; then
    out=$(tests/container/test_container.sh 2>&1 </dev/null); rc=$?
    printf '%s\n' "$out" >>"$log"
    last=$(grep -E '^[0-9]+ passed, [0-9]+ failed' <<<"$out" | tail -1)
    awk '/^not ok/ {p = 1; print; next} /^    / {if (p) print; next} {p = 0}' <<<"$out" | head -60
    echo "  test_container.sh: ${last:-no summary (exit $rc)}"
    if [ -z "$last" ]; then failed=$((failed + 1)); printf '%s\n' "$out" | tail -30; else add_counts "$last"; fi
    if [ $rc -ne 0 ] && [ -n "$last" ] && ! grep -qE ' [1-9][0-9]* failed' <<<"$last"; then failed=$((failed + 1)); fi
  else
    echo "  container tests: skipped (run make test-container; CI runs it)"
    skipped=$((skipped + 1))
  fi
fi

echo "(full output in $log)"
if [ "$skipped" -gt 0 ]; then
  echo "$passed passed, $failed failed, $skipped skipped"
else
  echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
