#!/usr/bin/env bash
# The nbdkit plugin (build/nbdkit-volgate-plugin.so) in the nbdkit Debian ships:
#  - `nbdkit --dump-plugin` and `--help` describe it; a bad SPEC, a missing file and a wrong LUKS
#    passphrase each stop nbdkit with one clear error line and a non-zero exit;
#  - memory and file SPECs: qemu-io writes and reads patterns, fio's nbd engine writes and
#    verifies (crc32c) at depth 16 on two connections, zeroes and trims show as holes in block
#    status; what nbdkit wrote to the file is in the file (cmp against it directly); a readonly
#    SPEC is advertised read-only and a write to it fails with EPERM;
#  - what the plugin advertises comes from the device: multi-conn, FUA, trim, fast zero and
#    block sizes (the minimum is the LUKS sector); an unaligned request on a LUKS export is
#    refused with EINVAL, as volgate serve refuses it;
#  - LUKS2 with nbdkit forked into the background and with --run (the server is the child): 1 MiB
#    requests reach the cipher helpers, which start again after the fork (they hung before);
#    a fast zero on LUKS gets ENOTSUP (nbdkit 1.32 aborted on it);
#  - LUKS2 (4096-byte sectors): qemu-io and fio verify through the plugin, then the container's
#    ciphertext decrypts independently (luks_payload.py) to what was written; the nbdkit process
#    serving it (passphrase on standard input) is undumpable and leaves no core, and the
#    passphrase is in no log; luks-key-file=- is refused where nbdkit needs stdin (-s) and for
#    backends that open after nbdkit forks (rbd:);
#  - with --filter=cow in front, fio verifies and the file underneath stays unchanged;
#  - xts-provider=openssl|gcrypt both read the LUKS2 payload right; an unknown name and a
#    provider that answers wrongly (a test hook) are refused before serving.
# Under ASan and TSan (the runtime preloaded into nbdkit) the LUKS2 part is skipped: see there.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_tool nbdkit nbdinfo nbdsh qemu-io fio cryptsetup
. "$(dirname "$0")/nbdkit_plugin_lib.sh"
T=$TEST_TMP
PAYLOAD="$SYSPY $INTEGRATION_DIR/luks_payload.py"

NK=0
# start_plugin SOCKET [NBDKIT-OPTIONS...] -- PLUGIN-ARGS...: nbdkit in the foreground (in the
# background of the test) serving the plugin on SOCKET; waits until the socket exists. Sets
# NK_PID and NK_ERR (its log, checked for sanitizer reports by the EXIT trap).
start_plugin() {
    local sock=$1 opts=()
    shift
    while [[ $1 != -- ]]; do opts+=("$1"); shift; done
    shift
    NK=$((NK + 1))
    NK_ERR=$T/nbdkit.$NK.err
    watch_log "$NK_ERR"
    # <&0: a background command otherwise reads /dev/null, not the caller's redirection
    # No leak check at nbdkit's exit: nbdkit itself leaks (560 bytes from its own code with
    # --filter=cow), and since every allocation of the plugin has nbdkit's frames under it, no
    # suppression could tell the two apart. The devices' code is leak-checked under volgate
    # serve by the other scripts.
    ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 \
        LD_PRELOAD=$SAN_PRELOAD nbdkit -f -v -U "$sock" "${opts[@]}" "$PLUGIN" "$@" 2>"$NK_ERR" <&0 &
    NK_PID=$!
    VG_PIDS+=("$NK_PID")
    VG_LOG_OF[$NK_PID]=$NK_ERR
    local deadline=$(($(now_ms) + 30000))
    until [[ -S $sock ]]; do
        _proc_running "$NK_PID" || fail "nbdkit exited before serving: $(grep -v debug "$NK_ERR" | tail -n 3)"
        (($(now_ms) < deadline)) || fail "nbdkit with the plugin not serving within 30 s"
        sleep 0.05
    done
}

# stop_plugin: SIGTERM to the nbdkit of start_plugin, which must exit 0 within 10 s. Debian's
# nbdkit with a sanitizer runtime preloaded can hang in its own exit after the plugin is gone
# (see refused); there it must have unloaded the plugin within 10 s, and is then killed if it
# has not exited 2 s later.
stop_plugin() {
    [[ -n $SAN_PRELOAD ]] || { stop_volgate "$NK_PID"; return; }
    kill -TERM "$NK_PID" 2>/dev/null || true
    local deadline=$(($(now_ms) + 10000))
    until grep -q 'unload plugin' "$NK_ERR"; do
        (($(now_ms) < deadline)) || fail "nbdkit did not unload the plugin within 10 s of SIGTERM"
        sleep 0.05
    done
    deadline=$(($(now_ms) + 2000))
    while _proc_running "$NK_PID" && (($(now_ms) < deadline)); do sleep 0.05; done
    kill -KILL "$NK_PID" 2>/dev/null || true
    wait "$NK_PID" 2>/dev/null || true
    _forget_pid "$NK_PID"
    check_sanitizer_reports "$NK_PID"
}

# refused WHAT PATTERN [NBDKIT-OPTIONS...] -- PLUGIN-ARGS...: nbdkit must exit non-zero before
# serving, its stderr one line that matches PATTERN. With a sanitizer preloaded, Debian's nbdkit
# may never finish exiting after such an error (libp11-kit's destructor waits for glibc's locale
# lock for ever; nbdkit's own file plugin does it too): there, once the line is out and nothing
# serves, it gets 2 s to exit and is then killed.
refused() {
    local what=$1 pattern=$2 opts=() rc=0 pid deadline
    shift 2
    while [[ $1 != -- ]]; do opts+=("$1"); shift; done
    shift
    rm -f "$T/err"
    LD_PRELOAD=$SAN_PRELOAD nbdkit -f "${opts[@]}" "$PLUGIN" "$@" </dev/null >/dev/null 2>"$T/err" &
    pid=$!
    deadline=$(($(now_ms) + 30000))
    while _proc_running "$pid"; do
        (($(now_ms) < deadline)) || { kill -KILL "$pid"; fail "$what: nbdkit still running after 30 s: $(cat "$T/err")"; }
        if [[ -n $SAN_PRELOAD ]] && grep -q "error:" "$T/err"; then
            deadline=$(($(now_ms) + 2000))
            while _proc_running "$pid" && (($(now_ms) < deadline)); do sleep 0.05; done
            _proc_running "$pid" && kill -KILL "$pid"
            break
        fi
        sleep 0.05
    done
    wait "$pid" || rc=$?
    [[ $rc != 0 && $(wc -l <"$T/err") == 1 ]] && grep -q -- "$pattern" "$T/err" ||
        fail "$what: exit $rc, stderr: $(head -c 600 "$T/err")"
    [[ ! -e $T/never.sock ]] || fail "$what: nbdkit served anyway"
    pass "$what: exit $rc, '$(cat "$T/err")'"
}

# fio_verify WHAT URI SIZE: random 4 KiB writes (and some 64 KiB) at depth 16 on two
# connections, each verified by crc32c after it is written; any error fails.
fio_verify() {
    local what=$1 uri=$2 size=$3 rc=0
    (cd "$T" && timeout -k 5 120 fio --name=verify --ioengine=nbd --uri="$uri" --rw=randwrite \
        --bsrange=4k-64k --bs_is_seq_rand=1 --size="$size" --iodepth=16 --numjobs=2 --offset_increment="$size" \
        --verify=crc32c --verify_fatal=1 --verify_state_save=0 --group_reporting \
        --output-format=terse --terse-version=3) >"$T/fio.out" 2>&1 || rc=$?
    [[ $rc == 0 ]] || fail "$what: fio exit $rc: $(grep -v 'connected to NBD' "$T/fio.out" | tail -n 5)"
    # terse v3: field 5 is the error code
    [[ $(grep -m1 '^3;' "$T/fio.out" | cut -d';' -f5) == 0 ]] || fail "$what: fio reported an error: $(tail -n 3 "$T/fio.out")"
    pass "$what: fio wrote and verified 2 x $size"
}

# info_of URI: nbdinfo's JSON view of the export, one key=value per line
info_of() {
    nbdinfo --json "$1" | "$SYSPY" -c '
import json, sys
e = json.load(sys.stdin)["exports"][0]
for k in ("export-size", "can_multi_conn", "can_fua", "can_trim", "can_zero", "can_fast_zero",
          "can_flush", "is_read_only", "block_size_minimum", "block_size_preferred", "block_size_maximum"):
    print("%s=%s" % (k, e.get(k)))'
}

# ------------------------------------------------------------------ what nbdkit says about it
nbdkit_ --dump-plugin "$PLUGIN" >"$T/dump" 2>&1 || fail "nbdkit --dump-plugin failed: $(cat "$T/dump")"
grep -qx "name=volgate" "$T/dump" && grep -qx "thread_model=parallel" "$T/dump" &&
    grep -qx "volgate_backends=file,memory,rbd,iscsi,nbd" "$T/dump" || fail "--dump-plugin: $(cat "$T/dump")"
grep -qx "api_version=2" "$T/dump" || fail "--dump-plugin: not API version 2"
nbdkit_ "$PLUGIN" --help >"$T/help" 2>&1 || fail "nbdkit PLUGIN --help failed"
grep -q "luks-key-file=PATH" "$T/help" && grep -q "iscsi://PORTAL" "$T/help" || fail "--help lacks the SPEC syntax"
pass "nbdkit --dump-plugin: volgate, API 2, thread model parallel; --help gives the SPEC syntax"

refused "unknown backend" "SPEC 'nosuch:x': unknown backend" -U "$T/never.sock" -- nosuch:x
refused "unknown option" "unknown option 'bogus'" -U "$T/never.sock" -- "memory:1M,bogus"
refused "missing file" "$T/absent.img" -U "$T/never.sock" -- "file:$T/absent.img"
refused "no SPEC" "no SPEC given" -U "$T/never.sock" --

# ------------------------------------------------------------------ memory
start_plugin "$T/m.sock" -- memory:64M
M=$(unix_uri "" "$T/m.sock")
info_of "$M" >"$T/info"
for want in export-size=67108864 can_multi_conn=True can_fua=True can_trim=True can_zero=True \
    can_fast_zero=True block_size_minimum=1 block_size_maximum=33554432; do
    grep -qx "$want" "$T/info" || fail "memory: expected $want in: $(tr '\n' ' ' <"$T/info")"
done
pass "memory: nbdkit advertises the device's multi-conn, FUA, trim, fast zero, block sizes"
qemu-io -f raw "$M" -c "write -P 0xa5 0 1M" -c "write -P 0x3c 1536 1000" -c "write -z 2M 1M" \
    -c "read -P 0xa5 0 1536" -c "read -P 0x3c 1536 1000" -c "read -P 0 2M 1M" >"$T/qio" 2>&1 ||
    fail "memory: qemu-io: $(tail -n 3 "$T/qio")"
grep -q "Pattern verification failed" "$T/qio" && fail "memory: qemu-io read back wrong data: $(cat "$T/qio")"
nbdsh -c "h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION); h.connect_uri('$M')" -c '
def extents(count, offset):
    found = []
    def got(meta, off, entries, err):
        found.extend(entries)
        return 0
    h.block_status(count, offset, got)
    return found
h.pwrite(b"x" * (1 << 20), 4 << 20)
e = extents(1 << 20, 4 << 20)
assert e[0] == 1 << 20 and e[1] & 3 == 0, e   # written: data
h.trim(1 << 20, 4 << 20)
e = extents(1 << 20, 4 << 20)
assert e[0] == 1 << 20 and e[1] & 3 == 3, e   # trimmed: a hole that reads as zeroes
assert h.pread(4096, 4 << 20) == bytes(4096)' || fail "memory: trim and block status"
pass "memory: qemu-io patterns (unaligned too) and write -z read back; a trim is a hole in block status"
fio_verify "memory" "$M" 24M
stop_plugin

start_plugin "$T/ro.sock" -- memory:1M,readonly
RO=$(unix_uri "" "$T/ro.sock")
info_of "$RO" >"$T/info"
grep -qx "is_read_only=True" "$T/info" || fail "readonly: nbdkit does not advertise a read-only export"
nbdsh -u "$RO" -c '
import errno
assert h.pread(4096, 0) == bytes(4096)
h.set_strict_mode(0)    # let the write go out
try:
    h.pwrite(b"x" * 4096, 0)
    raise SystemExit("a write to a readonly SPEC succeeded")
except nbd.Error as e:
    assert e.errnum == errno.EPERM, e' || fail "readonly: a write was not refused with EPERM"
stop_plugin
pass "memory:1M,readonly: advertised read-only, reads work, a write is refused with EPERM"

# ------------------------------------------------------------------ file, and cow in front of it
truncate -s 64M "$T/f.img"
start_plugin "$T/f.sock" -- "file:$T/f.img"
F=$(unix_uri "" "$T/f.sock")
fio_verify "file" "$F" 24M
head -c 1M /dev/urandom >"$T/r1"
qemu-io -f raw "$F" -c "write -P 0x77 60M 4k" >/dev/null 2>&1 || fail "file: qemu-io write"
nbdsh -u "$F" -c "
h.pwrite(open('$T/r1', 'rb').read(), 48 << 20, nbd.CMD_FLAG_FUA)
h.flush()"
cmp -s -n 1048576 "$T/r1" <(dd if="$T/f.img" bs=1M skip=48 count=1 status=none) || fail "file: the FUA write is not in the file"
cmp -s <(head -c 4096 /dev/zero | tr '\0' '\167') <(dd if="$T/f.img" bs=4k skip=$((60 * 256)) count=1 status=none) ||
    fail "file: qemu-io's write is not in the file"
pass "file: qemu-io's and nbdsh's writes are in the file itself"
stop_plugin

before=$(sha256sum <"$T/f.img")
start_plugin "$T/c.sock" --filter=cow -- "file:$T/f.img"
C=$(unix_uri "" "$T/c.sock")
fio_verify "file behind --filter=cow" "$C" 16M
nbdsh -u "$C" -c "assert h.pread(1 << 20, 48 << 20) == open('$T/r1', 'rb').read()" ||
    fail "cow: the file's own data does not read through the overlay"
stop_plugin
[[ $(sha256sum <"$T/f.img") == "$before" ]] || fail "cow: the file under the overlay changed"
pass "--filter=cow: fio verifies through the overlay, the file's data reads through it, the file is unchanged"

# ------------------------------------------------------------------ LUKS2
# With a sanitizer preloaded, Debian's nbdkit holds glibc's locale lock for good (the hang at exit
# above); libcryptsetup's JSON parser needs it, so a LUKS2 container never opens there.
if [[ -n $SAN_PRELOAD ]]; then
    echo "skip [$TEST_NAME]: LUKS2 part: nbdkit with a sanitizer preloaded deadlocks in newlocale (libcryptsetup's json-c)" >&2
    exit 0
fi
printf 'plugin passphrase 7f3c' >"$T/key"
printf 'wrong passphrase' >"$T/wrong"
truncate -s 48M "$T/l.img"
cryptsetup luksFormat -q --type luks2 --sector-size 4096 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
    --key-file "$T/key" "$T/l.img"
refused "wrong passphrase" "no keyslot opens with this passphrase" -U "$T/never.sock" -- "file:$T/l.img,luks-key-file=$T/wrong"
refused "luks-key-file=- on RBD (opened after nbdkit may fork)" "give rbd: and iscsi:// a key file" -U "$T/never.sock" -- "rbd:p/i,luks-key-file=-"
refused "luks-key-file=- with nbdkit -s" "standard input, which nbdkit uses here" -s -- "file:$T/l.img,luks-key-file=-"

start_plugin "$T/l.sock" -- "file:$T/l.img,luks-key-file=-" <"$T/key"
L=$(unix_uri "" "$T/l.sock")
info_of "$L" >"$T/info"
for want in export-size=$((32 << 20)) block_size_minimum=4096 can_fast_zero=True; do
    grep -qx "$want" "$T/info" || fail "LUKS2: expected $want in: $(tr '\n' ' ' <"$T/info")"
done
nbdsh -u "$L" -c '
import errno
h.set_strict_mode(0)    # let the unaligned request go out
try:
    h.pread(512, 0)
    raise SystemExit("an unaligned read succeeded")
except nbd.Error as e:
    assert e.errnum == errno.EINVAL, e
# Zeroes on LUKS are written as ciphertext: never fast. (nbdkit 1.32 aborted on this request
# when the plugin said it had no fast zero.)
try:
    h.zero(4096, 0, nbd.CMD_FLAG_FAST_ZERO)
    raise SystemExit("a fast zero succeeded")
except nbd.Error as e:
    assert e.errnum == errno.ENOTSUP, e
h.zero(4096, 0)' || fail "LUKS2: an unaligned read, a fast zero or a zero"
kill -0 "$NK_PID" || fail "LUKS2: nbdkit died on a fast zero"
pass "LUKS2: 32 MiB payload, minimum block size 4096; unaligned read refused with EINVAL, fast zero with ENOTSUP"
fio_verify "LUKS2" "$L" 8M
qemu-io -f raw "$L" -c "write -P 0x5e 20M 1M" -c "write -P 0x21 30M 1536" -c "read -P 0x5e 20M 1M" >"$T/qio" 2>&1 ||
    fail "LUKS2: qemu-io: $(tail -n 3 "$T/qio")"
grep -q "Pattern verification failed" "$T/qio" && fail "LUKS2: qemu-io read back wrong data"
nbdsh -u "$L" -c "h.pwrite(open('$T/r1', 'rb').read(), 24 << 20); h.flush()"
# Undumpable while it holds the volume key, as volgate serve
grep -q "^Max core file size *0 *0" "/proc/$NK_PID/limits" || fail "LUKS2: nbdkit may dump core: $(grep core "/proc/$NK_PID/limits")"
stop_plugin
refute_grep "the passphrase in nbdkit's verbose log" -F "plugin passphrase" "$NK_ERR"
$PAYLOAD decrypt "$T/l.img" "$T/key" "$T/plain"
cmp -s -n 1048576 "$T/r1" <(dd if="$T/plain" bs=1M skip=24 count=1 status=none) ||
    fail "LUKS2: nbdsh's write does not decrypt independently"
"$SYSPY" - "$T/plain" <<'PY' || fail "LUKS2: qemu-io's writes do not decrypt independently"
import sys
d = open(sys.argv[1], "rb").read()
assert d[20 << 20:21 << 20] == b"\x5e" * (1 << 20)
assert d[30 << 20:(30 << 20) + 1536] == b"\x21" * 1536
PY
grep -q "^volgate: serving" "$NK_ERR" || grep -q "volgate: serving" "$NK_ERR" || fail "LUKS2: no serving line in the log"
pass "LUKS2: qemu-io, nbdsh and fio through the plugin; the ciphertext decrypts independently to what they wrote; no core, no passphrase in the log"

# xts-provider=: each provider reads what the other wrote; a wrong-answering one never serves.
start_plugin "$T/x1.sock" -- "file:$T/l.img,luks-key-file=$T/key" xts-provider=openssl
nbdcopy "nbd+unix:///?socket=$T/x1.sock" "$T/via-openssl"
stop_plugin
grep -q "AES-XTS: openssl (OpenSSL .*), as asked" "$NK_ERR" || fail "xts-provider=openssl: no log line"
start_plugin "$T/x2.sock" -- "file:$T/l.img,luks-key-file=$T/key" xts-provider=gcrypt
nbdcopy "nbd+unix:///?socket=$T/x2.sock" "$T/via-gcrypt"
stop_plugin
grep -q "AES-XTS: gcrypt (libgcrypt .*), as asked" "$NK_ERR" || fail "xts-provider=gcrypt: no log line"
cmp -s "$T/via-openssl" "$T/plain" && cmp -s "$T/via-gcrypt" "$T/plain" ||
    fail "xts-provider: a provider reads the payload differently from the independent decryption"
pass "xts-provider=openssl|gcrypt: both read the payload as the independent decryption does"
refused "xts-provider=bogus" "xts-provider=bogus: give auto, openssl or gcrypt" -U "$T/never.sock" -- \
    "file:$T/l.img,luks-key-file=$T/key" xts-provider=bogus
VOLGATE_TEST_XTS_WRONG=gcrypt refused "a provider that answers wrongly" \
    "AES-XTS provider gcrypt gave a wrong answer, so volgate will not encrypt with it" -U "$T/never.sock" -- \
    "file:$T/l.img,luks-key-file=$T/key" xts-provider=gcrypt

# nbdkit forks into the background after .get_ready, where the LUKS device (and its cipher
# helpers) opened; and with --run the server is the forked child. Large requests go to the
# helpers: they must run in the child (they hung there, helperless, before).
plugin_forked_roundtrip "LUKS2 in the background" "file:$T/l.img,luks-key-file=$T/key" 32
make_random_file "$T/run.data" 8
LD_PRELOAD=$SAN_PRELOAD timeout -k 5 60 nbdkit -U - "$PLUGIN" "file:$T/l.img,luks-key-file=$T/key" \
    --run "nbdcopy '$T/run.data' \"\$uri\" && nbdcopy \"\$uri\" '$T/run.back'" 2>"$T/run.err" ||
    fail "LUKS2 with --run: nbdcopy through the plugin failed or hung: $(tail -n 3 "$T/run.err")"
cmp -s "$T/run.data" <(head -c $((8 << 20)) "$T/run.back") || fail "LUKS2 with --run: read back differs"
pass "LUKS2 with nbdkit forked (into the background, and for --run): 1 MiB requests through the cipher helpers"
