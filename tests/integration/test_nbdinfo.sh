#!/usr/bin/env bash
# nbdinfo against volgate: URIs printed at start, --list (names, sizes, over unix and TCP),
# per-export flags and block sizes, --map of a sparse file, a direct file and a memory export,
# the default export, size= creating and growing files.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_volgate
require_tool nbdinfo nbdsh
need_disk_tmpdir

MiB=1048576
S=$TEST_TMP/s.sock
S2=$TEST_TMP/second.sock
PORT=$(free_tcp_port)

# A 5 MiB file: data [0,1M), hole [1M,3M), data [3M,4M), hole [4M,5M).
make_sparse() {
    truncate -s 5M "$1"
    head -c $MiB /dev/urandom | dd of="$1" bs=1M seek=0 conv=notrunc status=none
    head -c $MiB /dev/urandom | dd of="$1" bs=1M seek=3 conv=notrunc status=none
}
make_sparse "$TEST_TMP/disk.img"
make_sparse "$DISK_TMP/ddisk.img"
head -c $((2 * MiB)) /dev/urandom >"$TEST_TMP/ro.img"
truncate -s 1M "$TEST_TMP/grow2.img"
# sizes that are not a multiple of 512 or 4096: 1000001 bytes, data in the first 70000 bytes only
truncate -s 1000001 "$TEST_TMP/odd.img"
head -c 70000 /dev/urandom | dd of="$TEST_TMP/odd.img" conv=notrunc status=none
[[ ! -e $TEST_TMP/grown.img ]]

start_volgate --unix "$S" --listen "127.0.0.1:$PORT" --unix "$S2" \
    --export "disk=file:$TEST_TMP/disk.img" \
    --export "ddisk=file:$DISK_TMP/ddisk.img,direct" \
    --export "mem=memory:1G" \
    --export "ro=file:$TEST_TMP/ro.img,readonly" \
    --export "grown=file:$TEST_TMP/grown.img,size=3M" \
    --export "grow2=file:$TEST_TMP/grow2.img,size=5M" \
    --export "big=memory:1T" \
    --export "odd=file:$TEST_TMP/odd.img" \
    --export "oddmem=memory:1000001"

# ---- URIs on stdout
NAMES=(disk ddisk mem ro grown grow2 big odd oddmem)
for n in "${NAMES[@]}"; do
    grep -Fxq "nbd+unix:///$n?socket=$S" "$VG_OUT" || fail "stdout lacks 'nbd+unix:///$n?socket=$S': $(cat "$VG_OUT")"
    grep -Fxq "nbd://127.0.0.1:$PORT/$n" "$VG_OUT" || fail "stdout lacks 'nbd://127.0.0.1:$PORT/$n': $(cat "$VG_OUT")"
    grep -Fxq "nbd+unix:///$n?socket=$S2" "$VG_OUT" || fail "stdout lacks 'nbd+unix:///$n?socket=$S2': $(cat "$VG_OUT")"
done
assert_eq "$(wc -l <"$VG_OUT")" "$((3 * ${#NAMES[@]}))" "number of URI lines on stdout"
# every printed URI works and reports the right export
while read -r u; do
    sz=$(nbdinfo --size "$u") || fail "nbdinfo --size $u failed"
    case $u in
        */disk* | */ddisk* | */grow2*) want=5242880 ;;
        */mem*) want=1073741824 ;;
        */ro*) want=2097152 ;;
        */grown*) want=3145728 ;;
        */big*) want=1099511627776 ;;
        */odd*) want=1000001 ;;
        *) fail "unexpected URI $u" ;;
    esac
    assert_eq "$sz" "$want" "size via $u"
done <"$VG_OUT"
pass "stdout has one URI per export per listener (2 unix + 1 TCP); each works"

# ---- size= created / grew files
assert_eq "$(stat -c %s "$TEST_TMP/grown.img")" 3145728 "size of file created by size=3M"
assert_eq "$(stat -c %s "$TEST_TMP/grow2.img")" 5242880 "size of file grown by size=5M"
pass "size= creates and grows files"

# ---- nbdinfo --list, over unix and over TCP
for U in "nbd+unix:///?socket=$S" "nbd://127.0.0.1:$PORT/"; do
    nbdinfo --list --json "$U" >"$TEST_TMP/list.json" || fail "nbdinfo --list $U failed"
    "$SYSPY" - "$TEST_TMP/list.json" <<'EOF' || fail "nbdinfo --list $U: wrong content"
import json, sys
d = json.load(open(sys.argv[1]))
want = {"disk": 5 << 20, "ddisk": 5 << 20, "mem": 1 << 30, "ro": 2 << 20,
        "grown": 3 << 20, "grow2": 5 << 20, "big": 1 << 40, "odd": 1000001, "oddmem": 1000001}
got = {e["export-name"]: e for e in d["exports"]}
err = []
if d.get("protocol") != "newstyle-fixed":
    err.append("protocol %r" % d.get("protocol"))
for name, size in want.items():
    if name not in got:
        err.append("export %r not listed" % name)
    elif got[name].get("export-size") != size:
        err.append("export %r size %r, expected %d" % (name, got[name].get("export-size"), size))
extra = set(got) - set(want) - {""}
if extra:
    err.append("unexpected exports listed: %r" % sorted(extra))
if "ro" in got and got["ro"].get("is_read_only") is not True:
    err.append("ro not read-only in the list")
if "disk" in got and got["disk"].get("is_read_only") is not False:
    err.append("disk read-only in the list")
if err:
    print("\n".join(err), file=sys.stderr)
    sys.exit(1)
EOF
done
pass "nbdinfo --list shows every export with its size (unix and TCP)"

# ---- per-export flags and block sizes
check_info() { # URI  PYTHON-DICT-OF-EXPECTED
    nbdinfo --json "$1" >"$TEST_TMP/info.json" || fail "nbdinfo $1 failed"
    "$SYSPY" - "$TEST_TMP/info.json" "$2" <<'EOF' || fail "nbdinfo $1: unexpected flags/sizes"
import ast, json, sys
d = json.load(open(sys.argv[1]))
want = ast.literal_eval(sys.argv[2])
e = d["exports"][0]
bad = ["%s=%r (expected %r)" % (k, e.get(k), v) for k, v in want.items() if e.get(k) != v]
if d.get("structured") is not True:
    bad.append("structured replies not negotiated")
if bad:
    print("\n".join(bad), file=sys.stderr)
    sys.exit(1)
EOF
}
RW="'is_read_only': False, 'can_flush': True, 'can_fua': True, 'can_trim': True, 'can_zero': True,
    'can_fast_zero': True, 'can_cache': True, 'can_multi_conn': True, 'contexts': ['base:allocation'],
    'block_size_preferred': 4096, 'block_size_maximum': 33554432"
check_info "nbd+unix:///disk?socket=$S" "{$RW, 'block_size_minimum': 1, 'export-size': 5242880}"
check_info "nbd+unix:///mem?socket=$S" "{$RW, 'block_size_minimum': 1, 'export-size': 1073741824}"
check_info "nbd://127.0.0.1:$PORT/big" "{$RW, 'block_size_minimum': 1, 'export-size': 1099511627776}"
check_info "nbd+unix:///ddisk?socket=$S" "{$RW, 'block_size_minimum': 4096, 'export-size': 5242880}"
check_info "nbd+unix:///ro?socket=$S" "{'is_read_only': True, 'can_trim': False, 'can_zero': False,
    'can_fast_zero': False, 'can_fua': False, 'can_flush': True, 'can_cache': True, 'can_multi_conn': True,
    'block_size_minimum': 1, 'block_size_preferred': 4096, 'block_size_maximum': 33554432,
    'export-size': 2097152}"
# the first export is the default one
check_info "nbd+unix:///?socket=$S" "{$RW, 'block_size_minimum': 1, 'export-size': 5242880}"
check_info "nbd://127.0.0.1:$PORT" "{$RW, 'block_size_minimum': 1, 'export-size': 5242880}"
pass "flags, block sizes and sizes of rw, direct, readonly, default exports"

# the human-readable output shows the same
nbdinfo "nbd+unix:///ro?socket=$S" >"$TEST_TMP/info.txt"
grep -q 'is_read_only: true' "$TEST_TMP/info.txt" || fail "nbdinfo text for ro lacks is_read_only: true"
grep -q 'block_size_maximum: 33554432' "$TEST_TMP/info.txt" || fail "nbdinfo text lacks block_size_maximum"
grep -q 'block_size_minimum: 4096' <<<"$(nbdinfo "nbd+unix:///ddisk?socket=$S")" || fail "ddisk text lacks block_size_minimum: 4096"

# nbdinfo --can / --is: exit 0 = true, 2 = false
can() { # EXPECTED_RC ARGS...
    local want=$1 rc=0
    shift
    nbdinfo "$@" || rc=$?
    assert_eq "$rc" "$want" "nbdinfo $*"
}
can 0 --can trim "nbd+unix:///mem?socket=$S"
can 0 --can fast-zero "nbd+unix:///disk?socket=$S"
can 0 --can multi-conn "nbd+unix:///ro?socket=$S2"
can 0 --is read-only "nbd+unix:///ro?socket=$S"
can 2 --is read-only "nbd+unix:///disk?socket=$S"
can 2 --can trim "nbd+unix:///ro?socket=$S"
can 2 --can zero "nbd+unix:///ro?socket=$S"
pass "nbdinfo --can/--is"

# unknown export
if nbdinfo "nbd+unix:///nosuch?socket=$S" >/dev/null 2>"$TEST_TMP/e"; then
    fail "nbdinfo of an unknown export succeeded"
fi
pass "unknown export refused: $(head -n 1 "$TEST_TMP/e")"

# ---- --map
# check_map URI "off:len:type off:len:type ..."  (adjacent extents of equal type are merged)
check_map() {
    nbdinfo --map --json "$1" >"$TEST_TMP/map.json" || fail "nbdinfo --map $1 failed"
    "$SYSPY" - "$TEST_TMP/map.json" "$2" <<'EOF' || fail "nbdinfo --map $1: wrong extents"
import json, sys
ext = json.load(open(sys.argv[1]))
merged = []
pos = 0
for e in ext:
    if e["offset"] != pos:
        sys.exit("extent list not contiguous at %d: %r" % (pos, e))
    pos += e["length"]
    if merged and merged[-1][2] == e["type"]:
        merged[-1][1] += e["length"]
    else:
        merged.append([e["offset"], e["length"], e["type"]])
want = [[int(x) for x in w.split(":")] for w in sys.argv[2].split()]
if merged != want:
    sys.exit("got  %r\nwant %r" % (merged, want))
EOF
}
M=$MiB
check_map "nbd+unix:///disk?socket=$S" "0:$M:0 $M:$((2 * M)):3 $((3 * M)):$M:0 $((4 * M)):$M:3"
check_map "nbd+unix:///ddisk?socket=$S" "0:$M:0 $M:$((2 * M)):3 $((3 * M)):$M:0 $((4 * M)):$M:3"
pass "--map of sparse file (tmpfs) and direct file (disk fs): data/hole/data/hole"
check_map "nbd+unix:///mem?socket=$S" "0:1073741824:3"
check_map "nbd://127.0.0.1:$PORT/grown" "0:3145728:3"
# 4 KiB of data at 132 KiB allocates the 64 KiB page [128K,192K) and nothing else
nbdsh -u "nbd+unix:///mem?socket=$S" -c 'h.pwrite(b"\xa5" * 4096, 135168); h.flush()'
check_map "nbd+unix:///mem?socket=$S" "0:131072:3 131072:65536:0 196608:$((1073741824 - 196608)):3"
# one byte at the last byte of a 1 TiB export
nbdsh -u "nbd+unix:///big?socket=$S" -c 'h.pwrite(b"\x01", (1 << 40) - 1)'
T=1099511627776
check_map "nbd+unix:///big?socket=$S" "0:$((T - 65536)):3 $((T - 65536)):65536:0"
pass "--map of memory exports: untouched = hole,zero; written 64 KiB pages = data"
# odd sizes: extents end exactly at the export size
check_map "nbd+unix:///oddmem?socket=$S" "0:1000001:3"
nbdsh -u "nbd+unix:///oddmem?socket=$S" -c 'h.pwrite(b"\xee" * 10, 1000001 - 10); assert h.pread(20, 1000001 - 20) == bytes(10) + b"\xee" * 10'
# the last page [983040, 1000001) is allocated now
check_map "nbd+unix:///oddmem?socket=$S" "0:983040:3 983040:$((1000001 - 983040)):0"
# file: data [0, 70000) (tmpfs rounds to 4 KiB pages), hole up to the odd end
check_map "nbd+unix:///odd?socket=$S" "0:73728:0 73728:$((1000001 - 73728)):3"
nbdcopy "nbd+unix:///odd?socket=$S" "$TEST_TMP/odd.out"
cmp "$TEST_TMP/odd.img" "$TEST_TMP/odd.out" || fail "odd-sized export content differs from its file"
pass "exports of odd sizes (1000001 bytes): map, tail write/read, copy"

# bytes through nbdinfo's peers match the file
nbdsh -u "nbd+unix:///disk?socket=$S" -c "
import hashlib
d = h.pread(5 << 20, 0)
assert hashlib.sha256(d).hexdigest() == '$(sha256sum <"$TEST_TMP/disk.img" | cut -d' ' -f1)', 'disk content differs'
"
pass "content of the file export equals the file"

assert_alive
stop_volgate
pass "server exits 0 on SIGTERM"
