#!/usr/bin/env bash
# The main job on its embedded defaults: installs what is needed, builds, starts the controller
# (SQLite and one file pool in the state directory) and the gateway, and serves until Ctrl-C:
#   - secure   an encrypted (LUKS2) file volume, decrypted in process by the gateway;
#   - disk     a 1 GiB volume created through the controller's API in its file pool;
#   - scratch  a memory volume.
#   scripts/demo.sh [STATE_DIR]     (default: ./demo-state)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/build.sh release

state=$(realpath -m "${1:-demo-state}")
mkdir -p "$state"
socket="$state/volgate.sock"
volgate=$PWD/build/volgate

# The controller: database, file pool, API socket, token and master key all under one directory.
"$volgate" controller --state-dir "$state/controller" 2>>"$state/controller.log" &
controller=$!
trap 'kill -TERM "$controller" 2>/dev/null; wait "$controller" 2>/dev/null' EXIT
export VOLGATE_URL="unix:$state/controller/controller.sock"
for _ in $(seq 100); do
  [ -S "$state/controller/controller.sock" ] && break
  kill -0 "$controller" 2>/dev/null || { echo "demo: the controller did not start; see $state/controller.log" >&2; exit 1; }
  sleep 0.1
done

# One volume from the controller's pool, created on the first run and found by name afterwards.
export_target() {
  "$volgate" volume list --output json | /usr/bin/python3 -c '
import json, sys
for v in json.load(sys.stdin)["volumes"]:
    if v["name"] == "disk" and v["status"] == "available":
        print(v["volgate:export_target"])
        break'
}
disk=$(export_target)
if [ -z "$disk" ]; then
  "$volgate" volume create --size 1 disk >/dev/null
  disk=$(export_target)
fi
[ -n "$disk" ] || { echo "demo: the controller did not create the volume 'disk'" >&2; exit 1; }

# The encrypted volume is formatted once, with a random passphrase kept in a 0600 key file.
if [ ! -f "$state/secure.img" ]; then
  (umask 077 && head -c 32 /dev/urandom | base64 -w0 >"$state/secure.key")
  "$volgate" luks format --key-file "$state/secure.key" "file:$state/secure.img,size=1G"
fi

rm -f "$socket"  # a stale socket from an earlier run would look ready
"$volgate" serve --unix "$socket" --listen 127.0.0.1:10809 \
  --export "secure=file:$state/secure.img,luks-key-file=$state/secure.key" \
  --export "disk=$disk" \
  --export "scratch=memory:1G" &
gateway=$!
trap 'kill -TERM "$gateway" "$controller" 2>/dev/null; wait "$gateway" "$controller" 2>/dev/null' EXIT
# Unlocking the LUKS2 volume runs its key derivation (argon2id): wait until the socket is up.
for _ in $(seq 300); do
  [ -S "$socket" ] && break
  kill -0 "$gateway" 2>/dev/null || { echo "demo: the gateway did not start" >&2; exit 1; }
  sleep 0.1
done

cat <<MSG

The controller (API: $VOLGATE_URL, log: $state/controller.log) and the gateway are running;
press Ctrl-C to stop both. The gateway serves three volumes:
  secure   a LUKS2 volume in the 1 GiB file $state/secure.img (passphrase in $state/secure.key),
           served decrypted; cryptsetup luksDump $state/secure.img shows its header
  disk     the controller's volume 'disk' ($disk)
  scratch  a 1 GiB RAM disk
Try, from another terminal:
  nbdinfo --list 'nbd+unix:///?socket=$socket'
  qemu-img convert -O raw some-image.qcow2 'nbd+unix:///secure?socket=$socket'
  qemu-io -f raw -c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M' 'nbd+unix:///scratch?socket=$socket'
  VOLGATE_URL=$VOLGATE_URL $volgate volume list
  VOLGATE_URL=$VOLGATE_URL $volgate volume create --size 2 --encrypted vol2

MSG
trap 'exit 0' INT TERM
wait "$gateway"
