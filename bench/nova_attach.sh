#!/usr/bin/env bash
# Sets up what bench/nova_attach_latency.py measures against, runs it, and takes it all down:
#   bench/nova_attach.sh [--volgate build/volgate] [--anchor build/bench/libvirt_attach_anchor] [--cycles 20]
# libvirtd (started if not running), `volgate controller --gateway` on a scratch state
# directory, and one TCG guest with a virtio-scsi controller: the integration tests' own
# helpers (tests/integration/lib.sh and guest_lib.sh) do each, so the guest is the tests' guest.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
VOLGATE=$here/../build/volgate
anchor=$here/../build/bench/libvirt_attach_anchor
cycles=20
while (($#)); do
    case $1 in
        --volgate) VOLGATE=$(realpath "$2"); shift 2 ;;
        --anchor) anchor=$(realpath "$2"); shift 2 ;;
        --cycles) cycles=$2; shift 2 ;;
        *) echo "usage: bench/nova_attach.sh [--volgate PATH] [--anchor PATH] [--cycles N]" >&2; exit 2 ;;
    esac
done
export VOLGATE
. "$here/../tests/integration/lib.sh"
. "$here/../tests/integration/guest_lib.sh"
require_volgate
[[ -x $anchor ]] || fail "$anchor not built (cmake --build build --target libvirt_attach_anchor)"

STATE=$TEST_TMP/state
GUEST=volgate-bench-nova-$$
cat >"$TEST_TMP/controller.json" <<JSON
{"state_dir": "$STATE", "quotas": {"volumes": -1, "gigabytes": -1, "snapshots": -1}}
JSON
libvirt_start
guest_image "$TEST_TMP/guest"
start_controller "$TEST_TMP/controller.json" "$STATE/controller.sock" '' --gateway
for ((i = 0; i < 200; i++)); do [[ -S $STATE/run/nbd.sock ]] && break; sleep 0.05; done
guest_define "$GUEST" "$TEST_TMP/guest"
info "guest $GUEST booted in $GUEST_BOOT_MS ms; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
PYTHONPATH=$here "$SYSPY" "$here/nova_attach_latency.py" --state "$STATE" --server "$GUEST" --anchor "$anchor" \
    --cycles "$cycles"
