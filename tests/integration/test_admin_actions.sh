#!/usr/bin/env bash
# An admin's repairs with Debian's python3-cinderclient against `volgate controller`:
#  - `cinder reset-state` sets a volume's status (any case), clears its error message, and with
#    --attach-status detached deletes its attachments with their exports (nbdinfo proves the
#    export was served before and is gone after); --reset-migration-status is accepted;
#    'attached', an unknown state and an empty body are refused with a clear message;
#  - `cinder force-delete` deletes a volume whose state the plain delete refuses (and its
#    quota is released), but not one with snapshots; DELETE ?force=true does the same;
#  - `cinder snapshot-reset-state` and `cinder snapshot-delete --force` on a snapshot the plain
#    delete refuses;
#  - every repair is refused (409, naming the operation) while a flow works on the resource
#    (an extend stalled by the test hook), and the extend then finishes unharmed;
#  - a member's token gets 403 for each;
#  - volgate's own CLI: volume|snapshot reset-state, delete --force.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_volgate
require_tool curl cinder nbdinfo
T=$TEST_TMP
STATE=$T/state
SOCK=$STATE/controller.sock
PORT=$(free_tcp_port)
PROJECT=demo
URL=http://127.0.0.1:$PORT
VERSION=3.53

head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$T/member.token"
chmod 600 "$T/member.token"
mkdir -p "$STATE"
cat >"$T/controller.json" <<JSON
{
  "state_dir": "$STATE",
  "tcp_listen": "127.0.0.1:$PORT",
  "quotas": {"volumes": 10, "snapshots": 10, "gigabytes": 100},
  "pools": [{"name": "files", "driver": "file", "directory": "$T/pool"}],
  "tokens": [{"project": "$PROJECT", "role": "member", "token_file": "$T/member.token"}]
}
JSON
# Extends of this controller stall 4 s before they touch the pool: an operation to be busy with.
VOLGATE_TEST_STALL_BEFORE=extend_volume:extend_on_pool:4000 \
    start_controller "$T/controller.json" "$SOCK" '^http://' --gateway
for ((i = 0; i < 100; i++)); do [[ -S $STATE/run/nbd.sock ]] && break; sleep 0.05; done

unset OS_AUTH_TYPE OS_AUTH_PLUGIN OS_AUTH_SYSTEM OS_AUTH_URL OS_USERNAME OS_PASSWORD
OS_TOKEN=$(cat "$STATE/token")  # the operator's token: an admin
export OS_TOKEN CINDER_ENDPOINT=$URL/v3/$PROJECT OS_PROJECT_ID=$PROJECT OS_VOLUME_API_VERSION=$VERSION
cinder() { command cinder --os-auth-type admin_token "$@"; }
# run_cinder ARGS...: must succeed; output in $T/out
run_cinder() { cinder "$@" >"$T/out" 2>"$T/err" || fail "cinder $*: $(cat "$T/out" "$T/err")"; cat "$T/out"; }
# refused TEXT ARGS...: cinder must fail, saying TEXT
refused() {
    local text=$1 rc=0
    shift
    cinder "$@" >"$T/out" 2>"$T/err" || rc=$?
    [[ $rc != 0 ]] || fail "cinder $* succeeded: $(cat "$T/out")"
    grep -qF -- "$text" "$T/out" "$T/err" || fail "cinder $*: expected '$text', got: $(cat "$T/out" "$T/err")"
}
show() { run_cinder show "$1" | field "$2"; }
snap_show() { run_cinder snapshot-show "$1" | field "$2"; }
wait_status() {  # wait_status show|snap_show ID STATUS
    local i got=
    for ((i = 0; i < 100; i++)); do
        got=$($1 "$2" status)
        [[ $got == "$3" ]] && return 0
        sleep 0.1
    done
    fail "$2: status '$got', expected '$3'"
}
gone() {  # gone volume|snapshot ID
    local i cmd=show
    [[ $1 == snapshot ]] && cmd=snapshot-show
    for ((i = 0; i < 100; i++)); do
        cinder $cmd "$2" >/dev/null 2>&1 || return 0
        sleep 0.1
    done
    fail "$1 $2 was not deleted"
}
AUTH=$T/auth.header
(umask 077 && printf 'X-Auth-Token: %s\n' "$OS_TOKEN" >"$AUTH")
MEMBER_AUTH=$T/member.header
(umask 077 && printf 'X-Auth-Token: %s\n' "$(cat "$T/member.token")" >"$MEMBER_AUTH")
api() {  # api AUTH_FILE METHOD PATH [BODY]: prints the HTTP code, body in $T/body
    curl -s -o "$T/body" -w '%{http_code}' -X "$2" -H @"$1" -H 'Content-Type: application/json' \
        -H "OpenStack-API-Version: volume $VERSION" ${4:+--data "$4"} "$URL/v3/$PROJECT$3"
}

# ------------------------------------------------------------------ reset-state of a volume
vol=$(run_cinder create --name stuck 1 | field id)
wait_status show "$vol" available
run_cinder reset-state --state ERROR "$vol" >/dev/null
assert_eq "$(show "$vol" status)" error "status after reset-state --state ERROR"
run_cinder reset-state --state available --reset-migration-status "$vol" >/dev/null
assert_eq "$(show "$vol" status)" available "status after reset-state --state available"
refused "derives a volume's attach status from its attachments" reset-state --attach-status attached "$vol"
refused "'frozen' is not a volume status volgate knows" reset-state --state frozen "$vol"
code=$(api "$AUTH" POST "/volumes/$vol/action" '{"os-reset_status": {}}')
assert_eq "$code" 400 "os-reset_status with nothing to reset"
grep -q "Give 'status', 'attach_status' or 'migration_status'" "$T/body" || fail "empty reset: $(cat "$T/body")"
code=$(api "$AUTH" POST "/volumes/$vol/action" '{"os-reset_status": {"status": "available", "bogus": 1}}')
assert_eq "$code" 400 "os-reset_status with an unknown field"
code=$(api "$AUTH" POST "/volumes/$vol/action" '{"os-reset_status": {"migration_status": "migrating"}}')
assert_eq "$code" 400 "a migration status other than none"
pass "cinder reset-state: status set in any case, migration status none accepted, attached/unknown/empty refused"

# --attach-status detached: the attachment and its export go.
server=5e1f7a3c-8d2b-4c6e-9a10-3b7f2d4e6c81
run_cinder attachment-create --connect True --host "$(hostname)" --platform x86_64 --ostype linux \
    "$vol" "$server" >"$T/att"
att=$(field id <"$T/att")
run_cinder attachment-complete "$att" >/dev/null
assert_eq "$(show "$vol" status)" in-use "volume after attachment-complete"
nbdinfo --size "$(unix_uri "volume-$vol" "$STATE/run/nbd.sock")" >/dev/null || fail "the attachment's export is not served"
refused "HTTP 409" delete "$vol"
run_cinder reset-state --attach-status detached "$vol" >/dev/null
assert_eq "$(show "$vol" status)" available "status after reset-state --attach-status detached"
cinder attachment-show "$att" >/dev/null 2>&1 && fail "the attachment outlived reset-state --attach-status detached"
for ((i = 0; i < 100; i++)); do
    nbdinfo --size "$(unix_uri "volume-$vol" "$STATE/run/nbd.sock")" >/dev/null 2>&1 || break
    sleep 0.1
done
((i < 100)) || fail "the export outlived its attachment's reset"
pass "cinder reset-state --attach-status detached: attachment deleted, export withdrawn, volume available"

# ------------------------------------------------------------------ force-delete of a volume
used_before=$(run_cinder quota-usage "$PROJECT" | awk -F'|' '$2 ~ /^ *volumes *$/ {gsub(/ /, "", $3); print $3}')
run_cinder reset-state --state attaching "$vol" >/dev/null
refused "HTTP 409" delete "$vol"
assert_eq "$(show "$vol" status)" attaching "status after a refused delete"
run_cinder force-delete "$vol" >/dev/null
gone volume "$vol"
used_after=$(run_cinder quota-usage "$PROJECT" | awk -F'|' '$2 ~ /^ *volumes *$/ {gsub(/ /, "", $3); print $3}')
assert_eq "$used_after" $((used_before - 1)) "volumes in use after force-delete"
[[ -e $T/pool/$vol || -n $(find "$T/pool" -name "*$vol*") ]] && fail "the volume's file outlived force-delete"

# DELETE ?force=true is the same; a volume with a snapshot is still refused.
v2=$(run_cinder create --name with-snap 1 | field id)
wait_status show "$v2" available
snap=$(run_cinder snapshot-create --name s "$v2" | field id)
wait_status snap_show "$snap" available
run_cinder reset-state --state error "$v2" >/dev/null
code=$(api "$AUTH" DELETE "/volumes/$v2?force=true")
assert_eq "$code" 400 "force delete of a volume with a snapshot"
grep -q "dependent snapshot" "$T/body" || fail "force delete with a snapshot: $(cat "$T/body")"
assert_eq "$(show "$v2" status)" error "status after a refused force delete"
pass "cinder force-delete: a volume the plain delete refuses is deleted, quota released; snapshots still refuse it"

# ------------------------------------------------------------------ snapshots
run_cinder snapshot-reset-state --state creating "$snap" >/dev/null
assert_eq "$(snap_show "$snap" status)" creating "snapshot after snapshot-reset-state"
refused "HTTP 409" snapshot-delete "$snap"
run_cinder snapshot-delete --force "$snap" >/dev/null
gone snapshot "$snap"
code=$(api "$AUTH" DELETE "/volumes/$v2?force=true")
assert_eq "$code" 202 "force delete once the snapshot is gone"
gone volume "$v2"
pass "cinder snapshot-reset-state and snapshot-delete --force; DELETE ?force=true"

# ------------------------------------------------------------------ busy resources, members
v3=$(run_cinder create --name busy 1 | field id)
wait_status show "$v3" available
# curl from here on: the stall must outlast these requests, and the cinder CLI takes a second
# or more to start on a busy machine.
code=$(api "$AUTH" POST "/volumes/$v3/action" '{"os-extend": {"new_size": 2}}')
assert_eq "$code" 202 "os-extend"
api "$AUTH" GET "/volumes/$v3" >/dev/null
grep -q '"status": *"extending"' "$T/body" || fail "status during the stalled extend: $(cat "$T/body")"
for body in '{"os-reset_status": {"status": "available"}}' '{"os-force_delete": {}}'; do
    code=$(api "$AUTH" POST "/volumes/$v3/action" "$body")
    assert_eq "$code" 409 "$body during the extend"
    grep -q "has an operation in progress (extend_volume)" "$T/body" || fail "$body during the extend: $(cat "$T/body")"
done
wait_status show "$v3" available
assert_eq "$(show "$v3" size)" 2 "size after the extend the repairs left alone"
pass "reset-state and force-delete refused (409) while an extend works on the volume; the extend finishes"

for body in '{"os-reset_status": {"status": "error"}}' '{"os-force_delete": {}}'; do
    code=$(api "$MEMBER_AUTH" POST "/volumes/$v3/action" "$body")
    assert_eq "$code" 403 "a member's $body"
done
code=$(api "$MEMBER_AUTH" DELETE "/volumes/$v3?force=true")
assert_eq "$code" 403 "a member's DELETE ?force=true"
s3=$(run_cinder snapshot-create --name s3 "$v3" | field id)
wait_status snap_show "$s3" available
for body in '{"os-reset_status": {"status": "error"}}' '{"os-force_delete": null}'; do
    code=$(api "$MEMBER_AUTH" POST "/snapshots/$s3/action" "$body")
    assert_eq "$code" 403 "a member's snapshot $body"
done
code=$(api "$AUTH" POST "/snapshots/$s3/action" '{"os-update_snapshot_status": {"status": "error"}}')
assert_eq "$code" 400 "a snapshot action volgate does not offer"
assert_eq "$(show "$v3" status)" available "volume after the members' attempts"
assert_eq "$(snap_show "$s3" status)" available "snapshot after the members' attempts"
pass "a member's repairs are 403 and change nothing; unknown snapshot actions 400"

# ------------------------------------------------------------------ volgate's own CLI
vg() { "$VOLGATE" "$@" --url "unix:$SOCK" --project "$PROJECT" >"$T/out" 2>"$T/err" || fail "volgate $*: $(cat "$T/out" "$T/err")"; cat "$T/out"; }
vg volume reset-state --state error "$v3" | grep -q "status *error" || fail "volume reset-state: $(cat "$T/out")"
vg snapshot reset-state --state error_deleting "$s3" | grep -q "status *error_deleting" || fail "snapshot reset-state: $(cat "$T/out")"
vg snapshot delete --force "$s3" >/dev/null
gone snapshot "$s3"
vg volume delete --force "$v3" >/dev/null
gone volume "$v3"
rc=0
"$VOLGATE" volume reset-state "$v3" --url "unix:$SOCK" >"$T/out" 2>&1 || rc=$?
assert_eq "$rc" 2 "volume reset-state with nothing to set"
grep -q "give --state, --attach-status or both" "$T/out" || fail "volume reset-state without options: $(cat "$T/out")"
pass "volgate volume|snapshot reset-state and delete --force"

stop_volgate "$CTL_PID" TERM 10
