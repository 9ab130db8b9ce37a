#!/usr/bin/env bash
# Bad usage is refused before anything is served: exit code 2, exactly one line on stderr,
# nothing on stdout, no socket created, and the process does not linger. --help works.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_volgate

S=$TEST_TMP/s.sock
IMG=$TEST_TMP/disk.img
truncate -s 1M "$IMG"
PORT=$(free_tcp_port)

# First the good counterpart of the cases below, with the same kinds of arguments: it really
# serves, so an exit 2 below is the refusal of that bad argument, not a binary that cannot run.
start_volgate --unix "$S" --listen "127.0.0.1:$PORT" --export "d=memory:1M" --export "f=file:$TEST_TMP/good.img,size=2M"
[[ $(stat -c %s "$TEST_TMP/good.img") == 2097152 ]] || fail "size=2M did not create a 2 MiB file"
nbdsh -u "$(unix_uri d "$S")" -c 'assert h.get_size() == 1048576' || fail "the good invocation does not serve on --unix"
nbdsh -u "nbd://127.0.0.1:$PORT/f" -c 'assert h.get_size() == 2097152' || fail "the good invocation does not serve on --listen"
stop_volgate
pass "a valid invocation (--unix, --listen, memory and file exports, size=) serves and exits 0 on SIGTERM"

# expect_usage_error DESCRIPTION ARGS...
expect_usage_error() {
    local what=$1
    shift
    rm -f "$S"
    local rc=0
    timeout -k 2 10 "$VOLGATE" "$@" >"$TEST_TMP/out" 2>"$TEST_TMP/err" </dev/null || rc=$?
    [[ $rc != 124 && $rc != 137 ]] || fail "$what: volgate did not exit within 10 s (it serves?) args: $*"
    [[ $rc == 2 ]] || fail "$what: exit code $rc, expected 2; args: $*; stderr: $(head -c 500 "$TEST_TMP/err")"
    local lines
    lines=$(wc -l <"$TEST_TMP/err")
    # one line: one newline-terminated line, or one unterminated line
    if ! { [[ $lines == 1 ]] || { [[ $lines == 0 && -s $TEST_TMP/err ]]; }; }; then
        fail "$what: expected exactly one line on stderr, got $lines lines: $(cat "$TEST_TMP/err")"
    fi
    [[ -n $(tr -d '[:space:]' <"$TEST_TMP/err") ]] || fail "$what: stderr line is blank"
    [[ ! -s $TEST_TMP/out ]] || fail "$what: unexpected stdout: $(head -c 300 "$TEST_TMP/out")"
    [[ ! -e $S ]] || fail "$what: socket $S was created although the usage is bad"
    pass "$what -> exit 2: $(head -n 1 "$TEST_TMP/err")"
}

expect_usage_error "no arguments at all" 
expect_usage_error "unknown subcommand" frobnicate --unix "$S" --export "d=memory:1M"
expect_usage_error "unknown option" serve --unix "$S" --export "d=memory:1M" --bogus
expect_usage_error "unknown option before exports" serve --frobnicate 3 --unix "$S" --export "d=memory:1M"
expect_usage_error "no --export" serve --unix "$S"
expect_usage_error "no listener" serve --export "d=memory:1M"
expect_usage_error "--export without value" serve --unix "$S" --export
expect_usage_error "--unix without value" serve --export "d=memory:1M" --unix
expect_usage_error "bad size suffix" serve --unix "$S" --export "d=memory:12Q"
expect_usage_error "size not a number" serve --unix "$S" --export "d=memory:abc"
expect_usage_error "empty size" serve --unix "$S" --export "d=memory:"
expect_usage_error "negative size" serve --unix "$S" --export "d=memory:-1M"
expect_usage_error "bad size= option on file" serve --unix "$S" --export "d=file:$TEST_TMP/new.img,size=lots"
expect_usage_error "missing file" serve --unix "$S" --export "d=file:$TEST_TMP/does-not-exist.img"
expect_usage_error "file path empty" serve --unix "$S" --export "d=file:"
expect_usage_error "unknown backend" serve --unix "$S" --export "d=floppy:$IMG"
expect_usage_error "export without =BACKEND" serve --unix "$S" --export "justaname"
expect_usage_error "file backend on a directory" serve --unix "$S" --export "d=file:$TEST_TMP"
expect_usage_error "direct on a memory export" serve --unix "$S" --export "d=memory:1M,direct"
expect_usage_error "--threads 0" serve --threads 0 --unix "$S" --export "d=memory:1M"
expect_usage_error "--control on the --unix path" serve --unix "$S" --control "$S" --export "d=memory:1M"
grep -q "needs a path of its own" "$TEST_TMP/err" || fail "--control on the --unix path: $(cat "$TEST_TMP/err")"
expect_usage_error "one --unix path twice" serve --unix "$S" --unix "$TEST_TMP/../$(basename "$TEST_TMP")/s.sock" --export "d=memory:1M"
expect_usage_error "unknown export option" serve --unix "$S" --export "d=file:$IMG,turbo"
expect_usage_error "duplicate export name" serve --unix "$S" --export "d=memory:1M" --export "d=file:$IMG"
expect_usage_error "bad --threads" serve --threads abc --unix "$S" --export "d=memory:1M"
expect_usage_error "--poll-max-us out of range" serve --poll-max-us 5000 --unix "$S" --export "d=memory:1M"
expect_usage_error "negative --poll-max-us" serve --poll-max-us -1 --unix "$S" --export "d=memory:1M"
expect_usage_error "bad --listen address" serve --listen "127.0.0.1:notaport" --export "d=memory:1M"
expect_usage_error "bad --listen port range" serve --listen "127.0.0.1:70000" --export "d=memory:1M"
expect_usage_error "unknown --socket-group" serve --unix "$S" --socket-group no-such-group-volgate --export "d=memory:1M"
expect_usage_error "--socket-group without --unix" serve --listen "127.0.0.1:0" --socket-group nogroup --export "d=memory:1M"
expect_usage_error "--max-connections 0" serve --max-connections 0 --unix "$S" --export "d=memory:1M"
expect_usage_error "bad --max-buffer-bytes" serve --max-buffer-bytes lots --unix "$S" --export "d=memory:1M"
expect_usage_error "--max-buffer-bytes under 1M" serve --max-buffer-bytes 512K --unix "$S" --export "d=memory:1M"
expect_usage_error "--handshake-timeout 0" serve --handshake-timeout 0 --unix "$S" --export "d=memory:1M"
expect_usage_error "bad --handshake-timeout" serve --handshake-timeout soon --unix "$S" --export "d=memory:1M"
[[ ! -e $TEST_TMP/new.img ]] || fail "a file was created by an invocation refused for bad usage"

# A --unix path that is an existing regular file is not a stale socket: it must not be deleted
# or replaced, and the server must not run.
echo "precious" >"$TEST_TMP/regular.txt"
expect_usage_error "--unix on an existing regular file" serve --unix "$TEST_TMP/regular.txt" --export "d=memory:1M"
[[ -f $TEST_TMP/regular.txt && $(cat "$TEST_TMP/regular.txt") == precious ]] || fail "--unix on a regular file destroyed the file"
pass "--unix on an existing regular file: the file is intact"

expect_usage_error "--unix in a missing directory" serve --unix "$TEST_TMP/no/such/dir/s.sock" --export "d=memory:1M"
[[ ! -e $TEST_TMP/no ]] || fail "--unix in a missing directory created $TEST_TMP/no"

# The port the good invocation above listened on, now held by another process
"$SYSPY" -c "
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', $PORT)); s.listen(1); print('bound', flush=True); time.sleep(20)" >"$TEST_TMP/holder.out" &
HOLDER=$!
BG_PIDS+=("$HOLDER")
wait_for_line "$TEST_TMP/holder.out" bound "the port holder"
expect_usage_error "--listen on a port in use" serve --listen "127.0.0.1:$PORT" --export "d=memory:1M"
kill "$HOLDER" 2>/dev/null || true
wait "$HOLDER" 2>/dev/null || true
BG_PIDS=()

# --help
rc=0
"$VOLGATE" --help >"$TEST_TMP/help" 2>&1 || rc=$?
[[ $rc == 0 ]] || fail "volgate --help exit code $rc, expected 0"
grep -q 'serve' "$TEST_TMP/help" || fail "volgate --help does not mention 'serve': $(cat "$TEST_TMP/help")"
rc=0
"$VOLGATE" serve --help >"$TEST_TMP/help2" 2>&1 || rc=$?
[[ $rc == 0 ]] || fail "volgate serve --help exit code $rc, expected 0"
for w in --export --unix --listen --threads --poll-max-us --socket-group --max-connections \
    --max-buffer-bytes --handshake-timeout; do
    grep -q -- "$w" "$TEST_TMP/help2" "$TEST_TMP/help" || fail "--help output does not mention $w"
done
grep -q -- '--max-connections N.*=1024$' "$TEST_TMP/help2" || fail "serve --help does not show the default of --max-connections"
grep -q -- '--max-buffer-bytes SIZE=256M$' "$TEST_TMP/help2" || fail "serve --help does not show the default of --max-buffer-bytes"
grep -q -- '--handshake-timeout SECONDS.*=10$' "$TEST_TMP/help2" || fail "serve --help does not show the default of --handshake-timeout"
pass "--help and serve --help exit 0 and mention serve, --export, --unix, --listen, --threads, --poll-max-us and the limits with their defaults"
