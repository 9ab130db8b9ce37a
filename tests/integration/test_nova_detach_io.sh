#!/usr/bin/env bash
# Detach during guest I/O, through Nova's os-volume_attachments against a real libvirtd and TCG
# guest: the guest writes numbered 4 KiB blocks to an attached encrypted volume in a loop (each
# write O_DIRECT, its completion reported on the guest's console), and the detach is requested
# while it writes. Afterwards:
# - the detach answered 202, the volume is available, its export is gone;
# - the guest's writer stopped by itself within seconds: its next write after the unplug failed
#   (the disk is gone: the open fails, or a write in flight gets an I/O error) instead of
#   hanging, and the guest's kernel has dropped the disk;
# - every block the guest reported written is on the volume, read back through a fresh gateway
#   export (Cinder's attachment API, so decrypted by the gateway), and nothing past the one write
#   that may have been in flight was written.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/guest_lib.sh"
require_volgate
require_tool curl virsh

T=$TEST_TMP
STATE=$T/state
GUEST=volgate-it-detach-io-$$
t_test=$(now_ms)
cat >"$T/controller.json" <<JSON
{"state_dir": "$STATE"}
JSON
. "$INTEGRATION_DIR/attach_lib.sh"  # json, vol_status, exports, auth_header, wait_gateway
api() {  # STATUS METHOD PATH [BODY]: prints the body (PATH from the host: /v2.1/... or /v3/...)
    local want=$1 method=$2 path=$3 code
    local args=(-s --max-time 120 -o "$T/api.body" -w '%{http_code}' --unix-socket "$SOCK" -X "$method"
                -H @"$AUTH" -H 'OpenStack-API-Version: volume 3.44')
    [[ $# -ge 4 ]] && args+=(-H 'Content-Type: application/json' --data "$4")
    code=$(curl "${args[@]}" "http://localhost$path")
    [[ $code == "$want" ]] || fail "$method $path -> $code $(cat "$T/api.body") (expected $want)"
    cat "$T/api.body"
}
gw() { curl -s --max-time 5 --unix-socket "$GW" "http://gateway$1"; }

libvirt_start
guest_image "$T/guest"
start_controller "$T/controller.json" "$SOCK" '' --gateway
auth_header
wait_gateway
BG_PIDS+=("$(gw /v1/health | json "d['pid']")")  # it outlives a controller that fails: the test's exit kills it
guest_define "$GUEST" "$T/guest"
uuid=$("${VIRSH[@]}" domuuid "$GUEST")
CONSOLE=${GUEST_DIR[$GUEST]}/console.log

vol=$("$VOLGATE" volume create --size 1 --encrypted --output json io-data | json "d['volume']['id']")
for ((i = 0; i < 300; i++)); do [[ $(vol_status "$vol") == available ]] && break; sleep 0.05; done
api 200 POST "/v2.1/servers/$uuid/os-volume_attachments" '{"volumeAttachment": {"volumeId": "'"$vol"'"}}' >/dev/null
assert_eq "$(vol_status "$vol")" in-use "volume after attach"

# The writer: block i holds "vgblk" and i in 8 digits, then zeros; written with O_DIRECT by one
# dd each, which exits only when the write is done. "io: wrote i" on the console follows each.
# It writes the kernel's name of the disk (the by-id links are rebuilt at every guest command).
dev=$(guest_run "$GUEST" "for i in \$(seq 100); do ls /dev/disk/by-id/*$vol >/dev/null 2>&1 && break; sleep 0.1; done
readlink -f /dev/disk/by-id/*$vol" 30) || fail "the guest does not see the volume: $dev"
[[ $dev =~ ^/dev/sd[a-z]$ ]] || fail "the volume's device in the guest: '$dev'"
guest_run "$GUEST" "(
i=0
while [ \$i -lt 50000 ]; do
    if ! printf 'vgblk%08d' \$i | dd of=$dev bs=4096 seek=\$i count=1 conv=sync,notrunc oflag=direct 2>/tmp/dd.err; then
        echo \"io: write \$i failed: \$(grep -v records /tmp/dd.err | tr '\\n' ' ')\"
        break
    fi
    echo \"io: wrote \$i\"
    i=\$((i + 1))
done
echo \"io: writer stopped at \$i\"
) </dev/null >/dev/ttyS0 2>&1 &" 10 >/dev/null || fail "could not start the writer in the guest"

written() { grep -c '^io: wrote ' "$CONSOLE" || true; }
for ((i = 0; i < 600; i++)); do (($(written) >= 30)) && break; sleep 0.1; done
(($(written) >= 30)) || fail "the guest's writer did not get going: $(grep '^io:' "$CONSOLE" | tail -n 3)"
before=$(written)
t0=$(now_ms)
api 202 DELETE "/v2.1/servers/$uuid/os-volume_attachments/$vol" >/dev/null
detach_ms=$(($(now_ms) - t0))
during=$(($(written) - before))
assert_eq "$(vol_status "$vol")" available "volume after the detach"
assert_eq "$(exports)" "" "the gateway's exports after the detach"
in_xml "$GUEST" "$vol" && fail "the disk is still in the live XML"
pass "detach while the guest writes: 202 in $detach_ms ms ($before writes done before it, $during while it ran), volume available"

# The guest's side: the writer must end by itself, on a failed write, without hanging.
t0=$(now_ms)
for ((i = 0; i < 300; i++)); do grep -q '^io: writer stopped' "$CONSOLE" && break; sleep 0.1; done
grep -q '^io: writer stopped' "$CONSOLE" ||
    fail "the guest's writer still runs 30 s after the detach: $(grep '^io:' "$CONSOLE" | tail -n 3)"
stop_ms=$(($(now_ms) - t0))
failure=$(grep "^io: write [0-9]* failed" "$CONSOLE" | tr -d "\r") || fail "the writer stopped without a failed write: $(grep '^io:' "$CONSOLE" | tail -n 3)"
# What the guest sees depends on how far its kernel got with the unplug when the next write
# came: the node gone (ENOENT), the disk gone but not yet its node (ENXIO, ENODEV, or EINVAL from
# the open of a disk being torn down), its capacity already set to 0 (ENOSPC: the write lies past
# the end; seen once in five runs), or a write caught in flight (EIO). Each is an error returned
# at once; none is a hang, and none a write that claims success.
[[ $failure =~ (No such file or directory|No such device|Invalid argument|No space left on device|Input/output error) ]] ||
    fail "the guest's write after the unplug failed otherwise than expected: $failure"
assert_eq "$(guest_run "$GUEST" "test -e /sys/block/${dev#/dev/} && echo present || echo gone" 10)" gone \
    "the disk in the guest's kernel after the detach"
last=$(grep '^io: wrote ' "$CONSOLE" | tail -n 1 | tr -dc '0-9')  # the console ends lines with CR LF
[[ $last =~ ^[0-9]+$ ]] || fail "the last write the guest reported: '$last'"
assert_eq "$(grep -c '^io: wrote ' "$CONSOLE")" $((last + 1)) "writes reported (0..$last, each once)"
pass "the guest's writer stopped $stop_ms ms after the answer with '${failure#io: }'; its kernel has dropped the disk"

# Every reported block, read through a fresh export of the volume (Cinder's attachment API).
r=$(api 200 POST /v3/default/attachments '{"attachment": {"volume_uuid": "'"$vol"'", "instance_uuid": "readback", "connector": {"host": "'"$(hostname)"'"}}}')
att=$(json "d['attachment']['id']" <<<"$r")
ci=$(json "d['attachment']['connection_info']['data']" <<<"$r")
check=$("$SYSPY" - "$ci" "$last" <<'PY'
import json, sys
import nbd
data, last = json.loads(sys.argv[1]), int(sys.argv[2])
h = nbd.NBD()
h.set_export_name(data["export"])
h.connect_unix(data["socket"])
def block(i):
    return (b"vgblk%08d" % i).ljust(4096, b"\0")
bad = [i for i in range(last + 1) if h.pread(4096, i * 4096) != block(i)]
# The write after the last reported one may have been in flight at the unplug: written or not
# are both right, half of it is not. Nothing beyond it was ever started. (What was never written
# is not zeros: the gateway decrypts the pool's zeros into noise. Noise has no "vgblk" in front.)
maybe = h.pread(4096, (last + 1) * 4096)
beyond = [i for i in range(last + 2, last + 34) if h.pread(4096, i * 4096).startswith(b"vgblk")]
h.shutdown()
print("missing=%s inflight=%s beyond=%s" % (
    ",".join(map(str, bad[:10])) or "none",
    "written" if maybe == block(last + 1) else "other" if maybe.startswith(b"vgblk") else "not-written",
    ",".join(map(str, beyond[:10])) or "none"))
PY
) || fail "reading the volume back: $check"
api 200 DELETE "/v3/default/attachments/$att" >/dev/null
[[ $check =~ ^missing=none\ inflight=(written|not-written)\ beyond=none$ ]] ||
    fail "the volume does not hold what the guest wrote: $check (blocks 0..$last reported written)"
assert_eq "$(vol_status "$vol")" available "volume after the read-back"
inflight=${check#*inflight=}
pass "all $((last + 1)) blocks the guest reported are on the volume; the one after them: ${inflight%% *}"
pass "whole test: $(($(now_ms) - t_test)) ms"
