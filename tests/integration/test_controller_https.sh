#!/usr/bin/env bash
# The controller's API over HTTPS (--tls-certificates / the config's tls_certificates), with a
# CA and a server certificate (localhost, 127.0.0.1) made here with openssl:
#  - curl with --cacert is served (token and all); without the CA it fails verification; plain
#    HTTP to the HTTPS port fails and leaves the controller serving;
#  - the volgate CLI with --cacert (and VOLGATE_CACERT) creates and lists volumes; a host name
#    the certificate does not name is refused, the same call with a name it does succeeding;
#  - python3-cinderclient lists and creates volumes over HTTPS, with --os-cacert, and
#    python3-novaclient lists servers (libvirt's test driver) with OS_CACERT;
#  - clients that connect and send nothing, send garbage, or stop mid-handshake are each cut
#    off with one log line while another client is served;
#  - a non-loopback --listen without certificates is refused at start: exit 2, one line.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_volgate
require_tool curl openssl cinder nova
T=$TEST_TMP
STATE=$T/state
SOCK=$STATE/controller.sock
PORT=$(free_tcp_port)
PROJECT=demo

# ---- a CA and the server's certificate, in the layout `volgate serve --tls-certificates` reads
mkdir -p "$T/ca" "$T/server" "$T/other-ca"
ec_key() { echo "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"; }
# shellcheck disable=SC2046
{
    for ca in ca other-ca; do
        openssl req -x509 $(ec_key) -keyout "$T/$ca/key.pem" -out "$T/$ca/cert.pem" -days 30 \
            -subj "/CN=volgate https test $ca" 2>/dev/null
    done
    openssl req $(ec_key) -keyout "$T/server/server-key.pem" -out "$T/server.csr" -subj /CN=localhost 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$T/server.ext"
    openssl x509 -req -in "$T/server.csr" -CA "$T/ca/cert.pem" -CAkey "$T/ca/key.pem" -CAcreateserial \
        -days 30 -extfile "$T/server.ext" -out "$T/server/server-cert.pem" 2>/dev/null
}
cp "$T/ca/cert.pem" "$T/server/ca-cert.pem"
chmod 600 "$T/server/server-key.pem"
CA=$T/ca/cert.pem

# ---- a non-loopback listener without certificates: refused at start, one line, exit 2
# (first: the same start with certificates is not refused, below, on 0.0.0.0)
set +e
"$VOLGATE" controller --state-dir "$T/refused" --listen "0.0.0.0:$PORT" >"$T/refused.out" 2>"$T/refused.err"
rc=$?
set -e
assert_eq "$rc" 2 "exit code of a plain HTTP listener on 0.0.0.0"
assert_eq "$(wc -l <"$T/refused.err")" 1 "lines on stderr for the refused start"
grep -q "plain HTTP only on a loopback address" "$T/refused.err" || fail "refusal: $(cat "$T/refused.err")"
[[ ! -e $T/refused/controller.db ]] || fail "the refused start created a database"
pass "a non-loopback listener without certificates is refused: $(cat "$T/refused.err")"

# HTTPS on every address (non-loopback, allowed with certificates): 127.0.0.2 reaches it too, a
# name the certificate does not hold. A short handshake limit for the stallers below.
cat >"$T/controller.json" <<JSON
{
  "state_dir": "$STATE",
  "tcp_listen": "0.0.0.0:$PORT",
  "tls_certificates": "$T/server",
  "api_limits": {"handshake_timeout": 1},
  "quotas": {"volumes": 10, "snapshots": 10, "gigabytes": 100},
  "pools": [{"name": "files", "driver": "file", "directory": "$T/pool"}],
  "gateway": {"control_socket": "none"},
  "libvirt_uri": "test:///default"
}
JSON
start_controller "$T/controller.json" "$SOCK" '^https://'
LOG=$VG_ERR
grep -q "^https://0.0.0.0:$PORT$" "$T"/controller.*.out || fail "listening line: $(cat "$T"/controller.*.out)"
URL=https://localhost:$PORT
AUTH=$T/auth.header
(umask 077 && printf 'X-Auth-Token: %s\n' "$(cat "$STATE/token")" >"$AUTH")

# ---- curl: with the CA it is served; without it verification fails; plain HTTP fails
code=$(curl -sS --cacert "$CA" -o "$T/body" -w '%{http_code}' -H @"$AUTH" "$URL/v3/$PROJECT/volumes")
assert_eq "$code" 200 "curl --cacert with the token"
code=$(curl -sS --cacert "$CA" -o /dev/null -w '%{http_code}' "https://127.0.0.1:$PORT/v3/$PROJECT/volumes")
assert_eq "$code" 401 "curl --cacert without the token (by IP address)"
set +e
curl -sS -o /dev/null -H @"$AUTH" "$URL/v3/$PROJECT/volumes" 2>"$T/curl.err"
rc=$?
set -e
assert_eq "$rc" 60 "curl exit code without the CA (peer certificate cannot be verified)"
set +e
curl -sS -o /dev/null --max-time 5 -H @"$AUTH" "http://127.0.0.1:$PORT/v3/$PROJECT/volumes" 2>"$T/plain.err"
rc=$?
set -e
[[ $rc == 52 || $rc == 56 ]] || fail "plain HTTP to the HTTPS port: curl exit $rc ($(cat "$T/plain.err"))"
wait_for_line "$LOG" "TLS handshake failed: http request" "the log line for plain HTTP"
assert_alive "$CTL_PID"
pass "curl: served with --cacert, refused without the CA (exit 60), plain HTTP fails cleanly (exit $rc)"

# ---- the volgate CLI
export VOLGATE_TOKEN_FILE=$STATE/token
"$VOLGATE" volume create --url "$URL" --cacert "$CA" --project "$PROJECT" --size 1 \
    --output json over-tls >"$T/create.json" 2>"$T/cli.err" || fail "volume create over HTTPS: $(cat "$T/cli.err")"
vid=$("$SYSPY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["volume"]["id"])' "$T/create.json")
VOLGATE_URL=$URL VOLGATE_CACERT=$CA "$VOLGATE" volume list --project "$PROJECT" >"$T/list" 2>"$T/cli.err" ||
    fail "volume list over HTTPS (env): $(cat "$T/cli.err")"
grep -q "$vid" "$T/list" || fail "volume list: $(cat "$T/list")"
# the same call with a name the certificate does not hold, or without the CA: refused
"$VOLGATE" volume list --url "https://127.0.0.1:$PORT" --cacert "$CA" --project "$PROJECT" >/dev/null ||
    fail "volume list by the certificate's IP address"
set +e
"$VOLGATE" volume list --url "https://127.0.0.2:$PORT" --cacert "$CA" --project "$PROJECT" >/dev/null 2>"$T/name.err"
rc_name=$?
"$VOLGATE" volume list --url "$URL" --cacert "$T/other-ca/cert.pem" --project "$PROJECT" >/dev/null 2>"$T/ca.err"
rc_ca=$?
"$VOLGATE" volume list --url "$URL" --project "$PROJECT" >/dev/null 2>"$T/noca.err"
rc_noca=$?
set -e
assert_eq "$rc_name" 2 "CLI exit code for a host name the certificate does not hold"
grep -q "certificate verify failed (IP address mismatch)" "$T/name.err" || fail "wrong name: $(cat "$T/name.err")"
assert_eq "$rc_ca" 2 "CLI exit code with another CA"
grep -q "certificate verify failed" "$T/ca.err" || fail "another CA: $(cat "$T/ca.err")"
assert_eq "$rc_noca" 2 "CLI exit code without --cacert (system CAs)"
pass "volgate CLI over HTTPS with --cacert and VOLGATE_CACERT; refused: $(cat "$T/name.err")"

# ---- python3-cinderclient (requests underneath) with --os-cacert
unset OS_AUTH_TYPE OS_AUTH_PLUGIN OS_AUTH_SYSTEM OS_VOLUME_API_VERSION OS_AUTH_URL OS_USERNAME OS_PASSWORD
cinder() { command cinder --os-auth-type admin_token --os-cacert "$CA" "$@"; }
OS_TOKEN=$(cat "$STATE/token")
export OS_TOKEN OS_PROJECT_ID=$PROJECT CINDER_ENDPOINT=$URL/v3/$PROJECT
cinder create --name by-cinder 1 >"$T/cinder.out" 2>"$T/cinder.err" || fail "cinder create: $(cat "$T/cinder.err")"
cinder list >"$T/cinder.out" 2>"$T/cinder.err" || fail "cinder list: $(cat "$T/cinder.err")"
grep -q "by-cinder" "$T/cinder.out" || fail "cinder list: $(cat "$T/cinder.out")"
grep -q "$vid" "$T/cinder.out" || fail "cinder list lacks $vid: $(cat "$T/cinder.out")"
set +e
command cinder --os-auth-type admin_token list >/dev/null 2>"$T/cinder-noca.err"
rc=$?
set -e
[[ $rc != 0 ]] || fail "cinder list without the CA succeeded"
grep -qi "certificate" "$T/cinder-noca.err" || fail "cinder without the CA: $(cat "$T/cinder-noca.err")"
pass "cinderclient create and list over HTTPS with --os-cacert; without it: refused"

# novaclient 18.1 insists on an auth URL even for admin_token, which never contacts it
OS_CACERT=$CA OS_PROJECT_ID=default OS_AUTH_URL=http://127.0.0.1:1/unused \
    command nova --os-auth-type admin_token --os-endpoint "$URL/v2.1" list >"$T/nova.out" 2>"$T/nova.err" ||
    fail "nova list over HTTPS: $(cat "$T/nova.err")"
grep -Eq "\| test +\| (ACTIVE|SHUTOFF)" "$T/nova.out" || fail "nova list: $(cat "$T/nova.out")"
pass "novaclient list over HTTPS with OS_CACERT"

# ---- stallers: silent, garbage, half a ClientHello; each cut off, another client served
"$SYSPY" - "$PORT" "$CA" "$AUTH" <<'PY' || fail "stallers (see above)"
import socket, ssl, subprocess, sys, time
port, ca, auth = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def connect():
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(5)
    return s
silent = connect()
garbage = connect()
garbage.sendall(b"\x00GARBAGE that is no TLS record at all\r\n\r\n" * 4)
# The first bytes of a real ClientHello, then nothing.
context = ssl.create_default_context(cafile=ca)
incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
try:
    tls.do_handshake()
except ssl.SSLWantReadError:
    pass
hello = outgoing.read()
half = connect()
half.sendall(hello[: len(hello) // 2])
start = time.monotonic()
# Meanwhile another client is served at once.
code = subprocess.run(["curl", "-sS", "--cacert", ca, "-o", "/dev/null", "-w", "%{http_code}", "-H", "@" + auth,
                       f"https://localhost:{port}/v3/demo/volumes"], capture_output=True, text=True).stdout
assert code == "200", f"curl during the stallers: {code}"
assert time.monotonic() - start < 0.9, "the other client waited for the stallers"
for name, s in (("silent", silent), ("garbage", garbage), ("half handshake", half)):
    try:
        data = s.recv(4096)
        while data and data[0] == 0x15:  # a TLS alert first (garbage): then the close
            data = s.recv(4096)
    except ConnectionResetError:
        data = b""
    except socket.timeout:
        sys.exit(f"{name}: still open after 5 s")
    assert data == b"", f"{name}: got {data!r}"
    print(f"{name}: closed after {time.monotonic() - start:.1f} s")
PY
wait_for_line "$LOG" "no TLS handshake within its time limit" "the log line for a staller"
assert_eq "$(grep -c 'no TLS handshake within its time limit' "$LOG")" 2 "timeout lines (silent, half handshake)"
# plain HTTP, garbage, and the alerts of curl, the CLI (name, other CA, no CA) and cinder without the CA
assert_eq "$(grep -c 'TLS handshake failed' "$LOG")" 7 "handshake failure lines"
assert_alive "$CTL_PID"
pass "silent, garbage and half-handshake clients cut off with one line each; another client served meanwhile"

kill -TERM "$CTL_PID"
wait "$CTL_PID" || fail "controller exit code $?"
check_sanitizer_reports "$CTL_PID"
_forget_pid "$CTL_PID"
pass "controller HTTPS"
