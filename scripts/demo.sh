#!/usr/bin/env bash
# The main job on its embedded defaults, the whole story: installs what is needed, builds,
# starts libvirtd if it is not running, the controller (SQLite and one file pool in the state
# directory) with the gateway it drives, boots a tiny guest (TCG: a Debian cloud kernel and a
# busybox initramfs, built once and cached), creates an encrypted volume, attaches it through
# Nova's API, shows the guest writing to it and reading it back, detaches it, and keeps the
# controller, gateway and guest running for the user's own tries until Ctrl-C; then stops all
# it started (the guest destroyed and undefined, libvirtd only if it started it).
#   scripts/demo.sh [STATE_DIR]     (default: ./demo-state)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/build.sh release
. scripts/guest-lib.sh

state=$(realpath -m "${1:-demo-state}")
mkdir -p "$state"
volgate=$PWD/build/volgate
py=/usr/bin/python3
guest="volgate-demo"
ctl=$state/controller
export VOLGATE_URL="unix:$ctl/controller.sock"
t_start=$(now_ms)
step() { printf '\n\033[1m== %s\033[0m (at %d s)\n' "$*" $((($(now_ms) - t_start) / 1000)); }
# virsh on a terminal tries to start a polkit agent, and says it cannot (root needs none).
virsh_() { "${VIRSH[@]}" "$@" 2> >(grep -v '^Authorization not available' >&2); }
# Nova's API with the controller's token, which goes to curl on stdin, never on a command line.
nova() {  # METHOD PATH [BODY]: prints the body; fails on an HTTP error
  local args=(-sS --fail-with-body --unix-socket "$ctl/controller.sock" -X "$1" -H @-)
  [[ $# -ge 3 ]] && args+=(-H 'Content-Type: application/json' --data "$3")
  printf 'X-Auth-Token: %s\n' "$(<"$ctl/token")" | curl "${args[@]}" "http://localhost/v2.1$2"
}
# The guest's shell: each line of output shown as the guest's.
in_guest() { guest_run "$guest" "$1" "${2:-30}" | sed 's/^/  guest| /'; }

controller=
stop() {
  local rc=$? m
  set +e
  trap '' INT TERM
  step "Stopping"
  if [[ -n $controller ]] && virsh_ dominfo "$guest" >/dev/null 2>&1; then
    # Volumes the user attached go back first, so that the gateway has nothing left to serve.
    for m in $(nova GET "/servers/$guest/os-volume_attachments" 2>/dev/null |
               "$py" -c 'import json, sys; print(" ".join(a["volumeId"] for a in json.load(sys.stdin)["volumeAttachments"]))' 2>/dev/null); do
      nova DELETE "/servers/$guest/os-volume_attachments/$m" >/dev/null && echo "volume $m detached"
    done
  fi
  if virsh_ dominfo "$guest" >/dev/null 2>&1; then
    virsh_ destroy "$guest" >/dev/null 2>&1
    virsh_ undefine "$guest" >/dev/null && echo "guest $guest destroyed and undefined"
  fi
  if [[ -n $controller ]]; then
    kill -TERM "$controller" 2>/dev/null
    wait "$controller" 2>/dev/null
    echo "controller stopped"
  fi
  if ((${#LIBVIRT_STARTED[@]})); then
    libvirt_stop
    echo "stopped ${LIBVIRT_STARTED[*]} (started by this demo)"
  fi
  exit "$rc"
}
trap stop EXIT
trap 'exit 0' INT TERM

step "libvirtd"
libvirt_start
if ((${#LIBVIRT_STARTED[@]})); then echo "started ${LIBVIRT_STARTED[*]} ($LIBVIRT_START_MS ms)"; else echo "already running"; fi

step "The demo guest's image"
t0=$(now_ms)
guest_image "$state/guest"
echo "kernel $GUEST_KERNEL + busybox initramfs in $state/guest ($(($(now_ms) - t0)) ms)"
# QEMU runs as $QEMU_USER: it must reach the image and, later, the gateway's socket.
if ! setpriv --reuid="$QEMU_USER" --regid="$(id -g "$QEMU_USER")" --init-groups test -r "$state/guest/vmlinuz"; then
  d=$state/guest
  while [[ $d != / ]]; do ls -ld "$d" >&2; d=$(dirname "$d"); done
  fail "QEMU (user $QEMU_USER) cannot read $state/guest/vmlinuz: give every directory above it o+x, or run the demo with a state directory it can reach (scripts/demo.sh /var/tmp/volgate-demo)"
fi

step "The controller and its gateway"
"$volgate" controller --state-dir "$ctl" --gateway 2>>"$state/controller.log" &
controller=$!
for _ in $(seq 100); do
  [[ -S $ctl/controller.sock && -S $ctl/run/nbd.sock ]] && break
  kill -0 "$controller" 2>/dev/null || fail "the controller did not start; see $state/controller.log"
  sleep 0.1
done
[[ -S $ctl/controller.sock ]] || fail "the controller did not answer within 10 s; see $state/controller.log"
echo "API $VOLGATE_URL, log $state/controller.log"

step "The guest"
# A guest left by a run that was killed goes first; the controller gives its volumes back.
if virsh_ dominfo "$guest" >/dev/null 2>&1; then
  virsh_ destroy "$guest" >/dev/null 2>&1 || true
  virsh_ undefine "$guest" >/dev/null
fi
guest_domain_xml "$guest" "$state/guest" >"$state/guest/$guest.xml"
virsh_ define "$state/guest/$guest.xml" >/dev/null
rm -f "$state/guest/console.log"
t0=$(now_ms)
"$volgate" server start "$guest"
guest_wait_ready "$guest" "$state/guest"
echo "booted under TCG in $(($(now_ms) - t0)) ms; its console: $state/guest/console.log"

step "An encrypted volume"
volume_id() {
  "$volgate" volume list --output json | "$py" -c '
import json, sys
for v in json.load(sys.stdin)["volumes"]:
    if v["name"] == "secure":
        print(v["id"], v["status"])
        break'
}
read -r vol status < <(volume_id) || true
if [[ -z ${vol:-} ]]; then
  "$volgate" volume create --size 1 --encrypted secure >/dev/null
  read -r vol status < <(volume_id)
fi
# After a killed run the volume may still be with the old guest, which the controller is
# releasing (its domain was undefined above): wait for it, bounded.
for _ in $(seq 150); do
  [[ $status == available ]] && break
  sleep 0.1
  read -r vol status < <(volume_id)
done
[[ $status == available ]] || fail "volume 'secure' ($vol) is $status, not available; see $state/controller.log"
echo "volume 'secure' $vol: LUKS2 in $ctl/pool/volume-$vol.img"

step "Attach it to the guest (Nova's os-volume_attachments)"
t0=$(now_ms)
nova POST "/servers/$guest/os-volume_attachments" '{"volumeAttachment": {"volumeId": "'"$vol"'"}}' |
  "$py" -c 'import json, sys; a = json.load(sys.stdin)["volumeAttachment"]; print("attached as %s (%s)" % (a["device"], a["volumeId"]))'
echo "in $(($(now_ms) - t0)) ms: libvirt hot-plugged an NBD disk served by the gateway, decrypted in process"

step "The guest writes to the disk and reads it back"
message="written by the guest at $(date -u +%H:%M:%S)"
in_guest "for i in 1 2 3 4 5 6 7 8 9 10; do ls /dev/disk/by-id/*$vol* >/dev/null 2>&1 && break; sleep 0.5; done
dev=/dev/disk/by-id/\$(ls /dev/disk/by-id | grep $vol | head -1)
echo \"\$ ls -l \$dev\"; ls -l \$dev
echo '\$ echo \"$message\" | dd of=\$dev oflag=direct'
{ echo '$message'; dd if=/dev/zero bs=4096 count=1 2>/dev/null; } | head -c 4096 >/tmp/block
dd if=/tmp/block of=\$dev bs=4096 count=1 oflag=direct 2>&1 | tail -1
echo '\$ dd if=\$dev iflag=direct | head -1'
dd if=\$dev bs=4096 count=1 iflag=direct 2>/dev/null | head -1"
# The guest wrote at the start of the volume: in the file, after the LUKS2 header (16 MiB).
if head -c 64M "$ctl/pool/volume-$vol.img" | grep -qaF "$message"; then
  fail "the guest's text is in the pool file in clear"
fi
echo "(the pool file holds only ciphertext: the text is not in $ctl/pool/volume-$vol.img)"

step "Detach it"
t0=$(now_ms)
nova DELETE "/servers/$guest/os-volume_attachments/$vol" >/dev/null
echo "detached in $(($(now_ms) - t0)) ms; the volume is $("$volgate" volume show --output json "$vol" | "$py" -c 'import json, sys; print(json.load(sys.stdin)["volume"]["status"])') and the guest's disks are now:"
in_guest "ls /dev/disk/by-id/ | grep . || echo '(none)'"

step "Ready"
cat <<MSG
The controller (log: $state/controller.log), its gateway (log: $ctl/gateway.log) and the
guest '$guest' (console: $state/guest/console.log) keep running until Ctrl-C. From another
terminal:
  export VOLGATE_URL=$VOLGATE_URL
  $volgate server list
  $volgate server show $guest
  $volgate volume list
  $volgate volume show $vol
Attach the volume again (Nova's API; the token is in $ctl/token):
  printf 'X-Auth-Token: %s\\n' "\$(cat $ctl/token)" | curl -s -H @- -H 'Content-Type: application/json' \\
    --unix-socket $ctl/controller.sock http://localhost/v2.1/servers/$guest/os-volume_attachments \\
    --data '{"volumeAttachment": {"volumeId": "$vol"}}'
  virsh -c qemu:///system dumpxml $guest | grep -A3 "protocol='nbd'"
  $volgate server stop $guest; $volgate server start $guest    # the disk stays attached
Press Ctrl-C to stop everything.
MSG
wait "$controller"
