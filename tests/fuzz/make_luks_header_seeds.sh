#!/usr/bin/env bash
# Makes the stored LUKS images under luks_header_fuzz (tests/fuzz/luks_header_fuzz_images) and its
# first seeds (tests/fuzz/corpus/luks_header_fuzz/seed-*), with cryptsetup, all with the
# passphrase "fuzz" and cheap key derivation. Run once; the images must then stay as they are,
# because the stored corpus holds headers that match their key material.
#   tests/fuzz/make_luks_header_seeds.sh
set -euo pipefail
cd "$(dirname "$0")"
images=luks_header_fuzz_images
corpus=corpus/luks_header_fuzz
mkdir -p "$images" "$corpus"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf fuzz >"$work/pass"
common=(-q --cipher aes-xts-plain64 --key-size 256 --key-file "$work/pass")
small_luks2=(--type luks2 --luks2-metadata-size 16k)

# image NAME BYTES CRYPTSETUP_ARGS...: formats an 8 MiB file and keeps its first BYTES (the header
# copies and keyslot areas: the rest is zeroes or data)
image() {
    local name=$1 bytes=$2
    shift 2
    truncate -s 8M "$work/$name"
    cryptsetup luksFormat "${common[@]}" "$@" "$work/$name"
    head -c "$bytes" "$work/$name" >"$images/$name.img"
}
image luks2-pbkdf2 $((288 << 10)) "${small_luks2[@]}" --luks2-keyslots-size 256k --sector-size 512 \
    --pbkdf pbkdf2 --pbkdf-force-iterations 1000
image luks2-argon2 $((160 << 10)) "${small_luks2[@]}" --luks2-keyslots-size 128k --sector-size 4096 \
    --pbkdf argon2id --pbkdf-force-iterations 4 --pbkdf-memory 64 --pbkdf-parallel 1
image luks1 $((264 * 512)) --type luks1 --pbkdf pbkdf2 --pbkdf-force-iterations 1000

# seed NAME CONTROL FILE BYTES: the control byte (see luks_header_fuzz.cpp), then the first BYTES
# of FILE: for LUKS2 the binary header and the JSON text of the primary copy, the rest coming
# from the stored image below it
seed() {
    { printf "\\x$1"; head -c "$4" "$3"; } >"$corpus/seed-$2"
}
json_end() {  # where the primary JSON text of a LUKS2 image ends (its NUL included)
    "${PYTHON:-python3}" -c 'import sys; d = open(sys.argv[1], "rb").read(); print(d.index(b"\0", 4096) + 1)' "$1"
}
seed 10 luks2-pbkdf2 "$images/luks2-pbkdf2.img" "$(json_end "$images/luks2-pbkdf2.img")"
seed 14 luks2-pbkdf2-mirrored "$images/luks2-pbkdf2.img" "$(json_end "$images/luks2-pbkdf2.img")"
seed 01 luks2-argon2 "$images/luks2-argon2.img" "$(json_end "$images/luks2-argon2.img")"
seed 12 luks1 "$images/luks1.img" 592
# A token in the JSON; and a primary header whose label changed after its checksum was
# computed (checksums kept as they are), so libcryptsetup falls back to the secondary copy.
cp "$work/luks2-pbkdf2" "$work/token"
echo '{"type":"volgate-fuzz","keyslots":["0"],"note":[1,{"a":"b"}]}' >"$work/token.json"
cryptsetup token import --json-file "$work/token.json" "$work/token"
seed 00 luks2-token "$work/token" "$(json_end "$work/token")"
seed 08 luks2-stale-checksum "$images/luks2-pbkdf2.img" "$(json_end "$images/luks2-pbkdf2.img")"
printf stale | dd of="$corpus/seed-luks2-stale-checksum" bs=1 seek=$((1 + 24)) conv=notrunc status=none
echo "made $(ls "$images" | wc -l) images and $(ls "$corpus"/seed-* | wc -l) seeds"
