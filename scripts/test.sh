#!/usr/bin/env bash
# Installs what is needed, builds, and runs every test:
#   1. release build: unit and integration tests (real clients: nbdinfo, nbdcopy, qemu-img,
#      qemu-io, fio, nbdsh, raw protocol abuse);
#   2. AddressSanitizer + UndefinedBehaviorSanitizer build: the same tests again;
#   3. ThreadSanitizer build: unit tests and the integration tests labelled tsan.
#   Each sanitizer build runs in the background while the stage before it tests.
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

# While one stage's tests run, the next stage's build runs beside them at the lowest CPU
# priority (and two compile jobs, to bound memory): the integration tests leave much of the two
# cores idle (daemons starting, guests booting, timeouts running out), and the build takes what
# they leave, instead of the whole CI waiting for it afterwards. Its output goes to a log, shown
# if it fails.
background_build=
background_build_log=
start_background_build() {  # FLAVOUR
  background_build_log=$(mktemp -t "volgate-build-$1.XXXXXX")
  # Its own process group, so that a failing stage can stop the whole build with it.
  CMAKE_BUILD_PARALLEL_LEVEL=2 setsid nice -n 19 scripts/build.sh "$1" > "$background_build_log" 2>&1 &
  background_build=$!
}
stop_background_build() {
  [[ -n $background_build ]] && kill -- "-$background_build" 2>/dev/null
  return 0
}
trap stop_background_build EXIT
finish_background_build() {
  if ! wait "$background_build"; then
    cat "$background_build_log" >&2
    echo "test.sh: the background build failed (log above)" >&2
    exit 1
  fi
  background_build=
  rm -f "$background_build_log"
}

scripts/build.sh release
if ((quick)); then
  run_ctest build unit
  exit 0
fi
start_background_build asan
run_ctest build 'unit|integration'
finish_background_build

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
start_background_build tsan
run_ctest build-asan 'unit|integration'
finish_background_build

# ignore_noninstrumented_modules: the unit tests that drive libvirt (and through it GLib, whose
# slice allocator hands memory between threads) need it as the integration tests do; lib.sh and
# tests/integration/tsan.supp say why it replaces suppressing those libraries.
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:ignore_noninstrumented_modules=1
run_ctest build-tsan 'unit|tsan'
