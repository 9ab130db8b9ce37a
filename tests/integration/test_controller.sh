#!/usr/bin/env bash
# The controller for real: `volgate controller` with two file pools (one with a copy rate limit,
# so copies take seconds), driven through the `volgate volume|snapshot|pool|quota` CLI and raw
# HTTP (curl on the unix socket and TCP):
#  - blank volumes, copies from an image file, a snapshot and a volume hold the right data
#    (checksums), extend grows the file, delete removes it, the capabilities filter places
#    typed volumes in the right pool; a snapshot (a copy: no filesystem here shares blocks)
#    allocates only its volume's data, and `snapshot list` shows it;
#  - quotas are enforced and usage stays exact, also with concurrent creates;
#  - bad input gets 400/404/409/413 with a Cinder fault body, the CLI one line and exit 2, a
#    missing token 401; the socket is mode 0600;
#  - an encrypted volume is LUKS2 (cryptsetup luksDump), its wrapped passphrase (unwrapped
#    independently with python3-cryptography) opens it, and `volgate serve` with that passphrase
#    reads back the image it was created from;
#  - a controller killed with SIGKILL in the middle of a long copy comes back with the volume in
#    `error`, its quota released, its partial file removed and the journal empty;
#  - `--state-dir` alone is a working controller; with `--listen` the CLI works over TCP.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_volgate
require_tool curl sqlite3 cryptsetup nbdcopy
T=$TEST_TMP
STATE=$T/state
SOCK=$STATE/controller.sock
PORT=$(free_tcp_port)
export VOLGATE_URL=unix:$SOCK
CTL_PID=

mkdir -p "$T/images"  # where imageRef may take files from
cat >"$T/controller.json" <<JSON
{
  "state_dir": "$STATE",
  "image_dirs": ["$T/images"],
  "tcp_listen": "127.0.0.1:$PORT",
  "quotas": {"volumes": 40, "snapshots": 10, "gigabytes": 100},
  "workers": 4,
  "volume_types": {
    "fast": {"extra_specs": {"speed": "fast"}},
    "slow": {"extra_specs": {"speed": "slow"}},
    "secret": {"encrypted": true, "extra_specs": {"speed": "fast"}}
  },
  "pools": [
    {"name": "fast", "driver": "file", "directory": "$T/fast", "capabilities": {"speed": "fast"}},
    {"name": "slow", "driver": "file", "directory": "$T/slow", "copy_bps_limit": 25165824,
     "capabilities": {"speed": "slow"}}
  ]
}
JSON

vg() { "$VOLGATE" "$@"; }
# json EXPR: evaluates EXPR over the JSON document on stdin (as d)
json() { "$SYSPY" -c 'import json, sys; d = json.load(sys.stdin); r = eval(sys.argv[1]); print(r if not isinstance(r, (dict, list)) else json.dumps(r))' "$1"; }
# The token goes to curl in a header file (-H @FILE), never on its command line.
AUTH=$T/auth.header
auth_header() { (umask 077 && printf 'X-Auth-Token: %s\n' "$(cat "$STATE/token")" >"$AUTH"); }
# api METHOD PATH [BODY]: raw HTTP on the unix socket; prints "STATUS BODY"
api() {
    local args=(-s -o "$T/api.body" -w '%{http_code}' --unix-socket "$SOCK" -X "$1" -H @"$AUTH")
    [[ $# -ge 3 ]] && args+=(-H 'Content-Type: application/json' --data "$3")
    local code
    code=$(curl "${args[@]}" "http://localhost$2")
    echo "$code $(cat "$T/api.body")"
}
# expect_api STATUS FAULT METHOD PATH [BODY]: the request must fail with STATUS and a Cinder
# fault body {"FAULT": {"message": ..., "code": STATUS}}
expect_api() {
    local want=$1 fault=$2 r
    shift 2
    r=$(api "$@")
    [[ ${r%% *} == "$want" ]] || fail "$* -> ${r}, expected $want"
    local msg
    msg=$(echo "${r#* }" | json "d['$fault']['message'] if d['$fault']['code'] == $want else ''") ||
        fail "$* -> no $fault body: $r"
    [[ -n $msg ]] || fail "$* -> empty message: $r"
    echo "$msg"
}
volume_file() { vg volume show --output json "$1" | json "d['volume']['volgate:export_target']" | sed 's/^file://'; }
vol_field() { vg volume show --output json "$1" | json "d['volume']['$2']"; }
# create ARGS...: creates a volume through the CLI, prints its id
create() { vg volume create --output json "$@" | json "d['volume']['id']"; }
quota_in_use() { vg quota show --output json ${2:+--project "$2"} | json "d['quota_set']['$1']['in_use']"; }
quota_reserved() { vg quota show --output json | json "d['quota_set']['$1']['reserved']"; }

start_controller "$T/controller.json" "$SOCK" '^http://'
auth_header
# Refusals at start: one line, exit 2, and the running controller is left alone.
refused_start() {
    local rc=0
    "$VOLGATE" controller "$@" >"$T/start.out" 2>"$T/start.err" || rc=$?
    [[ $rc == 2 && $(wc -l <"$T/start.err") == 1 && ! -s $T/start.out ]] ||
        fail "controller $*: rc $rc, $(cat "$T/start.err")"
}
refused_start --config "$T/controller.json"
grep -q 'another controller is running' "$T/start.err" || fail "second controller: $(cat "$T/start.err")"
echo '{"state_dir": "'"$T"'/other", "pools": [{"name": "x", "driver": "file"}]}' >"$T/bad.json"
refused_start --config "$T/bad.json"
grep -q 'needs a directory' "$T/start.err" || fail "bad config: $(cat "$T/start.err")"
refused_start --config "$T/missing.json"
refused_start
assert_alive "$CTL_PID"
[[ $(stat -c %a "$SOCK") == 600 ]] || fail "the API socket is mode $(stat -c %a "$SOCK"), not 600"
[[ $(stat -c %a "$STATE/master.key") == 600 && $(stat -c %a "$STATE/token") == 600 ]] ||
    fail "key or token file readable by others"
code=$(curl -s -o /dev/null -w '%{http_code}' --unix-socket "$SOCK" http://localhost/v3/default/volumes)
assert_eq "$code" 401 "request without a token"
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'X-Auth-Token: wrong-token-of-some-length' "http://127.0.0.1:$PORT/v3/default/volumes")
assert_eq "$code" 401 "request with a wrong token over TCP"
code=$(curl -s -o /dev/null -w '%{http_code}' -H @"$AUTH" "http://127.0.0.1:$PORT/v3/default/volumes")
assert_eq "$code" 200 "request with the token over TCP"
grep -q '"pools"' <<<"$(vg pool list --url "http://127.0.0.1:$PORT" --token-file "$STATE/token" --output json)" ||
    fail "the CLI over TCP (--url http://...)"
pass "API: socket 0600, 401 without the token, TCP works with it"

grep -qF '["fast", "slow"]' <<<"$(vg pool list --output json | json "sorted(p['capabilities']['pool_name'] for p in d['pools'])")" ||
    fail "pool list: $(vg pool list)"
grep -q '^slow ' <<<"$(vg pool list)" || fail "pool list table: $(vg pool list)"

# ------------------------------------------------------------------ blank, typed, extend, delete
blank=$(create --size 1G --type slow blank)
f=$(volume_file "$blank")
[[ $f == "$T/slow/"* ]] || fail "a 'slow' volume went to $f"
assert_eq "$(stat -c %s "$f")" $((1 << 30)) "blank volume file size"
assert_eq "$(file_blocks "$f")" 0 "a blank volume is sparse"
[[ $(volume_file "$(create --size 1 --type fast fast1)") == "$T/fast/"* ]] || fail "'fast' placement"
vg volume extend --size 3G "$blank" >/dev/null
assert_eq "$(stat -c %s "$f")" $((3 << 30)) "extended file size"
assert_eq "$(vol_field "$blank" size)" 3 "extended size"
assert_eq "$(vol_field "$blank" status)" available "status after extend"
assert_eq "$(quota_in_use gigabytes)" 4 "gigabytes in use"
vg volume delete "$blank" >/dev/null
[[ ! -e $f ]] || fail "delete left the file"
expect_api 404 itemNotFound GET "/v3/default/volumes/$blank" >/dev/null
assert_eq "$(quota_in_use gigabytes)" 1 "gigabytes in use after delete"
pass "blank volume: sparse, placed by type, extended, deleted, quota follows"

# ------------------------------------------------------------------ copies with checksums
make_random_file "$T/images/image.raw" 48
img_sum=$(sha256sum <"$T/images/image.raw")
first_sum() { head -c $((48 << 20)) "$1" | sha256sum; }
from_image=$(vg volume create --output json --size 1G --type slow --image "$T/images/image.raw" --progress from-image 2>"$T/progress" |
    json "d['volume']['id']")
grep -q '100%' "$T/progress" || fail "no progress bar on a copy: $(cat "$T/progress")"
fi=$(volume_file "$from_image")
assert_eq "$(first_sum "$fi")" "$img_sum" "volume from image: checksum"
cmp -s -n $(((1 << 30) - (48 << 20))) <(tail -c +$(((48 << 20) + 1)) "$fi") /dev/zero ||
    fail "volume from image: not zero past the image"
# 8 MiB of zeroes the volume holds allocated: a snapshot need not copy them.
dd if=/dev/zero of="$fi" bs=1M count=8 seek=256 conv=notrunc status=none
snap=$(vg snapshot create --output json --volume "$from_image" snap1 | json "d['snapshot']['id']")
assert_eq "$(vg snapshot show --output json "$snap" | json "d['snapshot']['status']")" available "snapshot status"
# No filesystem here shares blocks (tmpfs and ext4 refuse FICLONE), so the snapshot is the
# fallback copy: the same bytes, with only the 48 MiB of data allocated.
sf=$T/slow/snapshot-$snap.img
cmp -s "$fi" "$sf" || fail "the snapshot file differs from its volume"
vol_mib=$(($(file_blocks "$fi") / 2048)) snap_mib=$(($(file_blocks "$sf") / 2048))
((vol_mib >= 56 && snap_mib <= 48)) ||
    fail "a snapshot of a volume with 48 MiB of data and 8 MiB of allocated zeroes ($vol_mib MiB) allocates $snap_mib MiB"
# snapshot list: the table and JSON name it with its volume; another project sees none.
row=$(vg snapshot list | awk -v id="$snap" '$1 == id {print $2, $3, $4, $5}')
assert_eq "$row" "snap1 available 1 $from_image" "the snapshot's row in 'volgate snapshot list'"
vg snapshot list | head -n 1 | grep -q '^ID  *NAME  *STATUS  *SIZE(GiB)  *VOLUME' || fail "snapshot list header: $(vg snapshot list | head -n 1)"
assert_eq "$(vg snapshot list --output json | json "[(s['id'], s['name'], s['volume_id']) for s in d['snapshots']] == [('$snap', 'snap1', '$from_image')]")" \
    True "snapshot list --output json"
assert_eq "$(vg snapshot list --project q --output json | json "len(d['snapshots'])")" 0 "snapshots another project sees"
# The guest writes to the volume after the snapshot.
dd if=/dev/urandom of="$fi" bs=1M count=4 seek=8 conv=notrunc status=none
vol_sum=$(first_sum "$fi")
from_snap=$(create --snapshot "$snap" from-snap)
assert_eq "$(first_sum "$(volume_file "$from_snap")")" "$img_sum" "volume from snapshot: checksum of the snapshot time"
assert_eq "$(vol_field "$from_snap" size)" 1 "volume from snapshot takes the snapshot's size"
from_vol=$(create --source-volume "$from_image" --size 2G from-volume)
assert_eq "$(first_sum "$(volume_file "$from_vol")")" "$vol_sum" "volume from volume: checksum"
assert_eq "$(stat -c %s "$(volume_file "$from_vol")")" $((2 << 30)) "clone grown to its size"
msg=$(expect_api 400 badRequest DELETE "/v3/default/volumes/$from_image")
[[ $msg == *"dependent snapshot"* ]] || fail "delete with a snapshot: $msg"
ls "$T/slow" | grep -q snapshot || fail "no snapshot file in the pool: $(ls "$T/slow")"
vg snapshot delete "$snap" >/dev/null
[[ -z $(ls "$T/slow" | grep snapshot || true) ]] || fail "snapshot file left"
assert_eq "$(vg snapshot list --output json | json "len(d['snapshots'])")" 0 "snapshots listed after the delete"
vg volume delete "$from_snap" >/dev/null
vg volume delete "$from_vol" >/dev/null
pass "copies: from image, snapshot and volume hold the right data; the snapshot copy skips holes and zeroes ($snap_mib of $vol_mib MiB); snapshot list shows it; delete cleans up"

# ------------------------------------------------------------------ invalid input
msg=$(expect_api 400 badRequest POST /v3/default/volumes '{"volume": {"size": 1, "colour": "red"}}')
[[ $msg == *colour* ]] || fail "unknown field message: $msg"
for body in '{"volume": {"size": "abc"}}' '{"volume": {"size": -1}}' '{"volume": {"size": 0}}' \
    '{"volume": {"size": 1.5}}' '{"volume": {}}' '{"volume": {"size": 1' '[1]' \
    '{"volume": {"size": 1}, "extra": 1}' '{"volume": {"size": 1, "imageRef": "relative.img"}}'; do
    expect_api 400 badRequest POST /v3/default/volumes "$body" >/dev/null
done
expect_api 404 itemNotFound POST /v3/default/volumes '{"volume": {"size": 1, "volume_type": "gold"}}' >/dev/null
expect_api 404 itemNotFound POST /v3/default/volumes '{"volume": {"snapshot_id": "nope"}}' >/dev/null
expect_api 400 badRequest POST /v3/default/volumes '{"volume": {"size": 1, "availability_zone": "mars"}}' >/dev/null
# The controller's own secrets are not images: the API must not copy them into a volume.
for secret in "$STATE/master.key" "$STATE/token" "$STATE/controller.db"; do
    msg=$(expect_api 400 badRequest POST /v3/default/volumes '{"volume": {"size": 1, "imageRef": "'"$secret"'"}}')
    [[ $msg == *"not a readable regular file in the controller's image directories"* ]] || fail "imageRef $secret: $msg"
done
fast1=$(vg volume list --output json | json "[v['id'] for v in d['volumes'] if v['name'] == 'fast1'][0]")
msg=$(expect_api 400 badRequest POST "/v3/default/volumes/$fast1/action" '{"os-extend": {"new_size": 1}}')
[[ $msg == *"greater than current size"* ]] || fail "shrink message: $msg"
expect_api 400 badRequest POST "/v3/default/volumes/$fast1/action" '{"os-migrate_volume": {"host": "elsewhere"}}' >/dev/null
expect_api 404 itemNotFound DELETE /v3/default/volumes/00000000-0000-4000-8000-000000000000 >/dev/null
# The token here is the operator's, an admin: another project's URL reaches the volume, as Cinder's
# admin does (members get 404: test_roles.sh).
assert_eq "$(api GET "/v3/other/volumes/$fast1" | cut -d' ' -f1)" 200 "an admin's show through another project's URL"
expect_api 405 HTTPMethodNotAllowed PUT /v3/default/volumes '{}' >/dev/null
expect_api 404 itemNotFound GET /v3/default/groups >/dev/null
# Raw bytes that are not UTF-8 in the path (curl would percent-encode them) are echoed in the
# fault as U+FFFD; they once made the controller abort.
raw=$(python3 - "$SOCK" "$STATE/token" <<'PY'
import socket, sys
token = open(sys.argv[2]).read().strip().encode()
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"GET /v3/p\xff/volumes HTTP/1.1\r\nHost: x\r\nX-Auth-Token: " + token +
          b"\r\nConnection: close\r\n\r\n")
reply = b""
while chunk := s.recv(65536):
    reply += chunk
print(reply.decode("utf-8", "strict"))
PY
) || fail "raw non-UTF-8 path: no readable reply"
grep -q '^HTTP/1.1 400' <<<"$raw" && grep -qF "Project 'p"$'\xef\xbf\xbd'"'" <<<"$raw" ||
    fail "raw non-UTF-8 path: $raw"
assert_alive "$CTL_PID"
# The CLI: one line on stderr, exit 2.
cli_refuses() {
    local rc=0
    vg "$@" >"$T/cli.out" 2>"$T/cli.err" || rc=$?
    [[ $rc == 2 && $(wc -l <"$T/cli.err") == 1 && ! -s $T/cli.out ]] ||
        fail "volgate $*: rc $rc, stderr $(cat "$T/cli.err"), stdout $(cat "$T/cli.out")"
}
cli_refuses volume create --size 1.5G half
cli_refuses volume create --size 0 zero
cli_refuses volume create --size 1G --type gold gold
cli_refuses volume create noname
cli_refuses volume show 00000000-0000-4000-8000-000000000000
cli_refuses volume extend --size 1G "$fast1"
cli_refuses volume create --size 1G --url http://127.0.0.1:1 nothing-listens
cli_refuses volume list --url ftp://x
VOLGATE_URL= cli_refuses volume list
cli_refuses volume list --token-file "$T/controller.json"
grep -q 'does not hold a token' "$T/cli.err" || fail "not a token: $(cat "$T/cli.err")"
echo wrong-token-of-some-length >"$T/wrong.token"
cli_refuses volume list --token-file "$T/wrong.token"
grep -q 'X-Auth-Token' "$T/cli.err" || fail "wrong token: $(cat "$T/cli.err")"
pass "invalid input: 400/404/405 with Cinder fault bodies; CLI errors are one line, exit 2"

# ------------------------------------------------------------------ quotas, concurrency
vg quota set --project q --volumes 2 --gigabytes 3 >/dev/null
vg volume create --project q --size 1G q1 >/dev/null
vg volume create --project q --size 1G q2 >/dev/null
cli_refuses volume create --project q --size 1G q3
grep -q 'exceeds the quota' "$T/cli.err" || fail "quota message: $(cat "$T/cli.err")"
expect_api 413 overLimit POST /v3/q/volumes '{"volume": {"size": 1}}' >/dev/null
assert_eq "$(quota_in_use volumes q)" 2 "volumes in use in project q"
assert_eq "$(vg volume list --project q --output json | json 'len(d["volumes"])')" 2 "volumes of project q"
q1=$(vg volume list --project q --output json | json "d['volumes'][0]['id']")
cli_refuses volume extend --project q --size 3G "$q1"
assert_eq "$(vg volume show --project q --output json "$q1" | json "d['volume']['status']")" available "status after a refused extend"
pass "quota exhaustion: refused with 413, usage exact"

vg quota set --project big --gigabytes -1 >/dev/null
rc=0
vg volume create --project big --size 100000 huge >"$T/huge.out" 2>"$T/huge.err" || rc=$?
assert_eq "$rc" 2 "exit code of a create no pool can take"
grep -q 'No valid pool was found' "$T/huge.err" || fail "no valid pool: $(cat "$T/huge.err")"
huge=$(vg volume list --project big --output json | json "d['volumes'][0]")
[[ $(echo "$huge" | json "d['status']") == error ]] || fail "the unplaceable volume is not in error: $huge"
assert_eq "$(quota_in_use gigabytes big)" 0 "gigabytes held by a volume in error"
vg volume delete --project big "$(echo "$huge" | json "d['id']")" >/dev/null
pass "no fitting pool: the volume ends in error saying why, holding no quota"

before=$(quota_in_use volumes)
pids=()
for i in $(seq 1 8); do
    vg volume create --output json --size 1G --type fast "c$i" >"$T/c$i.json" 2>"$T/c$i.err" &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || fail "a concurrent create failed: $(cat "$T"/c*.err)"; done
ids=$(for i in $(seq 1 8); do json "d['volume']['id']" <"$T/c$i.json"; done | sort -u | wc -l)
assert_eq "$ids" 8 "distinct volumes from 8 concurrent creates"
assert_eq "$(quota_in_use volumes)" $((before + 8)) "volumes in use after concurrent creates"
assert_eq "$(quota_reserved volumes)" 0 "nothing left reserved"
for i in $(seq 1 8); do
    f=$(volume_file "$(json "d['volume']['id']" <"$T/c$i.json")")
    [[ $f == "$T/fast/"* && -f $f ]] || fail "c$i: no file in the fast pool ($f)"
done
pids=()
for i in $(seq 1 8); do
    vg volume delete --no-wait "$(json "d['volume']['id']" <"$T/c$i.json")" >/dev/null &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || fail "a concurrent delete was refused"; done
for ((i = 0; i < 100; i++)); do
    [[ $(quota_in_use volumes) == "$before" ]] && break
    sleep 0.1
done
assert_eq "$(quota_in_use volumes)" "$before" "volumes in use after concurrent deletes"
pass "8 concurrent creates and deletes: all succeed, quota exact"

# ------------------------------------------------------------------ encryption
enc=$(create --size 1G --encrypted enc-blank)
assert_eq "$(vol_field "$enc" encrypted)" True "encrypted flag"
ef=$(volume_file "$enc")
grep -q '^Version:[[:space:]]*2' <<<"$(cryptsetup luksDump "$ef")" || fail "no LUKS2 header on $ef"
unwrap_key "$STATE" "$enc" "$T/enc.key"
cryptsetup open --test-passphrase --key-file "$T/enc.key" "$ef" || fail "the unwrapped passphrase does not open $ef"
if grep -qF "$(cat "$T/enc.key")" <<<"$(sqlite3 "$STATE/controller.db" .dump)"; then fail "passphrase in the database"; fi
refute_grep "passphrase in the log" -F -e "$(cat "$T/enc.key")" "$T"/controller.*.err

enc_img=$(create --size 1G --type secret --image "$T/images/image.raw" enc-image)
ei=$(volume_file "$enc_img")
grep -q '^Version:[[:space:]]*2' <<<"$(cryptsetup luksDump "$ei")" || fail "no LUKS2 header on the encrypted image volume"
unwrap_key "$STATE" "$enc_img" "$T/enc-img.key"
start_volgate --unix "$T/nbd.sock" --export "e=file:$ei,luks-key-file=$T/enc-img.key"
nbdcopy "$(unix_uri e "$T/nbd.sock")" "$T/enc-back.raw"
stop_volgate
assert_eq "$(first_sum "$T/enc-back.raw")" "$img_sum" "encrypted volume from image, read through volgate serve"
rm -f "$T/enc-back.raw"
snap=$(vg snapshot create --output json --volume "$enc_img" esnap | json "d['snapshot']['id']")
enc_clone=$(create --snapshot "$snap" enc-from-snap)
assert_eq "$(vol_field "$enc_clone" encrypted)" True "a copy of an encrypted snapshot is encrypted"
unwrap_key "$STATE" "$enc_clone" "$T/enc-clone.key"
cmp -s "$T/enc-img.key" "$T/enc-clone.key" || fail "the clone's passphrase differs from its source's"
msg=$(expect_api 400 badRequest POST /v3/default/volumes "{\"volume\": {\"snapshot_id\": \"$snap\", \"encrypted\": false}}")
[[ $msg == *encrypted* ]] || fail "plain copy of encrypted data: $msg"
pass "encryption: LUKS2 header, passphrase only wrapped (unwrapped independently, opens it), image readable through volgate serve, clones keep the key"

# ------------------------------------------------------------------ SIGKILL mid-copy
make_random_file "$T/images/big.raw" 160
in_use_before=$(quota_in_use gigabytes)
slow_files_before=$(ls "$T/slow" | sort)
long=$(vg volume create --output json --no-wait --size 1G --type slow --image "$T/images/big.raw" long | json "d['volume']['id']")
for ((i = 0; i < 100; i++)); do
    p=$(vg volume show --output json "$long" | json "d['volume'].get('volgate:progress', 0)")
    ((p > 0)) && break
    sleep 0.05
done
((p > 0 && p < 100)) || fail "the long copy did not report progress between 0 and 100 (got $p)"
expect_api 409 conflictingRequest DELETE "/v3/default/volumes/$long" >/dev/null
kill -KILL "$CTL_PID"
wait "$CTL_PID" 2>/dev/null || true
_forget_pid "$CTL_PID"
[[ -e $T/slow/volume-$long.img ]] || fail "the copy's partial file should exist after SIGKILL"
[[ $(sqlite3 "$STATE/controller.db" "SELECT count(*) FROM flow_journal") -ge 1 ]] || fail "no journal entry for the interrupted create"
start_controller "$T/controller.json" "$SOCK" '^http://'
assert_eq "$(vol_field "$long" status)" error "status of the interrupted create after restart"
grep -q stopped <<<"$(vol_field "$long" volgate:error)" || fail "error message: $(vol_field "$long" volgate:error)"
assert_eq "$(quota_in_use gigabytes)" "$in_use_before" "gigabytes in use after recovery"
assert_eq "$(quota_reserved gigabytes)" 0 "gigabytes reserved after recovery"
assert_eq "$(ls "$T/slow" | sort)" "$slow_files_before" "files in the slow pool after recovery"
assert_eq "$(sqlite3 "$STATE/controller.db" "SELECT count(*) FROM flow_journal")" 0 "journal after recovery"
vg volume delete "$long" >/dev/null
assert_eq "$(vol_field "$from_image" status)" available "other volumes are untouched"
pass "SIGKILL during a long copy: restart reverts it (error, quota released, partial file gone)"

# ------------------------------------------------------------------ SIGTERM mid-copy, then a clean stop
long=$(vg volume create --output json --no-wait --size 1G --type slow --image "$T/images/big.raw" long2 | json "d['volume']['id']")
sleep 0.5
stop_volgate "$CTL_PID" TERM 15
start_controller "$T/controller.json" "$SOCK" '^http://'
assert_eq "$(vol_field "$long" status)" error "status of a copy cancelled by SIGTERM"
[[ ! -e $T/slow/volume-$long.img ]] || fail "SIGTERM left the partial file"
stop_volgate "$CTL_PID" TERM 10
[[ ! -e $SOCK ]] || fail "the socket is left after a clean stop"
pass "SIGTERM cancels a copy cleanly and exits 0"

# ------------------------------------------------------------------ the embedded default
# `volgate controller --state-dir DIR` with no config: SQLite and one file pool in DIR, the API
# on DIR/controller.sock (the CLI finds the token beside it); the "encrypted" type is LUKS2.
# --listen adds the API on TCP, where the CLI needs --url and --token-file and a request
# without the token is 401.
EMB=$T/embedded
EMB_PORT=$(free_tcp_port)
EMB_URL=http://127.0.0.1:$EMB_PORT
"$VOLGATE" controller --state-dir "$EMB" --listen "127.0.0.1:$EMB_PORT" >"$T/controller.embedded.out" 2>"$T/controller.embedded.err" &
CTL_PID=$!
VG_PIDS+=("$CTL_PID")
watch_log "$T/controller.embedded.err"
for ((i = 0; i < 200; i++)); do
    grep -q '^http:' "$T/controller.embedded.out" 2>/dev/null && break
    sleep 0.05
done
grep -q "^unix:$EMB/controller.sock" "$T/controller.embedded.out" || fail "embedded controller: $(cat "$T/controller.embedded.err")"
grep -qx "$EMB_URL" "$T/controller.embedded.out" || fail "embedded controller with --listen: $(cat "$T/controller.embedded.out" "$T/controller.embedded.err")"
emb=$(VOLGATE_URL=unix:$EMB/controller.sock create --size 1G --type encrypted embedded)
assert_eq "$(VOLGATE_URL=unix:$EMB/controller.sock vol_field "$emb" status)" available "embedded default: status"
grep -q '^Version:[[:space:]]*2' <<<"$(cryptsetup luksDump "$EMB/pool/volume-$emb.img")" || fail "embedded default: no LUKS2 header"
grep -q "embedded" <<<"$(VOLGATE_URL=unix:$EMB/controller.sock vg volume list)" || fail "volume list table: $(VOLGATE_URL=unix:$EMB/controller.sock vg volume list)"
tcp=$(vg volume create --output json --url "$EMB_URL" --token-file "$EMB/token" --size 1G over-tcp | json "d['volume']['id']")
[[ -f $EMB/pool/volume-$tcp.img ]] || fail "a volume created through --listen has no file"
vg volume list --url "$EMB_URL" --token-file "$EMB/token" | awk -v id="$tcp" '$1 == id' | grep -q " over-tcp  *available " ||
    fail "volume list over TCP: $(vg volume list --url "$EMB_URL" --token-file "$EMB/token")"
code=$(curl -s -o "$T/api.body" -w '%{http_code}' "$EMB_URL/v3/default/volumes")
[[ $code == 401 ]] && grep -q '"unauthorized"' "$T/api.body" || fail "GET over TCP without a token: $code $(cat "$T/api.body")"
assert_eq "$(curl -s -o /dev/null -w '%{http_code}' "$EMB_URL/")" 300 "the versions document over TCP, which needs no token"
cli_refuses volume list --url "$EMB_URL"
grep -q 'no API token' "$T/cli.err" || fail "the CLI over TCP without a token: $(cat "$T/cli.err")"
stop_volgate "$CTL_PID" TERM 10
pass "embedded default: --state-dir alone serves the API, a file pool and encrypted volumes; --listen serves the CLI (--url, --token-file) over TCP, 401 without the token"
# lib.sh's EXIT trap checks every controller's log for sanitizer reports, the SIGKILLed one's too.
