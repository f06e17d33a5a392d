#!/usr/bin/env bash
# Runs every fuzz target briefly, for the test suite: one line per target and a closing
# "fuzz: N passed, N failed". Each target gets 20 s (FUZZ_SECONDS), or less when there are so many
# targets that they would need more than 140 s together (FUZZ_TOTAL).
#   tests/fuzz/run-short.sh [BUILD_DIR]
# BUILD_DIR: the clang build tree (default $FUZZ_BUILD, else <repo>/build-clang). Corpora persist
# in BUILD_DIR/fuzz, so each run starts from the seeds plus what earlier runs found. Otherwise
# the same environment as run-long.sh.
if [ $# -gt 1 ]; then
  echo "usage: $0 [BUILD_DIR]" >&2
  exit 2
fi
if [ $# -eq 1 ]; then
  FUZZ_BUILD=$1
  export FUZZ_BUILD
fi
exec "$(dirname "$0")/run-long.sh" --share "${FUZZ_TOTAL:-140}" "${FUZZ_SECONDS:-20}"
