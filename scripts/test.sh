#!/usr/bin/env bash
# Installs what is needed, builds, and runs every test:
#   1. release build: unit and integration tests (real clients: nbdinfo, nbdcopy, qemu-img,
#      qemu-io, fio, nbdsh, raw protocol abuse);
#   2. AddressSanitizer + UndefinedBehaviorSanitizer build: the same tests again;
#   3. ThreadSanitizer build: unit tests and the multi-connection integration tests.
#   scripts/test.sh [--quick]     --quick: release unit tests only (about a minute)
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
[ "${1:-}" = "--quick" ] && quick=1

scripts/install-deps.sh
jobs=$(nproc)

run_ctest() {  # DIR LABEL-REGEX
  ctest --test-dir "$1" -L "$2" --output-on-failure -j "$jobs" --timeout 900
}

scripts/build.sh release
if ((quick)); then
  run_ctest build unit
  exit 0
fi
run_ctest build 'unit|integration'

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
scripts/build.sh asan
run_ctest build-asan 'unit|integration'

export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
scripts/build.sh tsan
run_ctest build-tsan 'unit|tsan'
