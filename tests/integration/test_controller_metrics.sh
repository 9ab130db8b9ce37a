#!/usr/bin/env bash
# `volgate controller --metrics`: a scrape that promtool accepts, volumes and attachments by
# status from the database, flows counted by kind (one that finishes, one that is refused by
# its quota task and reverted) with their durations, API requests by method, route pattern and
# status code (an unauthenticated request and an unknown path included), and a wrong path on
# the metrics port refused.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/metrics_lib.sh"
require_volgate
require_tool curl
require_tool promtool
T=$TEST_TMP
STATE=$T/state
SOCK=$STATE/controller.sock
export VOLGATE_URL=unix:$SOCK
cat >"$T/controller.json" <<JSON
{
  "state_dir": "$STATE",
  "quotas": {"volumes": 1, "snapshots": 10, "gigabytes": 100},
  "pools": [{"name": "p", "driver": "file", "directory": "$T/pool"}],
  "metrics": "192.0.2.1:0"
}
JSON
# The config's address is one no host here has (binding it would fail): --metrics overrides it.
start_controller "$T/controller.json" "$SOCK" '/metrics$' --metrics 127.0.0.1:0
URL=$(grep '/metrics$' "$T/controller.0.out") || fail "no metrics URL on stdout"
[[ $URL == http://127.0.0.1:*/metrics ]] || fail "metrics URL: $URL"

scrape "$URL" "$T/m0"
assert_sample "$T/m0" 'volgate_controller_volumes{status="available"}' 0
assert_sample "$T/m0" 'volgate_controller_attachments{status="attached"}' 0
assert_sample "$T/m0" 'volgate_controller_export_repairs_total{action="added"}' 0
for family in volgate_controller_flows_started_total volgate_controller_flow_duration_seconds \
    volgate_controller_api_requests_total process_cpu_seconds_total process_open_fds; do
    grep -q "^# TYPE $family " "$T/m0" || fail "no $family in the scrape"
done
pass "a first scrape passes promtool and counts no volume"

id=$("$VOLGATE" volume create --output json --size 1G first | "$SYSPY" -c 'import json,sys; print(json.load(sys.stdin)["volume"]["id"])')
for _ in $(seq 100); do
    [[ $("$VOLGATE" volume show --output json "$id" | "$SYSPY" -c 'import json,sys; print(json.load(sys.stdin)["volume"]["status"])') == available ]] && break
    sleep 0.1
done
rc=0
"$VOLGATE" volume create --size 1G second >/dev/null 2>"$T/second.err" || rc=$?
((rc != 0)) || fail "a volume past the quota of 1 was created"
code=$(curl -s -o /dev/null -w '%{http_code}' --unix-socket "$SOCK" http://localhost/v3/p/volumes)
assert_eq "$code" 401 "a request without a token"
code=$(curl -s -o /dev/null -w '%{http_code}' --unix-socket "$SOCK" -H "X-Auth-Token: $(cat "$STATE/token")" http://localhost/nowhere)
assert_eq "$code" 404 "an unknown path"

scrape "$URL" "$T/m1"
assert_sample "$T/m1" 'volgate_controller_volumes{status="available"}' 1
assert_sample "$T/m1" 'volgate_controller_volumes{status="error"}' 0
assert_sample "$T/m1" 'volgate_controller_flows_started_total{kind="create_volume"}' 2
assert_sample "$T/m1" 'volgate_controller_flows_finished_total{kind="create_volume"}' 1
assert_sample "$T/m1" 'volgate_controller_flows_reverted_total{kind="create_volume"}' 1
assert_sample "$T/m1" 'volgate_controller_flow_duration_seconds_count{kind="create_volume"}' 2
assert_sample "$T/m1" 'volgate_controller_api_requests_total{method="POST",route="/v3/{project}/volumes",code="202"}' 1
assert_sample "$T/m1" 'volgate_controller_api_requests_total{method="POST",route="/v3/{project}/volumes",code="413"}' 1
assert_sample "$T/m1" 'volgate_controller_api_requests_total{method="GET",route="unauthenticated",code="401"}' 1
assert_sample "$T/m1" 'volgate_controller_api_requests_total{method="GET",route="unmatched",code="404"}' 1
pass "one volume available; create_volume flows: 2 started, 1 finished, 1 reverted; API requests by route and code"

code=$(curl -sS -o /dev/null -w '%{http_code}' "${URL%/metrics}/")
assert_eq "$code" 404 "GET / on the metrics port"
pass "all"
