#!/usr/bin/env bash
# Tokens with projects and roles, against a real controller on TCP, with curl, Debian's
# python3-cinderclient (CLI and library) and python3-novaclient:
#  - three tokens: members of projects alpha (token_file) and beta (token_sha256 only), and the
#    operator's token_file (an admin); an unknown token is 401;
#  - every cross-project access by a member is refused: through its own project's URL another
#    project's volume, snapshot and attachment are not found (404: show, list, update, delete,
#    actions, metadata, snapshots and attachments of them, copies of them), through the other
#    project's URL the request is malformed (400); lists never show another project's ids, even
#    with all_tenants=1; nothing of the other project changes;
#  - Nova's servers (libvirt's test driver, domains owned through their volgate metadata): a
#    member sees its project's servers only; another project's server, its volume attachments,
#    action log and actions are 404, and so is attaching another project's volume;
#  - admin actions (os-force_detach, os-reset_status, quotas, services, pools) are 403 for a
#    member, and work for the admin, whose all_tenants lists span every project;
#  - the tokens never reach the log; bad token configs stop the start with one line.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_volgate
require_tool curl cinder nova virsh
T=$TEST_TMP
STATE=$T/state
PORT=$(free_tcp_port)
URL=http://127.0.0.1:$PORT
json() { "$SYSPY" -c 'import json, sys; d = json.load(sys.stdin); r = eval(sys.argv[1]); print(r if not isinstance(r, (dict, list)) else json.dumps(r))' "$1"; }

# ------------------------------------------------------------------ tokens, servers, controller
mkdir -p "$STATE"
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$T/alpha.token"
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$T/beta.token"
chmod 600 "$T/alpha.token" "$T/beta.token"
BETA_SHA=$(tr -d '\n' <"$T/beta.token" | sha256sum | cut -d' ' -f1)

# libvirt's test driver reads its domains from this file: one server per project, one of none.
cat >"$T/hypervisor.xml" <<'XML'
<node>
  <domain type='test'>
    <name>web-alpha</name><uuid>aaaaaaaa-1111-4111-8111-111111111111</uuid>
    <memory>65536</memory><vcpu>1</vcpu><os><type>hvm</type></os>
    <metadata><volgate:owner xmlns:volgate="urn:volgate:server" project="alpha"/></metadata>
  </domain>
  <domain type='test'>
    <name>web-beta</name><uuid>bbbbbbbb-2222-4222-8222-222222222222</uuid>
    <memory>65536</memory><vcpu>1</vcpu><os><type>hvm</type></os>
    <metadata><volgate:owner xmlns:volgate="urn:volgate:server" project="beta"/></metadata>
  </domain>
  <domain type='test'>
    <name>unowned</name><uuid>cccccccc-3333-4333-8333-333333333333</uuid>
    <memory>65536</memory><vcpu>1</vcpu><os><type>hvm</type></os>
  </domain>
</node>
XML
ALPHA_SERVER=aaaaaaaa-1111-4111-8111-111111111111
BETA_SERVER=bbbbbbbb-2222-4222-8222-222222222222
virsh -c "test://$T/hypervisor.xml" metadata web-beta urn:volgate:server >"$T/virsh.out" 2>&1 || true
grep -q 'project="beta"' "$T/virsh.out" || fail "libvirt's test driver does not keep the owner metadata: $(cat "$T/virsh.out")"

write_config() {  # write_config FILE TOKENS_JSON
    cat >"$1" <<JSON
{
  "state_dir": "$STATE",
  "tcp_listen": "127.0.0.1:$PORT",
  "libvirt_uri": "test://$T/hypervisor.xml",
  "gateway": {"control_socket": "none"},
  "pools": [{"name": "files", "driver": "file", "directory": "$T/pool"}],
  "tokens": $2
}
JSON
}

# Bad token configs: one line naming the entry, exit 2, before anything listens.
refused_config() {  # refused_config TOKENS_JSON EXPECTED_TEXT
    write_config "$T/bad.json" "$1"
    local rc=0
    "$VOLGATE" controller --config "$T/bad.json" >"$T/bad.out" 2>"$T/bad.err" || rc=$?
    assert_eq "$rc" 2 "exit code of a controller with tokens $1"
    grep -qF -- "$2" "$T/bad.err" || fail "tokens $1: expected '$2', got: $(cat "$T/bad.err")"
}
refused_config '[{"project": "alpha", "role": "member"}]' 'tokens[0]: give the token as exactly one of token_file and token_sha256'
refused_config '[{"project": "alpha", "role": "owner", "token_file": "'"$T"'/alpha.token"}]' "tokens[0].role: must be admin or member, not 'owner'"
refused_config '[{"project": "a/b", "token_file": "'"$T"'/alpha.token"}]' "tokens[0].project: must be 1-64"
refused_config '[{"project": "beta", "token_sha256": "abc"}]' 'tokens[0].token_sha256: must be 64 hex digits'
refused_config '[{"project": "beta", "token_file": "'"$T"'/missing.token"}]' "$T/missing.token"
refused_config '[{"project": "alpha", "token_file": "'"$T"'/alpha.token"}, {"project": "beta", "token_sha256": "'"$(tr -d '\n' <"$T/alpha.token" | sha256sum | cut -d' ' -f1)"'"}]' \
    "tokens: the same token is given twice (for project 'alpha' and 'beta')"
pass "bad token configs: one line naming the entry, exit 2"

write_config "$T/controller.json" '[{"project": "alpha", "role": "member", "token_file": "'"$T"'/alpha.token"},
                                     {"project": "beta", "role": "member", "token_sha256": "'"$BETA_SHA"'"}]'
start_controller "$T/controller.json" "$STATE/controller.sock" '^http://'
ADMIN_TOKEN=$(cat "$STATE/token")
ALPHA_TOKEN=$(cat "$T/alpha.token")
BETA_TOKEN=$(cat "$T/beta.token")

# api TOKEN METHOD PATH [BODY]: prints "STATUS BODY"; the token goes through a header file, off
# the command line.
api() {
    local token=$1 method=$2 path=$3 body=${4:-}
    printf 'X-Auth-Token: %s\nOpenStack-API-Version: volume 3.53\nContent-Type: application/json\n' "$token" >"$T/headers"
    local args=(-s -o "$T/body" -w '%{http_code}' -X "$method" -H @"$T/headers" "$URL$path")
    [[ -n $body ]] && args+=(--data-binary "$body")
    local code
    code=$(curl "${args[@]}") || fail "curl $method $path failed"
    echo "$code $(cat "$T/body")"
}
# expect STATUS TOKEN METHOD PATH [BODY]: the status must be STATUS; prints the body
expect() {
    local want=$1 r
    shift
    r=$(api "$@")
    [[ ${r%% *} == "$want" ]] || fail "$2 $3 (token of $(who "$1")) -> ${r:0:300}, expected $want"
    echo "${r#* }"
}
who() { case $1 in "$ADMIN_TOKEN") echo admin ;; "$ALPHA_TOKEN") echo alpha ;; "$BETA_TOKEN") echo beta ;; *) echo other ;; esac; }
A=$ALPHA_TOKEN B=$BETA_TOKEN ADM=$ADMIN_TOKEN

expect 401 "not-a-token-at-all-0123456789" GET /v3/alpha/volumes >/dev/null
expect 401 "" GET /v3/alpha/volumes >/dev/null
expect 300 "" GET / >/dev/null  # the versions document needs none
pass "an unknown or missing token is 401; the versions document is open"

# ------------------------------------------------------------------ each project's objects
a_vol=$(expect 202 "$A" POST /v3/alpha/volumes '{"volume": {"size": 1, "name": "a-data"}}' | json "d['volume']['id']")
b_vol=$(expect 202 "$B" POST /v3/beta/volumes '{"volume": {"size": 1, "name": "b-data", "metadata": {"k": "v"}}}' | json "d['volume']['id']")
b_spare=$(expect 202 "$B" POST /v3/beta/volumes '{"volume": {"size": 1, "name": "b-spare"}}' | json "d['volume']['id']")
wait_available() {  # wait_available TOKEN PROJECT VOLUME
    local i s
    for ((i = 0; i < 100; i++)); do
        s=$(expect 200 "$1" GET "/v3/$2/volumes/$3" | json "d['volume']['status']")
        [[ $s == available ]] && return 0
        sleep 0.1
    done
    fail "volume $3 is $s, not available"
}
wait_available "$A" alpha "$a_vol"
wait_available "$B" beta "$b_vol"
wait_available "$B" beta "$b_spare"

# Images: a volume's upload is its project's unless public or community, as Glance shows images.
upload_image() {  # upload_image TOKEN PROJECT VOLUME VISIBILITY: prints the image's id
    local id
    id=$(expect 202 "$1" POST "/v3/$2/volumes/$3/action" \
        '{"os-volume_upload_image": {"image_name": "img-'"$4"'", "disk_format": "raw", "visibility": "'"$4"'"}}' |
        json "d['os-volume_upload_image']['image_id']")
    wait_available "$1" "$2" "$3"
    echo "$id"
}
private_image=$(upload_image "$A" alpha "$a_vol" private)
community_image=$(upload_image "$A" alpha "$a_vol" community)
from_image() { echo '{"volume": {"size": 1, "imageRef": "'"$1"'"}}'; }
refused=$(expect 400 "$B" POST /v3/beta/volumes "$(from_image "$private_image")" | json "d['badRequest']['message']")
missing=$(expect 400 "$B" POST /v3/beta/volumes "$(from_image 00000000-0000-4000-8000-000000000000)" |
    json "d['badRequest']['message']")
assert_eq "${refused//$private_image/ID}" "${missing//00000000-0000-4000-8000-000000000000/ID}" \
    "the answer for another project's private image (as for none)"
expect 400 "$B" POST /v3/beta/volumes "$(from_image "$private_image.json")" >/dev/null  # its record
# A file named like an image id with no record yet: an upload not finished, nobody's yet.
head -c 1048576 /dev/zero >"$STATE/images/11111111-2222-4333-8444-555555555555"
expect 400 "$B" POST /v3/beta/volumes "$(from_image 11111111-2222-4333-8444-555555555555)" >/dev/null
expect 400 "$A" POST /v3/alpha/volumes "$(from_image "$private_image.json")" >/dev/null
a_copy=$(expect 202 "$A" POST /v3/alpha/volumes "$(from_image "$private_image")" | json "d['volume']['id']")
b_copy=$(expect 202 "$B" POST /v3/beta/volumes "$(from_image "$community_image")" | json "d['volume']['id']")
wait_available "$A" alpha "$a_copy"
wait_available "$B" beta "$b_copy"
expect 202 "$A" DELETE "/v3/alpha/volumes/$a_copy" >/dev/null
expect 202 "$B" DELETE "/v3/beta/volumes/$b_copy" >/dev/null
pass "images: a private upload makes volumes in its project only (400 elsewhere, as for no image); a community one in any; records are no images"
b_snap=$(expect 202 "$B" POST /v3/beta/snapshots '{"snapshot": {"volume_id": "'"$b_vol"'", "name": "b-snap"}}' | json "d['snapshot']['id']")
for ((i = 0; i < 100; i++)); do
    [[ $(expect 200 "$B" GET "/v3/beta/snapshots/$b_snap" | json "d['snapshot']['status']") == available ]] && break
    sleep 0.1
done
b_att=$(expect 200 "$B" POST /v3/beta/attachments '{"attachment": {"volume_uuid": "'"$b_vol"'", "instance_uuid": "'"$BETA_SERVER"'"}}' |
    json "d['attachment']['id']")
# The owner reaches each of its objects (the refusals below are about whose they are).
expect 200 "$B" GET "/v3/beta/volumes/$b_vol" >/dev/null
expect 200 "$B" GET "/v3/beta/snapshots/$b_snap" >/dev/null
expect 200 "$B" GET "/v3/beta/attachments/$b_att" >/dev/null
expect 200 "$B" GET "/v3/beta/volumes/$b_vol/metadata" >/dev/null
snapshot_of_beta=$(expect 200 "$B" GET "/v3/beta/volumes/$b_vol" | json "d['volume']")

# ------------------------------------------------------------------ cross-project: 404, 400
cross=(
    "GET /volumes/$b_vol"
    "PUT /volumes/$b_vol {\"volume\": {\"name\": \"taken\"}}"
    "DELETE /volumes/$b_spare"
    "POST /volumes/$b_vol/action {\"os-extend\": {\"new_size\": 2}}"
    "POST /volumes/$b_spare/action {\"os-reserve\": null}"
    "POST /volumes/$b_vol/action {\"os-begin_detaching\": null}"
    "POST /volumes/$b_vol/action {\"os-unreserve\": null}"
    "GET /volumes/$b_vol/metadata"
    "GET /volumes/$b_vol/metadata/k"
    "PUT /volumes/$b_vol/metadata {\"metadata\": {\"k\": \"taken\"}}"
    "POST /volumes/$b_vol/metadata {\"metadata\": {\"x\": \"y\"}}"
    "DELETE /volumes/$b_vol/metadata/k"
    "POST /volumes {\"volume\": {\"source_volid\": \"$b_vol\"}}"
    "POST /volumes {\"volume\": {\"snapshot_id\": \"$b_snap\"}}"
    "GET /snapshots/$b_snap"
    "PUT /snapshots/$b_snap {\"snapshot\": {\"name\": \"taken\"}}"
    "DELETE /snapshots/$b_snap"
    "POST /snapshots {\"snapshot\": {\"volume_id\": \"$b_vol\", \"force\": true}}"
    "GET /attachments/$b_att"
    "PUT /attachments/$b_att {\"attachment\": {\"connector\": {\"host\": \"h\"}}}"
    "POST /attachments/$b_att/action {\"os-complete\": null}"
    "DELETE /attachments/$b_att"
    "POST /attachments {\"attachment\": {\"volume_uuid\": \"$b_spare\", \"instance_uuid\": \"$ALPHA_SERVER\"}}"
)
for c in "${cross[@]}"; do
    read -r method path body <<<"$c"
    msg=$(expect 404 "$A" "$method" "/v3/alpha$path" "$body" | json "d['itemNotFound']['message']")
    [[ -n $msg ]] || fail "$method $path: 404 without a message"
    # Through beta's URL: refused before anything is looked up, whether the id exists or not.
    expect 400 "$A" "$method" "/v3/beta$path" "$body" | grep -q "Malformed request URL: the URL's project 'beta' is not this token's project 'alpha'" ||
        fail "$method /v3/beta$path: not the malformed-URL answer"
done
expect 400 "$A" GET /v3/beta/volumes/00000000-0000-4000-8000-000000000000 >/dev/null
pass "${#cross[@]} cross-project requests (show, update, delete, actions, metadata, copies, snapshots, attachments): 404 through the member's URL, 400 through the other project's"

for list in volumes volumes/detail snapshots snapshots/detail attachments attachments/detail; do
    for q in "" "?all_tenants=1" "?all_tenants=True"; do
        body=$(expect 200 "$A" GET "/v3/alpha/$list$q")
        for id in "$b_vol" "$b_spare" "$b_snap" "$b_att"; do
            [[ $body != *"$id"* ]] || fail "alpha's $list$q shows beta's $id"
        done
    done
    expect 400 "$A" GET "/v3/beta/$list" >/dev/null
done
assert_eq "$(expect 200 "$A" GET "/v3/alpha/volumes?all_tenants=1" | json "[v['id'] for v in d['volumes']]")" "[\"$a_vol\"]" "alpha's volumes"
assert_eq "$(expect 200 "$A" GET /v3/alpha/volumes/summary | json "d['volume-summary']['total_count']")" 1 "alpha's summary count"
# Beta's objects are as they were.
assert_eq "$(expect 200 "$B" GET "/v3/beta/volumes/$b_vol" | json "d['volume']")" "$snapshot_of_beta" "beta's volume after the refusals"
assert_eq "$(expect 200 "$B" GET "/v3/beta/volumes/$b_spare" | json "d['volume']['status']")" available "beta's spare volume"
assert_eq "$(expect 200 "$B" GET "/v3/beta/snapshots/$b_snap" | json "d['snapshot']['name']")" b-snap "beta's snapshot"
assert_eq "$(expect 200 "$B" GET "/v3/beta/attachments/$b_att" | json "d['attachment']['status']")" reserved "beta's attachment"
assert_eq "$(expect 200 "$B" GET "/v3/beta/volumes?all_tenants=1" | json "len(d['volumes'])")" 2 "beta's volumes"
pass "lists show only the member's own objects (all_tenants ignored); nothing of beta changed"

# ------------------------------------------------------------------ admin actions
for body in '{"os-force_detach": {"attachment_id": "'"$b_att"'"}}' '{"os-reset_status": {"status": "available"}}' '{"os-force_delete": null}'; do
    msg=$(expect 403 "$B" POST "/v3/beta/volumes/$b_vol/action" "$body" | json "d['forbidden']['message']")
    [[ $msg == "Only an admin may do os-"* ]] || fail "403 message: $msg"
    # The same on an id that does not exist: a 403 says nothing about ids.
    expect 403 "$A" POST "/v3/alpha/volumes/00000000-0000-4000-8000-000000000000/action" "$body" >/dev/null
done
expect 403 "$A" GET /v3/alpha/os-services >/dev/null
expect 403 "$A" GET "/v3/alpha/scheduler-stats/get_pools?detail=true" >/dev/null
expect 403 "$A" PUT /v3/alpha/os-quota-sets/alpha '{"quota_set": {"volumes": 100}}' >/dev/null
expect 403 "$A" GET /v3/alpha/os-quota-sets/beta >/dev/null
expect 403 "$A" GET "/v3/alpha/limits?tenant_id=beta" >/dev/null
# A name given twice: the check and the route must not read different ones.
expect 403 "$A" GET "/v3/alpha/limits?tenant_id=alpha&tenant_id=beta" >/dev/null
API_VERSION='volume 3.39' expect 403 "$A" GET "/v3/alpha/limits?project_id=alpha&project_id=beta" >/dev/null
expect 200 "$A" GET "/v3/alpha/limits?tenant_id=alpha&tenant_id=alpha" >/dev/null
expect 400 "$ADM" GET "/v3/default/limits?tenant_id=alpha&tenant_id=beta" >/dev/null
expect 200 "$A" GET /v3/alpha/os-quota-sets/alpha >/dev/null
expect 200 "$A" GET /v3/alpha/limits >/dev/null
assert_eq "$(expect 200 "$B" GET "/v3/beta/attachments/$b_att" | json "d['attachment']['status']")" reserved "attachment after a member's force-detach"
pass "admin actions, quotas, services and pools: 403 for members (on any id)"

# The admin: every project's objects with all_tenants=1, any project's URL, and the admin actions.
all=$(expect 200 "$ADM" GET "/v3/default/volumes/detail?all_tenants=1")
assert_eq "$(echo "$all" | json "sorted(v['id'] for v in d['volumes'])")" \
    "$("$SYSPY" -c 'import json, sys; print(json.dumps(sorted(sys.argv[1:])))' "$a_vol" "$b_vol" "$b_spare")" "admin's all_tenants volumes"
assert_eq "$(expect 200 "$ADM" GET "/v3/default/volumes/detail" | json "len(d['volumes'])")" 0 "admin's list without all_tenants"
expect 200 "$ADM" GET "/v3/default/snapshots?all_tenants=1" | grep -q "$b_snap" || fail "admin's all_tenants snapshots"
expect 200 "$ADM" GET "/v3/default/attachments?all_tenants=1" | grep -q "$b_att" || fail "admin's all_tenants attachments"
expect 200 "$ADM" GET /v3/default/os-services >/dev/null
# Any project's object through any project's URL, as Cinder's admin; it acts in the object's project.
assert_eq "$(expect 200 "$ADM" GET "/v3/default/volumes/$b_vol" | json "d['volume']['os-vol-tenant-attr:tenant_id']")" beta "admin's show of beta's volume"
expect 200 "$ADM" GET "/v3/default/attachments/$b_att" >/dev/null
expect 202 "$ADM" POST "/v3/default/volumes/$b_vol/action" '{"os-force_detach": {"attachment_id": "'"$b_att"'"}}' >/dev/null
expect 404 "$B" GET "/v3/beta/attachments/$b_att" >/dev/null
wait_available "$B" beta "$b_vol"
pass "the admin lists every project with all_tenants=1, reaches beta's objects through its own URL and force-detaches"

# ------------------------------------------------------------------ Nova's servers
nova_api() { expect "$@"; }
servers=$(nova_api 200 "$A" GET /v2.1/servers/detail | json "sorted(s['name'] for s in d['servers'])")
assert_eq "$servers" '["web-alpha"]' "alpha's servers"
assert_eq "$(nova_api 200 "$A" GET /v2.1/alpha/servers | json "[s['id'] for s in d['servers']]")" "[\"$ALPHA_SERVER\"]" "alpha's servers (project URL)"
assert_eq "$(nova_api 200 "$A" GET "/v2.1/servers/$ALPHA_SERVER" | json "d['server']['tenant_id']")" alpha "alpha's server's tenant"
nova_api 200 "$A" GET "/v2.1/servers/$ALPHA_SERVER/os-volume_attachments" >/dev/null
assert_eq "$(nova_api 200 "$ADM" GET /v2.1/servers | json "len(d['servers'])")" 3 "the admin's servers"
for server in "$BETA_SERVER" web-beta unowned cccccccc-3333-4333-8333-333333333333; do
    for req in "GET /v2.1/servers/$server" "GET /v2.1/alpha/servers/$server" "GET /v2.1/servers/$server/os-volume_attachments" \
               "GET /v2.1/servers/$server/os-volume_attachments/$b_vol" "DELETE /v2.1/servers/$server/os-volume_attachments/$b_vol" \
               "GET /v2.1/servers/$server/os-instance-actions" \
               "POST /v2.1/servers/$server/os-volume_attachments {\"volumeAttachment\":{\"volumeId\":\"$a_vol\"}}" \
               "POST /v2.1/servers/$server/action {\"os-stop\":null}"; do
        read -r method path body <<<"$req"
        msg=$(nova_api 404 "$A" "$method" "$path" "$body" | json "d['itemNotFound']['message']")
        [[ $msg == "Instance $server could not be found." ]] || fail "$method $path: $msg"
    done
done
# Another project's volume onto its own server: the volume is not found.
msg=$(nova_api 404 "$A" POST "/v2.1/servers/$ALPHA_SERVER/os-volume_attachments" '{"volumeAttachment": {"volumeId": "'"$b_spare"'"}}' |
    json "d['itemNotFound']['message']")
[[ $msg == *"$b_spare"* ]] || fail "attach of beta's volume: $msg"
nova_api 400 "$A" GET /v2.1/beta/servers >/dev/null
assert_eq "$(expect 200 "$B" GET "/v3/beta/volumes/$b_spare" | json "d['volume']['status']")" available "beta's volume after alpha's attach"
pass "Nova: a member sees its project's servers only; others' (and unowned ones) are 404 in show, attachments, actions; others' volumes cannot be attached"

# ------------------------------------------------------------------ the OpenStack clients
unset OS_AUTH_TYPE OS_AUTH_PLUGIN OS_AUTH_SYSTEM OS_AUTH_URL OS_USERNAME OS_PASSWORD OS_COMPUTE_API_VERSION
export OS_VOLUME_API_VERSION=3.53
# cinder_as TOKEN PROJECT ARGS...: output in $T/out, stderr in $T/err; its exit status
cinder_as() {
    local token=$1 project=$2
    shift 2
    OS_TOKEN=$token CINDER_ENDPOINT=$URL/v3/$project OS_PROJECT_ID=$project \
        cinder --os-auth-type admin_token "$@" >"$T/out" 2>"$T/err"
}
cinder_as "$A" alpha list || fail "cinder list as alpha: $(cat "$T/err")"
grep -q "$a_vol" "$T/out" || fail "cinder list as alpha misses its volume: $(cat "$T/out")"
! grep -qE "$b_vol|$b_spare" "$T/out" || fail "cinder list as alpha shows beta's: $(cat "$T/out")"
cinder_as "$A" alpha list --all-tenants || fail "cinder list --all-tenants as alpha: $(cat "$T/err")"
! grep -qE "$b_vol|$b_spare" "$T/out" || fail "cinder list --all-tenants as alpha shows beta's: $(cat "$T/out")"
cinder_as "$B" beta show "$b_vol" || fail "cinder show as beta: $(cat "$T/err")"
for cmd in "show $b_vol" "delete $b_spare" "rename $b_vol taken" "extend $b_vol 2" "snapshot-show $b_snap" "snapshot-delete $b_snap" \
           "metadata $b_vol set k=taken"; do
    # shellcheck disable=SC2086  # the words of the command
    if cinder_as "$A" alpha $cmd; then fail "cinder $cmd as alpha succeeded: $(cat "$T/out")"; fi
    grep -qiE "No (volume|snapshot) with a name or ID of|could not be found|ERROR" "$T/err" || fail "cinder $cmd as alpha: $(cat "$T/err")"
done
if cinder_as "$A" alpha reset-state --state available "$a_vol"; then fail "cinder reset-state as a member succeeded"; fi
# cinderclient prints each volume's failure on stdout and its summary on stderr.
grep -q "Only an admin may do os-reset_status. (HTTP 403)" "$T/out" "$T/err" || fail "cinder reset-state as alpha: $(cat "$T/out" "$T/err")"
cinder_as "$ADM" default list --all-tenants || fail "cinder list --all-tenants as admin: $(cat "$T/err")"
for id in "$a_vol" "$b_vol" "$b_spare"; do grep -q "$id" "$T/out" || fail "admin's cinder list --all-tenants misses $id"; done
cinder_as "$B" beta show "$b_vol" && grep -q b-data "$T/out" || fail "beta's volume after alpha's cinder commands: $(cat "$T/out")"

"$SYSPY" - "$URL" "$A" "$b_vol" "$a_vol" <<'PY' || fail "cinderclient library as alpha"
import sys
from keystoneauth1 import session
from keystoneauth1.token_endpoint import Token
from cinderclient import client, exceptions
url, token, other, own = sys.argv[1:]
cinder = client.Client("3.53", session=session.Session(auth=Token(endpoint=url + "/v3/alpha", token=token)))
assert [v.id for v in cinder.volumes.list(search_opts={"all_tenants": 1})] == [own]
try:
    cinder.volumes.get(other)
    raise SystemExit("another project's volume was shown")
except exceptions.NotFound:
    pass
try:
    cinder.volumes.reset_state(own, "error")
    raise SystemExit("a member reset a volume's state")
except exceptions.Forbidden as e:
    assert "Only an admin may do os-reset_status" in str(e), e
PY

export OS_AUTH_URL=http://127.0.0.1:1/unused  # novaclient insists on one; admin_token never contacts it
nova_as() {  # nova_as TOKEN PROJECT ARGS...
    local token=$1 project=$2
    shift 2
    OS_TOKEN=$token OS_PROJECT_ID=$project nova --os-auth-type admin_token --os-endpoint "$URL/v2.1/$project" "$@" >"$T/out" 2>"$T/err"
}
nova_as "$A" alpha list || fail "nova list as alpha: $(cat "$T/err")"
grep -q web-alpha "$T/out" && ! grep -qE "web-beta|unowned" "$T/out" || fail "nova list as alpha: $(cat "$T/out")"
if nova_as "$A" alpha show "$BETA_SERVER"; then fail "nova show of beta's server as alpha succeeded"; fi
grep -qi "No server with a name or ID of\|could not be found" "$T/err" || fail "nova show as alpha: $(cat "$T/err")"
if nova_as "$A" alpha volume-attachments "$BETA_SERVER"; then fail "nova volume-attachments of beta's server as alpha succeeded"; fi
nova_as "$B" beta show web-beta || fail "nova show as beta: $(cat "$T/err")"
pass "cinderclient (CLI and library) and novaclient as members and admin: each sees and reaches its own"

# ------------------------------------------------------------------ secrets
for token in "$ADMIN_TOKEN" "$ALPHA_TOKEN" "$BETA_TOKEN"; do
    ! grep -qF "$token" "$VG_ERR" "$STATE/controller.db" || fail "a token is in the log or the database"
done
grep -q "GET /v3/alpha/os-services (member of alpha): 403" "$VG_ERR" || fail "the log does not say who was refused"
pass "tokens are in neither the log nor the database; the log names the caller's role and project"
