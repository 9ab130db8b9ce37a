#!/usr/bin/env bash
# Other NBD servers as backends (NbdDevice, libnbd): volgate re-exports nbdkit (memory, file)
# and qemu-nbd exports. qemu-io and fio --verify through volgate; the upstream's block status,
# trim and zeroes seen through volgate and done on the upstream; its block size limits honoured
# (a 64 KiB maximum splits 1 MiB writes) and its read-only flag passed on; connections=2 opens two
# upstream connections to a multi-conn server and one to qemu-nbd (with a log line). An upstream
# SIGKILLed and restarted under fio --verify: no error with reconnect-delay; without it the error
# reaches the client at once, and the export works again once the upstream is back. LUKS2 on top
# of an upstream, checked with the independent decryptor on the upstream's file. Bad URIs and
# unreachable, missing, TLS-only upstreams, a name that does not resolve and one whose DNS server
# never answers (given up at connect-timeout): one line on stderr, exit code 2. nbd://localhost:PORT
# carries data (the name resolved off the device's thread), and a name whose first address is
# refused is served through its second.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_volgate
require_tool nbdkit qemu-nbd qemu-io qemu-img fio nbdinfo cryptsetup

T=$TEST_TMP
PAYLOAD="$SYSPY $INTEGRATION_DIR/luks_payload.py"
S=$T/vg.sock
u() { unix_uri "$1" "$S"; }

# start_nbdkit SOCKET ARGS...: nbdkit in the foreground (killed by the EXIT trap); sets NBDKIT_PID
# once SOCKET exists.
start_nbdkit() {
    local sock=$1 i
    shift
    rm -f "$sock"
    nbdkit -f --unix "$sock" "$@" 2>>"$T/nbdkit.log" &
    NBDKIT_PID=$!
    BG_PIDS+=("$NBDKIT_PID")
    for ((i = 0; i < 200; i++)); do
        [[ -S $sock ]] && return 0
        kill -0 "$NBDKIT_PID" 2>/dev/null || fail "nbdkit $* did not start: $(tail -n 3 "$T/nbdkit.log")"
        sleep 0.05
    done
    fail "nbdkit $* did not create $sock within 10 s"
}

# expect_startup_error WHAT PATTERN SERVE-ARGS...: volgate serve exits 2 within 20 s with one
# line on stderr matching PATTERN.
expect_startup_error() {
    local what=$1 pattern=$2 rc=0
    shift 2
    timeout -k 5 20 "$VOLGATE" serve --unix "$T/never.sock" "$@" >/dev/null 2>"$T/err" || rc=$?
    [[ $rc == 2 ]] || fail "$what: exit code $rc, expected 2: $(cat "$T/err")"
    grep -q -- "$pattern" "$T/err" || fail "$what: stderr does not say '$pattern': $(cat "$T/err")"
    [[ $(grep -vc '^\s*$' "$T/err") == 1 ]] || fail "$what: expected one line on stderr, got: $(cat "$T/err")"
    pass "$what: exit 2, '$(tail -c 160 "$T/err" | tr -d '\n')'"
}

# ---- errors at startup ----
expect_startup_error "URI without socket=" "needs ?socket=PATH" --export "x=nbd+unix:///e"
expect_startup_error "a TLS option on a clear upstream" "needs TLS to the upstream" \
    --export "x=nbd://localhost/e,tls-psk-file=$T/psk"
expect_startup_error "bad port" "port must be a number" --export "x=nbd://localhost:0/e"
expect_startup_error "bad option" "connections '0'" --export "x=nbd://localhost/e,connections=0"
expect_startup_error "no such socket" "No such file or directory" \
    --export "x=nbd+unix:///e?socket=$T/missing.sock"

# stop_process PID: SIGSTOP, then until every thread of PID has stopped (a signal takes effect
# when each thread next runs: an upstream still answering right after kill -STOP made a stop
# meant to wait for it end at once).
stop_process() {
    local i t all
    kill -STOP "$1"
    for ((i = 0; i < 100; i++)); do
        all=1
        for t in /proc/"$1"/task/*/stat; do
            [[ $(sed -E 's/^.*\) (.).*$/\1/' "$t" 2>/dev/null) == T ]] || all=0
        done
        ((all)) && return 0
        sleep 0.05
    done
    fail "process $1 did not stop within 5 s of SIGSTOP"
}

# ---- a stop whose upstream never answers the final flush: named, exit 1 after 15 s, no hang ----
# Started here and checked at the end of the script, so the 15 s pass while the rest runs.
start_nbdkit "$T/stalled.sock" memory 16M
STALLED_KIT_PID=$NBDKIT_PID
start_volgate --unix "$T/stalled-vg.sock" --export "s=nbd+unix:///?socket=$T/stalled.sock"
STALLED_VG_PID=$VG_PID STALLED_VG_ERR=$VG_ERR
"$SYSPY" -c "
import nbd
h = nbd.NBD()
h.connect_uri('$(unix_uri s "$T/stalled-vg.sock")')
h.pwrite(b'w' * 4096, 0)
h.shutdown()" || fail "writing through the export whose upstream will stall"
stop_process "$STALLED_KIT_PID"
kill -TERM "$STALLED_VG_PID"
STALLED_T0=$(now_ms)

# ---- the same with a FUSE mount and a client's read in flight: bounded all the same ----
# The FUSE mount's last flush waits for the upstream and holds its thread: the mount goes after
# the 10 s drain and the thread is left behind 3 s later (it used to hold the stop until
# systemd's SIGKILL); the NBD side gives its final flush 15 s; exit 1, the socket file removed.
start_nbdkit "$T/stalled2.sock" memory 16M
STALLED2_KIT_PID=$NBDKIT_PID
mkdir "$T/stalled-fuse"
start_volgate --unix "$T/stalled2-vg.sock" --fuse "$T/stalled-fuse" --export "s2=nbd+unix:///?socket=$T/stalled2.sock"
STALLED2_VG_PID=$VG_PID STALLED2_VG_ERR=$VG_ERR
stop_process "$STALLED2_KIT_PID"
"$SYSPY" -c "
import nbd, sys, time
h = nbd.NBD()
h.connect_uri('$(unix_uri s2 "$T/stalled2-vg.sock")')
h.aio_pread(4096, 0)
print('sent', flush=True)
time.sleep(60)" >"$T/stalled2-client.out" 2>&1 &
BG_PIDS+=("$!")
for ((i = 0; i < 100; i++)); do grep -q sent "$T/stalled2-client.out" 2>/dev/null && break; sleep 0.05; done
sleep 0.2  # the request on its way to the upstream
kill -TERM "$STALLED2_VG_PID"
STALLED2_T0=$(now_ms)
expect_startup_error "TCP port closed" "refused" --export "x=nbd://127.0.0.1:$(free_tcp_port)/e"
expect_startup_error "a name that does not resolve" "cannot resolve 'no-such-host.invalid'" \
    --export "x=nbd://no-such-host.invalid/e"
# A DNS server that never answers: resolving the name (on a thread of its own) is given up at
# connect-timeout, and the process exits without waiting for it. volgate runs in a mount namespace
# of its own (in_namespace.sh) whose /etc/resolv.conf names a UDP socket that reads queries and
# never answers.
"$SYSPY" -c 'import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.77", 53))
open(sys.argv[1], "w").write("ready\n")
while True: s.recvfrom(512)' "$T/mute-dns.ready" &
BG_PIDS+=("$!")
for ((i = 0; i < 100; i++)); do [[ -s $T/mute-dns.ready ]] && break; sleep 0.05; done
printf 'nameserver 127.0.0.77\noptions timeout:5 attempts:3\n' >"$T/resolv.conf"
t0=$(now_ms)
rc=0
NS_RESOLV=$T/resolv.conf VOLGATE_REAL=$VOLGATE timeout -k 5 30 "$INTEGRATION_DIR/in_namespace.sh" \
    serve --unix "$T/never.sock" --export "x=nbd://mute.example/e,connect-timeout=2" \
    >/dev/null 2>"$T/err" </dev/null || rc=$?
ms=$(($(now_ms) - t0))
[[ $rc == 2 ]] && grep -q "resolving 'mute.example' took longer than 2 s (connect-timeout)" "$T/err" ||
    fail "a DNS server that never answers: exit $rc after $ms ms: $(cat "$T/err")"
((ms < 6000)) || fail "a DNS server that never answers: volgate took $ms ms to give up (connect-timeout=2)"
pass "a DNS server that never answers: exit 2 after $ms ms, '$(tail -c 160 "$T/err" | tr -d '\n')'"

truncate -s 64M "$T/qemu.img"
qemu-nbd -f raw --socket="$T/qemu.sock" --export-name=q --shared=4 --discard=unmap "$T/qemu.img" \
    2>>"$T/qemu-nbd.log" &
BG_PIDS+=("$!")
for ((i = 0; i < 200; i++)); do [[ -S $T/qemu.sock ]] && break; sleep 0.05; done
expect_startup_error "missing export" "nbd upstream nbd+unix:///nope?socket=$T/qemu.sock: .*export" \
    --export "x=nbd+unix:///nope?socket=$T/qemu.sock"
printf 'alice:%s\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$T/psk"
chmod 600 "$T/psk"
start_nbdkit "$T/tls.sock" --tls=require --tls-psk="$T/psk" memory 1M
expect_startup_error "upstream requires TLS" "nbd upstream" --export "x=nbd+unix:///?socket=$T/tls.sock"
expect_startup_error "x509 to a TCP upstream" "x509 TLS to a TCP upstream is not supported" \
    --export "x=nbds://127.0.0.1:$(free_tcp_port)/e,tls-certificates=$T"
printf 'alice:%s\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$T/psk-wrong"
expect_startup_error "TLS with the wrong pre-shared key" "nbd upstream .*TLS" \
    --export "x=nbds+unix:///?socket=$T/tls.sock,tls-psk-file=$T/psk-wrong,tls-username=alice"
expect_startup_error "TLS with a key file that is not there" "nbd upstream .*no-such.psk" \
    --export "x=nbds+unix:///?socket=$T/tls.sock,tls-psk-file=$T/no-such.psk,tls-username=alice"
# The same upstream over TLS with its key: what qemu-io writes through volgate is in the upstream,
# read back over TLS directly.
start_volgate --unix "$S" --export "t=nbds+unix:///?socket=$T/tls.sock,tls-psk-file=$T/psk,tls-username=alice"
qemu-io -f raw -c 'write -P 0x3c 64k 256k' -c 'read -P 0x3c 64k 256k' "$(u t)" | grep -q 'read 262144/262144' ||
    fail "nbds+unix: data does not go through"
TLS_URI="nbds+unix:///?socket=$T/tls.sock&tls-psk-file=$T/psk" nbdsh -c '
import os
h.set_uri_allow_local_file(True)
h.set_tls_username("alice")
h.connect_uri(os.environ["TLS_URI"])
assert h.pread(256 << 10, 64 << 10) == b"\x3c" * (256 << 10)' 2>"$T/err" ||
    fail "nbds+unix: the upstream does not hold what was written through volgate: $(cat "$T/err")"
stop_volgate
pass "nbds+unix:// with tls-psk-file: qemu-io writes through volgate land in a TLS-only upstream; a wrong key or a missing file is one line at start"
# A server that accepts the connection and never answers: the handshake is cut at connect-timeout.
"$SYSPY" -c 'import socket,sys,time; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(); time.sleep(60)' \
    "$T/mute.sock" &
BG_PIDS+=("$!")
for ((i = 0; i < 100; i++)); do [[ -S $T/mute.sock ]] && break; sleep 0.05; done
expect_startup_error "handshake never answered" "connect-timeout" \
    --export "x=nbd+unix:///?socket=$T/mute.sock,connect-timeout=1"

# ---- a TCP upstream by name: the name resolved off the I/O thread, its addresses tried in turn ----
PORT=$(free_tcp_port)
nbdkit -f -i 127.0.0.1 -p "$PORT" memory 16M 2>>"$T/nbdkit.log" &
BG_PIDS+=("$!")
for ((i = 0; i < 200; i++)); do nbdinfo --size "nbd://127.0.0.1:$PORT/" >/dev/null 2>&1 && break; sleep 0.05; done
start_volgate --unix "$S" --export "t=nbd://localhost:$PORT/"
qemu-io -f raw -c 'write -P 0x6b 1M 2M' -c 'read -P 0x6b 1M 2M' "$(u t)" | grep -q 'read 2097152/2097152' ||
    fail "nbd://localhost:PORT: data does not go through"
qemu-io -f raw -c 'read -P 0x6b 1M 2M' "nbd://127.0.0.1:$PORT/" | grep -q 'read 2097152/2097152' ||
    fail "nbd://localhost:PORT: the upstream does not hold what was written through volgate"
stop_volgate
pass "nbd://localhost:PORT (resolved off the I/O thread): qemu-io writes through volgate land in the upstream"
# A name with two addresses, the first refused (nothing listens on ::1): the second is tried
# within the same attempt. volgate runs in a mount namespace whose /etc/hosts gives the name ::1
# first, then 127.0.0.1.
printf '::1 dual.example\n127.0.0.1 dual.example\n' >"$T/hosts"
VG_LOG_LEVEL=debug VOLGATE_REAL=$VOLGATE VOLGATE=$INTEGRATION_DIR/in_namespace.sh NS_HOSTS=$T/hosts \
    start_volgate --unix "$S" --export "d=nbd://dual.example:$PORT/"
qemu-io -f raw -c 'read -P 0x6b 1M 2M' "$(u d)" | grep -q 'read 2097152/2097152' ||
    fail "nbd://dual.example: data does not go through"
grep -q "address 1 of 2 (::1) failed" "$VG_ERR" || fail "nbd://dual.example: the first address was not tried and given up: $(grep -m3 upstream "$VG_ERR")"
stop_volgate
pass "nbd://NAME with two addresses, the first refused: the second one serves ($(grep -m1 -o 'address 1 of 2 (::1) failed ([^)]*)' "$VG_ERR"))"

# ---- upstreams: nbdkit memory and file, qemu-nbd; and one with block size limits ----
truncate -s 64M "$T/kit.img"
truncate -s 32M "$T/luks.img"
start_nbdkit "$T/mem.sock" memory 64M
FILE_KIT=(file "$T/kit.img")
start_nbdkit "$T/file.sock" "${FILE_KIT[@]}"
FILE_KIT_PID=$NBDKIT_PID
# Advertises 512/16K/64K block sizes and refuses requests outside them; no multi-conn.
start_nbdkit "$T/small.sock" --filter=log --filter=blocksize-policy --filter=multi-conn memory 8M \
    blocksize-minimum=512 blocksize-preferred=16K blocksize-maximum=64K blocksize-error-policy=error \
    multi-conn-mode=disable logfile="$T/small.log"
start_nbdkit "$T/ro.sock" -r memory 1M

printf 'upstream secret\n' >"$T/pass"
cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
    --key-file "$T/pass" "$T/luks.img"
start_nbdkit "$T/luks.sock" file "$T/luks.img"

start_volgate --unix "$S" \
    --export "mem=nbd+unix:///?socket=$T/mem.sock,connections=2" \
    --export "file=nbd+unix:///?socket=$T/file.sock,reconnect-delay=20" \
    --export "fragile=nbd+unix:///?socket=$T/file.sock" \
    --export "small=nbd+unix:///?socket=$T/small.sock,connections=2" \
    --export "ro=nbd+unix:///?socket=$T/ro.sock" \
    --export "q=nbd+unix:///q?socket=$T/qemu.sock" \
    --export "enc=nbd+unix:///?socket=$T/luks.sock,luks-key-file=$T/pass"

grep -q "nbd upstream nbd+unix:///?socket=$T/small.sock: the server does not advertise multi-conn, so 1 connection" "$VG_ERR" ||
    fail "no log line for the upstream without multi-conn"
[[ $(grep -c " Connect export=" "$T/small.log") == 1 ]] || fail "connections=2 opened $(grep -c " Connect export=" "$T/small.log") connections to an upstream without multi-conn"
# nbdkit memory has multi-conn: two connections to it (the listening socket's peers).
conns=$(ss -xH state connected 2>/dev/null | grep -c "$T/mem.sock" || true)
[[ $conns == 2 ]] || fail "connections=2 opened $conns connections to nbdkit memory (multi-conn), expected 2"
grep -qE "nbd upstream nbd\+unix:///\?socket=$T/small.sock: 8388608 bytes, block sizes 512/16384/65536" "$VG_ERR" ||
    fail "the upstream's block sizes were not taken: $(grep small.sock "$VG_ERR" | head -1)"
[[ $(nbdinfo --json "$(u small)" | "$SYSPY" -c 'import json,sys; print(json.load(sys.stdin)["exports"][0]["block_size_minimum"])') == 512 ]] ||
    fail "the upstream's 512-byte minimum block size is not volgate's"
pass "connections=2: two upstream connections to nbdkit memory, one (logged) without multi-conn; block sizes taken"

# ---- data through volgate ----
for e in mem q; do
    qemu-io -f raw -c "write -P 0xa5 1M 3M" -c "write -z 8M 1M" -c "read -P 0xa5 1M 3M" \
        -c "read -P 0 8M 1M" "$(u $e)" >"$T/qio" 2>&1 || fail "$e: qemu-io: $(tail -n 3 "$T/qio")"
done
qemu-io -f raw -r -c "read -P 0xa5 1M 3M" "nbd+unix:///q?socket=$T/qemu.sock" >/dev/null 2>&1 ||
    fail "qemu-nbd's image does not hold what qemu-io wrote through volgate"
pass "qemu-io writes, zeroes and reads through volgate on nbdkit memory and qemu-nbd"

fio_verify() {
    local what=$1 log=$T/fio.$RANDOM
    shift
    (cd "$T" && timeout -k 5 120 fio --ioengine=nbd --verify=crc32c --verify_fatal=1 \
        --verify_state_save=0 --output-format=terse --name=v "$@") >"$log" 2>&1 ||
        fail "$what: fio failed: $(grep -v 'connected to NBD' "$log" | tail -n 5)"
    pass "$what"
}
fio_verify "nbdkit memory: fio 4k randwrite depth 32, verify" --uri="$(u mem)" --rw=randwrite \
    --bs=4k --iodepth=32 --size=16M
fio_verify "nbdkit file: fio 1M write depth 8, verify" --uri="$(u file)" --rw=write --bs=1M \
    --iodepth=8 --size=32M
qemu-img compare -f raw -F raw "$T/kit.img" "$(u file)" >/dev/null ||
    fail "nbdkit's file and volgate's view of it differ"
pass "qemu-img compare: nbdkit's file equals volgate's export of it"

# The upstream's 64 KiB maximum: 1 MiB writes arrive split, the data is whole.
fio_verify "64 KiB upstream maximum: fio 1M writes, verify" --uri="$(u small)" --rw=write \
    --bs=1M --iodepth=4 --size=8M
"$SYSPY" - "$T/small.log" <<'EOF' || fail "requests outside the upstream's block sizes reached it"
import re, sys
sizes = [int(m.group(1), 0) for m in re.finditer(r" (?:Read|Write) id=\d+ offset=\S+ count=(\S+)", open(sys.argv[1]).read())]
assert len(sizes) >= 128, "nbdkit's log filter saw %d reads and writes" % len(sizes)
assert max(sizes) == 65536, "largest request %d bytes" % max(sizes)
EOF
pass "1 MiB requests reached the upstream split at its 64 KiB maximum"

# ---- capabilities, block status, trim and zeroes pass through ----
caps() { nbdinfo "$1" | grep -E '^\s*(can_(fast_zero|flush|fua|multi_conn|trim|zero)|is_read_only|export-size):' | sed 's/ (.*//'; }
for pair in "mem mem.sock" "file file.sock" "ro ro.sock"; do
    set -- $pair
    [[ $(caps "$(u "$1")") == "$(caps "nbd+unix:///?socket=$T/$2")" ]] ||
        fail "$1: volgate's capabilities differ from the upstream's: $(diff <(caps "$(u "$1")") <(caps "nbd+unix:///?socket=$T/$2") | tr '\n' ' ')"
done
pass "size, read-only, flush, FUA, trim, zero, fast zero and multi-conn are the upstream's (nbdkit memory, file, -r)"
truncate -s 0 "$T/kit.img"
truncate -s 64M "$T/kit.img"
nbdsh -u "$(u file)" -c '
assert h.can_trim() and h.can_zero()
h.pwrite(b"\x11" * (4 << 20), 1 << 20)
h.pwrite(b"\x22" * (1 << 20), 8 << 20)
h.pwrite(b"\x33" * (1 << 20), 12 << 20)
h.trim(4 << 20, 1 << 20)
h.zero(1 << 20, 12 << 20, nbd.CMD_FLAG_FAST_ZERO if h.can_fast_zero() else 0)
assert h.pread(1 << 20, 12 << 20) == bytes(1 << 20)
' || fail "trim/zero through volgate"
h_up=$(nbdinfo --map "nbd+unix:///?socket=$T/file.sock")
h_vg=$(nbdinfo --map "$(u file)")
[[ $h_up == "$h_vg" ]] || fail "block status differs: upstream '$h_up' volgate '$h_vg'"
grep -qE '^ +8388608 +1048576 +0 +data$' <<<"$h_vg" || fail "the written MiB is not data: $h_vg"
grep -qE '^ +0 +8388608 +3 +hole,zero$' <<<"$h_vg" || fail "the trimmed range is not a hole: $h_vg"
grep -qE '^ +9437184 +57671680 +3 +hole,zero$' <<<"$h_vg" || fail "the zeroed range is not a hole: $h_vg"
(($(file_blocks "$T/kit.img") <= 2048 + 64)) || fail "trim and zero did not punch the upstream file: $(file_blocks "$T/kit.img") blocks"
pass "block status through volgate equals the upstream's; trim punched the upstream's file"

# read-only upstream -> read-only export
[[ $(nbdinfo --json "$(u ro)" | "$SYSPY" -c 'import json,sys; print(json.load(sys.stdin)["exports"][0]["is_read_only"])') == True ]] ||
    fail "the read-only upstream is not read-only through volgate"
if qemu-io -f raw -c "write 0 4k" "$(u ro)" >"$T/qio" 2>&1 && ! grep -qi "error\|denied\|read-only" "$T/qio"; then
    fail "a write to the read-only export succeeded"
fi
pass "a read-only upstream is a read-only export"

# ---- LUKS2 on top of an upstream ----
head -c $((4 << 20)) /dev/urandom >"$T/plain"
nbdcopy "$T/plain" "$(u enc)"
$PAYLOAD decrypt "$T/luks.img" "$T/pass" "$T/indep"
cmp -s -n $((4 << 20)) "$T/plain" "$T/indep" || fail "what volgate wrote through LUKS2 onto nbdkit does not decrypt independently"
pass "LUKS2 on an nbdkit upstream: the upstream's file decrypts independently to what was written"

# ---- upstream killed and restarted under I/O ----
restart_file_kit() {
    kill -KILL "$FILE_KIT_PID" 2>/dev/null || true
    wait "$FILE_KIT_PID" 2>/dev/null || true
    sleep "$1"
    start_nbdkit "$T/file.sock" "${FILE_KIT[@]}"
    FILE_KIT_PID=$NBDKIT_PID
}
# wait_reconnected N: until both exports on file.sock have logged N reconnections in all.
wait_reconnected() {
    for ((i = 0; i < 200; i++)); do
        (($(grep -c "file.sock: connection 0 re-established" "$VG_ERR") >= $1)) && return 0
        sleep 0.05
    done
    fail "the exports did not reconnect to the restarted upstream"
}
# One write surely in flight when the upstream dies (it answers writes after 1.5 s): it is sent
# again once the upstream is back, and lands. (Switching upstreams is a first reconnection.)
FILE_KIT=(--filter=delay file "$T/kit.img" delay-write=1500ms)
restart_file_kit 0
wait_reconnected 2
timeout -k 2 20 "$SYSPY" -m nbd -u "$(u file)" -c 'h.pwrite(b"\x5a" * 65536, 1 << 20)' >"$T/inflight.log" 2>&1 &
W=$!
sleep 0.7
restart_file_kit 0.3
wait "$W" || fail "a write in flight when the upstream died failed: $(tail -n 2 "$T/inflight.log")"
qemu-io -f raw -r -c "read -P 0x5a 1M 64k" "nbd+unix:///?socket=$T/file.sock" >/dev/null 2>&1 ||
    fail "the write in flight when the upstream died is not in its file"
wait_reconnected 4
pass "a write in flight when the upstream was SIGKILLed was sent again after the restart and landed"
# Then under fio: writes answered after 500 ms, 16 at a time.
FILE_KIT=(--filter=delay file "$T/kit.img" delay-write=500ms)
restart_file_kit 0
wait_reconnected 6
(cd "$T" && timeout -k 5 120 fio --ioengine=nbd --verify=crc32c --verify_fatal=1 \
    --verify_state_save=0 --output-format=terse --name=r --uri="$(u file)" --rw=randwrite \
    --bs=64k --iodepth=16 --size=4M --do_verify=1) >"$T/fio.restart" 2>&1 &
FIO=$!
BG_PIDS+=("$FIO")
sleep 1  # 64 writes, 16 at a time, each answered after 500 ms: about 2 s of writing
restart_file_kit 1
rc=0
wait "$FIO" || rc=$?
[[ $rc == 0 ]] || fail "fio through a restarted upstream with reconnect-delay failed: $(tail -n 5 "$T/fio.restart")"
# Both exports on it reconnect; the one without fio may still be waiting for its next attempt.
(($(grep -c "file.sock: connection 0 re-established" "$VG_ERR") >= 7)) || fail "the reconnection was not logged"
grep -q "nbd upstream nbd+unix:///?socket=$T/file.sock: connection 0 lost (.*); reconnecting, requests wait up to 20 s" "$VG_ERR" ||
    fail "the loss was not logged"
refute_grep "a request failed through the restart" "failed: Input/output error" "$VG_ERR"
pass "upstream SIGKILLed and restarted under fio --verify: no error with reconnect-delay"

# Without reconnect-delay: the error comes back at once, not a hang; then the export heals.
kill -KILL "$FILE_KIT_PID"
wait "$FILE_KIT_PID" 2>/dev/null || true
t0=$(now_ms)
if timeout -k 2 10 qemu-io -f raw -c "read 0 64k" "$(u fragile)" >"$T/qio" 2>&1 && ! grep -qi error "$T/qio"; then
    fail "a read through a dead upstream without reconnect-delay succeeded"
fi
(($(now_ms) - t0 < 8000)) || fail "the read through a dead upstream took $(($(now_ms) - t0)) ms to fail"
grep -qi "input/output error" "$T/qio" || fail "the failed read did not report EIO: $(cat "$T/qio")"
pass "without reconnect-delay a read through a dead upstream fails with EIO in $(($(now_ms) - t0)) ms"
start_nbdkit "$T/file.sock" "${FILE_KIT[@]}"
for ((i = 0; i < 100; i++)); do
    qemu-io -f raw -c "read 0 64k" "$(u fragile)" >"$T/qio" 2>&1 && ! grep -qi error "$T/qio" && break
    sleep 0.1
done
((i < 100)) || fail "the export did not heal once the upstream was back: $(cat "$T/qio")"
pass "the export works again once the upstream is back"

assert_alive
stop_volgate

# the stop begun at the start, against the stalled upstream
stop_volgate "$STALLED_VG_PID" none $((30 - ($(now_ms) - STALLED_T0) / 1000)) 1
kill -KILL "$STALLED_KIT_PID"  # continued, it would abort on its vanished client
grep -q "export 's': final flush not done within 15 s: the storage did not answer" "$STALLED_VG_ERR" ||
    fail "the log does not name the export whose flush went unanswered: $(tail -n 3 "$STALLED_VG_ERR")"
# From the log's own times: the script may have come here long after the process ended.
log_ms() { date -d "$(grep -m1 "$1" "$STALLED_VG_ERR" | cut -d' ' -f1)" +%s%3N; }
took=$(($(log_ms "stopped without closing") - $(log_ms "received SIGTERM")))
((took >= 15000 && took < 20000)) || fail "the stop with a stalled upstream took $took ms, expected 15-20 s"
pass "SIGTERM with an upstream that never answers the final flush: the export named, exit 1 after $took ms, no hang"

stop_volgate "$STALLED2_VG_PID" none $((32 - ($(now_ms) - STALLED2_T0) / 1000)) 1
kill -KILL "$STALLED2_KIT_PID"
grep -q -- "--fuse $T/stalled-fuse: 1 thread is still waiting for the storage" "$STALLED2_VG_ERR" ||
    fail "a FUSE flush to a stalled upstream: the log does not say its thread was left: $(tail -n 5 "$STALLED2_VG_ERR")"
[[ ! -e $T/stalled2-vg.sock ]] || fail "the socket file stayed after a stop that left its storage unanswered"
! mountpoint -q "$T/stalled-fuse" || fail "the FUSE mount stayed after the stop"
STALLED_VG_ERR=$STALLED2_VG_ERR
took=$(($(log_ms "stopped without closing") - $(log_ms "received SIGTERM")))
((took >= 15000 && took < 20000)) || fail "the stop with a FUSE mount on a stalled upstream took $took ms, expected 15-20 s"
pass "SIGTERM with a FUSE mount and a read in flight on an upstream that never answers: the FUSE thread left after 13 s, exit 1 after $took ms, socket removed"
