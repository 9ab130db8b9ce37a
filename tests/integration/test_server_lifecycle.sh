#!/usr/bin/env bash
# A server's life with a volume, against a real libvirtd and TCG guest: an encrypted volume
# attached while the server is shut off (only in its definition, its export kept on the
# gateway), `volgate server start` (the guest sees and uses the disk), `volgate server stop`,
# `virsh start` (the export was kept), detach from the shut-off server; then libvirt events
# reconciled: the domain undefined under an attached volume, and a disk detached by hand with
# virsh, each give the volume back (available, export gone) within seconds; the guest's I/O
# errors on a volume whose export vanished are logged once, naming server and volume; a domain
# undefined while the controller was down has its volume released at the controller's start; so
# has a transient domain destroyed.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/guest_lib.sh"
require_volgate
require_tool curl virsh nbdinfo

T=$TEST_TMP
STATE=$T/state
SOCK=$STATE/controller.sock
NBD_SOCK=$STATE/run/nbd.sock
GUEST=volgate-it-life-$$
export VOLGATE_URL=unix:$SOCK
# The busybox guest does not act on ACPI's power button: every stop ends with the power-off
# after this timeout, which keeps the test short.
cat >"$T/controller.json" <<JSON
{"state_dir": "$STATE", "server_shutdown_timeout": 2}
JSON
json() { "$SYSPY" -c 'import json, sys; d = json.load(sys.stdin); r = eval(sys.argv[1]); print(r if not isinstance(r, (dict, list)) else json.dumps(r))' "$1"; }
AUTH=$T/auth.header
nova() {  # STATUS METHOD PATH [BODY]: prints the body
    local want=$1 method=$2 path=$3 code
    local args=(-s -o "$T/api.body" -w '%{http_code}' --unix-socket "$SOCK" -X "$method" -H @"$AUTH")
    [[ $# -ge 4 ]] && args+=(-H 'Content-Type: application/json' --data "$4")
    code=$(curl "${args[@]}" "http://localhost/v2.1$path")
    [[ $code == "$want" ]] || fail "$method $path -> $code $(cat "$T/api.body") (expected $want)"
    cat "$T/api.body"
}
vol_status() { "$VOLGATE" volume show --project default --output json "$1" | json "d['volume']['status']"; }
served() { nbdinfo --size "$(unix_uri "volume-$1" "$NBD_SOCK")" >/dev/null 2>&1; }
in_xml() {  # VOLUME [--inactive]: the disk is in the live (or persistent) XML; a failing virsh fails
    local xml
    xml=$("${VIRSH[@]}" dumpxml "${@:2}" "$GUEST") || fail "virsh dumpxml $GUEST failed"
    grep -q "<serial>$1</serial>" <<<"$xml"
}
attach() { nova 200 POST "/servers/$uuid/os-volume_attachments" '{"volumeAttachment": {"volumeId": "'"$1"'"}}' >/dev/null; }
# wait_available VOLUME WHAT: the controller gives the volume back within 10 s; prints the ms.
wait_available() {
    local t0 i
    t0=$(now_ms)
    for ((i = 0; i < 100; i++)); do
        [[ $(vol_status "$1") == available ]] && { echo $(($(now_ms) - t0)); return 0; }
        sleep 0.1
    done
    fail "$2: volume $1 is still $(vol_status "$1") after 10 s; controller log: $(tail -n 5 "$VG_ERR")"
}
# The guest's command: wait for the volume's by-id link, then run $2 with $dev set.
on_disk() { echo "for i in 1 2 3 4 5 6 7 8 9 10; do ls /dev/disk/by-id/*$1* >/dev/null 2>&1 && break; sleep 0.5; done
dev=\$(ls /dev/disk/by-id/*$1* | head -1)
$2"; }

libvirt_start
guest_image "$T/guest"
start_controller "$T/controller.json" "$SOCK" '' --gateway
(umask 077 && printf 'X-Auth-Token: %s\n' "$(cat "$STATE/token")" >"$AUTH")
guest_define "$GUEST" "$T/guest" --shut-off
uuid=$("${VIRSH[@]}" domuuid "$GUEST")
assert_eq "$("$VOLGATE" server show --output json "$GUEST" | json "d['server']['status']")" SHUTOFF "server state"

# ---- attach to the shut-off server: in the definition only, the export kept
vol=$("$VOLGATE" volume create --size 1 --encrypted --output json life-data | json "d['volume']['id']")
attach "$vol"
assert_eq "$(vol_status "$vol")" in-use "volume attached to the shut-off server"
in_xml "$vol" --inactive || fail "the disk is not in the definition"
assert_eq "$("${VIRSH[@]}" domstate "$GUEST")" "shut off" "domain state after the attach"
served "$vol" || fail "the gateway does not serve the volume of a shut-off server"
nova 409 POST "/servers/$uuid/action" '{"os-stop": null}' | grep -q "vm_state stopped" ||
    fail "os-stop of a shut-off server: not Nova's 409"
pass "attach to a shut-off server: in its definition, volume in-use, export served"

# ---- volgate server start: the guest sees the disk and uses it
rm -f "$T/guest/console.log"
t0=$(now_ms)
out=$("$VOLGATE" server start "$GUEST")
start_ms=$(($(now_ms) - t0))
grep -q 'ACTIVE' <<<"$out" || fail "server start printed: $out"
guest_wait_ready "$GUEST" "$T/guest"
boot_ms=$(($(now_ms) - t0))
in_xml "$vol" || fail "the disk is not in the running domain"
out=$(guest_run "$GUEST" "$(on_disk "$vol" "dd if=/dev/zero bs=4096 count=1 2>/dev/null | tr '\\0' 'L' | dd of=\$dev bs=4096 count=1 oflag=direct 2>/dev/null
dd if=\$dev bs=4096 count=1 iflag=direct 2>/dev/null | head -c 8")" 30)
assert_eq "$out" LLLLLLLL "the guest wrote and read the volume"
nova 409 POST "/servers/$uuid/action" '{"os-start": null}' | grep -q "vm_state active" ||
    fail "os-start of a running server: not Nova's 409"
pass "volgate server start: running in $start_ms ms, shell up in $boot_ms ms; the guest writes and reads the volume"

# ---- volgate server stop: shut off, the export kept
t0=$(now_ms)
out=$("$VOLGATE" server stop --timeout 30 "$GUEST")
stop_ms=$(($(now_ms) - t0))
grep -q 'SHUTOFF' <<<"$out" || fail "server stop printed: $out"
assert_eq "$("${VIRSH[@]}" domstate "$GUEST")" "shut off" "domain state after the stop"
assert_eq "$(vol_status "$vol")" in-use "volume of the stopped server"
served "$vol" || fail "the export went with the stop"
grep -q "server $uuid: stopped (powered off)" "$VG_ERR" || fail "no stop line in the controller's log"
pass "volgate server stop: shut off in $stop_ms ms (power-off after the 2 s shutdown timeout), export kept"

# ---- virsh start works too (the export was kept): the guest reads what it wrote
guest_boot "$GUEST" "$T/guest"
out=$(guest_run "$GUEST" "$(on_disk "$vol" "dd if=\$dev bs=4096 count=1 iflag=direct 2>/dev/null | head -c 8")" 30)
assert_eq "$out" LLLLLLLL "the guest reads the volume after virsh start"
# A persistent domain powered off by hand keeps its volumes.
"${VIRSH[@]}" destroy "$GUEST" >/dev/null
sleep 1
assert_eq "$(vol_status "$vol")" in-use "volume after virsh destroy of the persistent domain"
pass "virsh start: the guest boots with the volume and reads its data (boot $GUEST_BOOT_MS ms); virsh destroy keeps it"

# ---- detach from the shut-off server
t0=$(now_ms)
nova 202 DELETE "/servers/$uuid/os-volume_attachments/$vol" >/dev/null
detach_ms=$(($(now_ms) - t0))
assert_eq "$(vol_status "$vol")" available "volume after the detach"
in_xml "$vol" --inactive && fail "the disk is still in the definition"
served "$vol" && fail "the export is still served after the detach"
pass "detach from the shut-off server: out of the definition, export gone, volume available ($detach_ms ms)"

# ---- libvirt events: the domain undefined under an attached volume
attach "$vol"
served "$vol" || fail "the export is not served after the second attach"
"${VIRSH[@]}" undefine "$GUEST" >/dev/null
ms=$(wait_available "$vol" "undefine")
served "$vol" && fail "the export is still served after the domain went"
grep -q "server $uuid: volume $vol released, the server is gone" "$VG_ERR" || fail "no release line in the log"
[[ $("$VOLGATE" attachment list --volume "$vol" --output json | json "len(d['attachments'])") == 0 ]] ||
    fail "the volume still has an attachment"
pass "virsh undefine of a shut-off server: its volume available in $ms ms, export and attachment gone"

# ---- the same volume on a running guest
guest_define "$GUEST" "$T/guest"
uuid=$("${VIRSH[@]}" domuuid "$GUEST")
attach "$vol"
in_xml "$vol" || fail "the disk is not in the running guest"

# ---- libvirt events: QEMU's I/O errors on the volume, logged once with the server and volume
# The export withdrawn behind the controller's back (as a crashed gateway would lose it): the
# guest's reads fail until the export check serves it again.
code=$(curl -s -o /dev/null -w '%{http_code}' --unix-socket "$STATE/run/gateway.sock" -X DELETE \
       "http://localhost/v1/exports/volume-$vol?force=true")
assert_eq "$code" 204 "export withdrawn from the gateway"
guest_run "$GUEST" "$(on_disk "$vol" "for i in 1 2 3 4 5 6; do dd if=\$dev of=/dev/null bs=4096 count=1 skip=\$i iflag=direct 2>&1 | tail -1; done")" 120 >/dev/null || true
for ((i = 0; i < 50; i++)); do grep -q "I/O error on volume $vol" "$VG_ERR" && break; sleep 0.1; done
io_lines=$(grep -c "server $uuid: I/O error on volume $vol" "$VG_ERR" || true)
assert_eq "$io_lines" 1 "log lines for the guest's failed reads (one, throttled)"
pass "QEMU I/O errors on the volume: one log line naming server and volume ($(grep -m1 "I/O error on volume $vol" "$VG_ERR" | sed 's/.*: //'))"

# ---- libvirt events: a disk detached by hand from a running guest
target=$("${VIRSH[@]}" domblklist "$GUEST" | awk -v v="volume-$vol" '$2 ~ v {print $1}')
[[ -n $target ]] || target=sdb
"${VIRSH[@]}" detach-disk "$GUEST" "$target" --persistent >/dev/null
ms=$(wait_available "$vol" "detach-disk")
served "$vol" && fail "the export is still served after the disk was detached by hand"
grep -q "server $uuid: volume $vol released, its disk was removed" "$VG_ERR" || fail "no release line in the log"
[[ $("${VIRSH[@]}" domstate "$GUEST") == running ]] || fail "the guest did not survive"
pass "virsh detach-disk by hand: the volume available in $ms ms, export gone, guest running"

# ---- a domain that went away while the controller was down: reconciled at its start
attach "$vol"
assert_eq "$(vol_status "$vol")" in-use "volume attached again"
kill -TERM "$CTL_PID"
wait "$CTL_PID" 2>/dev/null || true
_forget_pid "$CTL_PID"
"${VIRSH[@]}" destroy "$GUEST" >/dev/null
"${VIRSH[@]}" undefine "$GUEST" >/dev/null
start_controller "$T/controller.json" "$SOCK" '' --gateway
ms=$(wait_available "$vol" "restart")
served "$vol" && fail "the export is still served after the restart"
grep -q "server $uuid: volume $vol released, the server is gone" "$VG_ERR" || fail "no release line in the log"
pass "a server undefined while the controller was down: its volume available $ms ms after the restart"

# ---- a transient domain destroyed: gone with its disks. It needs no OS for a SCSI hot-plug, so
# it boots none (it waits in the BIOS) and costs no guest boot.
TRANSIENT=volgate-it-transient-$$
cat >"$T/transient.xml" <<XML
<domain type='qemu'>
  <name>$TRANSIENT</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='scsi' index='0' model='virtio-scsi'/>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
XML
"${VIRSH[@]}" create "$T/transient.xml" >/dev/null || fail "virsh create $TRANSIENT failed"
GUESTS+=("$TRANSIENT")  # destroyed at exit should the test fail before
tuuid=$("${VIRSH[@]}" domuuid "$TRANSIENT")
nova 200 POST "/servers/$tuuid/os-volume_attachments" '{"volumeAttachment": {"volumeId": "'"$vol"'"}}' >/dev/null
assert_eq "$(vol_status "$vol")" in-use "volume attached to the transient domain"
"${VIRSH[@]}" destroy "$TRANSIENT" >/dev/null
ms=$(wait_available "$vol" "transient destroy")
served "$vol" && fail "the export is still served after the transient domain went"
grep -q "server $tuuid: volume $vol released, the server is gone" "$VG_ERR" || fail "no release line in the log"
pass "a transient domain destroyed: its volume available in $ms ms, export gone"
