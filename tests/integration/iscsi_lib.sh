# shellcheck shell=bash disable=SC2034  # variables here are used by the scripts that source this file
# iSCSI helpers for the integration tests, on top of lib.sh: a private tgtd (the user-space
# target) and one TCP relay per portal that the test can kill, reset, freeze and restore.
#   . "$(dirname "$0")/lib.sh"; . "$(dirname "$0")/iscsi_lib.sh"
#
# Every tgtd gets its own control socket (TGT_IPC_SOCKET) and a free port, so tests can run
# next to other tgtd instances. tgtd ignores SIGTERM; the EXIT trap kills it (BG_PIDS).

require_tool tgtd tgtadm

TGTD_PORT=        # the port of the most recently started tgtd
declare -A TGTD_IPC=()     # tgtd name -> its control socket
declare -A RELAY_PID=()    # relay name -> pid
declare -A RELAY_ARGS=()   # relay name -> "LISTEN TARGET [OPTIONS]", to restart it

# start_tgtd NAME HOST...: a tgtd listening on a free port on every HOST; sets TGTD_PORT.
start_tgtd() {
    local name=$1 host portals='' port i
    shift
    port=$(free_tcp_port)
    for host in "$@"; do portals+="${portals:+,}portal=$host:$port"; done
    TGTD_IPC[$name]=$TEST_TMP/tgtd-$name.ipc
    TGT_IPC_SOCKET=${TGTD_IPC[$name]} tgtd -f --iscsi "$portals" >"$TEST_TMP/tgtd-$name.log" 2>&1 &
    BG_PIDS+=($!)
    for ((i = 0; i < 100; i++)); do
        tgt "$name" --op show --mode sys >/dev/null 2>&1 && break
        sleep 0.05
    done
    tgt "$name" --op show --mode sys >/dev/null 2>&1 || fail "tgtd $name did not start: $(tail -n 3 "$TEST_TMP/tgtd-$name.log")"
    TGTD_PORT=$port
}

# tgt NAME TGTADM_ARGS...: tgtadm against tgtd NAME
tgt() {
    local name=$1
    shift
    TGT_IPC_SOCKET=${TGTD_IPC[$name]} tgtadm --lld iscsi "$@"
}

# add_target TGTD TID IQN BACKING_FILE: a target with LUN 1 on the file, open to every initiator
add_target() {
    tgt "$1" --op new --mode target --tid "$2" -T "$3" || fail "cannot create target $3"
    tgt "$1" --op new --mode logicalunit --tid "$2" --lun 1 -b "$4" || fail "cannot add LUN 1 to $3"
    tgt "$1" --op bind --mode target --tid "$2" -I ALL || fail "cannot open $3 to initiators"
}

# require_chap TGTD TID USER SECRET [TARGET_USER TARGET_SECRET]: the target asks initiators for
# CHAP (and, with the last two, answers the initiator's challenge: mutual CHAP)
require_chap() {
    tgt "$1" --op new --mode account --user "$3" --password "$4" || fail "cannot create CHAP account $3"
    tgt "$1" --op bind --mode account --tid "$2" --user "$3" || fail "cannot bind CHAP account $3"
    if [[ -n ${5:-} ]]; then
        tgt "$1" --op new --mode account --user "$5" --password "$6" || fail "cannot create CHAP account $5"
        tgt "$1" --op bind --mode account --tid "$2" --user "$5" --outgoing || fail "cannot bind outgoing account $5"
    fi
}

# tgt_sessions NAME: how many sessions (I_T nexus) tgtd NAME holds, over all its targets
tgt_sessions() {
    local n
    n=$(tgt "$1" --op show --mode target | grep -c "I_T nexus:") || true
    echo "${n:-0}"
}

# start_relay NAME LISTEN_HOST:PORT TARGET_HOST:PORT [RELAY_OPTIONS...]: the relay's output
# (with --iscsi, what it saw on the wire; see tcp_relay.py) goes to $TEST_TMP/relay-NAME.out
start_relay() {
    local name=$1 out=$TEST_TMP/relay-$1.out
    shift
    RELAY_ARGS[$name]="$*"
    "$SYSPY" "$INTEGRATION_DIR/tcp_relay.py" "$@" >"$out" 2>&1 &
    RELAY_PID[$name]=$!
    BG_PIDS+=($!)
    wait_for_line "$out" listening "relay $name"
}

# kill_relay NAME: the path dies (both connections closed by the kernel, nothing listens)
kill_relay() {
    kill -KILL "${RELAY_PID[$1]}" 2>/dev/null || true
    wait "${RELAY_PID[$1]}" 2>/dev/null || true
}

# restore_relay NAME: after kill_relay, the path works again
restore_relay() {
    # shellcheck disable=SC2086  # several words on purpose (no spaces inside any)
    start_relay "$1" ${RELAY_ARGS[$1]}
}

reset_relay() { kill -USR1 "${RELAY_PID[$1]}"; }    # RST on every connection
freeze_relay() { kill -STOP "${RELAY_PID[$1]}"; }   # nothing moves, nothing is refused
thaw_relay() { kill -CONT "${RELAY_PID[$1]}"; }

# path_counters LOG PATH_INDEX: the last "[state ..., ios N, errors N, failovers N]" of a path
path_counters() {
    grep -E ": path $2 [^ ]+: " "$1" | tail -n 1 | sed -E 's/.*\[(.*)\]$/\1/'
}

# path_ios LOG PATH_INDEX: that path's completed requests, from its last log line
path_ios() { path_counters "$1" "$2" | sed -E 's/.*ios ([0-9]+).*/\1/'; }

# wait_for_log LOG REGEX SECONDS WHAT [COUNT]: waits until the server logged COUNT (default 1)
# lines matching REGEX
wait_for_log() {
    local deadline=$(($(now_ms) + $3 * 1000)) want=${5:-1}
    until (($(log_count "$1" "$2") >= want)); do
        (($(now_ms) < deadline)) ||
            fail "$4: $(log_count "$1" "$2") of $want log lines matching '$2' within $3 s; log: $(tail -n 5 "$1" 2>/dev/null)"
        sleep 0.05
    done
}

# log_count LOG REGEX: how many lines of LOG match REGEX (0 while LOG does not exist)
log_count() {
    local n
    n=$(grep -Ec -- "$2" "$1" 2>/dev/null) || true
    echo "${n:-0}"
}

# check_fio JSON: fio's JSON output shows no job error, no I/O error, and every byte written
# was verified (read back)
check_fio() {
    "$SYSPY" - "$1" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
for j in d["jobs"]:
    errors = (j["error"], j["write"].get("total_err", 0), j["read"].get("total_err", 0),
              j.get("total_err", 0))
    if any(errors):
        sys.exit("job error %d, write errors %d, read errors %d, total errors %d" % errors)
    if j["read"]["io_bytes"] != j["write"]["io_bytes"] or j["write"]["io_bytes"] == 0:
        sys.exit("verified %d of %d bytes" % (j["read"]["io_bytes"], j["write"]["io_bytes"]))
EOF
}
