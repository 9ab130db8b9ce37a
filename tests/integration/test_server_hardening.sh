#!/usr/bin/env bash
# Who can reach `volgate serve`'s exports and its memory:
#  - socket: the --unix socket is 0600 whatever the umask (000 here), so another user cannot
#    connect; with --socket-group it is 0660 and that group's, so a member can and others cannot;
#  - listen: --listen on a non-loopback address logs a warning (anyone who can reach it gets
#    every export); loopback does not; a TCP connection carries keepalive probes (60 s of
#    silence, 6 probes 10 s apart) and a 2-minute user timeout, so a client whose host vanished
#    does not hold its slot for good;
#  - undumpable: the serving process is not dumpable (its /proc files belong to root even when
#    it runs as nobody) and its core size limit is 0.
# The other users are nobody and daemon, through setpriv. No traffic leaves loopback.
# Usage: test_server_hardening.sh [CASE...]   CASE: socket socket_group listen undumpable
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_volgate
require_tool setpriv

REAL_VOLGATE=$(readlink -f "$VOLGATE")
NOBODY=65534
NOGROUP=$(getent group nogroup | cut -d: -f3)
[[ -n $NOGROUP ]] || fail "no group 'nogroup' on this system"
# A directory every user may enter, for sockets other users try to reach.
PUB=$TEST_TMP/pub
mkdir -p "$PUB"
chmod 0711 "$TEST_TMP"
chmod 0755 "$PUB"

# connect_as UID GID SOCKET: prints "ok" when a GO on export d and a 512-byte read work for
# that user, else the error.
connect_as() {
    setpriv --reuid="$1" --regid="$2" --clear-groups -- "$SYSPY" - "$3" <<'PY' 2>&1 || true
import sys
import nbd_go
try:
    s = nbd_go.go(sys.argv[1], "d", timeout=5)
    s.sendall(nbd_go.request(nbd_go.NBD_CMD_READ, 1, 0, 512))
    nbd_go.simple_reply(s, 1, 512)
    print("ok")
except OSError as e:
    print("refused: %s" % e)
PY
}

# ---------------------------------------------------------------------------------------------
case_socket() {
    info "socket: a umask of 000 does not make the socket world-writable"
    local s=$PUB/private.sock old_umask
    old_umask=$(umask)
    umask 000
    start_volgate --unix "$s" --export "d=memory:1M"
    umask "$old_umask"
    local mode
    mode=$(stat -c '%a %U' "$s")
    [[ $mode == "600 root" ]] || fail "socket created under umask 000 has mode/owner '$mode', expected '600 root'"
    local as_nobody
    as_nobody=$(connect_as "$NOBODY" "$NOGROUP" "$s")
    [[ $as_nobody == refused:*"Permission denied"* ]] || fail "user nobody could use the 0600 socket: $as_nobody"
    [[ $(connect_as 0 0 "$s") == ok ]] || fail "root cannot use its own socket"
    pass "socket is 0600 under umask 000; nobody gets '${as_nobody#refused: }', root is served"
    stop_volgate
}

case_socket_group() {
    info "socket: --socket-group nogroup gives the socket to that group, mode 0660"
    local s=$PUB/shared.sock old_umask
    old_umask=$(umask)
    umask 000
    start_volgate --unix "$s" --socket-group nogroup --export "d=memory:1M"
    umask "$old_umask"
    local mode
    mode=$(stat -c '%a %U %G' "$s")
    [[ $mode == "660 root nogroup" ]] || fail "socket with --socket-group nogroup: '$mode', expected '660 root nogroup'"
    local member other
    member=$(connect_as "$NOBODY" "$NOGROUP" "$s")
    [[ $member == ok ]] || fail "a member of nogroup cannot use the socket: $member"
    other=$(connect_as "$NOBODY" 1 "$s")  # nobody, in group daemon only
    [[ $other == refused:*"Permission denied"* ]] || fail "a user outside nogroup could use the socket: $other"
    pass "socket is 0660 root:nogroup; a member of nogroup is served, a non-member is refused"
    stop_volgate
}

case_listen() {
    info "listen: a non-loopback --listen address is warned about, loopback is not"
    local port
    port=$(free_tcp_port)
    start_volgate --listen "0.0.0.0:$port" --export "d=memory:1M,readonly"
    stop_volgate
    local n
    n=$(grep -c "listening on 0.0.0.0:$port, which is not a loopback address" "$VG_ERR" || true)
    [[ $n == 1 ]] || fail "expected one warning for --listen 0.0.0.0:$port, got $n: $(head -n 3 "$VG_ERR")"
    grep -q "warning.*read and write every export, LUKS exports decrypted" "$VG_ERR" ||
        fail "the warning does not say what is exposed: $(grep loopback "$VG_ERR")"
    port=$(free_tcp_port)
    start_volgate --listen "127.0.0.1:$port" --unix "$TEST_TMP/l.sock" --export "d=memory:1M"
    # The server's side of a connection (ss shows its keepalive timer; the options from python).
    nbdsh -u "nbd://127.0.0.1:$port/d" -c "
import subprocess, time
time.sleep(0.3)
out = subprocess.run(['ss', '-tno', 'state', 'established', '( sport = :$port )'], capture_output=True, text=True).stdout
assert 'timer:(keepalive' in out, out
" || fail "the server's side of a TCP connection has no keepalive timer"
    stop_volgate
    refute_grep "a warning for 127.0.0.1" "loopback" "$VG_ERR"
    pass "--listen 0.0.0.0 logs one warning; 127.0.0.1 and unix sockets none; TCP connections carry keepalive probes"
}

case_undumpable() {
    info "undumpable: the server's /proc files belong to root even when it runs as nobody"
    local dir=$TEST_TMP/nobody
    mkdir -p "$dir"
    chown "$NOBODY:$NOGROUP" "$dir"
    # The control: any process of nobody's is dumpable, its /proc files are nobody's.
    setpriv --reuid="$NOBODY" --regid="$NOGROUP" --clear-groups -- sleep 10 &
    local control=$!
    BG_PIDS+=("$control")
    sleep 0.2
    [[ $(stat -c %u "/proc/$control/status") == "$NOBODY" ]] ||
        fail "control: /proc of a dumpable process of nobody is not nobody's; this check would prove nothing"
    kill "$control" 2>/dev/null || true
    cat >"$TEST_TMP/as-nobody" <<EOF
#!/bin/sh
exec setpriv --reuid=$NOBODY --regid=$NOGROUP --clear-groups -- "$REAL_VOLGATE" "\$@"
EOF
    chmod 0755 "$TEST_TMP/as-nobody"
    VOLGATE=$TEST_TMP/as-nobody start_volgate --unix "$dir/s.sock" --export "d=memory:1M"
    local uid owner core
    uid=$(awk '/^Uid:/ {print $2}' "/proc/$VG_PID/status")
    [[ $uid == "$NOBODY" ]] || fail "the server runs as uid $uid, not nobody"
    owner=$(stat -c %u "/proc/$VG_PID/status")
    core=$(awk '/^Max core file size/ {print $5, $6}' "/proc/$VG_PID/limits")
    [[ $owner == 0 ]] || fail "the server (uid $NOBODY) is dumpable: its /proc files belong to uid $owner"
    [[ $core == "0 0" ]] || fail "the server's core size limit (soft hard) is '$core', expected '0 0'"
    pass "the server as nobody is not dumpable (/proc/PID owned by root) and its core limit is 0 0"
    stop_volgate
}

# ---------------------------------------------------------------------------------------------
CASES=("$@")
((${#CASES[@]})) || CASES=(socket socket_group listen undumpable)
for c in "${CASES[@]}"; do
    declare -F "case_$c" >/dev/null || fail "no case '$c' (cases: socket socket_group listen undumpable)"
    "case_$c"
done
