#!/usr/bin/env bash
# NBD over TLS (NBD_OPT_STARTTLS) against real clients: nbdinfo, nbdcopy and nbdsh (libnbd,
# GnuTLS) with x509 and PSK over TCP and unix sockets, qemu-img/qemu-io with tls-creds-x509 and
# tls-creds-psk, Python's ssl (OpenSSL) for a raw handshake; --tls require refusing everything
# in clear; --tls on serving both; and each bad client (no TLS, garbage instead of a
# ClientHello, a stalled handshake, a wrong or unknown PSK, a missing, expired or untrusted
# client certificate) cut off with one log line while another client is served.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_volgate
require_tool nbdinfo nbdcopy qemu-img qemu-io openssl

MiB=1048576
T=$TEST_TMP
export T
cmp_files() { cmp -s "$1" "$2" || fail "$3: contents differ"; }

# ---- credentials: a CA, the server's certificate, clients' certificates good and bad
ec() { echo "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"; }
# shellcheck disable=SC2046
{
    mkdir -p "$T/ca" "$T/other-ca" "$T/server" "$T/client" "$T/client-untrusted" "$T/client-expired" \
        "$T/client-nocert" "$T/psk" "$T/psk-wrong" "$T/psk-unknown"
    for ca in ca other-ca; do
        openssl req -x509 $(ec) -keyout "$T/$ca/key.pem" -out "$T/$ca/cert.pem" -days 30 \
            -subj "/CN=volgate test $ca" 2>/dev/null
    done
    # sign NAME SUBJECT CA EXTENSIONS: NAME-key.pem and NAME-cert.pem in $T
    sign() {
        openssl req $(ec) -keyout "$T/$1-key.pem" -out "$T/$1.csr" -subj "$2" 2>/dev/null
        printf '%s\n' "$4" >"$T/$1.ext"
        openssl x509 -req -in "$T/$1.csr" -CA "$T/$3/cert.pem" -CAkey "$T/$3/key.pem" \
            -CAcreateserial -days 30 -extfile "$T/$1.ext" -out "$T/$1-cert.pem" 2>/dev/null
    }
    sign server /CN=localhost ca $'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth'
    sign client /CN=guest-1 ca 'extendedKeyUsage=clientAuth'
    sign untrusted /CN=intruder other-ca 'extendedKeyUsage=clientAuth'
}
cp "$T/ca/cert.pem" "$T/server/ca-cert.pem"
cp "$T/server-cert.pem" "$T/server/server-cert.pem"
cp "$T/server-key.pem" "$T/server/server-key.pem"
chmod 600 "$T/server/server-key.pem"
for d in client client-untrusted client-expired client-nocert; do cp "$T/ca/cert.pem" "$T/$d/ca-cert.pem"; done
cp "$T/client-cert.pem" "$T/client/client-cert.pem"
cp "$T/client-key.pem" "$T/client/client-key.pem"
cp "$T/untrusted-cert.pem" "$T/client-untrusted/client-cert.pem"
cp "$T/untrusted-key.pem" "$T/client-untrusted/client-key.pem"
# OpenSSL 3.0's `x509 -req` cannot backdate a certificate: Python's cryptography (OpenSSL
# underneath) signs one that expired yesterday with the same CA.
"$SYSPY" - "$T" <<'PY'
import datetime, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ExtendedKeyUsageOID
t = sys.argv[1]
ca_key = serialization.load_pem_private_key(open(t + "/ca/key.pem", "rb").read(), None)
ca = x509.load_pem_x509_certificate(open(t + "/ca/cert.pem", "rb").read())
key = ec.generate_private_key(ec.SECP256R1())
now = datetime.datetime.now(datetime.timezone.utc)
cert = (x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "expired")]))
        .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=30)).not_valid_after(now - datetime.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256()))
open(t + "/client-expired/client-cert.pem", "wb").write(cert.public_bytes(serialization.Encoding.PEM))
open(t + "/client-expired/client-key.pem", "wb").write(key.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
PY
# PSK files in nbdkit's and QEMU's format (QEMU reads DIR/keys.psk).
KEY=$(openssl rand -hex 32)
echo "alice:$KEY" >"$T/psk/keys.psk"
echo "alice:$(openssl rand -hex 32)" >"$T/psk-wrong/keys.psk"
echo "mallory:$KEY" >"$T/psk-unknown/keys.psk"
echo "bob:$(openssl rand -hex 16)" >>"$T/psk/keys.psk"
chmod 600 "$T"/psk*/keys.psk

make_random_file "$T/data.img" 8

# ---- bad TLS options: one line, exit 2, before anything is served
expect_exit2() {
    local what=$1 want=$2 rc=0
    shift 2
    "$VOLGATE" serve --listen 127.0.0.1:0 --export m=memory:1M "$@" >"$T/err.out" 2>"$T/err.log" || rc=$?
    assert_eq "$rc" 2 "$what: exit code"
    grep -qF -- "$want" "$T/err.log" || fail "$what: stderr lacks '$want': $(cat "$T/err.log")"
    assert_eq "$(wc -l <"$T/err.log")" 1 "$what: lines on stderr"
}
expect_exit2 "TLS without credentials" "--tls require needs --tls-certificates DIR or --tls-psk FILE" --tls require
expect_exit2 "credentials without TLS" "--tls-psk needs --tls on or --tls require" --tls-psk "$T/psk/keys.psk"
expect_exit2 "both kinds" "give one of them, not both" --tls on --tls-psk "$T/psk/keys.psk" --tls-certificates "$T/server"
expect_exit2 "bad mode" "--tls 'yes': expected off, on or require" --tls yes --tls-psk "$T/psk/keys.psk"
expect_exit2 "missing directory" "TLS certificates directory $T/nowhere: No such file or directory" --tls on --tls-certificates "$T/nowhere"
expect_exit2 "no server key" "$T/client/server-cert.pem: No such file or directory" --tls on --tls-certificates "$T/client"
printf 'alice:%s\nbob=0011\n' "$KEY" >"$T/bad.psk"
chmod 600 "$T/bad.psk"
expect_exit2 "bad PSK line" "$T/bad.psk line 2: expected IDENTITY:HEXKEY" --tls on --tls-psk "$T/bad.psk"
refute_grep "a PSK error message shows the key" -F "$KEY" "$T/err.log"
expect_exit2 "verify-peer with PSK" "--tls-verify-peer needs --tls-certificates DIR" --tls on --tls-psk "$T/psk/keys.psk" --tls-verify-peer
pass "bad TLS options: exit 2 with one precise line"

# ---- --tls require with x509 certificates, client certificates verified
PORT=$(free_tcp_port)
S=$T/tls.sock
start_volgate --tls require --tls-certificates "$T/server" --tls-verify-peer --handshake-timeout 2 \
    --listen "127.0.0.1:$PORT" --unix "$S" \
    --export "disk=file:$T/data.img" --export "mem=memory:64M"
grep -Fxq "nbds://127.0.0.1:$PORT/disk" "$VG_OUT" || fail "stdout lacks nbds://127.0.0.1:$PORT/disk: $(cat "$VG_OUT")"
grep -Fxq "nbds+unix:///mem?socket=$S" "$VG_OUT" || fail "stdout lacks nbds+unix:///mem?socket=$S: $(cat "$VG_OUT")"
grep -q "TLS required: x509 certificates from $T/server, client certificates verified" "$VG_ERR" ||
    fail "no TLS line in the log: $(cat "$VG_ERR")"
TCP_URI="nbds://127.0.0.1:$PORT/disk?tls-certificates=$T/client"
UNIX_URI="nbds+unix:///mem?socket=$S&tls-certificates=$T/client"
# nbdsh connected to URI: libnbd lets a URI name local files only when asked.
tls_nbdsh() {
    local uri=$1
    shift
    nbdsh -c "h.set_uri_allow_local_file(True)" -c "h.connect_uri('$uri')" "$@"
}

assert_eq "$(nbdinfo --size "$TCP_URI")" $((8 * MiB)) "nbdinfo --size over TLS (TCP)"
assert_eq "$(nbdinfo --size "$UNIX_URI")" $((64 * MiB)) "nbdinfo --size over TLS (unix)"
nbdinfo --list "nbds://127.0.0.1:$PORT/?tls-certificates=$T/client" >"$T/list" || fail "nbdinfo --list over TLS"
grep -q 'export="disk"' "$T/list" && grep -q 'export="mem"' "$T/list" || fail "nbdinfo --list: $(cat "$T/list")"
pass "nbdinfo over nbds:// and nbds+unix:// with x509"

# nbdcopy both ways, several connections and requests in flight.
nbdcopy "$TCP_URI" "$T/copy1.img" || fail "nbdcopy from nbds://"
cmp_files "$T/copy1.img" "$T/data.img" "nbdcopy from nbds://"
nbdcopy --connections=4 --requests=16 "$T/data.img" "$UNIX_URI" || fail "nbdcopy to nbds+unix://"
nbdcopy "$UNIX_URI" "$T/copy2.img" || fail "nbdcopy back from nbds+unix://"
cmp -s -n $((8 * MiB)) "$T/copy2.img" "$T/data.img" || fail "nbdcopy through nbds+unix://: contents differ"
pass "nbdcopy to and from TLS exports, multi-conn"

# nbdsh: small and large reads and writes, zeroes, block status over TLS.
tls_nbdsh "$UNIX_URI" -c '
import os
assert h.get_tls_negotiated(), "TLS was not negotiated"
assert h.get_structured_replies_negotiated()
big = os.urandom(5 * 1024 * 1024 + 17)
h.pwrite(big, 1000)
small = [os.urandom(512) for _ in range(64)]
for i, b in enumerate(small):
    h.aio_pwrite(b, 20 * 1024 * 1024 + i * 4096)
while h.aio_in_flight() > 0:
    h.poll(-1)
assert h.pread(len(big), 1000) == big
for i, b in enumerate(small):
    assert h.pread(512, 20 * 1024 * 1024 + i * 4096) == b
h.zero(1024 * 1024, 40 * 1024 * 1024)
assert h.pread(4096, 40 * 1024 * 1024) == bytes(4096)
h.flush()
' || fail "nbdsh over nbds+unix://"
pass "nbdsh over TLS: 5 MiB and 64 concurrent small writes read back, zeroes, flush"

# qemu-img and qemu-io with tls-creds-x509 (QEMU verifies our certificate against the CA
# and presents its client certificate).
QX509=(--object "tls-creds-x509,id=tls0,dir=$T/client,endpoint=client")
qimg() { echo "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=$PORT,export=$1,tls-creds=tls0"; }
qemu-img info "${QX509[@]}" --image-opts "$(qimg disk)" >"$T/qinfo" || fail "qemu-img info over TLS"
grep -q "virtual size: 8 MiB" "$T/qinfo" || fail "qemu-img info: $(cat "$T/qinfo")"
qemu-io "${QX509[@]}" --image-opts "$(qimg mem)" -c "write -P 0xa5 1M 3M" -c "read -P 0xa5 1M 3M" \
    >"$T/qio" || fail "qemu-io over TLS: $(cat "$T/qio")"
tls_nbdsh "$UNIX_URI" -c 'assert h.pread(3 << 20, 1 << 20) == b"\xa5" * (3 << 20)' ||
    fail "qemu-io's write read back by nbdsh"
qemu-img convert -O raw "${QX509[@]}" --image-opts "$(qimg disk)" "$T/copy3.img" >/dev/null ||
    fail "qemu-img convert from TLS"
cmp_files "$T/copy3.img" "$T/data.img" "qemu-img convert from TLS"
pass "qemu-img info/convert and qemu-io write+read with tls-creds-x509"

# Python's ssl (OpenSSL) as a raw client: LIST works after TLS, a second STARTTLS is invalid.
out=$("$SYSPY" "$INTEGRATION_DIR/tls_wire.py" x509-list 127.0.0.1 "$PORT" "$T/client") || fail "raw TLS client"
[[ $out == "disk mem TLSv1."* ]] || fail "raw TLS client listed: $out"
out12=$("$SYSPY" "$INTEGRATION_DIR/tls_wire.py" x509-list 127.0.0.1 "$PORT" "$T/client" 1.2) || fail "raw TLS 1.2 client"
assert_eq "$out12" "disk mem TLSv1.2" "raw TLS 1.2 client"
pass "raw STARTTLS with Python's ssl: exports listed after TLS ($out; and $out12)"

# ---- refused in clear: every option but STARTTLS before TLS, and clients without TLS
nbdinfo --size "nbd://127.0.0.1:$PORT/disk" >/dev/null 2>&1 && fail "a client without TLS was served"
nbdinfo --list "nbd+unix:///?socket=$S" >"$T/clear" 2>&1 && fail "exports were listed in clear"
refute_grep "an export name leaked in clear" -e 'export="disk"' "$T/clear"
"$SYSPY" "$INTEGRATION_DIR/tls_wire.py" require-refusals 127.0.0.1 "$PORT" >/dev/null ||
    fail "--tls require answered an option in clear"
pass "--tls require: TLS_REQD for every option in clear, EXPORT_NAME closes, nothing listed"

# ---- bad clients: each cut off with one line, the server goes on serving others
lines_before() { wc -l <"$VG_ERR"; }
expect_refused() {  # WHAT PATTERN CLIENT...
    local what=$1 pattern=$2 before
    shift 2
    before=$(lines_before)
    if "$@" >"$T/bad.out" 2>&1; then fail "$what: the client was served"; fi
    for ((i = 0; i < 40; i++)); do
        tail -n +"$((before + 1))" "$VG_ERR" | grep -q -- "$pattern" && break
        sleep 0.05
    done
    tail -n +"$((before + 1))" "$VG_ERR" | grep -q -- "$pattern" ||
        fail "$what: no log line matching '$pattern': $(tail -n +"$((before + 1))" "$VG_ERR")"
    assert_eq "$(tail -n +"$((before + 1))" "$VG_ERR" | grep -c ' warning \| error ')" 1 "$what: log lines"
}
expect_refused "no client certificate" "peer did not return a certificate" \
    nbdinfo --size "nbds://127.0.0.1:$PORT/disk?tls-certificates=$T/client-nocert"
expect_refused "expired client certificate" "client certificate refused: certificate has expired" \
    nbdinfo --size "nbds://127.0.0.1:$PORT/disk?tls-certificates=$T/client-expired"
# GnuTLS does not send a certificate that the server's list of CAs does not name: that is one
# more client without a certificate. OpenSSL (Python's ssl) sends it, to be refused.
expect_refused "certificate of another CA, not sent" "peer did not return a certificate" \
    nbdinfo --size "nbds://127.0.0.1:$PORT/disk?tls-certificates=$T/client-untrusted"
expect_refused "untrusted client certificate" "client certificate refused: unable to get local issuer certificate" \
    "$SYSPY" "$INTEGRATION_DIR/tls_wire.py" x509-list 127.0.0.1 "$PORT" "$T/client-untrusted"
before=$(lines_before)
secs=$("$SYSPY" "$INTEGRATION_DIR/tls_wire.py" garbage 127.0.0.1 "$PORT")
awk -v s="$secs" 'BEGIN { exit !(s < 1.5) }' || fail "garbage instead of a ClientHello held for $secs s"
sleep 0.1
tail -n +"$((before + 1))" "$VG_ERR" | grep -q "TLS handshake failed" ||
    fail "no log line for garbage: $(tail -n +"$((before + 1))" "$VG_ERR")"
pass "no, expired and untrusted client certificates and garbage refused, one line each (garbage cut in ${secs}s)"

# A client that stalls mid-handshake is cut at --handshake-timeout (2 s) while another client
# is served meanwhile.
before=$(lines_before)
"$SYSPY" "$INTEGRATION_DIR/tls_wire.py" stall 127.0.0.1 "$PORT" >"$T/stall.out" &
STALL=$!
sleep 0.3
assert_eq "$(nbdinfo --size "$TCP_URI")" $((8 * MiB)) "a client served while another stalls"
wait "$STALL" || fail "stall client failed"
secs=$(cat "$T/stall.out")
awk -v s="$secs" 'BEGIN { exit !(s >= 1.5 && s < 4) }' || fail "stalled handshake cut after $secs s, not ~2"
tail -n +"$((before + 1))" "$VG_ERR" | grep -q "no handshake within 2 s (stalled in the TLS handshake)" ||
    fail "no log line for the stalled handshake: $(tail -n +"$((before + 1))" "$VG_ERR")"
pass "a handshake stalled in TLS cut after ${secs}s with one line; others served meanwhile"

# SIGTERM with requests in flight over TLS: every write the client had sent is answered and
# applied, then the server exits 0.
VG="$VG_PID" tls_nbdsh "nbds+unix:///disk?socket=$S&tls-certificates=$T/client" -c '
import os, signal
blocks = [os.urandom(4096) for _ in range(16)]
cookies = [h.aio_pwrite(b, 4 * 1024 * 1024 + i * 8192) for i, b in enumerate(blocks)]
os.kill(int(os.environ["VG"]), signal.SIGTERM)
while h.aio_in_flight() > 0:
    h.poll(-1)
for c in cookies:
    assert h.aio_command_completed(c)  # raises if the write failed
open(os.environ["T"] + "/inflight.bin", "wb").write(b"".join(blocks))
' || fail "writes in flight at SIGTERM over TLS"
stop_volgate "$VG_PID" none
"$SYSPY" -c '
import os, sys
t = os.environ["T"]
want = open(t + "/inflight.bin", "rb").read()
with open(t + "/data.img", "rb") as f:
    for i in range(16):
        f.seek(4 * 1024 * 1024 + i * 8192)
        if f.read(4096) != want[i * 4096:(i + 1) * 4096]:
            sys.exit("write %d in flight at SIGTERM is not in the file" % i)
' || fail "writes in flight at SIGTERM over TLS were not applied"
pass "SIGTERM over TLS: the 16 writes in flight answered and applied, exit 0"

# ---- PSK, --tls on: TLS clients with the right key, clear-text clients too
PORT=$(free_tcp_port)
start_volgate --tls on --tls-psk "$T/psk/keys.psk" --handshake-timeout 5 \
    --listen "127.0.0.1:$PORT" --unix "$S" --export "disk=file:$T/data.img"
grep -Fxq "nbd://127.0.0.1:$PORT/disk" "$VG_OUT" || fail "--tls on prints nbd:// URIs: $(cat "$VG_OUT")"
grep -q "TLS offered: PSK, 2 identities from $T/psk/keys.psk" "$VG_ERR" || fail "no PSK line: $(cat "$VG_ERR")"
refute_grep "the log shows a PSK" -F "$KEY" "$VG_ERR"
PSK_URI="nbds://alice@127.0.0.1:$PORT/disk?tls-psk-file=$T/psk/keys.psk"
assert_eq "$(nbdinfo --size "$PSK_URI")" $((8 * MiB)) "nbdinfo with a PSK (TCP)"
assert_eq "$(nbdinfo --size "nbds+unix://alice@/disk?socket=$S&tls-psk-file=$T/psk/keys.psk")" $((8 * MiB)) \
    "nbdinfo with a PSK (unix)"
tls_nbdsh "$PSK_URI" -c 'assert h.get_tls_negotiated()' || fail "nbdsh with a PSK"
nbdcopy "$PSK_URI" "$T/copy4.img" || fail "nbdcopy with a PSK"
cmp_files "$T/copy4.img" "$T/data.img" "nbdcopy with a PSK"
assert_eq "$(nbdinfo --size "nbd://127.0.0.1:$PORT/disk")" $((8 * MiB)) "--tls on: a clear-text client"
QPSK=(--object "tls-creds-psk,id=tls0,dir=$T/psk,endpoint=client,username=alice")
qemu-io "${QPSK[@]}" --image-opts "$(qimg disk)" -c "write -P 0x3c 0 1M" -c "read -P 0x3c 0 1M" \
    >"$T/qio" || fail "qemu-io with tls-creds-psk: $(cat "$T/qio")"
pass "PSK: nbdinfo/nbdsh/nbdcopy (TCP, unix) and qemu-io with tls-creds-psk; --tls on serves clear text too"

expect_refused "wrong PSK" "TLS handshake failed: wrong key for PSK identity 'alice'" \
    nbdinfo --size "nbds://alice@127.0.0.1:$PORT/disk?tls-psk-file=$T/psk-wrong/keys.psk"
expect_refused "unknown PSK identity" "unknown PSK identity 'mallory'" \
    nbdinfo --size "nbds://mallory@127.0.0.1:$PORT/disk?tls-psk-file=$T/psk-unknown/keys.psk"
refute_grep "the log shows a PSK" -F "$KEY" "$VG_ERR"
pass "a wrong key and an unknown identity refused, one line each, no key in the log"
stop_volgate
