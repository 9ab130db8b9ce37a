#!/usr/bin/env bash
# The main job on its embedded defaults: installs what is needed, builds, and serves an
# encrypted (LUKS2) file volume, a plain file volume and a memory volume over NBD until Ctrl-C.
#   scripts/demo.sh [STATE_DIR]     (default: ./demo-state)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/build.sh release

state=$(realpath -m "${1:-demo-state}")
mkdir -p "$state"
socket="$state/volgate.sock"

# The encrypted volume is formatted once, with a random passphrase kept in a 0600 key file.
if [ ! -f "$state/secure.img" ]; then
  (umask 077 && head -c 32 /dev/urandom | base64 -w0 >"$state/secure.key")
  build/volgate luks format --key-file "$state/secure.key" "file:$state/secure.img,size=1G"
fi

cat <<MSG

volgate is serving three volumes; press Ctrl-C to stop it.
  secure   a LUKS2 volume in the 1 GiB file $state/secure.img (passphrase in $state/secure.key),
           served decrypted; cryptsetup luksDump $state/secure.img shows its header
  disk     a 1 GiB sparse file, $state/disk.img
  scratch  a 1 GiB RAM disk
Try, from another terminal:
  nbdinfo --list 'nbd+unix:///?socket=$socket'
  qemu-img convert -O raw some-image.qcow2 'nbd+unix:///secure?socket=$socket'
  qemu-io -f raw -c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M' 'nbd+unix:///scratch?socket=$socket'

MSG
exec build/volgate serve --unix "$socket" --listen 127.0.0.1:10809 \
  --export "secure=file:$state/secure.img,luks-key-file=$state/secure.key" \
  --export "disk=file:$state/disk.img,size=1G" \
  --export "scratch=memory:1G"
