#!/usr/bin/env bash
# `volgate serve --fuse DIR`: the exports as files, checked with real tools against the NBD view
# of the same exports (one server serves both):
#  - the directory lists every export with its size; read-only exports are mode 0400 and refuse
#    writers (EROFS); sizes and O_TRUNC are refused (EPERM);
#  - dd in and out, cmp against nbdcopy's copy of the NBD export; a write through NBD is seen by
#    the next read of the file (no stale page cache), and one through the file by NBD;
#  - qemu-img convert onto the file and compare (with the source and with the NBD view), qemu-io
#    on the file, buffered and O_DIRECT (-t none), at unaligned offsets;
#  - O_DIRECT reads reach volgate in requests of 1 MiB (max_pages 256; read from the export's
#    counters in the control API);
#  - fio with crc32c verify: libaio O_DIRECT at depth 32 (4-256 KiB) and psync;
#  - fallocate: a punched hole reads as zeroes, deallocates the backing file's blocks and is
#    found by SEEK_HOLE/SEEK_DATA; ZERO_RANGE zeroes exactly its range; plain preallocation is
#    EOPNOTSUPP;
#  - a LUKS2 export (4096-byte sectors) on a `direct` (O_DIRECT) file: fio verifies 130 KiB writes at depth 32 whose
#    neighbours in flight share a sector (read-modify-write under a lock), and what unaligned
#    writes put in the container decrypts, with an independent AES-XTS implementation, to
#    exactly what was written;
#  - exports added through the control API appear, one open file makes a DELETE 409, a forced
#    one makes the file vanish and its further I/O fail with ENXIO;
#  - SIGTERM unmounts (exit 0); after SIGKILL accesses fail at once (ENOTCONN, no hang) and a
#    restart on the same DIR, with no NBD listener, detaches the dead mount and serves;
#  - a missing DIR, a file as DIR and a live volgate mount there, --fuse-threads 0 or 65: exit 2,
#    one line;
#  - the mount is served by --fuse-threads threads (3 here, named volgate-fuse-N), each on its own
#    /dev/fuse descriptor; every check above runs on them (an answer written to another
#    descriptor than its request's would leave that request hanging until the tools time out).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_volgate
require_tool fio qemu-img qemu-io nbdcopy cryptsetup curl mountpoint fallocate
T=$TEST_TMP
S=$T/nbd.sock
C=$T/control.sock
M=$T/mnt
PAYLOAD="$SYSPY $INTEGRATION_DIR/luks_payload.py"
mkdir "$M"
uri() { unix_uri "$1" "$S"; }
# nbd_view NAME OUT: the export as an NBD client reads it
nbd_view() { nbdcopy "$(uri "$1")" "$2"; }
# api METHOD PATH [JSON]: the HTTP status; the body in $T/body
api() {
    local data=()
    [[ $# -ge 3 ]] && data=(--data-binary "$3")
    curl -sS --max-time 30 --unix-socket "$C" -X "$1" -o "$T/body" -w '%{http_code}' "${data[@]}" "http://gateway$2"
}
# errno_of PYTHON-STATEMENTS: runs them (os imported) and prints the errno name they fail with
errno_of() {
    "$SYSPY" -c "import os, errno
try:
    $1
    print('no error')
except OSError as e:
    print(errno.errorcode[e.errno])"
}

# ------------------------------------------------------------------ exports
make_random_file "$T/file.img" 64
truncate -s 16M "$T/ro.img"
printf 'fuse test passphrase' >"$T/key"
# On a disk file opened O_DIRECT (`direct`): its reads and writes complete later (io_uring)
# rather than inside the call as page-cache hits do, so read-modify-writes really overlap.
need_disk_tmpdir
LUKS_IMG=$DISK_TMP/luks.img
truncate -s 40M "$LUKS_IMG"
cryptsetup luksFormat -q --type luks2 --sector-size 4096 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
    --key-file "$T/key" "$LUKS_IMG"
start_volgate --unix "$S" --control "$C" --fuse "$M" --fuse-threads 3 \
    --export "file=file:$T/file.img" \
    --export "mem=memory:64M" \
    --export "ro=file:$T/ro.img,readonly" \
    --export "luks=file:$LUKS_IMG,direct,luks-key-file=$T/key"
grep -qx "$M/file" "$VG_OUT" || fail "stdout does not name the file $M/file: $(cat "$VG_OUT")"
assert_eq "$(cd "$M" && ls | tr '\n' ' ')" "file luks mem ro " "the directory's listing"
for e in file mem ro luks; do
    assert_eq "$(stat -c %s "$M/$e")" "$(nbdinfo --size "$(uri "$e")")" "size of $e"
done
assert_eq "$(stat -c %a "$M/file") $(stat -c %a "$M/ro")" "600 400" "modes of a writable and a read-only export"
assert_eq "$(errno_of "os.open('$M/ro', os.O_WRONLY)")" EROFS "opening the read-only export for writing"
assert_eq "$(errno_of "os.truncate('$M/file', 1 << 30)")" EPERM "growing a file"
assert_eq "$(errno_of "os.open('$M/file', os.O_WRONLY | os.O_TRUNC)")" EPERM "O_TRUNC"
cmp -s "$M/ro" "$T/ro.img" || fail "the read-only export reads differently from its file"
pass "listing, sizes, modes; read-only, truncation and O_TRUNC refused"
grep -q "mounted; .*, 3 threads" "$VG_ERR" || fail "the mount does not say it is served on 3 threads: $(grep -m1 mounted "$VG_ERR")"
assert_eq "$(cat /proc/"$VG_PID"/task/*/comm | grep -c '^volgate-fuse-[0-9]*$')" 3 "threads named volgate-fuse-N"

# ------------------------------------------------------------------ dd, cmp with NBD, no stale cache
head -c $((3 * 1024 * 1024 + 777)) /dev/urandom >"$T/chunk"
dd if="$T/chunk" of="$M/file" bs=64k seek=1000 oflag=seek_bytes conv=notrunc status=none
nbd_view file "$T/file.nbd"
cmp -s "$M/file" "$T/file.nbd" || fail "the file and the NBD view of its export differ after dd"
cmp -s "$T/chunk" <(dd if="$T/file.nbd" bs=64k skip=1000 count=$((3 * 1024 * 1024 + 777)) iflag=skip_bytes,count_bytes status=none) \
    || fail "dd's bytes are not where dd wrote them"
cmp -s "$T/file.img" "$T/file.nbd" || fail "the backing file differs from the NBD view"
# A file open and read (a page cache would hold those pages now); NBD writes; the same open
# file reads again and must see NBD's bytes.
exec 7<"$M/file"
"$SYSPY" -c "import os; os.pread(7, 1 << 20, 4096)"
qemu-io -f raw -c 'write -P 0x5a 4096 1048576' "$(uri file)" >/dev/null
"$SYSPY" -c "import os, sys; sys.exit(os.pread(7, 1 << 20, 4096) != b'\x5a' * (1 << 20))" \
    || fail "the open file shows stale data after a write through NBD"
exec 7<&-
qemu-io -f raw -c 'write -P 0xa5 123457 99999' "$M/file" >/dev/null
qemu-io -f raw -c 'read -P 0xa5 123457 99999' "$(uri file)" | grep -q 'read 99999/99999' \
    || fail "NBD does not see an unaligned write through the file"
qemu-io -f raw -t none -c 'write -P 0x3c 8192 65536' -c 'read -P 0x3c 8192 65536' "$M/file" | grep -q 'read 65536/65536' \
    || fail "qemu-io with O_DIRECT (-t none) on the file"
pass "dd and cmp against NBD; NBD's writes seen by the next read of the file and the other way; qemu-io buffered and O_DIRECT"

# ------------------------------------------------------------------ qemu-img convert / compare
qemu-img create -q -f raw "$T/src.img" 64M
qemu-io -f raw -c 'write -P 0x11 0 3M' -c 'write -P 0x22 20M 5M' -c 'write -P 0x33 63M 1M' "$T/src.img" >/dev/null
qemu-img convert -n -f raw -O raw "$T/src.img" "$M/mem"
qemu-img compare -q -f raw -F raw "$T/src.img" "$M/mem" || fail "qemu-img compare: source and the file differ"
qemu-img compare -q -f raw "$M/mem" "$(uri mem)" || fail "qemu-img compare: the file and the NBD view differ"
pass "qemu-img convert onto the file; compare with the source and with NBD"

# ------------------------------------------------------------------ request size
# 16 MiB read with O_DIRECT in 4 MiB calls: the kernel splits them into requests of at most
# max_pages (256 pages, 1 MiB; its default would be 32 pages): the export's counters say how many.
counts() { api GET /v1/exports/mem >/dev/null; "$SYSPY" -c "import json; r = json.load(open('$T/body'))['export']['requests']; print(r['read'], r['bytes_read'])"; }
read -r reads0 bytes0 < <(counts)
dd if="$M/mem" of=/dev/null bs=4M count=4 iflag=direct status=none
read -r reads1 bytes1 < <(counts)
assert_eq "$((bytes1 - bytes0)) $((reads1 - reads0))" "16777216 16" "bytes and requests of a 16 MiB O_DIRECT read"
pass "a 16 MiB O_DIRECT read reaches volgate as 16 requests of 1 MiB"

# ------------------------------------------------------------------ fio with verify
run_fio() {
    local what=$1 rc=0
    shift
    (cd "$T" && timeout -k 5 120 fio --name=fuse --filename="$M/mem" --verify=crc32c --verify_fatal=1 \
        --verify_state_save=0 --output="$T/fio.log" "$@") >/dev/null 2>&1 || rc=$?
    [[ $rc == 0 ]] || fail "$what: fio exit code $rc: $(tail -n 5 "$T/fio.log")"
    refute_grep "$what: fio reports errors" -E 'err= *[1-9]|verify: bad' "$T/fio.log"
    pass "$what"
}
run_fio "fio libaio O_DIRECT depth 32, 4-256 KiB random writes, crc32c verified" \
    --ioengine=libaio --direct=1 --iodepth=32 --rw=randwrite --bsrange=4k-256k --size=48M
run_fio "fio psync 4 KiB random read/write, crc32c verified" --ioengine=psync --rw=randrw --bs=4k --size=16M
qemu-img compare -q -f raw "$M/mem" "$(uri mem)" || fail "after fio, the file and the NBD view differ"

# ------------------------------------------------------------------ fallocate, SEEK_HOLE
blocks_before=$(file_blocks "$T/file.img")
fallocate --punch-hole --keep-size -o 8M -l 4M "$M/file"
cmp -s -n $((4 << 20)) <(dd if="$M/file" bs=1M skip=8 count=4 status=none) /dev/zero || fail "a punched hole does not read as zeroes"
blocks_after=$(file_blocks "$T/file.img")
((blocks_after <= blocks_before - 8192)) || fail "punching 4 MiB freed $((blocks_before - blocks_after)) blocks of the backing file"
assert_eq "$("$SYSPY" -c "import os; fd = os.open('$M/file', os.O_RDONLY); print(os.lseek(fd, 6 << 20, os.SEEK_HOLE), os.lseek(fd, 9 << 20, os.SEEK_DATA))")" \
    "$((8 << 20)) $((12 << 20))" "SEEK_HOLE from 6 MiB and SEEK_DATA from 9 MiB"
cp "$M/file" "$T/before-zero"
fallocate --zero-range --keep-size -o $((30 * 1048576 + 1000)) -l 70000 "$M/file"
"$SYSPY" - "$T/before-zero" "$M/file" <<'PY' || fail "ZERO_RANGE did not zero exactly its range"
import sys
a, b = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
start, end = 30 * 1048576 + 1000, 30 * 1048576 + 71000
assert b[start:end] == bytes(end - start), "range not zero"
assert a[:start] == b[:start] and a[end:] == b[end:], "bytes outside the range changed"
PY
# fallocate(1) makes the system call (posix_fallocate would fall back to writing)
rc=0
fallocate -o 0 -l 4096 "$M/file" 2>"$T/falloc.err" || rc=$?
[[ $rc != 0 ]] && grep -q "not supported" "$T/falloc.err" || fail "plain preallocation: exit $rc, $(cat "$T/falloc.err")"
nbd_view file "$T/file.nbd"
cmp -s "$M/file" "$T/file.nbd" || fail "after fallocate, the file and the NBD view differ"
pass "punch hole (zeroes, $(((blocks_before - blocks_after) / 2048)) MiB freed, SEEK_HOLE/SEEK_DATA find it), zero range, plain preallocation refused"

# ------------------------------------------------------------------ LUKS: unaligned writes, independent decryption
# Sequential 130 KiB writes, 32 at once (O_DIRECT with libaio: the one way the kernel sends a
# file's writes concurrently): each ends inside a 4096-byte sector where the next begins, and
# both are in flight together (LUKS encrypts requests this large on a helper thread, so their
# writes complete later): each must survive the other's read-modify-write of that sector.
(cd "$T" && timeout -k 5 120 fio --name=luks --filename="$M/luks" --ioengine=libaio --direct=1 --iodepth=32 \
    --rw=write --bs=130k --size=24M --verify=crc32c --verify_fatal=1 \
    --verify_state_save=0 --output="$T/fio-luks.log") >/dev/null 2>&1 \
    || fail "fio on the LUKS export's file, 130 KiB writes at depth 32: $(grep -m 3 -iE 'verify|err' "$T/fio-luks.log")"
"$SYSPY" - "$M/luks" "$T/luks.model" <<'PY' || fail "the LUKS export's file does not read back what was written"
import os, random, sys
path, model_path = sys.argv[1], sys.argv[2]
size = os.stat(path).st_size
fd = os.open(path, os.O_RDWR)
model = bytearray(size)
for off in range(0, size, 1 << 20):  # a fresh container's payload decrypts to noise
    os.pwrite(fd, bytes(min(1 << 20, size - off)), off)
r = random.Random(99)
for _ in range(150):
    off, n = r.randrange(size - 300000), r.randrange(1, 300000)
    data = r.randbytes(n)
    os.pwrite(fd, data, off)
    model[off:off + n] = data
os.fsync(fd)
back = b"".join(os.pread(fd, 1 << 20, off) for off in range(0, size, 1 << 20))
open(model_path, "wb").write(model)
sys.exit(0 if back == bytes(model) else 1)
PY
$PAYLOAD decrypt "$LUKS_IMG" "$T/key" "$T/luks.indep"
cmp -s "$T/luks.model" "$T/luks.indep" || fail "the LUKS container does not decrypt independently to what the file was given"
pass "LUKS2: 130 KiB writes sharing sectors at depth 32 verified by fio; unaligned writes through the file decrypt independently to what was written"

# ------------------------------------------------------------------ control API: appear, 409, forced removal
truncate -s 8M "$T/added.img"
assert_eq "$(api PUT /v1/exports/added "{\"target\": {\"backend\": \"file\", \"path\": \"$T/added.img\"}}")" 201 "PUT added"
[[ -f $M/added ]] || fail "an export added through the control API does not appear in $M"
assert_eq "$(stat -c %s "$M/added")" 8388608 "size of the added export"
exec 7<>"$M/added"
assert_eq "$(api DELETE /v1/exports/added)" 409 "DELETE while the file is open"
grep -q '1 connected client' "$T/body" || fail "the 409 does not count the open file: $(cat "$T/body")"
assert_eq "$(api DELETE '/v1/exports/added?force=true')" 204 "DELETE with force"
[[ ! -e $M/added ]] || fail "a removed export's file is still in $M"
assert_eq "$(errno_of "os.pwrite(7, b'x', 0)")" ENXIO "a write to the open file of a removed export"
exec 7>&-
pass "control API: added export appears, an open file makes DELETE 409, forced removal hides it and fails its I/O (ENXIO)"

# ------------------------------------------------------------------ mount point errors
for bad in "$T/nowhere" "$T/file.img" "$M"; do
    rc=0
    "$VOLGATE" serve --fuse "$bad" --export "x=memory:1M" >/dev/null 2>"$T/bad.err" || rc=$?
    assert_eq "$rc" 2 "exit code for --fuse $bad"
    assert_eq "$(wc -l <"$T/bad.err")" 1 "lines on stderr for --fuse $bad"
done
grep -q "another volgate" "$T/bad.err" || fail "a live mount is not named as such: $(cat "$T/bad.err")"
for bad in 0 65; do
    rc=0
    "$VOLGATE" serve --fuse "$T" --fuse-threads "$bad" --export "x=memory:1M" >/dev/null 2>"$T/bad.err" || rc=$?
    assert_eq "$rc $(wc -l <"$T/bad.err")" "2 1" "exit code and lines on stderr for --fuse-threads $bad"
    grep -q "fuse-threads.* not in range 1 to 64" "$T/bad.err" || fail "--fuse-threads $bad: $(cat "$T/bad.err")"
done
pass "a missing DIR, a file, a live volgate mount, --fuse-threads 0 and 65: exit 2 with one line"

# ------------------------------------------------------------------ SIGTERM, SIGKILL, restart
stop_volgate
mountpoint -q "$M" && fail "$M is still mounted after SIGTERM"
cmp -s "$T/file.img" "$T/file.nbd" || fail "the backing file lacks what was written before SIGTERM"
pass "SIGTERM: exit 0, unmounted, data in the backing file"

start_volgate --fuse "$M" --export "file=file:$T/file.img"
exec 7<"$M/file"
kill -KILL "$VG_PID"
wait "$VG_PID" 2>/dev/null || true
_forget_pid "$VG_PID"
t0=$(now_ms)
assert_eq "$(timeout 10 "$SYSPY" -c "import os, errno
try:
    os.pread(7, 4096, 0); print('read worked')
except OSError as e:
    print(errno.errorcode[e.errno])")" ENOTCONN "a read of a file open when volgate was SIGKILLed"
assert_eq "$(timeout 10 "$SYSPY" -c "import os, errno
try:
    os.stat('$M/file'); print('stat worked')
except OSError as e:
    print(errno.errorcode[e.errno])")" ENOTCONN "a stat on the dead mount"
exec 7<&-
dead_ms=$(($(now_ms) - t0))
start_volgate --fuse "$M" --export "file=file:$T/file.img"
grep -q "detached a fuse.volgate mount whose server is gone" "$VG_ERR" || fail "the restart does not say it detached the dead mount"
cmp -s "$M/file" "$T/file.nbd" || fail "after the restart the file reads differently"
stop_volgate
mountpoint -q "$M" && fail "$M is still mounted after the second SIGTERM"
pass "SIGKILL: accesses fail with ENOTCONN ($dead_ms ms for both); a restart without NBD listeners detaches the dead mount and serves the data"
