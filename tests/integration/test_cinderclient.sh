#!/usr/bin/env bash
# Debian's python3-cinderclient against `volgate controller`, as a new user would drive it:
#  - the `cinder` CLI with the admin_token auth type (no Keystone), first at its default
#    version (3.0) then at ours, through version discovery, every volume, snapshot, type,
#    quota, limits, availability-zone and service command the API offers, each result
#    checked (status, size, names, metadata, counts);
#  - a call volgate does not offer (group-list) fails with a clear message, not a traceback;
#  - the microversion header is echoed, refused out of range (406), and the versions document
#    is served without the token;
#  - attachment-create (reserve, and --connect for connection info), -list, -show, -complete and
#    -delete, with the volume's status following, and the export reachable with nbdinfo;
#  - the Python library (cinderclient.client.Client with a keystoneauth session) does the same
#    lifecycle, including cinderclient's standard create body and list paging.
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
MAX_VERSION=3.53  # kMaxApiVersion in controller/api/api_version.hpp
CTL_PID=

cat >"$T/controller.json" <<JSON
{
  "state_dir": "$STATE",
  "tcp_listen": "127.0.0.1:$PORT",
  "quotas": {"volumes": 10, "snapshots": 10, "gigabytes": 100},
  "pools": [{"name": "files", "driver": "file", "directory": "$T/pool"}]
}
JSON
start_controller "$T/controller.json" "$SOCK" '^http://' --gateway

# The token and the endpoint come from the environment: the token stays off every command line.
# The auth type must not: cinderclient 9.1 with OS_AUTH_TYPE=admin_token in its environment
# registers the plugin's --os-endpoint a second time and stops ("conflicting option string");
# given as --os-auth-type (or as OS_AUTH_SYSTEM) it works.
unset OS_AUTH_TYPE OS_AUTH_PLUGIN OS_AUTH_SYSTEM
cinder() { command cinder --os-auth-type admin_token "$@"; }
OS_TOKEN=$(cat "$STATE/token")
export OS_TOKEN
export CINDER_ENDPOINT=$URL/v3/$PROJECT
export OS_PROJECT_ID=$PROJECT
unset OS_VOLUME_API_VERSION OS_AUTH_URL OS_USERNAME OS_PASSWORD

# cinder ARGS...: the CLI at our highest version; output in $T/out, stderr in $T/err
cinder_max() { OS_VOLUME_API_VERSION=$MAX_VERSION cinder "$@" >"$T/out" 2>"$T/err" || fail "cinder $*: $(cat "$T/err")"; cat "$T/out"; }
show() { cinder_max show "$1" | field "$2"; }
# wait_for VOLUME KEY VALUE: until `cinder show` gives KEY = VALUE (10 s)
wait_for() {
    local i got=
    for ((i = 0; i < 100; i++)); do
        got=$(show "$1" "$2")
        [[ $got == "$3" ]] && return 0
        [[ $got == error* ]] && fail "volume $1 went to $got: $(show "$1" volgate:error)"
        sleep 0.1
    done
    fail "volume $1: $2 is '$got', expected '$3'"
}

# ------------------------------------------------------------------ versions, header, token
# The token goes to curl in a header file, never on its command line.
AUTH=$T/auth.header
(umask 077 && printf 'X-Auth-Token: %s\n' "$OS_TOKEN" >"$AUTH")
code=$(curl -s -o "$T/versions" -w '%{http_code}' "$URL/")
assert_eq "$code" 300 "GET / without a token"
grep -q "\"version\":\"$MAX_VERSION\"" "$T/versions" || fail "versions document: $(cat "$T/versions")"
code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/v3/$PROJECT/volumes")
assert_eq "$code" 401 "volumes without a token"
curl -s -D "$T/headers" -o /dev/null -H @"$AUTH" -H 'OpenStack-API-Version: volume 3.27' "$URL/v3/$PROJECT/volumes"
grep -qi '^OpenStack-API-Version: volume 3.27' "$T/headers" || fail "version not echoed: $(cat "$T/headers")"
grep -qi '^Vary: OpenStack-API-Version' "$T/headers" || fail "no Vary header: $(cat "$T/headers")"
code=$(curl -s -o "$T/body" -w '%{http_code}' -H @"$AUTH" -H 'OpenStack-API-Version: volume 3.99' \
    "$URL/v3/$PROJECT/volumes")
assert_eq "$code" 406 "a version outside the range"
grep -q computeFault "$T/body" || fail "406 body: $(cat "$T/body")"
pass "versions document open to all, OpenStack-API-Version echoed, 406 outside the range"

# ------------------------------------------------------------------ the CLI at its default version
cinder list >"$T/out" 2>"$T/err" || fail "cinder list (default version): $(cat "$T/err")"
grep -q '| ID ' "$T/out" || fail "cinder list printed no table: $(cat "$T/out")"
OS_VOLUME_API_VERSION=3.70 cinder list >"$T/out" 2>"$T/err" || fail "cinder list at 3.70: $(cat "$T/err")"
OS_AUTH_SYSTEM=admin_token command cinder list >"$T/out" 2>"$T/err" || fail "cinder list, OS_AUTH_SYSTEM: $(cat "$T/err")"
pass "cinder list: version discovery at 3.0 and down from the client's 3.70; auth type by option or OS_AUTH_SYSTEM"

# ------------------------------------------------------------------ volume lifecycle
id=$(cinder_max create --name x --description first --metadata purpose=test 1 | field id)
[[ $id =~ ^[0-9a-f-]{36}$ ]] || fail "create printed no id: $(cat "$T/out")"
wait_for "$id" status available
assert_eq "$(show x size)" 1 "size by name"
assert_eq "$(show "$id" name)" x "name"
grep -q "purpose.*test" <<<"$(show "$id" metadata)" || fail "metadata on create: $(show "$id" metadata)"
grep -q "| $id | available | x " <<<"$(cinder_max list)" || fail "cinder list: $(cat "$T/out")"
cinder_max rename x y >/dev/null
assert_eq "$(show "$id" name)" y "name after rename"
cinder_max rename --description second y >/dev/null
assert_eq "$(show "$id" description)" second "description after rename"
cinder_max metadata y set k1=v1 k2=v2 >/dev/null
cinder_max metadata y unset purpose k2 >/dev/null
meta=$(cinder_max metadata-show y)
grep -q '| k1 .*| v1 ' <<<"$meta" || fail "metadata-show: $meta"
! grep -q 'k2\|purpose' <<<"$meta" || fail "metadata unset left keys: $meta"
cinder_max extend y 2 >/dev/null
wait_for "$id" size 2
wait_for "$id" status available
pass "cinder create/show/list/rename/metadata/extend: names, status, size and metadata as asked"

# ------------------------------------------------------------------ snapshots
sid=$(cinder_max snapshot-create --name s1 y | field id)
[[ -n $sid ]] || fail "snapshot-create: $(cat "$T/out")"
for ((i = 0; i < 100; i++)); do
    grep -q "| $sid | $id | available | s1 *| 2 " <<<"$(cinder_max snapshot-list)" && break
    sleep 0.1
done
grep -q "| $sid | $id | available | s1 *| 2 " "$T/out" || fail "snapshot-list: $(cat "$T/out")"
cinder_max snapshot-rename s1 s2 >/dev/null
grep -q "| s2 " <<<"$(cinder_max snapshot-list)" || fail "snapshot-rename: $(cat "$T/out")"
cinder_max snapshot-delete s2 >/dev/null
for ((i = 0; i < 100; i++)); do
    grep -q "$sid" <<<"$(cinder_max snapshot-list)" || break
    sleep 0.1
done
grep -q '| ID *| Volume ID *| Status ' "$T/out" || fail "snapshot-list did not list: $(cat "$T/out" "$T/err")"
refute_grep "snapshot still listed after delete" "$sid" "$T/out"
pass "cinder snapshot-create/list/rename/delete"

# ------------------------------------------------------------------ types, quotas, limits, zones, services
types=$(cinder_max type-list)
grep -q '| default ' <<<"$types" && grep -q '| encrypted ' <<<"$types" || fail "type-list: $types"
assert_eq "$(cinder_max quota-show "$PROJECT" | field volumes)" 10 "quota-show volumes"
cinder_max quota-update --volumes 7 --gigabytes 50 "$PROJECT" >/dev/null
assert_eq "$(cinder_max quota-show "$PROJECT" | field volumes)" 7 "volumes quota after quota-update"
assert_eq "$(cinder_max quota-show "$PROJECT" | field gigabytes)" 50 "gigabytes quota after quota-update"
limits=$(cinder_max absolute-limits)
grep -q '| maxTotalVolumes  *| 7 ' <<<"$limits" || fail "absolute-limits: $limits"
grep -q '| totalVolumesUsed  *| 1 ' <<<"$limits" || fail "absolute-limits: $limits"
grep -q '| totalGigabytesUsed  *| 2 ' <<<"$limits" || fail "absolute-limits: $limits"
grep -q '| nova *| available ' <<<"$(cinder_max availability-zone-list)" || fail "availability-zone-list: $(cat "$T/out")"
services=$(cinder_max service-list)
grep -q '| cinder-scheduler | volgate *| nova | enabled | up ' <<<"$services" || fail "service-list: $services"
grep -q '| cinder-volume *| volgate@files | nova | enabled | up ' <<<"$services" || fail "service-list: $services"
summary=$(cinder_max summary)
assert_eq "$(field total_count <<<"$summary")" 1 "summary total_count"
assert_eq "$(field total_size <<<"$summary")" 2 "summary total_size"
pass "cinder type-list, quota-show/update, absolute-limits, availability-zone-list, service-list, summary"

# ------------------------------------------------------------------ refusals
rc=0
OS_VOLUME_API_VERSION=$MAX_VERSION cinder group-list >"$T/out" 2>"$T/err" || rc=$?
[[ $rc != 0 ]] || fail "group-list succeeded: $(cat "$T/out")"
grep -q 'does not offer volume groups' "$T/err" && grep -q 'HTTP 404' "$T/err" || fail "group-list: $(cat "$T/err")"
refute_grep "group-list crashed the client" Traceback "$T/err"
rc=0
OS_VOLUME_API_VERSION=$MAX_VERSION cinder create --name z --metadata 'bad?key=1' 1 >"$T/out" 2>"$T/err" || rc=$?
[[ $rc != 0 ]] && grep -q 'HTTP 400' "$T/err" || fail "bad metadata key: rc $rc, $(cat "$T/err")"
assert_eq "$(cinder_max summary | field total_count)" 1 "a refused create creates nothing"
pass "unsupported and bad requests: clear errors (404 groups, 400 bad metadata), nothing created"

cinder_max delete y >/dev/null
for ((i = 0; i < 100; i++)); do
    grep -q "$id" <<<"$(cinder_max list)" || break
    sleep 0.1
done
grep -q '| ID *| Status *| Name ' "$T/out" || fail "cinder list did not list: $(cat "$T/out" "$T/err")"
refute_grep "volume still listed after delete" "$id" "$T/out"
grep -q '| totalVolumesUsed  *| 0 ' <<<"$(cinder_max absolute-limits)" || fail "usage after delete: $(cat "$T/out")"
pass "cinder delete: the volume goes and its quota is released"

# ------------------------------------------------------------------ the Python library
"$SYSPY" - "$URL/v3/$PROJECT" "$MAX_VERSION" <<'PY' || fail "the Python library run failed (see above)"
import os, sys, time
from keystoneauth1 import session
from keystoneauth1.token_endpoint import Token
from cinderclient import api_versions, client, exceptions

endpoint, max_version = sys.argv[1], sys.argv[2]
sess = session.Session(auth=Token(endpoint=endpoint, token=os.environ["OS_TOKEN"]))
c = client.Client("3.70", session=sess)
highest = api_versions.get_highest_version(c)
assert highest.get_string() == max_version, highest
c = client.Client(max_version, session=sess)

def wait(get, id, want, key="status"):
    for _ in range(100):
        obj = get(id)
        if getattr(obj, key) == want:
            return obj
        assert getattr(obj, "status") != "error", obj._info
        time.sleep(0.1)
    raise AssertionError("%s %s never got %s=%s" % (id, obj._info, key, want))

vols = [c.volumes.create(1, name="lib%d" % i, metadata={"n": str(i)}) for i in range(3)]
for v in vols:
    wait(c.volumes.get, v.id, "available")
page = c.volumes.list(limit=2, sort="name:asc")
assert [v.name for v in page] == ["lib0", "lib1"], [v.name for v in page]
rest = c.volumes.list(marker=page[-1].id, sort="name:asc")
assert [v.name for v in rest] == ["lib2"], [v.name for v in rest]
assert [v.name for v in c.volumes.list(search_opts={"name": "lib1"})] == ["lib1"]
v = vols[0]
c.volumes.update(v, name="renamed", description="by the library")
c.volumes.set_metadata(v, {"extra": "yes"})
got = c.volumes.get(v.id)
assert got.name == "renamed" and got.description == "by the library", got._info
assert got.metadata == {"n": "0", "extra": "yes"}, got.metadata
c.volumes.delete_metadata(v, ["n"])
assert c.volumes.get(v.id).metadata == {"extra": "yes"}
c.volumes.extend(v, 3)
wait(c.volumes.get, v.id, 3, "size")
s = c.volume_snapshots.create(v.id, name="libsnap")
wait(c.volume_snapshots.get, s.id, "available")
c.volume_snapshots.update(s, name="libsnap2")
assert c.volume_snapshots.get(s.id).name == "libsnap2"
c.volume_snapshots.delete(s)
q = c.quotas.get("lib-project", usage=True)
assert q.volumes["limit"] == 10 and q.volumes["in_use"] == 0, q._info
c.quotas.update("lib-project", snapshots=3)
assert c.quotas.get("lib-project").snapshots == 3
absolute = {l.name: l.value for l in c.limits.get().absolute}
assert absolute["totalVolumesUsed"] == 3 and absolute["totalGigabytesUsed"] == 5, absolute
assert [z.zoneName for z in c.availability_zones.list()] == ["nova"]
assert sorted(s.binary for s in c.services.list()) == ["cinder-scheduler", "cinder-volume"]
assert {t.name for t in c.volume_types.list()} >= {"default", "encrypted"}
assert c.backups.list() == [], "no backups yet"
try:  # a volume from a backup (3.47) is a restore: an unknown backup is not found
    c.volumes.create(1, backup_id="0b7d9a3e-5c2f-4a51-9b1e-2f6c8d4e7a10")
    raise AssertionError("a volume from an unknown backup was accepted")
except exceptions.NotFound as e:
    assert "Backup 0b7d9a3e-5c2f-4a51-9b1e-2f6c8d4e7a10 could not be found" in str(e), str(e)
for _ in range(100):  # a volume with a snapshot cannot be deleted: wait for it to go
    try:
        c.volume_snapshots.get(s.id)
        time.sleep(0.1)
    except exceptions.NotFound:
        break
for v in vols:
    c.volumes.delete(v)
for _ in range(100):
    if not c.volumes.list():
        break
    time.sleep(0.1)
assert not c.volumes.list()
print("library: ok")
PY
pass "cinderclient library: discovery, create/list paging/update/metadata/extend, snapshots, quotas, limits, zones, services"

# ------------------------------------------------------------------ attachments
for ((i = 0; i < 100; i++)); do [[ -S $STATE/run/nbd.sock ]] && break; sleep 0.05; done
av=$(cinder_max create --name attach-me 1 | field id)
wait_for "$av" status available
server=5e1f7a3c-8d2b-4c6e-9a10-3b7f2d4e6c81
cinder_max attachment-create "$av" "$server" >"$T/att"
att=$(field id <"$T/att")
assert_eq "$(field status <"$T/att")" reserved "attachment-create without a connector"
assert_eq "$(show "$av" status)" reserved "volume after attachment-create"
cinder_max attachment-list >"$T/atts"
grep -q "$att" "$T/atts" || fail "attachment-list: $(cat "$T/atts")"
cinder_max attachment-delete "$att" >/dev/null
assert_eq "$(show "$av" status)" available "volume after attachment-delete"

cinder_max attachment-create --connect True --host "$(hostname)" --platform x86_64 --ostype linux \
    "$av" "$server" >"$T/att"
att=$(field id <"$T/att")
assert_eq "$(field status <"$T/att")" attaching "attachment-create --connect"
grep -q "driver_volume_type *| nbd" "$T/att" && grep -q "'export': 'volume-$av'" "$T/att" || fail "no NBD connection info: $(cat "$T/att")"
nbdinfo --size "$(unix_uri "volume-$av" "$STATE/run/nbd.sock")" >/dev/null || fail "the attachment's export is not served"
cinder_max attachment-complete "$att" >/dev/null
assert_eq "$(show "$av" status)" in-use "volume after attachment-complete"
assert_eq "$(cinder_max attachment-show "$att" | field status)" attached "attachment-show after complete"
rc=0
OS_VOLUME_API_VERSION=$MAX_VERSION cinder delete "$av" >"$T/out" 2>"$T/err" || rc=$?
grep -q 'attachment.*HTTP 409' "$T/out" "$T/err" || fail "delete of an attached volume: rc $rc, $(cat "$T/out" "$T/err")"
cinder_max attachment-delete "$att" >/dev/null
assert_eq "$(show "$av" status)" available "volume after the last attachment-delete"
nbdinfo --size "$(unix_uri "volume-$av" "$STATE/run/nbd.sock")" >/dev/null 2>&1 && fail "the export outlived its attachment"
cinder_max delete "$av" >/dev/null
pass "cinder attachment-create/--connect/list/show/complete/delete: states, NBD connection info, export served and removed"

stop_volgate "$CTL_PID" TERM 10
