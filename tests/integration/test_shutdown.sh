#!/usr/bin/env bash
# Graceful shutdown, as the README promises it: every request in flight at the signal is
# answered, every acknowledged write is in the volume, and the exit does not wait for the 10 s
# cut-off unless a client does not read its replies.
#  1. SIGTERM while fio hammers two exports: exit 0 without the cut-off; flushed data intact.
#  2. Requests sent whole before SIGTERM (writes, reads, a flush; some not yet read by the
#     server, held back by the connection's in-flight bound): each answered once, with success;
#     the writes in the plain and direct files.
#  2b. SIGTERM in the middle of a stream of writes: those sent before it acknowledged and in the
#     file, none torn, none lost.
#  3. SIGINT with idle clients (one stuck in the handshake): exit without the cut-off.
#  3b. SIGTERM with a client that never reads its replies: cut off after 10 s, exit 0.
#  4. SIGTERM with a client stuck mid-payload: exit without the cut-off, the write not applied.
#  5. A restart on the same socket path after a clean exit and after SIGKILL; a second server on
#     the socket of a live one is refused (exit 2, one line) and the live one serves on.
# Waits are on conditions with deadlines; no assertion depends on how fast a loaded machine is.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_volgate
require_tool fio
need_disk_tmpdir
"$SYSPY" -c 'import nbd' 2>/dev/null || fail "python3-libnbd is not installed for $SYSPY"

MiB=1048576

# The line the server logs when it cuts off clients that still hold replies at the deadline.
CUT_OFF="clients still connected after 10 s"

# ---------------------------------------------------------------- 1. SIGTERM under fio load
S=$TEST_TMP/a.sock
CTL=$TEST_TMP/a.ctl
truncate -s 256M "$TEST_TMP/load.img"
start_volgate --unix "$S" --control "$CTL" --export "load=file:$TEST_TMP/load.img" --export "mem=memory:256M"
PID1=$VG_PID
# a marker written and flushed before the load starts, outside fio's range (fio: first 128 MiB)
head -c $MiB /dev/urandom >"$TEST_TMP/marker"
nbdsh -u "$(unix_uri load "$S")" -c "h.pwrite(open('$TEST_TMP/marker','rb').read(), 200 * 1048576); h.flush()"
for e in load mem; do
    (cd "$TEST_TMP" && exec fio --name=load --ioengine=nbd --uri="$(unix_uri "$e" "$S")" --rw=randwrite --bs=4k --iodepth=32 \
        --size=128M --time_based --runtime=60 --output="$TEST_TMP/fio.$e.out") >/dev/null 2>&1 &
    BG_PIDS+=($!)
done
# wait until both fio jobs really write: 2000 writes on each export (the control API counts them)
CTL=$CTL "$SYSPY" - <<'EOF' || fail "fio did not get going"
import os, sys, time
from gateway_requests import export_requests

deadline = time.monotonic() + 30
writes = {}
while True:
    try:
        writes = {name: r["write"] for name, r in export_requests(os.environ["CTL"]).items()}
    except OSError:
        pass  # the control API not up yet: ask again
    if writes.get("load", 0) >= 2000 and writes.get("mem", 0) >= 2000:
        break
    if time.monotonic() > deadline:
        sys.exit("fio did not reach 2000 writes per export within 30 s: %r" % writes)
    time.sleep(0.05)
EOF
assert_alive "$PID1"
stop_volgate "$PID1" TERM 30
refute_grep "SIGTERM under fio load waited for the cut-off" "$CUT_OFF" "$VG_ERR"
pass "SIGTERM under fio load (2 connections, depth 32): exit 0 in ${VG_STOP_MS} ms, no cut-off"
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

# ------------------------------------- 2. every request in flight at SIGTERM answered and applied
# One connection over the unix socket, the other over TCP: the end of a client's stream is found
# on either kind of socket.
S=$TEST_TMP/b.sock
PORT=$(free_tcp_port)
truncate -s 160M "$TEST_TMP/plain.img" "$DISK_TMP/direct.img"
start_volgate --unix "$S" --listen "127.0.0.1:$PORT" \
    --export "plain=file:$TEST_TMP/plain.img" --export "direct=file:$DISK_TMP/direct.img,direct"
SOCK=$S PORT=$PORT PID=$VG_PID PLAIN=$TEST_TMP/plain.img DIRECT=$DISK_TMP/direct.img "$SYSPY" - <<'EOF' ||
import os, random, signal, struct, sys, threading, time
import nbd
import nbd_go
S, PID = os.environ["SOCK"], int(os.environ["PID"])
IMGS = {"plain": os.environ["PLAIN"], "direct": os.environ["DIRECT"]}
ADDRESS = {"plain": S, "direct": ("127.0.0.1", int(os.environ["PORT"]))}
URI = {"plain": "nbd+unix:///plain?socket=%s" % S, "direct": "nbd://127.0.0.1:%s/direct" % os.environ["PORT"]}
MiB = 1 << 20
T = "..   [test_shutdown.sh]:"
RND = random.Random()  # data unique enough to catch a misplaced write, cheaper than urandom


def server_state(pid):
    """The states of the threads of PID ({'Z'} once it exited), or None once it is reaped."""
    try:
        tids = os.listdir("/proc/%d/task" % pid)
        return {open("/proc/%d/task/%s/stat" % (pid, t)).read().rsplit(")", 1)[1].split()[0] for t in tids}
    except (FileNotFoundError, ProcessLookupError):
        return None


def wait_until(cond, seconds, what):
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            sys.exit("%s: not within %d s" % (what, seconds))
        time.sleep(0.005)


expect = {name: {} for name in IMGS}  # offset -> bytes that must be in the file afterwards
hs = {}
for name in IMGS:
    h = nbd.NBD()
    h.connect_uri(URI[name])
    d = RND.randbytes(4 * MiB)  # acknowledged and flushed before the signal
    h.pwrite(d, 0)
    h.flush()
    expect[name][0] = d
    d = RND.randbytes(MiB)  # an acknowledged FUA write
    h.pwrite(d, 4 * MiB, nbd.CMD_FLAG_FUA)
    expect[name][4 * MiB] = d
    hs[name] = h

# On a raw connection per export (every request really on the wire, none queued in a client
# library): 32 x 1 MiB writes, 96 x 1 MiB reads whose replies the client does not read yet, then
# 32 x 4 KiB writes and a FLUSH. The socket takes only a few of the read replies, so more than the
# connection's bound of 64 MiB stays in flight and the server stops reading requests before the
# last reads and the 4 KiB writes: these are sent whole but not yet read when SIGTERM comes, as
# behind any deep queue. Every request was sent before SIGTERM: each must be answered once, with
# success, and each write be in the file afterwards.
READ_AT = 64 * MiB
socks, sent, stream = {}, {}, {}
for name in IMGS:
    socks[name] = nbd_go.go(ADDRESS[name], name)
    sent[name] = {}
    parts = []
    for i in range(32):
        d = RND.randbytes(MiB)
        sent[name][i] = ("write", 8 * MiB + i * MiB, d)
        parts.append(nbd_go.request(nbd_go.NBD_CMD_WRITE, i, 8 * MiB + i * MiB, MiB) + d)
    for i in range(100, 196):
        sent[name][i] = ("read", READ_AT + (i - 100) * MiB, MiB)
        parts.append(nbd_go.request(nbd_go.NBD_CMD_READ, i, READ_AT + (i - 100) * MiB, MiB))
    tail = []
    for i in range(32, 64):
        d = RND.randbytes(4096)
        off = 48 * MiB + (i - 32) * 4096
        sent[name][i] = ("write", off, d)
        tail.append(nbd_go.request(nbd_go.NBD_CMD_WRITE, i, off, 4096) + d)
    sent[name][64] = ("flush",)
    tail.append(nbd_go.request(3, 64, 0, 0))  # NBD_CMD_FLUSH
    stream[name] = b"".join(parts + tail)
errors = []


def send(s, data):
    try:
        s.sendall(data)
    except OSError as e:
        errors.append(e)


threads = [threading.Thread(target=send, args=(socks[n], stream[n])) for n in IMGS]
for t in threads:
    t.start()
for t in threads:
    t.join()
if errors:
    sys.exit("sending the requests failed: %r" % errors)
os.kill(PID, signal.SIGTERM)
failed = []
for name, s in socks.items():
    answers = {}
    while True:
        try:
            head = nbd_go.recv_exact(s, 16)
        except ConnectionResetError:  # closed with requests still unread
            head = b""
        if not head:
            break
        if len(head) < 16:
            sys.exit("%s: the server closed in the middle of a reply" % name)
        magic, err, handle = struct.unpack(">IIQ", head)
        if magic != nbd_go.NBD_SIMPLE_REPLY_MAGIC or handle not in sent[name] or handle in answers:
            sys.exit("%s: bad reply: magic 0x%x handle %d (answered before: %s)"
                     % (name, magic, handle, handle in answers))
        answers[handle] = err
        if err == 0 and sent[name][handle][0] == "read":
            data = nbd_go.recv_exact(s, MiB)
            if data != bytes(MiB):
                sys.exit("%s: read %d returned wrong data" % (name, handle))
    missing = sorted(set(sent[name]) - set(answers))
    errs = {h: e for h, e in answers.items() if e}
    print("%s %s: %d of %d requests in flight at SIGTERM answered, %d with an error"
          % (T, name, len(answers), len(sent[name]), len(errs)))
    if missing:
        failed.append("%s: requests %s were in flight at SIGTERM and never answered" % (name, missing))
    if errs:
        failed.append("%s: requests in flight at SIGTERM answered with errors %r" % (name, errs))
    for h, w in sent[name].items():
        if w[0] == "write" and answers.get(h) == 0:
            expect[name][w[1]] = w[2]
for h in hs.values():
    try:
        h.shutdown()
    except nbd.Error:
        pass
if failed:
    sys.exit("; ".join(failed))
# what was acknowledged is in the files once the server is gone
wait_until(lambda: server_state(PID) in (None, {"Z"}), 30, "the server exiting after SIGTERM")
for name, path in IMGS.items():
    with open(path, "rb") as f:
        for off, d in sorted(expect[name].items()):
            f.seek(off)
            if f.read(len(d)) != d:
                sys.exit("%s: %d bytes at %d were acknowledged before the exit but are not in the file"
                         % (name, len(d), off))
    print("%s %s: flushed, FUA and all %d acknowledged in-flight writes are in the file"
          % (T, name, len(expect[name]) - 2))
EOF
    fail "requests in flight at SIGTERM"
stop_volgate "$VG_PID" none 30
refute_grep "the requests in flight waited for the cut-off" "$CUT_OFF" "$VG_ERR"
pass "SIGTERM with 161 requests in flight per connection (unix and TCP, some unread): all answered, all writes in the files, exit 0"

# ------------------- 2b. SIGTERM in the middle of a stream of writes: those sent before it acknowledged
S=$TEST_TMP/r.sock
truncate -s 64M "$TEST_TMP/race.img"
start_volgate --unix "$S" --export "race=file:$TEST_TMP/race.img"
SOCK=$S PID=$VG_PID IMG=$TEST_TMP/race.img "$SYSPY" - <<'EOF' || fail "SIGTERM racing a write stream"
import os, signal, struct, sys, threading, time
import nbd_go
S, PID, IMG = os.environ["SOCK"], int(os.environ["PID"]), os.environ["IMG"]
MiB = 1 << 20
s = nbd_go.go(S, "race")
datas = [bytes([i + 1]) * MiB for i in range(56)]
# Which writes were wholly sent before SIGTERM: a write counts once its sendall returned (all of
# it is then in the server's socket) and the count was taken before the signal was sent.
lock = threading.Lock()
sent_whole = 0
sent_before_signal = None


def sender():
    global sent_whole
    try:
        for i, d in enumerate(datas):
            s.sendall(nbd_go.request(nbd_go.NBD_CMD_WRITE, i, 4 * MiB + i * MiB, MiB) + d)
            with lock:
                sent_whole += 1
            time.sleep(0.01)
    except OSError:
        pass  # the server stopped reading (EPIPE) while we were still sending


t = threading.Thread(target=sender)
t.start()
deadline = time.monotonic() + 20
while os.stat(IMG).st_blocks < 16 * MiB // 512:
    if time.monotonic() > deadline:
        sys.exit("writes did not start")
    time.sleep(0.005)
with lock:
    sent_before_signal = sent_whole
    os.kill(PID, signal.SIGTERM)
t.join(30)
answers = {}
while True:
    try:
        head = nbd_go.recv_exact(s, 16)
    except ConnectionResetError:  # closed with a partial request unread
        head = b""
    if len(head) < 16:
        break
    magic, err, handle = struct.unpack(">IIQ", head)
    if magic != nbd_go.NBD_SIMPLE_REPLY_MAGIC or handle >= len(datas) or handle in answers:
        sys.exit("bad reply: magic 0x%x handle %d (answered before: %s)" % (magic, handle, handle in answers))
    answers[handle] = err
unanswered = [i for i in range(sent_before_signal) if i not in answers]
if unanswered:
    sys.exit("writes %r were sent whole before SIGTERM and never answered" % unanswered)
refused = {i: e for i, e in answers.items() if e and (i < sent_before_signal or e != 108)}
if refused:
    sys.exit("writes answered with errors %r (ESHUTDOWN is allowed only for writes sent after SIGTERM)" % refused)
# the file, once the process is gone
deadline = time.monotonic() + 30
while True:
    try:
        st = open("/proc/%d/stat" % PID).read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):  # reaped before the open, or between open and read
        break
    if st == "Z":
        break
    if time.monotonic() > deadline:
        sys.exit("the server did not exit within 30 s of SIGTERM")
    time.sleep(0.02)
img = open(IMG, "rb").read()
for i, d in enumerate(datas):
    slot = img[4 * MiB + i * MiB:5 * MiB + i * MiB]
    if answers.get(i) == 0:
        if slot != d:
            sys.exit("write %d was acknowledged but is not in the file" % i)
    elif slot != bytes(MiB):
        sys.exit("write %d was not acknowledged but is %s in the file"
                 % (i, "torn" if slot.strip(bytes([i + 1])) else "applied"))
print("..   [test_shutdown.sh]: SIGTERM mid-stream: %d writes sent whole before it, %d acknowledged of %d, "
      "none lost, torn or applied unanswered" % (sent_before_signal, sum(e == 0 for e in answers.values()), len(datas)))
EOF
stop_volgate "$VG_PID" none 30
pass "SIGTERM racing a stream of writes: exit 0, writes sent before it acknowledged and present, nothing torn"

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
stop_volgate "$VG_PID" INT 30
refute_grep "SIGINT with idle clients waited for the cut-off" "$CUT_OFF" "$VG_ERR"
pass "SIGINT with an idle client and a client idle in the handshake: exit 0 in ${VG_STOP_MS} ms, no cut-off"
kill "$IDLE" "$IDLE2" 2>/dev/null || true
wait "$IDLE" "$IDLE2" 2>/dev/null || true
BG_PIDS=()

# ---------------------------------------- 3b. SIGTERM while a client does not read its read replies
# 64 x 1 MiB reads are requested and the replies never read: the server cannot finish sending
# them, but it must still exit (bounded time), not hang forever on that client.
S=$TEST_TMP/e.sock
start_volgate --unix "$S" --export "m=memory:64M"
"$SYSPY" - "$S" >"$TEST_TMP/noread.out" 2>&1 <<'EOF' &
import fcntl, socket, struct, sys, termios, time
import nbd_go
s = nbd_go.go(sys.argv[1], "m", timeout=None)
s.sendall(b"".join(struct.pack(">IHHQQI", 0x25609513, 0, 0, i, i << 20, 1 << 20) for i in range(64)))
# replies have begun to arrive: the server read the requests and is now stuck sending
while struct.unpack("i", fcntl.ioctl(s.fileno(), termios.FIONREAD, b"\0" * 4))[0] == 0:
    time.sleep(0.005)
print("requested", flush=True)
time.sleep(60)
EOF
NOREAD=$!
BG_PIDS+=("$NOREAD")
wait_for_line "$TEST_TMP/noread.out" requested "the non-reading client"
stop_volgate "$VG_PID" TERM 40
assert_eq "$(grep -c "$CUT_OFF" "$VG_ERR")" 1 "cut-off lines in the log"
pass "SIGTERM with a client that never reads its replies: cut off after 10 s, exit 0 in ${VG_STOP_MS} ms"
kill "$NOREAD" 2>/dev/null || true
wait "$NOREAD" 2>/dev/null || true
BG_PIDS=()

# ---------------------------------------- 4. SIGTERM with a client stuck in the middle of a write
S=$TEST_TMP/d.sock
head -c 4M /dev/urandom >"$TEST_TMP/stuck.img"
cp "$TEST_TMP/stuck.img" "$TEST_TMP/stuck.orig"
start_volgate --unix "$S" --export "s=file:$TEST_TMP/stuck.img"
"$SYSPY" - "$S" >"$TEST_TMP/stuck.out" 2>&1 <<'EOF' &
import fcntl, socket, struct, sys, termios, time
import nbd_go
s = nbd_go.go(sys.argv[1], "s", timeout=None)
# WRITE of 1 MiB at offset 1 MiB, but only 100 KiB of the payload
s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 1, 7, 1 << 20, 1 << 20) + b"\xee" * 102400)
# the server has read all of it (nothing left in our socket's queue): it waits for the rest
while struct.unpack("i", fcntl.ioctl(s.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0] != 0:
    time.sleep(0.005)
print("stuck", flush=True)
time.sleep(30)
EOF
STUCK=$!
BG_PIDS+=("$STUCK")
wait_for_line "$TEST_TMP/stuck.out" stuck "the stuck client"
stop_volgate "$VG_PID" TERM 30
refute_grep "SIGTERM with a client stuck mid-payload waited for the cut-off" "$CUT_OFF" "$VG_ERR"
pass "SIGTERM with a client stuck mid-payload: exit 0 in ${VG_STOP_MS} ms, no cut-off"
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
