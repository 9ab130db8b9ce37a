#!/usr/bin/env bash
# What the target states and answers, and what volgate sends it in return, seen on the wire: a
# relay that parses the iSCSI PDUs (tcp_relay.py --iscsi) stands between volgate and tgtd, logs
# every SCSI command and answer, and can change the target's words.
#  - tgtd as it is: no transfer limit (an 8 MiB request is one WRITE(16)), DPOFUA (a FUA write is
#    WRITE(16) with FUA and no flush, also through a second export of the LUN), unlimited UNMAP and WRITE SAME (72 MiB go out in parts
#    of at most 64 MiB, one after the other), and without thin provisioning zeroes written as data;
#  - tgtd's Block Limits page rewritten (maximum transfer 64 KiB, UNMAP 8 MiB, WRITE SAME 4 MiB)
#    and DPOFUA cleared in MODE SENSE: requests are split to fit, and a FUA write is a plain
#    WRITE(16) followed by SYNCHRONIZE CACHE once it is done;
#  - BUSY and TASK SET FULL answers: the same command is sent again on the same connection, a
#    pause later, and the client sees nothing; a target that stays busy fails the request with
#    EIO after no-path-timeout.
# Every workload is checked byte for byte: read back through volgate, and in the LUN's file.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/iscsi_lib.sh"
require_volgate

IQN=iqn.2026-01.org.volgate.test:limits
LUN=$TEST_TMP/lun.img        # thin-provisioned: UNMAP and WRITE SAME offered
THICK=$TEST_TMP/thick.img    # LUN 2: neither
truncate -s 72M "$LUN"
truncate -s 8M "$THICK"
start_tgtd main 127.0.0.1
P=$TGTD_PORT
add_target main 1 "$IQN" "$LUN"
tgt main --op update --mode logicalunit --tid 1 --lun 1 --params thin_provisioning=1 ||
    fail "cannot turn on thin provisioning"
tgt main --op new --mode logicalunit --tid 1 --lun 2 -b "$THICK" || fail "cannot add LUN 2"
S=$TEST_TMP/s.sock

# run_steps RELAY PYTHON: runs the Python checks with the relay's log, pid and control file in
# WIRE_LOG, WIRE_PID and WIRE_CONTROL (the export URIs and LUN files are exported as U_* etc.)
run_steps() {
    WIRE_LOG=$TEST_TMP/relay-$1.out WIRE_PID=${RELAY_PID[$1]} WIRE_CONTROL=$TEST_TMP/relay-$1.ctl \
        "$SYSPY" -c "$2"
}

# --- tgtd as it is ------------------------------------------------------------------------------
start_relay plain "127.0.0.2:$P" "127.0.0.1:$P" --iscsi
# t2, a second export of LUN 1, logs in while t holds the LUN's reservation: it must see DPOFUA
# too (tgtd refuses MODE SENSE to a session that has not registered yet).
start_volgate --unix "$S" --export "t=iscsi://127.0.0.2:$P/$IQN/1" --export "thick=iscsi://127.0.0.2:$P/$IQN/2" \
    --export "t2=iscsi://127.0.0.2:$P/$IQN/1"
refute_grep "tgtd's DPOFUA was not seen" "does not honour FUA" "$VG_ERR"
grep -q "login conn=1 HeaderDigest=None DataDigest=None" "$TEST_TMP/relay-plain.out" ||
    fail "the relay did not see a login without digests: $(head -n 3 "$TEST_TMP/relay-plain.out")"
U_T=$(unix_uri t "$S") U_THICK=$(unix_uri thick "$S") U_T2=$(unix_uri t2 "$S")
export U_T U_THICK U_T2 LUN THICK
run_steps plain '
import os, random
from iscsi_wire import *
wire = Wire(os.environ["WIRE_LOG"])
v = Volume(os.environ["U_T"], os.environ["LUN"])
v.write(4096, random.randbytes(8 * MiB))
writes = wire.commands("WRITE16")
assert [(c["lba"], c["blocks"]) for c in writes] == [(8, 16384)], "an 8 MiB write went out as %r" % writes
v.check(0, 10 * MiB)
print("8 MiB in one WRITE(16) of 16384 blocks; read back and LUN file match")

wire.mark()
v.write(64 * 1024, random.randbytes(8192), fua=True)
assert [(c["lba"], c["blocks"], c["fua"]) for c in wire.commands("WRITE16")] == [(128, 16, 1)], wire.commands()
assert not wire.commands("SYNC_CACHE10", "SYNC_CACHE16"), "a flush after a FUA write to a DPOFUA target"
second = nbd.NBD()
second.connect_uri(os.environ["U_T2"])
data = random.randbytes(4096)
wire.mark()
second.pwrite(data, 128 * 1024, nbd.CMD_FLAG_FUA)
writes = wire.commands("WRITE16")
assert [(c["lba"], c["blocks"], c["fua"]) for c in writes] == [(256, 8, 1)], "second export: %r" % writes
assert not wire.commands("SYNC_CACHE10", "SYNC_CACHE16"), "a flush after the FUA write through the second export"
second.shutdown()
v.model[128 * 1024:128 * 1024 + 4096] = data
v.check(0, 1 * MiB)
print("FUA write: WRITE(16) with FUA, no SYNCHRONIZE CACHE; the same through a second export of the LUN")

wire.mark()
v.trim(0, 72 * MiB)
unmaps = wire.commands("UNMAP")
ranges = [r for c in unmaps for r in unmap_ranges(c)]
assert len(unmaps) == len(ranges), "one range per UNMAP: %r" % unmaps
sizes = tiles([{"lba": l, "blocks": b} for l, b in ranges], 0, 72 * 2048, 64 * 2048)
assert sizes == [131072, 16384], sizes
one_after_another(wire, "UNMAP")
v.check(0, 10 * MiB)  # where the data was
print("trim of 72 MiB: UNMAP of %r blocks, one after the other" % sizes)

# tgtd writes zeroes block by block where it may not deallocate (about a second per 64 MiB
# here): the 64 MiB parts are shown with FAST_ZERO (holes allowed), NO_HOLE and FUA on 2 MiB.
for length, flags, unmap in ((72 * MiB, nbd.CMD_FLAG_FAST_ZERO, 1),
                             (2 * MiB, nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FUA, 0)):
    # Data at the start, across the boundary of the two parts and at the end.
    for at in (0, 63 * MiB, 71 * MiB):
        v.write(at, random.randbytes(MiB if at else 2 * MiB))
    wire.mark()
    v.zero(0, length, flags)
    same = wire.commands("WRITESAME16")
    sizes = tiles(same, 0, length // 512, 64 * 2048)
    assert sizes == ([131072, 16384] if length > 64 * MiB else [4096]), sizes
    assert all(c["unmap"] == unmap for c in same), "UNMAP bit should be %d: %r" % (unmap, same)
    one_after_another(wire, "WRITESAME16")
    flushes = wire.commands("SYNC_CACHE16")
    if flags & nbd.CMD_FLAG_FUA:
        # WRITE SAME cannot carry FUA: one flush after the last part is answered.
        last = wire.answers("WRITESAME16")[-1]
        assert len(flushes) == 1 and flushes[0]["t"] > last["t"], "flushes %r after %r" % (flushes, last)
    else:
        assert not flushes, flushes
    for at in (0, 63 * MiB, 71 * MiB):
        v.check(at, MiB if at else 2 * MiB)
v.check_lun()  # all of it, once
print("zeroing: WRITE SAME(16) in parts of 64 MiB at most (72 MiB as 64 + 8), UNMAP bit only where a hole is allowed, a flush after the last part for FUA")

thick = Volume(os.environ["U_THICK"], os.environ["THICK"])
thick.write(0, random.randbytes(8 * MiB))
wire.mark()
thick.zero(512, 3 * MiB)
assert not wire.commands("WRITESAME16", "UNMAP"), "WRITE SAME or UNMAP on a LUN that offers neither"
tiles(wire.commands("WRITE16"), 1, 3 * 2048, 2048)
thick.check(0, 8 * MiB)
print("without thin provisioning zeroes go out as WRITE(16) of 1 MiB at most")
' || fail "tgtd as it is: see above"
refute_grep "a path went down" -E ": path [0-9]+ [^ ]+: down" "$VG_ERR"
pass "tgtd as it is: no transfer limit, native FUA, 64 MiB parts for UNMAP and WRITE SAME, zeroes as data without them"
stop_volgate

# --- the target's limits rewritten --------------------------------------------------------------
: >"$TEST_TMP/relay-limits.ctl"
start_relay limits "127.0.0.3:$P" "127.0.0.1:$P" --iscsi --max-transfer-blocks 128 \
    --max-unmap-blocks 2048 --max-write-same-blocks 1024 --no-dpofua --control "$TEST_TMP/relay-limits.ctl"
start_volgate --unix "$S" --export "r=iscsi://127.0.0.3:$P/$IQN/1" \
    --export "busy=iscsi://127.0.0.3:$P/$IQN/1,no-path-timeout=1"
for what in "max-transfer-blocks 0->128" "max-unmap-blocks 4294967295->2048" \
    "max-write-same-blocks 0->1024" "mode-sense dpofua 1->0"; do
    grep -q "rewrote conn=1 [a-z-]* *$what" "$TEST_TMP/relay-limits.out" ||
        fail "the relay did not rewrite $what: $(grep rewrote "$TEST_TMP/relay-limits.out" | head -n 5)"
done
grep -q "iqn.2026-01.org.volgate.test:limits: the target does not honour FUA" "$VG_ERR" ||
    fail "volgate did not take the cleared DPOFUA bit"
U_R=$(unix_uri r "$S") U_BUSY=$(unix_uri busy "$S")
export U_R U_BUSY
run_steps limits '
import errno, os, random, time
from iscsi_wire import *
wire = Wire(os.environ["WIRE_LOG"])
v = Volume(os.environ["U_R"], os.environ["LUN"])
data = random.randbytes(MiB + 4096)
v.write(3 * 4096, data)
sizes = tiles(wire.commands("WRITE16"), 24, 2056, 128)
wire.mark()
assert v.read(3 * 4096, len(data)) == data, "read back through volgate differs"
tiles(wire.commands("READ16"), 24, 2056, 128)
v.check(0, 2 * MiB)
print("1 MiB + 4 KiB each way in %d parts of at most 64 KiB" % len(sizes))

wire.mark()
v.write(8192, random.randbytes(4096), fua=True)
writes = wire.commands("WRITE16")
assert [(c["lba"], c["blocks"], c["fua"]) for c in writes] == [(16, 8, 0)], writes
flushes = wire.commands("SYNC_CACHE16")
done = wire.answers("WRITE16")
assert len(flushes) == 1 and done and flushes[0]["t"] > done[0]["t"], "flush %r, write answered %r" % (flushes, done)
v.check(0, MiB)
print("FUA write to a target without DPOFUA: WRITE(16) without FUA, SYNCHRONIZE CACHE once it is answered")

v.write(0, random.randbytes(4 * MiB))
wire.mark()
v.trim(0, 2560 * 1024)
unmaps = wire.commands("UNMAP")
sizes = tiles([{"lba": l, "blocks": b} for c in unmaps for l, b in unmap_ranges(c)], 0, 5120, 2048)
assert sizes == [2048, 2048, 1024], sizes
wire.mark()
v.zero(3 * MiB, 1280 * 1024, nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FUA)
assert tiles(wire.commands("WRITESAME16"), 6144, 2560, 1024) == [1024, 1024, 512]
assert len(wire.commands("SYNC_CACHE16")) == 1
v.check(0, 5 * MiB)
print("parts within the stated limits: UNMAP %r, WRITE SAME [1024, 1024, 512] blocks" % sizes)

# BUSY and TASK SET FULL: sent again on the same connection after a pause, never an error.
ctl = os.environ["WIRE_CONTROL"]
wire.pid = int(os.environ["WIRE_PID"])
for status, kind, op, count in (("BUSY", "write", "WRITE16", 3), ("TASK_SET_FULL", "read", "READ16", 2),
                                ("BUSY", "flush", "SYNC_CACHE16", 1)):
    wire.control(ctl, "inject %s %s %d" % (status, kind, count))
    wire.mark()
    if kind == "write":
        v.write(40960, random.randbytes(8192))
    elif kind == "read":
        assert v.read(0, 65536) == bytes(v.model[0:65536]), "read after TASK SET FULL differs"
    else:
        v.h.flush()
    records = [r for r in wire.records() if r.get("op") == op]
    expected = ["cmd", "status"] * (count + 1)
    assert [r["what"] for r in records] == expected, "%s: %r" % (op, records)
    answers = [r["status"] for r in records if r["what"] == "status"]
    assert answers == [status] * count + ["GOOD"], answers
    sent = {(r["conn"], r.get("lba"), r.get("blocks")) for r in records if r["what"] == "cmd"}
    assert len(sent) == 1, "not the same command on the same connection: %r" % records
    gaps = [after["t"] - before["t"] for before, after in zip(records[1::2], records[2::2])]
    assert min(gaps) >= 3.0, "sent again %.3f ms after the %s, without a pause" % (min(gaps), status)
    print("%s x%d on %s: sent again on the same connection, %.1f-%.1f ms later" % (status, count, op, min(gaps), max(gaps)))
v.check(0, MiB)

# A target that stays busy: EIO after no-path-timeout (1 s here), nothing lost but that write.
busy = nbd.NBD()
busy.connect_uri(os.environ["U_BUSY"])
wire.control(ctl, "inject BUSY write 1000000")
wire.mark()
t0 = time.monotonic()
try:
    busy.pwrite(b"\x77" * 4096, 1 << 20)
    raise AssertionError("a write the target answers BUSY for ever succeeded")
except nbd.Error as e:
    assert e.errno in ("EIO", errno.EIO), "errno %s" % e.errno
waited = time.monotonic() - t0
wire.control(ctl, "inject BUSY write 0")
tries = len(wire.commands("WRITE16"))
assert waited >= 0.95, "EIO after %.2f s, before no-path-timeout" % waited
assert tries >= 10, "only %d tries" % tries
# The target did carry out every write it answered BUSY (the relay only changed the answer), so
# what the failed write left at 1 MiB is not checked; nothing else may have moved.
v.check(0, MiB)
print("a target that stays BUSY: EIO after %.2f s and %d tries" % (waited, tries))
' || fail "rewritten limits: see above"
stop_volgate
refute_grep "a path went down" -E ": path [0-9]+ [^ ]+: down" "$VG_ERR"
grep -q "failed with EIO: the target kept answering BUSY for 1 s" "$VG_ERR" || fail "no log line for the EIO after BUSY"
pass "the target's limits rewritten: requests split to fit, FUA as a flush, BUSY and TASK SET FULL sent again after a pause"
