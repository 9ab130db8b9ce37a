#!/usr/bin/env bash
# Nova's os-volume_attachments against a real libvirtd and TCG guest: the
# controller attaches an encrypted volume to the running guest through libvirt's C API, the guest
# writes to it, and the detach takes it out of the guest, the gateway and the database. Then the
# same through Debian's novaclient (version discovery, list, show, volume-attach,
# volume-attachments, volume-detach, instance-action-list, instance-action) and through
# `volgate server attach|volumes|actions|detach`, on the same guest.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/guest_lib.sh"
require_volgate
require_tool curl virsh nova

T=$TEST_TMP
STATE=$T/state
SOCK=$STATE/controller.sock
GUEST=volgate-it-nova-$$
export VOLGATE_URL=unix:$SOCK
PORT=$(free_tcp_port)
URL=http://127.0.0.1:$PORT
MAX_COMPUTE=2.89  # kMaxComputeVersion in controller/api/api_version.hpp
cat >"$T/controller.json" <<JSON
{"state_dir": "$STATE", "tcp_listen": "127.0.0.1:$PORT"}
JSON
json() { "$SYSPY" -c 'import json, sys; d = json.load(sys.stdin); r = eval(sys.argv[1]); print(r if not isinstance(r, (dict, list)) else json.dumps(r))' "$1"; }
AUTH=$T/auth.header
api() {  # STATUS METHOD PATH [BODY]: prints the body
    local want=$1 method=$2 path=$3 code
    local args=(-s -o "$T/api.body" -w '%{http_code}' --unix-socket "$SOCK" -X "$method" -H @"$AUTH")
    args+=(-H "OpenStack-API-Version: compute $MAX_COMPUTE")
    [[ $# -ge 4 ]] && args+=(-H 'Content-Type: application/json' --data "$4")
    code=$(curl "${args[@]}" "http://localhost/v2.1$path")
    [[ $code == "$want" ]] || fail "$method $path -> $code $(cat "$T/api.body") (expected $want)"
    cat "$T/api.body"
}
vol_status() { "$VOLGATE" volume show --project default --output json "$1" | json "d['volume']['status']"; }

libvirt_start
guest_image "$T/guest"
start_controller "$T/controller.json" "$SOCK" '^http://' --gateway
(umask 077 && printf 'X-Auth-Token: %s\n' "$(cat "$STATE/token")" >"$AUTH")
guest_define "$GUEST" "$T/guest"
uuid=$("${VIRSH[@]}" domuuid "$GUEST")

vol=$("$VOLGATE" volume create --size 1 --encrypted --output json nova-data | json "d['volume']['id']")
t0=$(now_ms)
r=$(api 200 POST "/servers/$uuid/os-volume_attachments" '{"volumeAttachment": {"volumeId": "'"$vol"'", "tag": "data"}}')
attach_ms=$(($(now_ms) - t0))
assert_eq "$(json "d['volumeAttachment']['device']" <<<"$r")" /dev/sdb "device"
assert_eq "$(vol_status "$vol")" in-use "volume after attach"
"${VIRSH[@]}" dumpxml "$GUEST" | grep -q "<serial>$vol</serial>" || fail "the disk is not in the live XML"
"${VIRSH[@]}" dumpxml --inactive "$GUEST" | grep -q "<serial>$vol</serial>" || fail "the disk is not in the definition"
out=$(guest_run "$GUEST" "for i in 1 2 3 4 5 6 7 8 9 10; do ls /dev/disk/by-id/*$vol* >/dev/null 2>&1 && break; sleep 0.5; done
dev=\$(ls /dev/disk/by-id/*$vol* | head -1)
dd if=/dev/zero bs=4096 count=1 2>/dev/null | tr '\\0' 'N' | dd of=\$dev bs=4096 count=1 oflag=direct 2>/dev/null
dd if=\$dev bs=4096 count=1 iflag=direct 2>/dev/null | head -c 8" 30)
assert_eq "$out" NNNNNNNN "the guest wrote and read its disk"
list=$(api 200 GET "/servers/$uuid/os-volume_attachments")
assert_eq "$(json "d['volumeAttachments'][0]['volumeId']" <<<"$list")" "$vol" "os-volume_attachments list"
api 409 POST "/servers/$uuid/os-volume_attachments" '{"volumeAttachment": {"volumeId": "'"$vol"'"}}' >/dev/null
pass "attach through Nova's API: in the live XML and the definition, the guest writes it ($attach_ms ms)"

t0=$(now_ms)
api 202 DELETE "/servers/$uuid/os-volume_attachments/$vol" >/dev/null
detach_ms=$(($(now_ms) - t0))
assert_eq "$(vol_status "$vol")" available "volume after detach"
guest_has_disk "$GUEST" "<serial>$vol</serial>" && fail "the disk is still in the guest"
api 404 DELETE "/servers/$uuid/os-volume_attachments/$vol" >/dev/null
pass "detach through Nova's API: out of the guest and its definition, volume available ($detach_ms ms)"

# ------------------------------------------------------------------ novaclient
# The token comes from the environment (off every command line); the endpoint is Nova's /v2.1,
# whose version document novaclient reads to settle on min(its highest, ours). novaclient 18.1
# insists on an auth URL even for the admin_token plugin, which never contacts it.
unset OS_AUTH_TYPE OS_AUTH_PLUGIN OS_AUTH_SYSTEM OS_COMPUTE_API_VERSION OS_AUTH_URL OS_USERNAME OS_PASSWORD
OS_TOKEN=$(cat "$STATE/token")
export OS_TOKEN
export OS_PROJECT_ID=default  # novaclient insists on one; the bare /v2.1 endpoint acts in "default"
export OS_AUTH_URL=http://127.0.0.1:1/unused
# novac ARGS...: output in $T/out, stderr in $T/err
novac() { command nova --os-auth-type admin_token --os-endpoint "$URL/v2.1" "$@" >"$T/out" 2>"$T/err"; }

novac list || fail "nova list: $(cat "$T/err")"
grep -Eq "\| $uuid \| $GUEST +\| ACTIVE" "$T/out" || fail "nova list: $(cat "$T/out")"
novac show "$GUEST" || fail "nova show: $(cat "$T/err")"
assert_eq "$(field status <"$T/out")" ACTIVE "nova show status"
assert_eq "$(field id <"$T/out")" "$uuid" "nova show id (found by name)"
code=$(curl -s -D "$T/headers" -o /dev/null -w '%{http_code}' "$URL/v2.1/")
assert_eq "$code" 200 "GET /v2.1/ without a token (version document)"
pass "novaclient: version discovery, list and show (server found by name)"

vol2=$("$VOLGATE" volume create --size 1 --output json nova-client | json "d['volume']['id']")
t0=$(now_ms)
novac volume-attach --tag client "$GUEST" "$vol2" || fail "nova volume-attach: $(cat "$T/err")"
client_attach_ms=$(($(now_ms) - t0))
assert_eq "$(field device <"$T/out")" /dev/sdb "nova volume-attach device"
assert_eq "$(field tag <"$T/out")" client "nova volume-attach tag (shown from 2.70)"
assert_eq "$(vol_status "$vol2")" in-use "volume after nova volume-attach"
novac volume-attachments "$GUEST" || fail "nova volume-attachments: $(cat "$T/err")"
grep -q "$vol2" "$T/out" || fail "nova volume-attachments: $(cat "$T/out")"
out=$(guest_run "$GUEST" "for i in 1 2 3 4 5 6 7 8 9 10; do ls /dev/disk/by-id/*$vol2* >/dev/null 2>&1 && break; sleep 0.5; done
ls /dev/disk/by-id/ | grep -c $vol2" 30)
[[ $out -ge 1 ]] || fail "the guest does not see the volume attached by novaclient: $out"
# The same volume again: Nova's 409, which novaclient reports and exits non-zero for.
novac volume-attach "$GUEST" "$vol2" && fail "a second nova volume-attach of an in-use volume succeeded"
grep -qi "already attached\|409" "$T/err" || fail "nova volume-attach twice: $(cat "$T/err")"
novac volume-detach "$GUEST" "$vol2" || fail "nova volume-detach: $(cat "$T/err")"
assert_eq "$(vol_status "$vol2")" available "volume after nova volume-detach"
novac instance-action-list "$GUEST" || fail "nova instance-action-list: $(cat "$T/err")"
n_attach=$(grep -c '| attach_volume' "$T/out" || true)
n_detach=$(grep -c '| detach_volume' "$T/out" || true)
# Two attaches (curl, novaclient) and two detaches; the refused second attach is no action.
assert_eq "$n_attach/$n_detach" 2/2 "attach/detach actions in nova instance-action-list"
req=$(awk -F'|' '$2 ~ /detach_volume/ {gsub(/ /, "", $3); print $3; exit}' "$T/out")
[[ $req == req-* ]] || fail "no request id for the detach: $(cat "$T/out")"
novac instance-action "$GUEST" "$req" || fail "nova instance-action: $(cat "$T/err")"
grep -q 'compute_detach_volume' "$T/out" && grep -q 'Success' "$T/out" ||
    fail "nova instance-action: the detach's event: $(cat "$T/out")"
pass "novaclient: volume-attach --tag ($client_attach_ms ms), volume-attachments, 409 twice, volume-detach, instance-action-list/instance-action"

# ------------------------------------------------------------------ volgate server CLI
"$VOLGATE" server attach --device /dev/sdc --tag cli "$GUEST" "$vol2" >"$T/out" 2>"$T/err" ||
    fail "volgate server attach: $(cat "$T/err")"
grep -q '^device *\/dev\/sdc' "$T/out" || fail "volgate server attach: $(cat "$T/out")"
"$VOLGATE" server volumes "$GUEST" >"$T/out" || fail "volgate server volumes"
grep -q "^$vol2 *\/dev\/sdc *cli" "$T/out" || fail "volgate server volumes: $(cat "$T/out")"
"$VOLGATE" server show "$GUEST" | grep -q "^volumes *$vol2" || fail "volgate server show: no volumes line"
# A virtio device for a scsi bus is a clear 400, with one line and exit code 2.
rc=0
"$VOLGATE" server attach --device /dev/sdd --bus virtio "$GUEST" "$vol" >"$T/out" 2>"$T/err" || rc=$?
assert_eq "$rc" 2 "exit code of a refused attach"
grep -q "is on the scsi bus, not virtio" "$T/err" || fail "refused attach: $(cat "$T/err")"
"$VOLGATE" server detach "$GUEST" "$vol2" >"$T/out" || fail "volgate server detach"
assert_eq "$(vol_status "$vol2")" available "volume after volgate server detach"
"$VOLGATE" server actions "$GUEST" >"$T/out" || fail "volgate server actions"
assert_eq "$(grep -c ' Success' "$T/out")" 6 "successful actions in volgate server actions"
req=$(awk '$2 == "attach_volume" {print $1; exit}' "$T/out")
"$VOLGATE" server actions "$GUEST" "$req" >"$T/out" || fail "volgate server actions REQUEST"
grep -q '^compute_attach_volume .* Success' "$T/out" || fail "volgate server actions $req: $(cat "$T/out")"
pass "volgate server attach --device --tag, volumes, show, detach, actions (list and one)"
