# Talking to the controller's Cinder API from a test: the cinder CLI (admin token) and curl.
# Sourced by tests that set T (work dir), STATE (the controller's), URL, PROJECT and SYSPY
# first; these are read when a function is called.

# use_admin_token: the controller's admin token for the cinder CLI (environment) and for curl
# (AUTH, a header file only the test can read).
use_admin_token() {
    unset OS_AUTH_TYPE OS_AUTH_PLUGIN OS_AUTH_SYSTEM OS_AUTH_URL OS_USERNAME OS_PASSWORD
    OS_TOKEN=$(cat "$STATE/token")
    export OS_TOKEN CINDER_ENDPOINT=$URL/v3/$PROJECT OS_PROJECT_ID=$PROJECT OS_VOLUME_API_VERSION=3.53
    AUTH=$T/auth.header
    (umask 077 && printf 'X-Auth-Token: %s\n' "$OS_TOKEN" >"$AUTH")
}

# cinder ARGS...: the CLI; its output, or the test fails with what it said.
cinder() { command cinder --os-auth-type admin_token "$@" >"$T/out" 2>"$T/err" || fail "cinder $*: $(cat "$T/err" "$T/out")"; cat "$T/out"; }
# get KIND ID EXPR: a field of GET /v3/PROJECT/KIND/ID (curl: quicker than the CLI for polling)
get() {
    curl -s -H @"$AUTH" -H 'OpenStack-API-Version: volume 3.53' "$URL/v3/$PROJECT/$1/$2" |
        "$SYSPY" -c 'import json, sys; d = json.load(sys.stdin); d = d.get(sys.argv[1][:-1], d); print(eval(sys.argv[2]))' "$1" "$3"
}
# wait_status KIND ID STATUS: until its status is STATUS (30 s); any other final state fails
wait_status() {
    local i got
    for ((i = 0; i < 300; i++)); do
        got=$(get "$1" "$2" "d.get('status', d)")
        [[ $got == "$3" ]] && return 0
        [[ $got == error* ]] && fail "$1 $2 went to $got: $(get "$1" "$2" "d.get('fail_reason') or d.get('volgate:error')")"
        sleep 0.1
    done
    fail "$1 $2 is $got, expected $3"
}
# gone KIND ID: until GET answers 404 (10 s)
gone() {
    local i
    for ((i = 0; i < 100; i++)); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' -H @"$AUTH" "$URL/v3/$PROJECT/$1/$2") == 404 ]] && return 0
        sleep 0.1
    done
    fail "$1 $2 still there"
}
