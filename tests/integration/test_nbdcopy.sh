#!/usr/bin/env bash
# nbdcopy: a random 64 MiB image copied into file, direct-file and memory exports and back out,
# byte-for-byte equal; with one connection, with 4 connections (multi-conn) and 64 requests in
# flight; export-to-export; the backing file itself holds the data after --flush.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_volgate
require_tool nbdcopy
need_disk_tmpdir

S=$TEST_TMP/s.sock
SRC=$TEST_TMP/src.img
make_random_file "$SRC" 64
# a few zero runs so the sparse/zero paths of nbdcopy are used too
dd if=/dev/zero of="$SRC" bs=1M seek=10 count=3 conv=notrunc status=none
dd if=/dev/zero of="$SRC" bs=4k seek=9000 count=5 conv=notrunc status=none
OTHER=$TEST_TMP/other.img
make_random_file "$OTHER" 64

truncate -s 64M "$TEST_TMP/file.img"
truncate -s 64M "$DISK_TMP/direct.img"
start_volgate --unix "$S" --threads 2 \
    --export "file=file:$TEST_TMP/file.img" \
    --export "direct=file:$DISK_TMP/direct.img,direct" \
    --export "mem=memory:64M" \
    --export "mem2=memory:64M"

u() { unix_uri "$1" "$S"; }

roundtrip() { # EXPORT  NBDCOPY-OPTIONS...
    local e=$1
    shift
    local t0 out=$TEST_TMP/out.img
    t0=$(now_ms)
    nbdcopy "$@" "$SRC" "$(u "$e")" || fail "nbdcopy $* $SRC -> $e failed"
    rm -f "$out"
    nbdcopy "$@" "$(u "$e")" "$out" || fail "nbdcopy $* $e -> $out failed"
    cmp "$SRC" "$out" || fail "nbdcopy $*: data read back from $e differs from what was written"
    pass "nbdcopy $* in and out of '$e' equal ($(($(now_ms) - t0)) ms)"
}

for e in file direct mem; do
    roundtrip "$e" --connections=1 --requests=1
    # overwrite with other data between runs so a stale copy cannot pass
    nbdcopy "$OTHER" "$(u "$e")" || fail "nbdcopy other -> $e failed"
    roundtrip "$e" --connections=4 --requests=64 --flush
    roundtrip "$e" --connections=4 --requests=64 --request-size=$((32 * 1024 * 1024))
    roundtrip "$e" --synchronous
done

# the backing files hold exactly the data (nbdcopy --flush above, then the last copies)
nbdcopy --flush "$SRC" "$(u file)"
nbdcopy --flush "$SRC" "$(u direct)"
cmp "$SRC" "$TEST_TMP/file.img" || fail "file export's backing file differs from the source"
cmp "$SRC" "$DISK_TMP/direct.img" || fail "direct export's backing file differs from the source"
pass "backing files equal the source after nbdcopy --flush"

# export to export, both directions through the same server, multi-conn
nbdcopy --connections=4 --requests=64 "$(u direct)" "$(u mem2)" || fail "nbdcopy direct -> mem2 failed"
nbdcopy --connections=4 --requests=64 "$(u mem2)" "$TEST_TMP/out2.img" || fail "nbdcopy mem2 -> file failed"
cmp "$SRC" "$TEST_TMP/out2.img" || fail "export-to-export copy differs"
pass "export-to-export copy equal"

# the default export is the first one
nbdcopy "nbd+unix:///?socket=$S" "$TEST_TMP/out3.img"
cmp "$SRC" "$TEST_TMP/out3.img" || fail "default export content differs from export 'file'"
pass "default export is the first export"

assert_alive
stop_volgate
cmp "$SRC" "$TEST_TMP/file.img" || fail "backing file changed after shutdown"
pass "server exits 0 on SIGTERM; data intact"
