#!/usr/bin/env bash
# Volumes to images and back (issue 24, images), driven with Debian's cinderclient and checked
# with qemu-img:
#  - `cinder upload-to-image` of a volume written with known data (a random head, a random block
#    deep inside, holes between) to qcow2 and to raw: the volume is `uploading`, then available
#    again; the image file and its ID.json sit in the upload directory (its checksum as sha256sum
#    computes it, sizes, formats, source volume); qemu-img compare finds the image
#    identical to the volume; the raw image keeps the holes, the qcow2 one allocates no cluster
#    for them;
#  - `cinder create --image-id` from each image gives a volume identical to the first (cmp), the
#    one from qcow2 converted by qemu-img and sparse where the image had no data;
#  - hostile qcow2 images in the image directory: one whose backing file is a secret outside it,
#    one whose external data file is that secret, one larger than the volume asked for: each is
#    refused (400, saying why), no volume is made, and the secret's bytes are in no volume;
#  - an attached (in-use) volume, written through the gateway: upload without force is refused
#    (400), with force it is uploaded and goes back to in-use; the image holds what the guest wrote;
#  - an encrypted volume made from a qcow2 image reads back right through the gateway; its upload
#    is its LUKS2 ciphertext (cmp), which its key opens, and the key is in no file there;
#  - an upload that fails midway (the upload directory, a 96 MiB tmpfs, fills up) leaves nothing
#    in the directory and its space free, and the volume available again with the reason;
#  - a volume whose data starts with qcow2's magic is refused as a raw image (it would be read
#    as qcow2) and uploads as qcow2 intact;
#  - an image rewritten between the request's check and the copy (its header given an external
#    data file, or only its data changed) is refused: the volume ends in error saying why.
# Runs in a mount namespace of its own (the small tmpfs goes with it). Needs root.
set -euo pipefail
if [[ -z ${VOLGATE_IMAGES_IN_NS:-} ]]; then
    VOLGATE_IMAGES_IN_NS=1 exec unshare -m "$0" "$@"
fi
. "$(dirname "$0")/lib.sh"
require_volgate
require_tool curl cinder qemu-img qemu-io nbdsh nbdinfo sha256sum cryptsetup sqlite3
T=$TEST_TMP
STATE=$T/state
IMAGES=$T/images
SOCK=$STATE/controller.sock
PORT=$(free_tcp_port)
PROJECT=demo
URL=http://127.0.0.1:$PORT
CTL_PID=
MiB=$((1 << 20))

mkdir -p "$IMAGES"
mount -t tmpfs -o size=96m tmpfs "$IMAGES"
# Unmounted before lib.sh's cleanup removes $T (which keeps this test's exit status).
trap 'rc=$?; umount -l "$IMAGES" 2>/dev/null; (exit $rc); _cleanup' EXIT

cat >"$T/controller.json" <<JSON
{
  "state_dir": "$STATE",
  "tcp_listen": "127.0.0.1:$PORT",
  "image_dirs": ["$IMAGES"],
  "image_convert_timeout": 60,
  "quotas": {"volumes": 20, "snapshots": 10, "gigabytes": 100},
  "pools": [{"name": "files", "driver": "file", "directory": "$T/pool"}]
}
JSON
start_controller "$T/controller.json" "$SOCK" '^http://' --gateway

unset OS_AUTH_TYPE OS_AUTH_PLUGIN OS_AUTH_SYSTEM OS_AUTH_URL OS_USERNAME OS_PASSWORD
OS_TOKEN=$(cat "$STATE/token")
export OS_TOKEN OS_PROJECT_ID=$PROJECT CINDER_ENDPOINT=$URL/v3/$PROJECT OS_VOLUME_API_VERSION=3.53
# cinder ARGS...: output in $T/out, stderr in $T/err; fails the test when cinder does
cinder() { command cinder --os-auth-type admin_token "$@" >"$T/out" 2>"$T/err" || fail "cinder $*: $(cat "$T/err")"; cat "$T/out"; }
# cinder_refused ARGS...: cinder must fail; prints what it said
cinder_refused() {
    if command cinder --os-auth-type admin_token "$@" >"$T/out" 2>"$T/err"; then fail "cinder $* succeeded: $(cat "$T/out")"; fi
    cat "$T/out" "$T/err"
}
json() { "$SYSPY" -c 'import json, sys; d = json.load(sys.stdin); r = eval(sys.argv[1]); print(r if not isinstance(r, (dict, list)) else json.dumps(r))' "$1"; }
# The token goes to curl in a header file, never on its command line.
AUTH=$T/auth.header
(umask 077 && printf 'X-Auth-Token: %s\n' "$OS_TOKEN" >"$AUTH")
# show VOLUME FIELD: one field of the volume, straight from the API (cinder show takes ~0.5 s)
show() { curl -sf -H @"$AUTH" "$URL/v3/$PROJECT/volumes/$1" | json "d['volume'].get('$2', '')"; }
volume_count() { curl -sf -H @"$AUTH" "$URL/v3/$PROJECT/volumes" | json "len(d['volumes'])"; }
# wait_status VOLUME STATUS: until the volume has STATUS (20 s); fails on error
wait_status() {
    local i got=
    for ((i = 0; i < 200; i++)); do
        got=$(show "$1" status)
        [[ $got == "$2" ]] && return 0
        [[ $got == error* ]] && fail "volume $1 went to $got: $(show "$1" volgate:error)"
        sleep 0.1
    done
    fail "volume $1 is $got, expected $2"
}
volume_file() { echo "$T/pool/volume-$1.img"; }
# allocated FILE: bytes the filesystem holds for it
allocated() { echo $(($(stat -c %b "$1") * 512)); }

# ------------------------------------------------------------------ upload to qcow2 and raw
src=$(cinder create --name source 1 | field id)
wait_status "$src" available
sf=$(volume_file "$src")
# Known data: 8 MiB at the start, 4 MiB at 600 MiB, holes around them.
head -c $((8 * MiB)) /dev/urandom | dd of="$sf" conv=notrunc status=none
head -c $((4 * MiB)) /dev/urandom | dd of="$sf" bs=1M seek=600 conv=notrunc status=none
assert_eq "$(stat -c %s "$sf")" $((1 << 30)) "the source volume's size"

# upload FORMAT NAME: uploads the source volume; prints the image id
upload() {
    cinder upload-to-image --disk-format "$1" --visibility private "$src" "$2" >"$T/upload"
    local status image
    status=$(field status <"$T/upload")
    image=$(field image_id <"$T/upload")
    assert_eq "$status" uploading "status in upload-to-image's answer"
    assert_eq "$(field disk_format <"$T/upload")" "$1" "disk_format in the answer"
    assert_eq "$(field image_name <"$T/upload")" "$2" "image_name in the answer"
    assert_eq "$(field volume_type <"$T/upload")" default "volume_type in the answer"
    wait_status "$src" available
    echo "$image"
}
start=$(now_ms)
qimg=$(upload qcow2 image-q)
rimg=$(upload raw image-r)
info "uploads took $(($(now_ms) - start)) ms"
for id in "$qimg" "$rimg"; do
    [[ -f $IMAGES/$id && -f $IMAGES/$id.json ]] || fail "image $id or its metadata is missing: $(ls "$IMAGES")"
done
assert_eq "$(ls "$IMAGES" | sort | tr '\n' ' ')" "$(printf '%s\n' "$qimg" "$qimg.json" "$rimg" "$rimg.json" | sort | tr '\n' ' ')" \
    "the upload directory holds the two images and their metadata, nothing else"
assert_eq "$(qemu-img info --output=json "$IMAGES/$qimg" | json "d['format']")" qcow2 "qemu-img on the qcow2 upload"
qemu-img compare -f raw -F qcow2 "$sf" "$IMAGES/$qimg" >/dev/null || fail "the qcow2 image differs from the volume"
cmp "$sf" "$IMAGES/$rimg" || fail "cmp: the raw image differs from the volume"
for id in "$qimg" "$rimg"; do
    meta=$IMAGES/$id.json
    fmt=$([[ $id == "$qimg" ]] && echo qcow2 || echo raw)
    name=$([[ $id == "$qimg" ]] && echo image-q || echo image-r)
    assert_eq "$(json "(d['id'], d['name'], d['disk_format'], d['container_format'], d['volume_id'], d['size'], d['virtual_size'], d['visibility'], d['protected'], d['encrypted'])" <"$meta")" \
        "('$id', '$name', '$fmt', 'bare', '$src', $(stat -c %s "$IMAGES/$id"), $((1 << 30)), 'private', False, False)" \
        "metadata of the $fmt image"
    assert_eq "$(json "(d['os_hash_algo'], d['os_hash_value'])" <"$meta")" \
        "('sha256', '$(sha256sum <"$IMAGES/$id" | cut -d' ' -f1)')" "sha256 of the $fmt image"
    [[ $(json "d['created_at']" <"$meta") == 20??-??-??T* ]] || fail "created_at: $(cat "$meta")"
done
# Holes stay holes: 12 MiB of data; the raw image allocates that much, the qcow2 file is that
# plus its tables.
(($(allocated "$IMAGES/$rimg") <= 13 * MiB)) || fail "the raw image allocates $(allocated "$IMAGES/$rimg") bytes"
(($(stat -c %s "$IMAGES/$qimg") <= 13 * MiB)) || fail "the qcow2 image is $(stat -c %s "$IMAGES/$qimg") bytes"
pass "upload-to-image: qcow2 and raw images identical to the volume (qemu-img compare, cmp), metadata and checksum right, holes kept"

# ------------------------------------------------------------------ create volumes back
fromq=$(cinder create --image-id "$qimg" --name from-qcow2 1 | field id)
fromr=$(cinder create --image-id "$rimg" --name from-raw 1 | field id)
wait_status "$fromq" available
wait_status "$fromr" available
cmp "$sf" "$(volume_file "$fromq")" || fail "the volume made from the qcow2 image differs from the source"
cmp "$sf" "$(volume_file "$fromr")" || fail "the volume made from the raw image differs from the source"
(($(allocated "$(volume_file "$fromq")") <= 13 * MiB)) ||
    fail "the volume from qcow2 allocates $(allocated "$(volume_file "$fromq")") bytes"
assert_eq "$(show "$fromq" volgate:image)" "$qimg" "the image a volume was made from"
# A qcow2 image made here by qemu-img, named by its path, converts the same way.
qemu-img convert -f raw -O qcow2 "$IMAGES/$rimg" "$IMAGES/handmade.qcow2"
hand=$(cinder create --image-id "$IMAGES/handmade.qcow2" --name handmade 1 | field id)
wait_status "$hand" available
cmp "$sf" "$(volume_file "$hand")" || fail "the volume made from a handmade qcow2 image differs"
pass "create from image: volumes from the qcow2 and the raw upload (and a handmade qcow2) equal the source, sparse"

# ------------------------------------------------------------------ hostile qcow2 images
secret=$T/secret.raw  # outside the image directory
head -c $MiB /dev/urandom >"$secret"
qemu-img create -q -f qcow2 -b "$secret" -F raw "$IMAGES/backing.qcow2"
# qemu-img makes (empties) the data file it is given: make one beside, then point it at the secret.
qemu-img create -q -f qcow2 -o data_file="$T/data-file.raw",data_file_raw=on "$IMAGES/datafile.qcow2" 1M
qemu-img amend -q -o data_file="$secret" "$IMAGES/datafile.qcow2"
grep -q "data file: $secret\$" <<<"$(qemu-img info -U "$IMAGES/datafile.qcow2")" ||
    fail "the hostile image does not name the secret as its data file: $(qemu-img info -U "$IMAGES/datafile.qcow2")"
# Proof that both headers work as meant: QEMU, opening them by path, reads the secret through them.
for hostile in backing datafile; do
    qemu-img convert -U -O raw "$IMAGES/$hostile.qcow2" "$T/through.raw"
    cmp -n $MiB "$T/through.raw" "$secret" || fail "qemu-img does not read the secret through $hostile.qcow2"
done
rm -f "$T/through.raw"
qemu-img create -q -f qcow2 "$IMAGES/huge.qcow2" 5G
volumes_before=$(volume_count)
out=$(cinder_refused create --image-id backing.qcow2 --name hostile-backing 1)
[[ $out == *"has a backing file"*"HTTP 400"* ]] || fail "a qcow2 with a backing file: $out"
out=$(cinder_refused create --image-id datafile.qcow2 --name hostile-datafile 1)
[[ $out == *"external data file"*"HTTP 400"* ]] || fail "a qcow2 with an external data file: $out"
out=$(cinder_refused create --image-id huge.qcow2 --name too-small 1)
[[ $out == *"virtual size"*"at least 5 GiB"*"HTTP 400"* ]] || fail "a qcow2 larger than the volume: $out"
[[ $out != *"$T"* ]] || fail "an answer names a host path: $out"
assert_eq "$(volume_count)" "$volumes_before" "volumes after the refused creates"
# The secret's bytes reach no volume: its first 64 KiB looked for in the data of every volume
# file (holes hold nothing).
"$SYSPY" - "$secret" "$T/pool" <<'EOF' || fail "the secret's bytes are in a volume"
import os, sys
needle = open(sys.argv[1], "rb").read(65536)
for name in os.listdir(sys.argv[2]):
    fd = os.open(os.path.join(sys.argv[2], name), os.O_RDONLY)
    end, at = os.fstat(fd).st_size, 0
    while at < end:
        try:
            at = os.lseek(fd, at, os.SEEK_DATA)
        except OSError:
            break
        hole = os.lseek(fd, at, os.SEEK_HOLE)
        if needle in os.pread(fd, hole - at, at):
            sys.exit(f"{name} holds the secret")
        at = hole
    os.close(fd)
EOF
pass "hostile qcow2: backing file, external data file and oversize refused with 400, no volume made, the secret nowhere"

# ------------------------------------------------------------------ in-use, through the gateway
for ((i = 0; i < 100; i++)); do [[ -S $STATE/run/nbd.sock ]] && break; sleep 0.05; done
av=$(cinder create --name attached 1 | field id)
wait_status "$av" available
server=5e1f7a3c-8d2b-4c6e-9a10-3b7f2d4e6c81
cinder attachment-create --connect True --host "$(hostname)" --platform x86_64 --ostype linux "$av" "$server" >"$T/att"
att=$(field id <"$T/att")
cinder attachment-complete "$att" >/dev/null
assert_eq "$(show "$av" status)" in-use "volume after attachment-complete"
# What the guest writes: 2 MiB at 1 MiB, through the export.
head -c $((2 * MiB)) /dev/urandom >"$T/guest.bin"
nbdsh -u "$(unix_uri "volume-$av" "$STATE/run/nbd.sock")" -c "
h.pwrite(open('$T/guest.bin', 'rb').read(), $MiB)
h.flush()"
out=$(cinder_refused upload-to-image "$av" attached-image)
[[ $out == *"in-use"*"force"*"HTTP 400"* ]] || fail "upload of an in-use volume without force: $out"
cinder upload-to-image --force True --disk-format qcow2 "$av" attached-image >"$T/upload"
aimg=$(field image_id <"$T/upload")
wait_status "$av" in-use
qemu-img convert -f qcow2 -O raw "$IMAGES/$aimg" "$T/attached.raw"
cmp -n $((2 * MiB)) -i $MiB:0 "$T/attached.raw" "$T/guest.bin" || fail "the in-use upload lacks what the guest wrote"
nbdinfo --size "$(unix_uri "volume-$av" "$STATE/run/nbd.sock")" >/dev/null || fail "the export went away during the upload"
rm -f "$T/attached.raw" "$IMAGES/$aimg" "$IMAGES/$aimg.json"
pass "in-use volume: upload refused without force, with force uploaded (what the guest wrote is in the image) and in-use again"

# ------------------------------------------------------------------ encrypted volumes
# A qcow2 image into an encrypted volume (converted, then encrypted on its way in), read back
# through the gateway, which unlocks it.
head -c $((16 * MiB)) /dev/urandom >"$T/small.raw"
qemu-img convert -f raw -O qcow2 "$T/small.raw" "$IMAGES/small.qcow2"
enc=$(cinder create --volume-type encrypted --image-id small.qcow2 --name enc-from-qcow2 1 | field id)
wait_status "$enc" available
cinder attachment-create --connect True --host "$(hostname)" --platform x86_64 --ostype linux "$enc" "$server" >"$T/att"
att=$(field id <"$T/att")
nbdsh -u "$(unix_uri "volume-$enc" "$STATE/run/nbd.sock")" -c "
assert h.pread($((16 * MiB)), 0) == open('$T/small.raw', 'rb').read(), 'the image data'" ||
    fail "the encrypted volume made from a qcow2 image, read through the gateway"
cinder attachment-delete "$att" >/dev/null
wait_status "$enc" available
# Uploaded, it is the LUKS2 ciphertext, which the volume's key (kept only by the controller,
# wrapped) opens; the key is in no file of the image directory.
cinder upload-to-image --disk-format raw "$enc" enc-image >"$T/upload"
eimg=$(field image_id <"$T/upload")
wait_status "$enc" available
cmp "$(volume_file "$enc")" "$IMAGES/$eimg" || fail "the encrypted volume's image is not its stored bytes"
assert_eq "$(json "d['encrypted']" <"$IMAGES/$eimg.json")" True "encrypted in the image's metadata"
unwrap_key "$STATE" "$enc" "$T/pass"
cryptsetup open --test-passphrase --key-file "$T/pass" "$IMAGES/$eimg" || fail "the volume's key does not open its image"
if grep -rqF "$(cat "$T/pass")" "$IMAGES"; then fail "the volume's key is in the image directory"; fi
rm -f "$T/pass" "$IMAGES/$eimg" "$IMAGES/$eimg.json" "$IMAGES/small.qcow2"
pass "encrypted: a volume from a qcow2 image reads back right through the gateway; its upload is the LUKS2 ciphertext, the key nowhere in it"

# ------------------------------------------------------------------ an upload that fails midway
big=$(cinder create --name big 1 | field id)
wait_status "$big" available
# 120 MiB of data: more than the 96 MiB upload directory holds.
head -c $((120 * MiB)) /dev/urandom | dd of="$(volume_file "$big")" conv=notrunc status=none
listing=$(ls -a "$IMAGES")
used=$(df --output=used -B1 "$IMAGES" | tail -n 1)
cinder upload-to-image --disk-format raw "$big" too-big >/dev/null
for ((i = 0; i < 200; i++)); do
    [[ $(show "$big" status) == available ]] && break
    sleep 0.1
done
assert_eq "$(show "$big" status)" available "the volume after a failed upload"
[[ $(show "$big" volgate:error) == *"upload to image"*"failed"*"No space left"* ]] ||
    fail "the failed upload's reason: $(show "$big" volgate:error)"
assert_eq "$(ls -a "$IMAGES")" "$listing" "the upload directory after a failed upload"
assert_eq "$(df --output=used -B1 "$IMAGES" | tail -n 1)" "$used" "space used in the upload directory after a failed upload"
# The same volume, smaller, uploads fine into the same directory.
truncate -s 0 "$(volume_file "$big")" && truncate -s 1G "$(volume_file "$big")"
head -c $MiB /dev/urandom | dd of="$(volume_file "$big")" conv=notrunc status=none
cinder upload-to-image --disk-format raw "$big" fits >"$T/upload"
wait_status "$big" available
cmp "$(volume_file "$big")" "$IMAGES/$(field image_id <"$T/upload")" || fail "the upload after the failed one"
pass "a failed upload (directory full) leaves nothing behind, the volume available with the reason; the next one works"

# A volume whose data starts like a qcow2 image is not uploaded as raw (it would be read as
# qcow2 later); as qcow2 it is, its data intact.
printf 'QFI\xfb' | dd of="$(volume_file "$big")" conv=notrunc status=none
listing=$(ls -a "$IMAGES")
cinder upload-to-image --disk-format raw "$big" disguised >/dev/null
for ((i = 0; i < 200; i++)); do
    [[ $(show "$big" status) == available ]] && break
    sleep 0.1
done
assert_eq "$(show "$big" status)" available "the volume after a refused raw upload"
[[ $(show "$big" volgate:error) == *"begins with a qcow2 header"* ]] ||
    fail "the refused raw upload's reason: $(show "$big" volgate:error)"
assert_eq "$(ls -a "$IMAGES")" "$listing" "the upload directory after a refused raw upload"
cinder upload-to-image --disk-format qcow2 "$big" honest >"$T/upload"
wait_status "$big" available
qemu-img compare -q -f raw -F qcow2 "$(volume_file "$big")" "$IMAGES/$(field image_id <"$T/upload")" ||
    fail "the qcow2 upload of a volume that starts like qcow2"
pass "data that starts like qcow2 is refused as a raw image (it would be read as qcow2), uploaded as qcow2 intact"

# ------------------------------------------------------------------ an image rewritten after its check
# The copy waits 3 s before it starts (a test hook): time to change the image the request checked,
# with room for the cinder CLI to exit on a loaded machine.
stop_volgate "$CTL_PID" TERM 10
VOLGATE_TEST_STALL_BEFORE=create_volume:create_on_pool:3000 start_controller "$T/controller.json" "$SOCK" '^http://' --gateway
qemu-img convert -f raw -O qcow2 "$T/small.raw" "$IMAGES/later.qcow2"
# Made hostile (the image with the secret as its external data file copied into the same
# inode) after the request was accepted.
late=$(cinder create --image-id later.qcow2 --name rewritten-header 1 | field id)
cp "$IMAGES/datafile.qcow2" "$IMAGES/later.qcow2"
for ((i = 0; i < 200; i++)); do [[ $(show "$late" status) == error ]] && break; sleep 0.1; done
assert_eq "$(show "$late" status)" error "a volume whose image got an external data file after its check"
[[ $(show "$late" volgate:error) == *"external data file"* ]] || fail "its reason: $(show "$late" volgate:error)"
# Its data changed (the header still right) after the request was checked: its ctime moved.
qemu-img convert -f raw -O qcow2 "$T/small.raw" "$IMAGES/later2.qcow2"
late2=$(cinder create --image-id later2.qcow2 --name rewritten-data 1 | field id)
qemu-io -f qcow2 -c 'write -P 0x55 0 64k' "$IMAGES/later2.qcow2" >/dev/null
for ((i = 0; i < 200; i++)); do [[ $(show "$late2" status) == error ]] && break; sleep 0.1; done
assert_eq "$(show "$late2" status)" error "a volume whose image was written after its check"
[[ $(show "$late2" volgate:error) == *"changed after it was checked"* ]] || fail "its reason: $(show "$late2" volgate:error)"
assert_eq "$(ls "$T/pool" | grep -c -e "$late" -e "$late2" || true)" 0 "files of the refused volumes"
pass "an image rewritten after its check (a hostile header, or its data) is refused before its data reaches a volume"

stop_volgate "$CTL_PID" TERM 10
