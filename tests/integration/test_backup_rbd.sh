#!/usr/bin/env bash
# Backups of RBD volumes (a private single-node Ceph, ceph_cluster.sh) through Debian's
# python3-cinderclient against `volgate controller`:
#  - a full backup and two incrementals of a volume written between them (through librbd's
#    Python binding); each backup leaves an RBD snapshot backup.ID on the volume's image and
#    drops its parent's; each incremental reads only the objects rbd_diff_iterate2 reports
#    changed (the controller's log counts the bytes read) and stores only those; each backup
#    restored to a new volume holds what the volume held then;
#  - a volume with a backup snapshot can be extended; deleting the newest backup drops its
#    snapshot, and the next incremental (whose parent has no snapshot left) reads the whole
#    volume and compares hashes instead; deleting the volume removes its image with its
#    snapshots, and its backups still restore;
#  - an encrypted RBD volume backed up in use (--force, from its backup snapshot) and available,
#    as ciphertext, and restored to a new volume that reads, through the gateway, what was
#    written into the original;
#  - `cinder create --backup-id` (3.47): the restore path into a new volume of the size asked
#    for; refused before 3.47 and smaller than the backup;
#  - `cinder backup-reset-state` and `backup-delete --force`: 409 while a flow works on the
#    backup, then done (a forced delete drops the backup's snapshot).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ceph_cluster.sh"
require_volgate
require_tool curl cinder nbdcopy qemu-img
T=$TEST_TMP
STATE=$T/state
SOCK=$STATE/controller.sock
PORT=$(free_tcp_port)
PROJECT=demo
URL=http://127.0.0.1:$PORT
TESTS_DIR=$(cd "$(dirname "$0")" && pwd)
export TESTS_DIR T
REPO=$T/repo
CEPH_POOL=vols
ceph_start memstore

cat >"$T/controller.json" <<JSON
{
  "state_dir": "$STATE",
  "tcp_listen": "127.0.0.1:$PORT",
  "libvirt_uri": "none",
  "quotas": {"volumes": 20, "snapshots": 10, "gigabytes": 100, "backups": 20, "backup_gigabytes": 100},
  "backups": {"directory": "$REPO"},
  "pools": [{"name": "ceph", "driver": "rbd", "rbd_pool": "$CEPH_POOL", "ceph_conf": "$CEPH_CONF",
             "ceph_keyring": "$CEPH_KEYRING", "total_capacity_gb": 100}]
}
JSON
start_controller "$T/controller.json" "$SOCK" '^http://' --gateway
CTL_LOG=${VG_LOG_OF[$CTL_PID]}
export CEPH_CONF CEPH_KEYRING CEPH_POOL CTL_LOG

# cinder, get, wait_status, gone; the admin token for the CLI and curl
. "$(dirname "$0")/cinder_api_lib.sh"
use_admin_token
# first8 VOLUME: its first 8 MiB as the gateway serves it (while attached)
first8() {
    rm -f "$T/first8"
    qemu-img dd -f raw -O raw bs=1M count=8 if="$(unix_uri "volume-$1" "$STATE/run/nbd.sock")" of="$T/first8" ||
        fail "qemu-img dd of volume $1"
    cat "$T/first8"
}

# ------------------------------------------------------------------ full + incrementals (library)
"$SYSPY" - "$URL/v3/$PROJECT" >"$T/lib.out" 2>&1 <<'PY' || fail "cinderclient library: $(tail -n 30 "$T/lib.out")"
import hashlib, os, random, re, sys, time
import rados, rbd
from keystoneauth1 import session
from keystoneauth1.token_endpoint import Token
from cinderclient import client, exceptions

c = client.Client("3.53", session=session.Session(auth=Token(sys.argv[1], os.environ["OS_TOKEN"])))
CHUNK = 4 << 20
cluster = rados.Rados(conffile=os.environ["CEPH_CONF"], conf={"keyring": os.environ["CEPH_KEYRING"]})
cluster.connect(timeout=10)
io = cluster.open_ioctx(os.environ["CEPH_POOL"])

def image(v):
    return "volume-" + v

def write_random(v, offset, length, seed):
    with rbd.Image(io, image(v)) as img:
        img.write(random.Random(seed).randbytes(length), offset)

def digest(v):
    """SHA-256 of the size and of every non-zero 64 KiB block (with its offset) of the image."""
    h = hashlib.sha256()
    with rbd.Image(io, image(v), read_only=True) as img:
        size = img.size()
        h.update(size.to_bytes(8, "little"))
        extents = []
        img.diff_iterate(0, size, None, lambda o, l, e: extents.append((o, l)) if e else None)
        blocks = set()
        for o, l in extents:
            blocks.update(range(o - o % 65536, o + l, 65536))
        for b in sorted(blocks):
            piece = img.read(b, min(65536, size - b))
            if piece.count(0) != len(piece):
                h.update(b.to_bytes(8, "little"))
                h.update(piece)
    return h.hexdigest()

def backup_snapshots(v):
    with rbd.Image(io, image(v), read_only=True) as img:
        return sorted(s["name"] for s in img.list_snaps())

def log_of(backup_id):
    """(read bytes, chunks, unchanged chunks, parent compared with, stored bytes) from the controller's log."""
    pattern = re.compile(r"backup %s of volume \S+: read (\d+) bytes, (\d+) chunks with data \((\d+) unchanged "
                         r"since backup (\S+), unread\), stored (\d+) new bytes" % backup_id)
    for line in open(os.environ["CTL_LOG"]):
        m = pattern.search(line)
        if m:
            return int(m[1]), int(m[2]), int(m[3]), m[4], int(m[5])
    raise AssertionError("no log line for backup " + backup_id)

def wait(get, id, want, key="status", timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        obj = get(id)
        if getattr(obj, key) == want:
            return obj
        assert not str(getattr(obj, "status")).startswith("error"), obj._info
        time.sleep(0.05)
    raise AssertionError("%s %s never got %s=%s" % (id, obj._info, key, want))

def gone(get, id):
    for _ in range(200):
        try:
            get(id)
        except exceptions.NotFound:
            return
        time.sleep(0.05)
    raise AssertionError(id + " still there")

vol = c.volumes.create(1, name="source")
wait(c.volumes.get, vol.id, "available")
write_random(vol.id, 0, 3 * CHUNK, 1)                # three objects of data
write_random(vol.id, 100 * CHUNK + 5000, 70000, 2)   # a little inside a 4th
sums = [digest(vol.id)]
full = wait(c.backups.get, c.backups.create(vol.id, name="full").id, "available")
assert c.volumes.get(vol.id).status == "available"
assert full.object_count == 4 and not full.is_incremental, full._info
assert backup_snapshots(vol.id) == ["backup." + full.id], backup_snapshots(vol.id)
read, chunks, unchanged, since, stored = log_of(full.id)
assert read == 4 * CHUNK and chunks == 4 and unchanged == 0 and since == "-", log_of(full.id)
print("full: read", read, "stored", stored)
backups = [full]
for n in (1, 2):
    # Each round rewrites 64 KiB inside one object and writes a little into a new one.
    write_random(vol.id, n * CHUNK // 2 + 4096, 65536, 10 + n)
    write_random(vol.id, (200 + n) * CHUNK, 8192, 20 + n)
    sums.append(digest(vol.id))
    b = wait(c.backups.get, c.backups.create(vol.id, name="inc%d" % n, incremental=True).id, "available")
    assert b.is_incremental and b._info["volgate:parent_id"] == backups[-1].id, b._info
    # Only the two changed objects were read (8 MiB), the other chunks named from the parent.
    read, chunks, unchanged, since, stored = log_of(b.id)
    print("incremental %d: read" % n, read, "stored", stored, "unchanged chunks", unchanged)
    assert read == 2 * CHUNK and since == backups[-1].id, log_of(b.id)
    assert chunks == 4 + n and unchanged == chunks - 2, log_of(b.id)
    assert 0 < stored <= 2 * (CHUNK + 64) and stored == b._info["volgate:stored_bytes"], (stored, b._info)
    # The volume keeps the snapshot of its newest backup only.
    assert backup_snapshots(vol.id) == ["backup." + b.id], backup_snapshots(vol.id)
    backups.append(b)
print("ok full and two incrementals by diff")

for n, b in enumerate(backups):
    r = c.restores.restore(b.id, name="restored%d" % n)
    wait(c.volumes.get, r.volume_id, "available")
    assert digest(r.volume_id) == sums[n], "restore of backup %d differs from the volume at its time" % n
    assert backup_snapshots(r.volume_id) == [], backup_snapshots(r.volume_id)
print("ok restores")

# Extendable with its backup snapshot.
c.volumes.extend(vol.id, 2)
wait(c.volumes.get, vol.id, 2, "size")
wait(c.volumes.get, vol.id, "available")
# Deleting the newest backup drops its snapshot; the next incremental's parent (inc1) has none
# left: the whole volume is read and compared by hash, and only the changed chunk is stored.
c.backups.delete(backups[2].id)
gone(c.backups.get, backups[2].id)
assert backup_snapshots(vol.id) == [], backup_snapshots(vol.id)
write_random(vol.id, 400 * CHUNK, 4096, 30)  # past the old end
sums.append(digest(vol.id))
b = wait(c.backups.get, c.backups.create(vol.id, name="inc3", incremental=True).id, "available")
assert b._info["volgate:parent_id"] == backups[1].id, b._info
read, chunks, unchanged, since, stored = log_of(b.id)
print("incremental without its parent's snapshot: read", read, "stored", stored)
assert since == "-" and unchanged == 0 and read == 7 * CHUNK and chunks == 7, log_of(b.id)
# inc2's chunks went with it: object 1 (4 MiB of random data) and 202 are stored again, and 400.
assert CHUNK < stored <= CHUNK + 65536, stored
assert backup_snapshots(vol.id) == ["backup." + b.id], backup_snapshots(vol.id)
# And the one after it diffs again.
write_random(vol.id, 0, 4096, 31)
sums.append(digest(vol.id))
b2 = wait(c.backups.get, c.backups.create(vol.id, name="inc4", incremental=True).id, "available")
read, chunks, unchanged, since, stored = log_of(b2.id)
assert read == CHUNK and since == b.id and unchanged == 6, log_of(b2.id)
print("ok extend, a deleted newest backup, the full read that follows and the diff after it")

# The volume goes with its snapshots; its backups stay restorable.
c.volumes.delete(vol.id)
gone(c.volumes.get, vol.id)
assert image(vol.id) not in rbd.RBD().list(io), rbd.RBD().list(io)
r = c.restores.restore(b2.id)
v = wait(c.volumes.get, r.volume_id, "available")
assert v.size == 2 and digest(v.id) == sums[-1], "restore after the source volume was deleted"
open(os.environ["T"] + "/big_backup", "w").write(b2.id)
print("ok restore after the source volume is gone")
io.close()
cluster.shutdown()
PY
cat "$T/lib.out"
pass "RBD volumes: full and incremental backups by diff (only changed objects read and stored), snapshots kept per newest backup, restores, extend, fallback to a full read, restore after the volume is deleted"

# ------------------------------------------------------------------ encrypted
enc=$(cinder create --name secret --volume-type encrypted 1 | field id)
wait_status volumes "$enc" available
make_random_file "$T/plain" 8
att=$(cinder attachment-create --connect True --host "$(hostname)" --platform x86_64 --ostype linux \
    "$enc" 5e1f7a3c-8d2b-4c6e-9a10-3b7f2d4e6c82 | field id)
nbdcopy "$T/plain" "$(unix_uri "volume-$enc" "$STATE/run/nbd.sock")"
# In use: --force reads the backup's own snapshot, as for an available volume; the volume
# stays in-use throughout.
cinder attachment-complete "$att" >/dev/null
assert_eq "$(get volumes "$enc" "d['status']")" in-use "attached volume"
if command cinder --os-auth-type admin_token backup-create "$enc" >"$T/out" 2>&1; then fail "backup of an in-use volume without --force"; fi
bf=$(cinder backup-create --force "$enc" | field id)
wait_status backups "$bf" available
assert_eq "$(get volumes "$enc" "d['status']")" in-use "the volume after a forced backup"
assert_eq "$(rbd_cmd snap ls --format json "$CEPH_POOL/volume-$enc" | "$SYSPY" -c 'import json, sys; print([s["name"] for s in json.load(sys.stdin)])')" \
    "['backup.$bf']" "RBD snapshots of the in-use volume after its forced backup"
cinder attachment-delete "$att" >/dev/null
wait_status volumes "$enc" available
be=$(cinder backup-create "$enc" | field id)
wait_status backups "$be" available
assert_eq "$(rbd_cmd snap ls --format json "$CEPH_POOL/volume-$enc" | "$SYSPY" -c 'import json, sys; print([s["name"] for s in json.load(sys.stdin)])')" \
    "['backup.$be']" "RBD snapshots after the next backup"
assert_eq "$(get backups "$be" "d['volgate:encrypted']")" True "backup of an encrypted RBD volume"
# Ciphertext: the first MiB of the plaintext is in no chunk (chunks are zstd or raw; the
# plaintext is random, so stored raw it would be found as it is).
"$SYSPY" - "$REPO" "$T/plain" <<'PY' || fail "plaintext in the repository"
import os, sys
needle = open(sys.argv[2], "rb").read()[4096:4096 + 64]
for root, _, files in os.walk(sys.argv[1]):
    for f in files:
        if needle in open(os.path.join(root, f), "rb").read():
            sys.exit("plaintext in " + os.path.join(root, f))
PY
cinder delete "$enc" >/dev/null
gone volumes "$enc"
re=$(cinder backup-restore "$be" | field volume_id)
wait_status volumes "$re" available
assert_eq "$(get volumes "$re" "d['encrypted']")" True "restored volume is encrypted"
att=$(cinder attachment-create --connect True --host "$(hostname)" --platform x86_64 --ostype linux \
    "$re" 5e1f7a3c-8d2b-4c6e-9a10-3b7f2d4e6c83 | field id)
first8 "$re" >"$T/back"
cmp "$T/plain" "$T/back" || fail "restored encrypted RBD volume read through the gateway differs"
cinder attachment-delete "$att" >/dev/null
pass "encrypted RBD volume: backed up in use (--force) and available, as ciphertext, restored after its volume was deleted, read through the gateway"

# ------------------------------------------------------------------ a volume from a backup (3.47)
# `cinder create --backup-id`: a restore into a new volume of the size asked for (at least the
# backup's), through the same restore path; the encrypted backup's volume opens with its key.
fv=$(cinder create --name from-backup --backup-id "$be" 2 | field id)
wait_status volumes "$fv" available
assert_eq "$(get volumes "$fv" "(d['size'], d['name'], d['encrypted'])")" "(2, 'from-backup', True)" \
    "size, name and encryption of a volume made from a backup"
assert_eq "$(rbd_cmd info --format json "$CEPH_POOL/volume-$fv" | "$SYSPY" -c 'import json, sys; print(json.load(sys.stdin)["size"])')" \
    $((2 << 30)) "RBD image size of a volume made from a backup"
att=$(cinder attachment-create --connect True --host "$(hostname)" --platform x86_64 --ostype linux \
    "$fv" 5e1f7a3c-8d2b-4c6e-9a10-3b7f2d4e6c84 | field id)
first8 "$fv" >"$T/back"
cmp "$T/plain" "$T/back" || fail "volume made from the encrypted backup differs"
cinder attachment-delete "$att" >/dev/null
rm -f "$T/back" "$T/plain"
# Refusals: smaller than the backup, before 3.47.
big=$(cat "$T/big_backup")
if command cinder --os-auth-type admin_token create --backup-id "$big" 1 >"$T/out" 2>&1; then fail "a 1 GiB volume from a 2 GiB backup"; fi
grep -q "HTTP 400" "$T/out" && grep -q "cannot hold" "$T/out" || fail "1 GiB from a 2 GiB backup: $(cat "$T/out")"
code=$(curl -s -o "$T/body" -w '%{http_code}' -H @"$AUTH" -H 'OpenStack-API-Version: volume 3.46' \
    -H 'Content-Type: application/json' --data "{\"volume\": {\"backup_id\": \"$be\", \"size\": 1}}" "$URL/v3/$PROJECT/volumes")
assert_eq "$code" 400 "backup_id before 3.47"
grep -q "3.47" "$T/body" || fail "the refusal does not name the microversion: $(cat "$T/body")"
code=$(curl -s -o "$T/body" -w '%{http_code}' -H @"$AUTH" -H 'OpenStack-API-Version: volume 3.53' \
    -H 'Content-Type: application/json' --data "{\"volume\": {\"backup_id\": \"$be\", \"size\": 1}}" "$URL/v3/$PROJECT/volumes")
assert_eq "$code" 202 "backup_id at 3.53 (the same request)"
small=$("$SYSPY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["volume"]["id"])' "$T/body")
wait_status volumes "$small" available
pass "cinder create --backup-id: a new volume restored from the backup, of the size asked for; refused before 3.47"

# ------------------------------------------------------------------ an admin's repairs
# `cinder backup-reset-state` (os-reset_status) and `cinder backup-delete --force`
# (os-force_delete): refused with 409 while a flow works on the backup (the controller is
# restarted to stall every backup before its copy), then allowed.
kill -TERM "$CTL_PID"
wait "$CTL_PID" 2>/dev/null || true
VOLGATE_TEST_STALL_BEFORE=create_backup:copy:2000 start_controller "$T/controller.json" "$SOCK" '^http://'
busy=$(cinder backup-create --name busy "$small" | field id)
[[ $(get backups "$busy" "d['status']") == creating ]] || fail "the stalled backup is $(get backups "$busy" "d['status']")"
if command cinder --os-auth-type admin_token backup-reset-state --state available "$busy" >"$T/out" 2>&1; then
    fail "reset of a backup being made: $(cat "$T/out")"
fi
grep -q "HTTP 409" "$T/out" && grep -q "operation in progress" "$T/out" || fail "reset while busy: $(cat "$T/out")"
if command cinder --os-auth-type admin_token backup-delete --force "$busy" >"$T/out" 2>&1; then
    fail "force-delete of a backup being made: $(cat "$T/out")"
fi
grep -q "HTTP 409" "$T/out" || fail "force-delete while busy: $(cat "$T/out")"
wait_status backups "$busy" available
# Reset: to error and back; other statuses are refused.
cinder backup-reset-state --state error "$busy" >/dev/null
assert_eq "$(get backups "$busy" "d['status']")" error "status after backup-reset-state --state error"
cinder backup-reset-state "$busy" >/dev/null  # the CLI's default: available
assert_eq "$(get backups "$busy" "d['status']")" available "status after backup-reset-state"
if command cinder --os-auth-type admin_token backup-reset-state --state restoring "$busy" >"$T/out" 2>&1; then fail "reset to restoring"; fi
grep -q "HTTP 400" "$T/out" || fail "reset to restoring: $(cat "$T/out")"
# A backup a crash would leave creating with no flow on it (made so in the database): a plain
# delete is refused, a forced one removes it, its snapshot and its chunks.
sqlite3 "$STATE/controller.db" "UPDATE backups SET status = 'creating' WHERE id = '$busy'"
if command cinder --os-auth-type admin_token backup-delete "$busy" >"$T/out" 2>&1; then fail "plain delete of a creating backup"; fi
grep -q "HTTP 400" "$T/out" || fail "plain delete of a creating backup: $(cat "$T/out")"
rbd_cmd snap ls "$CEPH_POOL/volume-$small" | grep -q "backup.$busy" || fail "no snapshot of the backup on its volume"
cinder backup-delete --force "$busy" >/dev/null
gone backups "$busy"
if rbd_cmd snap ls "$CEPH_POOL/volume-$small" | grep -q "backup.$busy"; then fail "the forced delete left the snapshot"; fi
pass "backup-reset-state and backup-delete --force: 409 while a flow works on the backup, then done"

# ------------------------------------------------------------------ a repository in a Ceph pool
# The other kind of repository: chunks and manifests as RADOS objects of a pool (chunk.HASH,
# manifest.ID), the lock a RADOS exclusive lock. A backup and its restore go through it; a
# controller killed and restarted takes its own lock back; deleting a backup removes the chunk
# only it named.
kill -TERM "$CTL_PID"
wait "$CTL_PID" 2>/dev/null || true
ceph_cmd osd pool create backups 8 8 >/dev/null 2>&1 || fail "ceph osd pool create backups"
ceph_cmd osd pool set backups size 1 --yes-i-really-mean-it >/dev/null 2>&1 || fail "pool size of backups"
"$SYSPY" - "$T/controller.json" "$T/controller-rados.json" "$CEPH_CONF" "$CEPH_KEYRING" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["backups"] = {"kind": "rados", "rados_pool": "backups", "ceph_conf": sys.argv[3], "ceph_keyring": sys.argv[4]}
json.dump(c, open(sys.argv[2], "w"))
PY
start_controller "$T/controller-rados.json" "$SOCK" '^http://'
image_sum() { { rbd_cmd export "$CEPH_POOL/volume-$1" - 2>/dev/null || true; } | head -c $((12 << 20)) | sha256sum; }
chunk_objects() { rados_cmd -p backups ls | grep -c '^chunk\.' || true; }
write_rbd() {  # VOLUME OFFSET LENGTH SEED: seeded random bytes into the volume's image
    "$SYSPY" -c '
import random, sys, rados, rbd
cl = rados.Rados(conffile=sys.argv[1], conf={"keyring": sys.argv[2]}); cl.connect()
io = cl.open_ioctx(sys.argv[3])
with rbd.Image(io, "volume-" + sys.argv[4]) as img:
    img.write(random.Random(int(sys.argv[7])).randbytes(int(sys.argv[6])), int(sys.argv[5]))
cl.shutdown()' "$CEPH_CONF" "$CEPH_KEYRING" "$CEPH_POOL" "$@"
}
rv=$(cinder create --name in-rados 1 | field id)
wait_status volumes "$rv" available
write_rbd "$rv" 0 $((8 << 20)) 5  # two objects
want=$(image_sum "$rv")
rb=$(cinder backup-create "$rv" | field id)
wait_status backups "$rb" available
assert_eq "$(chunk_objects)" 2 "chunk objects in the Ceph pool after a backup of two objects of data"
rados_cmd -p backups stat "manifest.$rb" >/dev/null 2>&1 || fail "no manifest object for backup $rb"
[[ -d $REPO/manifests && -f $REPO/manifests/$rb.json ]] && fail "the backup went to the directory repository"
rr=$(cinder backup-restore "$rb" | field volume_id)
wait_status volumes "$rr" available
assert_eq "$(image_sum "$rr")" "$want" "a backup restored from the Ceph pool repository"
# Killed, restarted: the controller breaks its own earlier lock and works on.
kill -KILL "$CTL_PID"
wait "$CTL_PID" 2>/dev/null || true
start_controller "$T/controller-rados.json" "$SOCK" '^http://'
write_rbd "$rv" $((100 << 20)) 4096 6
ri=$(cinder backup-create --incremental "$rv" | field id)
wait_status backups "$ri" available
grep -q "breaking the lock this controller" "$VG_ERR" || fail "the restarted controller did not break its own lock"
assert_eq "$(chunk_objects)" 3 "chunk objects after an incremental that changed one object"
cinder backup-delete "$ri" >/dev/null
gone backups "$ri"
assert_eq "$(chunk_objects)" 2 "chunk objects after deleting the incremental (its one chunk removed)"
if rados_cmd -p backups stat "manifest.$ri" >/dev/null 2>&1; then fail "the deleted backup's manifest object is still there"; fi
pass "a backup repository in a Ceph pool: backup and restore through it, its lock taken back after a crash, a chunk removed by delete"
