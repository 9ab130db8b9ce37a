#!/usr/bin/env bash
# What hostile or broken clients can make `volgate serve` hold is bounded, and normal clients
# are still served meanwhile:
#  - memory: clients that pipeline READs and never read the replies take the server's RSS up by
#    about --max-buffer-bytes, not by 64 MiB per connection; with a budget far smaller than what
#    clients keep in flight, they all still make progress (no deadlock) and get the right data;
#  - in flight: one connection's replies come as requests complete (READs sent behind a slow
#    FLUSH are answered before it), and it holds at most 256 requests and 64 MiB of replies:
#    past that it stops reading (counted from outside: completed READs, from the control API,
#    minus the replies that reached the client);
#  - connections: past --max-connections a new one is closed at once, with one log line for a
#    burst, and the slot comes back when a connection closes;
#  - handshakes: a client that connects and says nothing (or stops halfway) is closed after
#    --handshake-timeout, with one log line naming it; an idle client past the handshake is not;
#  - descriptors: with RLIMIT_NOFILE spent, accepting pauses instead of spinning (little CPU,
#    a few log lines), and resumes once descriptors are free; the soft limit is raised to the
#    hard one at start.
# All traffic stays on unix sockets and 127.0.0.1.
# Usage: test_server_limits.sh [CASE...]   CASE: memory tight inflight connections handshake nofile emfile
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_volgate

S=$TEST_TMP/s.sock

# ---------------------------------------------------------------------------------------------
case_memory() {
    info "memory: 8 connections pipeline 64 x 1 MiB READs each and never read a reply"
    start_volgate --unix "$S" --max-buffer-bytes 64M --export "d=memory:64M"
    # ThreadSanitizer's shadow memory grows with what the program touches, several times over:
    # the traffic still runs (for races), but RSS says nothing there.
    local rss_limit_mib=200
    if [[ $(ldd "$VOLGATE" 2>/dev/null) == *libtsan* ]]; then
        info "ThreadSanitizer build: RSS is not checked"
        rss_limit_mib=0
    fi
    "$SYSPY" - "$S" "$VG_PID" "$rss_limit_mib" <<'PY' || fail "the buffer budget did not bound the server's memory (see above)"
import os, sys, time
import nbd_go
from nbd_go import request, simple_reply as reply, NBD_CMD_READ as READ, NBD_CMD_WRITE as WRITE

sock, pid, rss_limit_mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
MiB = 1 << 20

def status_kib(key):
    for line in open("/proc/%d/status" % pid):
        if line.startswith(key + ":"):
            return int(line.split()[1])

base = status_kib("VmRSS")
hostile = []
for i in range(8):
    s = nbd_go.go(sock, "d")
    s.sendall(b"".join(request(READ, i * 1000 + j, j * MiB, MiB) for j in range(64)))
    hostile.append(s)
# Wait until the server stops growing (it has read all it is going to read).
last, still_since, deadline = -1, time.monotonic(), time.monotonic() + 10
while time.monotonic() < deadline:
    rss = status_kib("VmRSS")
    if rss != last:
        last, still_since = rss, time.monotonic()
    elif time.monotonic() - still_since > 1.5:
        break
    time.sleep(0.1)
grown = (status_kib("VmHWM") - base) // 1024
print("..   server RSS grew by %d MiB with 8 hostile connections (512 MiB of READs asked for)" % grown)

# A normal client is served while the budget is spent: a write read back, then one READ of the
# largest size (it holds nothing, so it gets its request past the budget).
t0 = time.monotonic()
c = nbd_go.go(sock, "d", timeout=15)
data = os.urandom(MiB)
c.sendall(request(WRITE, 1, 3 * MiB + 512, MiB) + data)
reply(c, 1)
c.sendall(request(READ, 2, 3 * MiB + 512, MiB))
assert reply(c, 2, MiB) == data, "read back differs"
c.sendall(request(READ, 3, 0, 32 * MiB))
reply(c, 3, 32 * MiB)
print("..   a normal client wrote, read back and read 32 MiB in %.2f s meanwhile" % (time.monotonic() - t0))
c.close()
for s in hostile:
    s.close()
if rss_limit_mib and grown > rss_limit_mib:
    print("FAIL: RSS grew by %d MiB, more than the 64 MiB budget allows (+ one 1 MiB request per "
          "connection, + pool and slack: %d)" % (grown, rss_limit_mib))
    sys.exit(1)
PY
    pass "memory stays bounded by --max-buffer-bytes with clients that never read, and a normal client is served"
    assert_alive
    stop_volgate
}

# ---------------------------------------------------------------------------------------------
case_tight() {
    info "memory: an 8 MiB budget under 6 connections that each pipeline 32 MiB of WRITEs, then of READs"
    start_volgate --unix "$S" --max-buffer-bytes 8M --export "d=memory:192M"
    "$SYSPY" - "$S" <<'PY' || fail "with a budget far below what clients keep in flight (see above)"
import struct, sys, threading, time
import nbd_go
from nbd_go import request, simple_reply, NBD_CMD_READ as READ, NBD_CMD_WRITE as WRITE

sock = sys.argv[1]
MiB = 1 << 20
errors = []

def client(n):
    try:
        c = nbd_go.go(sock, "d", timeout=60)
        base = n * 32 * MiB
        data = [struct.pack(">QQ", n, i) * (MiB // 16) for i in range(32)]  # each MiB its own
        # The server stops reading while the budget is spent: send from another thread.
        writes = b"".join(request(WRITE, i, base + i * MiB, MiB) + data[i] for i in range(32))
        sender = threading.Thread(target=c.sendall, args=(writes,))
        sender.start()
        for i in range(32):
            simple_reply(c, i)
        sender.join()
        c.sendall(b"".join(request(READ, 100 + i, base + i * MiB, MiB) for i in range(32)))
        time.sleep(0.5)  # let every connection pile up replies: the budget is spent now
        for i in range(32):
            if simple_reply(c, 100 + i, MiB) != data[i]:
                errors.append("connection %d: read %d differs" % (n, i))
        c.close()
    except Exception as e:  # noqa: BLE001 - reported below
        errors.append("connection %d: %r" % (n, e))

t0 = time.monotonic()
threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
for t in threads:
    t.start()
for t in threads:
    t.join(90)
if any(t.is_alive() for t in threads):
    errors.append("clients still waiting after 90 s: a deadlock")
if errors:
    print("\n".join(errors))
    sys.exit(1)
print("..   6 connections x (32 x 1 MiB WRITEs + READs) through an 8 MiB budget in %.1f s" % (time.monotonic() - t0))
PY
    pass "an 8 MiB budget under 6 connections with 32 MiB in flight each: every request served, data intact"
    assert_alive
    stop_volgate
}

# ---------------------------------------------------------------------------------------------
case_inflight() {
    info "in flight: one connection's replies come out of order; it holds at most 256 requests and 64 MiB"
    need_disk_tmpdir
    truncate -s 64M "$DISK_TMP/ooo.img"
    start_volgate --unix "$S" --control "$TEST_TMP/control.sock" --export "m=memory:128M" \
        --export "f=file:$DISK_TMP/ooo.img"
    "$SYSPY" - "$S" "$TEST_TMP/control.sock" <<'PY' || fail "requests in flight on one connection (see above)"
import array, fcntl, json, os, socket, struct, sys, termios, time
import nbd_go
from nbd_go import request, simple_reply, recv_exact, NBD_CMD_READ as READ, NBD_CMD_WRITE as WRITE
from gateway_requests import export_requests

sock, control = sys.argv[1:3]
MiB = 1 << 20
FLUSH = 3

# Out of order: a FLUSH of 32 MiB written just before, to a file on a disk, takes the disk's
# time (an fdatasync in io_uring's workers); the small READs sent right behind it are page
# cache hits served at once, so their replies overtake the FLUSH's. A server that answers in
# the order of the requests never shows that. The machine may stall the server at the wrong
# moment, so it gets three tries.
c = nbd_go.go(sock, "f")
orders = []
for attempt in range(3):
    data = os.urandom(32 * MiB)
    c.sendall(request(WRITE, 1, 0, 32 * MiB) + data)
    simple_reply(c, 1)
    c.sendall(request(FLUSH, 100, 0, 0) + b"".join(request(READ, 200 + i, i * 4096, 4096) for i in range(8)))
    order, reads = [], {}
    for _ in range(9):
        _magic, error, handle = struct.unpack(">IIQ", recv_exact(c, 16))
        assert error == 0, "request %d failed: error %d" % (handle, error)
        if handle != 100:
            reads[handle] = recv_exact(c, 4096)
        order.append(handle)
    for i in range(8):
        assert reads[200 + i] == data[i * 4096:(i + 1) * 4096], "read %d returned wrong data" % i
    orders.append(order.index(100))
    if order[0] != 100:
        break
print("..   replies before the FLUSH's, try by try: %s" % orders)
assert orders[-1] > 0, "the FLUSH was answered before every READ sent after it, three times"
c.close()


def reads_completed():
    """The export's completed READs, from the gateway's control API."""
    return export_requests(control, "m")["read"]


def settled(before):
    """Completed READs once the server has stopped reading requests (the count holds still)."""
    last, since, deadline = -1, time.monotonic(), time.monotonic() + 20
    while time.monotonic() < deadline:
        n = reads_completed() - before
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since > 0.7:
            return n
        time.sleep(0.05)
    raise AssertionError("the server kept reading requests for 20 s")


def held(count, length):
    """Sends COUNT READs of LENGTH on a new connection and reads no reply. Returns how many the
    server completed before it stopped reading, and how many replies reached the client whole."""
    before = reads_completed()
    s = nbd_go.go(sock, "m")
    s.sendall(b"".join(request(READ, i, i * length % (128 * MiB - length), length) for i in range(count)))
    completed = settled(before)
    queued = array.array("i", [0])
    fcntl.ioctl(s, termios.FIONREAD, queued)
    delivered = queued[0] // (16 + length)
    s.close()
    print("..   %d READs of %d bytes: %d completed, %d of them delivered" % (count, length, completed, delivered))
    return completed, delivered


# The server stops reading once the requests it holds (completed or not, replies not yet sent
# whole) reach a bound. Replies the client has whole left the server, except those of a batch
# still being written (at most 64), which it counts until the batch is done: so what it held
# when it stopped is completed - delivered, or up to 64 more.
# Requests: 4 KiB READs, far more than the socket takes (it holds about 2000 replies).
completed, delivered = held(4000, 4096)
assert 256 - 64 <= completed - delivered <= 256, \
    "one connection held %d READs of 4 KiB (to %d), expected 256 at most" % (completed - delivered, completed - delivered + 64)
# Bytes: 1 MiB READs, 64 MiB of them.
completed, delivered = held(100, MiB)
assert completed >= 64 and completed - delivered <= 64, \
    "one connection held %d READs of 1 MiB (%d completed), expected 64 (64 MiB)" % (completed - delivered, completed)
PY
    pass "one connection: READs sent behind a FLUSH are answered before it; at most 256 requests and 64 MiB in flight"
    assert_alive
    stop_volgate
}

# ---------------------------------------------------------------------------------------------
case_connections() {
    info "connections: --max-connections 4"
    start_volgate --unix "$S" --max-connections 4 --export "d=memory:1M"
    "$SYSPY" - "$S" <<'PY' || fail "--max-connections (see above)"
import socket, struct, sys, time
import nbd_go

sock = sys.argv[1]

def read_4k(s, handle):
    s.sendall(nbd_go.request(nbd_go.NBD_CMD_READ, handle, 0, 4096))
    nbd_go.simple_reply(s, handle, 4096)

def closed_without_greeting(timeout=5):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(sock)  # the kernel completes it; the server closes it right after accept
    try:
        got = s.recv(18)
    except (socket.timeout, ConnectionResetError):
        got = None
    s.close()
    return got == b""

held = [nbd_go.go(sock, "d", timeout=5) for _ in range(4)]
for i, s in enumerate(held):
    read_4k(s, i)
assert closed_without_greeting(), "a 5th connection was not closed at once"
# a burst of refused connections: one log line for all of them (checked by the caller)
for _ in range(20):
    assert closed_without_greeting(), "a connection over the limit was served"
for i, s in enumerate(held):
    read_4k(s, 10 + i)  # the 4 admitted connections are unaffected
held.pop().close()
deadline = time.monotonic() + 5
while True:  # the server notices the close and gives the slot back
    try:
        s = nbd_go.go(sock, "d", timeout=2)
        read_4k(s, 99)
        held.append(s)
        break
    except (AssertionError, OSError, struct.error, SystemExit):
        if time.monotonic() > deadline:
            raise AssertionError("no connection admitted after one of the 4 closed")
        time.sleep(0.1)
PY
    n=$(grep -c 'max-connections' "$VG_ERR" || true)
    ((n >= 1 && n <= 2)) || fail "expected 1 or 2 log lines for 21 refused connections within a second, got $n: $(grep 'max-connections' "$VG_ERR" | head -5)"
    grep -q 'unix#[0-9]* pid [0-9]* uid 0: closed at once: 4 connections are open' "$VG_ERR" ||
        fail "the refusal does not name the peer and the limit: $(grep 'max-connections' "$VG_ERR" | head -2)"
    pass "--max-connections 4: the 5th and 20 more closed at once, $n log line(s); the 4 served; a slot comes back"
    assert_alive
    stop_volgate
}

# ---------------------------------------------------------------------------------------------
case_handshake() {
    info "handshake: --handshake-timeout 1, silent clients on unix and TCP"
    PORT=$(free_tcp_port)
    start_volgate --unix "$S" --listen "127.0.0.1:$PORT" --handshake-timeout 1 --export "d=memory:1M"
    "$SYSPY" - "$S" "$PORT" >"$TEST_TMP/handshake.out" <<'PY' || fail "handshake timeout (see above): $(cat "$TEST_TMP/handshake.out")"
import socket, struct, sys, time
import nbd_go

sock, port = sys.argv[1], int(sys.argv[2])

def closed_after(s, limit=6):
    t0 = time.monotonic()
    s.settimeout(limit)
    try:
        while s.recv(4096):
            pass
    except socket.timeout:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - t0

t0 = time.monotonic()
silent = socket.socket(socket.AF_UNIX)
silent.connect(sock)                      # says nothing at all
halfway = socket.socket(socket.AF_UNIX)
halfway.connect(sock)
halfway.recv(18, socket.MSG_WAITALL)
halfway.sendall(struct.pack(">I", 3))     # client flags, then no option
tcp = socket.create_connection(("127.0.0.1", port))
print("tcp-port %d" % tcp.getsockname()[1], flush=True)
idle = nbd_go.go(sock, "d")               # finishes the handshake, then idles past the timeout
for name, s in (("silent", silent), ("halfway", halfway), ("tcp", tcp)):
    took = closed_after(s)
    assert took is not None, "%s client still connected 6 s after the handshake timeout of 1 s" % name
    total = time.monotonic() - t0
    assert 0.8 <= total <= 4, "%s client closed %.2f s after connecting, expected about 1 s" % (name, total)
    print("%s closed after %.2f s" % (name, total), flush=True)
time.sleep(max(0, 2.5 - (time.monotonic() - t0)))
idle.sendall(nbd_go.request(nbd_go.NBD_CMD_READ, 7, 0, 512))
nbd_go.simple_reply(idle, 7, 512)  # raises if the idle client in transmission was cut
print("idle client served after 2.5 s", flush=True)
PY
    tcp_port=$(awk '/^tcp-port/ {print $2}' "$TEST_TMP/handshake.out")
    n=$(grep -c 'no handshake within 1 s' "$VG_ERR" || true)
    [[ $n == 3 ]] || fail "expected 3 handshake timeout lines (silent, halfway, tcp), got $n: $(grep 'handshake' "$VG_ERR")"
    grep -q "tcp#[0-9]* 127.0.0.1:$tcp_port: no handshake within 1 s, closing the connection" "$VG_ERR" ||
        fail "the TCP timeout line does not name the peer 127.0.0.1:$tcp_port: $(grep 'handshake' "$VG_ERR")"
    grep -q "unix#[0-9]* pid [0-9]* uid 0: no handshake within 1 s" "$VG_ERR" ||
        fail "the unix timeout line does not name the peer: $(grep 'handshake' "$VG_ERR")"
    pass "silent and half-done handshakes closed after ~1 s ($(grep -c closed "$TEST_TMP/handshake.out") clients), one line each naming the peer; an idle client in transmission is kept"
    assert_alive
    stop_volgate
}

# ---------------------------------------------------------------------------------------------
case_nofile() {
    info "descriptors: the soft RLIMIT_NOFILE is raised to the hard one at start"
    old_soft=$(ulimit -Sn)
    hard=$(ulimit -Hn)
    ulimit -Sn 256
    start_volgate --unix "$S" --export "d=memory:1M"
    ulimit -Sn "$old_soft"
    read -r soft_now hard_now < <(awk '/^Max open files/ {print $4, $5}' "/proc/$VG_PID/limits")
    [[ $soft_now == "$hard_now" && $hard_now == "$hard" ]] ||
        fail "started with soft limit 256 and hard $hard: the server runs with soft $soft_now, hard $hard_now"
    pass "started under a soft limit of 256 open files, the server raised it to the hard limit ($hard)"
    stop_volgate
}

# ---------------------------------------------------------------------------------------------
case_emfile() {
    info "descriptors: with RLIMIT_NOFILE spent, accepting pauses instead of spinning"
    start_volgate --unix "$S" --export "d=memory:1M"
    fds=$(ls "/proc/$VG_PID/fd" | wc -l)
    limit=$((fds + 6))
    prlimit --pid "$VG_PID" --nofile="$limit:$limit"
    lines_before=$(wc -l <"$VG_ERR")
    "$SYSPY" - "$S" "$VG_PID" >"$TEST_TMP/emfile.out" <<'PY' || fail "EMFILE (see above): $(cat "$TEST_TMP/emfile.out")"
import socket, struct, sys, time
import nbd_go

sock, pid = sys.argv[1], int(sys.argv[2])

def ticks():
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])  # utime + stime

flood = []
for _ in range(40):  # more than the server has descriptors for; the backlog holds the rest
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    flood.append(s)
time.sleep(0.5)
t0 = ticks()
time.sleep(2)
used = ticks() - t0
print("cpu-ticks %d" % used, flush=True)
for s in flood:
    s.close()
# Descriptors are free again (the server closes the accepted ones as their clients went away):
# a normal client is served within a few seconds.
deadline = time.monotonic() + 8
while True:
    try:
        c = nbd_go.go(sock, "d", timeout=3)
        c.sendall(nbd_go.request(nbd_go.NBD_CMD_READ, 1, 0, 4096))
        nbd_go.simple_reply(c, 1, 4096)
        print("served-again", flush=True)
        break
    except (AssertionError, OSError, struct.error, SystemExit):
        if time.monotonic() > deadline:
            print("not served within 8 s after the flood closed", flush=True)
            sys.exit(1)
        time.sleep(0.2)
PY
    ticks=$(awk '/^cpu-ticks/ {print $2}' "$TEST_TMP/emfile.out")
    hz=$(getconf CLK_TCK)
    failed_lines=$(tail -n +"$((lines_before + 1))" "$VG_ERR" | grep -c 'accepting on' || true)
    info "over 2 s with descriptors spent: $ticks CPU ticks (of $((2 * hz)) a core), $failed_lines 'accepting on ... failed' lines"
    ((ticks * 100 <= 2 * hz * 10)) || fail "the server used $ticks CPU ticks in 2 s with descriptors spent (more than 10 % of a core): it spins"
    ((failed_lines >= 1 && failed_lines <= 8)) || fail "expected 1-8 'accept failed' lines while descriptors were spent, got $failed_lines"
    grep -q 'accepting on .*Too many open files; pausing accepts' "$VG_ERR" || fail "no line says accepting pauses: $(grep 'accepting on' "$VG_ERR" | head -3)"
    grep -q served-again "$TEST_TMP/emfile.out" || fail "not served again after the flood"
    pass "descriptors spent: $ticks ticks of CPU in 2 s, $failed_lines log lines; served again after the flood closed"
    assert_alive
    stop_volgate
}

# ---------------------------------------------------------------------------------------------
CASES=("$@")
((${#CASES[@]})) || CASES=(memory tight inflight connections handshake nofile emfile)
for c in "${CASES[@]}"; do
    declare -F "case_$c" >/dev/null || fail "no case '$c' (cases: memory tight inflight connections handshake nofile emfile)"
    "case_$c"
done
