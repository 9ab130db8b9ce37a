#!/usr/bin/env bash
# The systemd units as a hypervisor gets them, on a machine where systemd does not run:
# scripts/install-units.sh installs the binary, the units and the controller's configuration into
# a staging root; `systemd-analyze verify` finds nothing to say about the units (nor about the
# FUSE drop-in); each unit's ExecStart then runs the way systemd would start it (unit_exec.sh:
# its paths bind-mounted from the root in a mount namespace, its directories made with their
# modes, its umask, capability bounding set and no-new-privileges, the gateway under
# Restart=always's loop with the unit's RestartSec), and the gateway answers on its control
# socket, the controller on its API, a volume attached through the controller is served on the
# NBD socket. A SIGKILLed gateway is restarted by the loop and serves the volume again with the
# data written (and flushed) before the kill. Wrong options and a missing configuration or
# directory end with one clear line and exit status 2, the status the units do not restart on.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_volgate
require_tool systemd-analyze unshare setpriv cmake curl qemu-io nbdinfo

T=$TEST_TMP
ROOT=$T/root
UNITS=$ROOT/etc/systemd/system
EXEC=$INTEGRATION_DIR/unit_exec.sh
INSTALL=$REPO_ROOT/scripts/install-units.sh
BUILD=$(dirname "$VOLGATE")
# What the units' /run/volgate and /var/lib/volgate are, seen from outside their namespace.
GW_SOCK=$ROOT/run/volgate/gateway.sock
NBD_SOCK=$ROOT/run/volgate/nbd.sock
API_SOCK=$ROOT/var/lib/volgate/controller.sock
json() { "$SYSPY" -c 'import json, sys; d = json.load(sys.stdin); r = eval(sys.argv[1]); print(r if not isinstance(r, (dict, list)) else json.dumps(r))' "$1"; }

# Each unit runs in a process group of its own (setsid), which stands for its cgroup: stopping
# the unit stops the group.
UNIT_GROUPS=()
stop_units() {
    local g
    for g in "${UNIT_GROUPS[@]}"; do kill -TERM -- "-$g" 2>/dev/null || true; done
    sleep 0.3
    for g in "${UNIT_GROUPS[@]}"; do kill -KILL -- "-$g" 2>/dev/null || true; done
}
trap 'rc=$?; set +e; stop_units; (exit $rc); _cleanup' EXIT
start_unit() {  # start_unit LOG [--restart] UNIT_FILE ROOT: prints the group's id
    local log=$1
    shift
    setsid "$EXEC" "$@" >"$log" 2>&1 &
    UNIT_GROUPS+=("$!")
    VG_LOGS+=("$log")
}

# ------------------------------------------------------------------ install
"$INSTALL" --root "$ROOT" --build "$BUILD" >"$T/install.out" 2>&1 || fail "install-units.sh: $(cat "$T/install.out")"
cmp -s "$ROOT/usr/local/bin/volgate" "$VOLGATE" || fail "the installed binary is not the one built"
for u in volgate-gateway volgate-controller; do
    [[ -f $UNITS/$u.service ]] || fail "no $UNITS/$u.service"
    grep -q '^ExecStart=/usr/local/bin/volgate ' "$UNITS/$u.service" || fail "$u.service does not run /usr/local/bin/volgate"
done
[[ -f $ROOT/usr/local/share/volgate/systemd/volgate-gateway-fuse.conf ]] || fail "no FUSE drop-in installed"
"$SYSPY" -c 'import json, sys; json.load(open(sys.argv[1]))' "$ROOT/etc/volgate/controller.json"
echo '{"edited": true}' >"$T/edited.json"
cp "$ROOT/etc/volgate/controller.json" "$T/controller.json.orig"
cp "$T/edited.json" "$ROOT/etc/volgate/controller.json"
"$INSTALL" --root "$ROOT" --build "$BUILD" >"$T/install2.out" 2>&1 || fail "second install: $(cat "$T/install2.out")"
cmp -s "$ROOT/etc/volgate/controller.json" "$T/edited.json" || fail "a second install overwrote the configuration"
grep -q "keeping the existing" "$T/install2.out" || fail "a second install does not say it kept the configuration"
cp "$T/controller.json.orig" "$ROOT/etc/volgate/controller.json"
"$INSTALL" --root "$T/opt" --prefix /opt/volgate --build "$BUILD" >/dev/null 2>&1 || fail "install with --prefix /opt/volgate"
grep -q '^ExecStart=/opt/volgate/bin/volgate serve ' "$T/opt/etc/systemd/system/volgate-gateway.service" ||
    fail "--prefix /opt/volgate: the gateway unit does not name /opt/volgate/bin/volgate"
grep -q '^ExecReload=/opt/volgate/bin/volgate gateway restart ' "$T/opt/etc/systemd/system/volgate-gateway.service" ||
    fail "--prefix /opt/volgate: ExecReload"
[[ -x $T/opt/opt/volgate/bin/volgate ]] || fail "--prefix /opt/volgate: no binary"
rm -rf "$T/opt"
rc=0
"$INSTALL" --root "$T/rel" --prefix opt/volgate --build "$BUILD" 2>"$T/rel.err" || rc=$?
assert_eq "$rc" 2 "install with a relative --prefix"
grep -q "absolute" "$T/rel.err" || fail "relative --prefix: $(cat "$T/rel.err")"
[[ ! -e $T/rel ]] || fail "a refused install wrote files"
pass "install-units.sh: binary, units (naming --prefix), configuration kept on a second install, bad --prefix refused"

# ------------------------------------------------------------------ systemd-analyze verify
# verify checks the command's path on this machine: a copy naming the installed binary where it is.
V=$T/verify
mkdir -p "$V/volgate-gateway.service.d"
for u in volgate-gateway volgate-controller; do
    sed "s|/usr/local/bin/volgate|$ROOT/usr/local/bin/volgate|g" "$UNITS/$u.service" >"$V/$u.service"
done
out=$(systemd-analyze verify "$V/volgate-gateway.service" "$V/volgate-controller.service" 2>&1) ||
    fail "systemd-analyze verify: $out"
[[ -z $out ]] || fail "systemd-analyze verify has something to say: $out"
sed "s|/usr/local/bin/volgate|$ROOT/usr/local/bin/volgate|g" "$ROOT/usr/local/share/volgate/systemd/volgate-gateway-fuse.conf" \
    >"$V/volgate-gateway.service.d/fuse.conf"
out=$(systemd-analyze verify "$V/volgate-gateway.service" 2>&1) || fail "verify with the FUSE drop-in: $out"
[[ -z $out ]] || fail "verify with the FUSE drop-in has something to say: $out"
rm -r "$V/volgate-gateway.service.d"
# The same check sees a mistake.
sed 's/^RestartSec=/RestartSecs=/' "$V/volgate-gateway.service" >"$T/typo.service"
out=$(systemd-analyze verify "$T/typo.service" 2>&1) || true
[[ $out == *RestartSecs* ]] || fail "verify did not see a misspelt key: $out"
pass "systemd-analyze verify: nothing to say about either unit or the FUSE drop-in (and it sees a misspelt key)"

# ------------------------------------------------------------------ the gateway, as systemd starts it
# NOTIFY_SOCKET as systemd sets it for Type=notify: what the gateway sends is kept.
"$SYSPY" - "$T/notify.sock" "$T/notify.log" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "ab", buffering=0) as log:
    while True:
        log.write(s.recv(4096) + b"\n")
PY
BG_PIDS+=("$!")
for ((i = 0; i < 100; i++)); do [[ -S $T/notify.sock ]] && break; sleep 0.02; done
NOTIFY_SOCKET=$T/notify.sock start_unit "$T/gateway.log" --restart "$UNITS/volgate-gateway.service" "$ROOT"
gw() { curl -s --max-time 5 --unix-socket "$GW_SOCK" "http://gateway$1"; }
gateway_pid() { gw /v1/health | json "d['pid']"; }
for ((i = 0; i < 200; i++)); do gw /v1/health >/dev/null 2>&1 && break; sleep 0.05; done
gw /v1/health >/dev/null || fail "the gateway does not answer on /run/volgate/gateway.sock: $(cat "$T/gateway.log")"
assert_eq "$(stat -c %a "$ROOT/run/volgate")" 711 "mode of /run/volgate (RuntimeDirectoryMode)"
assert_eq "$(stat -c %a "$GW_SOCK")" 600 "mode of the control socket"
assert_eq "$(stat -c '%a %G' "$NBD_SOCK")" "660 libvirt-qemu" "mode and group of the NBD socket"
caps=$(grep CapBnd "/proc/$(gateway_pid)/status" | awk '{print $2}')
assert_eq "$caps" 000000000000440b "the gateway's capability bounding set (chown dac_override fowner net_bind_service ipc_lock)"
for ((i = 0; i < 100; i++)); do grep -q READY=1 "$T/notify.log" 2>/dev/null && break; sleep 0.02; done
grep -q "READY=1" "$T/notify.log" || fail "the gateway sent no READY=1 (Type=notify would time out): $(cat "$T/notify.log")"
grep -q "MAINPID=$(gateway_pid)" "$T/notify.log" || fail "READY=1 came without the gateway's MAINPID: $(cat "$T/notify.log")"
pass "the gateway runs as the unit says (sockets, modes, group, capabilities) and told systemd READY=1"

# ------------------------------------------------------------------ the controller, as systemd starts it
start_unit "$T/controller.log" --restart "$UNITS/volgate-controller.service" "$ROOT"
for ((i = 0; i < 200; i++)); do [[ -S $API_SOCK && -s $ROOT/var/lib/volgate/token ]] && break; sleep 0.05; done
export VOLGATE_URL=unix:$API_SOCK
vg() { "$VOLGATE" "$@"; }
vg pool list >"$T/pools" 2>&1 || fail "the controller does not answer on /var/lib/volgate/controller.sock: $(cat "$T/pools") $(tail -5 "$T/controller.log")"
grep -q default "$T/pools" || fail "no default pool: $(cat "$T/pools")"
assert_eq "$(stat -c %a "$ROOT/var/lib/volgate")" 711 "mode of /var/lib/volgate"
assert_eq "$(stat -c %a "$ROOT/var/lib/volgate/token")" 600 "mode of the API token"
vol=$(vg volume create --size 1G --encrypted --output json data | json "d['volume']['id']")
for ((i = 0; i < 200; i++)); do
    [[ $(vg volume show --output json "$vol" | json "d['volume']['status']") == available ]] && break
    sleep 0.05
done
ci=$(vg attachment create --host "$(hostname)" --output json "$vol")
assert_eq "$(json "d['attachment']['connection_info']['data']['socket']" <<<"$ci")" /run/volgate/nbd.sock \
    "the connection info's socket"
URI=$(unix_uri "volume-$vol" "$NBD_SOCK")
qemu-io -f raw -c 'write -P 0x5a 0 1M' -c 'write -P 0xc3 512M 64k' -c flush "$URI" >/dev/null ||
    fail "writing through the gateway"
pass "the controller answers on its API, attaches an encrypted volume, the gateway serves it on /run/volgate/nbd.sock"

# ------------------------------------------------------------------ crash: Restart=always
read_back() {
    "$SYSPY" - "$URI" <<'PY'
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
assert h.pread(1 << 20, 0) == b"\x5a" * (1 << 20), "first MiB"
assert h.pread(65536, 512 << 20) == b"\xc3" * 65536, "at 512 MiB"
h.shutdown()
PY
}
read_back || fail "reading back before the crash"
old=$(gateway_pid)
kill -KILL "$old"
t0=$(now_ms)
back=
for ((i = 0; i < 400; i++)); do
    if nbdinfo --size "$URI" >/dev/null 2>&1; then back=$(($(now_ms) - t0)); break; fi
    sleep 0.025
done
[[ -n $back ]] || fail "the volume was not served again within 10 s of SIGKILL: $(tail -5 "$T/gateway.log")"
new=$(gateway_pid)
[[ $new != "$old" ]] || fail "the same gateway pid after SIGKILL"
read_back || fail "the data written before SIGKILL is not there"
pass "gateway SIGKILLed: restarted by the unit's loop (pid $old -> $new), the volume served again ${back} ms after the kill, with its data"

# ------------------------------------------------------------------ reload = hand-over
"$EXEC" --command ExecReload "$UNITS/volgate-gateway.service" "$ROOT" >"$T/reload.out" 2>&1 ||
    fail "ExecReload failed: $(cat "$T/reload.out")"
handed=$(gateway_pid)
# `gateway restart` started it in a session of its own, outside the unit's loop: the test's exit
# must stop it (the EXIT trap's pattern for successors names $TEST_TMP, not the unit's paths).
BG_PIDS+=("$handed")
[[ $handed != "$new" ]] || fail "ExecReload: the same gateway pid"
read_back || fail "ExecReload: the data is not there"
# The old process names its successor as the service's main one before it exits, with a barrier
# so that systemd reads it first. (Under systemd the successor says so again with its READY=1:
# ExecReload's processes get NOTIFY_SOCKET too, which unit_exec.sh does not give them.)
grep -q "MAINPID=$handed" "$T/notify.log" && grep -q "BARRIER=1" "$T/notify.log" ||
    fail "the old process did not name MAINPID=$handed with a barrier: $(tail -n 5 "$T/notify.log")"
pass "ExecReload (volgate gateway restart): another process (pid $new -> $handed) serves the volume, with its data, and is the service's MAINPID"

# ------------------------------------------------------------------ what goes wrong, said clearly
# A root with no configuration and no runtime directory made: the units' commands run against it.
E=$T/err
mkdir -p "$E/usr/local/bin" "$E/etc/systemd/system"
ln -s "$ROOT/usr/local/bin/volgate" "$E/usr/local/bin/volgate"
expect_2() {  # expect_2 WHAT PATTERN UNIT_FILE [--restart]: the unit's command fails with status 2 and PATTERN
    local what=$1 pattern=$2 unit=$3 rc=0
    shift 3
    timeout 20 "$EXEC" "$@" "$unit" "$E" >"$T/err.out" 2>&1 || rc=$?
    assert_eq "$rc" 2 "$what: exit status"
    grep -qE -- "$pattern" "$T/err.out" || fail "$what: the message does not say '$pattern': $(cat "$T/err.out")"
    info "$what: $(grep -E -- "$pattern" "$T/err.out" | head -n 1)"
}
expect_2 "controller without /etc/volgate/controller.json" "controller.json" "$UNITS/volgate-controller.service"
echo '{"state_dir": "/var/lib/volgate", "gatway": {}}' >"$E/etc/volgate/controller.json"
expect_2 "controller with a misspelt key" "gatway" "$UNITS/volgate-controller.service" --restart
sed 's/--socket-group libvirt-qemu/--socket-group no-such-group/' "$UNITS/volgate-gateway.service" \
    >"$E/etc/systemd/system/volgate-gateway.service"
expect_2 "gateway with an unknown --socket-group" "no-such-group" "$E/etc/systemd/system/volgate-gateway.service" --restart
sed 's|--unix /run/volgate/nbd.sock|--unix /run/volgate/missing/nbd.sock|' "$UNITS/volgate-gateway.service" \
    >"$E/etc/systemd/system/volgate-gateway.service"
expect_2 "gateway with its socket in a missing directory" "/run/volgate/missing" "$E/etc/systemd/system/volgate-gateway.service"
sed 's/^ExecStart=.*serve /&--no-such-option /' "$UNITS/volgate-gateway.service" >"$E/etc/systemd/system/volgate-gateway.service"
expect_2 "gateway with an unknown option" "no-such-option" "$E/etc/systemd/system/volgate-gateway.service" --restart
# The same commands with the right option and configuration run (above): the units' gateway still serves.
read_back || fail "the gateway stopped serving while the wrong commands ran"
pass "wrong options, a misspelt or missing configuration, a missing directory: one clear line, exit status 2 (not restarted)"
