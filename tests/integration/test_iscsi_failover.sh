#!/usr/bin/env bash
# iSCSI multipath under faults, against tgtd behind one TCP relay per portal:
#  - fio (crc32c verify, depth 32) runs again and again while the paths are killed, reset,
#    frozen, restored, and all taken down at once for a moment: no I/O error, no verify failure,
#    and the preferred path is failed back to;
#  - stale writes: writes stuck in a frozen path are overtaken by newer data through the other
#    path; when the frozen path is released, the LUN must still hold the newer data. The same
#    run with reservations=off shows that the stuck writes really do arrive late (the hazard);
#  - round-robin spreads requests over both paths (the per-path counters in the log).
# ISCSI_FAULT_ROUNDS (default 2) sets how many times the fault sequence repeats.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/iscsi_lib.sh"
require_volgate
require_tool fio

IQN=iqn.2026-01.org.volgate.test:failover
LUN=$TEST_TMP/lun.img
truncate -s 64M "$LUN"
start_tgtd main 127.0.0.1
P=$TGTD_PORT
add_target main 1 "$IQN" "$LUN"
start_relay a "127.0.0.2:$P" "127.0.0.1:$P"
start_relay b "127.0.0.3:$P" "127.0.0.1:$P"
PORTALS="127.0.0.2:$P,127.0.0.3:$P"
S=$TEST_TMP/s.sock

# --- fio under faults -------------------------------------------------------------------------
start_volgate --unix "$S" --export "v=iscsi://$PORTALS/$IQN/1,path-check-interval=1"
U=$(unix_uri v "$S")
FIO_ARGS=(--name=faults --ioengine=nbd --uri="$U" --rw=randwrite --bsrange=4k-64k --iodepth=32
    --size=48M --verify=crc32c --verify_fatal=1 --verify_state_save=0 --output-format=json)

STOP=$TEST_TMP/stop-fio
(
    cd "$TEST_TMP"
    n=0
    while [[ ! -e $STOP ]]; do
        n=$((n + 1))
        rc=0
        timeout -k 5 120 fio "${FIO_ARGS[@]}" --do_verify=1 --output="fio.$n.json" >"fio.$n.log" 2>&1 || rc=$?
        if [[ $rc != 0 ]] || ! check_fio "fio.$n.json" >"fio.$n.check" 2>&1; then
            echo "run $n: exit code $rc: $(cat "fio.$n.check" 2>/dev/null) $(grep -v 'connected to NBD' "fio.$n.log" | tail -n 3)" >"$TEST_TMP/fio.failed"
            exit 1
        fi
        echo "$n" >"$TEST_TMP/fio.runs"
    done
) &
FIO_LOOP=$!
BG_PIDS+=("$FIO_LOOP")

fio_still_fine() {
    [[ ! -e $TEST_TMP/fio.failed ]] || fail "fio under faults: $(cat "$TEST_TMP/fio.failed")"
}
fio_runs() { cat "$TEST_TMP/fio.runs" 2>/dev/null || echo 0; }

# Each fault is followed by a wait (with a deadline far above what a loaded machine needs) for
# the log line that shows volgate handled it, so the next fault always meets the state it is
# meant for; the short sleeps only let fio's requests run in each state.
PATH0="path 0 127.0.0.2:$P"
PATH1="path 1 127.0.0.3:$P"
# expect PATTERN WHAT: one more log line matching PATTERN than before the fault, within 30 s
declare -A SEEN=()
expect() {
    SEEN[$1]=$((${SEEN[$1]:-$(log_count "$VG_ERR" "$1")} + 1))
    wait_for_log "$VG_ERR" "$1" 30 "$2" "${SEEN[$1]}"
}
expect_counts_from_now() {
    local pattern
    for pattern in "$PATH0: down" "$PATH0: up, failing back" "$PATH1: down" "$PATH1: up"; do
        SEEN[$pattern]=$(log_count "$VG_ERR" "$pattern")
    done
}

t0=$(now_ms)
expect_counts_from_now
for ((round = 1; round <= ${ISCSI_FAULT_ROUNDS:-2}; round++)); do
    runs_before=$(fio_runs)
    sleep 1
    kill_relay a          # the active path dies: failover to b
    expect "$PATH0: down" "failover after the active path died"
    sleep 1
    restore_relay a       # ...and comes back: failback to a
    expect "$PATH0: up, failing back" "failback after the path came back"
    sleep 1
    reset_relay a         # connection reset on the active path
    expect "$PATH0: down" "failover after a reset"
    expect "$PATH0: up, failing back" "failback after a reset"
    sleep 1
    freeze_relay a        # silent: requests time out
    expect "$PATH0: down" "failover from a frozen path"
    sleep 1
    thaw_relay a
    expect "$PATH0: up, failing back" "failback after the freeze"
    sleep 1
    reset_relay b         # the standby path is reset
    kill_relay b
    expect "$PATH1: down" "the standby path lost"
    restore_relay b
    expect "$PATH1: up" "the standby path back"
    sleep 1
    kill_relay a          # every path down for a moment (well under no-path-timeout)
    kill_relay b
    expect "$PATH0: down" "the active path lost with the standby"
    expect "$PATH1: down" "the standby path lost with the active"
    sleep 1.5
    restore_relay b
    restore_relay a
    expect "$PATH0: up, failing back" "failback after every path was down"
    expect "$PATH1: up" "the standby path back after every path was down"
    # fio got through the round: a run that was going during its faults has finished (and verified).
    deadline=$(($(now_ms) + 300000))
    until (($(fio_runs) > runs_before)); do
        fio_still_fine
        (($(now_ms) < deadline)) || fail "no fio run finished in 300 s since the start of round $round"
        sleep 0.2
    done
    fio_still_fine
    info "fault round $round done after $(($(now_ms) - t0)) ms, $(fio_runs) fio runs so far"
done
touch "$STOP"
wait "$FIO_LOOP" || true
fio_still_fine
runs=$(fio_runs)
# A new connection verifies what the last run wrote, with every path healthy again.
(cd "$TEST_TMP" && fio "${FIO_ARGS[@]}" --verify_only --output=fio.final.json >fio.final.log 2>&1) ||
    fail "final verify_only pass: $(tail -n 3 "$TEST_TMP/fio.final.log")"
"$SYSPY" -c "import json,sys; j=json.load(open('$TEST_TMP/fio.final.json'))['jobs'][0]; sys.exit(j['error'] or j.get('total_err', 0) or j['read']['io_bytes'] != 48 << 20)" ||
    fail "final verify_only pass reported errors"
stop_volgate
refute_grep "a request failed with EIO during the faults" "failed with EIO" "$VG_ERR"
failovers=$(log_count "$VG_ERR" "$PATH0: down")
failbacks=$(log_count "$VG_ERR" "$PATH0: up, failing back to it")
pass "$runs fio runs (crc32c, depth 32) with no error through $failovers failovers and $failbacks failbacks; counters: path 0 [$(path_counters "$VG_ERR" 0)], path 1 [$(path_counters "$VG_ERR" 1)]"

# --- stale writes -----------------------------------------------------------------------------
# pattern BYTE_HEX: 256 concurrent 4 KiB writes over the first MiB, then a flush
pattern() {
    "$SYSPY" - "$U" "$1" <<'EOF'
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
block = bytes([int(sys.argv[2], 16)]) * 4096
for i in range(256):
    h.aio_pwrite(block, i * 4096)
while h.aio_in_flight() > 0:
    h.poll(-1)
h.flush()
h.shutdown()
EOF
}
# bytes_of BYTE_HEX: how many bytes of the LUN's first MiB hold BYTE
bytes_of() {
    "$SYSPY" -c "import sys; print(open(sys.argv[1], 'rb').read(1 << 20).count(bytes([int(sys.argv[2], 16)])))" "$LUN" "$1"
}

# stale_write_run OPTIONS: old data, then writes stuck in frozen path a while path b takes
# newer data; then a is released. Sets STALE to the bytes of the stuck data found in the LUN and
# STUCK_MS to how long the stuck writes took (io-timeout, then the resend through b).
stale_write_run() {
    start_volgate --unix "$S" --export "v=iscsi://$PORTALS/$IQN/1,path-check-interval=1$1"
    U=$(unix_uri v "$S")
    pattern aa
    freeze_relay a
    local t ms
    t=$(now_ms)
    pattern bb          # stuck in a until it times out, then sent again through b
    ms=$(($(now_ms) - t))
    STUCK_MS=$ms
    pattern cc          # the newest data, through b
    thaw_relay a        # whatever a still holds is delivered now
    wait_for_log "$VG_ERR" "$PATH0: up, failing back" 30 "path a back after the freeze"
    # The relay hands on what it held and closes the frozen session's connection; tgtd is done
    # with that session (it has carried out or refused everything it got) when it drops it,
    # leaving the two live sessions of the paths.
    local deadline=$(($(now_ms) + 30000))
    until (($(tgt_sessions main) <= 2)); do
        (($(now_ms) < deadline)) || fail "tgtd still holds $(tgt_sessions main) sessions 30 s after the release"
        sleep 0.05
    done
    stop_volgate
    STALE=$(bytes_of bb)
    [[ $(($(bytes_of cc) + STALE)) == $((1 << 20)) ]] || fail "the LUN's first MiB holds neither the newer nor the stuck data"
    info "writes stuck for $ms ms; $STALE bytes of the stuck data in the LUN after the release"
}

stale_write_run ",reservations=off"
((STALE > 0)) || fail "with reservations off, no stuck write arrived late: the relay did not reproduce the hazard, so the next check would prove nothing"
pass "hazard reproduced without fencing: $STALE bytes of stuck writes overwrote newer data"
((STUCK_MS >= 3000)) || fail "stuck writes took $STUCK_MS ms: less than the default io-timeout (3 s)"
grep -q "$PATH0: down (preferred): a request got no answer within 3000 ms" "$VG_ERR" ||
    fail "the frozen path was not given up after the default io-timeout: $(grep -m1 "$PATH0: down" "$VG_ERR")"
stale_write_run ",io-timeout=1"
assert_eq "$STALE" 0 "bytes of stuck writes that landed after newer data, with fencing"
grep -q "preempted the reservation key" "$VG_ERR" || fail "no log line for the preempted session"
pass "with fencing, the released path's stuck writes never land: the LUN holds the newer data"
# That io-timeout=1 was used shows in the reason (the time itself is only bounded from below).
grep -q "$PATH0: down (preferred): a request got no answer within 1000 ms" "$VG_ERR" ||
    fail "with io-timeout=1 the frozen path was not given up after 1000 ms: $(grep -m1 "$PATH0: down" "$VG_ERR")"
((STUCK_MS >= 1000)) || fail "with io-timeout=1 the stuck writes took only $STUCK_MS ms"
pass "io-timeout=1: the stuck writes went through the other path after $STUCK_MS ms (default 3 s)"

# --- round-robin ------------------------------------------------------------------------------
start_volgate --unix "$S" --export "v=iscsi://$PORTALS/$IQN/1,path-policy=round-robin"
U=$(unix_uri v "$S")
(cd "$TEST_TMP" && fio --name=rr --ioengine=nbd --uri="$U" --rw=randwrite --bs=4k --iodepth=32 \
    --size=16M --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 \
    --output-format=json --output=rr.json >"$TEST_TMP/rr.log" 2>&1) ||
    fail "fio with round-robin: $(tail -n 3 "$TEST_TMP/rr.log")"
check_fio "$TEST_TMP/rr.json" || fail "fio with round-robin reported errors"
stop_volgate
ios0=$(path_ios "$VG_ERR" 0)
ios1=$(path_ios "$VG_ERR" 1)
total=$((ios0 + ios1))
((total >= 8192)) || fail "round-robin: only $total requests counted"
((ios0 * 10 >= total * 4 && ios1 * 10 >= total * 4)) || fail "round-robin: uneven split $ios0 / $ios1"
pass "round-robin spreads requests over both paths: $ios0 and $ios1"
