#!/usr/bin/env bash
# Runs the fuzz targets of tests/fuzz (see docs/TESTING.md).
#
#   tests/fuzz/run.sh replay OBJDIR
#       Runs every file of tests/fuzz/corpus/<target> and
#       tests/fuzz/regressions/<target> once through each target: with the
#       libFuzzer binary OBJDIR/fuzz/<target> (-runs=0) when there is one,
#       else with the replay build OBJDIR/replay/<target>. One line per
#       target, then "N passed, N failed" (one test per input file).
#   tests/fuzz/run.sh fuzz OBJDIR SECONDS
#       Fuzzes each target for SECONDS with libFuzzer on a scratch copy of its
#       corpus (new inputs never land in the repository) plus its
#       regressions. A crash input is left in build/fuzz/crashes/<target>/;
#       keep it as tests/fuzz/regressions/<target>/<what-broke> once fixed.
#       Prints runs, exec/s and coverage per target, then "N passed, N failed"
#       (one test per target). FUZZ_JOBS (default 1) targets run at once:
#       CI uses 2, one per core. FUZZ_SEED fixes libFuzzer's seed (CI sets
#       it, so that a run finds what the same code found before; unset, each
#       run explores anew).
set -uo pipefail
cd "$(dirname "$0")/../.."
mode=${1:?usage: run.sh replay|fuzz OBJDIR [SECONDS]}
objdir=${2:?OBJDIR}
seconds=${3:-60}
targets="fuzz_job_spec fuzz_config fuzz_worker_wire fuzz_router"
passed=0 failed=0
log=build/fuzz-$mode-$(basename "$objdir").log # asan and tsan replay at once in CI
mkdir -p build && : >"$log"

inputs() { # the input dirs of target $1 that hold files
  local d
  for d in tests/fuzz/corpus/$1 tests/fuzz/regressions/$1; do
    [ -d "$d" ] && [ -n "$(ls -A "$d")" ] && printf '%s\n' "$d"
  done
}
count_files() { local n=0 d; for d in "$@"; do n=$((n + $(find "$d" -type f | wc -l))); done; echo $n; }

case $mode in
replay)
  for t in $targets; do
    mapfile -t dirs < <(inputs "$t")
    total=$(count_files "${dirs[@]}")
    if [ -x "$objdir/fuzz/$t" ]; then
      out=$("$objdir/fuzz/$t" -runs=0 -rss_limit_mb=1024 -timeout=10 "${dirs[@]}" 2>&1 </dev/null); rc=$?
      printf '%s\n' "$out" >>"$log"
      if [ $rc -eq 0 ]; then ok=$total; bad=0; else ok=0; bad=1; fi
    elif [ -x "$objdir/replay/$t" ]; then
      out=$("$objdir/replay/$t" "${dirs[@]}" 2>&1 </dev/null); rc=$?
      printf '%s\n' "$out" >>"$log"
      ok=$(grep -c '^ok ' <<<"$out")
      if [ $rc -eq 0 ]; then bad=$((total - ok)); else bad=$((total - ok)); [ $bad -gt 0 ] || bad=1; fi
    else
      echo "  $t: no binary in $objdir (make fuzz-regress builds it)"; failed=$((failed + 1)); continue
    fi
    printf '  %-24s %s passed, %s failed\n' "$t" "$ok" "$bad"
    if [ $rc -ne 0 ]; then
      last=$(grep -E '^run ' <<<"$out" | tail -1)
      echo "    crashed (exit $rc)${last:+ on ${last#run }}:"; printf '%s\n' "$out" | grep -vE '^(ok|run) ' | tail -25 | sed 's/^/    /'
    fi
    passed=$((passed + ok)); failed=$((failed + bad))
  done
  ;;
fuzz)
  work=build/fuzz/work
  # fuzz_one TARGET: fuzzes it and leaves its report line in $work/TARGET/result
  # and "ok" or "failed" in $work/TARGET/status.
  fuzz_one() {
    local t=$1 bin=$objdir/fuzz/$1 start rc secs runs cov units rate
    rm -rf "${work:?}/$t" && mkdir -p "$work/$t/corpus" "build/fuzz/crashes/$t"
    if [ ! -x "$bin" ]; then
      echo "  $t: $bin is missing" >"$work/$t/result"; echo failed >"$work/$t/status"; return
    fi
    [ -d "tests/fuzz/corpus/$t" ] && cp -p tests/fuzz/corpus/"$t"/* "$work/$t/corpus/" 2>/dev/null
    mapfile -t extra < <([ -d "tests/fuzz/regressions/$t" ] && [ -n "$(ls -A "tests/fuzz/regressions/$t")" ] && echo "tests/fuzz/regressions/$t")
    start=$(date +%s)
    "$bin" -max_total_time="$seconds" -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 ${FUZZ_SEED:+-seed="$FUZZ_SEED"} \
      -artifact_prefix="build/fuzz/crashes/$t/" "$work/$t/corpus" "${extra[@]}" >"$work/$t/log" 2>&1 </dev/null
    rc=$?
    secs=$(( $(date +%s) - start ))
    runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$work/$t/log" | grep -oE '[0-9]+$' || true)
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$work/$t/log" | tail -1)
    units=$(find "$work/$t/corpus" -type f | wc -l)
    rate=$(( ${runs:-0} / (secs > 0 ? secs : 1) ))
    if [ $rc -eq 0 ]; then
      printf '  %-18s ok: %s runs in %s s (%s exec/s), %s, corpus %s\n' "$t" "${runs:-?}" "$secs" "$rate" "${cov:-cov ?}" "$units" >"$work/$t/result"
      echo ok >"$work/$t/status"
    else
      { printf '  %-18s FAILED (exit %s) after %s s; crash input(s) in build/fuzz/crashes/%s/:\n' "$t" "$rc" "$secs" "$t"
        grep -E 'ERROR|FUZZ_CHECK|SUMMARY|runtime error|Test unit written' "$work/$t/log" | head -12 | sed 's/^/    /'
      } >"$work/$t/result"
      echo failed >"$work/$t/status"
    fi
  }
  jobs_max=${FUZZ_JOBS:-1}
  for t in $targets; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do wait -n; done
    fuzz_one "$t" &
  done
  wait
  for t in $targets; do
    cat "$work/$t/result"
    [ -f "$work/$t/log" ] && cat "$work/$t/log" >>"$log"
    if [ "$(cat "$work/$t/status" 2>/dev/null)" = ok ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
  done
  ;;
*) echo "usage: run.sh replay|fuzz OBJDIR [SECONDS]" >&2; exit 2 ;;
esac
echo "(full output in $log)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
