#!/usr/bin/env bash
# Nova's os-volume_attachments when things go wrong, against the real controller, gateway,
# libvirtd and a running TCG guest (booted once, reused):
# - every error answer: 404 unknown server, 400 bad device name, 409 device name in use (by a
#   mapping, and by a disk plugged in without volgate), 404 volume not attached, 409 volume
#   already attached here, 409 volume in-use on another server, 400 root (boot) volume;
# - failures, each leaving no disk (live XML and definition), no export, no mapping and the
#   volume available: libvirt refuses the device (a drive address a disk already has), the
#   export socket is not reachable by QEMU's user, the gateway is down, the database is locked
#   past its busy timeout in the middle of the attach;
# - a guest that does not let a virtio disk go (paused): the detach fails after its retries and
#   everything stays attached; once the guest runs again the detach works;
# - the Cinder attachment of a server's volume cannot be deleted through the attachment API
#   (409): the guest would keep a disk whose volume could go to another server;
# - an attach whose revert cannot take the disk out of the guest (the controller killed after
#   the disk went in, the guest paused at the restart): the volume stays attaching, its flow in
#   the journal, until libvirt's next event about the guest lets the revert finish;
# - the server undefined while an attach waits: 404, as Nova answers for a missing server.
# 409 for a server in a state other than running, paused or shut off (crashed, pmsuspended) is in
# tests/unit/compute_service_test.cpp: a TCG guest here cannot be put in either state on demand.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/guest_lib.sh"
require_volgate
require_tool curl virsh sqlite3

T=$TEST_TMP
STATE=$T/state
GUEST=volgate-it-faults-$$
ROOTED=volgate-it-rooted-$$
. "$(dirname "$0")/attach_lib.sh"
# Two detach requests half a second apart: a guest that keeps a disk fails the detach in ~1 s.
cat >"$T/controller.json" <<JSON
{"state_dir": "$STATE", "gateway": {"check_interval": 0.2, "repair_interval": 1},
 "libvirt": {"device_detach_attempts": 2, "device_detach_timeout": 0.5}}
JSON
t_start=$(now_ms)

# ACPI: PCI hot-plug on the 'pc' machine, for the virtio-blk disk below.
GUEST_FEATURES='<acpi/>'
libvirt_start
guest_image "$T/guest"
start_controller "$T/controller.json" "$SOCK" '' --gateway
wait_gateway
auth_header
guest_define "$GUEST" "$T/guest"
uuid=$("${VIRSH[@]}" domuuid "$GUEST")
info "guest up in $GUEST_BOOT_MS ms"
create() { "$VOLGATE" volume create --size 1 --output json "$1" | json "d['volume']['id']"; }
v1=$(create one)
v2=$(create two)
v3=$(create root)
body() { echo '{"volumeAttachment": {"volumeId": "'"$1"'"'"${2:+, \"device\": \"$2\"}"'}}'; }
ATTACHMENTS=/servers/$uuid/os-volume_attachments
message() { json "list(d.values())[0]['message']" <"$TEST_TMP/api.body"; }

# ---------------------------------------------------------------------------- error answers
nova 404 POST /servers/no-such-server/os-volume_attachments "$(body "$v1")" >/dev/null
nova 404 GET /servers/no-such-server/os-volume_attachments >/dev/null
nova 404 DELETE "/servers/no-such-server/os-volume_attachments/$v1" >/dev/null
nova 400 POST "$ATTACHMENTS" "$(body "$v1" /dev/hdb)" >/dev/null
nova 400 POST "$ATTACHMENTS" "$(body "$v1" /dev/sda1)" >/dev/null
nova 404 DELETE "$ATTACHMENTS/$v1" >/dev/null
assert_detached "$v1" "$uuid"
assert_eq "$(json "d['volumeAttachment']['device']" <<<"$(nova 200 POST "$ATTACHMENTS" "$(body "$v1")")")" /dev/sdb device
nova 409 POST "$ATTACHMENTS" "$(body "$v1")" >/dev/null                    # attached here already
nova 409 POST "$ATTACHMENTS" "$(body "$v2" /dev/sdb)" >/dev/null           # v1's name
[[ $(message) == *"/dev/sdb"*"in use"* ]] || fail "409 for a taken name says: $(message)"
nova 404 DELETE "$ATTACHMENTS/$v2" >/dev/null                              # not attached
nova 400 POST "$ATTACHMENTS" "$(body "$v2" /dev/sda)" >/dev/null           # the root disk's name
assert_detached "$v2" "$uuid"
assert_attached "$v1" "$uuid"
pass "404 unknown server, 400 bad device name (sda too), 409 attached already, 409 name in use, 404 not attached"

# The attachment Nova's attach made is the server's: a client cannot delete it from under it.
cinder_attachment() {
    curl -s --max-time 30 -o "$TEST_TMP/api.body" -w '%{http_code}' --unix-socket "$SOCK" -X "$1" -H @"$AUTH" \
        -H 'OpenStack-API-Version: volume 3.44' "http://localhost/v3/default/attachments${2:+/$2}${3:-}"
}
assert_eq "$(cinder_attachment GET "" "?volume_id=$v1")" 200 "listing the attachments"
att=$(json "d['attachments'][0]['id']" <"$TEST_TMP/api.body")
assert_eq "$(cinder_attachment DELETE "$att")" 409 "DELETE of the attachment a server holds"
[[ $(message) == *"os-volume_attachments/$v1"* ]] || fail "the 409 does not say how to detach: $(message)"
assert_attached "$v1" "$uuid"
pass "the attachment a server's volume attachment holds: 409 through the attachment API, nothing changed"

# A second server that boots from its first disk (firmware boot from hd, no kernel): the volume
# attached to it first is its root. It stays shut off: attach and detach go to its definition.
cat >"$T/$ROOTED.xml" <<XML
<domain type='qemu'>
  <name>$ROOTED</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <devices><controller type='scsi' index='0' model='virtio-scsi'/><memballoon model='none'/></devices>
</domain>
XML
"${VIRSH[@]}" define "$T/$ROOTED.xml" >/dev/null || fail "virsh define $ROOTED failed"
GUESTS+=("$ROOTED")
GUEST_DIR[$ROOTED]=$T
rooted=$("${VIRSH[@]}" domuuid "$ROOTED")
nova 409 POST "/servers/$rooted/os-volume_attachments" "$(body "$v1")" >/dev/null  # in-use on $GUEST
[[ $(message) == *"in-use"* ]] || fail "409 for an in-use volume says: $(message)"
nova 200 POST "/servers/$rooted/os-volume_attachments" "$(body "$v3")" >/dev/null
nova 400 DELETE "/servers/$rooted/os-volume_attachments/$v3" >/dev/null
assert_eq "$(message)" "Cannot detach a root device volume" "400 message"
assert_eq "$(vol_status "$v3")" in-use "the root volume after the refused detach"
in_xml "$ROOTED" "$v3" --inactive || fail "the root volume left the definition"
assert_eq "$(mapped "$rooted" "$v3")" True "the root volume's mapping"
pass "409 for a volume in-use on another server; 400 'Cannot detach a root device volume' changes nothing"

nova 202 DELETE "$ATTACHMENTS/$v1" >/dev/null
assert_detached "$v1" "$uuid"

# ---------------------------------------------------------------------------- failures
# A disk plugged in without volgate, with the drive address (unit 1) the first volgate name
# (sdb) gets: its name is refused by the controller (409), its address by libvirt.
head -c 1048576 /dev/zero >"$T/outside.img"
cat >"$T/outside.xml" <<XML
<disk type='file' device='disk'>
  <driver name='qemu' type='raw'/>
  <source file='$T/outside.img'/>
  <target dev='sdq' bus='scsi'/>
  <readonly/>
  <address type='drive' controller='0' bus='0' target='0' unit='1'/>
</disk>
XML
"${VIRSH[@]}" attach-device "$GUEST" "$T/outside.xml" --live --config >/dev/null || fail "could not plug the outside disk"
nova 409 POST "$ATTACHMENTS" "$(body "$v2" /dev/sdq)" >/dev/null
nova 500 POST "$ATTACHMENTS" "$(body "$v2")" >/dev/null
info "libvirt refused: $(message)"
[[ $(message) == *"attaching volume $v2"* ]] || fail "the 500 does not say what failed: $(message)"
assert_detached "$v2" "$uuid"
"${VIRSH[@]}" dumpxml "$GUEST" | grep -q "outside.img" || fail "the outside disk went away"
"${VIRSH[@]}" detach-device "$GUEST" "$T/outside.xml" --live --config >/dev/null || fail "could not unplug it"
pass "libvirt refused the disk (a drive address in use): nothing left, the other disk untouched"

# QEMU (user libvirt-qemu) cannot enter the socket directory.
chmod 0700 "$STATE/run"
nova 500 POST "$ATTACHMENTS" "$(body "$v2")" >/dev/null
info "QEMU could not connect: $(message)"
chmod 0711 "$STATE/run"
assert_detached "$v2" "$uuid"
pass "export socket not reachable by QEMU: libvirt's attach failed, the attach reverted"

# A virtio disk in a paused guest: the guest cannot acknowledge the unplug.
nova 200 POST "$ATTACHMENTS" "$(body "$v2" /dev/vdb)" >/dev/null
assert_attached "$v2" "$uuid"
"${VIRSH[@]}" suspend "$GUEST" >/dev/null
t0=$(now_ms)
code=$(curl -s --max-time 60 -o "$TEST_TMP/api.body" -w '%{http_code}' --unix-socket "$SOCK" -X DELETE -H @"$AUTH" \
       "http://localhost/v2.1$ATTACHMENTS/$v2") || true
kept_ms=$(($(now_ms) - t0))
[[ $code == 500 ]] || fail "detach from a paused guest answered $code $(cat "$TEST_TMP/api.body")"
[[ $(message) == *"did not release volume $v2"* ]] || fail "the 500 does not say why: $(message)"
assert_attached "$v2" "$uuid"
"${VIRSH[@]}" resume "$GUEST" >/dev/null
nova 202 DELETE "$ATTACHMENTS/$v2" >/dev/null
assert_detached "$v2" "$uuid"
pass "a paused guest keeps its virtio disk: the detach failed after 2 requests ($kept_ms ms), all of it kept; detached once it ran"

# The controller dies with the disk in the guest (before complete_attachment); at its restart the
# guest is paused, so the recovery's revert cannot take the disk out. The earlier reverts must
# wait: a volume available again while a guest still has its disk could go to another server.
kill -TERM "$CTL_PID"; wait "$CTL_PID" || true; _forget_pid "$CTL_PID"
VOLGATE_TEST_KILL_BEFORE=attach_volume:complete_attachment start_controller "$T/controller.json" "$SOCK" '' --gateway
wait_gateway
curl -s --max-time 60 -o /dev/null --unix-socket "$SOCK" -X POST -H @"$AUTH" -H 'Content-Type: application/json' \
    --data "$(body "$v2" /dev/vdb)" "http://localhost/v2.1$ATTACHMENTS" || true
for ((i = 0; i < 100; i++)); do _proc_running "$CTL_PID" || break; sleep 0.05; done
wait "$CTL_PID" || true
_forget_pid "$CTL_PID"
rm -f "$SOCK"
in_xml "$uuid" "$v2" || fail "the killed attach did not put the disk in the guest"
"${VIRSH[@]}" suspend "$GUEST" >/dev/null
start_controller "$T/controller.json" "$SOCK" '' --gateway
wait_gateway
wait_for_line "$VG_ERR" "stays half reverted in the journal" "the recovery's failed revert"
status=$(vol_status "$v2")
[[ $status != available ]] || fail "the volume is available while the guest has its disk"
assert_eq "$(unfinished_flows)" 1 "flows in the journal while the revert waits"
in_xml "$uuid" "$v2" || fail "the disk left the paused guest"
[[ " $(exports) " == *" volume-$v2 "* ]] || fail "the export of the disk still in the guest was withdrawn"
"${VIRSH[@]}" resume "$GUEST" >/dev/null
for ((i = 0; i < 150; i++)); do [[ $(unfinished_flows) == 0 ]] && break; sleep 0.1; done
assert_eq "$(unfinished_flows)" 0 "flows in the journal after the guest runs again"
assert_detached "$v2" "$uuid"
pass "an attach's revert the paused guest refused: volume $status, its flow kept; reverted whole once the guest ran"

# The server undefined while an attach waits to plug the disk in: 404, and nothing left.
GONE=volgate-it-gone-$$
sed "s/$ROOTED/$GONE/" "$T/$ROOTED.xml" >"$T/$GONE.xml"
"${VIRSH[@]}" define "$T/$GONE.xml" >/dev/null || fail "virsh define $GONE failed"
gone=$("${VIRSH[@]}" domuuid "$GONE")
kill -TERM "$CTL_PID"; wait "$CTL_PID" || true; _forget_pid "$CTL_PID"
VOLGATE_TEST_STALL_BEFORE=attach_volume:attach_disk:2000 start_controller "$T/controller.json" "$SOCK" '' --gateway
wait_gateway
curl -s --max-time 60 -o "$T/gone.body" -w '%{http_code}' --unix-socket "$SOCK" -X POST -H @"$AUTH" \
    -H 'Content-Type: application/json' --data "$(body "$v2")" \
    "http://localhost/v2.1/servers/$gone/os-volume_attachments" >"$T/gone.code" &
curl_pid=$!
BG_PIDS+=("$curl_pid")
wait_for_line "$VG_ERR" "test hook: stalling" "the attach"
"${VIRSH[@]}" undefine "$GONE" >/dev/null || fail "virsh undefine $GONE failed"
wait "$curl_pid" || true
assert_eq "$(cat "$T/gone.code")" 404 "attach to a server undefined meanwhile ($(cat "$T/gone.body"))"
assert_eq "$(vol_status "$v2")" available "the volume after the attach to a vanished server"
assert_eq "$(unfinished_flows)" 0 "flows left in the journal"
pass "the server undefined during an attach: 404, the volume available again"

# The database locked by another process past the busy timeout (10 s) while the attach is in
# its last step (the lock is taken while the test hook holds the attach 3 s before that step):
# the attach fails with SQLite's reason and reverts once the lock is gone.
kill -TERM "$CTL_PID"; wait "$CTL_PID" || true; _forget_pid "$CTL_PID"
VOLGATE_TEST_STALL_BEFORE=attach_volume:complete_attachment:3000 \
    start_controller "$T/controller.json" "$SOCK" '' --gateway
wait_gateway
curl -s --max-time 60 -o "$T/locked.body" -w '%{http_code}' --unix-socket "$SOCK" -X POST -H @"$AUTH" \
    -H 'Content-Type: application/json' --data "$(body "$v2")" "http://localhost/v2.1$ATTACHMENTS" >"$T/locked.code" &
curl_pid=$!
BG_PIDS+=("$curl_pid")
wait_for_line "$VG_ERR" "test hook: stalling" "the attach"
"$SYSPY" - "$STATE/controller.db" 15 >"$T/lock.out" 2>&1 <<'PY' &
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=5)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("ROLLBACK")
PY
lock_pid=$!
BG_PIDS+=("$lock_pid")
wait_for_line "$T/lock.out" locked "the lock holder"
t0=$(now_ms)
wait "$lock_pid" || fail "the lock holder failed: $(cat "$T/lock.out")"
wait "$curl_pid" || true
locked_ms=$(($(now_ms) - t0))
assert_eq "$(cat "$T/locked.code")" 500 "attach while the database is locked"
[[ $(cat "$T/locked.body") == *"database is locked"* ]] || fail "the 500 does not say why: $(cat "$T/locked.body")"
assert_detached "$v2" "$uuid"
assert_eq "$(unfinished_flows)" 0 "flows left in the journal"
pass "database locked for 15 s during the attach: 500 'database is locked', reverted whole after the lock (answered $locked_ms ms after it was taken)"

# The gateway down, and no --gateway to start it again: 503, nothing reserved.
gw_pid=$(curl -s --max-time 5 --unix-socket "$GW" http://gateway/v1/health | json "d['pid']")
kill -TERM "$CTL_PID"; wait "$CTL_PID" || true; _forget_pid "$CTL_PID"
kill -KILL "$gw_pid"
for ((i = 0; i < 100; i++)); do kill -0 "$gw_pid" 2>/dev/null || break; sleep 0.05; done
start_controller "$T/controller.json" "$SOCK"
nova 503 POST "$ATTACHMENTS" "$(body "$v2")" >/dev/null
info "gateway down: $(message)"
[[ $(message) == *[Gg]ateway* ]] || fail "the 503 does not name the gateway: $(message)"
[[ $(message) != *"$STATE"* ]] || fail "the 503 shows a host path: $(message)"
GATEWAY_DOWN=1 assert_detached "$v2" "$uuid"
kill -TERM "$CTL_PID"; wait "$CTL_PID" || true; _forget_pid "$CTL_PID"
start_controller "$T/controller.json" "$SOCK" '' --gateway
wait_gateway
nova 200 POST "$ATTACHMENTS" "$(body "$v2")" >/dev/null
assert_attached "$v2" "$uuid"
nova 202 DELETE "$ATTACHMENTS/$v2" >/dev/null
assert_detached "$v2" "$uuid"
pass "gateway down: 503 naming it, nothing left; with the gateway back the attach works"
stop_volgate "$CTL_PID"
info "whole file: $(($(now_ms) - t_start)) ms"
assert_no_sanitizer_reports
