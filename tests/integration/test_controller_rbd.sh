#!/usr/bin/env bash
# The controller with an rbd pool on a private single-node Ceph cluster (ceph_cluster.sh: one
# monitor, one memstore OSD, cephx): volumes are RBD images the rbd tool sees at the right size
# and with the right data (blank, from a raw or qcow2 image file, from a snapshot, cloned, extended);
# one uploaded to an image (os-volume_upload_image) gives its data and holes elsewhere;
# snapshots are RBD snapshots of the volume's image (point in time), reached through a clone; encrypted volumes are LUKS2 inside their image (checked
# with cryptsetup on an `rbd export` of the header, the passphrase unwrapped independently),
# served decrypted by `volgate serve` and readable by QEMU's rbd driver (encrypt.format=luks2);
# deletes remove the images.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ceph_cluster.sh"
require_volgate
require_tool nbdcopy cryptsetup sqlite3 qemu-img curl
T=$TEST_TMP
STATE=$T/state
export VOLGATE_URL=unix:$STATE/controller.sock
CEPH_POOL=vols
ceph_start memstore
CEPH=(--conf "$CEPH_CONF" --keyring "$CEPH_KEYRING" --id admin)

mkdir -p "$T/images"  # where imageRef may take files from
cat >"$T/controller.json" <<JSON
{
  "state_dir": "$STATE",
  "image_dirs": ["$T/images"],
  "pools": [{"name": "ceph", "driver": "rbd", "rbd_pool": "vols", "ceph_conf": "$CEPH_CONF",
             "ceph_keyring": "$CEPH_KEYRING",
             "total_capacity_gb": 100}]
}
JSON
start_controller "$T/controller.json" "$STATE/controller.sock"
CTL=$CTL_PID
json() { "$SYSPY" -c 'import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }
create() { "$VOLGATE" volume create --output json "$@" | json "d['volume']['id']"; }
image_size() { rbd "${CEPH[@]}" info --format json "vols/$1" | json "d['size']"; }
image_sum() { rbd "${CEPH[@]}" export "vols/$1" - 2>/dev/null | head -c $((16 << 20)) | sha256sum; }

grep -q '^ceph  *ceph' <<<"$("$VOLGATE" pool list)" || fail "pool list: $("$VOLGATE" pool list)"
blank=$(create --size 1G blank)
assert_eq "$(image_size "volume-$blank")" $((1 << 30)) "size of a blank volume's image"
assert_eq "$("$VOLGATE" volume show --output json "$blank" | json "d['volume']['volgate:export_target']")" \
    "rbd:vols/volume-$blank,ceph-conf=$CEPH_CONF,keyring=$CEPH_KEYRING" "export target (a BACKEND for volgate serve --export)"
make_random_file "$T/images/image.raw" 16
vol=$(create --size 1G --image "$T/images/image.raw" from-image)
assert_eq "$(image_sum "volume-$vol")" "$(sha256sum <"$T/images/image.raw")" "image data in the RBD image"
target=$("$VOLGATE" volume show --output json "$vol" | json "d['volume']['volgate:export_target']")
start_volgate --unix "$T/nbd.sock" --export "v=$target"
nbdcopy "$(unix_uri v "$T/nbd.sock")" "$T/served.raw"
stop_volgate
assert_eq "$(head -c $((16 << 20)) "$T/served.raw" | sha256sum)" "$(sha256sum <"$T/images/image.raw")" \
    "the volume served by volgate serve --export v=$target"
rm -f "$T/served.raw"
# A qcow2 image, converted by qemu-img on its way into the RBD image.
qemu-img convert -f raw -O qcow2 "$T/images/image.raw" "$T/images/image.qcow2"
from_qcow2=$(create --size 1G --image image.qcow2 from-qcow2)
assert_eq "$(image_sum "volume-$from_qcow2")" "$(sha256sum <"$T/images/image.raw")" "qcow2 image data in the RBD image"
pass "blank and from-image (raw, qcow2) volumes are RBD images with the right size and data, served as they are"

# Uploaded to an image (Cinder's os-volume_upload_image; the token in a header file): the RBD
# image's data, read where RBD reports data, holes elsewhere.
(umask 077 && printf 'X-Auth-Token: %s\n' "$(cat "$STATE/token")" >"$T/auth.header")
image_id=$(curl -sf --unix-socket "$STATE/controller.sock" -H @"$T/auth.header" -H 'Content-Type: application/json' \
    --data '{"os-volume_upload_image": {"image_name": "from-rbd", "disk_format": "raw"}}' \
    "http://localhost/v3/default/volumes/$vol/action" | json "d['os-volume_upload_image']['image_id']")
for ((i = 0; i < 200; i++)); do
    [[ -f $T/images/$image_id.json ]] && [[ $("$VOLGATE" volume show --output json "$vol" | json "d['volume']['status']") == available ]] && break
    sleep 0.1
done
[[ -f $T/images/$image_id.json ]] || fail "no image from the RBD volume: $("$VOLGATE" volume show "$vol")"
assert_eq "$(stat -c %s "$T/images/$image_id")" $((1 << 30)) "size of the image uploaded from RBD"
assert_eq "$(head -c $((16 << 20)) "$T/images/$image_id" | sha256sum)" "$(sha256sum <"$T/images/image.raw")" \
    "data of the image uploaded from RBD"
# Nothing but a hole past the data (SEEK_DATA finds none).
"$SYSPY" -c '
import errno, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
try:
    sys.exit("data at %d" % os.lseek(fd, 16 << 20, os.SEEK_DATA))
except OSError as e:
    sys.exit(0 if e.errno == errno.ENXIO else str(e))' "$T/images/$image_id" || fail "the image uploaded from RBD is not a hole past the data"
pass "an RBD volume uploaded to a raw image: its data, holes elsewhere"

snap=$("$VOLGATE" snapshot create --output json --volume "$vol" s | json "d['snapshot']['id']")
# a native RBD snapshot of the volume's image, reached through a layered clone
assert_eq "$(rbd "${CEPH[@]}" snap ls --format json "vols/volume-$vol" | json "[s['name'] for s in d]")" \
    "['snapshot-$snap']" "RBD snapshots of the volume's image"
assert_eq "$(rbd "${CEPH[@]}" info --format json "vols/snapshot-$snap" | json "d['parent']['image'] + '@' + d['parent']['snapshot']")" \
    "volume-$vol@snapshot-$snap" "parent of the snapshot's clone"
# the volume changes after the snapshot; the snapshot keeps the data of its time
qemu-io --image-opts "driver=rbd,pool=vols,image=volume-$vol,conf=$CEPH_CONF,user=admin" \
    -c "write -P 0x5a 0 1M" >/dev/null || fail "qemu-io cannot write the volume"
{ head -c $((1 << 20)) /dev/zero | tr '\0' Z; tail -c +$(((1 << 20) + 1)) "$T/images/image.raw"; } >"$T/changed.raw"
from_snap=$(create --snapshot "$snap" from-snap)
assert_eq "$(image_sum "volume-$from_snap")" "$(sha256sum <"$T/images/image.raw")" "volume from snapshot"
assert_eq "$(rbd "${CEPH[@]}" info --format json "vols/volume-$from_snap" | json "'parent' in d")" False \
    "a volume from a snapshot depends on no other image"
clone=$(create --source-volume "$vol" --size 2G clone)
assert_eq "$(image_size "volume-$clone")" $((2 << 30)) "clone grown to its size"
assert_eq "$(image_sum "volume-$clone")" "$(sha256sum <"$T/changed.raw")" "clone data"
"$VOLGATE" volume extend --size 3G "$blank" >/dev/null
assert_eq "$(image_size "volume-$blank")" $((3 << 30)) "image size after extend"
pass "snapshots (RBD snapshots, point in time), copies from them, clones and extend work on RBD"

# ------------------------------------------------------------------ encryption
enc=$(create --size 1G --encrypted --image "$T/images/image.raw" enc)
assert_eq "$("$VOLGATE" volume show --output json "$enc" | json "d['volume']['encrypted']")" True "encrypted flag"
# The LUKS2 header (16 MiB with its keyslots) as librbd stores it, checked by cryptsetup alone
# (rbd export dies of SIGPIPE once head has what it needs).
{ rbd "${CEPH[@]}" export "vols/volume-$enc" - 2>/dev/null || true; } | head -c $((16 << 20)) >"$T/enc-header.raw"
grep -q '^Version:[[:space:]]*2' <<<"$(cryptsetup luksDump "$T/enc-header.raw")" || fail "no LUKS2 header in the RBD image"
unwrap_key "$STATE" "$enc" "$T/enc.key"
cryptsetup open --test-passphrase --key-file "$T/enc.key" "$T/enc-header.raw" ||
    fail "the unwrapped passphrase does not open the RBD image's header"
refute_grep "passphrase in the log" -F -e "$(cat "$T/enc.key")" "${VG_LOG_OF[$CTL]}"
enc_target=$("$VOLGATE" volume show --output json "$enc" | json "d['volume']['volgate:export_target']")
# Only the first 16 MiB are read back: the rest of the 1 GiB volume decrypts to noise and
# would only cost time.
first16() {  # first16 QEMU-IMG-ARGS...: the first 16 MiB of a disk, through qemu-img dd
    rm -f "$T/first16.raw"
    qemu-img dd "$@" -O raw bs=1M count=16 of="$T/first16.raw" || fail "qemu-img dd $*"
    sha256sum <"$T/first16.raw"
}
start_volgate --unix "$T/nbd.sock" --export "e=$enc_target,luks-key-file=$T/enc.key"
assert_eq "$(first16 -f raw if="$(unix_uri e "$T/nbd.sock")")" "$(sha256sum <"$T/images/image.raw")" \
    "encrypted volume from an image, read through volgate serve luks-key-file="
# data written through the decrypted export is there after a restart of the export
make_random_file "$T/more.raw" 4
nbdcopy --flush "$T/more.raw" "$(unix_uri e "$T/nbd.sock")"
stop_volgate
{ cat "$T/more.raw"; tail -c +$(((4 << 20) + 1)) "$T/images/image.raw"; } >"$T/expected.raw"
start_volgate --unix "$T/nbd.sock" --export "e=$enc_target,luks-key-file=$T/enc.key,readonly"
assert_eq "$(first16 -f raw if="$(unix_uri e "$T/nbd.sock")")" "$(sha256sum <"$T/expected.raw")" \
    "data written through the decrypted export"
stop_volgate
# librbd's own LUKS2 decryption (QEMU's rbd driver) reads the same plaintext
assert_eq "$(first16 --object "secret,id=s0,file=$T/enc.key" --image-opts \
    if="driver=rbd,pool=vols,image=volume-$enc,conf=$CEPH_CONF,user=admin,encrypt.format=luks2,encrypt.key-secret=s0")" \
    "$(sha256sum <"$T/expected.raw")" "the encrypted volume read by QEMU's rbd driver (encrypt.format=luks2)"
# a copy from a snapshot of the encrypted volume keeps its passphrase and its data
enc_snap=$("$VOLGATE" snapshot create --output json --volume "$enc" es | json "d['snapshot']['id']")
enc_copy=$(create --snapshot "$enc_snap" enc-copy)
"$VOLGATE" snapshot delete "$enc_snap" >/dev/null
unwrap_key "$STATE" "$enc_copy" "$T/enc-copy.key"
cmp -s "$T/enc.key" "$T/enc-copy.key" || fail "the copy's passphrase differs from its source's"
copy_target=$("$VOLGATE" volume show --output json "$enc_copy" | json "d['volume']['volgate:export_target']")
start_volgate --unix "$T/nbd.sock" --export "e=$copy_target,luks-key-file=$T/enc-copy.key,readonly"
assert_eq "$(first16 -f raw if="$(unix_uri e "$T/nbd.sock")")" "$(sha256sum <"$T/expected.raw")" \
    "a volume from a snapshot of the encrypted volume"
stop_volgate
rm -f "$T"/enc-header.raw "$T"/first16.raw
pass "encrypted volumes on RBD: LUKS2 in the image, the wrapped passphrase opens it, volgate serve and QEMU read the data, copies from snapshots keep key and data"

for v in $("$VOLGATE" volume list --output json | json "' '.join(v['id'] for v in d['volumes'] if v['id'] != '$vol')"); do
    "$VOLGATE" volume delete "$v" >/dev/null
done
"$VOLGATE" snapshot delete "$snap" >/dev/null
for ((i = 0; i < 100; i++)); do
    [[ $(rbd "${CEPH[@]}" snap ls "vols/volume-$vol" | wc -l) == 0 ]] && break
    sleep 0.1
done
assert_eq "$(rbd "${CEPH[@]}" snap ls "vols/volume-$vol" | wc -l)" 0 "RBD snapshots left after the snapshot's delete"
# what a crash between a snapshot's RBD snapshot and its clone leaves does not block the delete
rbd "${CEPH[@]}" snap create "vols/volume-$vol@snapshot-left-by-a-crash" >/dev/null 2>&1
rbd "${CEPH[@]}" snap protect "vols/volume-$vol@snapshot-left-by-a-crash"
"$VOLGATE" volume delete "$vol" >/dev/null
assert_eq "$(rbd "${CEPH[@]}" ls vols | wc -l)" 0 "images left after deleting everything"
stop_volgate "$CTL" TERM 15
pass "deletes remove the images; the controller stops cleanly"
