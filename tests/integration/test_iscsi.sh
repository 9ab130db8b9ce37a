#!/usr/bin/env bash
# iSCSI volumes against a real target (tgtd): data through one path lands in the LUN's backing
# file byte for byte; fio verifies crc32c through the NBD export; `volgate luks format` and
# luks-key-file work on an iSCSI LUN; one-way and mutual CHAP log in, a wrong secret is one
# clear error; a portal that shows another LUN is refused; bad URIs exit 2; a portal that takes
# the connection but never answers the login, or answers every step late, is given up after
# login-timeout; IPv6 portals; with every path down, I/O waits for a path up to no-path-timeout
# (and completes when one returns in time), then fails with EIO, and the export recovers when a
# path is back; a LUN that grows is seen; the nbdkit plugin opens an iscsi:// SPEC after nbdkit
# forks and qemu-img moves 64 MiB through it into the LUN byte for byte.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/iscsi_lib.sh"
require_volgate
require_tool fio nbdcopy cryptsetup nbdkit qemu-img
. "$(dirname "$0")/nbdkit_plugin_lib.sh"

IQN=iqn.2026-01.org.volgate.test:vol
LUN=$TEST_TMP/lun.img
truncate -s 64M "$LUN"
start_tgtd main 127.0.0.1
P=$TGTD_PORT
add_target main 1 "$IQN" "$LUN"
S=$TEST_TMP/s.sock

# Two portals for the same LUN, each behind its own relay.
start_relay a "127.0.0.2:$P" "127.0.0.1:$P"
start_relay b "127.0.0.3:$P" "127.0.0.1:$P"
PORTALS="127.0.0.2:$P,127.0.0.3:$P"

# expect_refusal WHAT EXPECTED_TEXT SERVE_ARGS...: exit 2, one line on stderr that says why
expect_refusal() {
    local what=$1 want=$2 rc=0
    shift 2
    rm -f "$S"
    timeout -k 2 30 "$VOLGATE" serve --unix "$S" "$@" >"$TEST_TMP/out" 2>"$TEST_TMP/err" </dev/null || rc=$?
    [[ $rc == 2 ]] || fail "$what: exit code $rc, expected 2; stderr: $(head -c 600 "$TEST_TMP/err")"
    [[ $(grep -c . "$TEST_TMP/err") == 1 ]] || fail "$what: expected one line on stderr, got: $(cat "$TEST_TMP/err")"
    grep -q -- "$want" "$TEST_TMP/err" || fail "$what: stderr does not say '$want': $(cat "$TEST_TMP/err")"
    [[ ! -e $S ]] || fail "$what: the socket was created"
    pass "$what -> exit 2: $(cat "$TEST_TMP/err")"
}

# nbd_write URI OFFSET LENGTH BYTE_HEX [SENT_FILE]: writes and flushes; prints "ok MS" or "error
# ERRNO MS" (MS from the write's start); touches SENT_FILE when the write is about to go out
nbd_write() {
    "$SYSPY" - "$@" <<'EOF'
import nbd, sys, time
uri, offset, length, byte = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4], 16)
h = nbd.NBD()
h.connect_uri(uri)
if len(sys.argv) > 5:
    with open(sys.argv[5], "w") as sent:
        sent.write("sent\n")
t0 = time.monotonic()
try:
    h.pwrite(bytes([byte]) * length, offset)
    h.flush()
    print("ok %d" % ((time.monotonic() - t0) * 1000))
except nbd.Error as e:
    print("error %s %d" % (e.errno, (time.monotonic() - t0) * 1000))
h.shutdown()
EOF
}

# lun_holds FILE OFFSET LENGTH BYTE_HEX: a LUN's backing file holds only that byte there
lun_holds() {
    "$SYSPY" - "$@" <<'EOF'
import sys
path, offset, length, byte = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4], 16)
with open(path, "rb") as f:
    f.seek(offset)
    data = f.read(length)
sys.exit(0 if data == bytes([byte]) * length else 1)
EOF
}

# --- bad URIs and refusals --------------------------------------------------------------------
expect_refusal "URI without a LUN" "LUN" --export "v=iscsi://127.0.0.2:$P/$IQN"
expect_refusal "URI with a bad portal" "port must be" --export "v=iscsi://127.0.0.2:0/$IQN/1"
expect_refusal "unknown path policy" "round-robin" --export "v=iscsi://$PORTALS/$IQN/1,path-policy=best"
expect_refusal "no such target" "no path to" --export "v=iscsi://127.0.0.2:$P/$IQN.nope/1"
expect_refusal "nothing listens on the portal" "no path to" --export "v=iscsi://127.0.0.9:$P/$IQN/1"
expect_refusal "an IPv6 portal without its ']'" "missing ']'" --export "v=iscsi://[::1:$P/$IQN/1"

# --- login-timeout: a portal that takes the connection and never answers the login -------------
# A frozen relay: the kernel still accepts connections on its socket, but no byte goes anywhere.
start_relay mute "127.0.0.5:$P" "127.0.0.1:$P"
freeze_relay mute
t=$(now_ms)
expect_refusal "a portal that never answers the login" "127.0.0.5:$P: no answer to login within 2000 ms" \
    --export "v=iscsi://127.0.0.5:$P/$IQN/1,login-timeout=2"
ms=$(($(now_ms) - t))
# Not before the timeout; the upper bound only says it did not wait for ever (default 5 s).
((ms >= 2000 && ms < 20000)) || fail "the login was given up after $ms ms, expected login-timeout (2 s)"
pass "a portal that never answers the login: refused after $ms ms (login-timeout=2)"
# With another portal that works, the export opens on it once the mute one has had its time.
# (That one is tgtd's own, no relay: its bring-up, bounded by the same 2 s, takes milliseconds.)
t=$(now_ms)
VG_READY_S=30 start_volgate --unix "$S" --export "v=iscsi://127.0.0.5:$P,127.0.0.1:$P/$IQN/1,login-timeout=2"
ms=$(($(now_ms) - t))
grep -q "path 0 127.0.0.5:$P: down (preferred): no answer to login within 2000 ms" "$VG_ERR" ||
    fail "no clear line for the mute portal: $(grep -m2 'path 0' "$VG_ERR")"
grep -q "path 1 127.0.0.1:$P: up" "$VG_ERR" || fail "path 1 did not come up"
r=$(nbd_write "$(unix_uri v "$S")" 0 65536 0d)
[[ $r == ok* ]] || fail "write through the portal that works: $r"
lun_holds "$LUN" 0 65536 0d || fail "the write through path 1 is not in the LUN"
stop_volgate
((ms >= 2000)) || fail "the export opened after $ms ms, before the mute portal's login-timeout"
pass "a mute portal beside a working one: down after login-timeout, the export served through the other ($ms ms to open)"
kill_relay mute
# login-timeout bounds the whole bring-up (login and a dozen checks), not each step: a target
# that answers every request 0.4 s late (each step well within the timeout, all of them ~5 s)
# is given up after 2 s.
start_relay slow "127.0.0.6:$P" "127.0.0.1:$P" --delay-answers 400
t=$(now_ms)
expect_refusal "a portal that answers every step late" "127.0.0.6:$P: .*within 2000 ms" \
    --export "v=iscsi://127.0.0.6:$P/$IQN/1,login-timeout=2"
ms=$(($(now_ms) - t))
((ms >= 2000 && ms < 20000)) || fail "the slow portal was given up after $ms ms, expected login-timeout (2 s)"
pass "a portal that answers every step 0.4 s late: given up after $ms ms in all (login-timeout=2)"
kill_relay slow

# --- one path: bytes land in the LUN ----------------------------------------------------------
VG_LOG_LEVEL=debug start_volgate --unix "$S" --export "v=iscsi://127.0.0.2:$P/$IQN/1"
U=$(unix_uri v "$S")
make_random_file "$TEST_TMP/random.img" 64
nbdcopy "$TEST_TMP/random.img" "$U"
cmp -s "$TEST_TMP/random.img" "$LUN" || fail "the LUN's backing file differs from what was written"
nbdcopy "$U" "$TEST_TMP/back.img"
cmp -s "$TEST_TMP/random.img" "$TEST_TMP/back.img" || fail "reading the LUN back gave different data"
# Each connection moves to the LUN's own thread after the handshake (no thread change per request).
[[ $(grep -c "moving to the thread of export 'v'" "$VG_ERR") -ge 2 ]] ||
    fail "the connections did not move to the iSCSI thread: $(grep -c moving "$VG_ERR") moves logged"
pass "64 MiB through one path: backing file and read-back identical, served on the LUN's thread"
# The largest NBD request (32 MiB) is one SCSI command each way.
make_random_file "$TEST_TMP/random2.img" 64
nbdcopy --request-size=$((32 << 20)) "$TEST_TMP/random2.img" "$U"
cmp -s "$TEST_TMP/random2.img" "$LUN" || fail "32 MiB writes: the LUN differs"
nbdcopy --request-size=$((32 << 20)) "$U" "$TEST_TMP/back2.img"
cmp -s "$TEST_TMP/random2.img" "$TEST_TMP/back2.img" || fail "32 MiB reads: different data"
pass "32 MiB requests both ways"
size=$(nbdinfo --size "$U")
assert_eq "$size" $((64 << 20)) "export size"
(cd "$TEST_TMP" && fio --name=one --ioengine=nbd --uri="$U" --rw=randwrite --bs=4k --iodepth=32 \
    --size=32M --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 \
    --output-format=json --output=fio1.json >"$TEST_TMP/fio1.log" 2>&1) ||
    fail "fio through one path: $(tail -n 5 "$TEST_TMP/fio1.log")"
check_fio "$TEST_TMP/fio1.json" || fail "fio through one path reported errors"
pass "fio 4k randwrite depth 32 with crc32c verify through one path"
stop_volgate
grep -q "path 0 127.0.0.2:$P: closing" "$VG_ERR" || fail "no closing line with the path's counters"
pass "counters logged at exit: $(path_counters "$VG_ERR" 0)"

# --- the nbdkit plugin on the LUN, through both portals ----------------------------------------
plugin_forked_roundtrip "nbdkit plugin on iscsi://" "iscsi://$PORTALS/$IQN/1" 64
cmp -s "$TEST_TMP/plugin.data" "$LUN" || fail "the LUN's backing file differs from what qemu-img wrote through the plugin"
pass "the nbdkit plugin opens an iscsi:// SPEC with two portals after nbdkit forks; 64 MiB through it land in the LUN byte for byte"

# --- LUKS on an iSCSI LUN ---------------------------------------------------------------------
printf 'correct horse battery staple' >"$TEST_TMP/pass"
"$VOLGATE" luks format --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
    --key-file "$TEST_TMP/pass" "iscsi://$PORTALS/$IQN/1" 2>"$TEST_TMP/format.err" ||
    fail "luks format on iSCSI: $(cat "$TEST_TMP/format.err")"
cryptsetup isLuks "$LUN" || fail "cryptsetup does not see a LUKS header in the LUN after luks format"
start_volgate --unix "$S" --export "secret=iscsi://$PORTALS/$IQN/1,luks-key-file=$TEST_TMP/pass"
U=$(unix_uri secret "$S")
head -c $((8 << 20)) "$TEST_TMP/random.img" >"$TEST_TMP/plain.img"
nbdcopy "$TEST_TMP/plain.img" "$U"
nbdcopy "$U" "$TEST_TMP/decrypted.img"
cmp -s -n $((8 << 20)) "$TEST_TMP/decrypted.img" "$TEST_TMP/plain.img" || fail "LUKS on iSCSI: read-back differs"
grep -qF "$(head -c 4096 "$TEST_TMP/plain.img" | od -An -tx1 | head -n 1)" <(od -An -tx1 "$LUN") &&
    fail "LUKS on iSCSI: plaintext found in the LUN"
stop_volgate
pass "luks format and luks-key-file on an iSCSI LUN (cryptsetup recognises the header)"

# --- CHAP -------------------------------------------------------------------------------------
CHAP_IQN=$IQN-chap
CHAP_LUN=$TEST_TMP/chap.img
truncate -s 16M "$CHAP_LUN"
add_target main 2 "$CHAP_IQN" "$CHAP_LUN"
require_chap main 2 alice alice-secret-1 target-bob bob-secret-22
printf 'alice-secret-1\n' >"$TEST_TMP/alice.secret"
printf 'not-the-secret\n' >"$TEST_TMP/wrong.secret"
printf 'bob-secret-22\n' >"$TEST_TMP/bob.secret"
printf 'bob-wrong-secret\n' >"$TEST_TMP/bob-wrong.secret"
expect_refusal "CHAP with a wrong secret" "login failed" \
    --export "c=iscsi://127.0.0.2:$P/$CHAP_IQN/1,chap-user=alice,chap-secret-file=$TEST_TMP/wrong.secret"
refute_grep "the CHAP secret appears on stderr" "not-the-secret" "$TEST_TMP/err"
expect_refusal "no CHAP where the target asks for it" "login failed" --export "c=iscsi://127.0.0.2:$P/$CHAP_IQN/1"
expect_refusal "mutual CHAP, the target's answer does not match" "login failed" \
    --export "c=iscsi://127.0.0.2:$P/$CHAP_IQN/1,chap-user=alice,chap-secret-file=$TEST_TMP/alice.secret,mutual-chap-user=target-bob,mutual-chap-secret-file=$TEST_TMP/bob-wrong.secret"
start_volgate --unix "$S" \
    --export "c=iscsi://$PORTALS/$CHAP_IQN/1,chap-user=alice,chap-secret-file=$TEST_TMP/alice.secret" \
    --export "m=iscsi://127.0.0.2:$P/$CHAP_IQN/1,chap-user=alice,chap-secret-file=$TEST_TMP/alice.secret,mutual-chap-user=target-bob,mutual-chap-secret-file=$TEST_TMP/bob.secret"
r=$(nbd_write "$(unix_uri c "$S")" 0 65536 5a)
[[ $r == ok* ]] || fail "write with one-way CHAP: $r"
r=$(nbd_write "$(unix_uri m "$S")" 65536 65536 a5)
[[ $r == ok* ]] || fail "write with mutual CHAP: $r"
lun_holds "$CHAP_LUN" 0 65536 5a || fail "one-way CHAP write not in the LUN"
lun_holds "$CHAP_LUN" 65536 65536 a5 || fail "mutual CHAP write not in the LUN"
stop_volgate
refute_grep "a CHAP secret appears in the log" -E "alice-secret-1|bob-secret-22" "$VG_ERR"
# Exports c and m share a LUN in one process: their keys are one run's, never each other's leftovers.
refute_grep "two exports of one LUN preempted each other's keys" "left by an earlier run" "$VG_ERR"
pass "one-way and mutual CHAP log in and carry writes; secrets stay out of the log"

# --- a portal that shows another LUN ----------------------------------------------------------
# A second target daemon with a target of the same name, but its own LUN (another identifier).
OTHER_LUN=$TEST_TMP/other.img
truncate -s 64M "$OTHER_LUN"
start_tgtd other 127.0.0.4
add_target other 7 "$IQN" "$OTHER_LUN"
expect_refusal "a portal showing a different LUN" "different LUN" \
    --export "v=iscsi://$PORTALS,127.0.0.4:$TGTD_PORT/$IQN/1"

# --- IPv6 portals -------------------------------------------------------------------------------
# A target daemon listening on ::1 and on 127.0.0.1: one LUN behind an IPv6 and an IPv4 portal.
V6_IQN=$IQN-v6
V6_LUN=$TEST_TMP/v6.img
truncate -s 16M "$V6_LUN"
start_tgtd v6 "[::1]" 127.0.0.1
add_target v6 1 "$V6_IQN" "$V6_LUN"
start_volgate --unix "$S" --export "v6=iscsi://[::1]:$TGTD_PORT,127.0.0.1:$TGTD_PORT/$V6_IQN/1"
grep -q "path 0 \[::1\]:$TGTD_PORT: up" "$VG_ERR" || fail "the IPv6 path is not up: $(grep -m2 'path 0' "$VG_ERR")"
ss -Htn state established "( dport = :$TGTD_PORT )" | grep -qF "[::1]:$TGTD_PORT" ||
    fail "no TCP connection to [::1]:$TGTD_PORT: $(ss -Htn "( dport = :$TGTD_PORT )")"
make_random_file "$TEST_TMP/v6-data.img" 16
nbdcopy "$TEST_TMP/v6-data.img" "$(unix_uri v6 "$S")"
cmp -s "$TEST_TMP/v6-data.img" "$V6_LUN" || fail "IPv6 portal: the LUN's backing file differs from what was written"
nbdcopy "$(unix_uri v6 "$S")" "$TEST_TMP/v6-back.img"
cmp -s "$TEST_TMP/v6-data.img" "$TEST_TMP/v6-back.img" || fail "IPv6 portal: reading back gave different data"
stop_volgate
pass "an IPv6 portal ([::1]:$TGTD_PORT, beside an IPv4 one): 16 MiB written and read back byte for byte"

# --- every path down: shorter, then longer than no-path-timeout -------------------------------
# Two exports of the LUN through the same relays: v waits for a path as long as by default (30 s),
# w gives up after 2 s.
start_volgate --unix "$S" --export "v=iscsi://$PORTALS/$IQN/1,path-check-interval=1" \
    --export "w=iscsi://$PORTALS/$IQN/1,no-path-timeout=2,path-check-interval=1"
U=$(unix_uri v "$S")
W=$(unix_uri w "$S")
r=$(nbd_write "$U" 0 65536 11)
[[ $r == ok* ]] || fail "write with both paths up: $r"
kill_relay a
kill_relay b
nbd_write "$U" 0 65536 22 "$TEST_TMP/short.sent" >"$TEST_TMP/short.out" &
writer=$!
wait_for_log "$TEST_TMP/short.sent" sent 30 "the write during the outage"
sleep 1.5  # the outage, from the moment the write goes out
restore_relay b
wait $writer
r=$(cat "$TEST_TMP/short.out")
[[ $r == ok* ]] || fail "a write during a 1.5 s outage failed: $r"
ms=${r#ok }
((ms >= 1000)) || fail "the write during the outage took $ms ms: it did not wait for the path"
lun_holds "$LUN" 0 65536 22 || fail "the write that waited for a path is not in the LUN"
pass "all paths down for 1.5 s: the waiting write completed after $ms ms"

kill_relay b
r=$(nbd_write "$W" 0 65536 33)
[[ $r == error* ]] || fail "a write with no path for longer than no-path-timeout succeeded: $r"
read -r _ errno ms <<<"$r"
assert_eq "$errno" EIO "errno of the write that found no path"
# Not before the timeout; the upper bound only says that it came at all.
((ms >= 1900 && ms < 20000)) || fail "EIO came after $ms ms, expected no-path-timeout (2 s)"
grep -q "failed with EIO after waiting 2 s for a path" "$VG_ERR" || fail "no log line for the EIO"
lun_holds "$LUN" 0 65536 22 || fail "the failed write changed the LUN"
pass "all paths down longer than no-path-timeout: EIO after $ms ms, LUN unchanged"

restore_relay a
restore_relay b
# Path 0 of both exports comes back (the first time since the start: failback).
wait_for_log "$VG_ERR" "path 0 127.0.0.2:$P: up, failing back" 30 "path 0 back" 2
r=$(nbd_write "$W" 0 65536 44)
[[ $r == ok* ]] || fail "write after the paths came back: $r"
lun_holds "$LUN" 0 65536 44 || fail "the write after recovery is not in the LUN"
assert_alive
pass "the export recovers when the paths come back"

# --- the LUN grows under a running export -----------------------------------------------------
# tgt cannot resize a LUN in place: the LUN is replaced by one on the grown file, which also
# leaves a unit attention for every session. The path checker's READ CAPACITY sees the size.
truncate -s 96M "$LUN"
tgt main --op delete --mode logicalunit --tid 1 --lun 1 || fail "cannot remove LUN 1"
tgt main --op new --mode logicalunit --tid 1 --lun 1 -b "$LUN" || fail "cannot add LUN 1 again"
wait_for_log "$VG_ERR" "size changed from $((64 << 20)) to $((96 << 20)) bytes" 30 "resize" 2
assert_eq "$(nbdinfo --size "$U")" $((96 << 20)) "export size after the LUN grew"
rc=0
nbdinfo --can trim "$U" || rc=$?  # 0: offered, 2: not offered, anything else: nbdinfo failed
assert_eq "$rc" 2 "nbdinfo --can trim on a LUN without thin provisioning (VPD 0xB2 LBPU 0)"
r=$(nbd_write "$U" $((80 << 20)) 65536 55)
[[ $r == ok* ]] || fail "write into the grown part: $r"
lun_holds "$LUN" $((80 << 20)) 65536 55 || fail "the write into the grown part is not in the LUN"
stop_volgate
pass "a grown LUN is seen by the path checker: new connections get 96 MiB and can write there"

# --- UNMAP and WRITE SAME on a thin-provisioned LUN -------------------------------------------
# tgtd offers them (VPD 0xB2: LBPU, LBPWS, LBPRZ) only with thin_provisioning=1.
tgt main --op update --mode logicalunit --tid 1 --lun 1 --params thin_provisioning=1 ||
    fail "cannot turn on thin provisioning"
start_volgate --unix "$S" --export "v=iscsi://$PORTALS/$IQN/1"
U=$(unix_uri v "$S")
nbdinfo --can trim "$U" || fail "no trim on a thin-provisioned LUN"
nbdinfo --can fast_zero "$U" || fail "no fast zero on a thin-provisioned LUN"
# 24 MiB of data at 16 MiB; then trim 8 MiB, zero 4 MiB with deallocation allowed (FAST_ZERO),
# and 4 MiB with NO_HOLE and FUA (WRITE SAME without the UNMAP bit, then a flush).
"$SYSPY" - "$U" <<'EOF' || fail "trim and zero through NBD"
import nbd, sys
MiB = 1 << 20
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(b"\x66" * (24 * MiB), 16 * MiB)
h.flush()
h.trim(8 * MiB, 16 * MiB)
h.zero(4 * MiB, 24 * MiB, nbd.CMD_FLAG_FAST_ZERO)
h.zero(4 * MiB, 28 * MiB, nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FUA)
h.flush()
assert h.pread(16 * MiB, 16 * MiB) == bytes(16 * MiB), "trimmed and zeroed ranges do not read as zeroes"
assert h.pread(8 * MiB, 32 * MiB) == b"\x66" * (8 * MiB), "the data after the zeroed ranges changed"
h.shutdown()
EOF
"$SYSPY" - "$LUN" <<'EOF' || fail "the LUN file does not show the deallocated ranges as holes"
import os, sys
MiB = 1 << 20
fd = os.open(sys.argv[1], os.O_RDONLY)
def hole(lo, hi):
    try:
        return os.lseek(fd, lo, os.SEEK_DATA) >= hi
    except OSError:  # no data after lo at all
        return True
assert hole(16 * MiB, 28 * MiB), "the trimmed or FAST_ZERO range is still allocated"
assert not hole(28 * MiB, 32 * MiB), "the NO_HOLE range was deallocated"
os.lseek(fd, 16 * MiB, os.SEEK_SET)
assert os.read(fd, 16 * MiB) == bytes(16 * MiB), "the LUN does not hold zeroes there"
EOF
stop_volgate
pass "thin LUN: trim is UNMAP, write-zeroes is WRITE SAME(16): holes where allowed, data with NO_HOLE"
