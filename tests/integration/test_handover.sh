#!/usr/bin/env bash
# Live hand-over (volgate serve --take-over, volgate gateway restart): a gateway serving a plain
# file, a LUKS2 volume and an iSCSI LUN over two portals is replaced 20 times in a row while fio
# writes and verifies through one connection per export. No error, no verify failure, no
# reconnect (every hand-over moves the same three connections). Then what must not be lost:
#  - a successor that cannot open one export: the running gateway serves on, fio sees nothing;
#  - the running gateway SIGKILLed while its successor is stopped before `ready` (the successor
#    then serves every export, with no connection to carry) and before `adopted` (connections
#    already sent: the successor serves them, fio goes on without an error);
#  - a successor offering an unknown state version, a memory export: refused, nothing paused;
#  - the LUKS2 payload, read with an independent decrypter, is what NBD clients read.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/iscsi_lib.sh"
require_volgate
require_tool fio cryptsetup curl

T=$TEST_TMP
CTL=$T/ctl.sock
S=$T/nbd.sock
truncate -s 64M "$T/plain.img"
truncate -s 80M "$T/luks.img"
head -c 32 /dev/urandom >"$T/key"
cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$T/key" "$T/luks.img"
IQN=iqn.2026-01.org.volgate.test:handover
truncate -s 64M "$T/lun.img"
start_tgtd main 127.0.0.1 127.0.0.2
add_target main 1 "$IQN" "$T/lun.img"
ISCSI="iscsi://127.0.0.1:$TGTD_PORT,127.0.0.2:$TGTD_PORT/$IQN/1"

EXPORTS=(plain luks lun)
start_volgate --unix "$S" --control "$CTL" \
    --export "plain=file:$T/plain.img" \
    --export "luks=file:$T/luks.img,luks-key-file=$T/key" \
    --export "lun=$ISCSI"
FIRST_PID=$VG_PID

# serving_pid: the pid answering on the control socket
serving_pid() { curl -sf --max-time 5 --unix-socket "$CTL" http://gateway/v1/health | "$SYSPY" -c 'import json,sys; print(json.load(sys.stdin)["pid"])'; }
assert_eq "$(serving_pid)" "$FIRST_PID" "the first gateway's pid"

# wait_connections N: until the serving gateway has N client connections (fio connects in its
# own time; a hand-over started before would carry fewer), then a moment for their I/O to run
wait_connections() {
    local i n
    for ((i = 0; i < 300; i++)); do
        n=$(curl -sf --max-time 5 --unix-socket "$CTL" http://gateway/v1/health |
            "$SYSPY" -c 'import json,sys; print(json.load(sys.stdin)["connections"])' 2>/dev/null) || n=0
        ((n >= $1)) && { sleep 0.3; return 0; }
        sleep 0.1
    done
    fail "the gateway had $n of $1 client connections after 30 s"
}

# restart: one hand-over through the CLI; its log goes to restart.log
restart() { "$VOLGATE" gateway restart --control "$CTL" --log "$T/restart.log" >>"$T/restart.out"; }
watch_log "$T/restart.log"

# start_fio NAME SECONDS: 4 KiB random writes at depth 32, verified as they go, one connection
start_fio() {
    fio --name="$1" --ioengine=nbd --uri="$(unix_uri "$1" "$S")" --rw=randwrite --bs=4k --iodepth=32 \
        --size=32M --verify=crc32c --verify_fatal=1 --verify_backlog=1024 --verify_state_save=0 \
        --time_based --runtime="$2" --output-format=json --output="$T/fio.$1.json" >"$T/fio.$1.log" 2>&1 &
    FIO_PIDS+=($!)
}
# check_fio_verified NAME: no error, and (nearly) everything written was read back and verified
check_fio_verified() {
    "$SYSPY" - "$T/fio.$1.json" <<'EOF' || fail "fio on $1: $(tail -n 3 "$T/fio.$1.log")"
import json, sys
text = open(sys.argv[1]).read()
j = json.loads(text[text.index("{"):])["jobs"][0]  # after "fio: terminating on signal 2"
errors = (j["error"], j["write"].get("total_err", 0), j["read"].get("total_err", 0))
if any(errors):
    sys.exit("errors %s" % (errors,))
w, r = j["write"]["total_ios"], j["read"]["total_ios"]
if w == 0 or r < w - 1024:
    sys.exit("verified %d of %d writes" % (r, w))
EOF
}
wait_fios() {
    local p
    for p in "${FIO_PIDS[@]}"; do wait "$p" || fail "fio (pid $p) failed"; done
    FIO_PIDS=()
}
# stop_fios: fio ends its time-based run early on SIGINT, its report complete
stop_fios() {
    local p
    for p in "${FIO_PIDS[@]}"; do
        _proc_running "$p" || fail "fio (pid $p) ended before it was stopped: $(tail -n 3 "$T"/fio.*.log)"
        kill -INT "$p"
    done
    for p in "${FIO_PIDS[@]}"; do wait "$p" || true; done
    FIO_PIDS=()
}

# --- 20 hand-overs under fio --------------------------------------------------------------------
FIO_PIDS=()
for e in "${EXPORTS[@]}"; do start_fio "$e" 300; done
wait_connections 3
for i in $(seq 1 20); do
    restart || fail "hand-over $i failed: $(tail -n 5 "$T/restart.log")"
    sleep 0.2
done
sleep 0.5
stop_fios
for e in "${EXPORTS[@]}"; do check_fio_verified "$e"; done
# Each hand-over moved the three fio connections: none was dropped and made again.
moved=$(grep -c "took over from pid .*: 3 exports, 3 connections" "$T/restart.log" || true)
assert_eq "$moved" 20 "hand-overs that moved all three connections"
refute_grep "a connection closed during the hand-overs" -E "not paused in time|closing this TLS" "$T/restart.log"
# The first gateway exited 0, leaving its socket files to its successor.
stop_volgate "$FIRST_PID" none 5 0
[[ -S $S && -S $CTL ]] || fail "a socket file was removed by a gateway that handed over"
pauses=$(grep -ho "after a pause of [0-9]* ms" "$T/restart.log" "$VG_ERR" | awk '{print $5}' | sort -n | tr '\n' ' ')
pass "20 hand-overs under fio verify on plain, LUKS2 and iSCSI: no error, same connections; pauses (ms): $pauses"

# --- the LUKS2 payload as an independent reader sees it ------------------------------------------
"$SYSPY" "$INTEGRATION_DIR/luks_payload.py" decrypt "$T/luks.img" "$T/key" "$T/luks.payload"
"$SYSPY" - "$(unix_uri luks "$S")" "$T/luks.payload" <<'EOF' || fail "the LUKS2 payload differs from what NBD reads"
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
size = h.get_size()
with open(sys.argv[2], "rb") as f:
    for off in range(0, size, 4 << 20):
        n = min(4 << 20, size - off)
        if h.pread(n, off) != f.read(n):
            sys.exit("differs in the 4 MiB at %d" % off)
EOF
pass "after 20 hand-overs the LUKS2 image decrypts (python3-cryptography) to what NBD reads"

# --- a successor that cannot open an export: the running gateway serves on ----------------------
CURRENT=$(serving_pid)
mv "$T/plain.img" "$T/plain.moved"
start_fio plain 3
sleep 0.5
if restart 2>"$T/refused.err"; then fail "a hand-over whose successor cannot open 'plain' succeeded"; fi
grep -q "plain.img" "$T/restart.log" || fail "the successor's error does not name the file: $(tail -n 3 "$T/restart.log")"
wait_fios
check_fio_verified plain
assert_eq "$(serving_pid)" "$CURRENT" "the gateway serving after a failed hand-over"
mv "$T/plain.moved" "$T/plain.img"
pass "a successor that cannot open an export exits 1; the running gateway served on, fio saw nothing"

# --- a successor that stalls once the connections are paused -------------------------------------
# It stops itself before `adopted`; the running gateway waits its 10 s for the answer, takes its
# connections back and tells the successor so, which then exits 1 and leaves every socket file in
# place. fio waits through the pause and sees no error.
start_fio plain 300
sleep 0.5
VOLGATE_TEST_HANDOVER_STOP_AT=adopted "$VOLGATE" serve --take-over "$CTL" >"$T/stall.out" 2>"$T/stall.log" &
STALLED=$!
VG_PIDS+=("$STALLED")
watch_log "$T/stall.log"
for ((i = 0; i < 200; i++)); do
    [[ $(sed -E 's/^.*\) (.).*$/\1/' "/proc/$STALLED/stat" 2>/dev/null) == T ]] && break
    sleep 0.05
done
for ((i = 0; i < 300; i++)); do
    grep -q "taking the 1 connection back" "$T"/*.log "$T"/*.err 2>/dev/null && break
    sleep 0.05
done
grep -q "taking the 1 connection back" "$T"/*.log "$T"/*.err || fail "the running gateway did not take its connection back"
kill -CONT "$STALLED"
rc=0
wait "$STALLED" || rc=$?
_forget_pid "$STALLED"
assert_eq "$rc" 1 "exit status of a successor whose hand-over was taken back"
grep -q "took its connections back" "$T/stall.log" || fail "the successor does not say why: $(tail -n 3 "$T/stall.log")"
[[ -S $S && -S $CTL ]] || fail "the successor that gave up removed a socket file of the running gateway"
stop_fios
check_fio_verified plain
assert_eq "$(serving_pid)" "$CURRENT" "the gateway serving after a stalled successor"
nbdinfo --size "$(unix_uri luks "$S")" >/dev/null || fail "a new connection after the stalled hand-over"
pass "a successor stalled after the pause: the running gateway took its connection back after 10 s, fio saw no error, the sockets stayed"

# --- a client stuck in its handshake --------------------------------------------------------------
# It reads the greeting and says nothing more: the pause waits for it a bounded time (5 s), then
# the hand-over goes on without it and its connection is closed; a client that finishes its
# handshake meanwhile is handed over like the others.
"$SYSPY" - "$S" "$T/stuck.result" <<'PY' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.settimeout(60)
greeting = s.recv(18)  # NBDMAGIC, IHAVEOPT, handshake flags
open(sys.argv[2] + ".started", "w").write("%d" % len(greeting))
start = time.monotonic()
rest = s.recv(4096)  # nothing is sent, so this ends only when the gateway closes the connection
open(sys.argv[2], "w").write("closed after %.1f s with %d bytes" % (time.monotonic() - start, len(rest)))
PY
STUCK=$!
BG_PIDS+=("$STUCK")
wait_for_line "$T/stuck.result.started" 18 "the stuck client"
t0=$(now_ms)
restart || fail "a hand-over with a client stuck in its handshake: $(tail -n 3 "$T/restart.log")"
took=$(($(now_ms) - t0))
wait "$STUCK" || fail "the stuck client's helper failed"
grep -q "^closed after .* with 0 bytes" "$T/stuck.result" || fail "the stuck client: $(cat "$T/stuck.result")"
grep -q "1 connection did not pause within the time allowed" "$T"/*.log "$T"/*.err ||
    fail "the running gateway did not say it closed the stuck client"
nbdinfo --size "$(unix_uri plain "$S")" >/dev/null || fail "serving after the stuck client's hand-over"
pass "a client stuck in its handshake held the hand-over ${took} ms (bound 5 s), then its connection was closed"
CURRENT=$(serving_pid)

# --- refusals before anything pauses ------------------------------------------------------------
answer=$(curl -s --unix-socket "$CTL" -X POST -d '{"versions":[99]}' http://gateway/v1/handover)
[[ $answer == *"state version 1; the successor offered 99"* ]] || fail "unknown version: $answer"
answer=$(curl -s --unix-socket "$CTL" -X POST -d '{"versions":' http://gateway/v1/handover)
[[ $answer == *'"code":400'* ]] || fail "malformed offer: $answer"
M_CTL=$T/m.sock
start_volgate --unix "$T/m-nbd.sock" --control "$M_CTL" --export m=memory:16M
if "$VOLGATE" gateway restart --control "$M_CTL" 2>"$T/m.err"; then fail "a memory export was handed over"; fi
grep -q "memory device: its data lives in this process" "$T/m.err" "$VG_ERR" || fail "memory refusal: $(cat "$T/m.err")"
stop_volgate "$VG_PID"
assert_eq "$(serving_pid)" "$CURRENT" "the gateway after refused hand-overs"
pass "an unknown state version, a malformed offer and a memory export are refused; serving goes on"

# --- the running gateway killed in the middle ---------------------------------------------------
# kill_during STEP: a successor stopped before STEP, the running gateway SIGKILLed, the successor
# let go. Sets SUCCESSOR to its pid.
kill_during() {
    local step=$1 old i
    old=$(serving_pid)
    VOLGATE_TEST_HANDOVER_STOP_AT=$step "$VOLGATE" serve --take-over "$CTL" >>"$T/kill.out" 2>>"$T/kill.log" &
    SUCCESSOR=$!
    VG_PIDS+=("$SUCCESSOR")
    for ((i = 0; i < 200; i++)); do
        [[ $(sed -E 's/^.*\) (.).*$/\1/' "/proc/$SUCCESSOR/stat" 2>/dev/null) == T ]] && break
        sleep 0.05
    done
    ((i < 200)) || fail "the successor did not stop before '$step': $(tail -n 3 "$T/kill.log")"
    kill -KILL "$old"
    kill -CONT "$SUCCESSOR"
}
watch_log "$T/kill.log"

# Before `ready`: the clients of the killed gateway lose their connections; the successor,
# holding its listeners, serves every export, and what was written and flushed is there.
"$SYSPY" - "$(unix_uri plain "$S")" <<'EOF' || fail "writing the pattern before the kill"
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1]); h.pwrite(b"\xa5" * 65536, 1 << 20); h.flush(); h.shutdown()
EOF
kill_during ready
for ((i = 0; i < 100; i++)); do [[ $(serving_pid 2>/dev/null) == "$SUCCESSOR" ]] && break; sleep 0.1; done
assert_eq "$(serving_pid)" "$SUCCESSOR" "the successor after its predecessor died before 'ready'"
"$SYSPY" - "$(unix_uri plain "$S")" <<'EOF' || fail "the pattern written before the kill"
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1]); assert h.pread(65536, 1 << 20) == b"\xa5" * 65536
EOF
for e in "${EXPORTS[@]}"; do nbdinfo --size "$(unix_uri "$e" "$S")" >/dev/null || fail "export $e after the kill"; done
pass "running gateway killed before 'ready': the successor serves every export, flushed data intact"

# Before `adopted`: the connections were sent; the successor serves them and fio goes on.
FIO_PIDS=()
for e in "${EXPORTS[@]}"; do start_fio "$e" 4; done
wait_connections 3
kill_during adopted
wait_fios
for e in "${EXPORTS[@]}"; do check_fio_verified "$e"; done
assert_eq "$(serving_pid)" "$SUCCESSOR" "the successor after its predecessor died before 'adopted'"
grep -q "died before it committed; serving its exports with the 3 connections" "$T/kill.log" ||
    fail "the successor did not say it took the connections: $(tail -n 3 "$T/kill.log")"
pass "running gateway killed after sending its connections: the successor serves them, fio saw no error"
