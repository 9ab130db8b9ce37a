#!/usr/bin/env bash
# The controller's REST API against hostile clients (each case failed before its fix):
#  - imageRef copies only regular files beneath the image directories: /etc/passwd, `../`
#    escapes, a symlink pointing out, a FIFO and a directory get one and the same 400, and no
#    volume is made;
#  - a body nested 300,000 levels deep (600 KB, under the body limit) gets 400 on every route
#    that reads a body, and the controller stays up (it died of a stack overflow);
#  - slow clients are cut off: no request within the idle timeout, a header not finished within
#    the header timeout, a body not finished within the body timeout (no token needed for any);
#  - connections over max_connections are closed at once, and the API works again after;
#    connections held on TCP (no token needed) do not lock out the unix socket, which has a
#    budget of its own;
#  - a header up to 16 KiB is taken and a larger one gets 431; an answer to HEAD has no body
#    (the next answer on the connection follows the headers at once);
#  - a line break in a client's text (a refused imageRef) is escaped in the log, so a client
#    cannot write a log line of its own;
#  - out of descriptors (EMFILE), the accept loop pauses instead of spinning: the controller
#    uses little CPU and writes few log lines, and serves again once descriptors are free;
#  - a token or master key file readable by others is warned about at start.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_volgate
require_tool curl
T=$TEST_TMP
STATE=$T/state
SOCK=$STATE/controller.sock
PORT=$(free_tcp_port)
export VOLGATE_URL=unix:$SOCK
mkdir -p "$T/images"
cat >"$T/controller.json" <<JSON
{
  "state_dir": "$STATE",
  "image_dirs": ["$T/images"],
  "tcp_listen": "127.0.0.1:$PORT",
  "api_limits": {"idle_timeout": 3, "header_timeout": 2, "body_timeout": 2, "max_connections": 24},
  "pools": [{"name": "p", "driver": "file", "directory": "$T/pool"}]
}
JSON
start_controller "$T/controller.json" "$SOCK" '^http://'
TOKEN_FILE=$STATE/token

# api METHOD PATH [BODY-FILE]: prints "STATUS BODY"; the token goes in a header file
AUTH=$T/auth.header
(umask 077 && printf 'X-Auth-Token: %s\n' "$(cat "$TOKEN_FILE")" >"$AUTH")
# api METHOD PATH [BODY_FILE]: "CODE BODY". $API_VERSION, when set, is sent as OpenStack-API-Version.
api() {
    local args=(-s -o "$T/api.body" -w '%{http_code}' --unix-socket "$SOCK" -X "$1" -H @"$AUTH")
    [[ -n ${API_VERSION:-} ]] && args+=(-H "OpenStack-API-Version: $API_VERSION")
    [[ $# -ge 3 ]] && args+=(-H 'Content-Type: application/json' --data-binary @"$3")
    echo "$(curl "${args[@]}" "http://localhost$2") $(head -c 2000 "$T/api.body")"
}
volume_count() {
    api GET /v3/default/volumes | sed 's/^[0-9]* //' | "$SYSPY" -c 'import json, sys; print(len(json.load(sys.stdin)["volumes"]))'
}

# ------------------------------------------------------------------ imageRef confinement
head -c 1M /dev/urandom >"$T/images/good.raw"
mkdir "$T/images/dir.raw"
mkfifo "$T/images/fifo.raw"
ln -s /etc/passwd "$T/images/link.raw"
ln -s /etc "$T/images/etc"
before=$(volume_count)
declare -A messages=()
for ref in /etc/passwd "$T/images/../controller.json" ../controller.json "$T/images/link.raw" link.raw \
    etc/passwd "$T/images/fifo.raw" "$T/images/dir.raw" "$STATE/master.key" "$T/images/missing.raw" \
    /nonexistent/x; do
    printf '{"volume": {"size": 1, "imageRef": "%s"}}' "$ref" >"$T/body.json"
    r=$(api POST /v3/default/volumes "$T/body.json")
    [[ ${r%% *} == 400 ]] || fail "imageRef $ref: $r"
    messages[${r//$ref/REF}]=1
done
assert_eq "${#messages[@]}" 1 "one message for every refused imageRef (${!messages[*]})"
assert_eq "$(volume_count)" "$before" "volumes after refused imageRefs"
printf '{"volume": {"size": 1, "imageRef": "good.raw"}}' >"$T/body.json"
r=$(api POST /v3/default/volumes "$T/body.json")
[[ ${r%% *} == 202 ]] || fail "imageRef good.raw: $r"
assert_alive "$CTL_PID"
pass "imageRef: only regular files beneath the image directory; the rest one 400, nothing copied"

# ------------------------------------------------------------------ log lines from client text
forged='2026-12-05T23:59:59.000 info GET /v3/beta/volumes (admin of default): 200'
printf '{"volume": {"size": 1, "imageRef": "x\\n%s"}}' "$forged" >"$T/body.json"
r=$(api POST /v3/default/volumes "$T/body.json")
[[ ${r%% *} == 400 ]] || fail "imageRef with a line break: $r"
err=$(ls -t "$T"/controller.*.err | head -1)
grep -qF "x\\n$forged" "$err" || fail "the refused imageRef is not in the log, escaped: $(tail -3 "$err")"
! grep -q "^$forged" "$err" || fail "a client's imageRef wrote a log line of its own: $(grep -n "^$forged" "$err")"
pass "a line break in a client's text is escaped in the log: no forged line"

# ------------------------------------------------------------------ header size, HEAD
# big_header BYTES: the status of a request with a header of about BYTES
big_header() {
    curl -s -o /dev/null -w '%{http_code}' --unix-socket "$SOCK" -H @"$AUTH" \
        -H "X-Pad: $(head -c "$1" /dev/zero | tr '\0' a)" http://localhost/v3/default/limits
}
assert_eq "$(big_header 15000)" 200 "a request with a 15 KB header"
assert_eq "$(big_header 17000)" 431 "a request with a 17 KB header"
"$SYSPY" - "$SOCK" "$TOKEN_FILE" <<'PY' || fail "HEAD and GET on one connection"
import socket, sys
token = open(sys.argv[2]).read().strip()
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
request = "{} /v3/default/limits HTTP/1.1\r\nHost: x\r\nX-Auth-Token: " + token + "\r\n\r\n"
s.sendall((request.format("HEAD") + request.format("GET")).encode())
s.settimeout(5)
data = b""
while data.count(b"\r\n\r\n") < 2 or not data.rstrip().endswith(b"}"):
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
head, rest = data.split(b"\r\n\r\n", 1)
assert rest.startswith(b"HTTP/1.1 200"), f"after the HEAD answer's headers: {rest[:80]!r}"
assert b"content-length: 0" not in head.lower(), f"HEAD answer: {head!r}"
PY
pass "headers: 15 KB taken, 17 KB refused with 431; HEAD answers carry no body"

# ------------------------------------------------------------------ numbers and filters
printf '{"quota_set": {"volumes": 18446744073709551615}}' >"$T/body.json"
r=$(api PUT /v3/default/os-quota-sets/default "$T/body.json")
[[ ${r%% *} == 400 && $r == *"at most 2147483647"* ]] || fail "a quota of 2^64-1: ${r:0:300}"
printf '{"quota_set": {"volumes": 9223372036854775807}}' >"$T/body.json"
r=$(api PUT /v3/default/os-quota-sets/default "$T/body.json")
[[ ${r%% *} == 400 ]] || fail "a quota of 2^63-1: ${r:0:300}"
r=$(api GET "/v3/default/volumes?metadata=%7Bnot-a-dict")
[[ ${r%% *} == 400 && $r == *"Invalid metadata filter"* ]] || fail "a malformed metadata filter: ${r:0:300}"
pass "quota limits above Cinder's 2^31-1 and malformed metadata filters get 400 saying so"

# ------------------------------------------------------------------ deeply nested JSON
vol=$(api GET /v3/default/volumes | sed 's/^[0-9]* //' | "$SYSPY" -c 'import json,sys; print(json.load(sys.stdin)["volumes"][0]["id"])')
"$SYSPY" - "$T" <<'PY'
import sys
d = 300000
deep = "[" * d + "]" * d
bodies = {
    "volumes": '{"volume": {"name": %s}}' % deep,
    "action": '{"os-extend": {"new_size": %s}}' % deep,
    "snapshots": '{"snapshot": {"volume_id": "x", "name": %s}}' % deep,
    "quota": '{"quota_set": {"volumes": %s}}' % ('{"a":' * (d // 5) + "1" + "}" * (d // 5)),
    "attachment": '{"attachment": {"volume_uuid": "x", "connector": %s}}' % deep,
    "volume-attachment": '{"volumeAttachment": {"volumeId": %s}}' % deep,
    "server-action": '{"os-stop": %s}' % deep,
}
for name, body in bodies.items():
    open(f"{sys.argv[1]}/deep-{name}.json", "w").write(body)
PY
for route in "POST /v3/default/volumes deep-volumes" "POST /v3/default/volumes/$vol/action deep-action" \
    "POST /v3/default/snapshots deep-snapshots" "PUT /v3/default/os-quota-sets/default deep-quota" \
    "POST /v3/default/attachments deep-attachment" "PUT /v3/default/attachments/x deep-attachment" \
    "POST /v2.1/servers/x/os-volume_attachments deep-volume-attachment" "POST /v2.1/servers/x/action deep-server-action"; do
    set -- $route
    case $2 in  # attachments exist from volume 3.27; Nova's routes take compute versions
        /v3/*/attachments*) version='volume 3.44' ;; /v2.1/*) version='compute 2.89' ;; *) version= ;;
    esac
    r=$(API_VERSION=$version api "$1" "$2" "$T/$3.json")
    [[ ${r%% *} == 400 && $r == *"nested deeper than"* ]] || fail "$1 $2 with a deep body: ${r:0:300}"
    assert_alive "$CTL_PID"
done
pass "a body nested 300,000 deep gets 400 on every route; the controller stays up"

# ------------------------------------------------------------------ slow clients
# slow_client MODE: connects over TCP (no token: the cut-off must not need one) and prints how
# many seconds passed until the controller closed the connection.
slow_client() {
    "$SYSPY" - "$PORT" "$1" <<'PY'
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
mode = sys.argv[2]
if mode == "header":
    s.sendall(b"GET /v3/default/volumes HTTP/1.1\r\nHost: x\r\n")
elif mode == "body":
    s.sendall(b"POST /v3/default/volumes HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
start = time.monotonic()
s.settimeout(20)
drip = mode == "header"
while True:
    if drip:  # a byte a second keeps no header alive past its deadline
        try:
            s.sendall(b"X")
        except OSError:
            break
    try:
        s.settimeout(1 if drip else 20)
        if s.recv(4096) in (b"",):
            break
    except socket.timeout:
        if not drip:
            break
        continue
    except OSError:
        break
print(round(time.monotonic() - start, 1))
PY
}
for mode_limit in idle:3 header:2 body:2; do
    mode=${mode_limit%%:*} limit=${mode_limit#*:}
    took=$(slow_client "$mode")
    "$SYSPY" -c "import sys; t=$took; sys.exit(0 if $limit - 0.5 <= t <= $limit + 2.5 else 1)" ||
        fail "a client slow in its $mode was cut off after ${took}s, expected about ${limit}s"
done
pass "slow clients are cut off at the idle, header and body time limits"

# ------------------------------------------------------------------ connection cap
"$SYSPY" - "$SOCK" 40 >"$T/cap.out" <<'PY'
import socket, sys, time
conns = []
for _ in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    conns.append(s)
time.sleep(0.5)
closed = 0
for s in conns:
    s.setblocking(False)
    try:
        closed += s.recv(1) == b""
    except BlockingIOError:
        pass
print(closed)
PY
closed=$(cat "$T/cap.out")
(( closed >= 16 )) || fail "only $closed of 40 connections were closed with max_connections 24"
# The held connections' slots come free as the controller sees them close.
for ((i = 0; i < 20; i++)); do [[ $(api GET /v3/default/volumes | cut -c1-3) == 200 ]] && break; sleep 0.1; done
assert_eq "$(api GET /v3/default/volumes | cut -c1-3)" 200 "a request after the connection burst"
pass "connections over max_connections are closed at once ($closed of 40); the API serves after"

# Clients on TCP need no token to hold a connection: they fill TCP's budget, not the unix socket's.
"$SYSPY" - "$PORT" 40 "$T/tcp-held" <<'PY' &
import socket, sys, time
conns = [socket.create_connection(("127.0.0.1", int(sys.argv[1]))) for _ in range(int(sys.argv[2]))]
open(sys.argv[3], "w").write("held")
time.sleep(2)
PY
holder=$!
for ((i = 0; i < 50; i++)); do [[ -s $T/tcp-held ]] && break; sleep 0.1; done
sleep 0.3
# TCP first: the held connections are cut at the idle timeout (3 s here), after which TCP would
# serve again and this check would prove nothing.
on_tcp=$(curl -s -o /dev/null -w '%{http_code}' -H @"$AUTH" "http://127.0.0.1:$PORT/v3/default/volumes" || true)
on_unix=$(api GET /v3/default/volumes | cut -c1-3)
wait "$holder"
assert_eq "$on_unix" 200 "a request on the unix socket while TCP's connections are all held"
[[ $on_tcp != 200 ]] || fail "a TCP request was served while 40 connections held TCP's 24 slots"
pass "connections held on TCP leave the unix socket its own budget"

# ------------------------------------------------------------------ out of descriptors
kill "$CTL_PID"
wait "$CTL_PID" 2>/dev/null || true
_forget_pid "$CTL_PID"
chmod 0644 "$STATE/token"
# The default connection cap (256) is above the descriptors left: accepts fail with EMFILE.
sed 's/, "max_connections": 24//' "$T/controller.json" >"$T/controller-fds.json"
( ulimit -Sn 64 -Hn 64 && start_controller "$T/controller-fds.json" "$SOCK" '^http://' && echo "$CTL_PID" >"$T/ctl.pid" &&
  wait "$CTL_PID" ) &
for ((i = 0; i < 100; i++)); do [[ -s $T/ctl.pid && -S $SOCK ]] && break; sleep 0.1; done
CTL_PID=$(cat "$T/ctl.pid")
VG_PIDS+=("$CTL_PID")
err=$(ls -t "$T"/controller.*.err | head -1)
grep -q 'API token file .* readable or writable by others' "$err" || fail "no warning about the token file's mode"
chmod 0600 "$STATE/token"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
"$SYSPY" - "$SOCK" "$CTL_PID" "$T/emfile.out" <<'PY' &
import socket, sys, time
conns = []
for _ in range(100):  # more than the controller's 64 descriptors (sanitizer runtimes take some too)
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(sys.argv[1])
    except OSError:
        break
    conns.append(s)
open(sys.argv[3], "w").write(str(len(conns)))
time.sleep(3)
PY
holder=$!
sleep 0.5
before=$(cpu_ticks "$CTL_PID")
lines_before=$(wc -l <"$err")
sleep 2
used=$(( $(cpu_ticks "$CTL_PID") - before ))
lines=$(( $(wc -l <"$err") - lines_before ))
wait "$holder"
(( used < 40 )) || fail "the controller used $used ticks of CPU in 2 s while out of descriptors"
(( lines <= 6 )) || fail "$lines log lines in 2 s while out of descriptors: $(tail -3 "$err")"
grep -q 'accept failed' "$err" || fail "no line about failed accepts: $(tail -3 "$err")"
for ((i = 0; i < 50; i++)); do
    [[ $(api GET /v3/default/volumes | cut -c1-3) == 200 ]] && break
    sleep 0.1
done
assert_eq "$(api GET /v3/default/volumes | cut -c1-3)" 200 "a request once descriptors are free again"
pass "out of descriptors: $used CPU ticks and $lines log lines in 2 s, then serving again"
