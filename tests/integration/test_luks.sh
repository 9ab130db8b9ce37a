#!/usr/bin/env bash
# LUKS compatibility with the real tools, both ways:
#  - containers made by cryptsetup (LUKS2 4096/512-byte sectors, argon2id and pbkdf2; LUKS1) and
#    by qemu-img (LUKS1) are served decrypted by volgate; what volgate writes is read back by an
#    independent decryptor (python3-cryptography with cryptsetup's volume key), by qemu-img and by
#    nbdkit's luks filter; what they write is read correctly through volgate;
#  - `volgate luks format` output passes cryptsetup luksDump, keyslots can be added and removed;
#    --key-size 256 (AES-128-XTS) works both ways with cryptsetup, a size that is no 4 KiB
#    multiple gets 512-byte sectors, --force overwrites a container, `-` is standard input;
#  - a wrong passphrase, an unsupported cipher, a reencryption in progress, an unknown LUKS2
#    requirement, integrity protection and a destroyed header are refused with one clear line and
#    exit code 2, leaving the image byte for byte unchanged; `luks dump` says why it does not
#    serve a container or cannot read a header;
#  - run as nobody, `volgate serve` reading a passphrase from standard input holds it in locked
#    memory kept out of core dumps, and is not dumpable;
#  - a damaged primary LUKS2 header with a good secondary still opens; a crafted header with a
#    1 GiB data offset opens without copying that gigabyte (peak RSS, time); fio verifies through
#    encrypted exports with both sector sizes;
#  - both AES-XTS providers (--xts-provider openssl|gcrypt) agree with the independent
#    implementation both ways; one that answers wrongly (a test hook) is never used.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_volgate
require_tool cryptsetup qemu-img qemu-io nbdkit nbdcopy nbdinfo fio
PAYLOAD="$SYSPY $INTEGRATION_DIR/luks_payload.py"
T=$TEST_TMP
S=$T/s.sock
printf 'correct horse battery' >"$T/k1"
printf 'second passphrase\n' >"$T/k2"
printf 'not the passphrase' >"$T/bad"
# Cheap key derivation so the test spends its time on data, not on PBKDF benchmarks.
FAST_ARGON=(--pbkdf argon2id --pbkdf-force-iterations 4 --pbkdf-memory 32768)
FAST_PBKDF2=(--pbkdf pbkdf2 --pbkdf-force-iterations 1000)
uri() { unix_uri "$1" "$S"; }

# serve_one NAME IMAGE KEYFILE: serves IMAGE decrypted as export NAME on $S
serve_one() {
    start_volgate --unix "$S" --export "$1=file:$2,luks-key-file=$3" ${XTS_PROVIDER:+--xts-provider "$XTS_PROVIDER"}
}

# refused_to_serve WHAT IMAGE KEYFILE PATTERN: `volgate serve` of IMAGE unlocked with KEYFILE
# must exit 2 before serving, with one line on stderr matching PATTERN (left in $T/err), and
# leave IMAGE byte for byte as it was.
refused_to_serve() {
    local what=$1 img=$2 key=$3 pattern=$4 before rc=0
    before=$(sha256sum <"$img")
    "$VOLGATE" serve --unix "$S" --export "x=file:$img,luks-key-file=$key" >/dev/null 2>"$T/err" || rc=$?
    [[ $rc == 2 && $(wc -l <"$T/err") == 1 ]] && grep -q -- "$pattern" "$T/err" ||
        fail "$what: rc $rc, $(cat "$T/err")"
    [[ $(sha256sum <"$img") == "$before" ]] || fail "$what: refusing it changed the image"
}

# roundtrip NAME IMAGE KEYFILE: random data through volgate equals the independent decryption,
# and data the independent encryptor writes reads back through volgate.
roundtrip() {
    local name=$1 img=$2 key=$3 size
    serve_one "$name" "$img" "$key"
    size=$(nbdinfo --size "$(uri "$name")")
    head -c "$size" /dev/urandom >"$T/plain"
    nbdcopy --flush "$T/plain" "$(uri "$name")"
    stop_volgate
    $PAYLOAD decrypt "$img" "$key" "$T/indep"
    cmp -s "$T/plain" "$T/indep" || fail "$name: payload written by volgate does not decrypt independently"
    head -c "$size" /dev/urandom >"$T/plain2"
    $PAYLOAD encrypt "$img" "$key" "$T/plain2"
    serve_one "$name" "$img" "$key"
    nbdcopy "$(uri "$name")" "$T/back"
    stop_volgate
    cmp -s "$T/plain2" "$T/back" || fail "$name: independently encrypted data reads wrong through volgate"
    cp "$T/plain2" "$T/$name.plain"  # the payload $img now holds
    pass "$name: volgate and an independent AES-XTS implementation agree both ways"
}

# ------------------------------------------------------------------ cryptsetup-made containers
truncate -s 40M "$T/l2-4k.img" "$T/l2-512.img" "$T/l1.img"
cryptsetup luksFormat -q --type luks2 --sector-size 4096 "${FAST_ARGON[@]}" --key-file "$T/k1" "$T/l2-4k.img"
cryptsetup luksFormat -q --type luks2 --sector-size 512 "${FAST_PBKDF2[@]}" --key-file "$T/k1" "$T/l2-512.img"
cryptsetup luksFormat -q --type luks1 "${FAST_PBKDF2[@]}" --key-file "$T/k1" "$T/l1.img"
roundtrip luks2-4k "$T/l2-4k.img" "$T/k1"
roundtrip luks2-512 "$T/l2-512.img" "$T/k1"
roundtrip luks1 "$T/l1.img" "$T/k1"

# ------------------------------------------------------------------ both AES-XTS providers
# Each provider, named, against the independent implementation, on both sector sizes.
for provider in openssl gcrypt; do
    XTS_PROVIDER=$provider roundtrip "luks2-4k-$provider" "$T/l2-4k.img" "$T/k1"
    XTS_PROVIDER=$provider roundtrip "luks1-$provider" "$T/l1.img" "$T/k1"
    grep -q "AES-XTS: $provider (.*), as asked" "$VG_ERR" || fail "no log line for --xts-provider $provider: $(cat "$VG_ERR")"
done
# A provider that answers wrongly (the test hook flips a bit of its output in the probe): named,
# the start fails before anything listens; left to auto, the other provider serves.
rc=0
VOLGATE_TEST_XTS_WRONG=gcrypt "$VOLGATE" serve --xts-provider gcrypt --unix "$S" \
    --export "x=file:$T/l1.img,luks-key-file=$T/k1" >/dev/null 2>"$T/err" || rc=$?
assert_eq "$rc" 1 "exit code of serve --xts-provider gcrypt when gcrypt answers wrongly"
grep -q "AES-XTS provider gcrypt gave a wrong answer, so volgate will not encrypt with it: IEEE 1619 vector 4" "$T/err" ||
    fail "wrong-answer refusal: $(cat "$T/err")"
[[ -e $S ]] && fail "serve listened with a provider that answered wrongly"
VOLGATE_TEST_XTS_WRONG=gcrypt start_volgate --unix "$S" --export "x=file:$T/l1.img,luks-key-file=$T/k1"
nbdcopy "$(uri x)" "$T/back"
cmp -s "$T/back" "$T/luks1-gcrypt.plain" || fail "the fallback provider reads the payload wrong"
stop_volgate
grep -q "error AES-XTS: gcrypt (libgcrypt .*) gave a wrong answer and will not be used" "$VG_ERR" ||
    fail "no error line for the provider that answered wrongly: $(cat "$VG_ERR")"
grep -q "AES-XTS: openssl (OpenSSL .*), the fastest that gave the known answers" "$VG_ERR" ||
    fail "auto did not fall back to openssl: $(cat "$VG_ERR")"
pass "a provider that answers wrongly: named, serve exits 1 before listening; auto serves with the other"
# What the images hold now, for the checks below.
cp "$T/luks2-4k-gcrypt.plain" "$T/luks2-4k.plain"
cp "$T/luks1-gcrypt.plain" "$T/luks1.plain"

serve_one l2 "$T/l2-4k.img" "$T/k1"
nbdinfo --json "$(uri l2)" | "$SYSPY" -c '
import json, sys
e = json.load(sys.stdin)["exports"][0]
assert e["block_size_minimum"] == 4096, e
assert e["export-size"] == 40 * 2**20 - 16 * 2**20, e
assert e["can_fast_zero"] is False, e' || fail "LUKS2 4096: wrong size or block sizes"
stop_volgate
pass "LUKS2 4096-byte sectors: 24 MiB payload, minimum block size 4096"

# ------------------------------------------------------------------ QEMU and nbdkit (LUKS1)
qemu_luks() { echo "driver=luks,key-secret=s0,file.filename=$1"; }
# QEMU 7.2 times its PBKDF's first 32768 iterations with the thread's CPU clock and gives up
# ("Unable to get accurate CPU usage") when they measure as zero, which with SHA-256 on a fast
# host happened in 45 of 100 runs here. SHA-512 is slow enough to be measured (0 of 100); the
# retries cover what is left.
for attempt in 1 2 3 4 5; do
    qemu-img create -q -f luks --object "secret,id=s0,file=$T/k1" \
        -o key-secret=s0,iter-time=200,hash-alg=sha512 "$T/q.img" 32M 2>"$T/qemu-create.err" && break
    ((attempt < 5)) || fail "qemu-img create -f luks: $(cat "$T/qemu-create.err")"
done
# qemu-io writes, volgate reads
qemu-io --object "secret,id=s0,file=$T/k1" --image-opts "$(qemu_luks "$T/q.img")" \
    -c "write -P 0x5a 0 1M" -c "write -P 0xc3 3M 512" >/dev/null
serve_one q "$T/q.img" "$T/k1"
nbdcopy "$(uri q)" "$T/q.plain"
"$SYSPY" - "$T/q.plain" <<'PY' || fail "qemu-io's writes read wrong through volgate"
import sys
d = open(sys.argv[1], "rb").read()
assert d[:1 << 20] == b"\x5a" * (1 << 20)
assert d[3 << 20:(3 << 20) + 512] == b"\xc3" * 512
PY
# volgate writes, qemu-img and nbdkit read
head -c 4M /dev/urandom >"$T/q.rand"
nbdcopy --flush "$T/q.rand" "$(uri q)"
stop_volgate
qemu-img convert --object "secret,id=s0,file=$T/k1" --image-opts "$(qemu_luks "$T/q.img")" -O raw "$T/q.qemu"
cmp -s -n $((4 << 20)) "$T/q.rand" "$T/q.qemu" || fail "qemu-img reads volgate's writes wrong"
nbdkit -f -U "$T/k.sock" --filter=luks file "$T/q.img" passphrase=+"$T/k1" &
BG_PIDS+=($!)
for _ in $(seq 100); do [[ -S $T/k.sock ]] && break; sleep 0.05; done
nbdcopy "nbd+unix:///?socket=$T/k.sock" "$T/q.nbdkit"
cmp -s -n $((4 << 20)) "$T/q.rand" "$T/q.nbdkit" || fail "nbdkit --filter=luks reads volgate's writes wrong"
pass "qemu-img LUKS1: qemu-io writes read through volgate; volgate's writes read by qemu-img and nbdkit"
# cryptsetup's LUKS1 container through QEMU too
qemu-img convert --object "secret,id=s0,file=$T/k1" --image-opts "$(qemu_luks "$T/l1.img")" -O raw "$T/l1.qemu"
cmp -s "$T/luks1.plain" "$T/l1.qemu" || fail "qemu-img reads the cryptsetup LUKS1 container differently"
pass "cryptsetup LUKS1: qemu-img reads what volgate reads"

# ------------------------------------------------------------------ volgate luks format
"$VOLGATE" luks format --pbkdf-memory 32768 --iter-time 50 --key-file "$T/k1" "file:$T/v2.img,size=48M" >"$T/fmt.out" 2>"$T/fmt.err" ||
    fail "volgate luks format failed: $(cat "$T/fmt.err")"
grep -q "^version: *LUKS2" "$T/fmt.out" && grep -q "^sector size: *4096" "$T/fmt.out" ||
    fail "format summary: $(cat "$T/fmt.out")"
v2_dump=$(cryptsetup luksDump "$T/v2.img") || fail "cryptsetup luksDump rejects volgate's LUKS2 header: $v2_dump"
grep -q "cipher: aes-xts-plain64" <<<"$v2_dump" || fail "cryptsetup luksDump rejects volgate's LUKS2 header"
grep -q "PBKDF: *argon2id" <<<"$v2_dump" || fail "LUKS2 default PBKDF is not argon2id"
roundtrip volgate-luks2 "$T/v2.img" "$T/k1"
"$VOLGATE" luks format --type luks1 --pbkdf-force-iterations 1000 --key-file "$T/k1" "file:$T/v1.img,size=32M" >/dev/null 2>&1 ||
    fail "volgate luks format --type luks1 failed"
grep -q "^Version:.*1" <<<"$(cryptsetup luksDump "$T/v1.img")" || fail "cryptsetup does not see LUKS1"
roundtrip volgate-luks1 "$T/v1.img" "$T/k1"
qemu-img convert --object "secret,id=s0,file=$T/k1" --image-opts "$(qemu_luks "$T/v1.img")" -O raw "$T/v1.qemu"
cmp -s "$T/volgate-luks1.plain" "$T/v1.qemu" || fail "qemu-img reads volgate's LUKS1 container differently"
pass "volgate luks format: headers pass cryptsetup luksDump; QEMU opens the LUKS1 one"

# an existing container is not overwritten without --force
rc=0; "$VOLGATE" luks format --key-file "$T/k1" "file:$T/v1.img" >/dev/null 2>"$T/err" || rc=$?
[[ $rc == 2 ]] && grep -q "already holds a LUKS container" "$T/err" || fail "format over a container: rc $rc, $(cat "$T/err")"
pass "format refuses to overwrite a container without --force"

# ------------------------------------------------------------------ AES-128-XTS, the sector default
# --key-size 256 is AES-128-XTS, both ways: cryptsetup opens volgate's container and the
# independent AES-XTS (whose key is the 32 bytes cryptsetup dumps) reads what volgate wrote there;
# volgate serves cryptsetup's container and reads what the independent AES-XTS wrote there (one
# server for both: each start costs seconds under ASan). 20 MiB and 1.5 KiB is no multiple of
# 4 KiB: the sector is 512 bytes.
"$VOLGATE" luks format --key-size 256 "${FAST_PBKDF2[@]}" --key-file "$T/k1" "file:$T/aes128.img,size=$(((20 << 20) + 1536))" \
    >"$T/fmt.out" 2>"$T/fmt.err" || fail "volgate luks format --key-size 256: $(cat "$T/fmt.err")"
grep -q "^cipher: *aes-xts-plain64, 256-bit key$" "$T/fmt.out" || fail "format --key-size 256 says: $(cat "$T/fmt.out")"
grep -q "^sector size: *512$" "$T/fmt.out" || fail "the default sector of a size that is no 4 KiB multiple: $(cat "$T/fmt.out")"
aes128_dump=$(cryptsetup luksDump "$T/aes128.img") || fail "cryptsetup luksDump rejects volgate's AES-128-XTS header"
grep -q "Cipher key: *256 bits" <<<"$aes128_dump" && grep -q "sector: 512 \[bytes\]" <<<"$aes128_dump" ||
    fail "cryptsetup sees another key size or sector: $aes128_dump"
cryptsetup open --test-passphrase --key-file "$T/k1" "$T/aes128.img" || fail "cryptsetup cannot open volgate's AES-128-XTS container"
truncate -s 20M "$T/cs-aes128.img"
cryptsetup luksFormat -q --type luks2 --key-size 256 "${FAST_PBKDF2[@]}" --key-file "$T/k1" "$T/cs-aes128.img"
head -c 4M /dev/urandom >"$T/cs-aes128.plain"
$PAYLOAD encrypt "$T/cs-aes128.img" "$T/k1" "$T/cs-aes128.plain"
start_volgate --unix "$S" --export "v128=file:$T/aes128.img,luks-key-file=$T/k1" \
    --export "c128=file:$T/cs-aes128.img,luks-key-file=$T/k1"
head -c "$(nbdinfo --size "$(uri v128)")" /dev/urandom >"$T/aes128.plain"
nbdcopy --flush "$T/aes128.plain" "$(uri v128)"
nbdcopy "$(uri c128)" "$T/back"
stop_volgate
cmp -s "$T/cs-aes128.plain" "$T/back" || fail "volgate reads what the independent AES-128-XTS wrote to cryptsetup's container wrong"
$PAYLOAD decrypt "$T/aes128.img" "$T/k1" "$T/indep"
cmp -s "$T/aes128.plain" "$T/indep" || fail "what volgate wrote to its AES-128-XTS container does not decrypt independently"
pass "--key-size 256 (AES-128-XTS): cryptsetup opens volgate's container, volgate serves cryptsetup's; 512-byte sectors by default for 20 MiB + 1.5 KiB"

# --force overwrites a container. --key-file - is standard input, read byte for byte: k2's
# trailing newline is part of the passphrase.
old_uuid=$(cryptsetup luksUUID "$T/aes128.img")
"$VOLGATE" luks format --force "${FAST_PBKDF2[@]}" --key-file - "file:$T/aes128.img" <"$T/k2" >/dev/null 2>"$T/err" ||
    fail "format --force: $(cat "$T/err")"
[[ $(cryptsetup luksUUID "$T/aes128.img") != "$old_uuid" ]] || fail "format --force left the old header"
cryptsetup open --test-passphrase --key-file "$T/k2" "$T/aes128.img" || fail "the passphrase given on standard input does not open the new container"
! cryptsetup open --test-passphrase --key-file "$T/k1" "$T/aes128.img" 2>/dev/null || fail "the old passphrase still opens the container --force replaced"
printf 'second passphrase' >"$T/k2-no-newline"
! cryptsetup open --test-passphrase --key-file "$T/k2-no-newline" "$T/aes128.img" 2>/dev/null ||
    fail "the newline at the end of standard input was not taken as part of the passphrase"
pass "format --force replaces a container (new UUID, only the new passphrase opens it); --key-file - reads standard input byte for byte"

# ------------------------------------------------------------------ the passphrase in memory
# `volgate serve`, run as nobody, reads the passphrase of a LUKS export from standard input: a
# FIFO that a helper holds. While the server waits for it, the helper looks at the server from
# outside: the buffer for the passphrase is locked (VmLck, and VmFlags "lo" in smaps; nobody may
# lock 8 MiB at most) and kept out of core dumps ("dd"), and the process is not dumpable (its
# /proc files belong to root although it runs as nobody). Then the helper sends the passphrase
# and the export serves the container's data.
NOBODY=65534
NOGROUP=$(getent group nogroup | cut -d: -f3)
N=$T/nobody
mkdir -p "$N"
chmod 0711 "$T"
cp "$T/l2-512.img" "$N/e.img"
mkfifo "$N/key"
chown -R "$NOBODY:$NOGROUP" "$N"
cat >"$N/as-nobody" <<WRAPPER
#!/bin/sh
echo \$\$ >"$N/pid"
exec setpriv --reuid=$NOBODY --regid=$NOGROUP --clear-groups -- "$(readlink -f "$VOLGATE")" "\$@" <"$N/key"
WRAPPER
chmod 0755 "$N/as-nobody"
# The sanitizers' mlock interceptor (ASan's and TSan's alike) locks nothing: there the helper
# waits only for volgate to be running.
expect_lock=1
[[ $(ldd "$VOLGATE" 2>/dev/null) =~ lib[at]san ]] && expect_lock=0
"$SYSPY" - "$N" "$T/k1" "$expect_lock" >"$T/key-wait.out" 2>&1 <<'PY' &
import os, sys, time
n, key, expect_lock = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
deadline = time.monotonic() + 20
while not os.path.exists(n + "/pid") and time.monotonic() < deadline:
    time.sleep(0.02)
pid = open(n + "/pid").read().strip()
fifo = open(n + "/key", "wb")  # meets the server's end of it
deadline = time.monotonic() + 30  # then the passphrase goes anyway, and the checks below fail (an
# ASan build under load takes seconds to start: the fifo opens before volgate is exec'd)


def locked_kib():
    for line in open("/proc/%s/status" % pid):
        if line.startswith("VmLck:"):
            return int(line.split()[1])


def waiting():
    if expect_lock:
        return locked_kib() == 0
    comm = open("/proc/%s/comm" % pid).read().strip()
    return comm != "volgate" or os.stat("/proc/%s/status" % pid).st_uid != 0


while waiting() and time.monotonic() < deadline:
    time.sleep(0.02)
flags = [l.split()[1:] for l in open("/proc/%s/smaps" % pid) if l.startswith("VmFlags:")]
uid = [l.split()[1] for l in open("/proc/%s/status" % pid) if l.startswith("Uid:")][0]
print("vmlck %d" % locked_kib())
print("locked-undumped-areas %d" % sum("lo" in f and "dd" in f for f in flags))
print("uid %s owner %d" % (uid, os.stat("/proc/%s/status" % pid).st_uid), flush=True)
fifo.write(open(key, "rb").read())
fifo.close()
PY
BG_PIDS+=($!)
VOLGATE=$N/as-nobody VG_READY_S=30 start_volgate --unix "$N/s.sock" --export "e=file:$N/e.img,luks-key-file=-"
info "while it waited for the passphrase: $(tr '\n' ' ' <"$T/key-wait.out")"
vmlck=$(awk '/^vmlck/ {print $2}' "$T/key-wait.out")
if ((!expect_lock)); then
    info "sanitizer build: its mlock interceptor locks nothing, so VmLck is not checked"
else
    ((vmlck > 0)) || fail "the server held no locked memory while it read the passphrase: $(cat "$T/key-wait.out")"
    grep -q '^locked-undumped-areas [1-9]' "$T/key-wait.out" ||
        fail "no locked memory area is also excluded from core dumps: $(cat "$T/key-wait.out")"
fi
grep -q "^uid $NOBODY owner 0$" "$T/key-wait.out" ||
    fail "the server run as nobody is dumpable (its /proc files are not root's): $(cat "$T/key-wait.out")"
nbdcopy "$(unix_uri e "$N/s.sock")" "$T/back"
stop_volgate
cmp -s "$T/luks2-512.plain" "$T/back" || fail "the export unlocked with a passphrase from standard input reads wrong"
pass "luks-key-file=- as nobody: $vmlck KiB locked and out of core dumps while it waited for the passphrase, not dumpable; then served"

# `volgate luks` holds passphrases and the volume key too: a format run as nobody, waiting for its
# passphrase on standard input, is not dumpable either (its /proc files are root's).
truncate -s 20M "$N/f.img"  # room for the 16 MiB LUKS2 header and data
chown "$NOBODY:$NOGROUP" "$N/f.img"
mkfifo "$N/fkey"
chown "$NOBODY:$NOGROUP" "$N/fkey"
setpriv --reuid=$NOBODY --regid=$NOGROUP --clear-groups -- "$(readlink -f "$VOLGATE")" luks format \
    --pbkdf-memory 32768 --iter-time 50 --key-file - "file:$N/f.img" <"$N/fkey" >"$T/fmt.out" 2>&1 &
fmt_pid=$!
BG_PIDS+=($fmt_pid)
exec {fkey}>"$N/fkey"  # opens once the format has opened its end: it is running by then
# Until setpriv has execed volgate as nobody the child is a root shell, whose /proc is root's
# anyway: wait for volgate running as nobody, then for its /proc to become root's.
seen=
for ((i = 0; i < 600; i++)); do  # it makes itself undumpable before it reads the passphrase
    seen="$(cat "/proc/$fmt_pid/comm" 2>/dev/null) uid $(awk '/^Uid:/ {print $2}' "/proc/$fmt_pid/status" 2>/dev/null) owner $(stat -c %u "/proc/$fmt_pid/status" 2>/dev/null)"
    [[ $seen == "volgate uid $NOBODY owner 0" ]] && break
    sleep 0.05
done
assert_eq "$seen" "volgate uid $NOBODY owner 0" "volgate luks format as nobody (its /proc would be nobody's if it were dumpable)"
cat "$T/k1" >&$fkey
exec {fkey}>&-
wait "$fmt_pid" || fail "luks format as nobody: $(cat "$T/fmt.out")"
cryptsetup luksOpen --test-passphrase --key-file "$T/k1" "$N/f.img" || fail "cryptsetup cannot open the container nobody formatted"
pass "volgate luks format as nobody is not dumpable while it waits for the passphrase"

# ------------------------------------------------------------------ keyslots and wrong passphrases
before=$(sha256sum <"$T/v2.img")
rc=0; "$VOLGATE" luks add-key --key-file "$T/bad" --new-key-file "$T/k2" "file:$T/v2.img" >/dev/null 2>"$T/err" || rc=$?
[[ $rc == 2 && $(wc -l <"$T/err") == 1 ]] && grep -q "no keyslot opens with this passphrase" "$T/err" ||
    fail "add-key with a wrong passphrase: rc $rc, $(cat "$T/err")"
refused_to_serve "serve with a wrong passphrase" "$T/v2.img" "$T/bad" "export 'x'.*no keyslot opens"
[[ $(sha256sum <"$T/v2.img") == "$before" ]] || fail "a wrong passphrase changed the image"
refute_grep "a passphrase appeared in a log" "not the passphrase\|correct horse" "$T"/*.err "$T/err"
pass "wrong passphrase: one clear line, exit 2, image unchanged, no passphrase in any log"

"$VOLGATE" luks add-key --pbkdf-memory 32768 --iter-time 50 --key-file "$T/k1" --new-key-file "$T/k2" "file:$T/v2.img" >"$T/out" 2>&1 ||
    fail "add-key: $(cat "$T/out")"
[[ $(cryptsetup luksDump "$T/v2.img" | grep -c ": luks2$") == 2 ]] || fail "cryptsetup does not see two keyslots"
cryptsetup luksOpen --test-passphrase --key-file "$T/k2" "$T/v2.img" || fail "cryptsetup cannot open the added keyslot"
serve_one k2 "$T/v2.img" "$T/k2"
nbdcopy "$(uri k2)" "$T/back"
stop_volgate
cmp -s "$T/volgate-luks2.plain" "$T/back" || fail "the second keyslot opens a different volume"
"$VOLGATE" luks remove-key --key-file "$T/k1" "file:$T/v2.img" >"$T/out" 2>&1 || fail "remove-key: $(cat "$T/out")"
# cryptsetup's exit code 2 is "no key available with this passphrase" (1 would be bad arguments)
rc=0; cryptsetup luksOpen --test-passphrase --key-file "$T/k1" "$T/v2.img" 2>/dev/null || rc=$?
assert_eq "$rc" 2 "cryptsetup with a removed key"
refused_to_serve "a removed key (volgate)" "$T/v2.img" "$T/k1" "no keyslot opens"
rc=0; "$VOLGATE" luks remove-key --key-file "$T/k2" "file:$T/v2.img" >/dev/null 2>"$T/err" || rc=$?
[[ $rc == 2 ]] && grep -q "last one" "$T/err" || fail "removing the last keyslot: rc $rc, $(cat "$T/err")"
pass "add-key and remove-key: cryptsetup agrees, a removed key no longer opens, the last one stays"

# ------------------------------------------------------------------ damaged and unsupported headers
# dump_unreadable IMAGE PATTERN: a header volgate cannot read at all: `luks dump` exits 2 with
# one line naming the reason (PATTERN).
dump_unreadable() {
    local rc=0
    "$VOLGATE" luks dump "file:$1" >"$T/out" 2>"$T/err" || rc=$?
    [[ $rc == 2 && $(wc -l <"$T/err") == 1 && ! -s $T/out ]] && grep -q -- "$2" "$T/err" ||
        fail "luks dump of $1: rc $rc, stdout $(cat "$T/out"), stderr $(cat "$T/err")"
}
cp "$T/l2-4k.img" "$T/damaged.img"
dd if=/dev/zero of="$T/damaged.img" bs=4096 count=1 conv=notrunc status=none  # primary binary header
serve_one damaged "$T/damaged.img" "$T/k1"
nbdcopy "$(uri damaged)" "$T/back"
stop_volgate
cmp -s "$T/luks2-4k.plain" "$T/back" || fail "a LUKS2 container with a damaged primary header reads wrong"
pass "damaged primary LUKS2 header: opens from the secondary copy"
dd if=/dev/zero of="$T/damaged.img" bs=16384 count=2 conv=notrunc status=none  # both copies
refused_to_serve "both headers destroyed" "$T/damaged.img" "$T/k1" "no LUKS header found"
dump_unreadable "$T/damaged.img" "no LUKS header found"
pass "both LUKS2 headers destroyed: $(cat "$T/err") (serve and luks dump)"
# The signature left, but the metadata of both copies garbled (their checksums fail).
cp "$T/l2-4k.img" "$T/garbled.img"
for at in 5000 $((16384 + 5000)); do
    head -c 200 /dev/urandom | dd of="$T/garbled.img" bs=1 seek="$at" conv=notrunc status=none
done
dump_unreadable "$T/garbled.img" "the LUKS header is damaged"
pass "luks dump of a header whose metadata is garbled: $(cat "$T/err")"
# A container cut short: libcryptsetup's words, naming the container rather than our copy of it.
head -c 1M "$T/l1.img" >"$T/short.img"
dump_unreadable "$T/short.img" "The container is too small"
refute_grep "an internal path in the message" "/proc/self" "$T/err"
pass "luks dump of a LUKS1 container cut short: $(cat "$T/err")"

truncate -s 20M "$T/cbc.img"
cryptsetup luksFormat -q --type luks2 --cipher aes-cbc-essiv:sha256 "${FAST_PBKDF2[@]}" --key-file "$T/k1" "$T/cbc.img"
refused_to_serve "unsupported cipher" "$T/cbc.img" "$T/k1" "aes-cbc-essiv:sha256"
# luks dump describes it (exit 0) and says why it cannot be served.
rc=0; cbc_dump=$("$VOLGATE" luks dump "file:$T/cbc.img" 2>&1) || rc=$?
[[ $rc == 0 ]] && grep -q "^servable: *no: cipher aes-cbc-essiv:sha256 (volgate serves aes-xts-plain64 only)$" <<<"$cbc_dump" ||
    fail "luks dump of the aes-cbc container: rc $rc, $cbc_dump"
pass "unsupported cipher refused: $(cat "$T/err"); luks dump says '$(grep '^servable' <<<"$cbc_dump")'"

cp "$T/l2-512.img" "$T/reenc.img"
if cryptsetup reencrypt -q --init-only "${FAST_PBKDF2[@]}" --key-file "$T/k1" "$T/reenc.img" 2>"$T/reenc.err"; then
    refused_to_serve "reencryption in progress" "$T/reenc.img" "$T/k1" "reencryption"
    pass "reencryption in progress refused: $(cat "$T/err")"
else
    fail "cryptsetup reencrypt --init-only failed here: $(cat "$T/reenc.err")"
fi

# cryptsetup cannot make these without device-mapper, so luks2_edit.py writes the metadata
for edit in "requirement volgate-test-unknown:an unknown LUKS2 requirement" "integrity hmac(sha256):integrity protection" \
    "sector-size 8192:encryption sector size 8192"; do
    truncate -s 20M "$T/edit.img"
    cryptsetup luksFormat -q --type luks2 "${FAST_PBKDF2[@]}" --key-file "$T/k1" "$T/edit.img"
    # shellcheck disable=SC2086  # the edit is two words on purpose
    "$SYSPY" "$INTEGRATION_DIR/luks2_edit.py" "$T/edit.img" ${edit%%:*}
    cryptsetup luksDump "$T/edit.img" >/dev/null || fail "the edited header ($edit) is not valid LUKS2"
    refused_to_serve "${edit%%:*}" "$T/edit.img" "$T/k1" "${edit#*:}"
    # luks dump says so too, rather than "servable: yes"
    "$VOLGATE" luks dump "file:$T/edit.img" | grep -q "^servable: *no: .*${edit#*:}" ||
        fail "luks dump of ${edit%%:*}: $("$VOLGATE" luks dump "file:$T/edit.img" | grep servable)"
    pass "refused by name: $(cat "$T/err")"
done

# ------------------------------------------------------------------ a crafted 1 GiB data offset
# Opening such a header once copied everything before the data into memory (1 GiB of RSS and
# seconds); only the header and keyslot areas are read now. VmHWM is the server's peak RSS.
truncate -s 1100M "$T/far.img"
cryptsetup luksFormat -q --type luks2 "${FAST_PBKDF2[@]}" --key-file "$T/k1" "$T/far.img"
"$SYSPY" "$INTEGRATION_DIR/luks2_edit.py" "$T/far.img" data-offset $((1023 << 20))
cryptsetup luksDump "$T/far.img" | grep -q "offset: $((1023 << 20)) \[bytes\]" || fail "the data offset edit did not take"
t0=$(now_ms)
serve_one far "$T/far.img" "$T/k1"
open_ms=$(($(now_ms) - t0))
[[ $(nbdinfo --size "$(uri far)") == $((77 << 20)) ]] || fail "the far container's payload is not 77 MiB"
head -c 1M /dev/urandom >"$T/far.plain"
nbdcopy --flush "$T/far.plain" "$(uri far)"
nbdcopy "$(uri far)" "$T/far.back"
cmp -s -n $((1 << 20)) "$T/far.back" "$T/far.plain" || fail "the far container reads back wrong"
peak_kib=$(awk '/^VmHWM:/ {print $2}' "/proc/$VG_PID/status")
stop_volgate
# A sanitizer's shadow memory and quarantine add hundreds of MiB of their own (270 MiB seen under
# ASan): the bound holds for the real binary only; the time bound holds everywhere.
if [[ ! $(ldd "$VOLGATE") =~ lib[at]san ]]; then
    ((peak_kib < 128 * 1024)) || fail "opening a header with a 1 GiB data offset peaked at $peak_kib KiB of RSS"
fi
((open_ms < 5000)) || fail "opening a header with a 1 GiB data offset took $open_ms ms"
$PAYLOAD decrypt "$T/far.img" "$T/k1" "$T/far.indep"
cmp -s -n $((1 << 20)) "$T/far.plain" "$T/far.indep" || fail "the far container's data does not decrypt independently"
pass "1 GiB data offset: served after $open_ms ms with a $peak_kib KiB peak RSS; cryptsetup's decryption agrees"

# ------------------------------------------------------------------ fio through encrypted exports
start_volgate --unix "$S" --export "e4k=file:$T/l2-4k.img,luks-key-file=$T/k1" \
    --export "e512=file:$T/l2-512.img,luks-key-file=$T/k1"
for e in e4k e512; do
    (cd "$T" && fio --name=v --ioengine=nbd --uri="$(uri "$e")" --rw=randwrite --bs=4k --iodepth=32 \
        --size=16M --verify=crc32c --do_verify=1 --verify_fatal=1 --output="$T/fio.$e" >/dev/null 2>&1) ||
        fail "$e: fio verify failed: $(tail -5 "$T/fio.$e")"
    (cd "$T" && fio --name=v --ioengine=nbd --uri="$(uri "$e")" --rw=write --bs=1M --iodepth=16 \
        --size=16M --verify=crc32c --do_verify=1 --verify_fatal=1 --output="$T/fio2.$e" >/dev/null 2>&1) ||
        fail "$e: fio 1M verify failed: $(tail -5 "$T/fio2.$e")"
    # Large requests that are not whole 64 KiB pieces of the helper's page-cache copy.
    (cd "$T" && fio --name=v --ioengine=nbd --uri="$(uri "$e")" --rw=randwrite --bssplit=132k/50:1028k/50 \
        --blockalign=4k --iodepth=8 --size=16M --verify=crc32c --do_verify=1 --verify_fatal=1 \
        --output="$T/fio3.$e" >/dev/null 2>&1) ||
        fail "$e: fio 132k/1028k verify failed: $(tail -5 "$T/fio3.$e")"
done
stop_volgate
pass "fio crc32c verification at depth 32 through 4096- and 512-byte-sector exports, 4 KiB to 1028 KiB"
