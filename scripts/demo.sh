#!/usr/bin/env bash
# The main job on its embedded defaults: installs what is needed, builds, and serves a file
# volume and a memory volume over NBD until Ctrl-C.
#   scripts/demo.sh [STATE_DIR]     (default: ./demo-state)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/build.sh release

state=$(realpath -m "${1:-demo-state}")
mkdir -p "$state"
socket="$state/volgate.sock"

cat <<MSG

volgate is serving two volumes; press Ctrl-C to stop it.
  disk     a 1 GiB sparse file, $state/disk.img
  scratch  a 1 GiB RAM disk
Try, from another terminal:
  nbdinfo --list 'nbd+unix:///?socket=$socket'
  qemu-img convert -O raw some-image.qcow2 'nbd+unix:///disk?socket=$socket'
  qemu-io -f raw -c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M' 'nbd+unix:///scratch?socket=$socket'

MSG
exec build/volgate serve --unix "$socket" --listen 127.0.0.1:10809 \
  --export "disk=file:$state/disk.img,size=1G" \
  --export "scratch=memory:1G"
