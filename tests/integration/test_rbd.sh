#!/usr/bin/env bash
# Ceph RBD exports against a real single-node cluster (one mon, one memstore OSD, cephx), started
# once for every check here:
#  - fio with verify=crc32c at depth 32 through NBD; `rbd export` equals what nbdcopy wrote;
#    the same with librbd writing through and sending write buffers without a copy (its log
#    shows that it does);
#  - a snapshot is served read-only with the snapshot's data; trim frees space (`rbd du`) and
#    block status reports the holes, at most 1 GiB per answer; a resize while served shows in
#    new connections, and in the export's FUSE file (--fuse): its size (stat, and fstat of a file
#    opened before), and reads and writes in the grown range, O_DIRECT too; a client other than
#    admin, with its own keyring and caps on the pool only, is served;
#  - the nbdkit plugin opens an rbd: SPEC in nbdkit forked into the background (librados's
#    threads started after the fork), and qemu-img moves 16 MiB through it byte for byte;
#  - LUKS2 interop both ways with librbd's own encryption (`rbd encryption format`, and QEMU's
#    rbd driver with encrypt.format=luks2 as the independent reader and writer), and
#    `volgate luks format/dump` on an RBD target;
#  - a wrong keyring, a missing image or pool, a client without caps on the pool, an unreadable
#    conf and unreachable monitors are one clear line and exit code 2; an OSD stopped while fio
#    runs makes requests wait, not fail.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ceph_cluster.sh"
require_volgate
require_tool fio nbdcopy nbdinfo qemu-img qemu-io nbdkit curl
. "$(dirname "$0")/nbdkit_plugin_lib.sh"
ceph_start memstore

T=$TEST_TMP
S=$T/s.sock
CEPH="ceph-conf=$CEPH_CONF,keyring=$CEPH_KEYRING"
uri() { unix_uri "$1" "$S"; }
M=$((1 << 20))

# run_fio WHAT FIO-ARGS...: fio's nbd engine; any error or verify failure fails the test.
# Leaves the JSON report in $T/fio.json.
run_fio() {
    local what=$1 rc=0
    shift
    (cd "$T" && timeout -k 5 120 fio --output-format=json --output="$T/fio.json" --verify_fatal=1 \
        --verify_state_save=0 --ioengine=nbd "$@") >"$T/fio.log" 2>&1 || rc=$?
    [[ $rc == 0 ]] || fail "$what: fio exit code $rc: $(grep -v 'connected to NBD' "$T/fio.log" | tail -n 5)"
    "$SYSPY" - "$T/fio.json" <<'EOF' || fail "$what: fio reported errors"
import json, sys
for j in json.load(open(sys.argv[1]))["jobs"]:
    assert j["error"] == 0, j["error"]
    for k in ("read", "write"):
        assert j[k].get("total_err", 0) == 0, (k, j[k]["total_err"])
EOF
}

# rbd_used IMAGE: bytes `rbd du` reports in use
rbd_used() {
    rbd_cmd du --format json "$CEPH_POOL/$1" 2>/dev/null |
        "$SYSPY" -c 'import json,sys; print(json.load(sys.stdin)["images"][0]["used_size"])'
}

# ------------------------------------------------------------------ data path
rbd_cmd create --size 64M "$CEPH_POOL/a"
FUSE_DIR=$T/mnt
mkdir "$FUSE_DIR"
start_volgate --unix "$S" --export "a=rbd:$CEPH_POOL/a,$CEPH"
nbdinfo --json "$(uri a)" | "$SYSPY" -c '
import json, sys
e = json.load(sys.stdin)["exports"][0]
assert e["export-size"] == 64 << 20, e
for flag in ("can_trim", "can_zero", "can_fua", "can_flush", "can_multi_conn", "can_fast_zero"):
    assert e[flag] is True, flag
assert e["is_read_only"] is False, e
assert e["description"] == "rbd rbd/a", e' || fail "rbd export: wrong size, flags or description"
pass "rbd export: 64 MiB, writable, trim/zero/FUA/flush/multi-conn"

make_random_file "$T/rand" 64
nbdcopy --flush "$T/rand" "$(uri a)"
rbd_cmd export "$CEPH_POOL/a" "$T/a.export" >/dev/null 2>&1
cmp -s "$T/rand" "$T/a.export" || fail "rbd export differs from what nbdcopy wrote through volgate"
nbdcopy "$(uri a)" "$T/a.back"
cmp -s "$T/rand" "$T/a.back" || fail "reading back through volgate differs from what was written"
pass "nbdcopy 64 MiB in: rbd export and a read through volgate both equal it"

run_fio "4k randwrite depth 32, verify crc32c" --name=rand --uri="$(uri a)" --rw=randwrite --bs=4k \
    --iodepth=32 --size=32M --verify=crc32c --do_verify=1
run_fio "256k seq write depth 16 on 2 connections, verify crc32c" --name=seq --uri="$(uri a)" \
    --rw=write --bs=256k --iodepth=16 --size=16M --numjobs=2 --offset=32M --offset_increment=16M \
    --verify=crc32c --do_verify=1
run_fio "verify_only pass in a new process" --name=rand --uri="$(uri a)" --rw=randwrite --bs=4k \
    --iodepth=32 --size=32M --verify=crc32c --verify_only
pass "fio verify=crc32c through NBD (4k random depth 32, 256k sequential, verify in a second process)"

# librbd writing through and sending our write buffers as they are, without a copy (the setting
# the README offers): fio's verify and Ceph's copy of what nbdcopy wrote prove the data, and
# librbd's own log (debug_rbd 5) that it took the zero-copy path, where the default says
# "disabling zero-copy writes".
WT_CONF=$T/write-through.conf
{ cat "$CEPH_CONF"; printf '[client]\nrbd_cache_max_dirty = 0\nrbd_disable_zero_copy_writes = false\ndebug_rbd = 5/5\n'; } >"$WT_CONF"
rbd_cmd create --size 32M "$CEPH_POOL/wt"
FIRST_VG_PID=$VG_PID
start_volgate --unix "$T/wt.sock" --export "wt=rbd:$CEPH_POOL/wt,ceph-conf=$WT_CONF,keyring=$CEPH_KEYRING"
WT_URI="nbd+unix:///wt?socket=$T/wt.sock"
run_fio "write-through, zero-copy: 1M seq write depth 16, verify crc32c" --name=seq --uri="$WT_URI" \
    --rw=write --bs=1M --iodepth=16 --size=16M --verify=crc32c --do_verify=1
run_fio "write-through, zero-copy: 4k randwrite depth 32, verify crc32c" --name=rand --uri="$WT_URI" \
    --rw=randwrite --bs=4k --iodepth=32 --size=16M --offset=16M --verify=crc32c --do_verify=1
make_random_file "$T/wt.rand" 32
nbdcopy --flush "$T/wt.rand" "$WT_URI"
rbd_cmd export "$CEPH_POOL/wt" "$T/wt.export" >/dev/null 2>&1
cmp -s "$T/wt.rand" "$T/wt.export" || fail "write-through, zero-copy: rbd export differs from what nbdcopy wrote"
WT_LOG=$CEPH_DIR/log/client.admin.$VG_PID.log  # the log_file the cluster's [client] names
stop_volgate "$VG_PID"
VG_PID=$FIRST_VG_PID
grep -q "register_dispatch" "$WT_LOG" || fail "write-through: librbd logged nothing at debug_rbd 5 ($WT_LOG)"
! grep -q "disabling zero-copy writes" "$WT_LOG" || fail "write-through: librbd still copies writes (its log: disabling zero-copy writes)"
pass "librbd writing through without copying writes (rbd_cache_max_dirty = 0, rbd_disable_zero_copy_writes = false): fio verify and rbd export agree"

# ------------------------------------------------------------------ trim, block status, zeroes
used_before=$(rbd_used a)
((used_before >= 60 * M)) || fail "rbd du says only $used_before bytes used after filling the image"
nbdsh --base-allocation -u "$(uri a)" -c '
M = 2**20
h.trim(48 * M, 8 * M)      # (count, offset): objects 2..13 go
h.zero(4 * M, 60 * M)      # the last object, as zeroes
h.flush()
ext = []
h.block_status(64 * M, 0, lambda ctx, off, e, err: ext.extend(e) or 0)
assert ext == [8 * M, 0, 48 * M, 3, 4 * M, 0, 4 * M, 3], ext
assert h.pread(4096, 30 * M) == bytes(4096)
assert h.pread(4096, 62 * M) == bytes(4096)
' 2>"$T/err" || fail "trim/zero/block status: $(cat "$T/err")"
used_after=$(rbd_used a)
((used_after <= 12 * M)) || fail "rbd du: $used_after bytes still used after trimming 52 MiB of 64"
pass "trim and write_zeroes free space (rbd du $((used_before / M)) -> $((used_after / M)) MiB); block status shows the holes"

# Zeroing with NO_HOLE allocates the range, even inside a hole.
nbdsh --base-allocation -u "$(uri a)" -c '
M = 2**20
h.zero(4 * M, 12 * M, nbd.CMD_FLAG_NO_HOLE)   # a whole object inside the trimmed hole
ext = []
h.block_status(4 * M, 12 * M, lambda ctx, off, e, err: ext.extend(e) or 0)
assert ext == [4 * M, 0], ext
assert h.pread(4 * M, 12 * M) == bytes(4 * M)
' 2>"$T/err" || fail "NO_HOLE zeroing: $(cat "$T/err")"
pass "NO_HOLE zeroing allocates the range"

# FUA: with the OSD stopped, librbd's writearound cache acknowledges a plain write at once, but a
# FUA write must wait until the OSD has it, and complete once it is back.
OSD_PID=$CEPH_OSD_PID nbdsh -u "$(uri a)" -c '
import os, signal, time
M = 2**20
osd = int(os.environ["OSD_PID"])
h.flush()
def completes_within(c, seconds):
    end = time.time() + seconds
    while time.time() < end:
        if h.aio_command_completed(c):
            return True
        h.poll(100)
    return h.aio_command_completed(c)
def thread_state(pid, tid):
    try:
        return open("/proc/%d/task/%s/stat" % (pid, tid)).read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):  # the thread ended meanwhile
        return "T"
def stopped(pid):  # every thread of PID in state T: kill() returns before they all are
    return all(thread_state(pid, t) in "tT" for t in os.listdir("/proc/%d/task" % pid))
os.kill(osd, signal.SIGSTOP)
try:
    end = time.time() + 10
    while not stopped(osd):
        assert time.time() < end, "the OSD did not stop within 10 s of SIGSTOP"
        time.sleep(0.01)
    plain = h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(b"\x22" * 4096)), 0)
    plain_early = completes_within(plain, 1.5)
    fua = h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(b"\x11" * 4096)), 2 * M, flags=nbd.CMD_FLAG_FUA)
    fua_early = completes_within(fua, 1.5)
finally:
    os.kill(osd, signal.SIGCONT)
assert plain_early, "a plain write did not complete with the OSD stopped (no writearound cache?)"
assert not fua_early, "a FUA write completed while the OSD was stopped"
assert completes_within(fua, 30), "the FUA write did not complete after the OSD came back"
assert h.pread(4096, 2 * M) == b"\x11" * 4096
' 2>"$T/err" || fail "FUA: $(cat "$T/err")"
pass "FUA: with the OSD stopped a plain write is acknowledged from librbd's cache, a FUA write only once the OSD is back"

# ------------------------------------------------------------------ snapshot
nbdsh -u "$(uri a)" -c 'h.pwrite(b"\xa5" * 4 * 2**20, 0); h.flush()'
rbd_cmd snap create "$CEPH_POOL/a@s1" >/dev/null 2>&1
nbdsh -u "$(uri a)" -c 'h.pwrite(b"\x5a" * 4 * 2**20, 0); h.flush()'
rbd_cmd namespace create "$CEPH_POOL/tenant1" 2>/dev/null || fail "rbd namespace create failed"
rbd_cmd create --size 8M "$CEPH_POOL/tenant1/n"
rbd_cmd create --size 3G "$CEPH_POOL/big"
stop_volgate
start_volgate --unix "$S" --fuse "$FUSE_DIR" --export "a=rbd:$CEPH_POOL/a,$CEPH" --export "snap=rbd:$CEPH_POOL/a@s1,$CEPH" \
    --export "n=rbd:$CEPH_POOL/tenant1/n,$CEPH" --export "big=rbd:$CEPH_POOL/big,$CEPH"
nbdinfo --json "$(uri snap)" | "$SYSPY" -c '
import json, sys
e = json.load(sys.stdin)["exports"][0]
assert e["is_read_only"] is True and e["can_trim"] is False, e
assert e["description"] == "rbd rbd/a@s1 (read-only)", e' || fail "the snapshot export is not read-only"
nbdsh -u "$(uri snap)" -c '
assert h.pread(4096, 0) == b"\xa5" * 4096, "snapshot does not show the data it was taken with"
try:
    h.pwrite(b"x" * 4096, 0)
    raise SystemExit("a write to the snapshot succeeded")
except nbd.Error as e:
    assert e.errno == "EPERM", e.errno
' 2>"$T/err" || fail "snapshot: $(cat "$T/err")"
nbdsh -u "$(uri a)" -c 'assert h.pread(4096, 0) == b"\x5a" * 4096' || fail "the image lost its post-snapshot data"
pass "snapshot a@s1: served read-only (EPERM on write) with the data it was taken with"
head -c 8M /dev/urandom >"$T/n.rand"
nbdcopy --flush "$T/n.rand" "$(uri n)"
rbd_cmd export "$CEPH_POOL/tenant1/n" "$T/n.export" >/dev/null 2>&1
cmp -s "$T/n.rand" "$T/n.export" || fail "an image in an RBD namespace: rbd export differs from what was written"
pass "an image in an RBD namespace (rbd:POOL/NS/IMAGE) is served"
# All exports name the same cluster and client: one librados connection, so one monitor session.
mon_port=$(sed -n 's/^mon_host = v2:127.0.0.1:\([0-9]*\)$/\1/p' "$CEPH_CONF")
mon_sessions=$(ss -tnpH state established "dport = :$mon_port" | grep -c "pid=$VG_PID," || true)
[[ $mon_sessions == 1 ]] || fail "four exports of one cluster hold $mon_sessions monitor sessions, expected 1"
pass "four exports of one cluster share one librados connection"
# Block status answers at most 1 GiB at a time (rbd_diff_iterate2 walks every object of the
# range): asked about all of a 3 GiB image, each answer covers exactly 1 GiB and finds its
# part's data.
nbdsh --base-allocation -u "$(uri big)" -c '
G, M = 2**30, 2**20
for part in range(3):
    h.pwrite(b"\x01" * 4096, part * G + part * 8 * M)
h.flush()
for part in range(3):
    ext = []
    h.block_status(3 * G - part * G, part * G, lambda ctx, off, e, err: ext.extend(e) or 0)
    want = ([part * 8 * M, 3] if part else []) + [4096, 0, G - part * 8 * M - 4096, 3]
    assert ext == want, "block status from %d GiB: %r, expected %r" % (part, ext, want)
' 2>"$T/err" || fail "block status of a 3 GiB image: $(cat "$T/err")"
pass "block status of a 3 GiB image: each answer covers 1 GiB, the cap, with that part's data"

# ------------------------------------------------------------------ resize while served
nbdsh -u "$(uri a)" -c 'h.pwrite(b"\x77" * 4096, 0); h.flush()'   # holds the exclusive lock
exec {OPENED_BEFORE}<>"$FUSE_DIR/a"
rbd_cmd resize --size 96M "$CEPH_POOL/a" >/dev/null 2>&1 || fail "rbd resize while served failed"
for ((i = 0; i < 100; i++)); do
    [[ $(nbdinfo --size "$(uri a)") == $((96 * M)) ]] && break
    sleep 0.05
done
[[ $(nbdinfo --size "$(uri a)") == $((96 * M)) ]] || fail "new connections do not see the resized image"
nbdsh -u "$(uri a)" -c '
h.pwrite(b"\x42" * 4096, 96 * 2**20 - 4096); h.flush()
assert h.pread(4096, 96 * 2**20 - 4096) == b"\x42" * 4096' || fail "cannot use the grown part"
pass "rbd resize 64M -> 96M while served: new connections get 96 MiB and can use it"

# The export's FUSE file: a file opened before the resize sees the new size (fstat) and takes
# writes in the grown range; a new stat sees it too; O_DIRECT reads the grown range back, and
# NBD sees what the file wrote there.
assert_eq "$(stat -c %s "$FUSE_DIR/a")" $((96 * M)) "the FUSE file's size after the resize"
"$SYSPY" - "$FUSE_DIR/a" "$OPENED_BEFORE" <<'PY' 2>"$T/err" || fail "the FUSE file after the resize: $(cat "$T/err")"
import os, sys
path, fd = sys.argv[1], int(sys.argv[2])
M = 1 << 20
assert os.fstat(fd).st_size == 96 * M, os.fstat(fd).st_size
assert os.pread(fd, 4096, 96 * M - 4096) == b"\x42" * 4096, "the grown range does not read what NBD wrote"
assert os.pwrite(fd, b"\x24" * 12345, 80 * M + 1000) == 12345
os.fsync(fd)
assert os.pread(fd, 12345, 80 * M + 1000) == b"\x24" * 12345
assert os.pread(fd, 4096, 96 * M) == b"", "a read at the new end is not the end of file"
PY
cmp -s <(head -c 12345 /dev/zero | tr '\0' '\044') \
    <(dd if="$FUSE_DIR/a" bs=1M skip=80 count=1 iflag=direct status=none | tail -c +1001 | head -c 12345) \
    || fail "an O_DIRECT read of the grown range through the FUSE file differs"
nbdsh -u "$(uri a)" -c 'assert h.pread(12345, 80 * 2**20 + 1000) == b"\x24" * 12345' \
    || fail "NBD does not see what the FUSE file wrote in the grown range"
exec {OPENED_BEFORE}<&-
pass "rbd resize: the FUSE file (one opened before too) is 96 MiB and reads and writes the grown range, O_DIRECT too"
assert_alive
stop_volgate

# ------------------------------------------------------------------ the nbdkit plugin, forked
rbd_cmd create --size 16M "$CEPH_POOL/plugin"
plugin_forked_roundtrip "nbdkit plugin on rbd:" "rbd:$CEPH_POOL/plugin,$CEPH" 16
rbd_cmd export "$CEPH_POOL/plugin" "$T/plugin.export" >/dev/null 2>&1
cmp -s "$TEST_TMP/plugin.data" "$T/plugin.export" || fail "rbd export of what qemu-img wrote through the plugin differs"
pass "the nbdkit plugin opens an rbd: SPEC after nbdkit forks; 16 MiB through it equal rbd export's copy"

# ------------------------------------------------------------------ a client other than admin
# client.volgate may use the pool and nothing else (Ceph's rbd profiles), with its own keyring:
# the admin keyring, which the conf names, has no key for it. What it writes is what the admin
# exports. client.elsewhere, allowed only a pool that does not exist, cannot open the image.
ceph_cmd auth get-or-create client.volgate mon 'profile rbd' osd "profile rbd pool=$CEPH_POOL" -o "$T/volgate.keyring"
ceph_cmd auth get-or-create client.elsewhere mon 'profile rbd' osd 'profile rbd pool=elsewhere' -o "$T/elsewhere.keyring"
LIMITED="ceph-conf=$CEPH_CONF,ceph-id=volgate,keyring=$T/volgate.keyring"
start_volgate --unix "$S" --export "n=rbd:$CEPH_POOL/tenant1/n,$LIMITED"
head -c 8M /dev/urandom >"$T/n2.rand"
nbdcopy --flush "$T/n2.rand" "$(uri n)"
stop_volgate
rbd_cmd export "$CEPH_POOL/tenant1/n" "$T/n2.export" >/dev/null 2>&1
cmp -s "$T/n2.rand" "$T/n2.export" || fail "client.volgate's writes are not what the admin exports"
pass "ceph-id=volgate with its own keyring, its caps limited to the pool: the image is served and written"

# ------------------------------------------------------------------ errors at start
# refused WHAT PATTERN SPEC...: serve must exit 2 with one line on stderr matching PATTERN
refused() {
    local what=$1 pattern=$2 rc=0
    shift 2
    local t0
    t0=$(now_ms)
    "$VOLGATE" serve --unix "$T/x.sock" --export "$@" >/dev/null 2>"$T/err" || rc=$?
    [[ $rc == 2 && $(wc -l <"$T/err") == 1 ]] && grep -q -- "$pattern" "$T/err" ||
        fail "$what: rc $rc, stderr: $(cat "$T/err")"
    REFUSED_MS=$(($(now_ms) - t0))
    pass "$what: exit 2 in $REFUSED_MS ms, '$(cat "$T/err")'"
}
ceph-authtool --create-keyring "$T/wrong.keyring" --gen-key -n client.admin >/dev/null
refused "wrong keyring" "refused client.admin.*wrong.keyring" "x=rbd:$CEPH_POOL/a,ceph-conf=$CEPH_CONF,keyring=$T/wrong.keyring"
refused "missing keyring file" "keyring '$T/nope'" "x=rbd:$CEPH_POOL/a,ceph-conf=$CEPH_CONF,keyring=$T/nope"
refused "missing image" "rbd $CEPH_POOL/nope: no such image" "x=rbd:$CEPH_POOL/nope,$CEPH"
refused "missing snapshot" "no such image or snapshot" "x=rbd:$CEPH_POOL/a@nope,$CEPH"
refused "missing pool" "pool 'nopool' does not exist" "x=rbd:nopool/a,$CEPH"
refused "a client without caps on the pool" "rbd $CEPH_POOL/a: cannot open the image: Operation not permitted" \
    "x=rbd:$CEPH_POOL/a,ceph-conf=$CEPH_CONF,ceph-id=elsewhere,keyring=$T/elsewhere.keyring"
# Unreadable: the server runs as nobody, who cannot reach the conf (its directory is root's, 0700).
cat >"$T/as-nobody" <<WRAPPER
#!/bin/sh
exec setpriv --reuid=65534 --regid=65534 --clear-groups -- "$(readlink -f "$VOLGATE")" "\$@"
WRAPPER
chmod 0755 "$T/as-nobody"
VOLGATE=$T/as-nobody refused "unreadable ceph conf" "ceph-conf '$CEPH_CONF': Permission denied" "x=rbd:$CEPH_POOL/a,$CEPH"
dead_port=$(free_tcp_port)
sed "s/^mon_host = .*/mon_host = v2:127.0.0.1:$dead_port/" "$CEPH_CONF" >"$T/dead.conf"
refused "unreachable monitors" "cannot reach the Ceph monitors at v2:127.0.0.1:$dead_port" \
    "x=rbd:$CEPH_POOL/a,ceph-conf=$T/dead.conf,keyring=$CEPH_KEYRING"
((REFUSED_MS < 15000)) || fail "unreachable monitors took $REFUSED_MS ms to report"

# ------------------------------------------------------------------ LUKS2 interop with librbd
printf 'rbd luks passphrase' >"$T/pass"
qemu_rbd() {  # qemu_rbd IMAGE: --image-opts for QEMU's rbd driver with librbd's LUKS2
    echo "driver=rbd,pool=$CEPH_POOL,image=$1,conf=$CEPH_CONF,user=admin,encrypt.format=luks2,encrypt.key-secret=s0"
}
QSECRET=(--object "secret,id=s0,file=$T/pass")
# librbd formats, volgate serves; QEMU (librbd's decryption) reads what volgate wrote
rbd_cmd create --size 48M "$CEPH_POOL/e1"
rbd_cmd encryption format "$CEPH_POOL/e1" luks2 "$T/pass" >/dev/null 2>&1 || fail "rbd encryption format failed"
# rbd encryption format has no PBKDF options: its argon2id keyslot is tuned to take 2 s (and up to
# 1 GiB) to unlock on an idle machine, far longer on a loaded CI runner, so allow a minute.
export VG_READY_S=60
start_volgate --unix "$S" --export "e1=rbd:$CEPH_POOL/e1,$CEPH,luks-key-file=$T/pass"
[[ $(nbdinfo --size "$(uri e1)") == $((32 * M)) ]] || fail "LUKS2 payload of a 48 MiB image is not 32 MiB"
make_random_file "$T/plain" 32
nbdcopy --flush "$T/plain" "$(uri e1)"
stop_volgate
qemu-img convert "${QSECRET[@]}" --image-opts "$(qemu_rbd e1)" -O raw "$T/e1.qemu"
cmp -s "$T/plain" "$T/e1.qemu" || fail "librbd's LUKS2 decryption reads volgate's writes wrong"
# QEMU (librbd's encryption) writes, volgate reads
qemu-io "${QSECRET[@]}" --image-opts "$(qemu_rbd e1)" -c "write -P 0x3c 4M 1M" -c "write -P 0xe1 31M 4096" >/dev/null
start_volgate --unix "$S" --export "e1=rbd:$CEPH_POOL/e1,$CEPH,luks-key-file=$T/pass"
nbdcopy "$(uri e1)" "$T/e1.back"
stop_volgate
"$SYSPY" - "$T/plain" "$T/e1.back" <<'PY' || fail "volgate reads librbd's encrypted writes wrong"
import sys
want = bytearray(open(sys.argv[1], "rb").read())
want[4 << 20:5 << 20] = b"\x3c" * (1 << 20)
want[31 << 20:(31 << 20) + 4096] = b"\xe1" * 4096
assert open(sys.argv[2], "rb").read() == bytes(want)
PY
pass "rbd encryption format luks2: volgate and librbd's encryption read each other's writes"

# volgate formats an RBD image; librbd's encryption opens it
rbd_cmd create --size 40M "$CEPH_POOL/e2"
"$VOLGATE" luks format --pbkdf-memory 32768 --iter-time 50 --key-file "$T/pass" "rbd:$CEPH_POOL/e2,$CEPH" \
    >"$T/fmt.out" 2>"$T/fmt.err" || fail "volgate luks format on rbd: $(cat "$T/fmt.err")"
grep -q "^version: *LUKS2" <<<"$("$VOLGATE" luks dump "rbd:$CEPH_POOL/e2,$CEPH")" || fail "volgate luks dump on rbd"
# A cheap keyslot, but the start (unlock, the digest check, the image open) still took over
# 10 s under TSan on a loaded machine: the minute above holds here too.
start_volgate --unix "$S" --export "e2=rbd:$CEPH_POOL/e2,$CEPH,luks-key-file=$T/pass"
unset VG_READY_S
size=$(nbdinfo --size "$(uri e2)")
head -c "$size" /dev/urandom >"$T/plain2"
nbdcopy --flush "$T/plain2" "$(uri e2)"
stop_volgate
qemu-img convert "${QSECRET[@]}" --image-opts "$(qemu_rbd e2)" -O raw "$T/e2.qemu"
cmp -s "$T/plain2" "$T/e2.qemu" || fail "librbd cannot read a container volgate formatted on RBD"
pass "volgate luks format/dump on an RBD image; librbd's encryption reads what volgate wrote"

# ------------------------------------------------------------------ OSD outage at start
kill -STOP "$CEPH_OSD_PID"
# volgate exits with librbd's open still pending (it cannot be cancelled), so librados' threads
# still run while the process exits: what librbd allocated for the open is never freed (which
# LeakSanitizer would report) and OpenSSL's exit-time cleanup runs beside a messenger thread
# (which ThreadSanitizer reports). Both are that deliberate abandonment; only this run ignores them.
saved_asan=${ASAN_OPTIONS-} saved_tsan=${TSAN_OPTIONS-}
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
export TSAN_OPTIONS="${TSAN_OPTIONS:+$TSAN_OPTIONS:}report_bugs=0"
refused "OSD not answering at start" "rbd $CEPH_POOL/a: the OSDs did not answer within 10 s" "x=rbd:$CEPH_POOL/a,$CEPH"
export ASAN_OPTIONS=$saved_asan TSAN_OPTIONS=$saved_tsan
kill -CONT "$CEPH_OSD_PID"
((REFUSED_MS < 20000)) || fail "an unanswering OSD took $REFUSED_MS ms to report"

# ------------------------------------------------------------------ OSD outage while serving
# Each step waits for what it needs, with a deadline, rather than for a fixed time: fio is
# writing (the export's WRITE count from the control API grows), the OSD stops, the writes stop
# completing (the count holds still for 3 s with fio's writes not done: they wait), the OSD
# comes back, fio finishes and verifies.
start_volgate --unix "$S" --control "$T/control.sock" --export "a=rbd:$CEPH_POOL/a,$CEPH"
(cd "$T" && exec timeout -k 5 120 fio --output-format=json --output="$T/outage.json" --verify_fatal=1 \
    --verify_state_save=0 --ioengine=nbd --name=outage --uri="$(uri a)" --rw=randwrite --bs=4k --iodepth=32 \
    --size=16M --rate_iops=1500 --verify=crc32c --do_verify=1) >"$T/outage.log" 2>&1 &
FIO_PID=$!
BG_PIDS+=("$FIO_PID")
"$SYSPY" - "$T/control.sock" "$CEPH_OSD_PID" $((16 << 20 >> 12)) <<'EOF' || fail "OSD outage under fio (see above)"
import json, os, signal, socket, sys, time
control, osd, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

from gateway_requests import export_requests


def writes():
    return export_requests(control, "a")["write"]

deadline = time.monotonic() + 30
while writes() < 100:
    assert time.monotonic() < deadline, "fio did not get going within 30 s"
    time.sleep(0.05)
os.kill(osd, signal.SIGSTOP)
try:
    stopped = time.monotonic()
    last, since = writes(), time.monotonic()
    while time.monotonic() - since < 3:
        assert time.monotonic() - stopped < 30, "writes kept completing for 30 s with the OSD stopped"
        time.sleep(0.1)
        n = writes()
        if n != last:
            last, since = n, time.monotonic()
    assert last < total, "fio's writes were all done before the OSD stopped: nothing waited"
    print("..   OSD stopped: writes held at %d of %d for 3 s" % (last, total))
finally:
    os.kill(osd, signal.SIGCONT)
EOF
rc=0
wait "$FIO_PID" || rc=$?
[[ $rc == 0 ]] || fail "fio across the OSD outage: exit $rc: $(tail -n 5 "$T/outage.log")"
"$SYSPY" - "$T/outage.json" <<'EOF' || fail "fio across the OSD outage"
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
assert j["error"] == 0, j["error"]
max_ms = j["write"]["clat_ns"]["max"] / 1e6
# The OSD came back at least 3 s after the last write completed; a write fio submitted a moment
# after that one waited through the rest of it.
assert max_ms >= 2500, "no write waited through the outage (max latency %.0f ms)" % max_ms
print("..   max write latency %.1f s" % (max_ms / 1000))
EOF
assert_alive
nbdcopy "$(uri a)" "$T/after" || fail "the export does not serve after the outage"
pass "OSD stopped under fio: writes waited (none completed for 3 s), then completed and verified; the export still serves"
# ------------------------------------------------------------------ live hand-over
# The successor opens its own image handle while the running gateway writes through its own
# (librbd's exclusive lock moves between them on request), then takes the connection over.
fio --ioengine=nbd --name=handover --uri="$(uri a)" --rw=randwrite --bs=4k --iodepth=32 --size=16M \
    --verify=crc32c --verify_fatal=1 --verify_backlog=512 --verify_state_save=0 --time_based --runtime=120 \
    --output-format=json --output="$T/handover.json" >"$T/handover.log" 2>&1 &
FIO_PID=$!
BG_PIDS+=("$FIO_PID")
sleep 1
watch_log "$T/restart.log"
for i in 1 2 3; do
    "$VOLGATE" gateway restart --control "$T/control.sock" --log "$T/restart.log" >/dev/null ||
        fail "RBD hand-over $i: $(tail -n 5 "$T/restart.log")"
    sleep 0.5
done
kill -INT "$FIO_PID"
wait "$FIO_PID" || true
"$SYSPY" - "$T/handover.json" <<'EOF' || fail "fio across RBD hand-overs: $(tail -n 3 "$T/handover.log")"
import json, sys
text = open(sys.argv[1]).read()
j = json.loads(text[text.index("{"):])["jobs"][0]
assert j["error"] == 0 and not j["write"].get("total_err") and not j["read"].get("total_err"), "errors"
assert j["write"]["total_ios"] > 0 and j["read"]["total_ios"] >= j["write"]["total_ios"] - 512, "not verified"
EOF
[[ $(grep -c "took over from pid .*: 1 export, 1 connection" "$T/restart.log") == 3 ]] ||
    fail "an RBD hand-over did not move the fio connection: $(grep "took over from" "$T/restart.log")"
stop_volgate "$VG_PID" none 5 0  # the first gateway, gone with the first hand-over
SERVING=$(curl -sf --unix-socket "$T/control.sock" http://gateway/v1/health | "$SYSPY" -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
kill -TERM "$SERVING"
for ((i = 0; i < 100; i++)); do kill -0 "$SERVING" 2>/dev/null || break; sleep 0.1; done
pass "three hand-overs of an RBD export under fio verify: no error, the same connection"
