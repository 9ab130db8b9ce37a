#!/usr/bin/env bash
# `volgate serve --metrics`: a Prometheus scrape with curl, checked by promtool; counters that
# move by exactly a known workload's requests and bytes (1000 writes of 4 KiB through libnbd,
# reads, flushes), errors counted by type and NBD error, LUKS cipher bytes, in-flight requests
# and connections, worker and process metrics; the endpoint's refusals (wrong path and method,
# oversized headers, a client that stalls mid-request, more connections than allowed) leave it
# serving. iSCSI path metrics and the Grafana dashboard: test_metrics_iscsi.sh.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/metrics_lib.sh"
require_volgate
require_tool curl
require_tool promtool
"$SYSPY" -c 'import nbd' 2>/dev/null || fail "python3-libnbd is not installed for $SYSPY"

S=$TEST_TMP/s.sock
printf 'metrics-test-passphrase' >"$TEST_TMP/key"
"$VOLGATE" luks format --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$TEST_TMP/key" \
    "file:$TEST_TMP/luks.img,size=20M" >/dev/null 2>"$TEST_TMP/format.err" || fail "luks format: $(cat "$TEST_TMP/format.err")"

# Bad --metrics values are refused before anything is served.
for bad in 127.0.0.1:notaport 127.0.0.1:70000 nohost:9100 9100x; do
    rc=0
    timeout 20 "$VOLGATE" serve --unix "$TEST_TMP/bad.sock" --export m=memory:1M --metrics "$bad" >/dev/null 2>"$TEST_TMP/bad.err" || rc=$?
    assert_eq "$rc" 2 "exit code for --metrics '$bad'"
    grep -q -- "--metrics" "$TEST_TMP/bad.err" || fail "no --metrics in the error for '$bad': $(cat "$TEST_TMP/bad.err")"
done
pass "bad --metrics values: exit 2 with the option named"

start_volgate --unix "$S" --threads 2 --metrics 127.0.0.1:0 \
    --export "mem=memory:64M" \
    --export "ro=memory:1M,readonly" \
    --export "enc=file:$TEST_TMP/luks.img,luks-key-file=$TEST_TMP/key"
URL=$(grep '^http://' "$VG_OUT") || fail "no metrics URL on stdout: $(cat "$VG_OUT")"
[[ $URL == http://127.0.0.1:*/metrics ]] || fail "metrics URL: $URL"
info "metrics at $URL"

# The port is taken now: a second gateway asking for it stops at start.
rc=0
TAKEN=${URL#http://}; TAKEN=${TAKEN%/metrics}
timeout 20 "$VOLGATE" serve --unix "$TEST_TMP/second.sock" --export m=memory:1M --metrics "$TAKEN" >/dev/null 2>"$TEST_TMP/second.err" || rc=$?
assert_eq "$rc" 2 "exit code for --metrics on a port in use"
grep -q "metrics: listening on" "$TEST_TMP/second.err" || fail "no metrics address in the error: $(cat "$TEST_TMP/second.err")"
pass "--metrics on a port in use: exit 2 with the address named"

scrape "$URL" "$TEST_TMP/m0"
assert_sample "$TEST_TMP/m0" 'volgate_export_requests_total{export="mem",type="write"}' 0
assert_sample "$TEST_TMP/m0" 'volgate_export_connections{export="mem"}' 0
for family in volgate_export_request_duration_seconds volgate_worker_cpu_seconds_total volgate_worker_poll_seconds_total \
    process_cpu_seconds_total process_resident_memory_bytes process_open_fds volgate_luks_cipher_bytes_total; do
    grep -q "^# TYPE $family " "$TEST_TMP/m0" || fail "no $family in the scrape"
done
[[ $(sample "$TEST_TMP/m0" 'volgate_worker_poll_seconds_total{worker="1"}') != absent ]] || fail "no polling time of worker 1"
[[ $(sample "$TEST_TMP/m0" 'volgate_worker_cpu_seconds_total{worker="0"}') != absent ]] || fail "no CPU time of worker 0"
[[ $(sample "$TEST_TMP/m0" 'process_open_fds') =~ ^[0-9]+$ ]] || fail "process_open_fds"
pass "a first scrape passes promtool, names every family, counts nothing yet"

# A known workload through libnbd, with a second connection held open while it runs.
SOCK=$S URL=$URL "$SYSPY" - <<'PY' || fail "the libnbd workload failed (see above)"
import os, urllib.request
import nbd

S = os.environ["SOCK"]
def connect(name):
    h = nbd.NBD()
    h.set_strict_mode(0)  # let refused requests reach the server
    h.connect_uri("nbd+unix:///%s?socket=%s" % (name, S))
    return h

def scrape():
    return urllib.request.urlopen(os.environ["URL"], timeout=10).read().decode()

mem, other = connect("mem"), connect("mem")
text = scrape()
assert 'volgate_export_connections{export="mem"} 2' in text, [l for l in text.splitlines() if "connections" in l]
other.shutdown()
block = b"\xa5" * 4096
for i in range(1000):
    mem.pwrite(block, i * 4096)
for i in range(300):
    assert mem.pread(4096, i * 4096) == block
for _ in range(7):
    mem.flush()
mem.trim(65536, 0)
mem.zero(8192, 1 << 20)
# 64 reads in flight at once, as a guest's queue would have them.
bufs = [nbd.Buffer(4096) for _ in range(64)]
cookies = [mem.aio_pread(b, i * 4096) for i, b in enumerate(bufs)]
while mem.aio_in_flight() > 0:
    mem.poll(-1)
for c in cookies:
    mem.aio_command_completed(c)
# Errors: past the end (EINVAL, ENOSPC for a write), misaligned is allowed on memory, writes to
# a read-only export (EPERM).
for _ in range(2):
    try:
        mem.pread(4096, 64 << 20)
        raise SystemExit("a read past the end succeeded")
    except nbd.Error as e:
        assert e.errnum == 22, e
try:
    mem.pwrite(block, 64 << 20)
    raise SystemExit("a write past the end succeeded")
except nbd.Error as e:
    assert e.errnum == 28, e
ro = connect("ro")
for _ in range(3):
    try:
        ro.pwrite(block, 0)
        raise SystemExit("a write to the read-only export succeeded")
    except nbd.Error as e:
        assert e.errnum == 1, e
ro.shutdown()
enc = connect("enc")
enc.pwrite(b"\x5a" * (1 << 20), 0)
assert enc.pread(1 << 20, 0) == b"\x5a" * (1 << 20)
enc.pread(4096, 4096)
enc.shutdown()
mem.shutdown()
PY

# Sessions end on the server's side a moment after the clients hang up.
for _ in $(seq 50); do
    scrape "$URL" "$TEST_TMP/m1"
    [[ $(sample "$TEST_TMP/m1" 'volgate_export_connections{export="mem"}') == 0 ]] && break
    sleep 0.1
done
M=$TEST_TMP/m1
assert_sample "$M" 'volgate_export_requests_total{export="mem",type="write"}' 1001
assert_sample "$M" 'volgate_export_bytes_total{export="mem",type="write"}' 4096000
assert_sample "$M" 'volgate_export_errors_total{export="mem",type="write",error="ENOSPC"}' 1
assert_sample "$M" 'volgate_export_requests_total{export="mem",type="read"}' 366
assert_sample "$M" 'volgate_export_bytes_total{export="mem",type="read"}' $(((300 + 64) * 4096))
assert_sample "$M" 'volgate_export_errors_total{export="mem",type="read",error="EINVAL"}' 2
assert_sample "$M" 'volgate_export_errors_total{export="mem",type="read",error="EIO"}' 0
assert_sample "$M" 'volgate_export_requests_total{export="mem",type="flush"}' 7
assert_sample "$M" 'volgate_export_requests_total{export="mem",type="trim"}' 1
assert_sample "$M" 'volgate_export_bytes_total{export="mem",type="trim"}' 65536
assert_sample "$M" 'volgate_export_requests_total{export="mem",type="write_zeroes"}' 1
assert_sample "$M" 'volgate_export_bytes_total{export="mem",type="write_zeroes"}' 8192
assert_sample "$M" 'volgate_export_requests_in_flight{export="mem"}' 0
assert_sample "$M" 'volgate_export_connections{export="mem"}' 0
# Timed: every request that reached the device (refused ones did not).
assert_sample "$M" 'volgate_export_request_duration_seconds_count{export="mem",type="write"}' 1000
assert_sample "$M" 'volgate_export_request_duration_seconds_bucket{export="mem",type="write",le="+Inf"}' 1000
assert_sample "$M" 'volgate_export_request_duration_seconds_count{export="mem",type="read"}' 364
assert_sample "$M" 'volgate_export_request_duration_seconds_count{export="mem",type="flush"}' 7
awk '/^volgate_export_request_duration_seconds_sum\{export="mem",type="write"\}/ { exit !($2 > 0 && $2 < 60) }' "$M" ||
    fail "write latency sum: $(grep 'duration_seconds_sum{export="mem",type="write"}' "$M")"
pass "exactly 1001 writes (4096000 bytes), 366 reads, 7 flushes, a trim and a zeroing counted, with 3 errors"

assert_sample "$M" 'volgate_export_requests_total{export="ro",type="write"}' 3
assert_sample "$M" 'volgate_export_errors_total{export="ro",type="write",error="EPERM"}' 3
assert_sample "$M" 'volgate_export_bytes_total{export="ro",type="write"}' 0
assert_sample "$M" 'volgate_luks_cipher_bytes_total{export="enc",operation="encrypt"}' 1048576
assert_sample "$M" 'volgate_luks_cipher_bytes_total{export="enc",operation="decrypt"}' $((1048576 + 4096))
assert_sample "$M" 'volgate_export_bytes_total{export="enc",type="write"}' 1048576
pass "read-only refusals counted as EPERM; LUKS cipher bytes: 1 MiB encrypted, 1 MiB + 4 KiB decrypted"

# The control API's totals come from the same counters: checked in test_gateway_control.sh.

# ---------------------------------------------------------------- what the endpoint refuses
HOSTPORT=${URL#http://}; HOSTPORT=${HOSTPORT%/metrics}
code=$(curl -sS -o /dev/null -w '%{http_code}' "http://$HOSTPORT/")
assert_eq "$code" 404 "GET /"
code=$(curl -sS -o /dev/null -w '%{http_code}' "http://$HOSTPORT/metrics/x")
assert_eq "$code" 404 "GET /metrics/x"
code=$(curl -sS -o /dev/null -w '%{http_code}' -X POST "http://$HOSTPORT/metrics")
assert_eq "$code" 405 "POST /metrics"
code=$(curl -sS -o /dev/null -w '%{http_code}' -H "X-Big: $(head -c 20000 /dev/zero | tr '\0' a)" "$URL")
assert_eq "$code" 431 "a 20 KB header"
code=$(curl -sS -o /dev/null -w '%{http_code}' -I "$URL")
assert_eq "$code" 200 "HEAD /metrics"
code=$(curl -sS -o /dev/null -w '%{http_code}' "$URL?name[]=x")
assert_eq "$code" 200 "GET /metrics with a query"
pass "wrong path 404, POST 405, a 20 KB header 431, HEAD and a query 200"

HOST=${HOSTPORT%:*} PORT=${HOSTPORT##*:} URL=$URL "$SYSPY" - <<'PY' || fail "the endpoint's connection bounds (see above)"
import os, socket, time, urllib.request
host, port = os.environ["HOST"], int(os.environ["PORT"])

def scrape_ok():
    return urllib.request.urlopen(os.environ["URL"], timeout=10).status == 200

# A client that stalls in the middle of its request is cut off (5 s), not waited for.
stall = socket.create_connection((host, port))
stall.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
stall.settimeout(15)
t = time.monotonic()
assert stall.recv(1) == b"", "the stalled request got an answer"
took = time.monotonic() - t
assert 3 < took < 12, "a stalled request was cut off after %.1f s" % took
stall.close()

# More connections than allowed (16): the extra ones are closed at once, and once they go a
# scrape works again.
held = [socket.create_connection((host, port)) for _ in range(40)]
time.sleep(0.5)
closed = 0
for s in held:
    s.settimeout(0.2)
    try:
        if s.recv(1) == b"":
            closed += 1
    except socket.timeout:
        pass
assert closed >= 40 - 16, "only %d of 40 connections were closed" % closed
for s in held:
    s.close()
time.sleep(0.3)
assert scrape_ok()
print("stalled request cut after %.1f s; %d of 40 connections closed at once" % (took, closed))
PY
pass "a stalled request is cut off, connections beyond 16 are closed, scrapes go on"

stop_volgate
pass "all"
