#!/usr/bin/env bash
# Runs every fuzz target for DURATION (seconds, or with a suffix: 90s, 10m, 2h), one after the
# other, and ends with "fuzz: N passed, N failed" (a target fails when libFuzzer finds a crash,
# a broken invariant, a timeout or runaway memory; the input that did it is kept).
#   tests/fuzz/run-long.sh [--coverage] DURATION
# Environment: FUZZ_BUILD    clang build tree (default <repo>/build-clang, set up if missing)
#              FUZZ_WORK     corpora, logs, crash inputs (default $FUZZ_BUILD/fuzz); corpora
#                            persist there, so later runs start from what earlier ones found
#              FUZZ_JOBS     parallel fuzzing processes per target (libFuzzer -fork; default 1)
# --coverage: afterwards, replay each corpus through a source-coverage build and print line and
# branch coverage of the code under test (needs llvm-profdata and llvm-cov).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

coverage=0
if [ "${1:-}" = "--coverage" ]; then coverage=1; shift; fi
if [ $# -ne 1 ]; then
  echo "usage: $0 [--coverage] DURATION   (e.g. 600, 10m, 2h)" >&2
  exit 2
fi
case $1 in
  *h) secs=$(( ${1%h} * 3600 )) ;;
  *m) secs=$(( ${1%m} * 60 )) ;;
  *s) secs=${1%s} ;;
  *) secs=$1 ;;
esac
if ! [[ $secs =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
  echo "$0: bad duration '$1'" >&2
  exit 2
fi

build=$("$here/build.sh") || { echo "fuzz: 0 passed, 1 failed"; exit 1; }
work=${FUZZ_WORK:-$build/fuzz}
jobs=${FUZZ_JOBS:-1}
mkdir -p "$work/artifacts"

# target name -> code under test, for the coverage report
declare -A covered=( [virtq]="src/vmm/virtio/virtq.c src/vmm/memory.c" )

passed=0
failed=0
for name in virtq; do
  bin=$build/tests/fuzz-$name
  corpus=$work/corpus-$name
  log=$work/$name.log
  mkdir -p "$corpus"
  "$build/tests/fuzz-$name-seeds" "$corpus" || { echo "fuzz-$name: cannot write seeds"; failed=$((failed + 1)); continue; }
  args=(-max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=24576
        -dict="$here/$name.dict" -print_final_stats=1 -artifact_prefix="$work/artifacts/$name-")
  [ "$jobs" -gt 1 ] && args+=(-fork="$jobs")
  start=$(date +%s)
  "$bin" "${args[@]}" "$corpus" >"$log" 2>&1
  rc=$?
  took=$(( $(date +%s) - start ))
  execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -n 1)
  if [ -z "$execs" ]; then   # fork mode prints no final stats; use the last status line
    execs=$(grep -oE '^#[0-9]+' "$log" | tail -n 1 | tr -d '#')
  fi
  status=$(grep -E '(DONE|pulse|NEW|REDUCE) +cov:' "$log" | tail -n 1 | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' || true)
  rate=$(( ${execs:-0} / (took > 0 ? took : 1) ))
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
    echo "fuzz-$name: ok: ${execs:-?} execs in ${took} s (${rate}/s), ${status:-no status}, corpus $(ls "$corpus" | wc -l) files"
  else
    failed=$((failed + 1))
    echo "fuzz-$name: FAILED (exit $rc) after ${took} s, ${execs:-?} execs; log $log"
    grep -E 'invariant broken|ERROR: |SUMMARY: |Test unit written|runtime error' "$log" | head -n 8 | sed 's/^/  /'
  fi

  if [ "$coverage" = 1 ]; then
    cov=$work/coverage-$name
    mkdir -p "$cov"
    # shellcheck disable=SC2086
    srcs=$(for f in ${covered[$name]}; do echo "$root/$f"; done)
    if clang -std=c17 -D_GNU_SOURCE -O1 -fsanitize=fuzzer -fprofile-instr-generate -fcoverage-mapping \
        -I"$root/src" -I"$root/src/vmm" -I"$root/src/common" "$here/fuzz_$name.c" $srcs \
        "$root/src/common/error.c" "$root/src/common/util.c" -o "$cov/fuzz-$name" &&
      LLVM_PROFILE_FILE="$cov/run.profraw" "$cov/fuzz-$name" -runs=0 "$corpus" >"$cov/replay.log" 2>&1 &&
      llvm-profdata merge -sparse "$cov/run.profraw" -o "$cov/run.profdata"; then
      # shellcheck disable=SC2086
      llvm-cov report "$cov/fuzz-$name" -instr-profile="$cov/run.profdata" $srcs
      # shellcheck disable=SC2086
      llvm-cov show "$cov/fuzz-$name" -instr-profile="$cov/run.profdata" $srcs >"$cov/annotated.txt"
      echo "fuzz-$name: annotated source in $cov/annotated.txt"
    else
      echo "fuzz-$name: coverage report failed (see $cov)"
    fi
  fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
