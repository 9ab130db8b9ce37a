#!/usr/bin/env bash
# Nova's os-volume_attachments against a real libvirtd and TCG guest: the
# controller attaches an encrypted volume to the running guest through libvirt's C API, the guest
# writes to it, and the detach takes it out of the guest, the gateway and the database.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/guest_lib.sh"
require_volgate
require_tool curl virsh

T=$TEST_TMP
STATE=$T/state
SOCK=$STATE/controller.sock
GUEST=volgate-it-nova-$$
export VOLGATE_URL=unix:$SOCK
cat >"$T/controller.json" <<JSON
{"state_dir": "$STATE"}
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

libvirt_start
guest_image "$T/guest"
start_controller "$T/controller.json" "$SOCK" '' --gateway
(umask 077 && printf 'X-Auth-Token: %s\n' "$(cat "$STATE/token")" >"$AUTH")
guest_define "$GUEST" "$T/guest"
uuid=$("${VIRSH[@]}" domuuid "$GUEST")

vol=$("$VOLGATE" volume create --size 1 --encrypted --output json nova-data | json "d['volume']['id']")
t0=$(now_ms)
r=$(nova 200 POST "/servers/$uuid/os-volume_attachments" '{"volumeAttachment": {"volumeId": "'"$vol"'", "tag": "data"}}')
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
list=$(nova 200 GET "/servers/$uuid/os-volume_attachments")
assert_eq "$(json "d['volumeAttachments'][0]['volumeId']" <<<"$list")" "$vol" "os-volume_attachments list"
nova 409 POST "/servers/$uuid/os-volume_attachments" '{"volumeAttachment": {"volumeId": "'"$vol"'"}}' >/dev/null
pass "attach through Nova's API: in the live XML and the definition, the guest writes it ($attach_ms ms)"

t0=$(now_ms)
nova 202 DELETE "/servers/$uuid/os-volume_attachments/$vol" >/dev/null
detach_ms=$(($(now_ms) - t0))
assert_eq "$(vol_status "$vol")" available "volume after detach"
"${VIRSH[@]}" dumpxml "$GUEST" | grep -q "<serial>$vol</serial>" && fail "the disk is still in the guest"
nova 404 DELETE "/servers/$uuid/os-volume_attachments/$vol" >/dev/null
pass "detach through Nova's API: out of the guest and its definition, volume available ($detach_ms ms)"
