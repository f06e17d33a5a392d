#!/usr/bin/env bash
# Runs every fuzz target for about 20 s (FUZZ_SECONDS to change), for the test suite: one line
# per target and a closing "fuzz: N passed, N failed". Same environment as run-long.sh.
exec "$(dirname "$0")/run-long.sh" "${FUZZ_SECONDS:-20}"
