#!/usr/bin/env bash
# `volgate serve --metrics` with an iSCSI export on two paths (tgtd behind one TCP relay per
# portal) and a LUKS export: each path's up gauge, failovers, failbacks and seconds since its
# last success follow a path killed and restored; then the Grafana dashboard
# (monitoring/grafana/volgate-gateway.json) is valid JSON and every metric it queries is in this
# scrape, which has every family the gateway exports.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/iscsi_lib.sh"
. "$(dirname "$0")/metrics_lib.sh"
require_volgate
require_tool curl
require_tool promtool

IQN=iqn.2026-01.org.volgate.test:metrics
truncate -s 16M "$TEST_TMP/lun.img"
start_tgtd main 127.0.0.1
P=$TGTD_PORT
add_target main 1 "$IQN" "$TEST_TMP/lun.img"
start_relay a "127.0.0.2:$P" "127.0.0.1:$P"
start_relay b "127.0.0.3:$P" "127.0.0.1:$P"
printf 'metrics-test-passphrase' >"$TEST_TMP/key"
"$VOLGATE" luks format --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$TEST_TMP/key" \
    "file:$TEST_TMP/luks.img,size=20M" >/dev/null 2>"$TEST_TMP/format.err" || fail "luks format: $(cat "$TEST_TMP/format.err")"

S=$TEST_TMP/s.sock
start_volgate --unix "$S" --metrics 127.0.0.1:0 \
    --export "v=iscsi://127.0.0.2:$P,127.0.0.3:$P/$IQN/1,path-check-interval=1" \
    --export "enc=file:$TEST_TMP/luks.img,luks-key-file=$TEST_TMP/key"
URL=$(grep '^http://' "$VG_OUT") || fail "no metrics URL on stdout"
PATH0="path 0 127.0.0.2:$P"

L0="export=\"v\",path=\"0\",portal=\"127.0.0.2:$P\""
L1="export=\"v\",path=\"1\",portal=\"127.0.0.3:$P\""
scrape "$URL" "$TEST_TMP/m0"
assert_sample "$TEST_TMP/m0" "volgate_iscsi_path_up{$L0}" 1
assert_sample "$TEST_TMP/m0" "volgate_iscsi_path_up{$L1}" 1
assert_sample "$TEST_TMP/m0" "volgate_iscsi_path_failovers_total{$L0}" 0
assert_sample "$TEST_TMP/m0" "volgate_iscsi_path_failbacks_total{$L0}" 0
nbdsh -u "$(unix_uri v "$S")" -c '
for i in range(100):
    h.pwrite(b"\x11" * 4096, i * 4096)
h.flush()
' || fail "writes to the iSCSI export"
scrape "$URL" "$TEST_TMP/m1"
assert_sample "$TEST_TMP/m1" 'volgate_export_requests_total{export="v",type="write"}' 100
awk -v key="volgate_iscsi_path_seconds_since_success{$L0}" '$1 == key { found = 1; exit !($2 >= 0 && $2 < 2) } END { exit !found }' \
    "$TEST_TMP/m1" || fail "path 0's last success: $(grep "since_success{$L0}" "$TEST_TMP/m1")"
pass "both paths up, 100 writes counted, path 0 succeeded within the last 2 s"

kill_relay a
wait_for_log "$VG_ERR" "$PATH0: down" 15 "path 0 lost"
scrape "$URL" "$TEST_TMP/m2"
assert_sample "$TEST_TMP/m2" "volgate_iscsi_path_up{$L0}" 0
assert_sample "$TEST_TMP/m2" "volgate_iscsi_path_failovers_total{$L0}" 1
assert_sample "$TEST_TMP/m2" "volgate_iscsi_path_failovers_total{$L1}" 0
nbdsh -u "$(unix_uri v "$S")" -c 'h.pwrite(b"\x22" * 4096, 0)' || fail "a write during the failover"
restore_relay a
wait_for_log "$VG_ERR" "$PATH0: up, failing back" 15 "path 0 back"
scrape "$URL" "$TEST_TMP/m3"
assert_sample "$TEST_TMP/m3" "volgate_iscsi_path_up{$L0}" 1
assert_sample "$TEST_TMP/m3" "volgate_iscsi_path_failovers_total{$L0}" 1
assert_sample "$TEST_TMP/m3" "volgate_iscsi_path_failbacks_total{$L0}" 1
assert_sample "$TEST_TMP/m3" "volgate_iscsi_path_failbacks_total{$L1}" 0
assert_sample "$TEST_TMP/m3" 'volgate_export_requests_total{export="v",type="write"}' 101
assert_sample "$TEST_TMP/m3" 'volgate_export_errors_total{export="v",type="write",error="EIO"}' 0
pass "path 0 killed: up 0, one failover, the write went through path 1; restored: up 1, one failback"

nbdsh -u "$(unix_uri enc "$S")" -c 'h.pwrite(b"\x33" * 65536, 0)' || fail "a write to the LUKS export"
# ------------------------------------------------------------ the Grafana dashboard's metrics
DASH=$REPO_ROOT/monitoring/grafana/volgate-gateway.json
scrape "$URL" "$TEST_TMP/m4"
cat >"$TEST_TMP/check_dashboard.py" <<'PY'
import json, re, sys
dash = json.load(open(sys.argv[1]))  # valid JSON, or this fails
declared = set(re.findall(r"^# TYPE (\S+) (\S+)", open(sys.argv[2]).read(), re.M))
names = {}
for name, kind in declared:
    names[name] = kind
    if kind == "histogram":
        for suffix in ("_bucket", "_sum", "_count"):
            names[name + suffix] = "histogram-part"
exprs = []
def walk(node):
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str):
            exprs.append(node["expr"])
        if isinstance(node.get("query"), str):
            exprs.append(node["query"])
        for v in node.values():
            walk(v)
    elif isinstance(node, list):
        for v in node:
            walk(v)
walk(dash)
assert len(exprs) >= 10, "only %d queries in the dashboard" % len(exprs)
used = set()
for e in exprs:
    for m in re.findall(r"\b((?:volgate|process)_[a-z0-9_]+)\b", e):
        used.add(m)
missing = sorted(u for u in used if u not in names)
assert not missing, "queried but not in a real scrape: %s" % missing
assert dash.get("title") and dash.get("panels"), "no title or panels"
print("%d queries, %d metrics, all in the scrape" % (len(exprs), len(used)))
PY
"$SYSPY" "$TEST_TMP/check_dashboard.py" "$DASH" "$TEST_TMP/m4" || fail "the dashboard does not match the scrape (see above)"
# The check catches a query of a metric the gateway does not export.
"$SYSPY" - "$DASH" "$TEST_TMP/bad-dash.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["panels"][1]["targets"][0]["expr"] = "rate(volgate_export_no_such_thing_total[5m])"
json.dump(d, open(sys.argv[2], "w"))
PY
if "$SYSPY" "$TEST_TMP/check_dashboard.py" "$TEST_TMP/bad-dash.json" "$TEST_TMP/m4" >"$TEST_TMP/bad-dash.out" 2>&1; then
    fail "a dashboard querying volgate_export_no_such_thing_total passed the check"
fi
grep -q volgate_export_no_such_thing_total "$TEST_TMP/bad-dash.out" || fail "the check did not name the missing metric: $(cat "$TEST_TMP/bad-dash.out")"
pass "the Grafana dashboard is valid JSON and every metric it queries is in the scrape"

stop_volgate
pass "all"
