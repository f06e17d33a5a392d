#!/usr/bin/env bash
# Runs fuzz targets for DURATION each (seconds, or with a suffix: 90s, 10m, 2h), one after the
# other, and ends with "fuzz: N passed, N failed" (a target fails when libFuzzer finds a crash,
# a broken invariant, a timeout, a leak or runaway memory; the input that did it is kept).
#   tests/fuzz/run-long.sh [--coverage] [--build DIR] [--work DIR] [--share TOTAL]
#                          DURATION [TARGET...]
# TARGETs: virtq blk net vsock agent-proto boot api mmio snapshot migrate (default: all).
# Options and environment:
#   --build DIR, FUZZ_BUILD  clang build tree (default <repo>/build-clang, set up if missing)
#   --work DIR, FUZZ_WORK    corpora (DIR/corpus-NAME), logs, crash inputs (DIR/artifacts);
#                            default BUILD/fuzz. Corpora persist, so later runs start from what
#                            earlier ones found; the seeds are (re)written into them each run.
#   FUZZ_JOBS                parallel fuzzing processes per target (libFuzzer -fork; default 1)
#   --share TOTAL            at most TOTAL seconds for all targets together: each gets
#                            TOTAL / (number of targets) if that is less than DURATION (5 s at
#                            least), so that adding targets does not lengthen the test suite
#   --coverage               afterwards, replay each corpus through a source-coverage build
#                            (WORK/coverage-build) and print line and branch coverage of the
#                            code under test (needs llvm-profdata and llvm-cov)
# A failing input replays with: BUILD/tests/fuzz-NAME WORK/artifacts/NAME-crash-...
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

usage() {
  echo "usage: $0 [--coverage] [--build DIR] [--work DIR] [--share TOTAL] DURATION" \
    "[TARGET...]" >&2
  exit 2
}
coverage=0
share=0
while [ $# -gt 0 ]; do
  case $1 in
    --coverage) coverage=1; shift ;;
    --share) [ $# -ge 2 ] && [[ $2 =~ ^[0-9]+$ ]] || usage; share=$2; shift 2 ;;
    --build) [ $# -ge 2 ] || usage; FUZZ_BUILD=$2; shift 2 ;;
    --work) [ $# -ge 2 ] || usage; FUZZ_WORK=$2; shift 2 ;;
    -*) usage ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || usage
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
shift

# Every target: the code under test (for --coverage) and the longest input worth generating.
names=(virtq blk net vsock agent-proto boot api fcconfig mmio snapshot migrate load)
declare -A covered=(
  [virtq]="src/vmm/virtio/virtq.c src/vmm/memory.c"
  [blk]="src/vmm/virtio/blk.c src/vmm/block/image.c src/vmm/block/aio.c"
  [net]="src/vmm/virtio/net.c src/vmm/net/vnet.c src/vmm/net/rxfilter.c"
  [vsock]="src/vmm/virtio/vsock.c src/vmm/vsock/mux.c"
  [agent-proto]="src/agent/proto.c"
  [boot]="src/vmm/boot/loader.c src/vmm/boot/elf.c src/vmm/boot/bzimage.c src/vmm/boot/boot.c"
  [api]="src/vmm/api.c src/api/http.c"
  [fcconfig]="src/vmm/fcjson.c src/vmm/setup.c src/vmm/api_setup.c"
  [mmio]="src/vmm/virtio/virtio_mmio.c"
  [snapshot]="src/vmm/snapshot/format.c src/vmm/snapshot/shape.c src/vmm/snapshot/platform_state.c"
  [migrate]="src/vmm/migrate/stream.c src/vmm/snapshot/format.c src/vmm/snapshot/shape.c"
  [load]="src/vmm/load.c"
)
declare -A max_len=( [virtq]=24576 [blk]=8192 [net]=8192 [vsock]=8192 [agent-proto]=16384
                     [boot]=16384 [api]=4096 [fcconfig]=4096 [mmio]=4096 [snapshot]=8192
                     [migrate]=32768 [load]=4096 )
if [ $# -gt 0 ]; then
  for n in "$@"; do
    [ -n "${covered[$n]:-}" ] || { echo "$0: unknown target '$n' (${names[*]})" >&2; exit 2; }
  done
  names=("$@")
fi
if [ "$share" -gt 0 ]; then
  each=$(( share / ${#names[@]} ))
  [ "$each" -lt 5 ] && each=5
  [ "$each" -lt "$secs" ] && secs=$each
fi

build=$("$here/build.sh" ${FUZZ_BUILD:+"$FUZZ_BUILD"}) || {
  echo "fuzz: cannot build the fuzz targets (see above)"
  echo "fuzz: 0 passed, 1 failed"
  exit 1
}
work=${FUZZ_WORK:-$build/fuzz}
jobs=${FUZZ_JOBS:-1}
mkdir -p "$work/artifacts"

cov_build=""
if [ "$coverage" = 1 ]; then
  cov_build=$work/coverage-build
  if [ ! -f "$cov_build/build.ninja" ]; then
    # Meson runs test programs of these flags: their profiles go nowhere.
    LLVM_PROFILE_FILE=/dev/null CC=clang meson setup "$cov_build" "$root" \
      -Dc_args='-fprofile-instr-generate -fcoverage-mapping' \
      -Dc_link_args=-fprofile-instr-generate >"$work/coverage-setup.log" 2>&1 ||
      { echo "fuzz: coverage build setup failed (see $work/coverage-setup.log)"; cov_build=""; }
  fi
fi

passed=0
failed=0
for name in "${names[@]}"; do
  bin=$build/tests/fuzz-$name
  corpus=$work/corpus-$name
  log=$work/$name.log
  mkdir -p "$corpus"
  "$build/tests/fuzz-$name-seeds" "$corpus" || { echo "fuzz-$name: cannot write seeds"; failed=$((failed + 1)); continue; }
  args=(-max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len="${max_len[$name]}"
        -dict="$here/${name//-/_}.dict" -print_final_stats=1 -artifact_prefix="$work/artifacts/$name-")
  [ "$jobs" -gt 1 ] && args+=(-fork="$jobs")
  start=$(date +%s)
  (cd "$work" && "$bin" "${args[@]}" "$corpus") >"$log" 2>&1
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

  if [ -n "$cov_build" ]; then
    cov=$work/coverage-$name
    rm -rf "$cov"
    mkdir -p "$cov"
    cbin=$cov_build/tests/fuzz-$name
    if LLVM_PROFILE_FILE=/dev/null ninja -C "$cov_build" "tests/fuzz-$name" >"$cov/build.log" 2>&1 &&
      (cd "$cov" && LLVM_PROFILE_FILE="$cov/run-%p.profraw" "$cbin" -runs=0 -rss_limit_mb=4096 \
        "$corpus") >"$cov/replay.log" 2>&1 &&
      llvm-profdata merge -sparse "$cov"/run-*.profraw -o "$cov/run.profdata"; then
      # llvm-cov 14 ignores source arguments for these paths: keep the rows of the code under
      # test (matched by path suffix) and total them.
      llvm-cov report "$cbin" -instr-profile="$cov/run.profdata" 2>/dev/null |
        awk -v want="${covered[$name]}" -v name="fuzz-$name" '
          BEGIN { n = split(want, w, " ") }
          /^Filename/ { print; next }
          NF >= 13 {
            for (i = 1; i <= n; i++) {
              if (substr($1, length($1) - length(w[i]) + 1) != w[i]) continue
              print; r += $2; mr += $3; l += $8; ml += $9; b += $11; mb += $12
            }
          }
          END {
            printf "%s: code under test: lines %d/%d (%.1f%%), branches %d/%d (%.1f%%), regions %d/%d (%.1f%%)\n",
              name, l - ml, l, l ? 100 * (l - ml) / l : 0, b - mb, b, b ? 100 * (b - mb) / b : 0,
              r - mr, r, r ? 100 * (r - mr) / r : 0
          }'
      llvm-cov show "$cbin" -instr-profile="$cov/run.profdata" >"$cov/annotated.txt" 2>/dev/null
      echo "fuzz-$name: annotated sources in $cov/annotated.txt"
    else
      echo "fuzz-$name: coverage report failed (see $cov)"
    fi
  fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
