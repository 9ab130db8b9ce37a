#!/usr/bin/env bash
# The controller and the gateway as one system, through Cinder's attachment API: the controller
# starts its gateway (--gateway), an attachment with a connector makes the gateway serve the
# volume (decrypting it in process), a host writes and reads through the connection info with
# qemu-io and nbdsh, the ciphertext on the pool is checked independently, the gateway is killed
# and its exports come back, exports nobody owns are removed, and deleting the attachment takes
# the export away.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_volgate
require_tool curl sqlite3 cryptsetup qemu-io nbdinfo setpriv

T=$TEST_TMP
STATE=$T/state
SOCK=$STATE/controller.sock
GW=$STATE/run/gateway.sock
NBD=$STATE/run/nbd.sock
PAYLOAD="$SYSPY $INTEGRATION_DIR/luks_payload.py"
export VOLGATE_URL=unix:$SOCK

cat >"$T/controller.json" <<JSON
{
  "state_dir": "$STATE",
  "volume_types": {"shared": {"extra_specs": {"multiattach": "<is> True"}}},
  "gateway": {"check_interval": 0.2, "repair_interval": 1}
}
JSON

vg() { "$VOLGATE" "$@"; }
json() { "$SYSPY" -c 'import json, sys; d = json.load(sys.stdin); r = eval(sys.argv[1]); print(r if not isinstance(r, (dict, list)) else json.dumps(r))' "$1"; }
AUTH=$T/auth.header
# api METHOD PATH [BODY]: HTTP on the controller's socket at microversion 3.44; prints "STATUS BODY"
api() {
    local args=(-s -o "$T/api.body" -w '%{http_code}' --unix-socket "$SOCK" -X "$1" -H @"$AUTH"
                -H 'OpenStack-API-Version: volume 3.44')
    [[ $# -ge 3 ]] && args+=(-H 'Content-Type: application/json' --data "$3")
    echo "$(curl "${args[@]}" "http://localhost/v3/p$2") $(cat "$T/api.body")"
}
# ok STATUS METHOD PATH [BODY]: the request must answer STATUS; prints the body
ok() {
    local want=$1 r
    shift
    r=$(api "$@")
    [[ ${r%% *} == "$want" ]] || fail "$* -> $r (expected $want)"
    echo "${r#* }"
}
gw() { curl -s --max-time 5 --unix-socket "$GW" "http://gateway$1"; }
exports() { gw /v1/exports | json "' '.join(sorted(e['name'] for e in d['exports']))"; }
create() { vg volume create --project p --output json "$@" | json "d['volume']['id']"; }
vol_status() { vg volume show --project p --output json "$1" | json "d['volume']['status']"; }
wait_status() {
    local i
    for ((i = 0; i < 200; i++)); do [[ $(vol_status "$1") == "$2" ]] && return 0; sleep 0.05; done
    fail "volume $1 is $(vol_status "$1"), not $2"
}
gateway_pid() { gw /v1/health | json "d['pid']"; }
wait_gateway() {
    local i
    for ((i = 0; i < 200; i++)); do gw /v1/health >/dev/null 2>&1 && return 0; sleep 0.05; done
    fail "no gateway on $GW"
}

start_controller "$T/controller.json" "$SOCK" '' --gateway
(umask 077 && printf 'X-Auth-Token: %s\n' "$(cat "$STATE/token")" >"$AUTH")
wait_gateway
BG_PIDS+=("$(gateway_pid)")  # it outlives a controller that fails: the test's exit kills it
[[ $(stat -c %a "$GW") == 600 ]] || fail "control socket mode $(stat -c %a "$GW")"
pass "the controller started its gateway (pid $(gateway_pid))"

# ------------------------------------------------------------------ attach an encrypted volume
vol=$(create --size 1G --encrypted enc)
wait_status "$vol" available
r=$(ok 200 POST /attachments '{"attachment": {"volume_uuid": "'"$vol"'", "instance_uuid": "11111111-2222-3333-4444-555555555555"}}')
att=$(json "d['attachment']['id']" <<<"$r")
assert_eq "$(json "d['attachment']['status']" <<<"$r")" reserved "attachment without a connector"
assert_eq "$(json "d['attachment']['connection_info']" <<<"$r")" None "connection info before the connector"
assert_eq "$(vol_status "$vol")" reserved "volume after attachment create"
assert_eq "$(exports)" "" "exports before the connector"

r=$(ok 200 PUT "/attachments/$att" '{"attachment": {"connector": {"host": "'"$(hostname)"'", "platform": "x86_64", "os_type": "linux", "multipath": false}}}')
ci=$(json "d['attachment']['connection_info']" <<<"$r")
assert_eq "$(json "d['driver_volume_type']" <<<"$ci")" nbd "driver_volume_type"
assert_eq "$(json "d['data']['socket']" <<<"$ci")" "$NBD" "connection socket"
export_name=$(json "d['data']['export']" <<<"$ci")
assert_eq "$export_name" "volume-$vol" "export name"
assert_eq "$(json "d['data']['encrypted']" <<<"$ci")" True "encrypted (by the gateway)"
assert_eq "$(json "d['data']['access_mode']" <<<"$ci")" rw "access mode"
assert_eq "$(json "d['data']['volume_id']" <<<"$ci")" "$vol" "volume id"
assert_eq "$(vol_status "$vol")" attaching "volume after the connector"
assert_eq "$(exports)" "volume-$vol" "the gateway serves the volume"
pass "attachment create + update: connection info names the gateway's export"

URI=$(unix_uri "$export_name" "$NBD")
size=$(nbdinfo --size "$URI")
assert_eq "$size" $((1024 * 1024 * 1024 - 16 * 1024 * 1024)) "the host sees the decrypted payload"
qemu-io -f raw -c 'write -P 0xa7 0 1M' -c 'write -P 0x3c 100M 64k' "$URI" >/dev/null
"$SYSPY" - "$URI" <<'PY'
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
assert h.pread(1 << 20, 0) == b"\xa7" * (1 << 20), "first MiB"
assert h.pread(65536, 100 << 20) == b"\x3c" * 65536, "at 100 MiB"
h.shutdown()
PY
unwrap_key "$STATE" "$vol" "$T/vol.key"
vol_file=$STATE/pool/volume-$vol.img
$PAYLOAD decrypt "$vol_file" "$T/vol.key" "$T/plain.raw"
cmp -n $((1 << 20)) "$T/plain.raw" <(head -c $((1 << 20)) /dev/zero | tr '\0' '\247') ||
    fail "the pool's ciphertext does not decrypt to what the host wrote"
if head -c $((20 << 20)) "$vol_file" | tail -c $((4 << 20)) | grep -q "$(printf '\xa7\xa7\xa7\xa7\xa7\xa7\xa7\xa7')"; then
    fail "plaintext on the pool"
fi
pass "qemu-io writes and nbdsh reads through the connection info; the pool holds ciphertext that decrypts to it"

ok 204 POST "/attachments/$att/action" '{"os-complete": null}' >/dev/null
assert_eq "$(vol_status "$vol")" in-use "volume after os-complete"
attached=$(vg volume show --project p --output json "$vol" | json "d['volume']['attachments'][0]['attachment_id']")
assert_eq "$attached" "$att" "the volume lists its attachment"
msg=$(ok 409 DELETE "/volumes/$vol")
grep -q attachment <<<"$msg" || fail "delete of an attached volume: $msg"
msg=$(ok 409 POST "/volumes/$vol/action" '{"os-extend": {"new_size": 2}}')
grep -q "cannot be extended" <<<"$msg" || fail "extend of an attached volume: $msg"
pass "os-complete makes it in-use; delete and extend are refused while attached"

# ------------------------------------------------------------------ the gateway dies
old_pid=$(gateway_pid)
kill -KILL "$old_pid"
t0=$(now_ms)
back=
# How fast is bench/crash_window.sh's to measure; here only that it comes back at all.
while (($(now_ms) - t0 < 10000)); do
    if nbdinfo --size "$URI" >/dev/null 2>&1; then back=$(($(now_ms) - t0)); break; fi
    sleep 0.05
done
[[ -n $back ]] || fail "the export did not come back within 10 s of SIGKILL"
[[ $(gateway_pid) != "$old_pid" ]] || fail "same gateway pid"
BG_PIDS+=("$(gateway_pid)")
"$SYSPY" - "$URI" <<'PY'
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
assert h.pread(1 << 20, 0) == b"\xa7" * (1 << 20), "first MiB after the restart"
PY
pass "gateway SIGKILLed: the controller restarted it and served the export again in $back ms; same data"

# ------------------------------------------------------------------ drift both ways
# An export nobody owns (a controller killed mid-detach leaves one) goes within the repair interval.
# (Its 201 is the proof it was added: the repair may remove it before a listing could show it.)
code=$(curl -s -o "$T/orphan.body" -w '%{http_code}' --unix-socket "$GW" -X PUT -H 'Content-Type: application/json' \
    --data '{"target": {"backend": "memory", "size": 1048576}}' http://gateway/v1/exports/volume-orphan)
assert_eq "$code" 201 "adding the orphan export: $(cat "$T/orphan.body")"
for ((i = 0; i < 60; i++)); do [[ $(exports) != *volume-orphan* ]] && break; sleep 0.1; done
[[ $(exports) != *volume-orphan* ]] || fail "the orphan export is still served"
grep -q 'volume-orphan: no attachment holds it' "$VG_ERR" || fail "orphan removal not logged"
# A second gateway on the same control socket is refused.
rc=0
"$VOLGATE" serve --control "$GW" --unix "$T/second.sock" >"$T/second.out" 2>"$T/second.err" || rc=$?
[[ $rc == 2 && $(wc -l <"$T/second.err") == 1 ]] && grep -q "another gateway is listening" "$T/second.err" ||
    fail "a second gateway on $GW: rc $rc, $(cat "$T/second.err")"
assert_eq "$(exports)" "volume-$vol" "exports after the second gateway was refused"
# curl runs as nobody (so its failure below is the socket refusing, not a tool that cannot run)
setpriv --reuid=nobody --regid=nogroup --clear-groups curl --version >/dev/null || fail "curl does not run as user nobody"
rc=0
setpriv --reuid=nobody --regid=nogroup --clear-groups curl -sS --max-time 5 --unix-socket "$GW" http://gateway/v1/health \
    >"$T/nobody.out" 2>&1 || rc=$?
((rc != 0)) || fail "user nobody reached the control socket"
grep -q "Permission denied\|Couldn't connect" "$T/nobody.out" || fail "nobody: unexpected failure $(cat "$T/nobody.out")"
pass "drift: an orphan export removed (logged); a second gateway and another user refused"

# ------------------------------------------------------------------ bad input
other=$(vg volume create --project q --size 1 --output json other | json "d['volume']['id']")
wait_status "$vol" in-use
plain=$(create --size 1 plain)
wait_status "$plain" available
ok 404 POST /attachments '{"attachment": {"volume_uuid": "00000000-0000-0000-0000-000000000000"}}' >/dev/null
ok 404 POST /attachments '{"attachment": {"volume_uuid": "'"$other"'"}}' >/dev/null
ok 400 POST /attachments '{"attachment": {"volume_uuid": "'"$plain"'", "mode": "rx"}}' >/dev/null
ok 400 POST /attachments '{"attachment": {"volume_uuid": "'"$plain"'", "connector": "host1"}}' >/dev/null
ok 400 POST /attachments '{"attachment": {"volume_uuid": "'"$plain"'", "bogus": 1}}' >/dev/null
ok 400 POST /attachments '{"attachment": {}}' >/dev/null
ok 409 POST /attachments '{"attachment": {"volume_uuid": "'"$vol"'", "connector": {"host": "h2"}}}' >/dev/null
ok 404 PUT /attachments/nope '{"attachment": {"connector": {"host": "h"}}}' >/dev/null
ok 404 DELETE /attachments/nope >/dev/null
r=$(curl -s -w ' %{http_code}' --unix-socket "$SOCK" -H @"$AUTH" -H 'OpenStack-API-Version: volume 3.20' \
    http://localhost/v3/p/attachments)
[[ $r == *" 404" && $r == *3.27* ]] || fail "attachments below 3.27: $r"
assert_eq "$(vol_status "$plain")" available "the plain volume after refused attachments"
assert_eq "$(exports)" "volume-$vol" "no export left behind by refused requests"
pass "bad attachment requests: 400/404/409 in Cinder's shape, nothing changed, nothing served"

# The volume actions Nova uses around attach and detach.
ok 202 POST "/volumes/$plain/action" '{"os-reserve": null}' >/dev/null
assert_eq "$(vol_status "$plain")" reserved "after os-reserve"
ok 409 POST "/volumes/$plain/action" '{"os-reserve": null}' >/dev/null
ok 202 POST "/volumes/$plain/action" '{"os-unreserve": null}' >/dev/null
assert_eq "$(vol_status "$plain")" available "after os-unreserve"
ok 409 POST "/volumes/$plain/action" '{"os-begin_detaching": null}' >/dev/null
ok 202 POST "/volumes/$vol/action" '{"os-begin_detaching": null}' >/dev/null
assert_eq "$(vol_status "$vol")" detaching "after os-begin_detaching"
ok 202 POST "/volumes/$vol/action" '{"os-roll_detaching": null}' >/dev/null
assert_eq "$(vol_status "$vol")" in-use "after os-roll_detaching"
ok 400 POST "/volumes/$vol/action" '{"os-force_detach": {"bogus": 1}}' >/dev/null
ok 404 POST "/volumes/$vol/action" '{"os-force_detach": {"attachment_id": "nope"}}' >/dev/null
assert_eq "$(exports)" "volume-$vol" "exports after the volume actions"
pass "os-reserve, os-unreserve, os-begin_detaching, os-roll_detaching; os-force_detach checks its body"

# ------------------------------------------------------------------ multiattach, read-only
shared=$(create --size 1 --type shared shared)
wait_status "$shared" available
a1=$(ok 200 POST /attachments '{"attachment": {"volume_uuid": "'"$shared"'", "instance_uuid": "vm-a", "connector": {"host": "h"}}}' | json "d['attachment']['id']")
a2=$(ok 200 POST /attachments '{"attachment": {"volume_uuid": "'"$shared"'", "instance_uuid": "vm-b", "connector": {"host": "h"}, "mode": "ro"}}' | json "d['attachment']['id']")
[[ $(exports) == *"volume-$shared-ro"* ]] || fail "no read-only export: $(exports)"
rc=0
qemu-io -f raw -c 'write 0 4k' "$(unix_uri "volume-$shared-ro" "$NBD")" >"$T/ro.out" 2>&1 || rc=$?
grep -qi 'read-only\|Permission denied\|Operation not permitted' "$T/ro.out" || fail "write to the ro export: $(cat "$T/ro.out")"
remaining=$(ok 200 DELETE "/attachments/$a2" | json "len(d['attachments'])")
assert_eq "$remaining" 1 "attachments left on the shared volume"
[[ $(exports) != *"volume-$shared-ro"* && $(exports) == *"volume-$shared"* ]] || fail "exports: $(exports)"
ok 200 DELETE "/attachments/$a1" >/dev/null
assert_eq "$(vol_status "$shared")" available "shared volume after both detach"
pass "multiattach: two attachments, a read-only export of its own, each removed with its last attachment"

# ------------------------------------------------------------------ the command line
cli_att=$(vg attachment create --project p --instance vm-c --output json "$plain" | json "d['attachment']['id']")
assert_eq "$(vg attachment show --project p --output json "$cli_att" | json "d['attachment']['status']")" reserved "CLI create"
out=$(vg attachment update --project p --host "$(hostname)" "$cli_att")
grep -q "^uri  *nbd+unix:///volume-$plain?socket=$NBD\$" <<<"$out" || fail "attachment update: $out"
nbdinfo --size "$(unix_uri "volume-$plain" "$NBD")" >/dev/null || fail "the CLI's attachment is not served"
vg attachment complete --project p "$cli_att" | grep -q '^status  *attached$' || fail "attachment complete"
vg attachment list --project p --volume "$plain" | grep -q "^$cli_att  *$plain  *attached  *vm-c  *rw$" ||
    fail "attachment list: $(vg attachment list --project p --volume "$plain")"
rc=0
vg attachment update --project p --connector '[1]' "$cli_att" 2>"$T/cli.err" || rc=$?
[[ $rc == 2 ]] && grep -q 'JSON object' "$T/cli.err" || fail "bad --connector: rc $rc, $(cat "$T/cli.err")"
vg attachment delete --project p "$cli_att" | grep -q "deleted attachment $cli_att" || fail "attachment delete"
assert_eq "$(vol_status "$plain")" available "volume after the CLI's attachment delete"
pass "volgate attachment create/update/complete/list/show/delete"

# ------------------------------------------------------------------ controller restart
kill -TERM "$CTL_PID"
wait "$CTL_PID" || true
_forget_pid "$CTL_PID"
gw_pid=$(gateway_pid) || fail "the gateway stopped with the controller while serving an attachment"
start_controller "$T/controller.json" "$SOCK" '' --gateway
sleep 0.5
assert_eq "$(gateway_pid)" "$gw_pid" "the restarted controller adopts the running gateway"
assert_eq "$(exports)" "volume-$vol" "exports after the controller restart"
pass "controller restart: the gateway kept serving and was adopted"

# ------------------------------------------------------------------ gateway hand-over
# The controller's gateway replaced by a new process (volgate gateway restart): the controller
# follows the new pid through the health answer and finds its export served; nothing is re-created.
nbdsh -u "$URI" -c 'h.pwrite(b"\x5a" * 65536, 0); h.flush()' || fail "writing before the hand-over"
vg gateway restart --control "$GW" --log "$STATE/gateway.log" >/dev/null || fail "gateway restart: $(tail -n 3 "$STATE/gateway.log")"
new_pid=$(gateway_pid)
[[ $new_pid != "$gw_pid" ]] || fail "the gateway's pid did not change with the hand-over"
sleep 1.5  # more than the controller's repair interval: it has looked at the new gateway by now
assert_eq "$(exports)" "volume-$vol" "exports after the hand-over"
nbdsh -u "$URI" -c 'assert h.pread(65536, 0) == b"\x5a" * 65536' || fail "reading after the hand-over"
assert_alive "$CTL_PID"
pass "the controller's gateway handed over (pid $gw_pid -> $new_pid): the export served throughout, same data"

# ------------------------------------------------------------------ detach
r=$(ok 200 DELETE "/attachments/$att")
assert_eq "$(json "len(d['attachments'])" <<<"$r")" 0 "attachments left"
assert_eq "$(vol_status "$vol")" available "volume after the attachment delete"
assert_eq "$(exports)" "" "exports after the attachment delete"
nbdinfo --size "$URI" >/dev/null 2>&1 && fail "the export is still reachable"
for f in "$T"/controller.*.err "$STATE/gateway.log"; do
    refute_grep "the passphrase is in $f" -F -e "$(cat "$T/vol.key")" "$f"
done
pass "attachment delete: export gone, volume available; no passphrase in any log"

# A gateway that serves nothing stops with the controller that runs it.
kill -TERM "$CTL_PID"
wait "$CTL_PID" || true
_forget_pid "$CTL_PID"
for ((i = 0; i < 100; i++)); do gw /v1/health >/dev/null 2>&1 || break; sleep 0.05; done
gw /v1/health >/dev/null 2>&1 && fail "the idle gateway outlived its controller"
pass "a gateway with no exports stops with its controller"
