#!/usr/bin/env bash
# The main job on its embedded defaults: installs what is needed, builds, starts the controller
# (SQLite and one file pool in the state directory) with the gateway it drives, creates an
# encrypted volume through the controller's API (on the first run), attaches it for this host
# the way Cinder's attachment API does, and keeps it served, decrypted in process, until Ctrl-C.
#   scripts/demo.sh [STATE_DIR]     (default: ./demo-state)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/build.sh release

state=$(realpath -m "${1:-demo-state}")
mkdir -p "$state"
volgate=$PWD/build/volgate
py=/usr/bin/python3

# The controller and its gateway: database, file pool, API socket, token, master key and the
# gateway's sockets all under one directory.
"$volgate" controller --state-dir "$state/controller" --gateway 2>>"$state/controller.log" &
controller=$!
attachment=
stop() {
  [ -n "$attachment" ] && "$volgate" attachment delete "$attachment" >/dev/null 2>&1
  kill -TERM "$controller" 2>/dev/null
  wait "$controller" 2>/dev/null
}
trap stop EXIT
export VOLGATE_URL="unix:$state/controller/controller.sock"
for _ in $(seq 100); do
  [ -S "$state/controller/controller.sock" ] && [ -S "$state/controller/run/nbd.sock" ] && break
  kill -0 "$controller" 2>/dev/null || { echo "demo: the controller did not start; see $state/controller.log" >&2; exit 1; }
  sleep 0.1
done

# The encrypted volume, created on the first run and found by name afterwards.
volume_id() {
  "$volgate" volume list --output json | "$py" -c '
import json, sys
for v in json.load(sys.stdin)["volumes"]:
    if v["name"] == "secure" and v["status"] in ("available", "in-use", "reserved", "attaching"):
        print(v["id"])
        break'
}
vol=$(volume_id)
if [ -z "$vol" ]; then
  "$volgate" volume create --size 1 --encrypted secure >/dev/null
  vol=$(volume_id)
fi
[ -n "$vol" ] || { echo "demo: the controller did not create the volume 'secure'" >&2; exit 1; }
# An attachment left by an earlier run that was killed goes first.
for old in $("$volgate" attachment list --volume "$vol" --output json |
             "$py" -c 'import json, sys; print(" ".join(a["id"] for a in json.load(sys.stdin)["attachments"]))'); do
  "$volgate" attachment delete "$old" >/dev/null
done

# Attach it for this host: the gateway serves it, decrypted, and the connection info says where.
"$volgate" attachment create --instance demo --host "$(hostname)" --output json "$vol" >"$state/attachment.json"
attachment=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["attachment"]["id"])' "$state/attachment.json")
"$volgate" attachment complete "$attachment" >/dev/null
uri=$("$py" -c '
import json, sys
d = json.load(open(sys.argv[1]))["attachment"]["connection_info"]["data"]
print("nbd+unix:///%s?socket=%s" % (d["export"], d["socket"]))' "$state/attachment.json")

cat <<MSG

The controller (API: $VOLGATE_URL, log: $state/controller.log) and its gateway
(log: $state/controller/gateway.log) are running; press Ctrl-C to stop them.
The encrypted volume 'secure' ($vol, LUKS2 in $state/controller/pool/volume-$vol.img) is
attached for this host (attachment $attachment) and served decrypted at:
  $uri
Try, from another terminal:
  nbdinfo '$uri'
  qemu-io -f raw -c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M' '$uri'
  cryptsetup luksDump $state/controller/pool/volume-$vol.img
  VOLGATE_URL=$VOLGATE_URL $volgate volume show $vol
  VOLGATE_URL=$VOLGATE_URL $volgate attachment show $attachment

MSG
trap 'exit 0' INT TERM
wait "$controller"
