#!/usr/bin/env bash
# volgate serve starts itself once more with glibc's per-thread cache limited (GLIBC_TUNABLES
# glibc.malloc.tcache_max=128, see gateway/serve_process.hpp): same process id, same name, the
# operator's other tunables kept, an operator's own tcache_max left alone; it serves as before.
# Sanitizer builds have their own allocator and skip the restart.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_volgate
require_tool nbdinfo

S=$TEST_TMP/s.sock
# The tunables a process started with. glibc's loader ends each value it reads with a NUL in
# place, in the block /proc/PID/environ shows, so "a=1:b=2" reads back as "a=1" then "b=2".
tunables_of() {
    tr '\0' '\n' <"/proc/$1/environ" | awk '/^GLIBC_TUNABLES=/ { sub(/^GLIBC_TUNABLES=/, ""); t = $0; more = 1; next }
        more && /^glibc\./ { t = t ":" $0; next } { more = 0 } END { print t }'
}

if ldd "$VOLGATE" | grep -Eq 'lib(a|t)san'; then
    start_volgate --unix "$S" --export "m=memory:16M"
    assert_eq "$(tunables_of "$VG_PID")" "" "GLIBC_TUNABLES of a sanitizer build"
    stop_volgate
    pass "sanitizer build: no restart, no GLIBC_TUNABLES"
    exit 0
fi

start_volgate --unix "$S" --export "m=memory:16M"
assert_eq "$(tunables_of "$VG_PID")" "glibc.malloc.tcache_max=128" "GLIBC_TUNABLES of the serving process"
assert_eq "$(cat "/proc/$VG_PID/comm")" "volgate" "the process's name after the restart"
assert_eq "$(nbdinfo --size "$(unix_uri m "$S")")" "16777216" "the export's size"
stop_volgate
pass "volgate serve runs with glibc.malloc.tcache_max=128, under the pid it was started as and its own name"

GLIBC_TUNABLES=glibc.malloc.arena_max=4 start_volgate --unix "$S" --export "m=memory:16M"
assert_eq "$(tunables_of "$VG_PID")" "glibc.malloc.arena_max=4:glibc.malloc.tcache_max=128" \
    "GLIBC_TUNABLES with the operator's own"
stop_volgate
GLIBC_TUNABLES=glibc.malloc.tcache_max=64 start_volgate --unix "$S" --export "m=memory:16M"
assert_eq "$(tunables_of "$VG_PID")" "glibc.malloc.tcache_max=64" "an operator's tcache_max"
nbdinfo --size "$(unix_uri m "$S")" >/dev/null || fail "serving with the operator's tcache_max"
stop_volgate
pass "the operator's tunables are kept, and an operator's tcache_max wins"
