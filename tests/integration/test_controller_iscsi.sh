#!/usr/bin/env bash
# The controller with an iscsi pool on a private tgtd (its own control socket and portal): a
# volume is a target with one LUN backed by a file; an initiator (libiscsi's
# iscsi-readcapacity16, QEMU's iscsi driver) sees its size and its data; extend re-adds the LUN
# at the new size; a snapshot copy is a target of its own; delete removes target and file.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_volgate
require_tool tgtd tgtadm iscsi-readcapacity16 qemu-img curl nbdcopy
T=$TEST_TMP
STATE=$T/state
export VOLGATE_URL=unix:$STATE/controller.sock
export TGT_IPC_SOCKET=$T/tgtd.ipc
PORT=$(free_tcp_port)
PORTAL=127.0.0.1:$PORT
PREFIX=iqn.2026-11.org.volgate.test$$

tgtd -f --iscsi "portal=$PORTAL" >"$T/tgtd.log" 2>&1 &
TGTD=$!
BG_PIDS+=("$TGTD")
for ((i = 0; i < 100; i++)); do
    tgtadm --lld iscsi --op show --mode target >/dev/null 2>&1 && break
    sleep 0.05
done
(echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || fail "tgtd is not listening on $PORTAL: $(cat "$T/tgtd.log")"
remove_targets() {  # tgtd ignores SIGTERM; its targets go first, then it is killed (BG_PIDS)
    local tid
    for tid in $(tgtadm --lld iscsi --op show --mode target 2>/dev/null | sed -n 's/^Target \([0-9]*\):.*/\1/p'); do
        tgtadm --lld iscsi --op delete --force --mode target --tid "$tid" || true
    done
}
# set +e first: under set -e, (exit $_rc) with a failure code would end the trap before _cleanup.
trap '_rc=$?; set +e; remove_targets; kill -KILL "$TGTD" 2>/dev/null; (exit $_rc); _cleanup' EXIT

cat >"$T/controller.json" <<JSON
{
  "state_dir": "$STATE",
  "pools": [{"name": "tgt", "driver": "iscsi", "directory": "$T/luns", "portals": ["$PORTAL"],
             "iqn_prefix": "$PREFIX", "tgt_ipc_socket": "$TGT_IPC_SOCKET"}]
}
JSON
start_controller "$T/controller.json" "$STATE/controller.sock"
CTL=$CTL_PID
json() { "$SYSPY" -c 'import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }
capacity() {  # bytes: (last LBA + 1) * block length
    iscsi-readcapacity16 "iscsi://$PORTAL/$PREFIX:volume-$1/1" | "$SYSPY" -c '
import re, sys
t = sys.stdin.read()
print((int(re.search(r"RETURNED LOGICAL BLOCK ADDRESS:(\d+)", t).group(1)) + 1) * int(re.search(r"LOGICAL BLOCK LENGTH IN BYTES:(\d+)", t).group(1)))'
}
show_targets() { tgtadm --lld iscsi --op show --mode target; }

"$VOLGATE" pool list | grep -q '^tgt  *iSCSI' || fail "pool list: $("$VOLGATE" pool list)"
make_random_file "$T/image.raw" 24
vol=$("$VOLGATE" volume create --output json --size 1G --image "$T/image.raw" from-image | json "d['volume']['id']")
target=$("$VOLGATE" volume show --output json "$vol" | json "d['volume']['volgate:export_target']")
assert_eq "$target" "iscsi://$PORTAL/$PREFIX:volume-$vol/1" "export target"
show_targets | grep -q "Target [0-9]*: $PREFIX:volume-$vol" || fail "no target for $vol: $(show_targets)"
show_targets | grep -q "Backing store path: $T/luns/volume-$vol.img" || fail "LUN not backed by the volume file"
assert_eq "$(capacity "$vol")" $((1 << 30)) "LUN capacity seen by an initiator"
qemu-img convert -f raw -O raw "$target" "$T/back.raw"
assert_eq "$(head -c $((24 << 20)) "$T/back.raw" | sha256sum)" "$(sha256sum <"$T/image.raw")" "data read over iSCSI"
rm -f "$T/back.raw"
start_volgate --unix "$T/nbd.sock" --export "v=$target"
nbdcopy "$(unix_uri v "$T/nbd.sock")" "$T/served.raw"
stop_volgate
assert_eq "$(head -c $((24 << 20)) "$T/served.raw" | sha256sum)" "$(sha256sum <"$T/image.raw")" \
    "the volume served by volgate serve --export v=$target"
rm -f "$T/served.raw"
pass "volume from image: a target with one LUN, right size and data over iSCSI, served by volgate as it is"

"$VOLGATE" volume extend --size 2G "$vol" >/dev/null
assert_eq "$(capacity "$vol")" $((2 << 30)) "LUN capacity after extend"
snap=$("$VOLGATE" snapshot create --output json --volume "$vol" s1 | json "d['snapshot']['id']")
copy=$("$VOLGATE" volume create --output json --snapshot "$snap" copy | json "d['volume']['id']")
assert_eq "$(capacity "$copy")" $((2 << 30)) "capacity of the copy's LUN"
qemu-img convert -f raw -O raw "iscsi://$PORTAL/$PREFIX:volume-$copy/1" "$T/copy.raw"
assert_eq "$(head -c $((24 << 20)) "$T/copy.raw" | sha256sum)" "$(sha256sum <"$T/image.raw")" "copy's data over iSCSI"
rm -f "$T/copy.raw"
pass "extend re-adds the LUN at the new size; a copy from a snapshot is a target of its own"

"$VOLGATE" volume delete "$copy" >/dev/null
"$VOLGATE" snapshot delete "$snap" >/dev/null
"$VOLGATE" volume delete "$vol" >/dev/null
if show_targets | grep -q "$PREFIX"; then fail "targets left after delete: $(show_targets)"; fi
[[ -z $(ls "$T/luns") ]] || fail "files left in the pool: $(ls "$T/luns")"
stop_volgate "$CTL" TERM 10
pass "delete removes targets and files; the controller stops cleanly"
