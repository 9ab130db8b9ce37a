#!/usr/bin/env bash
# NBD over TLS with QEMU as a guest's client through libvirt 9.0: a TCG guest gets a disk
# <source protocol='nbd' tls='yes' tlsHostname='localhost'> on the gateway's unix socket, served
# by `volgate serve --tls require --tls-certificates DIR --tls-verify-peer`. libvirt gives QEMU
# its x509 client credentials from qemu.conf's nbd_tls_x509_cert_dir (ca-cert.pem,
# client-cert.pem, client-key.pem). The guest writes a pattern and reads it back; the gateway's
# log shows that QEMU's connection started TLS with the client certificate. In the same run a
# clear-text client and a tls='no' disk are refused by the gateway, QEMU refuses the gateway
# without tlsHostname or with a name its certificate lacks, and with nbd_tls = 1 a disk without
# a tls attribute uses TLS.
#
# qemu.conf is the host's: it is backed up, edited, and restored at exit, and libvirtd is
# restarted around the edit (libvirtd reads qemu.conf only at start). A copy of the original
# is kept beside it until the restore, so that a run killed before its cleanup is undone by
# the next one.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/guest_lib.sh"
require_volgate
require_tool openssl nbdinfo virsh setpriv

T=$TEST_TMP
RUN=$T/run                  # the NBD socket's directory: QEMU (libvirt-qemu) must traverse it
S=$RUN/nbd.sock
GUEST=volgate-it-tls-$$
QEMU_CONF=/etc/libvirt/qemu.conf
QEMU_CONF_BACKUP=$QEMU_CONF.volgate-test-backup
MiB=1048576
t_test=$(now_ms)
export VG_LOG_LEVEL=debug   # the gateway's "TLS started" and "attached to export" lines

# ------------------------------------------------------------------ qemu.conf and libvirtd
# A backup left by a run that was killed: the host's file is that one.
if [[ -e $QEMU_CONF_BACKUP ]]; then
    info "restoring $QEMU_CONF from a backup a killed run left"
    cp -p "$QEMU_CONF_BACKUP" "$QEMU_CONF"
fi
cp -p "$QEMU_CONF" "$QEMU_CONF_BACKUP"
LIBVIRTD_WAS_RUNNING=0
pgrep -x libvirtd >/dev/null && LIBVIRTD_WAS_RUNNING=1

# libvirtd_restart: stops the running libvirtd (by its pid file) and starts it again the way
# libvirt_start does, so that it reads qemu.conf anew.
libvirtd_restart() {
    local pid i
    if pid=$(cat /run/libvirtd.pid 2>/dev/null) && [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && fail "libvirtd (pid $pid) still runs 10 s after SIGTERM"
    fi
    libvirt_start
    # The host's libvirtd, restarted: ours to restart again at exit, not to stop.
    if [[ $LIBVIRTD_WAS_RUNNING == 1 ]]; then
        local d keep=()
        for d in "${LIBVIRT_STARTED[@]}"; do [[ $d == libvirtd ]] || keep+=("$d"); done
        LIBVIRT_STARTED=("${keep[@]}")
    fi
}

# Runs before guest_lib.sh's cleanup (which destroys the guest and stops what libvirt_start
# started): the guest goes, the host's qemu.conf comes back, and a libvirtd that ran before the
# test runs again with it.
_tls_cleanup() {
    local rc=$? g
    set +e
    for g in "${GUESTS[@]}"; do
        ((rc != 0)) && { echo "---- last lines of guest $g's console ----" >&2; tail -n 20 "${GUEST_DIR[$g]}/console.log" >&2; }
        guest_destroy "$g"
    done
    if [[ -e $QEMU_CONF_BACKUP ]]; then
        cp -p "$QEMU_CONF_BACKUP" "$QEMU_CONF" && rm -f "$QEMU_CONF_BACKUP"
        if [[ $LIBVIRTD_WAS_RUNNING == 1 ]]; then
            libvirtd_restart >&2 || echo "FAIL: libvirtd did not come back after qemu.conf was restored" >&2
        fi
    fi
    (exit "$rc")
    _guest_cleanup
}
trap _tls_cleanup EXIT

# ------------------------------------------------------------------ certificates
# A CA, the gateway's certificate, and QEMU's client certificate in the layout libvirt reads
# (ca-cert.pem, client-cert.pem, client-key.pem), readable by libvirt-qemu.
mkdir -p "$T/ca" "$T/server" "$T/client" "$RUN"
chmod o+x "$T" "$RUN"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${ec[@]}" -keyout "$T/ca/key.pem" -out "$T/ca/cert.pem" -days 30 \
    -subj "/CN=volgate test CA" 2>/dev/null
sign() {  # NAME SUBJECT EXTENSIONS: $T/NAME-key.pem, $T/NAME-cert.pem
    openssl req "${ec[@]}" -keyout "$T/$1-key.pem" -out "$T/$1.csr" -subj "$2" 2>/dev/null
    printf '%s\n' "$3" >"$T/$1.ext"
    openssl x509 -req -in "$T/$1.csr" -CA "$T/ca/cert.pem" -CAkey "$T/ca/key.pem" -CAcreateserial \
        -days 30 -extfile "$T/$1.ext" -out "$T/$1-cert.pem" 2>/dev/null
}
sign server /CN=localhost $'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth'
sign client /CN=volgate-guest $'extendedKeyUsage=clientAuth'
cp "$T/ca/cert.pem" "$T/server/ca-cert.pem"
cp "$T/server-cert.pem" "$T/server/server-cert.pem"
install -m 600 "$T/server-key.pem" "$T/server/server-key.pem"
cp "$T/ca/cert.pem" "$T/client/ca-cert.pem"
cp "$T/client-cert.pem" "$T/client/client-cert.pem"
install -m 640 -g "$(id -g "$QEMU_USER")" "$T/client-key.pem" "$T/client/client-key.pem"
chmod o+x "$T/client"

# ------------------------------------------------------------------ the gateway
truncate -s 16M "$T/disk.img"
PORT=$(free_tcp_port)
start_volgate --tls require --tls-certificates "$T/server" --tls-verify-peer --handshake-timeout 5 \
    --unix "$S" --socket-group libvirt-qemu --listen "127.0.0.1:$PORT" --export "disk=file:$T/disk.img"
grep -q "TLS required: x509 certificates from $T/server, client certificates verified" "$VG_ERR" ||
    fail "no TLS line in the gateway's log: $(cat "$VG_ERR")"
# The same client, as QEMU's user, with and without TLS: only TLS is served.
as_qemu() { setpriv --reuid="$QEMU_USER" --regid="$(id -g "$QEMU_USER")" --init-groups "$@"; }
assert_eq "$(as_qemu nbdinfo --size "nbds+unix:///disk?socket=$S&tls-certificates=$T/client")" $((16 * MiB)) \
    "nbdinfo over TLS as $QEMU_USER with the client directory libvirt will use"
if out=$(as_qemu nbdinfo --size "nbd+unix:///disk?socket=$S" 2>&1); then
    fail "a clear-text client was served by a --tls require gateway: $out"
fi
pass "the gateway serves TLS with client certificates to $QEMU_USER and refuses clear text"

# ------------------------------------------------------------------ libvirt with nbd_tls
# libvirt 9.0 reads three NBD settings: nbd_tls (TLS for every NBD disk without a tls
# attribute), nbd_tls_x509_cert_dir (QEMU's client credentials; default_tls_x509_cert_dir
# without it) and nbd_tls_x509_secret_uuid (for an encrypted client key; ours is not). There
# is no nbd_tls_x509_verify: QEMU as a client always verifies the server's certificate.
{
    echo
    echo "# added by volgate's tests/integration/test_guest_tls.sh; removed at its exit"
    echo "nbd_tls = 1"
    echo "nbd_tls_x509_cert_dir = \"$T/client\""
} >>"$QEMU_CONF"
if [[ $LIBVIRTD_WAS_RUNNING == 1 ]]; then libvirtd_restart; else libvirt_start; fi
guest_image "$T/guest"
guest_define "$GUEST" "$T/guest"
info "guest $GUEST booted (kernel $GUEST_KERNEL) in $GUEST_BOOT_MS ms"

LETTERS=abcdefghijklmnopqrstuvwxyz
# disk_xml TLS UNIT SERIAL [HOSTNAME]: an NBD disk on the gateway's unix socket, tls='TLS',
# tlsHostname='HOSTNAME' when given (the name QEMU checks the gateway's certificate against: a
# unix socket has none of its own).
disk_xml() {
    cat <<XML
<disk type='network' device='disk'>
  <driver name='qemu' type='raw' cache='none'/>
  <source protocol='nbd' name='disk' tls='$1'${4:+ tlsHostname='$4'}>
    <host transport='unix' socket='$S'/>
  </source>
  <target dev='sd${LETTERS:$2:1}' bus='scsi'/>
  <serial>$3</serial>
  <address type='drive' controller='0' bus='0' target='0' unit='$2'/>
</disk>
XML
}

# Control: the same disk without TLS is refused by QEMU's connection to the gateway.
disk_xml no 1 vg-tls-clear >"$T/disk-clear.xml"
if "${VIRSH[@]}" attach-device "$GUEST" "$T/disk-clear.xml" --live >"$T/virsh-clear.out" 2>&1; then
    fail "a disk with tls='no' was attached to a --tls require gateway"
fi
grep -qi 'TLS' "$T/virsh-clear.out" || fail "the refused clear-text attach does not say why: $(cat "$T/virsh-clear.out")"
pass "control: tls='no' refused by the gateway: $(tr '\n' ' ' <"$T/virsh-clear.out" | sed 's/  */ /g' | cut -c1-200)"

# attach_refused WHAT PATTERN XML: the attach fails and virsh says PATTERN.
attach_refused() {
    if "${VIRSH[@]}" attach-device "$GUEST" "$3" --live >"$T/virsh.out" 2>&1; then
        fail "$1: the disk was attached"
    fi
    grep -q -- "$2" "$T/virsh.out" || fail "$1: virsh does not say '$2': $(cat "$T/virsh.out")"
}
# On a unix socket QEMU has no host name to check the gateway's certificate against, and libvirt
# 9.0 gives it none unless the disk names one (tlsHostname): the handshake completes, then QEMU
# gives up. A name the certificate does not carry is refused by QEMU too (it verifies us).
disk_xml yes 1 vg-tls-nohost >"$T/disk-nohost.xml"
attach_refused "tls='yes' without tlsHostname" "No hostname for certificate validation" "$T/disk-nohost.xml"
disk_xml yes 1 vg-tls-wrong gateway.example >"$T/disk-wrong.xml"
attach_refused "tlsHostname not in the certificate" "does not match" "$T/disk-wrong.xml"
pass "QEMU checks the gateway's certificate: no tlsHostname ('No hostname for certificate validation') and a wrong one ('$(grep -o "Certificate does not match the hostname [^ ]*" "$T/virsh.out" | head -n 1)') refused"

before=$(wc -l <"$VG_ERR")
disk_xml yes 0 vg-tls-disk localhost >"$T/disk-tls.xml"
"${VIRSH[@]}" attach-device "$GUEST" "$T/disk-tls.xml" --live >"$T/virsh.out" 2>&1 ||
    fail "virsh attach-device with tls='yes': $(cat "$T/virsh.out")"
"${VIRSH[@]}" dumpxml "$GUEST" | grep -q "tls='yes'" || fail "the live domain XML lacks tls='yes'"
dev=$(guest_run "$GUEST" "for i in \$(seq 100); do test -b /dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_vg-tls-disk && break; sleep 0.1; disk-links; done
readlink -f /dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_vg-tls-disk" 30) || fail "the guest does not see the TLS disk: $dev"
[[ $dev =~ ^/dev/sd[a-z]$ ]] || fail "the TLS disk in the guest: '$dev'"
pass "disk with tls='yes' on the unix socket attached through libvirt: $dev in the guest"

# The gateway's log since the attach: QEMU's connection started TLS, showed the client
# certificate libvirt gave it, and was attached to the export.
tail -n +"$((before + 1))" "$VG_ERR" >"$T/attach.log"
grep -q "TLS started: TLSv1\.[23] .*client certificate /CN=volgate-guest" "$T/attach.log" ||
    fail "no 'TLS started' line with QEMU's client certificate: $(cat "$T/attach.log")"
grep -q "attached to export 'disk'" "$T/attach.log" || fail "no 'attached to export' line: $(cat "$T/attach.log")"
pass "gateway: $(grep -o 'TLS started: .*' "$T/attach.log" | head -n 1)"

# ------------------------------------------------------------------ the guest's I/O
sum=$(guest_run "$GUEST" "set -e
head -c $((4 * MiB)) /dev/urandom >/tmp/pattern
dd if=/tmp/pattern of=$dev bs=64k seek=16 oflag=direct conv=notrunc,fsync 2>/dev/null
want=\$(md5sum </tmp/pattern | cut -d' ' -f1)
got=\$(dd if=$dev bs=64k skip=16 count=64 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
[ \"\$got\" = \"\$want\" ] || { echo \"read back \$got, wrote \$want\"; exit 1; }
echo \$want" 60) || fail "the guest's write and read-back: $sum"
[[ $sum =~ ^[0-9a-f]{32}$ ]] || fail "the guest's checksum: $sum"
# The host reads the file the gateway wrote: the guest's bytes reached it through TLS.
assert_eq "$(dd if="$T/disk.img" bs=64k skip=16 count=64 2>/dev/null | md5sum | cut -d' ' -f1)" "$sum" \
    "the pattern in the gateway's file"
guest_run "$GUEST" dmesg 20 >"$T/dmesg.log" || fail "dmesg in the guest"
refute_grep "an I/O error in the guest's kernel log" -E 'I/O error|critical (medium|target) error' "$T/dmesg.log"
pass "the guest wrote 4 MiB over NBD-TLS and read it back; the file holds it (md5 $sum)"

"${VIRSH[@]}" detach-device "$GUEST" "$T/disk-tls.xml" --live >"$T/virsh.out" 2>&1 ||
    fail "virsh detach-device: $(cat "$T/virsh.out")"

# nbd_tls = 1: a disk without a tls attribute gets TLS too; the guest reads the pattern
# through it (a new connection, a new handshake).
before=$(wc -l <"$VG_ERR")
disk_xml yes 2 vg-tls-default localhost | sed "s/ tls='yes'//" >"$T/disk-default.xml"
grep -q "tls=" "$T/disk-default.xml" && fail "the nbd_tls disk's XML names tls"
"${VIRSH[@]}" attach-device "$GUEST" "$T/disk-default.xml" --live >"$T/virsh.out" 2>&1 ||
    fail "virsh attach-device without a tls attribute under nbd_tls = 1: $(cat "$T/virsh.out")"
dev=$(guest_run "$GUEST" "for i in \$(seq 100); do test -b /dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_vg-tls-default && break; sleep 0.1; disk-links; done
readlink -f /dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_vg-tls-default" 30) || fail "the guest does not see the nbd_tls disk: $dev"
[[ $dev =~ ^/dev/sd[a-z]$ ]] || fail "the nbd_tls disk in the guest: '$dev'"
got=$(guest_run "$GUEST" "dd if=$dev bs=64k skip=16 count=64 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1" 30) ||
    fail "reading the nbd_tls disk in the guest: $got"
assert_eq "$got" "$sum" "the pattern read through the nbd_tls disk"
tail -n +"$((before + 1))" "$VG_ERR" | grep -q "TLS started: TLSv1\.[23] .*client certificate /CN=volgate-guest" ||
    fail "the nbd_tls disk's connection did not start TLS: $(tail -n +"$((before + 1))" "$VG_ERR")"
pass "nbd_tls = 1: a disk without a tls attribute used TLS; the guest read the pattern back through it ($dev)"
guest_destroy "$GUEST"
assert_alive
stop_volgate
pass "whole test: $(($(now_ms) - t_test)) ms"
