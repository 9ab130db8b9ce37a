#!/usr/bin/env bash
# Live hand-over under a QEMU client: a TCG guest (libvirtd, QEMU's own NBD client) has two disks
# served by a `volgate serve --unix ... --control ...` gateway, a plain file and a LUKS2 volume,
# hot-plugged as NBD network disks on its virtio-scsi controller. In the guest, one loop per disk
# discards the first 4 MiB, writes a random pattern over them (O_DIRECT, 64 KiB writes, then a
# flush), reads it back with O_DIRECT and compares, pass after pass, two patterns in turn, while
# a second loop reads the same 4 MiB in 4 KiB O_DIRECT reads without a pause. Meanwhile the host
# hands the gateway over 5 times (`volgate gateway restart`), each time once every loop has
# finished two more passes (so each new gateway carries the guest's I/O before the next). Then:
#  - every pass in the guest read back what it wrote, no discard, write or read failed;
#  - each new gateway answered reads, writes, flushes and trims on both exports, none with an
#    error, with one connection each (its metrics, whose listener moves with the hand-over);
#  - the guest's kernel log holds no I/O error, libvirt emitted no io-error event, the domain
#    never paused;
#  - each hand-over moved QEMU's two connections: the new gateway says "took over from pid P:
#    2 exports, 2 connections" with P the gateway before it, and the connected sockets are the
#    same ones (same inodes at both ends, QEMU holding the other end), now held by the new
#    process alone;
#  - what the last pass wrote is on the volumes: read again in the guest, on the host through a
#    new NBD connection, and in the files (the LUKS2 one decrypted with python3-cryptography).
# Last, the checks are shown to fire: the gateway SIGKILLed instead of handed over while the
# guest writes gives a failed write in the guest, an I/O error in its kernel log and an io-error
# event (libvirt 9.0 cannot give QEMU a reconnect-delay, see ../shared/ENVIRONMENT.md).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/guest_lib.sh"
require_volgate
require_tool cryptsetup curl nbdinfo setpriv ss virsh

T=$TEST_TMP
RUN=$T/run                 # the NBD socket's directory: QEMU (libvirt-qemu) must traverse it
CTL=$T/ctl.sock
S=$RUN/nbd.sock
GUEST=volgate-it-handover-$$
HANDOVERS=5
REGION_MIB=4               # what each pass writes and reads back, from the start of each disk
DISKS=(plain luks)
# What a guest's kernel logs when a disk request fails (block layer, SCSI disk, buffer cache)
IO_ERROR_RE='I/O error|blk_update_request|print_req_error|critical (medium|target) error|FAILED Result|timing out command'
t_test=$(now_ms)

# ------------------------------------------------------------------ volumes and gateway
truncate -s 16M "$T/plain.img"
truncate -s 32M "$T/luks.img"  # a LUKS2 header takes the first 16 MiB
head -c 32 /dev/urandom >"$T/key"
cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$T/key" "$T/luks.img"
mkdir "$RUN"
chmod o+x "$T"
MPORT=$(free_tcp_port)
start_volgate --unix "$S" --socket-group libvirt-qemu --control "$CTL" --metrics "127.0.0.1:$MPORT" \
    --export "plain=file:$T/plain.img" \
    --export "luks=file:$T/luks.img,luks-key-file=$T/key"
FIRST_PID=$VG_PID
for d in "${DISKS[@]}"; do qemu_user_check "$S" "$d"; done

# serving_pid: the pid answering on the control socket
serving_pid() { curl -sf --max-time 5 --unix-socket "$CTL" http://gateway/v1/health | "$SYSPY" -c 'import json,sys; print(json.load(sys.stdin)["pid"])'; }
assert_eq "$(serving_pid)" "$FIRST_PID" "the first gateway's pid"

# ------------------------------------------------------------------ guest and disks
libvirt_start
guest_image "$T/guest"
guest_define "$GUEST" "$T/guest"
CONSOLE=${GUEST_DIR[$GUEST]}/console.log
info "guest $GUEST booted (kernel $GUEST_KERNEL) in $GUEST_BOOT_MS ms"
# Every event of the domain from now on: io-error must not come, device-added must (the check
# that this monitor sees events at all).
"${VIRSH[@]}" event --domain "$GUEST" --all --loop --timestamp >"$T/events.log" 2>&1 &
BG_PIDS+=($!)
sleep 0.3

unit=0
for d in "${DISKS[@]}"; do
    nbd_disk_xml '{"driver_volume_type": "nbd", "data": {"export": "'"$d"'", "socket": "'"$S"'", "volume_id": "vg-ho-'"$d"'"}}' \
        "$unit" >"$T/disk-$d.xml"
    "${VIRSH[@]}" attach-device "$GUEST" "$T/disk-$d.xml" --live >"$T/virsh.out" 2>&1 ||
        fail "virsh attach-device $d: $(cat "$T/virsh.out")"
    unit=$((unit + 1))
done
# The guest's kernel name of each disk, found by its serial (the hot-plug reaches the guest's
# kernel asynchronously, through a virtio-scsi event and a rescan).
declare -A DEV=()
for d in "${DISKS[@]}"; do
    DEV[$d]=$(guest_run "$GUEST" "for i in \$(seq 100); do test -b /dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_vg-ho-$d && break; sleep 0.1; disk-links; done
readlink -f /dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_vg-ho-$d" 30) || fail "the guest does not see disk $d: ${DEV[$d]:-}"
    [[ ${DEV[$d]} =~ ^/dev/sd[a-z]$ ]] || fail "disk $d in the guest: '${DEV[$d]}'"
done
for ((i = 0; i < 50; i++)); do (($(grep -c 'device-added' "$T/events.log" || true) >= 2)) && break; sleep 0.1; done
(($(grep -c 'device-added' "$T/events.log" || true) >= 2)) ||
    fail "the event monitor did not see the two hot-plugs: $(tail -n 3 "$T/events.log")"
pass "disks plain (${DEV[plain]}) and luks (${DEV[luks]}) attached through libvirt to the guest"

# ------------------------------------------------------------------ the guest's writers
# Two random patterns per disk (so that every pass changes every byte, and a write landing on
# the other disk shows), made in the guest: the host knows only their checksums.
sums=$(guest_run "$GUEST" "set -e
for d in ${DISKS[*]}; do
    head -c $((REGION_MIB << 20)) /dev/urandom >/tmp/\$d.0
    head -c $((REGION_MIB << 20)) /dev/urandom >/tmp/\$d.1
    md5sum /tmp/\$d.0 /tmp/\$d.1
done" 60) || fail "making the patterns in the guest: $sums"
declare -A SUM=()
for d in "${DISKS[@]}"; do
    for k in 0 1; do
        SUM[$d.$k]=$(awk -v f="/tmp/$d.$k" '$2 == f {print $1}' <<<"$sums")
        [[ ${SUM[$d.$k]} =~ ^[0-9a-f]{32}$ ]] || fail "checksum of the pattern $d.$k: $sums"
    done
done

# Pass p discards the region (NBD trims), writes pattern p % 2 with O_DIRECT in 64 KiB writes and
# flushes (dd's fsync: an NBD flush), reads the region back with O_DIRECT and compares its
# checksum; "ho: DISK pass p ok" on the console follows each. Beside it a reader reads the region
# in 4 KiB O_DIRECT reads without a pause: the guest's requests keep coming (several hundred a
# second per disk), so every hand-over's pause has requests arriving in it, not only the loop's
# gaps (the guest's single TCG vCPU spends most of a pass on md5sum). Both loops end at their
# first failure (saying which) or when /tmp/stop appears.
for d in "${DISKS[@]}"; do
    dev=${DEV[$d]}
    guest_run "$GUEST" "rm -f /tmp/stop; (
p=0
while [ ! -e /tmp/stop ]; do
    k=\$((p % 2))
    if ! blkdiscard -o 0 -l $((REGION_MIB << 20)) $dev 2>/tmp/$d.err; then
        echo \"ho: $d pass \$p discard failed: \$(tr '\\n' ' ' </tmp/$d.err)\"
        break
    fi
    if ! dd if=/tmp/$d.\$k of=$dev bs=64k oflag=direct conv=notrunc,fsync 2>/tmp/$d.err; then
        echo \"ho: $d pass \$p write failed: \$(grep -v records /tmp/$d.err | tr '\\n' ' ')\"
        break
    fi
    got=\$(dd if=$dev bs=1M count=$REGION_MIB iflag=direct 2>/tmp/$d.err | md5sum | cut -d' ' -f1)
    want=\$(md5sum </tmp/$d.\$k | cut -d' ' -f1)
    if [ \"\$got\" != \"\$want\" ]; then
        echo \"ho: $d pass \$p read back \$got, wrote \$want: \$(grep -v records /tmp/$d.err | tr '\\n' ' ')\"
        break
    fi
    echo \"ho: $d pass \$p ok\"
    p=\$((p + 1))
done
echo \"ho: $d stopped after \$p passes\"
) </dev/null >/dev/ttyS0 2>&1 &
(
while [ ! -e /tmp/stop ]; do
    if ! dd if=$dev of=/dev/null bs=4k count=$((REGION_MIB << 8)) iflag=direct 2>/tmp/$d.rerr; then
        echo \"ho: $d reader failed: \$(grep -v records /tmp/$d.rerr | tr '\\n' ' ')\"
        break
    fi
done
echo \"ho: $d reader stopped\"
) </dev/null >/dev/ttyS0 2>&1 &" 10 >/dev/null || fail "could not start the writer and reader of $d in the guest"
done

# passes DISK: how many passes DISK's loop has finished
passes() { grep -c "^ho: $1 pass [0-9]* ok" "$CONSOLE" || true; }
# fail_if_stopped: a loop that ended by itself failed: say why
fail_if_stopped() {
    local line
    line=$(grep -E '^ho: [a-z]+ (pass [0-9]+ (discard failed|write failed|read back)|stopped|reader)' "$CONSOLE" | head -n 1 | tr -d '\r') || true
    [[ -z $line ]] || fail "a writer in the guest stopped: $line"
}
# wait_passes N: until each disk's loop has finished N more passes than it had at the call (60 s
# at most)
wait_passes() {
    local d i
    local -A want=()
    for d in "${DISKS[@]}"; do want[$d]=$(($(passes "$d") + $1)); done
    for d in "${DISKS[@]}"; do
        for ((i = 0; i < 600; i++)); do
            (($(passes "$d") >= want[$d])) && break
            fail_if_stopped
            sleep 0.1
        done
        (($(passes "$d") >= want[$d])) || fail "disk $d: $(passes "$d") passes after 60 s, waiting for ${want[$d]}"
    done
}
wait_passes 1
info "first passes done: plain $(passes plain), luks $(passes luks)"

# ------------------------------------------------------------------ hand-overs under guest I/O
# conns PID: QEMU's connections as PID holds them: "gateway-inode peer-inode" per line, sorted
# (ss -x columns: netid state recv-q send-q local-address inode peer-address peer-inode users)
conns() {
    ss -xpnH | awk -v s="$S" -v p="pid=$1," '$2 == "ESTAB" && $5 == s && index($0, p) {print $6, $8}' | sort
}
# holder INODE: the name of the process holding the unix socket INODE
holder() { ss -xpnH | awk -v i="$1" '$6 == i' | grep -o '(("[^"]*"' | tr -d '("'; }
# wait_gone PID: the gateway that handed over exits by itself (10 s at most)
wait_gone() {
    local i
    for ((i = 0; i < 200; i++)); do _proc_running "$1" || return 0; sleep 0.05; done
    fail "gateway $1 still runs 10 s after it handed over"
}

# check_metrics WHAT: the serving gateway's counters (its metrics listener moves with each
# hand-over): every export has its one connection and has answered reads, writes, flushes and
# trims (the guest's loop makes all four), none with an error. Prints "export:requests ...".
check_metrics() {
    curl -sf --max-time 5 "http://127.0.0.1:$MPORT/metrics" >"$T/metrics.txt" || fail "$1: no metrics on port $MPORT"
    "$SYSPY" - "$T/metrics.txt" "${DISKS[@]}" <<'PY' || fail "$1: metrics"
import re, sys
text = open(sys.argv[1]).read()
def samples(name):
    for m in re.finditer(r"^%s\{([^}]*)\} (\S+)$" % name, text, re.M):
        yield dict(re.findall(r'(\w+)="([^"]*)"', m.group(1))), float(m.group(2))
out = []
for export in sys.argv[2:]:
    req = {l["type"]: v for l, v in samples("volgate_export_requests_total") if l["export"] == export}
    missing = [t for t in ("read", "write", "flush", "trim") if req.get(t, 0) == 0]
    if missing:
        sys.exit("export %s answered no %s requests: %s" % (export, "/".join(missing), req))
    errors = sum(v for l, v in samples("volgate_export_errors_total") if l["export"] == export)
    if errors:
        sys.exit("export %s answered %d requests with an error" % (export, errors))
    conns = [v for l, v in samples("volgate_export_connections") if l["export"] == export]
    if conns != [1]:
        sys.exit("export %s has connections %s, not 1" % (export, conns))
    out.append("%s:%d" % (export, sum(req.values())))
print(" ".join(out))
PY
}

restart() { "$VOLGATE" gateway restart --control "$CTL" --log "$T/restart.log" >>"$T/restart.out"; }
watch_log "$T/restart.log"
before=$(conns "$FIRST_PID")
assert_eq "$(wc -l <<<"$before")" 2 "connections the first gateway holds ($before)"
while read -r _ ino; do
    [[ $(holder "$ino") == qemu-system-* ]] || fail "the peer of a gateway connection is '$(holder "$ino")', not QEMU"
done <<<"$before"
old=$FIRST_PID
for i in $(seq 1 "$HANDOVERS"); do
    restart || fail "hand-over $i failed: $(tail -n 5 "$T/restart.log")"
    new=$(serving_pid)
    [[ $new != "$old" ]] || fail "hand-over $i: the gateway is still pid $old"
    took=$(grep -c "took over from pid $old: 2 exports, 2 connections" "$T/restart.log" || true)
    assert_eq "$took" 1 "hand-over $i: lines 'took over from pid $old: 2 exports, 2 connections'"
    if [[ $old == "$FIRST_PID" ]]; then stop_volgate "$old" none 10 0; else wait_gone "$old"; fi
    after=$(conns "$new")
    assert_eq "$after" "$before" "hand-over $i: QEMU's connections (gateway inode, QEMU inode) now held by pid $new"
    old=$new
    # The guest's I/O goes on through the new gateway before the next hand-over: every loop
    # finishes the pass it was in (which the hand-over paused) and one more.
    wait_passes 2
    info "hand-over $i: requests answered by pid $new: $(check_metrics "hand-over $i")"
done
pauses=$(grep -ho "after a pause of [0-9]* ms" "$T/restart.log" "$VG_ERR" | awk '{print $5}' | sort -n | tr '\n' ' ')
pass "$HANDOVERS hand-overs while the guest wrote and read both disks: each moved QEMU's 2 connections (same sockets); pauses (ms): $pauses"

# ------------------------------------------------------------------ stop, then check everything
guest_run "$GUEST" "touch /tmp/stop" 10 >/dev/null || fail "could not stop the writers"
for d in "${DISKS[@]}"; do
    for ((i = 0; i < 300; i++)); do
        grep -q "^ho: $d stopped after" "$CONSOLE" && grep -q "^ho: $d reader stopped" "$CONSOLE" && break
        sleep 0.1
    done
    grep -q "^ho: $d stopped after" "$CONSOLE" || fail "the writer of $d did not stop within 30 s"
    grep -q "^ho: $d reader stopped" "$CONSOLE" || fail "the reader of $d did not stop within 30 s"
done
refute_grep "a pass in the guest failed" -E '^ho: [a-z]+ (pass [0-9]+ (discard failed|write failed|read back)|reader failed)' "$CONSOLE"
declare -A LAST=()
for d in "${DISKS[@]}"; do
    n=$(grep "^ho: $d stopped after" "$CONSOLE" | tr -dc '0-9')
    assert_eq "$n" "$(passes "$d")" "passes of $d reported ok"
    LAST[$d]=$(((n - 1) % 2))
done

# The guest's kernel log: read (it holds the disks' attach lines), and no I/O error in it.
guest_run "$GUEST" dmesg 20 >"$T/dmesg.log" || fail "dmesg in the guest: $(tail -n 3 "$T/dmesg.log")"
grep -q "Attached SCSI disk" "$T/dmesg.log" || fail "the guest's kernel log does not show the disks: $(tail -n 5 "$T/dmesg.log")"
refute_grep "an I/O error in the guest's kernel log" -E "$IO_ERROR_RE" "$T/dmesg.log"
# libvirt's events: none of the io-error kind, and the domain was never paused or stopped.
refute_grep "an io-error event from libvirt" -i 'io-error' "$T/events.log"
refute_grep "a lifecycle event (pause, stop) from libvirt" -E "'lifecycle'" "$T/events.log"
assert_eq "$("${VIRSH[@]}" domstate "$GUEST")" running "the guest's state"
pass "no I/O error in the guest's kernel log, no io-error event from libvirt, the guest kept running"

# What the last pass wrote, read again in the guest and on the host (a new NBD connection to the
# gateway that the last hand-over made): both checksums are the pattern's.
"$SYSPY" "$INTEGRATION_DIR/luks_payload.py" decrypt "$T/luks.img" "$T/key" "$T/luks.payload"
declare -A RAW=([plain]=$T/plain.img [luks]=$T/luks.payload)
for d in "${DISKS[@]}"; do
    expect=${SUM[$d.${LAST[$d]}]}
    got=$(guest_run "$GUEST" "dd if=${DEV[$d]} bs=1M count=$REGION_MIB iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1" 30) ||
        fail "reading $d back in the guest: $got"
    assert_eq "$got" "$expect" "$d read back in the guest"
    got=$("$SYSPY" - "$(unix_uri "$d" "$S")" "$REGION_MIB" <<'EOF'
import hashlib, nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
print(hashlib.md5(h.pread(int(sys.argv[2]) << 20, 0)).hexdigest())
h.shutdown()
EOF
) || fail "reading $d on the host through NBD"
    assert_eq "$got" "$expect" "$d read on the host through NBD"
    got=$(head -c $((REGION_MIB << 20)) "${RAW[$d]}" | md5sum | cut -d' ' -f1)
    assert_eq "$got" "$expect" "$d in its file (luks: decrypted with python3-cryptography)"
done
pass "after $HANDOVERS hand-overs: $(passes plain) passes on plain, $(passes luks) on luks, all read back; the last is on both volumes (guest, NBD on the host, the files agree)"

# ------------------------------------------------------------------ the checks can fail
# Without a hand-over the same checks fire: the gateway SIGKILLed while the guest writes (what a
# crash does on libvirt 9.0: QEMU fails the guest's requests, see ENVIRONMENT.md) gives a failed
# write in the guest, I/O errors in its kernel log and an io-error event.
guest_run "$GUEST" "(
i=0
while [ \$i -lt 100 ]; do
    dd if=/tmp/plain.0 of=${DEV[plain]} bs=1M oflag=direct conv=notrunc 2>/dev/null || { echo \"ho: crash write \$i failed\"; break; }
    echo \"ho: crash write \$i ok\"
    i=\$((i + 1))
done
echo 'ho: crash writer stopped'
) </dev/null >/dev/ttyS0 2>&1 &" 10 >/dev/null || fail "could not start the last writer in the guest"
for ((i = 0; i < 300; i++)); do grep -q '^ho: crash write 0 ok' "$CONSOLE" && break; sleep 0.1; done
grep -q '^ho: crash write 0 ok' "$CONSOLE" || fail "the last writer did not get going: $(grep '^ho: crash' "$CONSOLE" | tail -n 2)"
pid=$(serving_pid) || fail "no gateway answers before the kill"
kill -KILL "$pid"
for ((i = 0; i < 300; i++)); do grep -q '^ho: crash writer stopped' "$CONSOLE" && break; sleep 0.1; done
grep -q '^ho: crash write [0-9]* failed' "$CONSOLE" ||
    fail "no write failed in the guest after the gateway was killed: $(grep '^ho: crash' "$CONSOLE" | tail -n 2)"
guest_run "$GUEST" dmesg 20 >"$T/dmesg.log" || fail "dmesg in the guest: $(tail -n 3 "$T/dmesg.log")"
grep -Eq "$IO_ERROR_RE" "$T/dmesg.log" || fail "the kernel log after a crash has no I/O error: $(tail -n 5 "$T/dmesg.log")"
for ((i = 0; i < 50; i++)); do grep -q "io-error" "$T/events.log" && break; sleep 0.1; done
grep -q "io-error" "$T/events.log" || fail "no io-error event after a crash: $(tail -n 3 "$T/events.log")"
pass "control: the gateway SIGKILLed instead of handed over fails a guest write, logs '$(grep -Eom 1 "$IO_ERROR_RE" "$T/dmesg.log")' in the guest's kernel and an io-error event"
pass "whole test: $(($(now_ms) - t_test)) ms"
