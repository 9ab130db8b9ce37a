#!/usr/bin/env bash
# A gateway killed with SIGKILL leaves its reservation keys on the LUN, and the reservation held
# by one of them. Restarted on the same host, it must recognise those keys as its own, preempt
# them before any request, serve I/O at once, and leave the keys of other hosts alone; after its
# clean exit the LUN is free for an initiator that never registers (qemu-io's iscsi driver).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/iscsi_lib.sh"
require_volgate
require_tool fio qemu-io

IQN=iqn.2026-01.org.volgate.test:restart
LUN=$TEST_TMP/lun.img
truncate -s 64M "$LUN"
start_tgtd main 127.0.0.1 127.0.0.2
P=$TGTD_PORT
add_target main 1 "$IQN" "$LUN"
SPEC="v=iscsi://127.0.0.1:$P,127.0.0.2:$P/$IQN/1,path-check-interval=1"
S=$TEST_TMP/s.sock
S_OTHER=$TEST_TMP/other.sock

# keys_of LOG: the reservation keys a gateway logged for its paths, one a line
keys_of() { grep -E ': up' "$1" | grep -Eo 'reservation key 0x[0-9a-f]+' | awk '{print $3}' | sort -u; }
# same_host KEY KEY: the two keys have the same host part (the upper 32 bits)
same_host() { (($1 >> 32 == $2 >> 32)); }

# write_and_check URI BYTE_HEX OFFSET: one 64 KiB write through NBD, then the LUN file holds it
write_and_check() {
    "$SYSPY" - "$1" "$2" "$3" <<'EOF' || fail "write of $2 at $3 through $1"
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(bytes([int(sys.argv[2], 16)]) * 65536, int(sys.argv[3]))
h.flush()
h.shutdown()
EOF
    "$SYSPY" -c "import sys; f=open(sys.argv[1],'rb'); f.seek(int(sys.argv[3])); sys.exit(f.read(65536) != bytes([int(sys.argv[2],16)])*65536)" "$LUN" "$2" "$3" ||
        fail "the LUN does not hold the $2 written at $3"
}

# The first run takes the reservation; a gateway of "another host" (another initiator name,
# so another host part in its keys) registers beside it.
start_volgate --unix "$S" --export "$SPEC"
FIRST_PID=$VG_PID FIRST_LOG=$VG_ERR
U=$(unix_uri v "$S")
start_volgate --unix "$S_OTHER" --export "$SPEC,initiator-name=iqn.2026-01.org.volgate.test:elsewhere"
OTHER_PID=$VG_PID OTHER_LOG=$VG_ERR
write_and_check "$(unix_uri v "$S_OTHER")" 11 0
mapfile -t first_keys < <(keys_of "$FIRST_LOG")
mapfile -t other_keys < <(keys_of "$OTHER_LOG")
assert_eq "${#first_keys[@]}" 2 "keys registered by the first run (one per path)"
same_host "${first_keys[0]}" "${other_keys[0]}" && fail "another initiator's keys share our host part"

# SIGKILL in the middle of fio: no clean exit, the keys and the reservation stay. The kill comes
# once fio reports writes being answered (its progress line, every second), not after a guess.
(cd "$TEST_TMP" && timeout -k 5 60 fio --name=killed --ioengine=nbd --uri="$U" --rw=randwrite --bs=4k \
    --iodepth=32 --size=32M --time_based --runtime=30 --eta=always --eta-newline=1 >fio.log 2>&1) &
FIO_PID=$!
BG_PIDS+=("$FIO_PID")
wait_for_line "$TEST_TMP/fio.log" '\[w=[1-9][0-9.]*k\{0,1\} IOPS\]' "fio's writes"
kill -KILL "$FIRST_PID"
wait "$FIRST_PID" 2>/dev/null || true
_forget_pid "$FIRST_PID"
wait "$FIO_PID" 2>/dev/null || true

t=$(now_ms)
start_volgate --unix "$S" --export "$SPEC"
write_and_check "$U" 22 4096
info "restarted and served a write in $(($(now_ms) - t)) ms"
mapfile -t preempted < <(grep -Eo 'reservation key 0x[0-9a-f]+ was left by an earlier run' "$VG_ERR" | awk '{print $3}' | sort -u)
assert_eq "${preempted[*]}" "${first_keys[*]}" "keys preempted by the restarted gateway"
refute_grep "the restarted gateway lost a path" -E 'path [01] [^ ]+: down' "$VG_ERR"
# Its sessions logged in under the killed run's reservation: MODE SENSE, asked once they are
# registrants, still shows tgtd's DPOFUA.
refute_grep "the restarted gateway took tgtd for a target without DPOFUA" "does not honour FUA" "$VG_ERR"
new_key=$(keys_of "$VG_ERR" | head -n 1)
same_host "$new_key" "${first_keys[0]}" || fail "the host part of the keys changed across the restart: $new_key vs ${first_keys[*]}"
pass "restart after SIGKILL: preempted exactly its own ${#preempted[@]} old keys, I/O at once"

# The other host's registration stands: its writes go through without a path failure.
write_and_check "$(unix_uri v "$S_OTHER")" 33 8192
refute_grep "the other gateway lost a path" -E ': down' "$OTHER_LOG"
for key in "${preempted[@]}"; do
    [[ " ${other_keys[*]} " != *" $key "* ]] || fail "preempted another host's key $key"
done
pass "the other host's keys were left alone"

# Clean exits drop every key, so the reservation the killed run held is gone too.
stop_volgate
stop_volgate "$OTHER_PID"
qemu-io -f raw -c "write -P 0x44 12288 4096" "iscsi://127.0.0.1:$P/$IQN/1" >"$TEST_TMP/qemu-io.log" 2>&1 ||
    fail "an unregistered initiator cannot write after the gateways stopped: $(tail -n 2 "$TEST_TMP/qemu-io.log")"
pass "after the clean exits the LUN takes writes from an initiator without a key"
