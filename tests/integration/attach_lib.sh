# shellcheck shell=bash disable=SC2034  # variables here are used by the scripts that source this file
# Nova's os-volume_attachments against the real controller, for the attach tests that inject
# faults. Source it after lib.sh and guest_lib.sh, once STATE (the controller's state
# directory) is set:
#   nova STATUS METHOD PATH [BODY]  a /v2.1 request (compute 2.89) that must answer STATUS; prints the body
#   json EXPR                       evaluates EXPR on the JSON of stdin (d)
#   vol_status VOLUME               the volume's status
#   wait_gateway                    until the gateway a controller --gateway starts answers
#   exports                         the gateway's exports, sorted, space-separated (none when
#                                   GATEWAY_DOWN=1)
#   assert_attached VOLUME SERVER   attached whole: in-use, one attachment, its mapping, its export,
#                                   its disk in the live XML and in the definition
#   assert_detached VOLUME SERVER   nothing of it anywhere: available, no attachment, no mapping,
#                                   no export, no disk live or in the definition
#   assert_settled VOLUME SERVER    one of the two (after a crash); prints which
#   assert_no_sanitizer_reports     no sanitizer report in any controller's or the gateway's log

SOCK=$STATE/controller.sock
GW=$STATE/run/gateway.sock
AUTH=$TEST_TMP/auth.header
export VOLGATE_URL=unix:$SOCK

json() { "$SYSPY" -c 'import json, sys; d = json.load(sys.stdin); r = eval(sys.argv[1]); print(r if not isinstance(r, (dict, list)) else json.dumps(r))' "$1"; }

# The API token, once the controller has made it.
auth_header() {
    (umask 077 && printf 'X-Auth-Token: %s\n' "$(cat "$STATE/token")" >"$AUTH")
}

nova() {
    local want=$1 method=$2 path=$3 code
    local args=(-s --max-time 120 -o "$TEST_TMP/api.body" -w '%{http_code}' --unix-socket "$SOCK" -X "$method"
                -H @"$AUTH" -H 'OpenStack-API-Version: compute 2.89')
    [[ $# -ge 4 ]] && args+=(-H 'Content-Type: application/json' --data "$4")
    code=$(curl "${args[@]}" "http://localhost/v2.1$path") || true
    [[ $code == "$want" ]] || fail "$method $path -> $code $(cat "$TEST_TMP/api.body" 2>/dev/null) (expected $want)"
    cat "$TEST_TMP/api.body"
}

# The Cinder API straight (curl starts faster than the CLI; these run hundreds of times).
volume_json() {
    curl -s --max-time 30 --unix-socket "$SOCK" -H @"$AUTH" "http://localhost/v3/default/volumes/$1"
}
vol_status() { volume_json "$1" | json "d['volume']['status']"; }
vol_attachments() { volume_json "$1" | json "len(d['volume']['attachments'])"; }
# A controller started with --gateway starts the gateway within gateway.check_interval: wait
# for it (5 s at most), so that the next attach does not meet a gateway not yet up (503).
wait_gateway() {
    local i
    for ((i = 0; i < 100; i++)); do
        curl -s --max-time 1 --unix-socket "$GW" http://gateway/v1/health >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    fail "no gateway answers on $GW 5 s after the controller started"
}
exports() {
    # A test that stopped the gateway on purpose says so (GATEWAY_DOWN=1): it serves nothing.
    [[ ${GATEWAY_DOWN:-0} == 1 ]] && return 0
    curl -s --max-time 5 --unix-socket "$GW" http://gateway/v1/exports |
        json "' '.join(sorted(e['name'] for e in d['exports']))"
}
# in_xml SERVER VOLUME [--inactive]: true when the domain's XML has the volume's disk
# (A virsh that fails fails the test: a domain we cannot read is not one without the disk.)
in_xml() {
    local xml
    xml=$("${VIRSH[@]}" dumpxml ${3:+"$3"} "$1") || fail "virsh dumpxml $1 failed"
    grep -q "<serial>$2</serial>" <<<"$xml"
}
mapped() {
    nova 200 GET "/servers/$1/os-volume_attachments" | json "'$2' in [a['volumeId'] for a in d['volumeAttachments']]"
}
unfinished_flows() { sqlite3 "$STATE/controller.db" "SELECT count(*) FROM flow_journal"; }

assert_attached() {
    local vol=$1 server=$2
    assert_eq "$(vol_status "$vol")" in-use "status of $vol"
    assert_eq "$(vol_attachments "$vol")" 1 "attachments of $vol"
    assert_eq "$(mapped "$server" "$vol")" True "$vol in os-volume_attachments"
    [[ " $(exports) " == *" volume-$vol "* ]] || fail "the gateway does not serve volume-$vol: $(exports)"
    in_xml "$server" "$vol" || fail "$vol is not in the live XML"
    in_xml "$server" "$vol" --inactive || fail "$vol is not in the definition"
}

assert_detached() {
    local vol=$1 server=$2
    assert_eq "$(vol_status "$vol")" available "status of $vol"
    assert_eq "$(vol_attachments "$vol")" 0 "attachments of $vol"
    assert_eq "$(mapped "$server" "$vol")" False "$vol in os-volume_attachments"
    [[ " $(exports) " != *" volume-$vol "* ]] || fail "the gateway still serves volume-$vol"
    in_xml "$server" "$vol" && fail "$vol is still in the live XML"
    in_xml "$server" "$vol" --inactive && fail "$vol is still in the definition"
    return 0
}

assert_settled() {
    local vol=$1 server=$2 status
    assert_eq "$(unfinished_flows)" 0 "flows left in the journal"
    status=$(vol_status "$vol")
    case $status in
        in-use) assert_attached "$vol" "$server"; echo attached ;;
        available) assert_detached "$vol" "$server"; echo detached ;;
        *) fail "volume $vol is $status after the restart" ;;
    esac
}

# Controllers here are stopped and killed many times over: their logs are checked all at once
# (lib.sh's EXIT trap checks them again at the end).
assert_no_sanitizer_reports() {
    _scan_sanitizer_reports "$TEST_TMP"/controller.*.err "$STATE/gateway.log" ||
        fail "sanitizer reports in the logs above"
}
