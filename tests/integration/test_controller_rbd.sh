#!/usr/bin/env bash
# The controller with an rbd pool on a private single-node Ceph cluster (one monitor, one
# memstore OSD, cephx): volumes are RBD images the rbd tool sees at the right size and with the
# right data (blank, from an image file, from a snapshot, cloned, extended); snapshots are images
# of their own; deletes remove the images; an encrypted volume is kept off the pool (no fitting
# pool, volume in error).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_volgate
require_tool ceph-mon ceph-osd ceph ceph-authtool monmaptool rados rbd nbdcopy
T=$TEST_TMP
C=$T/ceph
STATE=$T/state
export VOLGATE_URL=unix:$STATE/controller.sock
mkdir -p "$C/run" "$C/mon" "$C/osd"
MONPORT=$(free_tcp_port)
FSID=$(cat /proc/sys/kernel/random/uuid)
cat >"$C/ceph.conf" <<CONF
[global]
fsid = $FSID
mon host = 127.0.0.1:$MONPORT
mon initial members = a
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $C/admin.keyring
ms bind ipv6 = false
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
osd pool default size = 1
osd pool default min size = 1
run dir = $C/run
log file = $C/\$name.log
[mon]
mon data = $C/mon
admin socket = $C/run/\$name.asok
[osd]
osd data = $C/osd
admin socket = $C/run/\$name.asok
osd objectstore = memstore
keyring = $C/osd/keyring
CONF
CEPH=(-c "$C/ceph.conf")
ceph-authtool --create-keyring "$C/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool --create-keyring "$C/admin.keyring" --gen-key -n client.admin --cap mon 'allow *' \
    --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
ceph-authtool "$C/mon.keyring" --import-keyring "$C/admin.keyring" >/dev/null
monmaptool --create --add a "127.0.0.1:$MONPORT" --fsid "$FSID" "$C/monmap" >/dev/null
ceph-mon "${CEPH[@]}" --mkfs -i a --monmap "$C/monmap" --keyring "$C/mon.keyring"
ceph-mon "${CEPH[@]}" -f -i a >"$C/mon.out" 2>&1 &
BG_PIDS+=($!)
timeout 60 ceph "${CEPH[@]}" osd create >/dev/null
ceph "${CEPH[@]}" auth get-or-create osd.0 mon 'allow profile osd' osd 'allow *' -o "$C/osd/keyring"
ceph-osd "${CEPH[@]}" -i 0 --mkfs >"$C/osd-mkfs.out" 2>&1
ceph-osd "${CEPH[@]}" -f -i 0 >"$C/osd.out" 2>&1 &
BG_PIDS+=($!)
ceph "${CEPH[@]}" osd pool create vols 8 8 >/dev/null 2>&1
ceph "${CEPH[@]}" osd pool set vols size 1 --yes-i-really-mean-it >/dev/null 2>&1
for ((i = 0; i < 200; i++)); do
    rados "${CEPH[@]}" -p vols put probe /etc/hostname 2>/dev/null && break
    sleep 0.2
done
rados "${CEPH[@]}" -p vols rm probe || fail "the Ceph cluster did not come up: $(tail -n 3 "$C/osd.out")"
rbd "${CEPH[@]}" pool init vols
info "Ceph cluster up on 127.0.0.1:$MONPORT"

cat >"$T/controller.json" <<JSON
{
  "state_dir": "$STATE",
  "pools": [{"name": "ceph", "driver": "rbd", "rbd_pool": "vols", "ceph_conf": "$C/ceph.conf",
             "total_capacity_gb": 100}]
}
JSON
"$VOLGATE" controller --config "$T/controller.json" >"$T/ctl.out" 2>"$T/ctl.err" &
CTL=$!
VG_PIDS+=("$CTL")
VG_LOG_OF[$CTL]=$T/ctl.err
VG_LOGS+=("$T/ctl.err")
for ((i = 0; i < 200; i++)); do
    [[ -S $STATE/controller.sock ]] && break
    _proc_running "$CTL" || fail "controller exited: $(cat "$T/ctl.err")"
    sleep 0.05
done
json() { "$SYSPY" -c 'import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }
create() { "$VOLGATE" volume create --output json "$@" | json "d['volume']['id']"; }
image_size() { rbd "${CEPH[@]}" info --format json "vols/$1" | json "d['size']"; }
image_sum() { rbd "${CEPH[@]}" export "vols/$1" - 2>/dev/null | head -c $((16 << 20)) | sha256sum; }

"$VOLGATE" pool list | grep -q '^ceph  *ceph' || fail "pool list: $("$VOLGATE" pool list)"
blank=$(create --size 1G blank)
assert_eq "$(image_size "volume-$blank")" $((1 << 30)) "size of a blank volume's image"
assert_eq "$("$VOLGATE" volume show --output json "$blank" | json "d['volume']['volgate:export_target']")" \
    "rbd:vols/volume-$blank,ceph-conf=$C/ceph.conf" "export target (a BACKEND for volgate serve --export)"
make_random_file "$T/image.raw" 16
vol=$(create --size 1G --image "$T/image.raw" from-image)
assert_eq "$(image_sum "volume-$vol")" "$(sha256sum <"$T/image.raw")" "image data in the RBD image"
target=$("$VOLGATE" volume show --output json "$vol" | json "d['volume']['volgate:export_target']")
start_volgate --unix "$T/nbd.sock" --export "v=$target"
nbdcopy "$(unix_uri v "$T/nbd.sock")" "$T/served.raw"
stop_volgate
assert_eq "$(head -c $((16 << 20)) "$T/served.raw" | sha256sum)" "$(sha256sum <"$T/image.raw")" \
    "the volume served by volgate serve --export v=$target"
rm -f "$T/served.raw"
pass "blank and from-image volumes are RBD images with the right size and data, served as they are"

snap=$("$VOLGATE" snapshot create --output json --volume "$vol" s | json "d['snapshot']['id']")
rbd "${CEPH[@]}" info "vols/snapshot-$snap" >/dev/null || fail "no image for snapshot $snap"
from_snap=$(create --snapshot "$snap" from-snap)
assert_eq "$(image_sum "volume-$from_snap")" "$(sha256sum <"$T/image.raw")" "volume from snapshot"
clone=$(create --source-volume "$vol" --size 2G clone)
assert_eq "$(image_size "volume-$clone")" $((2 << 30)) "clone grown to its size"
assert_eq "$(image_sum "volume-$clone")" "$(sha256sum <"$T/image.raw")" "clone data"
"$VOLGATE" volume extend --size 3G "$blank" >/dev/null
assert_eq "$(image_size "volume-$blank")" $((3 << 30)) "image size after extend"
pass "snapshots, copies from them, clones and extend work on RBD"

rc=0
"$VOLGATE" volume create --size 1G --encrypted secret >/dev/null 2>"$T/enc.err" || rc=$?
assert_eq "$rc" 2 "encrypted volume on an rbd-only controller"
grep -q 'encryption_support' "$T/enc.err" || fail "reason: $(cat "$T/enc.err")"
pass "encrypted volumes are kept off rbd pools, with the reason"

for v in $("$VOLGATE" volume list --output json | json "' '.join(v['id'] for v in d['volumes'] if v['id'] != '$vol')"); do
    "$VOLGATE" volume delete "$v" >/dev/null
done
"$VOLGATE" snapshot delete "$snap" >/dev/null
"$VOLGATE" volume delete "$vol" >/dev/null
assert_eq "$(rbd "${CEPH[@]}" ls vols | wc -l)" 0 "images left after deleting everything"
stop_volgate "$CTL" TERM 15
pass "deletes remove the images; the controller stops cleanly"
