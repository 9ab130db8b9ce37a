#!/usr/bin/env bash
# Graceful shutdown: SIGTERM while fio hammers two exports -> exit 0 within 5 s; data whose write
# or FLUSH was acknowledged before the signal is in the backing file afterwards (plain and direct
# files); writes in flight at SIGTERM are either acknowledged and present, or not acknowledged;
# SIGINT with an idle client and SIGTERM with a client stuck mid-payload also exit 0 quickly,
# and the half-sent write is not applied. The server comes back on its socket path after a clean
# exit and after SIGKILL, while a second server on the socket of a live one is refused (exit 2,
# one line) and the live one serves on.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_volgate
require_tool fio
need_disk_tmpdir
"$SYSPY" -c 'import nbd' 2>/dev/null || fail "python3-libnbd is not installed for $SYSPY"

MiB=1048576

# ---------------------------------------------------------------- 1. SIGTERM under fio load
S=$TEST_TMP/a.sock
truncate -s 256M "$TEST_TMP/load.img"
start_volgate --unix "$S" --export "load=file:$TEST_TMP/load.img" --export "mem=memory:256M"
PID1=$VG_PID
# a marker written and flushed before the load starts, outside fio's range (fio: first 128 MiB)
head -c $MiB /dev/urandom >"$TEST_TMP/marker"
nbdsh -u "$(unix_uri load "$S")" -c "h.pwrite(open('$TEST_TMP/marker','rb').read(), 200 * 1048576); h.flush()"
for e in load mem; do
    (cd "$TEST_TMP" && exec fio --name=load --ioengine=nbd --uri="$(unix_uri "$e" "$S")" --rw=randwrite --bs=4k --iodepth=32 \
        --size=128M --time_based --runtime=60 --output="$TEST_TMP/fio.$e.out") >/dev/null 2>&1 &
    BG_PIDS+=($!)
done
# wait until fio really writes: the sparse file gets allocated blocks beyond the marker
deadline=$(($(now_ms) + 10000))
while (($(file_blocks "$TEST_TMP/load.img") < 2048 + 8192)); do
    (($(now_ms) < deadline)) || fail "fio did not start writing within 10 s"
    sleep 0.1
done
sleep 1
assert_alive "$PID1"
stop_volgate "$PID1" TERM 5
pass "SIGTERM under fio load (2 connections, depth 32): exit 0 in ${VG_STOP_MS} ms"
# fio notices the closed connections and ends by itself
for p in "${BG_PIDS[@]}"; do
    for ((i = 0; i < 100; i++)); do _proc_running "$p" || break; sleep 0.1; done
    _proc_running "$p" && fail "fio still running 10 s after the server exited (server did not close connections?)"
    wait "$p" || true
done
BG_PIDS=()
cmp <(head -c $MiB "$TEST_TMP/marker") <(dd if="$TEST_TMP/load.img" bs=1M skip=200 count=1 status=none) ||
    fail "data flushed before the load is not in the file after shutdown"
pass "flushed marker intact after shutdown under load"

# ------------------------------------- 2. acknowledged writes/flushes persist; in-flight writes
S=$TEST_TMP/b.sock
truncate -s 64M "$TEST_TMP/plain.img" "$DISK_TMP/direct.img"
start_volgate --unix "$S" --export "plain=file:$TEST_TMP/plain.img" --export "direct=file:$DISK_TMP/direct.img,direct"
PID2=$VG_PID
SOCK=$S PID=$PID2 OUT=$TEST_TMP/expect "$SYSPY" - <<'EOF' || fail "client side of the in-flight shutdown case failed"
import os, signal, sys, time
import nbd
S, PID, OUT = os.environ["SOCK"], int(os.environ["PID"]), os.environ["OUT"]
MiB = 1 << 20
hs = {}
for name in ("plain", "direct"):
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///%s?socket=%s" % (name, S))
    # acknowledged + flushed before the signal
    d = os.urandom(4 * MiB)
    h.pwrite(d, 0)
    h.flush()
    open("%s.%s.flushed" % (OUT, name), "wb").write(d)
    # acknowledged FUA write
    d = os.urandom(MiB)
    h.pwrite(d, 4 * MiB, nbd.CMD_FLAG_FUA)
    open("%s.%s.fua" % (OUT, name), "wb").write(d)
    hs[name] = h
# 32 x 1 MiB writes pipelined on a raw connection per export (so that they are really on the
# wire, not queued in a client library), then SIGTERM as soon as the last byte is sent.
import socket, struct, sys, threading
import nbd_go


def raw_go(name):
    return nbd_go.go(S, name)


socks, datas, raws = {}, {}, {}
for name in ("plain", "direct"):
    socks[name] = raw_go(name)
    buf = []
    for i in range(32):
        d = os.urandom(MiB)
        datas[(name, i)] = d
        buf.append(struct.pack(">IHHQQI", 0x25609513, 0, 1, i, 8 * MiB + i * MiB, MiB) + d)
    raws[name] = b"".join(buf)
threads = [threading.Thread(target=socks[n].sendall, args=(raws[n],)) for n in socks]
for t in threads:
    t.start()
for t in threads:
    t.join()
os.kill(PID, signal.SIGTERM)
total = {"ok": 0, "shutdown": 0}
for name, s in socks.items():
    seen = set()
    try:
        while True:
            hdr = s.recv(16, socket.MSG_WAITALL)
            if len(hdr) < 16:
                break
            magic, err, handle = struct.unpack(">IIQ", hdr)
            if magic != 0x67446698 or handle >= 32 or handle in seen:
                sys.exit("%s: bad reply magic 0x%x handle %d" % (name, magic, handle))
            seen.add(handle)
            if err == 0:
                total["ok"] += 1
                open("%s.%s.inflight.%d" % (OUT, name, handle), "wb").write(datas[(name, handle)])
            elif err == 108:
                total["shutdown"] += 1
            else:
                sys.exit("%s: write %d failed with error %d during shutdown" % (name, handle, err))
    except (ConnectionResetError, socket.timeout) as e:
        print("..   [test_shutdown.sh]: %s: %s while reading replies" % (name, e))
    if len(seen) < 30:
        sys.exit("%s: only %d of 32 fully sent writes were answered before the server closed "
                 "(in-flight requests dropped at SIGTERM)" % (name, len(seen)))
print("..   [test_shutdown.sh]: writes on the wire at SIGTERM: %d acknowledged, %d ESHUTDOWN, of 64"
      % (total["ok"], total["shutdown"]))
for h in hs.values():
    try:
        h.shutdown()
    except nbd.Error:
        pass
EOF
stop_volgate "$PID2" none 10
pass "SIGTERM with 64 writes in flight: exit 0"
check_file() { # NAME PATH
    local n=$1 p=$2 f i cnt=0
    cmp -n $((4 * MiB)) "$TEST_TMP/expect.$n.flushed" "$p" || fail "$n: flushed data missing after shutdown"
    cmp <(cat "$TEST_TMP/expect.$n.fua") <(dd if="$p" bs=1M skip=4 count=1 status=none) || fail "$n: FUA data missing"
    for ((i = 0; i < 32; i++)); do
        f=$TEST_TMP/expect.$n.inflight.$i
        [[ -e $f ]] || continue
        cnt=$((cnt + 1))
        cmp "$f" <(dd if="$p" bs=1M skip=$((8 + i)) count=1 status=none) ||
            fail "$n: write $i was acknowledged before the exit but is not in the file"
    done
    pass "$n: flushed, FUA and all $cnt acknowledged in-flight writes are in the file"
}
check_file plain "$TEST_TMP/plain.img"
check_file direct "$DISK_TMP/direct.img"

# ------------------- 2b. SIGTERM in the middle of a stream of writes: no torn or lost acknowledged writes
S=$TEST_TMP/r.sock
truncate -s 64M "$TEST_TMP/race.img"
start_volgate --unix "$S" --export "race=file:$TEST_TMP/race.img"
SOCK=$S PID=$VG_PID IMG=$TEST_TMP/race.img OUT=$TEST_TMP/race "$SYSPY" - <<'EOF' || fail "SIGTERM racing a write stream"
import os, signal, socket, struct, sys, threading, time
import nbd_go
S, PID, IMG = os.environ["SOCK"], int(os.environ["PID"]), os.environ["IMG"]
MiB = 1 << 20
s = nbd_go.go(S, "race")
datas = [bytes([i + 1]) * MiB for i in range(56)]


def sender():
    try:
        for i, d in enumerate(datas):
            s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 1, i, 4 * MiB + i * MiB, MiB) + d)
            time.sleep(0.01)
    except OSError:
        pass  # the server closed while we were still sending


t = threading.Thread(target=sender)
t.start()
deadline = time.monotonic() + 10
while os.stat(IMG).st_blocks < 16 * MiB // 512:
    if time.monotonic() > deadline:
        sys.exit("writes did not start")
    time.sleep(0.005)
os.kill(PID, signal.SIGTERM)
t.join(20)
acked = set()
try:
    while True:
        hdr = s.recv(16, socket.MSG_WAITALL)
        if len(hdr) < 16:
            break
        magic, err, handle = struct.unpack(">IIQ", hdr)
        if magic != 0x67446698:
            sys.exit("bad reply magic 0x%x" % magic)
        if err == 0:
            acked.add(handle)
        elif err != 108:
            sys.exit("write %d failed with %d" % (handle, err))
except (ConnectionResetError, socket.timeout):
    pass
# wait for the process to be gone before reading the file
for _ in range(200):
    try:
        os.kill(PID, 0)
        st = open("/proc/%d/stat" % PID).read().split(")")[-1].split()[0]
        if st == "Z":
            break
    except (ProcessLookupError, FileNotFoundError):
        break
    time.sleep(0.05)
img = open(IMG, "rb").read()
torn = []
for i, d in enumerate(datas):
    slot = img[4 * MiB + i * MiB:5 * MiB + i * MiB]
    if slot == d:
        continue
    if i in acked:
        sys.exit("write %d was acknowledged but is not in the file" % i)
    if slot != bytes(MiB):
        torn.append(i)
if torn:
    sys.exit("writes %r are partially applied (torn) after a graceful shutdown" % torn)
print("..   [test_shutdown.sh]: SIGTERM mid-stream: %d of %d writes acknowledged, none torn or lost"
      % (len(acked), len(datas)))
EOF
stop_volgate "$VG_PID" none 10
pass "SIGTERM racing a stream of writes: exit 0, acknowledged writes present, nothing torn"

# ---------------------------------------- 3. SIGINT with an idle client connected
S=$TEST_TMP/c.sock
start_volgate --unix "$S" --export "m=memory:16M"
"$SYSPY" -c "
import nbd, time, sys
h = nbd.NBD(); h.connect_uri('nbd+unix:///m?socket=$S')
h.pwrite(b'x' * 4096, 0)
print('connected', flush=True)
time.sleep(30)
" >"$TEST_TMP/idle.out" 2>&1 &
IDLE=$!
BG_PIDS+=("$IDLE")
# and one client that connected but never finishes the handshake
"$SYSPY" -c "
import socket, time
s = socket.socket(socket.AF_UNIX); s.connect('$S'); s.recv(18, socket.MSG_WAITALL)
print('greeted', flush=True)
time.sleep(30)
" >"$TEST_TMP/idle2.out" 2>&1 &
IDLE2=$!
BG_PIDS+=("$IDLE2")
wait_for_line "$TEST_TMP/idle.out" connected "the idle client"
wait_for_line "$TEST_TMP/idle2.out" greeted "the handshake-idle client"
stop_volgate "$VG_PID" INT 5
pass "SIGINT with an idle client and a client idle in the handshake: exit 0 in ${VG_STOP_MS} ms"
kill "$IDLE" "$IDLE2" 2>/dev/null || true
wait "$IDLE" "$IDLE2" 2>/dev/null || true
BG_PIDS=()

# ---------------------------------------- 3b. SIGTERM while a client does not read its read replies
# 64 x 1 MiB reads are requested and the replies never read: the server cannot finish sending
# them, but it must still exit (bounded time), not hang forever on that client.
S=$TEST_TMP/e.sock
start_volgate --unix "$S" --export "m=memory:64M"
"$SYSPY" - "$S" >"$TEST_TMP/noread.out" 2>&1 <<'EOF' &
import socket, struct, sys, time
import nbd_go
s = nbd_go.go(sys.argv[1], "m", timeout=None)
s.sendall(b"".join(struct.pack(">IHHQQI", 0x25609513, 0, 0, i, i << 20, 1 << 20) for i in range(64)))
print("requested", flush=True)
time.sleep(60)
EOF
NOREAD=$!
BG_PIDS+=("$NOREAD")
wait_for_line "$TEST_TMP/noread.out" requested "the non-reading client"
sleep 0.3
stop_volgate "$VG_PID" TERM 15
pass "SIGTERM with a client that never reads its replies: exit 0 in ${VG_STOP_MS} ms"
kill "$NOREAD" 2>/dev/null || true
wait "$NOREAD" 2>/dev/null || true
BG_PIDS=()

# ---------------------------------------- 4. SIGTERM with a client stuck in the middle of a write
S=$TEST_TMP/d.sock
head -c 4M /dev/urandom >"$TEST_TMP/stuck.img"
cp "$TEST_TMP/stuck.img" "$TEST_TMP/stuck.orig"
start_volgate --unix "$S" --export "s=file:$TEST_TMP/stuck.img"
"$SYSPY" - "$S" >"$TEST_TMP/stuck.out" 2>&1 <<'EOF' &
import socket, struct, sys, time
import nbd_go
s = nbd_go.go(sys.argv[1], "s", timeout=None)
# WRITE of 1 MiB at offset 1 MiB, but only 100 KiB of the payload
s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 1, 7, 1 << 20, 1 << 20) + b"\xee" * 102400)
print("stuck", flush=True)
time.sleep(30)
EOF
STUCK=$!
BG_PIDS+=("$STUCK")
wait_for_line "$TEST_TMP/stuck.out" stuck "the stuck client"
sleep 0.2
stop_volgate "$VG_PID" TERM 5
pass "SIGTERM with a client stuck mid-payload: exit 0 in ${VG_STOP_MS} ms"
cmp "$TEST_TMP/stuck.img" "$TEST_TMP/stuck.orig" || fail "the half-sent write changed the file"
pass "half-sent write not applied"
kill "$STUCK" 2>/dev/null || true
wait "$STUCK" 2>/dev/null || true
BG_PIDS=()

# ------------------------- 5. restart on the same socket path, after a clean exit; a live one refused
S=$TEST_TMP/a.sock
start_volgate --unix "$S" --export "load=file:$TEST_TMP/load.img"
nbdsh -u "$(unix_uri load "$S")" -c "assert h.pread(1048576, 200 * 1048576) == open('$TEST_TMP/marker','rb').read()" ||
    fail "restarted server on the old socket path does not serve the old data"
# ... and after a crash (SIGKILL leaves the socket file behind)
kill -KILL "$VG_PID"
wait "$VG_PID" 2>/dev/null || true
_forget_pid "$VG_PID"
[[ -S $S ]] && info "socket file left behind by SIGKILL, as expected"
start_volgate --unix "$S" --export "load=file:$TEST_TMP/load.img"
nbdsh -u "$(unix_uri load "$S")" -c "assert h.pread(1048576, 200 * 1048576) == open('$TEST_TMP/marker','rb').read()" ||
    fail "server restarted over a stale socket does not serve"
pass "restart on the same socket path (after clean exit and after SIGKILL) serves the persisted data"
# ... but a socket a live server listens on is not taken over: a second server on it exits 2
# with one line, and the first one keeps its socket (the same inode) and serves on.
inode=$(stat -c %i "$S")
rc=0
timeout -k 2 10 "$VOLGATE" serve --unix "$S" --export "d=memory:1M" >"$TEST_TMP/second.out" 2>"$TEST_TMP/second.err" </dev/null || rc=$?
[[ $rc == 2 && $(wc -l <"$TEST_TMP/second.err") == 1 && ! -s $TEST_TMP/second.out ]] ||
    fail "a second server on a live socket: exit $rc, stdout '$(cat "$TEST_TMP/second.out")', stderr '$(cat "$TEST_TMP/second.err")'"
grep -q "$S: another server is listening there" "$TEST_TMP/second.err" || fail "the refusal does not say why: $(cat "$TEST_TMP/second.err")"
[[ $(stat -c %i "$S") == "$inode" ]] || fail "the second server replaced the live server's socket"
assert_alive
nbdsh -u "$(unix_uri load "$S")" -c "assert h.pread(1048576, 200 * 1048576) == open('$TEST_TMP/marker','rb').read()" ||
    fail "the first server no longer serves after a second one tried its socket"
stop_volgate
pass "a second server on a live socket: exit 2, '$(cat "$TEST_TMP/second.err")'; the first keeps serving"
