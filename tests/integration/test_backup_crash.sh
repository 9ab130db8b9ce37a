#!/usr/bin/env bash
# SIGKILL of `volgate controller` while a backup or a restore is copying, and after a backup's
# copy but before its last step; each time a new controller recovers from its flow journal:
#  - a backup cut short ends in error (its volume available again, not backing-up); every chunk
#    file in the repository is whole (its header checksum matches its bytes), nothing is left in
#    the temporary folder, and deleting the failed backup removes the chunks it had written;
#  - a restore cut short leaves the backup available; a new target volume is gone (row, file and
#    quota), an existing one is in error;
#  - a backup killed after its copy is finished by the restart (available);
#  - the backup made before all this still restores exactly;
#  - a restore over a volume a clone is being copied from is refused (409), the clone whole.
# The pool's copy_bps_limit slows the copies down so that the kill lands in the middle of one.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_volgate
require_tool curl
T=$TEST_TMP
STATE=$T/state
SOCK=$STATE/controller.sock
PORT=$(free_tcp_port)
URL=http://127.0.0.1:$PORT/v3/demo
POOL=$T/pool
REPO=$T/repo
TESTS_DIR=$(cd "$(dirname "$0")" && pwd)
CHUNK=$((4 << 20))

cat >"$T/controller.json" <<JSON
{
  "state_dir": "$STATE",
  "tcp_listen": "127.0.0.1:$PORT",
  "libvirt_uri": "none",
  "backups": {"directory": "$REPO"},
  "pools": [{"name": "slow", "driver": "file", "directory": "$POOL", "copy_bps_limit": 33554432}]
}
JSON
start() { start_controller "$T/controller.json" "$SOCK" '^http://' "$@"; }
start
AUTH=$T/auth.header
(umask 077 && printf 'X-Auth-Token: %s\n' "$(cat "$STATE/token")" >"$AUTH")

# api METHOD PATH [BODY]: prints the body; fails unless the status is 2xx
api() {
    local args=(-s -o "$T/body" -w '%{http_code}' -X "$1" -H @"$AUTH" -H 'OpenStack-API-Version: volume 3.53')
    [[ $# -ge 3 ]] && args+=(-H 'Content-Type: application/json' --data "$3")
    local code
    code=$(curl "${args[@]}" "$URL$2")
    [[ $code == 2* ]] || fail "$1 $2 -> $code $(cat "$T/body")"
    cat "$T/body"
}
# get PATH EXPR: EXPR over the object GET PATH answers (its one top-level value, as d)
get() { api GET "$1" | "$SYSPY" -c 'import json, sys; d = json.load(sys.stdin); d = next(iter(d.values())); print(eval(sys.argv[1]))' "$2"; }
status_code() { curl -s -o /dev/null -w '%{http_code}' -H @"$AUTH" "$URL$1"; }
wait_for() {  # wait_for PATH EXPR VALUE
    local i got=
    for ((i = 0; i < 200; i++)); do
        got=$(get "$1" "$2")
        [[ $got == "$3" ]] && return 0
        sleep 0.05
    done
    fail "$1: $2 is '$got', expected '$3'"
}
# kill_mid_copy BACKUP: SIGKILLs the controller once the backup's copy (a backup's or a
# restore's) is under way and not done, then starts a new one
kill_mid_copy() {
    local i p=
    for ((i = 0; i < 400; i++)); do
        p=$(get "/backups/$1" "d.get('volgate:progress', '')")
        [[ -n $p && $p -ge 10 && $p -le 80 ]] && break
        sleep 0.02
    done
    [[ -n $p && $p -ge 10 && $p -le 80 ]] || fail "backup $1: never caught mid-copy (progress '$p')"
    kill -KILL "$CTL_PID"
    wait "$CTL_PID" 2>/dev/null || true
    info "killed at ${p}% of the copy"
    start
}
new_volume() {
    local id
    id=$(api POST /volumes "{\"volume\": {\"size\": $1, \"name\": \"$2\"}}" | "$SYSPY" -c 'import json, sys; print(json.load(sys.stdin)["volume"]["id"])')
    wait_for "/volumes/$id" "d['status']" available
    echo "$id"
}
new_backup() { api POST /backups "{\"backup\": {\"volume_id\": \"$1\"}}" | "$SYSPY" -c 'import json, sys; print(json.load(sys.stdin)["backup"]["id"])'; }
restore() { api POST "/backups/$1/restore" "{\"restore\": $2}" | "$SYSPY" -c 'import json, sys; print(json.load(sys.stdin)["restore"]["volume_id"])'; }
write_random() { "$SYSPY" "$TESTS_DIR/backup_lib.py" write "$@"; }
digest() { "$SYSPY" "$TESTS_DIR/backup_lib.py" digest "$1"; }
chunk_names() { find "$REPO/chunks" -path "$REPO/chunks/.*" -prune -o -type f -printf '%f\n' | sort; }
# Every chunk file is whole: magic, lengths and the SHA-256 of its stored bytes in its header.
check_chunks() {
    "$SYSPY" - "$REPO/chunks" <<'PY' || fail "a damaged chunk file in the repository"
import hashlib, os, sys
root = sys.argv[1]
for sub in os.listdir(root):
    if sub == ".tmp":
        continue
    for name in os.listdir(os.path.join(root, sub)):
        b = open(os.path.join(root, sub, name), "rb").read()
        assert b[:8] == b"VGCHUNK1", name
        stored = int.from_bytes(b[16:24], "little")
        assert len(b) == 56 + stored, (name, len(b), stored)
        assert hashlib.sha256(b[56:]).digest() == b[24:56], name
PY
    [[ -z $(ls -A "$REPO/chunks/.tmp") ]] || fail "temporary chunk files left: $(ls "$REPO/chunks/.tmp")"
}

# 16 chunks of data spread over the volume, so that the progress (by offset) moves evenly.
scatter() { for ((i = 0; i < 16; i++)); do write_random "$POOL/volume-$1.img" $((i * 16 * CHUNK)) $CHUNK $((i + $2)); done; }
vol=$(new_volume 1 source)
scatter "$vol" 100
good_sum=$(digest "$POOL/volume-$vol.img")
good=$(new_backup "$vol")
wait_for "/backups/$good" "d['status']" available
good_chunks=$(chunk_names)
assert_eq "$(wc -l <<<"$good_chunks")" 16 "chunks of the first backup"

# ------------------------------------------------------------------ kill during a backup
scatter "$vol" 200  # all new data
cut=$(new_backup "$vol")
kill_mid_copy "$cut"
wait_for "/backups/$cut" "d['status']" error
[[ $(get "/backups/$cut" "d['fail_reason']") == *"controller stopped"* ]] || fail "fail_reason: $(cat "$T/body")"
assert_eq "$(get "/volumes/$vol" "d['status']")" available "volume after a backup cut short"
check_chunks
assert_eq "$(chunk_names)" "$good_chunks" "the cut backup's chunks are swept by its revert"
api DELETE "/backups/$cut" >/dev/null
for ((i = 0; i < 100; i++)); do [[ $(status_code "/backups/$cut") == 404 ]] && break; sleep 0.05; done
assert_eq "$(status_code "/backups/$cut")" 404 "the failed backup deleted"
assert_eq "$(get /os-quota-sets/demo?usage=true "d['backups']['in_use']")" 1 "backups quota after the failed one"
pass "SIGKILL during a backup's copy: backup error, volume available, every chunk whole, nothing half-written kept"

# ------------------------------------------------------------------ kill during restores
quota_before=$(get /os-quota-sets/demo?usage=true "d['volumes']['in_use']")
target=$(restore "$good" '{"name": "cut-new"}')
kill_mid_copy "$good"
wait_for "/backups/$good" "d['status']" available
assert_eq "$(status_code "/volumes/$target")" 404 "a new volume whose restore was cut short"
[[ -e $POOL/volume-$target.img ]] && fail "its file is left"
assert_eq "$(get /os-quota-sets/demo?usage=true "d['volumes']['in_use']")" "$quota_before" "volumes quota"

existing=$(new_volume 1 existing)
restore "$good" "{\"volume_id\": \"$existing\"}" >/dev/null
kill_mid_copy "$good"
wait_for "/backups/$good" "d['status']" available
assert_eq "$(get "/volumes/$existing" "d['status']")" error "an existing volume whose restore was cut short"
pass "SIGKILL during restores: backup available; a new target deleted (file, row, quota), an existing one in error"

# ------------------------------------------------------------------ killed after the copy
stop_volgate "$CTL_PID" TERM 10
VOLGATE_TEST_KILL_BEFORE=create_backup:finish start
late=$(new_backup "$vol")
for ((i = 0; i < 200; i++)); do _proc_running "$CTL_PID" || break; sleep 0.05; done
_proc_running "$CTL_PID" && fail "the controller was not killed before the backup's finish"
wait "$CTL_PID" 2>/dev/null || true
start
wait_for "/backups/$late" "d['status']" available
assert_eq "$(get "/volumes/$vol" "d['status']")" available "volume after a finished backup"
pass "SIGKILL after a backup's copy, before its finish: the restart finishes it"

r=$(restore "$good" '{}')
wait_for "/volumes/$r" "d['status']" available
assert_eq "$(digest "$POOL/volume-$r.img")" "$good_sum" "the first backup restored after all the kills"
check_chunks
pass "the backup made before the kills restores exactly"

# A restore over a volume that a clone is being copied from would write under the copy.
clone=$(api POST /volumes "{\"volume\": {\"source_volid\": \"$vol\", \"name\": \"clone\"}}" |
    "$SYSPY" -c 'import json, sys; print(json.load(sys.stdin)["volume"]["id"])')
code=$(curl -s -o "$T/body" -w '%{http_code}' -X POST -H @"$AUTH" -H 'OpenStack-API-Version: volume 3.53' \
    -H 'Content-Type: application/json' --data '{"restore": {"volume_id": "'"$vol"'"}}' "$URL/backups/$good/restore")
assert_eq "$code" 409 "a restore over a volume being cloned ($(cat "$T/body"))"
wait_for "/volumes/$clone" "d['status']" available
assert_eq "$(digest "$POOL/volume-$clone.img")" "$(digest "$POOL/volume-$vol.img")" "the clone"
pass "a restore over a volume being cloned: 409, the clone whole"
stop_volgate "$CTL_PID" TERM 10
