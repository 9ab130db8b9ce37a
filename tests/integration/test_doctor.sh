#!/usr/bin/env bash
# `volgate doctor` on this machine, against real services:
#  - with libvirtd running, a tgtd serving an iSCSI pool's portal, an RBD pool whose ceph.conf and
#    keyring are readable, and a usable state directory, every check passes (exit 0), each
#    naming what it found (libvirt's and QEMU's versions, the portal, the files);
#  - faults, each named on its FAIL line with a fix, and exit code 1: a wrong libvirt URI, a
#    ceph.conf that is missing, one this user cannot read (run as nobody), a keyring that is not
#    there, a portal nothing listens on, a tgtd control socket nothing answers, a socket group
#    that does not exist, a config that does not load;
#  - bad arguments are exit 2.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/guest_lib.sh"
. "$(dirname "$0")/iscsi_lib.sh"
require_volgate
T=$TEST_TMP
libvirt_start
start_tgtd doc 127.0.0.1
mkdir -p "$T/ceph" "$T/luns"
printf '[global]\nmon host = 127.0.0.1:6789\n' >"$T/ceph/ceph.conf"
printf '[client.admin]\n\tkey = AQAAAAAAAAAAABAAAAAAAAAAAAAAAAAAAAAAAA==\n' >"$T/ceph/keyring"
chmod 600 "$T/ceph/keyring"

# config FILE [JQ-LIKE OVERRIDES...]: a controller config with one pool of each driver.
config() {
    local file=$1 ceph_conf=${2:-$T/ceph/ceph.conf} keyring=${3:-$T/ceph/keyring} portal=${4:-127.0.0.1:$TGTD_PORT} \
        ipc=${5:-${TGTD_IPC[doc]}} group=${6:-auto}
    cat >"$file" <<JSON
{
  "state_dir": "$T/state",
  "gateway": {"socket_group": "$group"},
  "pools": [{"name": "files", "driver": "file", "directory": "$T/files"},
            {"name": "san", "driver": "iscsi", "directory": "$T/luns", "portals": ["$portal"], "tgt_ipc_socket": "$ipc"},
            {"name": "ceph", "driver": "rbd", "rbd_pool": "volumes", "ceph_conf": "$ceph_conf", "ceph_keyring": "$keyring"}]
}
JSON
}
# doctor ARGS...: runs it; output in $T/out, exit code in $RC
doctor() {
    RC=0
    "$VOLGATE" doctor "$@" >"$T/out" 2>"$T/err" || RC=$?
}
# line CHECK: the output line of that check
line() { grep -E "^[a-zA-Z]+ +$1 " "$T/out" || true; }
expect_line() {  # expect_line LABEL CHECK TEXT
    local l
    l=$(line "$2")
    [[ $l == "$1 "* ]] || fail "doctor: expected $1 for $2, got '$l' in: $(cat "$T/out")"
    [[ $l == *"$3"* ]] || fail "doctor: the $2 line does not say '$3': $l"
}

# ------------------------------------------------------------------ a host that has everything
# QEMU must pass the test's directory to reach the state directory in it (mktemp makes it 0700;
# the doctor says so, as the next check shows).
config "$T/good.json"
doctor --config "$T/good.json"
expect_line FAIL "gateway sockets" "QEMU (group libvirt-qemu) cannot reach $T/state/run/nbd.sock: $T is mode 0700"
grep -q "fix: chmod o+x $T," "$T/out" || fail "no fix for the socket directory: $(cat "$T/out")"
chmod o+x "$T"
t0=$(now_ms)
doctor --config "$T/good.json"
ms=$(($(now_ms) - t0))
assert_eq "$RC" 0 "doctor's exit code on a good host ($(cat "$T/out"))"
! grep -q '^FAIL' "$T/out" || fail "FAIL on a good host: $(cat "$T/out")"
expect_line ok libvirt "qemu:///system answers (libvirt 9."
expect_line ok QEMU "takes NBD disks on virtio-scsi and virtio-blk"
expect_line ok "state directory" "$T/state can be created"
expect_line ok "gateway sockets" "will be group libvirt-qemu, reachable by QEMU"
expect_line ok "ceph pool 'ceph'" "$T/ceph/ceph.conf and $T/ceph/keyring are readable"
expect_line ok "iscsi pool 'san'" "tgtd answers tgtadm on ${TGTD_IPC[doc]}"
expect_line ok "iscsi portal 127.0.0.1:$TGTD_PORT" "takes connections"
expect_line ok "PBKDF memory" "MiB available"
grep -qE '^(ok|warn) +clock ' "$T/out" || fail "no clock line: $(cat "$T/out")"
grep -qE '^(ok|warn) +FUSE ' "$T/out" || fail "no FUSE line: $(cat "$T/out")"
tail -n 1 "$T/out" | grep -q '^nothing required is missing' || fail "summary: $(tail -n 1 "$T/out")"
[[ ! -e $T/state ]] || fail "doctor created the state directory"
doctor --config "$T/good.json" --fuse
assert_eq "$RC" 0 "doctor --fuse on a host with /dev/fuse"
expect_line ok FUSE "/dev/fuse opens read-write"
pass "every check passes on this host (${ms} ms), and nothing is changed"

# ------------------------------------------------------------------ faults, one at a time
doctor --config "$T/good.json" --libvirt-uri "qemu+unix:///system?socket=$T/no-libvirt.sock"
assert_eq "$RC" 1 "exit code with a wrong libvirt URI"
expect_line FAIL libvirt "cannot connect to qemu+unix:///system?socket=$T/no-libvirt.sock"
grep -q 'fix: start libvirtd' "$T/out" || fail "no fix for libvirt: $(cat "$T/out")"
expect_line skip QEMU "not checked"
tail -n 1 "$T/out" | grep -q '^1 problem(s) to fix' || fail "summary: $(tail -n 1 "$T/out")"

config "$T/bad.json" "$T/ceph/missing.conf"
doctor --config "$T/bad.json"
assert_eq "$RC" 1 "exit code with a missing ceph.conf"
expect_line FAIL "ceph pool 'ceph'" "cannot read ceph_conf $T/ceph/missing.conf: No such file or directory"

config "$T/bad.json" "$T/ceph/ceph.conf" "$T/ceph/no-keyring"
doctor --config "$T/bad.json"
assert_eq "$RC" 1 "exit code with a missing keyring"
expect_line FAIL "ceph pool 'ceph'" "cannot read ceph_keyring $T/ceph/no-keyring"

# Unreadable (not missing): root reads every file, so the doctor runs as nobody, with what
# nobody can reach (a state directory of its own, no libvirt).
mkdir -p "$T/nobody"
cp "$T/ceph/ceph.conf" "$T/nobody/ceph.conf"
chmod 600 "$T/nobody/ceph.conf"
chmod 755 "$T" "$T/nobody"
cat >"$T/nobody/config.json" <<JSON
{"state_dir": "$T/nobody/state", "libvirt_uri": "none", "gateway": {"control_socket": "none"},
 "pools": [{"name": "ceph", "driver": "rbd", "rbd_pool": "volumes", "ceph_conf": "$T/nobody/ceph.conf"}]}
JSON
chmod 644 "$T/nobody/config.json"
chown nobody "$T/nobody"
RC=0
setpriv --reuid=nobody --regid=nogroup --clear-groups "$VOLGATE" doctor --config "$T/nobody/config.json" >"$T/out" 2>"$T/err" || RC=$?
assert_eq "$RC" 1 "exit code with an unreadable ceph.conf ($(cat "$T/out" "$T/err"))"
expect_line FAIL "ceph pool 'ceph'" "cannot read ceph_conf $T/nobody/ceph.conf: Permission denied"
expect_line ok "state directory" "$T/nobody/state can be created"
expect_line skip libvirt "libvirt_uri is none"
chmod 644 "$T/nobody/ceph.conf"
RC=0
setpriv --reuid=nobody --regid=nogroup --clear-groups "$VOLGATE" doctor --config "$T/nobody/config.json" >"$T/out" 2>"$T/err" || RC=$?
expect_line ok "ceph pool 'ceph'" "$T/nobody/ceph.conf are readable"  # the same call, readable now
chmod 711 "$T"

closed=$(free_tcp_port)
config "$T/bad.json" "$T/ceph/ceph.conf" "$T/ceph/keyring" "127.0.0.1:$closed"
doctor --config "$T/bad.json" --timeout 2
assert_eq "$RC" 1 "exit code with a portal nothing listens on"
expect_line FAIL "iscsi portal 127.0.0.1:$closed" "pool 'san': cannot connect: Connection refused"
expect_line ok "iscsi pool 'san'" "tgtd answers"

config "$T/bad.json" "$T/ceph/ceph.conf" "$T/ceph/keyring" "127.0.0.1:$TGTD_PORT" "$T/no-tgtd.ipc"
doctor --config "$T/bad.json"
assert_eq "$RC" 1 "exit code with no tgtd on the control socket"
expect_line FAIL "iscsi pool 'san'" "tgtd does not answer tgtadm on $T/no-tgtd.ipc"

config "$T/bad.json" "$T/ceph/ceph.conf" "$T/ceph/keyring" "127.0.0.1:$TGTD_PORT" "${TGTD_IPC[doc]}" no-such-group
doctor --config "$T/bad.json"
assert_eq "$RC" 1 "exit code with a socket group that does not exist"
expect_line FAIL "gateway sockets" "gateway.socket_group no-such-group does not exist"

echo '{"state_dir": "'"$T"'/state", "pools": [{"name": "x", "driver": "tape"}]}' >"$T/bad.json"
doctor --config "$T/bad.json"
assert_eq "$RC" 1 "exit code with a config that does not load"
expect_line FAIL config "unknown driver 'tape'"
pass "faults are named with a fix and exit code 1: libvirt URI, missing and unreadable ceph.conf, keyring, portal, tgtd, socket group, config"

doctor --config "$T/good.json" --timeout 0
assert_eq "$RC" 2 "exit code of --timeout 0"
doctor --no-such-option
assert_eq "$RC" 2 "exit code of an unknown option"
"$VOLGATE" doctor --help >"$T/out"
grep -q -- '--libvirt-uri' "$T/out" && grep -q -- '--fuse' "$T/out" || fail "doctor --help: $(cat "$T/out")"
pass "bad arguments are exit 2; --help names the options"
