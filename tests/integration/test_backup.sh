#!/usr/bin/env bash
# Backups of file-pool volumes through Debian's python3-cinderclient (`cinder backup-create
# |backup-list|backup-show|backup-restore|backup-delete`) against `volgate controller`:
#  - a full backup and three incrementals of a volume written between them (into its pool file);
#    each restored to a new volume holds exactly what the volume held then; the incrementals
#    store only the chunks that changed (volgate:stored_bytes); the volume is backing-up, then
#    available again;
#  - a restore after the source volume's pool file is gone; a restore over an existing larger
#    volume (the backup's bytes, zeros after); refusals with Cinder's codes (missing volume,
#    in-use without force, incremental without a full backup, a parent with incrementals, a
#    restore to a volume that is not available, quota);
#  - an in-use volume (attached through the gateway) backed up with --force through a temporary
#    snapshot that is gone afterwards, the volume staying in-use;
#  - an encrypted volume backed up as ciphertext (no plaintext in the repository), restored to a
#    new volume that opens with the backup's key: read through the gateway, it holds the data;
#  - refused: a restore over an encrypted volume with snapshots (they open with its key, which
#    the backup's would replace), a plain backup into a new volume of an encrypted type;
#  - one flipped byte in one chunk: the restore fails naming the chunk, a new target volume is
#    deleted, an existing one is left in error; every check first succeeds on the undamaged chunk;
#  - volgate's own `backup` commands, with their progress bars;
#  - deleting every backup leaves the repository with no chunk and the quota at zero.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_volgate
require_tool curl cinder nbdcopy nbdinfo
T=$TEST_TMP
STATE=$T/state
SOCK=$STATE/controller.sock
PORT=$(free_tcp_port)
PROJECT=demo
URL=http://127.0.0.1:$PORT
POOL=$T/pool
TESTS_DIR=$(cd "$(dirname "$0")" && pwd)
export TESTS_DIR T
REPO=$T/repo

cat >"$T/controller.json" <<JSON
{
  "state_dir": "$STATE",
  "tcp_listen": "127.0.0.1:$PORT",
  "libvirt_uri": "none",
  "quotas": {"volumes": 20, "snapshots": 10, "gigabytes": 100, "backups": 20, "backup_gigabytes": 100},
  "backups": {"directory": "$REPO"},
  "pools": [{"name": "files", "driver": "file", "directory": "$POOL"}]
}
JSON
start_controller "$T/controller.json" "$SOCK" '^http://' --gateway

# cinder, get, wait_status, gone; the admin token for the CLI and curl
. "$(dirname "$0")/cinder_api_lib.sh"
use_admin_token
# cinder_fails CODE ARGS...: the command must fail with HTTP CODE; prints the message
cinder_fails() {
    local code=$1
    shift
    if command cinder --os-auth-type admin_token "$@" >"$T/out" 2>"$T/err"; then fail "cinder $* succeeded: $(cat "$T/out")"; fi
    # (backup-delete prints its failures on stdout)
    grep -q "HTTP $code" "$T/err" "$T/out" || fail "cinder $*: expected HTTP $code: $(cat "$T/err" "$T/out")"
    refute_grep "cinder $* crashed" Traceback "$T/err"
    cat "$T/err" "$T/out"
}
volume_file() { echo "$POOL/volume-$1.img"; }
digest() { "$SYSPY" "$TESTS_DIR/backup_lib.py" digest "$1"; }
new_volume() { cinder create --name "$1" "${@:2}" | field id; }
backup_create() { cinder backup-create "$@" | field id; }
chunk_files() { find "$REPO/chunks" -path "$REPO/chunks/.*" -prune -o -type f -print | wc -l; }

# ------------------------------------------------------------------ full + three incrementals (library)
# The cinderclient library in one process (the CLI costs ~0.8 s a call): the data checks here,
# the CLI's backup commands below.
"$SYSPY" - "$URL/v3/$PROJECT" "$POOL" "$REPO" >"$T/lib.out" 2>&1 <<'PY' || fail "cinderclient library: $(tail -n 30 "$T/lib.out")"
import json, os, sys, time
sys.path.insert(0, os.environ["TESTS_DIR"])
from backup_lib import digest, write_random
from keystoneauth1 import session
from keystoneauth1.token_endpoint import Token
from cinderclient import client, exceptions

endpoint, pool, repo = sys.argv[1:4]
c = client.Client("3.53", session=session.Session(auth=Token(endpoint, os.environ["OS_TOKEN"])))
CHUNK = 4 << 20
vfile = lambda v: "%s/volume-%s.img" % (pool, v)

def wait(get, id, want, key="status", timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        obj = get(id)
        if getattr(obj, key) == want:
            return obj
        assert not str(getattr(obj, "status")).startswith("error"), obj._info
        time.sleep(0.05)
    raise AssertionError("%s %s never got %s=%s" % (id, obj._info, key, want))

def fails(code, call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except exceptions.ClientException as e:
        assert e.code == code, (code, str(e))
        return str(e)
    raise AssertionError("%s%s succeeded" % (call.__name__, args))

vol = c.volumes.create(1, name="source")
wait(c.volumes.get, vol.id, "available")
write_random(vfile(vol.id), 0, 3 * CHUNK, 1)                # three chunks of data
write_random(vfile(vol.id), 100 * CHUNK + 5000, 70000, 2)   # a little inside a 4th
sums = [digest(vfile(vol.id))]
b = c.backups.create(vol.id, name="full")
assert c.volumes.get(vol.id).status in ("backing-up", "available")
full = wait(c.backups.get, b.id, "available")
assert c.volumes.get(vol.id).status == "available"
assert full.object_count == 4 and not full.is_incremental, full._info
assert full._info["volgate:stored_bytes"] > 3 * CHUNK, full._info
backups = [full]
for n in (1, 2, 3):
    # Each round rewrites 64 KiB inside one chunk and writes a little into a new one.
    write_random(vfile(vol.id), n * CHUNK // 2 + 4096, 65536, 10 + n)
    write_random(vfile(vol.id), (200 + n) * CHUNK, 8192, 20 + n)
    sums.append(digest(vfile(vol.id)))
    b = wait(c.backups.get, c.backups.create(vol.id, name="inc%d" % n, incremental=True).id, "available")
    assert b.is_incremental and b._info["volgate:parent_id"] == backups[-1].id, b._info
    stored = b._info["volgate:stored_bytes"]
    # Two chunks changed: one whole 4 MiB random chunk rewritten, one mostly zeros.
    assert 0 < stored <= 2 * (CHUNK + 64), (n, stored)
    backups.append(b)
assert wait(c.backups.get, backups[2].id, True, "has_dependent_backups")
assert [x.name for x in c.backups.list(search_opts={"volume_id": vol.id}, sort="name:asc")] == \
    ["full", "inc1", "inc2", "inc3"]
print("ok full and three incrementals")

restored = []
for n, b in enumerate(backups):
    r = c.restores.restore(b.id, name="restored%d" % n)
    assert r.backup_id == b.id and r.volume_name == "restored%d" % n, r._info
    v = wait(c.volumes.get, r.volume_id, "available")
    assert digest(vfile(v.id)) == sums[n], "restore of backup %d differs from the volume at its time" % n
    restored.append(v.id)
print("ok restores")

os.unlink(vfile(vol.id))  # the source's data is gone
r = c.restores.restore(backups[3].id)
v = wait(c.volumes.get, r.volume_id, "available")
assert v.name == "restore_backup_" + backups[3].id, v.name
assert digest(vfile(v.id)) == sums[3], "restore after the source file was deleted"
c.volumes.delete(v.id)

big = c.volumes.create(2, name="bigger")
wait(c.volumes.get, big.id, "available")
write_random(vfile(big.id), 300 * CHUNK, CHUNK, 99)  # old data the restore must clear
c.restores.restore(backups[0].id, big.id)
wait(c.volumes.get, big.id, "available")
os.truncate(vfile(big.id), 1 << 30)
assert digest(vfile(big.id)) == sums[0], "restore over a bigger volume"
os.truncate(vfile(big.id), 2 << 30)
print("ok restore after the source is gone and over a bigger volume")

lone = c.volumes.create(1, name="lone")
wait(c.volumes.get, lone.id, "available")
fails(404, c.backups.create, "5e1f7a3c-8d2b-4c6e-9a10-3b7f2d4e6c81")
assert "no available backup" in fails(400, c.backups.create, lone.id, incremental=True)
assert "incremental backups made from it" in fails(400, c.backups.delete, backups[2].id)
assert "container" in fails(400, c.backups.create, lone.id, container="elsewhere")
c.quotas.update("demo", backups=len(backups))
assert "backups" in fails(413, c.backups.create, lone.id)
c.quotas.update("demo", backups=20)
small = c.volumes.create(1, name="small")
wait(c.volumes.get, small.id, "available")
c.volumes.extend(small.id, 2)
wait(c.volumes.get, small.id, 2, "size")
bb = wait(c.backups.get, c.backups.create(small.id).id, "available")
assert "less than" in fails(400, c.restores.restore, bb.id, lone.id)  # 1 GiB < 2 GiB
c.restores.restore(backups[1].id, lone.id)  # equal size
wait(c.volumes.get, lone.id, "available")
assert digest(vfile(lone.id)) == sums[1]
c.backups.delete(bb.id)
json.dump({"backups": [x.id for x in backups], "restored": restored, "big": big.id, "sums": sums},
          open(os.environ["T"] + "/state.json", "w"))
print("ok refusals")
PY
grep -q '^ok refusals' "$T/lib.out" || fail "library part: $(cat "$T/lib.out")"
st() { "$SYSPY" -c 'import json, sys; print(eval(sys.argv[1], json.load(open(sys.argv[2]))))' "$1" "$T/state.json"; }
b0=$(st 'backups[0]')
big=$(st 'big')
pass "library: full + 3 incrementals (only changed chunks stored), each restored to a new volume exactly as the volume was then; restore after the source file is gone, over a bigger volume; refusals 404/400/413"

# ------------------------------------------------------------------ the CLI's backup commands
grep -q "| $(st 'backups[2]') | .* | available | inc2 *| 1 *| 6 " <<<"$(cinder backup-list)" || fail "backup-list: $(cat "$T/out")"
shown=$(cinder backup-show inc3)
assert_eq "$(field status <<<"$shown")" available "backup-show by name"
assert_eq "$(field volgate:parent_id <<<"$shown")" "$(st 'backups[2]')" "backup-show parent"

# ------------------------------------------------------------------ in-use, with force
for ((i = 0; i < 100; i++)); do [[ -S $STATE/run/nbd.sock ]] && break; sleep 0.05; done
att=$(cinder attachment-create --connect True --host "$(hostname)" --platform x86_64 --ostype linux \
    "$(st 'restored[3]')" 5e1f7a3c-8d2b-4c6e-9a10-3b7f2d4e6c81 | field id)
cinder attachment-complete "$att" >/dev/null
assert_eq "$(get volumes "$(st 'restored[3]')" "d['status']")" in-use "attached volume"
msg=$(cinder_fails 400 backup-create "$(st 'restored[3]')")
grep -q 'in-use with force' <<<"$msg" || fail "in-use without force: $msg"
bf=$(backup_create --force "$(st 'restored[3]')")
wait_status backups "$bf" available
assert_eq "$(get volumes "$(st 'restored[3]')" "d['status']")" in-use "volume stays in-use during and after a forced backup"
ls "$POOL"/snapshot-* >/dev/null 2>&1 && fail "temporary snapshot left: $(ls "$POOL")"
rf=$(cinder backup-restore "$bf" | field volume_id)
wait_status volumes "$rf" available
assert_eq "$(digest "$(volume_file "$rf")")" "$(st 'sums[3]')" "restore of the in-use volume's backup"
cinder attachment-delete "$att" >/dev/null
pass "in-use volume: refused without --force, backed up with it through a temporary snapshot (gone after)"

# ------------------------------------------------------------------ encrypted
enc=$(new_volume secret 1 --volume-type encrypted)
wait_status volumes "$enc" available
MARK="volgate backup plaintext marker"
"$SYSPY" -c "import sys; sys.stdout.buffer.write(((sys.argv[1] + '\n') * 300000)[:8 << 20].encode())" "$MARK" >"$T/plain"
att=$(cinder attachment-create --connect True --host "$(hostname)" --platform x86_64 --ostype linux \
    "$enc" 5e1f7a3c-8d2b-4c6e-9a10-3b7f2d4e6c82 | field id)
nbdcopy "$T/plain" "$(unix_uri "volume-$enc" "$STATE/run/nbd.sock")"
cinder attachment-delete "$att" >/dev/null
wait_status volumes "$enc" available
be=$(backup_create "$enc")
wait_status backups "$be" available
assert_eq "$(get backups "$be" "d['volgate:encrypted']")" True "backup of an encrypted volume"
if grep -rqF "$MARK" "$REPO"; then fail "plaintext in the repository"; fi
cinder delete "$enc" >/dev/null
gone volumes "$enc"
re=$(cinder backup-restore "$be" | field volume_id)
wait_status volumes "$re" available
assert_eq "$(get volumes "$re" "d['encrypted']")" True "restored volume is encrypted"
att=$(cinder attachment-create --connect True --host "$(hostname)" --platform x86_64 --ostype linux \
    "$re" 5e1f7a3c-8d2b-4c6e-9a10-3b7f2d4e6c83 | field id)
nbdcopy "$(unix_uri "volume-$re" "$STATE/run/nbd.sock")" "$T/back"
cmp -n $((8 << 20)) "$T/plain" "$T/back" || fail "restored encrypted volume read through the gateway differs"
cinder attachment-delete "$att" >/dev/null
rm -f "$T/plain" "$T/back"
pass "encrypted volume: backed up as ciphertext, restored after its volume was deleted, read through the gateway with the backup's key"

# Restores that would lose a key or mix plain and encrypted data are refused, nothing changed.
sn=$(cinder snapshot-create --name keep "$re" | field id)
wait_status snapshots "$sn" available
msg=$(cinder_fails 400 backup-restore --volume "$re" "$be")
[[ $msg == *"has snapshots"* ]] || fail "restore over an encrypted volume with a snapshot: $msg"
assert_eq "$(get volumes "$re" "d['status']")" available "the volume after the refused restore"
cinder snapshot-delete "$sn" >/dev/null
gone snapshots "$sn"
code=$(curl -s -o "$T/out" -w '%{http_code}' -H @"$AUTH" -H 'OpenStack-API-Version: volume 3.47' \
    -H 'Content-Type: application/json' -X POST "$URL/v3/$PROJECT/volumes" \
    --data '{"volume": {"backup_id": "'"$b0"'", "volume_type": "encrypted"}}')
assert_eq "$code" 400 "a plain backup into a new volume of type encrypted ($(cat "$T/out"))"
grep -q "volume type encrypted is encrypted" "$T/out" || fail "the 400 does not say why: $(cat "$T/out")"
pass "refused: a restore over an encrypted volume with snapshots (their key), a plain backup into an encrypted type"

# ------------------------------------------------------------------ a flipped byte
bad_chunk=$("$SYSPY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["chunks"][1][2])' "$REPO/manifests/$b0.json")
chunk_path=$REPO/chunks/${bad_chunk:0:2}/$bad_chunk
"$SYSPY" - "$chunk_path" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
at = os.fstat(fd).st_size - 1000
b = os.pread(fd, 1, at)
os.pwrite(fd, bytes([b[0] ^ 0x01]), at)
os.close(fd)
PY
volumes_before=$(cinder list | grep -c restore_backup_ || true)
r=$(cinder backup-restore "$b0" | field volume_id)
wait_status backups "$b0" available
gone volumes "$r"
[[ -e $(volume_file "$r") ]] && fail "the failed restore's new volume file is left"
reason=$(get backups "$b0" "d['fail_reason']")
[[ $reason == *"chunk $bad_chunk is corrupt"* ]] || fail "fail_reason does not name the chunk: $reason"
assert_eq "$(cinder list | grep -c restore_backup_ || true)" "$volumes_before" "volumes after the failed restore"
cinder backup-restore --volume "$big" "$b0" >/dev/null
for ((i = 0; i < 100; i++)); do [[ $(get volumes "$big" "d['status']") == error ]] && break; sleep 0.1; done
assert_eq "$(get volumes "$big" "d['status']")" error "an existing volume after a failed restore"
[[ $(get volumes "$big" "d['volgate:error']") == *"$bad_chunk"* ]] || fail "volume error does not name the chunk"
[[ -e $REPO/chunks/.corrupt/$bad_chunk && ! -e $chunk_path ]] || fail "the damaged chunk was not moved aside"
pass "a flipped byte in one chunk: restore fails naming it (moved aside); a new volume is deleted, an existing one left in error"

# ------------------------------------------------------------------ volgate's own CLI
export VOLGATE_URL=unix:$SOCK VOLGATE_PROJECT=$PROJECT
lone=$(st 'restored[0]')
"$VOLGATE" backup create --volume "$lone" --progress cli >"$T/cli.out" 2>"$T/cli.err" || fail "volgate backup create: $(cat "$T/cli.err")"
grep -q '100%' "$T/cli.err" || fail "no progress bar: $(cat "$T/cli.err")"
cb=$(awk '$1 == "id" {print $2}' "$T/cli.out")
grep -q '^status  *available' "$T/cli.out" || fail "volgate backup create: $(cat "$T/cli.out")"
grep -q "^$cb  *cli  *available .* full " <<<"$("$VOLGATE" backup list)" || fail "volgate backup list"
"$VOLGATE" backup restore --name cli-restored --progress "$cb" >"$T/cli.out" 2>"$T/cli.err" || fail "volgate backup restore: $(cat "$T/cli.err")"
grep -q '100%' "$T/cli.err" || fail "no restore progress bar: $(cat "$T/cli.err")"
cr=$(awk '$1 == "volume_id" {print $2}' "$T/cli.out")
assert_eq "$(digest "$(volume_file "$cr")")" "$(st 'sums[0]')" "volgate backup restore"
"$VOLGATE" backup delete "$cb" >/dev/null || fail "volgate backup delete"
if "$VOLGATE" backup show "$cb" 2>"$T/cli.err"; then fail "deleted backup shown"; fi
grep -q 'could not be found' "$T/cli.err" || fail "volgate backup show of a deleted backup: $(cat "$T/cli.err")"
pass "volgate backup create/list/restore/delete/show: progress bars; the chunk moved aside is stored anew and restores"

# ------------------------------------------------------------------ delete everything
cinder backup-delete "$be" "$bf" >/dev/null
for n in 3 2 1 0; do
    cinder backup-delete "$(st "backups[$n]")" >/dev/null
    gone backups "$(st "backups[$n]")"
done
gone backups "$be"
gone backups "$bf"
assert_eq "$(chunk_files)" 0 "chunks left after every backup is deleted"
assert_eq "$(find "$REPO/manifests" -name '*.json' | wc -l)" 0 "manifests left"
cinder quota-usage "$PROJECT" >"$T/usage"
grep -q '| backups  *| 0 ' "$T/usage" && grep -q '| backup_gigabytes  *| 0 ' "$T/usage" || fail "quota after deletes: $(cat "$T/usage")"
grep -q "| maxTotalBackups  *| 20 " <<<"$(cinder absolute-limits)" || fail "absolute-limits: $(cat "$T/out")"
pass "every backup deleted: no chunk or manifest left, backup quotas back to 0"

stop_volgate "$CTL_PID" TERM 10
