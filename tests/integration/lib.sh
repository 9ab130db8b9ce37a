# shellcheck shell=bash disable=SC2034  # variables here are used by the scripts that source this file
# Shared helpers for volgate's integration tests. Source it from a test script:
#   . "$(dirname "$0")/lib.sh"
#
# Environment:
#   VOLGATE            path of the binary under test (default: <repo>/build/volgate)
#   VOLGATE_KEEP_TMP=1 keep the temporary directories after the test (for debugging)
#   VOLGATE_DISK_TMPDIR where to put files that need a real (O_DIRECT-capable) filesystem
#
# Every test gets one scratch directory in RAM ($TEST_TMP, under /dev/shm when possible) and,
# on request (need_disk_tmpdir), one on a disk filesystem ($DISK_TMP) for `direct` exports.
# Every server started with start_volgate is stopped by the EXIT trap if the test did not stop it,
# and the test fails if the log of any volgate it started holds a sanitizer report.

# Intentionally no `set -euo pipefail` here: the test scripts set it themselves.

INTEGRATION_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$INTEGRATION_DIR/../.." && pwd)
VOLGATE=${VOLGATE:-$REPO_ROOT/build/volgate}
# The python on PATH may be a pyenv build without libnbd: always use the system one.
SYSPY=/usr/bin/python3
# In a TSan build: the accesses uninstrumented libraries (Ceph, libvirt, OpenSSL...) make through
# memcpy, free and the like are not recorded, the locks they take still are, and every access of
# volgate's own code is checked; tsan.supp says why this replaces suppressing those libraries.
export TSAN_OPTIONS="${TSAN_OPTIONS:+$TSAN_OPTIONS:}ignore_noninstrumented_modules=1:suppressions=$INTEGRATION_DIR/tsan.supp"
# In an ASan build: a leak inside libiscsi that volgate cannot avoid (see the file).
export LSAN_OPTIONS="${LSAN_OPTIONS:+$LSAN_OPTIONS:}suppressions=$INTEGRATION_DIR/lsan.supp:print_suppressions=0"
# Python snippets in the tests import helpers (nbd_go) from this directory.
export PYTHONPATH=$INTEGRATION_DIR${PYTHONPATH:+:$PYTHONPATH}
# /usr/bin/nbdsh runs `python3 -m nbd` with whatever python3 is first on PATH: pin the system one.
nbdsh() { "$SYSPY" -m nbd "$@"; }
TEST_NAME=$(basename "$0")

VG_PIDS=()        # every volgate started and not yet reaped
BG_PIDS=()        # other background helpers to kill on exit
VG_COUNT=0
VG_PID=           # the most recently started server
VG_OUT=           # its stdout (the URI lines)
VG_ERR=           # its stderr (the log)
VG_LOGS=()        # every stderr log, dumped when a test fails
declare -A VG_LOG_OF=()  # pid -> its stderr log

fail() {
    echo "FAIL [$TEST_NAME]: $*" >&2
    exit 1
}

pass() {
    echo "ok   [$TEST_NAME]: $*"
}

info() {
    echo "..   [$TEST_NAME]: $*"
}

# assert_eq ACTUAL EXPECTED WHAT
assert_eq() {
    [[ "$1" == "$2" ]] || fail "$3: expected '$2', got '$1'"
}

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# field KEY: the value in the row KEY of a table the OpenStack CLIs (cinder, nova) print, read
# on standard input
field() { awk -F'|' -v k="$1" '{key=$2; gsub(/^ +| +$/, "", key)} key == k {v=$3; gsub(/^ +| +$/, "", v); print v; exit}'; }

_make_tmp() {
    local base
    for base in /dev/shm "${TMPDIR:-/tmp}"; do
        if [[ -d $base && -w $base ]]; then
            mktemp -d "$base/volgate-it.XXXXXX" && return 0
        fi
    done
    mktemp -d
}

TEST_TMP=$(_make_tmp) || { echo "cannot create a temporary directory" >&2; exit 1; }
DISK_TMP=

# need_disk_tmpdir: sets DISK_TMP to a scratch directory for `direct` exports: O_DIRECT must work
# there, and a disk filesystem (not tmpfs) is preferred so that direct I/O really reaches a disk.
need_disk_tmpdir() {
    [[ -n $DISK_TMP ]] && return 0
    local pass base d fstype
    for pass in disk any; do
        for base in "${VOLGATE_DISK_TMPDIR:-}" /var/tmp "$HOME" /var/cache "$REPO_ROOT/build"; do
            [[ -n $base && -d $base && -w $base ]] || continue
            fstype=$(stat -f -c %T "$base" 2>/dev/null || echo unknown)
            [[ $pass == any || $fstype != tmpfs ]] || continue
            d=$(mktemp -d "$base/volgate-it-disk.XXXXXX" 2>/dev/null) || continue
            if dd if=/dev/zero of="$d/probe" bs=4096 count=1 oflag=direct status=none 2>/dev/null; then
                rm -f "$d/probe"
                DISK_TMP=$d
                return 0
            fi
            rm -rf "$d"
        done
    done
    fail "no writable directory on a filesystem supporting O_DIRECT (set VOLGATE_DISK_TMPDIR)"
}

_proc_running() {
    # true while PID exists and is not a zombie (a child that exited but was not reaped yet)
    local st
    st=$(sed -E 's/^.*\) (.).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $st && $st != Z && $st != X ]]
}

_forget_pid() {
    local p keep=()
    for p in "${VG_PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    VG_PIDS=("${keep[@]}")
}

_cleanup() {
    local rc=$?
    set +e
    local p i
    # Servers first, while the storage daemons among the helpers (tgtd, Ceph) still run: the
    # log of a failed test then ends with what the test saw, not with the paths we cut here.
    for p in "${VG_PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null
        for ((i = 0; i < 50; i++)); do _proc_running "$p" || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    for p in "${BG_PIDS[@]}"; do
        kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    # Gateways a controller started (--gateway) run in sessions of their own and may outlive it.
    pkill -KILL -f -- "serve --control $TEST_TMP/" 2>/dev/null
    # So may the ones `volgate gateway restart` started (a hand-over, in a session of its own).
    pkill -KILL -f -- "serve --take-over $TEST_TMP/" 2>/dev/null
    # A started gateway logs into its state directory.
    for p in "$TEST_TMP"/*/gateway.log; do [[ -f $p ]] && VG_LOGS+=("$p"); done
    # Every process is gone now, however it ended: a report any of them wrote fails the test.
    if ! _scan_sanitizer_reports "${VG_LOGS[@]}"; then
        ((rc != 0)) || rc=1
    fi
    if ((rc != 0)); then
        for p in "${VG_LOGS[@]}"; do
            if [[ -s $p ]]; then
                echo "---- last lines of $p ----" >&2
                tail -n 30 "$p" >&2
            fi
        done
    fi
    if [[ ${VOLGATE_KEEP_TMP:-0} == 1 ]]; then
        echo "keeping $TEST_TMP ${DISK_TMP}" >&2
    else
        rm -rf "$TEST_TMP"
        [[ -n $DISK_TMP ]] && rm -rf "$DISK_TMP"
    fi
    exit "$rc"
}
trap _cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

require_volgate() {
    [[ -x $VOLGATE ]] || fail "volgate binary not found at '$VOLGATE' (build it, or set VOLGATE=/path/to/volgate)"
}

# require_tool NAME... : fail clearly when a client tool is missing
require_tool() {
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 || fail "required tool '$t' is not installed"
    done
}

# free_tcp_port: prints a TCP port on 127.0.0.1 that was free a moment ago
free_tcp_port() {
    "$SYSPY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_controller CONFIG SOCKET [STDOUT-PATTERN [ARGS...]]: runs `volgate controller --config
# CONFIG ARGS...` in the background until its API socket exists (and, given a pattern, until a
# line of its stdout matches it, e.g. '^http://' for a TCP listener). Sets CTL_PID and VG_ERR; its stderr is $TEST_TMP/controller.N.err
# (dumped if the test fails), its stdout controller.N.out beside it.
start_controller() {
    local config=$1 socket=$2 pattern=${3:-}
    shift $(($# < 3 ? $# : 3))
    local out=$TEST_TMP/controller.$VG_COUNT.out err=$TEST_TMP/controller.$VG_COUNT.err
    VG_COUNT=$((VG_COUNT + 1))
    VG_LOGS+=("$err")
    "$VOLGATE" controller --config "$config" "$@" >"$out" 2>"$err" &
    CTL_PID=$!
    VG_PIDS+=("$CTL_PID")
    VG_LOG_OF[$CTL_PID]=$err
    VG_ERR=$err
    local i
    for ((i = 0; i < 200; i++)); do
        _proc_running "$CTL_PID" || fail "controller exited before it was ready: $(tail -n 3 "$err")"
        [[ -S $socket ]] && { [[ -z $pattern ]] || grep -q -- "$pattern" "$out" 2>/dev/null; } && return 0
        sleep 0.05
    done
    fail "controller not ready within 10 s"
}

# unwrap_key STATE_DIR VOLUME_ID OUT: writes the passphrase of an encrypted volume to OUT,
# unwrapped from the controller's database row with its master key, independently of volgate.
unwrap_key() {
    local state=$1 id=$2 out=$3
    sqlite3 "$state/controller.db" "SELECT hex(wrapped_key) FROM volumes WHERE id = '$id'" >"$TEST_TMP/wrapped.hex"
    "$SYSPY" - "$state/master.key" "$TEST_TMP/wrapped.hex" "$id" "$out" <<'PY'
import sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
key = open(sys.argv[1], "rb").read()
blob = bytes.fromhex(open(sys.argv[2]).read().strip())
assert blob[0] == 1, "wrapped key version"
secret = AESGCM(key).decrypt(blob[1:13], blob[13:], sys.argv[3].encode())
open(sys.argv[4], "wb").write(secret)
PY
}

# start_volgate SERVE_ARGS...
# Runs `$VOLGATE serve SERVE_ARGS...` in the background and waits (VG_READY_S seconds, default
# 30: a sanitizer build under load can take over 10 s to open a LUKS1 container) until it has printed one URI line per export per listener, every --unix socket exists and every --fuse DIR is mounted.
# Sets VG_PID, VG_OUT, VG_ERR.
start_volgate() {
    require_volgate
    local n=$VG_COUNT
    VG_COUNT=$((VG_COUNT + 1))
    VG_OUT="$TEST_TMP/volgate.$n.out"
    VG_ERR="$TEST_TMP/volgate.$n.err"
    VG_LOGS+=("$VG_ERR")
    local nexp=0 nlis=0 a prev='' socks=() mounts=()
    for a in "$@"; do
        case $prev in
            --unix) socks+=("$a") ;;
            --fuse) mounts+=("$a") ;;
        esac
        case $a in
            --export | --export=*) nexp=$((nexp + 1)) ;;
            --unix | --listen) nlis=$((nlis + 1)) ;;
            --unix=*) nlis=$((nlis + 1)); socks+=("${a#--unix=}") ;;
            --listen=*) nlis=$((nlis + 1)) ;;
            --fuse=*) mounts+=("${a#--fuse=}") ;;
        esac
        prev=$a
    done
    local want=$((nexp * nlis))
    "$VOLGATE" ${VG_LOG_LEVEL:+--log-level "$VG_LOG_LEVEL"} serve "$@" >"$VG_OUT" 2>"$VG_ERR" &
    VG_PID=$!
    VG_PIDS+=("$VG_PID")
    VG_LOG_OF[$VG_PID]=$VG_ERR
    local ready_s=${VG_READY_S:-30}
    local deadline=$(($(now_ms) + ready_s * 1000)) got s ready
    while :; do
        if ! _proc_running "$VG_PID"; then
            local rc=0
            wait "$VG_PID" || rc=$?
            _forget_pid "$VG_PID"
            fail "volgate exited (code $rc) before it was ready; args: $*; stderr: $(tail -n 5 "$VG_ERR")"
        fi
        got=$(grep -c '^nbd' "$VG_OUT" 2>/dev/null || true)
        ready=1
        ((got >= want)) || ready=0
        for s in "${socks[@]}"; do [[ -S $s ]] || ready=0; done
        for s in "${mounts[@]}"; do mountpoint -q "$s" || ready=0; done
        ((ready)) && break
        (($(now_ms) < deadline)) || fail "volgate not ready within $ready_s s ($got of $want URI lines); args: $*"
        sleep 0.05
    done
}

# stop_volgate [PID] [SIGNAL] [TIMEOUT_S] [EXPECTED_RC]
# Sends SIGNAL (default TERM; "none" sends nothing, e.g. when the test signalled the server
# itself), waits TIMEOUT_S (default 10) for the exit, asserts its exit code (default 0).
# Sets VG_STOP_MS to the time the exit took.
stop_volgate() {
    local pid=${1:-$VG_PID} sig=${2:-TERM} timeout=${3:-10} want=${4:-0}
    local t0 rc=0
    t0=$(now_ms)
    [[ $sig == none ]] || kill -s "$sig" "$pid" 2>/dev/null || true
    while _proc_running "$pid"; do
        if (($(now_ms) - t0 > timeout * 1000)); then
            kill -KILL "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
            _forget_pid "$pid"
            fail "volgate (pid $pid) still running ${timeout} s after SIG$sig"
        fi
        sleep 0.02
    done
    wait "$pid" || rc=$?
    _forget_pid "$pid"
    VG_STOP_MS=$(($(now_ms) - t0))
    [[ $rc == "$want" ]] || fail "volgate (pid $pid) exited with code $rc after SIG$sig, expected $want"
    check_sanitizer_reports "$pid"
}

# What a sanitizer build writes when it finds something: the first line of an ASan, LeakSanitizer
# or TSan report, or a UBSan runtime error (which does not stop the process unless halt_on_error).
SANITIZER_REPORT_RE='runtime error:|(ERROR|WARNING): [A-Za-z]*Sanitizer:'

# _scan_sanitizer_reports LOG...: prints a FAIL line and the start of the report for each LOG that
# holds a sanitizer report; false if any does. The EXIT trap runs it on the log of every volgate
# the test started (start_volgate, start_controller, watch_log, the gateways of controllers),
# whether it was stopped, SIGKILLed or still running: SIGKILL only prevents the reports due at
# exit (LeakSanitizer's, TSan's summary), not the ones a process wrote while it ran.
_scan_sanitizer_reports() {
    local f found=0
    local -A seen=()
    for f in "$@"; do
        [[ -n ${seen[$f]:-} || ! -f $f ]] && continue
        seen[$f]=1
        grep -Eq "$SANITIZER_REPORT_RE" "$f" || continue
        found=1
        echo "FAIL [$TEST_NAME]: sanitizer report in $f:" >&2
        grep -Em 1 -A 15 "$SANITIZER_REPORT_RE" "$f" | sed 's/^/    /' >&2
    done
    ((found == 0))
}

# check_sanitizer_reports PID: fails at once when the log of that volgate holds a sanitizer report
# (stop_volgate runs it; the EXIT trap checks every log again, also of killed servers).
check_sanitizer_reports() {
    local log=${VG_LOG_OF[$1]:-}
    [[ -n $log && -f $log ]] || return 0
    # The EXIT trap that fail runs prints the report.
    if grep -Eq "$SANITIZER_REPORT_RE" "$log"; then fail "sanitizer report in the log of volgate (pid $1)"; fi
}

# watch_log LOG: a volgate the test started by hand logs to LOG: the EXIT trap checks it too.
watch_log() { VG_LOGS+=("$1"); }

# assert_alive [PID]
assert_alive() {
    local pid=${1:-$VG_PID}
    _proc_running "$pid" || fail "volgate (pid $pid) is not running any more; stderr: $(tail -n 5 "$VG_ERR")"
}

# wait_for_line FILE TEXT WHAT: waits (5 s at most) until a background helper has written TEXT
# to FILE, its way of saying it got going; fails naming WHAT otherwise.
wait_for_line() {
    local i
    for ((i = 0; i < 100; i++)); do
        grep -q -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    fail "$3 did not get going: $(cat "$1" 2>/dev/null)"
}

# refute_grep WHAT GREP-ARGS...: fails naming WHAT when grep finds a match (the first one is
# shown), and also when grep could not search (exit 2: a missing or unreadable file), so that
# nothing is ever declared absent from a file that was not read.
refute_grep() {
    local what=$1 rc=0
    shift
    grep -q "$@" || rc=$?
    case $rc in
        1) return 0 ;;
        0) fail "$what: $(grep -m 1 "$@" | head -c 300)" ;;
        *) fail "$what: grep $* could not search (exit $rc)" ;;
    esac
}

# unix_uri NAME SOCKET
unix_uri() { echo "nbd+unix:///$1?socket=$2"; }

# file_blocks PATH: allocated 512-byte blocks
file_blocks() { stat -c %b "$1"; }

# make_random_file PATH SIZE_MIB
make_random_file() {
    head -c $(($2 * 1024 * 1024)) /dev/urandom >"$1"
}
