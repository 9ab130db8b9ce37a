#!/usr/bin/env bash
# QEMU's NBD client against volgate: qemu-img info/convert/compare/map, and qemu-io writes,
# reads, write_zeroes (with and without unmap), discards, FUA writes and flushes at odd offsets
# and lengths, each checked with qemu-io's pattern reads and, independently, by copying the
# whole export out and comparing it with a model of the expected bytes.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_volgate
require_tool qemu-img qemu-io nbdcopy
"$SYSPY" -c 'import nbd' 2>/dev/null || fail "python3-libnbd is not installed for $SYSPY"
need_disk_tmpdir

MiB=1048576
S=$TEST_TMP/s.sock
SRC=$TEST_TMP/src.img
make_random_file "$SRC" 64
dd if=/dev/zero of="$SRC" bs=1M seek=20 count=4 conv=notrunc status=none   # zero run: write_zeroes path
truncate -s 64M "$TEST_TMP/file.img" "$DISK_TMP/direct.img"
truncate -s 16M "$TEST_TMP/io.img"
# sparse layout for qemu-img map: data [0,1M), hole [1M,3M), data [3M,4M), hole [4M,8M)
truncate -s 8M "$TEST_TMP/map.img"
head -c $MiB /dev/urandom | dd of="$TEST_TMP/map.img" bs=1M seek=0 conv=notrunc status=none
head -c $MiB /dev/urandom | dd of="$TEST_TMP/map.img" bs=1M seek=3 conv=notrunc status=none
head -c $((2 * MiB)) /dev/urandom >"$TEST_TMP/ro.img"

start_volgate --unix "$S" --threads 1 \
    --export "file=file:$TEST_TMP/file.img" \
    --export "mem=memory:64M" \
    --export "direct=file:$DISK_TMP/direct.img,direct" \
    --export "map=file:$TEST_TMP/map.img" \
    --export "iomem=memory:16M" \
    --export "iofile=file:$TEST_TMP/io.img" \
    --export "ro=file:$TEST_TMP/ro.img,readonly"
u() { unix_uri "$1" "$S"; }

# ---- qemu-img info
for e in file mem direct; do
    size=$(qemu-img info --output=json -f raw "$(u "$e")" | "$SYSPY" -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
    assert_eq "$size" 67108864 "qemu-img info virtual-size of $e"
done
pass "qemu-img info reports 64 MiB"

# ---- qemu-img convert in, compare, convert out
for e in file mem direct; do
    qemu-img convert -n -f raw -O raw "$SRC" "$(u "$e")" || fail "qemu-img convert src -> $e failed"
    qemu-img compare -q -f raw -F raw "$SRC" "$(u "$e")" || fail "qemu-img compare src vs $e: differ (rc $?)"
    rm -f "$TEST_TMP/out.img"
    qemu-img convert -f raw -O raw "$(u "$e")" "$TEST_TMP/out.img" || fail "qemu-img convert $e -> out failed"
    cmp "$SRC" "$TEST_TMP/out.img" || fail "qemu-img convert round trip through $e differs"
    pass "qemu-img convert in/out and compare on '$e'"
done
# parallel, out-of-order convert (16 coroutines)
make_random_file "$TEST_TMP/src2.img" 64
for e in mem direct; do
    qemu-img convert -n -W -m 16 -f raw -O raw "$TEST_TMP/src2.img" "$(u "$e")" || fail "qemu-img convert -W -m 16 -> $e failed"
    qemu-img compare -q -f raw -F raw "$TEST_TMP/src2.img" "$(u "$e")" || fail "compare after convert -W -m 16 on $e"
done
pass "qemu-img convert -W -m 16 (out-of-order, parallel) equal"
# compare really compares: change one byte in the export
qemu-io -f raw "$(u mem)" -c 'write -P 0x5a 33554433 1' >/dev/null || fail "qemu-io write to mem failed"
rc=0
qemu-img compare -q -f raw -F raw "$TEST_TMP/src2.img" "$(u mem)" || rc=$?
assert_eq "$rc" 1 "qemu-img compare exit code after changing one byte"
pass "qemu-img compare detects a one-byte difference"

# ---- qemu-img map
check_qmap() { # URI "start:len:data:zero ..."  (data/zero as 0/1; adjacent equal entries merged)
    qemu-img map --output=json -f raw "$1" >"$TEST_TMP/qmap.json" || fail "qemu-img map $1 failed"
    "$SYSPY" - "$TEST_TMP/qmap.json" "$2" <<'EOF' || fail "qemu-img map $1: wrong layout"
import json, sys
m = json.load(open(sys.argv[1]))
merged = []
for e in m:
    k = [e["start"], e["length"], int(e["data"]), int(e["zero"])]
    if merged and merged[-1][2:] == k[2:] and merged[-1][0] + merged[-1][1] == k[0]:
        merged[-1][1] += k[1]
    else:
        merged.append(k)
want = [[int(x) for x in w.split(":")] for w in sys.argv[2].split()]
if merged != want:
    sys.exit("got  %r\nwant %r" % (merged, want))
EOF
}
M=$MiB
check_qmap "$(u map)" "0:$M:1:0 $M:$((2 * M)):0:1 $((3 * M)):$M:1:0 $((4 * M)):$((4 * M)):0:1"
check_qmap "$(u iomem)" "0:$((16 * M)):0:1"
pass "qemu-img map: data/hole layout of a sparse file and an untouched memory export"

# ---- qemu-io at odd offsets; the same command list drives a model of the expected bytes
CMDS=(
    "write -P 0xab 4097 1"
    "write -P 0xcd 123457 65535"
    "write -P 0x11 1048576 262144"
    "write -z 1048576 65536"
    "write -P 0x22 2097152 262144"
    "discard 2097152 131072"
    "write -P 0x33 3145728 1048576"
    "write -z -u 3145728 1048576"
    "write -f -P 0x44 4194304 8192"
    "write -P 0x55 5242880 65536"
    "write -z 5243000 1000"
    "write -f -P 0x66 16773120 4096"
    "write -P 0x77 6291457 131071"
    "discard 6356992 65536"
    "flush"
)
READS=(
    "read -P 0xab 4097 1" "read -P 0 4096 1" "read -P 0 4098 1"
    "read -P 0xcd 123457 65535" "read -P 0 123456 1" "read -P 0 188992 1"
    "read -P 0 1048576 65536" "read -P 0x11 1114112 196608"
    "read -P 0 2097152 131072" "read -P 0x22 2228224 131072"
    "read -P 0 3145728 1048576"
    "read -P 0x44 4194304 8192" "read -P 0 4202496 1"
    "read -P 0x55 5242880 120" "read -P 0 5243000 1000" "read -P 0x55 5244000 64416"
    "read -P 0x66 16773120 4096"
)
for e in iomem iofile; do
    args=()
    for c in "${CMDS[@]}" "${READS[@]}"; do args+=(-c "$c"); done
    rc=0
    qemu-io -f raw "$(u "$e")" "${args[@]}" >"$TEST_TMP/qio.out" 2>&1 || rc=$?
    if ((rc != 0)) || grep -Eqi 'fail|error' "$TEST_TMP/qio.out"; then
        fail "qemu-io on $e (rc $rc): $(grep -Ei 'fail|error' "$TEST_TMP/qio.out" | head -n 5)"
    fi
    # a fresh connection sees the same data, verified by pattern
    args=()
    for c in "${READS[@]}"; do args+=(-c "$c"); done
    qemu-io -r -f raw "$(u "$e")" "${args[@]}" >"$TEST_TMP/qio2.out" 2>&1 || fail "qemu-io re-read on $e: $(grep -Ei 'fail|error' "$TEST_TMP/qio2.out" | head -n 5)"
    # whole-export check against the model
    rm -f "$TEST_TMP/io.out"
    nbdcopy "$(u "$e")" "$TEST_TMP/io.out"
    "$SYSPY" - "$TEST_TMP/io.out" "${CMDS[@]}" <<'EOF' || fail "content of $e differs from the model of the qemu-io commands"
import sys
data = open(sys.argv[1], "rb").read()
model = bytearray(16 << 20)
for c in sys.argv[2:]:
    w = c.split()
    if w[0] == "flush":
        continue
    off, ln = int(w[-2]), int(w[-1])
    if "-P" in w:
        pat = int(w[w.index("-P") + 1], 0)
        model[off:off + ln] = bytes([pat]) * ln
    else:  # write -z, discard: both read back as zeroes from this server
        model[off:off + ln] = bytes(ln)
if len(data) != len(model):
    sys.exit("size %d, expected %d" % (len(data), len(model)))
if data != model:
    bad = next(i for i in range(len(data)) if data[i] != model[i])
    sys.exit("first difference at offset %d: got 0x%02x, expected 0x%02x" % (bad, data[bad], model[bad]))
EOF
    pass "qemu-io odd-offset writes, zeroes, discards, FUA, flush on '$e' (patterns + full model)"
done
# on the file export, discarded / unmapped-zeroed ranges became holes, as qemu-img map sees them
check_qmap_range() { # URI START LEN DATA ZERO
    qemu-img map --output=json -f raw "$1" | "$SYSPY" -c '
import json, sys
s, l, d, z = (int(x) for x in sys.argv[1:5])
for e in json.load(sys.stdin):
    if e["start"] < s + l and e["start"] + e["length"] > s:
        if (int(e["data"]), int(e["zero"])) != (d, z):
            sys.exit("extent %r overlaps [%d,+%d) but is not data=%d zero=%d" % (e, s, l, d, z))
' "$2" "$3" "$4" "$5" || fail "qemu-img map of $1 around $2"
}
check_qmap_range "$(u iofile)" 3145728 1048576 0 1   # write -z -u
check_qmap_range "$(u iofile)" 2097152 131072 0 1    # discard
check_qmap_range "$(u iomem)" 2097152 131072 0 1     # discard of whole 64 KiB pages frees them
check_qmap_range "$(u iofile)" 4194304 8192 1 0      # written data is data
check_qmap_range "$(u iomem)" 4194304 8192 1 0
pass "discards and unmapping zero-writes became holes (file: punched; memory: pages freed)"

# ---- read-only export
ro_sum=$(sha256sum <"$TEST_TMP/ro.img")
qemu-io -r -f raw "$(u ro)" -c 'read 0 65536' >/dev/null || fail "qemu-io read of readonly export failed"
qemu-img compare -q -f raw -F raw "$TEST_TMP/ro.img" "$(u ro)" || fail "readonly export content differs from its file"
# QEMU reads the read-only flag and will not open the export for writing at all, so its write
# never reaches the server: that shows only that the flag is advertised.
rc=0
qemu-io -f raw "$(u ro)" -c 'write -P 0x99 0 512' >"$TEST_TMP/roq.out" 2>&1 || rc=$?
((rc != 0)) && grep -q "Could not open image: Permission denied" "$TEST_TMP/roq.out" ||
    fail "qemu-io opened the readonly export for writing (rc $rc): $(cat "$TEST_TMP/roq.out")"
# The server's own refusal: write, trim and zero sent regardless, by libnbd with its client-side
# checks off; the same requests on a writable export succeed, so EPERM is the server's answer.
try_writes() { # EXPORT: prints what write, trim and zero of [0, 4K) got
    nbdsh -u "$(u "$1")" -c '
import errno
h.set_strict_mode(0)
got = []
for name, op in (("write", lambda: h.pwrite(b"\x99" * 4096, 0)), ("trim", lambda: h.trim(4096, 0)),
                 ("zero", lambda: h.zero(4096, 0))):
    try:
        op()
        got.append(name + ":ok")
    except nbd.Error as e:
        got.append(name + ":" + errno.errorcode.get(e.errnum, str(e.errnum)))
print(" ".join(got))
'
}
assert_eq "$(try_writes mem)" "write:ok trim:ok zero:ok" "write, trim and zero on a writable export"
assert_eq "$(try_writes ro)" "write:EPERM trim:EPERM zero:EPERM" "write, trim and zero on the readonly export"
assert_eq "$(sha256sum <"$TEST_TMP/ro.img")" "$ro_sum" "readonly file checksum after the refused writes"
qemu-img compare -q -f raw -F raw "$TEST_TMP/ro.img" "$(u ro)" || fail "readonly export content changed after the refused writes"
pass "readonly export: readable, QEMU will not open it for writing, the server answers write/trim/zero with EPERM and nothing changes"

assert_alive
stop_volgate
pass "server exits 0 on SIGTERM"
