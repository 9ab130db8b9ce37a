#!/usr/bin/env bash
# Concurrent attaches and detaches through Nova's os-volume_attachments, against a real libvirtd
# and two TCG guests booted once:
# - three volumes (two encrypted) attached to one guest by three parallel POSTs: all succeed with
#   distinct device names, all three are in the live XML and the definition, the guest finds each
#   by its serial and writes and reads a pattern of its own on each (no cross-talk); then three
#   parallel DELETEs take them all out again;
# - two guests attaching a volume each at once, and a request for the other guest while five
#   attaches queue on the first (different servers run in parallel, one server's are serialised
#   by its lock);
# - two guests attaching the same volume at once: exactly one wins, the other gets 409 and leaves
#   nothing behind (no disk, no mapping, no second attachment).
# It prints the wall times of the parallel requests beside those of a lone attach and detach.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/guest_lib.sh"
require_volgate
require_tool curl virsh

T=$TEST_TMP
STATE=$T/state
GUEST_A=volgate-it-conc-a-$$
GUEST_B=volgate-it-conc-b-$$
t_test=$(now_ms)
cat >"$T/controller.json" <<JSON
{"state_dir": "$STATE"}
JSON
. "$INTEGRATION_DIR/attach_lib.sh"  # nova, json, vol_status, exports, in_xml, auth_header, wait_gateway
CURL=(curl -s --max-time 120 --unix-socket "$SOCK" -H @"$AUTH")
# Requests sent at once: parallel NAME=METHOD:PATH[:BODY]... sends them together (PATH under
# /v2.1) and sets WALL_MS (from their release to the last answer); req_code, req_body and req_ms
# (that request's own time) read each one's answer.
parallel() {
    local specs=() spec
    for spec in "$@"; do specs+=("${spec%%:*}:/v2.1${spec#*:}"); done
    WALL_MS=$("$SYSPY" "$INTEGRATION_DIR/parallel_requests.py" "$SOCK" "$STATE/token" "$T" "${specs[@]}") ||
        fail "parallel requests: $WALL_MS"
}
req_code() { cat "$T/$1.code"; }
req_ms() { cat "$T/$1.ms"; }
req_body() { cat "$T/$1.body"; }
attach_body() { echo '{"volumeAttachment": {"volumeId": "'"$1"'"}}'; }

volume_create() {  # NAME [--encrypted]: prints the id of an available 1 GiB volume
    local id i
    id=$("$VOLGATE" volume create --size 1 ${2:+"$2"} --output json "$1" | json "d['volume']['id']")
    for ((i = 0; i < 300; i++)); do [[ $(vol_status "$id") == available ]] && break; sleep 0.05; done
    assert_eq "$(vol_status "$id")" available "volume $1 after create"
    echo "$id"
}
gw() { curl -s --max-time 5 --unix-socket "$GW" "http://gateway$1"; }
# The guest's kernel sees a hot-plug or an unplug a moment after libvirt: wait_links GUEST
# present|absent VOLUME... waits until every volume's by-id link is there (or none is).
wait_links() {
    local guest=$1 want=$2 cond v
    shift 2
    cond=
    for v in "$@"; do
        if [[ $want == present ]]; then cond+=" && ls /dev/disk/by-id/*$v >/dev/null 2>&1"
        else cond+=" && ! ls /dev/disk/by-id/*$v >/dev/null 2>&1"; fi
    done
    guest_run "$guest" "for i in \$(seq 100); do true $cond && exit 0; sleep 0.1; done; ls -l /dev/disk/by-id; exit 1" 30 \
        >"$T/links.out" || fail "guest $guest: the disks of $* are not $want after 10 s: $(cat "$T/links.out")"
}

# ------------------------------------------------------------------ libvirtd, two guests, the controller
libvirt_start
# One directory per guest: each has its own console log and command socket there.
guest_image "$T/guest-a"
guest_image "$T/guest-b"
start_controller "$T/controller.json" "$SOCK" '' --gateway
auth_header
wait_gateway
BG_PIDS+=("$(gw /v1/health | json "d['pid']")")  # it outlives a controller that fails: the test's exit kills it
guest_define "$GUEST_A" "$T/guest-a"
boot_a=$GUEST_BOOT_MS
guest_define "$GUEST_B" "$T/guest-b"
A=$("${VIRSH[@]}" domuuid "$GUEST_A")
B=$("${VIRSH[@]}" domuuid "$GUEST_B")
pass "two guests booted ($boot_a ms, $GUEST_BOOT_MS ms)"

a1=$(volume_create conc-a1 --encrypted)
a2=$(volume_create conc-a2)
a3=$(volume_create conc-a3 --encrypted)
a4=$(volume_create conc-a4)
a5=$(volume_create conc-a5)
b1=$(volume_create conc-b1)
s1=$(volume_create conc-shared)

# ------------------------------------------------------------------ one attach and one detach alone
parallel one=POST:"/servers/$B/os-volume_attachments:$(attach_body "$b1")"
assert_eq "$(req_code one)" 200 "lone attach: $(req_body one)"
one_attach_ms=$(req_ms one)
parallel one=DELETE:"/servers/$B/os-volume_attachments/$b1"
assert_eq "$(req_code one)" 202 "lone detach: $(req_body one)"
one_detach_ms=$(req_ms one)
assert_eq "$(vol_status "$b1")" available "volume after the lone detach"
pass "a lone attach takes $one_attach_ms ms, a lone detach $one_detach_ms ms"

# ------------------------------------------------------------------ three volumes, one guest, at once
parallel att1=POST:"/servers/$A/os-volume_attachments:$(attach_body "$a1")" \
         att2=POST:"/servers/$A/os-volume_attachments:$(attach_body "$a2")" \
         att3=POST:"/servers/$A/os-volume_attachments:$(attach_body "$a3")"
three_attach_ms=$WALL_MS
devices=()
for n in 1 2 3; do
    v=a$n
    assert_eq "$(req_code "att$n")" 200 "parallel attach $n: $(req_body "att$n")"
    assert_eq "$(req_body "att$n" | json "d['volumeAttachment']['volumeId']")" "${!v}" "volume of answer $n"
    devices+=("$(req_body "att$n" | json "d['volumeAttachment']['device']")")
    assert_eq "$(vol_status "${!v}")" in-use "volume $n after the parallel attaches"
    in_xml "$GUEST_A" "${!v}" || fail "volume $n (${!v}) is not in $GUEST_A's live XML"
    in_xml "$GUEST_A" "${!v}" --inactive || fail "volume $n (${!v}) is not in $GUEST_A's definition"
done
assert_eq "$(printf '%s\n' "${devices[@]}" | sort -u | wc -l)" 3 "distinct device names (${devices[*]})"
assert_eq "$(printf '%s\n' "${devices[@]}" | sort | tr '\n' ' ')" "/dev/sdb /dev/sdc /dev/sdd " "device names"
list=$(nova 200 GET "/servers/$A/os-volume_attachments")
assert_eq "$(json "' '.join(sorted(a['volumeId'] for a in d['volumeAttachments']))" <<<"$list")" \
    "$(printf '%s\n' "$a1" "$a2" "$a3" | sort | tr '\n' ' ' | sed 's/ $//')" "os-volume_attachments of $GUEST_A"
in_xml "$GUEST_B" "$a1" && fail "volume a1 is in the other guest"
pass "three parallel attaches to one guest: all 200, devices ${devices[*]}, live and persistent ($three_attach_ms ms; each: $(req_ms att1)/$(req_ms att2)/$(req_ms att3) ms)"

# The guest finds each disk by its serial; a pattern of its own on each, written to all three
# first and read back after, shows no disk answers for another.
wait_links "$GUEST_A" present "$a1" "$a2" "$a3"
out=$(guest_run "$GUEST_A" "set -e
n=0
for v in $a1 $a2 $a3; do
    n=\$((n + 1))
    dev=\$(ls /dev/disk/by-id/*\$v)
    printf 'volgate-%s-%s' \$n \$v | dd of=\$dev bs=4096 count=1 conv=sync oflag=direct 2>/dev/null
    dd if=/dev/zero bs=65536 count=4 2>/dev/null | tr '\\0' \$n | dd of=\$dev bs=65536 seek=1 oflag=direct 2>/dev/null
done
for v in $a1 $a2 $a3; do
    dev=\$(ls /dev/disk/by-id/*\$v)
    echo \$(dd if=\$dev bs=4096 count=1 iflag=direct 2>/dev/null | tr -d '\\0') \$(dd if=\$dev bs=65536 skip=1 count=4 iflag=direct 2>/dev/null | md5sum | cut -c1-32)
done" 60) || fail "the guest could not write and read its three disks: $out"
expect=
for n in 1 2 3; do
    v=a$n
    expect+="volgate-$n-${!v} $(head -c $((4 * 65536)) /dev/zero | tr '\0' "$n" | md5sum | cut -c1-32)"$'\n'
done
assert_eq "$out" "${expect%$'\n'}" "what the guest reads back from its three disks"
pass "the guest sees three by-id links with the right serials and reads back its own pattern from each"

parallel det1=DELETE:"/servers/$A/os-volume_attachments/$a1" det2=DELETE:"/servers/$A/os-volume_attachments/$a2" \
         det3=DELETE:"/servers/$A/os-volume_attachments/$a3"
three_detach_ms=$WALL_MS
for n in 1 2 3; do
    v=a$n
    assert_eq "$(req_code "det$n")" 202 "parallel detach $n: $(req_body "det$n")"
    assert_eq "$(vol_status "${!v}")" available "volume $n after the parallel detaches"
    in_xml "$GUEST_A" "${!v}" && fail "volume $n is still in the live XML"
    in_xml "$GUEST_A" "${!v}" --inactive && fail "volume $n is still in the definition"
done
assert_eq "$(nova 200 GET "/servers/$A/os-volume_attachments" | json "len(d['volumeAttachments'])")" 0 "mappings left"
assert_eq "$(exports)" "" "the gateway's exports after the detaches"
wait_links "$GUEST_A" absent "$a1" "$a2" "$a3"
pass "three parallel detaches: all 202, out of the guest, its definition and the gateway ($three_detach_ms ms; each: $(req_ms det1)/$(req_ms det2)/$(req_ms det3) ms)"

# ------------------------------------------------------------------ two guests at once
parallel ga=POST:"/servers/$A/os-volume_attachments:$(attach_body "$a1")" \
         gb=POST:"/servers/$B/os-volume_attachments:$(attach_body "$b1")"
two_attach_ms=$WALL_MS
assert_eq "$(req_code ga)" 200 "attach to $GUEST_A beside one to $GUEST_B: $(req_body ga)"
assert_eq "$(req_code gb)" 200 "attach to $GUEST_B beside one to $GUEST_A: $(req_body gb)"
in_xml "$GUEST_A" "$a1" || fail "a1 is not in $GUEST_A"
in_xml "$GUEST_B" "$b1" || fail "b1 is not in $GUEST_B"
in_xml "$GUEST_A" "$b1" && fail "b1 is in $GUEST_A"
in_xml "$GUEST_B" "$a1" && fail "a1 is in $GUEST_B"
parallel ga=DELETE:"/servers/$A/os-volume_attachments/$a1" gb=DELETE:"/servers/$B/os-volume_attachments/$b1"
two_detach_ms=$WALL_MS
assert_eq "$(req_code ga)" 202 "detach from $GUEST_A: $(req_body ga)"
assert_eq "$(req_code gb)" 202 "detach from $GUEST_B: $(req_body gb)"
pass "two guests at once: attaches in $two_attach_ms ms, detaches in $two_detach_ms ms (a lone attach $one_attach_ms ms, detach $one_detach_ms ms)"

# Five attaches queue on guest A's lock when one for guest B comes in: B's must not wait for
# them. Each of A's runs after the one before, so the third ends about three attaches after the
# release; B's, sent 20 ms after the release, should end about one attach after it.
specs=()
for n in 1 2 3 4 5; do
    v=a$n
    specs+=("q$n=POST:/servers/$A/os-volume_attachments:$(attach_body "${!v}")")
done
parallel "${specs[@]}" qb@20=POST:"/servers/$B/os-volume_attachments:$(attach_body "$b1")"
for r in q1 q2 q3 q4 q5 qb; do assert_eq "$(req_code $r)" 200 "attach $r: $(req_body $r)"; done
a_ends=$(for n in 1 2 3 4 5; do cat "$T/q$n.end"; done | sort -n | tr '\n' ' ')
b_end=$(cat "$T/qb.end")
third_a=$(cut -d' ' -f3 <<<"$a_ends")
specs=()
for n in 1 2 3 4 5; do
    v=a$n
    specs+=("q$n=DELETE:/servers/$A/os-volume_attachments/${!v}")
done
parallel "${specs[@]}" qb=DELETE:"/servers/$B/os-volume_attachments/$b1"
for r in q1 q2 q3 q4 q5 qb; do assert_eq "$(req_code $r)" 202 "detach $r: $(req_body $r)"; done
((b_end < third_a)) ||
    fail "the attach to $GUEST_B (answered at $b_end ms) waited behind those queued on $GUEST_A (answered at $a_ends ms)"
pass "an attach to $GUEST_B while five queue on $GUEST_A: answered at $b_end ms, A's at $a_ends ms"

# ------------------------------------------------------------------ one volume, two guests, at once
parallel sa=POST:"/servers/$A/os-volume_attachments:$(attach_body "$s1")" \
         sb=POST:"/servers/$B/os-volume_attachments:$(attach_body "$s1")"
codes="$(req_code sa) $(req_code sb)"
case $codes in
    "200 409") winner=$A; wguest=$GUEST_A; lguest=$GUEST_B; loser=$B; lost=sb ;;
    "409 200") winner=$B; wguest=$GUEST_B; lguest=$GUEST_A; loser=$A; lost=sa ;;
    *) fail "one volume attached to two guests at once: answers $codes (expected one 200, one 409): $(req_body sa) $(req_body sb)" ;;
esac
req_body "$lost" | json "d['conflictingRequest']['message']" >/dev/null ||
    fail "the 409 is not Nova's conflictingRequest: $(req_body "$lost")"
assert_eq "$(vol_status "$s1")" in-use "the shared volume after the race"
in_xml "$wguest" "$s1" || fail "the winner $wguest does not have the volume"
in_xml "$lguest" "$s1" && fail "the loser $lguest has the volume in its live XML"
in_xml "$lguest" "$s1" --inactive && fail "the loser $lguest has the volume in its definition"
assert_eq "$(nova 200 GET "/servers/$loser/os-volume_attachments" | json "len(d['volumeAttachments'])")" 0 \
    "mappings of the loser"
assert_eq "$(nova 200 GET "/servers/$winner/os-volume_attachments" | json "len(d['volumeAttachments'])")" 1 \
    "mappings of the winner"
attachments=$("${CURL[@]}" -H 'OpenStack-API-Version: volume 3.44' "http://localhost/v3/default/attachments?volume_id=$s1")
assert_eq "$(json "len(d['attachments'])" <<<"$attachments")" 1 "Cinder attachments of the shared volume"
assert_eq "$(json "d['attachments'][0]['instance']" <<<"$attachments")" "$winner" "the attachment's instance"
assert_eq "$(exports)" "volume-$s1" "the gateway's exports"
nova 202 DELETE "/servers/$winner/os-volume_attachments/$s1" >/dev/null
assert_eq "$(vol_status "$s1")" available "the shared volume after its detach"
assert_eq "$(exports)" "" "the gateway's exports at the end"
pass "one volume to two guests at once: $wguest won, $lguest got 409 and kept nothing (no disk, mapping or attachment)"

for v in "$a1" "$a2" "$a3" "$a4" "$a5" "$b1" "$s1"; do assert_eq "$(vol_status "$v")" available "volume $v at the end"; done
info "attach: lone $one_attach_ms ms, three on one guest $three_attach_ms ms, two guests $two_attach_ms ms; detach: lone $one_detach_ms ms, three on one guest $three_detach_ms ms, two guests $two_detach_ms ms"
pass "whole test: $(($(now_ms) - t_test)) ms"
