#!/usr/bin/env bash
# A volume made by the controller, inside a running guest: the controller (with its gateway)
# serves an encrypted volume through Cinder's attachment API, libvirtd hot-plugs the connection
# info into a TCG guest as an NBD disk on its virtio-scsi controller, the guest finds the disk by
# its serial and writes to it, the disk is unplugged and the attachment deleted, the pool's
# ciphertext is decrypted independently (python3-cryptography) and compared with what the guest
# wrote, and after a second attachment the guest reads the same data back.
# It proves that QEMU, which runs as libvirt-qemu and not as root, can reach the gateway's socket.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/guest_lib.sh"
require_volgate
require_tool curl sqlite3 cryptsetup nbdinfo setpriv virsh

T=$TEST_TMP
STATE=$T/state
SOCK=$STATE/controller.sock
GW=$STATE/run/gateway.sock
NBD=$STATE/run/nbd.sock
GUEST=volgate-it-attach-$$
PAYLOAD="$SYSPY $INTEGRATION_DIR/luks_payload.py"
export VOLGATE_URL=unix:$SOCK
t_test=$(now_ms)

cat >"$T/controller.json" <<JSON
{"state_dir": "$STATE", "gateway": {"check_interval": 0.2, "repair_interval": 1}}
JSON

json() { "$SYSPY" -c 'import json, sys; d = json.load(sys.stdin); r = eval(sys.argv[1]); print(r if not isinstance(r, (dict, list)) else json.dumps(r))' "$1"; }
AUTH=$T/auth.header
# ok STATUS METHOD PATH [BODY]: HTTP on the controller's socket at microversion 3.44; the
# request must answer STATUS; prints the body
ok() {
    local want=$1 method=$2 path=$3 code
    local args=(-s -o "$T/api.body" -w '%{http_code}' --unix-socket "$SOCK" -X "$method" -H @"$AUTH"
                -H 'OpenStack-API-Version: volume 3.44')
    [[ $# -ge 4 ]] && args+=(-H 'Content-Type: application/json' --data "$4")
    code=$(curl "${args[@]}" "http://localhost/v3/p$path")
    [[ $code == "$want" ]] || fail "$method $path -> $code $(cat "$T/api.body") (expected $want)"
    cat "$T/api.body"
}
vol_status() { "$VOLGATE" volume show --project p --output json "$1" | json "d['volume']['status']"; }
wait_status() {
    local i
    for ((i = 0; i < 300; i++)); do [[ $(vol_status "$1") == "$2" ]] && return 0; sleep 0.05; done
    fail "volume $1 is $(vol_status "$1"), not $2"
}
gw() { curl -s --max-time 5 --unix-socket "$GW" "http://gateway$1"; }
exports() { gw /v1/exports | json "' '.join(sorted(e['name'] for e in d['exports']))"; }
# step NAME: prints how long the step that just ended took, and starts timing the next one
t_step=$(now_ms)
TIMINGS=()
ROUND=
step() {
    local ms=$(($(now_ms) - t_step))
    TIMINGS+=("$1${ROUND:+ #$ROUND}: ${ms}ms;")
    info "$1: $ms ms"
    t_step=$(now_ms)
}

# The volume's /dev/disk/by-id link in the guest (guest_lib.sh's disk-links), given its id.
guest_disk() { echo "/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_$1"; }
# wait_guest_disk ID present|absent: the guest's kernel sees the hot-plug (or the unplug)
# asynchronously, through a virtio-scsi event and a rescan.
wait_guest_disk() {
    local dev i rc
    dev=$(guest_disk "$1")
    for ((i = 0; i < 100; i++)); do
        rc=0
        guest_run "$GUEST" "test -b $dev" 10 >"$T/guest.out" 2>&1 || rc=$?
        case $rc in
            0) [[ $2 == present ]] && return 0 ;;
            1) [[ $2 == absent ]] && return 0 ;;
            *) fail "the guest's shell: $(cat "$T/guest.out")" ;;
        esac
        sleep 0.1
    done
    fail "the guest's $dev is not $2 after 10 s; its disks: $(guest_run "$GUEST" 'ls -l /dev/disk/by-id; ls /sys/block' 10 || true)"
}

# attach VOLUME: attachment with a connector (the gateway exports the volume), libvirt plugs
# the disk into the running guest, attachment complete. Sets ATT, CI (connection info), DISK_XML.
attach() {
    local vol=$1 r
    r=$(ok 200 POST /attachments '{"attachment": {"volume_uuid": "'"$vol"'", "instance_uuid": "'"$GUEST_UUID"'", "connector": {"host": "'"$(hostname)"'"}}}')
    ATT=$(json "d['attachment']['id']" <<<"$r")
    CI=$(json "d['attachment']['connection_info']" <<<"$r")
    assert_eq "$(json "d['driver_volume_type']" <<<"$CI")" nbd "driver_volume_type"
    assert_eq "$(json "d['data']['socket']" <<<"$CI")" "$NBD" "connection socket"
    assert_eq "$(exports)" "volume-$vol" "the gateway's exports"
    step "attachment create (export + LUKS unlock)"
    # What QEMU will need: the socket's group and mode, and a connect as QEMU's own user.
    assert_eq "$(stat -c '%G %a' "$NBD")" "libvirt-qemu 660" "NBD socket group and mode"
    qemu_user_check "$NBD" "volume-$vol"
    DISK_XML=$T/disk-$ATT.xml
    nbd_disk_xml "$CI" 0 >"$DISK_XML"
    step "check as $QEMU_USER"
    "${VIRSH[@]}" attach-device "$GUEST" "$DISK_XML" --live >"$T/virsh.out" 2>&1 ||
        fail "virsh attach-device: $(cat "$T/virsh.out"); disk: $(cat "$DISK_XML")"
    guest_has_disk "$GUEST" "volume-$vol" || fail "the live XML has no disk for volume-$vol after attach-device"
    step "virsh attach-device"
    wait_guest_disk "$vol" present
    step "guest sees the disk"
    ok 204 POST "/attachments/$ATT/action" '{"os-complete": null}' >/dev/null
    assert_eq "$(vol_status "$vol")" in-use "volume after os-complete"
}

# detach VOLUME: libvirt unplugs the disk (done only when it has left the live XML: virsh's
# success alone does not prove that), then the attachment is deleted and the export goes.
detach() {
    local vol=$1 i
    t_step=$(now_ms)
    "${VIRSH[@]}" detach-device "$GUEST" "$DISK_XML" --live >"$T/virsh.out" 2>&1 ||
        fail "virsh detach-device: $(cat "$T/virsh.out")"
    for ((i = 0; i < 200; i++)); do guest_has_disk "$GUEST" "volume-$vol" || break; sleep 0.05; done
    guest_has_disk "$GUEST" "volume-$vol" && fail "volume-$vol is still in the live XML 10 s after detach-device"
    step "virsh detach-device until gone from the live XML"
    wait_guest_disk "$vol" absent
    ok 200 DELETE "/attachments/$ATT" >/dev/null
    assert_eq "$(vol_status "$vol")" available "volume after the attachment delete"
    assert_eq "$(exports)" "" "exports after the attachment delete"
    step "attachment delete"
}

# ------------------------------------------------------------------ libvirtd, the guest, the controller
libvirt_start
step "libvirt_start (started: ${LIBVIRT_STARTED[*]:-nothing})"
guest_image "$T/guest"
step "guest_image ($GUEST_KERNEL)"
start_controller "$T/controller.json" "$SOCK" '' --gateway
(umask 077 && printf 'X-Auth-Token: %s\n' "$(cat "$STATE/token")" >"$AUTH")
for ((i = 0; i < 200; i++)); do gw /v1/health >/dev/null 2>&1 && break; sleep 0.05; done
BG_PIDS+=("$(gw /v1/health | json "d['pid']")")  # it outlives a controller that fails: the test's exit kills it
step "controller and gateway up"
guest_define "$GUEST" "$T/guest"
GUEST_UUID=$("${VIRSH[@]}" domuuid "$GUEST")
step "guest boot to a working shell"
pass "libvirtd running, guest $GUEST booted (kernel $GUEST_KERNEL) in $GUEST_BOOT_MS ms"

# The controller sees the guest as a server (its servers API reads libvirt through the C API).
"$VOLGATE" server list --output json >"$T/servers.json"
assert_eq "$(json "[s['status'] for s in d['servers'] if s['id'] == '$GUEST_UUID'][0]" <"$T/servers.json")" ACTIVE \
    "the guest in volgate server list"
"$VOLGATE" server show "$GUEST" | grep -q "^id  *$GUEST_UUID$" || fail "volgate server show $GUEST: $("$VOLGATE" server show "$GUEST" 2>&1)"
pass "volgate server list/show: the guest is a server, ACTIVE"

# ------------------------------------------------------------------ attach; the guest writes
vol=$("$VOLGATE" volume create --project p --size 1 --encrypted --output json guest-data | json "d['volume']['id']")
wait_status "$vol" available
step "encrypted volume create"
ROUND=1
attach "$vol"
dev=$(guest_disk "$vol")
# Random data made in the guest (so nothing on the host knows it but its checksum), at the
# start and 8 MiB in, written with O_DIRECT and flushed.
sums=$(guest_run "$GUEST" "set -e
head -c 2097152 /dev/urandom >/tmp/a
head -c 1048576 /dev/urandom >/tmp/b
dd if=/tmp/a of=$dev bs=64k oflag=direct conv=fsync 2>/dev/null
dd if=/tmp/b of=$dev bs=64k seek=128 oflag=direct conv=fsync 2>/dev/null
sync
sha256sum /tmp/a /tmp/b | cut -d' ' -f1" 60) || fail "the guest could not write $dev: $sums"
sum_a=$(sed -n 1p <<<"$sums")
sum_b=$(sed -n 2p <<<"$sums")
[[ $sum_a =~ ^[0-9a-f]{64}$ && $sum_b =~ ^[0-9a-f]{64}$ ]] || fail "checksums from the guest: $sums"
step "guest writes 3 MiB (dd oflag=direct, sync)"
pass "attached volume $vol: the guest found it by serial at $dev and wrote to it"

detach "$vol"
pass "detached: gone from the live XML and from the guest, attachment deleted, export removed"

# ------------------------------------------------------------------ the pool, read independently
unwrap_key "$STATE" "$vol" "$T/vol.key"
# The header and the first MiBs of payload are enough (the payload size of a LUKS2 segment of
# "dynamic" size follows the file's): python decrypts one sector at a time, slowly.
head -c $((32 << 20)) "$STATE/pool/volume-$vol.img" >"$T/head.img"
$PAYLOAD decrypt "$T/head.img" "$T/vol.key" "$T/plain.raw"
(($(stat -c %s "$T/plain.raw") >= (9 << 20))) || fail "decrypted only $(stat -c %s "$T/plain.raw") bytes"
assert_eq "$(head -c $((2 << 20)) "$T/plain.raw" | sha256sum | cut -d' ' -f1)" "$sum_a" "decrypted payload at 0"
assert_eq "$(tail -c +$(((8 << 20) + 1)) "$T/plain.raw" | head -c $((1 << 20)) | sha256sum | cut -d' ' -f1)" "$sum_b" \
    "decrypted payload at 8 MiB"
ROUND=
step "independent decrypt and compare"
pass "the pool's ciphertext decrypts (python3-cryptography) to exactly what the guest wrote"

# ------------------------------------------------------------------ attach again; the guest reads
ROUND=2
attach "$vol"
back=$(guest_run "$GUEST" "set -e
dd if=$dev bs=64k count=32 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1
dd if=$dev bs=64k skip=128 count=16 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1" 60) ||
    fail "the guest could not read $dev: $back"
assert_eq "$(sed -n 1p <<<"$back")" "$sum_a" "guest reads back at 0"
assert_eq "$(sed -n 2p <<<"$back")" "$sum_b" "guest reads back at 8 MiB"
step "guest reads 3 MiB (dd iflag=direct)"
detach "$vol"
pass "attached again: the guest reads what it wrote; detached again"

info "timings: ${TIMINGS[*]}"
pass "whole test: $(($(now_ms) - t_test)) ms"
