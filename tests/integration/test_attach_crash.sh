#!/usr/bin/env bash
# SIGKILL of the controller at each step of Nova's attach and detach (os-volume_attachments),
# against the real controller, gateway, libvirtd and a running TCG guest. The test hook
# VOLGATE_TEST_KILL_BEFORE=KIND:TASK (README.md here) makes the controller kill itself just
# before that task, its journal row written. After each kill the controller is started again on
# the same state: the volume must be attached whole (in-use, one attachment, its mapping, its
# export, its disk live and in the definition) or not at all, no flow left in the journal, and
# the next attach or detach must work.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/guest_lib.sh"
require_volgate
require_tool curl virsh sqlite3

T=$TEST_TMP
STATE=$T/state
GUEST=volgate-it-crash-$$
. "$(dirname "$0")/attach_lib.sh"
cat >"$T/controller.json" <<JSON
{"state_dir": "$STATE", "gateway": {"check_interval": 0.2, "repair_interval": 1}}
JSON

# Every task of AttachVolumeFlow and DetachVolumeFlow (controller/compute/), "end" (done, the
# journal row not yet cleared), and the ends of the volume service's flows they run inside, where
# the attachment or export exists and the compute journal does not know it yet.
ATTACH_KILLS=(attach_volume:validate attach_volume:start_action attach_volume:reserve_device attach_volume:create_attachment
              attach_volume:connect attach_volume:attach_disk attach_volume:complete_attachment attach_volume:finish_action attach_volume:end
              create_attachment:end update_attachment:end complete_attachment:end)
DETACH_KILLS=(detach_volume:validate detach_volume:start_action detach_volume:begin_detaching detach_volume:detach_disk
              detach_volume:delete_attachment detach_volume:destroy_mapping detach_volume:finish_action detach_volume:end
              delete_attachment:withdraw_export delete_attachment:end)

# A hook the controller cannot read stops it at start, naming the variable.
rc=0
VOLGATE_TEST_KILL_BEFORE=attach_volume "$VOLGATE" controller --config "$T/controller.json" >/dev/null 2>"$T/bad-hook.err" ||
    rc=$?
assert_eq "$rc" 2 "exit code of a controller given a malformed hook"
grep -q "VOLGATE_TEST_KILL_BEFORE: expected KIND:TASK" "$T/bad-hook.err" || fail "bad hook: $(cat "$T/bad-hook.err")"

libvirt_start
guest_image "$T/guest"
start_controller "$T/controller.json" "$SOCK" '' --gateway
wait_gateway
auth_header
guest_define "$GUEST" "$T/guest"
uuid=$("${VIRSH[@]}" domuuid "$GUEST")
info "guest up in $GUEST_BOOT_MS ms"
vol=$("$VOLGATE" volume create --size 1 --output json crash | json "d['volume']['id']")
ATTACH='{"volumeAttachment": {"volumeId": "'"$vol"'"}}'

# crash SPEC METHOD PATH [BODY]: restarts the controller armed to die at SPEC, sends the request
# (which gets no answer), waits for the SIGKILL and starts the controller again without the hook.
crash() {
    local spec=$1 method=$2 path=$3 body=${4:-} code rc=0 i
    kill -TERM "$CTL_PID"
    wait "$CTL_PID" || true
    _forget_pid "$CTL_PID"
    VOLGATE_TEST_KILL_BEFORE=$spec start_controller "$T/controller.json" "$SOCK" '' --gateway
    wait_gateway
    local args=(-s --max-time 60 -o /dev/null -w '%{http_code}' --unix-socket "$SOCK" -X "$method" -H @"$AUTH")
    [[ -n $body ]] && args+=(-H 'Content-Type: application/json' --data "$body")
    code=$(curl "${args[@]}" "http://localhost/v2.1$path") || true
    for ((i = 0; i < 100; i++)); do _proc_running "$CTL_PID" || break; sleep 0.05; done
    _proc_running "$CTL_PID" && fail "$spec: the controller did not die (answered $code)"
    wait "$CTL_PID" || rc=$?
    _forget_pid "$CTL_PID"
    ((rc == 137)) || fail "$spec: the controller exited with $rc, not by SIGKILL; $(tail -n 3 "$VG_ERR")"
    grep -q "test hook: SIGKILL before ${spec%%:*}:" "$VG_ERR" || fail "$spec: the hook did not fire"
    # The dead controller's socket file is left: start_controller waits for the socket to exist.
    rm -f "$SOCK"
    start_controller "$T/controller.json" "$SOCK" '' --gateway
    wait_gateway
}

t0=$(now_ms)
declare -A OUTCOME=()
for spec in "${ATTACH_KILLS[@]}"; do
    crash "$spec" POST "/servers/$uuid/os-volume_attachments" "$ATTACH"
    OUTCOME[$spec]=$(assert_settled "$vol" "$uuid")
    # The next operation works, whichever way the restart went.
    if [[ ${OUTCOME[$spec]} == attached ]]; then
        nova 202 DELETE "/servers/$uuid/os-volume_attachments/$vol" >/dev/null
        assert_detached "$vol" "$uuid"
    else
        nova 200 POST "/servers/$uuid/os-volume_attachments" "$ATTACH" >/dev/null
        assert_attached "$vol" "$uuid"
        nova 202 DELETE "/servers/$uuid/os-volume_attachments/$vol" >/dev/null
    fi
    info "killed before $spec: ${OUTCOME[$spec]} after the restart; attach and detach work again"
done
pass "SIGKILL at ${#ATTACH_KILLS[@]} points of the attach: each restart settled the volume whole ($(($(now_ms) - t0)) ms)"

t0=$(now_ms)
for spec in "${DETACH_KILLS[@]}"; do
    nova 200 POST "/servers/$uuid/os-volume_attachments" "$ATTACH" >/dev/null
    crash "$spec" DELETE "/servers/$uuid/os-volume_attachments/$vol"
    OUTCOME[$spec]=$(assert_settled "$vol" "$uuid")
    if [[ ${OUTCOME[$spec]} == attached ]]; then
        nova 202 DELETE "/servers/$uuid/os-volume_attachments/$vol" >/dev/null
        assert_detached "$vol" "$uuid"
    fi
    info "killed before $spec: ${OUTCOME[$spec]} after the restart; the volume detaches"
done
pass "SIGKILL at ${#DETACH_KILLS[@]} points of the detach: each restart settled the volume whole ($(($(now_ms) - t0)) ms)"

# Nothing a run left behind: the volume attaches once more and the guest reads it.
nova 200 POST "/servers/$uuid/os-volume_attachments" "$ATTACH" >/dev/null
out=$(guest_run "$GUEST" "for i in 1 2 3 4 5 6 7 8 9 10; do ls /dev/disk/by-id/*$vol* >/dev/null 2>&1 && break; sleep 0.5; done
dd if=\$(ls /dev/disk/by-id/*$vol* | head -1) bs=4096 count=1 iflag=direct 2>/dev/null | wc -c" 30)
assert_eq "$out" 4096 "the guest reads the volume after the crashes"
nova 202 DELETE "/servers/$uuid/os-volume_attachments/$vol" >/dev/null
assert_detached "$vol" "$uuid"
grep -h "reverting what the previous run\|resuming at task" "$T"/controller.*.err >/dev/null ||
    fail "no restart recovered a flow"
# The action log: every action a killed run recorded was closed by the restart, and those it
# reverted say why.
running=0 reverted=0
for req in $(nova 200 GET "/servers/$uuid/os-instance-actions" | json "' '.join(a['request_id'] for a in d['instanceActions'])"); do
    events=$(nova 200 GET "/servers/$uuid/os-instance-actions/$req" | json "d['instanceAction']['events']")
    grep -q '"result": null' <<<"$events" && running=$((running + 1))
    grep -q 'the controller stopped before the operation finished' <<<"$events" && reverted=$((reverted + 1))
done
assert_eq "$running" 0 "actions left running after the restarts"
((reverted > 0)) || fail "no action says a restart reverted it"
pass "after the crashes the guest reads the volume, and it detaches clean"
assert_no_sanitizer_reports
