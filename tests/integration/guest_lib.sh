# shellcheck shell=bash disable=SC2034  # variables here are used by the scripts that source this file
# A real libvirtd and a tiny TCG guest for the integration tests. Source it after lib.sh:
#   . "$(dirname "$0")/lib.sh"
#   . "$(dirname "$0")/guest_lib.sh"
#
# Everything scripts/guest-lib.sh offers (libvirt_start, guest_image, guest_boot, guest_run...),
# and:
#   guest_define NAME DIR [--shut-off]  a persistent domain booting DIR's image, started and
#                                 waited for (--shut-off: only defined; guest_boot starts it)
#   guest_destroy NAME            stops and undefines it (the exit cleanup does it too)
#   nbd_disk_xml CONNECTION_INFO UNIT   libvirt <disk> XML for an attachment's connection info
#   qemu_user_check SOCKET EXPORT fails, saying why, when QEMU's user cannot reach an export
#
# The exit cleanup destroys the guests defined here, then stops the daemons libvirt_start
# started (and nothing else).

. "$REPO_ROOT/scripts/guest-lib.sh"

GUESTS=()                  # domains guest_define made: destroyed and undefined at exit

# guest_define NAME DIR [--shut-off]: defines a persistent domain NAME (persistent, so that disks
# can also be attached while it is shut off) booting DIR's image, then starts it and waits until
# its shell answers (unless --shut-off).
guest_define() {
    local name=$1 dir=$2 mode=${3:-}
    # QEMU (user libvirt-qemu) must reach DIR: make every directory above it in the test's tree
    # traversable (the test's own mktemp directory is 0700).
    local d=$dir
    while [[ $d == "$TEST_TMP"* ]]; do chmod o+x "$d"; [[ $d == "$TEST_TMP" ]] && break; d=$(dirname "$d"); done
    # A domain of this name left by a test that was killed: it is ours to remove.
    if "${VIRSH[@]}" dominfo "$name" >/dev/null 2>&1; then
        "${VIRSH[@]}" destroy "$name" >/dev/null 2>&1
        "${VIRSH[@]}" undefine "$name" >/dev/null 2>&1
    fi
    rm -f "$dir/console.log" "$dir/shell.sock"
    guest_domain_xml "$name" "$dir" >"$dir/$name.xml"
    "${VIRSH[@]}" define "$dir/$name.xml" >/dev/null || fail "virsh define $name failed"
    GUESTS+=("$name")
    GUEST_DIR[$name]=$dir
    [[ $mode == --shut-off ]] && return 0
    guest_boot "$name" "$dir"
}

# guest_destroy NAME: powers the guest off and removes its definition.
guest_destroy() {
    local name=$1 g keep=()
    "${VIRSH[@]}" destroy "$name" >/dev/null 2>&1
    "${VIRSH[@]}" undefine "$name" >/dev/null 2>&1
    for g in "${GUESTS[@]}"; do [[ $g == "$name" ]] || keep+=("$g"); done
    GUESTS=("${keep[@]}")
}

# guest_has_disk NAME TEXT: true while the domain's live XML mentions TEXT (e.g. an export).
# A virsh that fails fails the test: a domain we cannot read is not one without the disk.
guest_has_disk() {
    local xml
    xml=$("${VIRSH[@]}" dumpxml "$1") || fail "virsh dumpxml $1 failed"
    grep -qF -- "$2" <<<"$xml"
}

# ------------------------------------------------------------------------------------ disks

# nbd_disk_xml CONNECTION_INFO UNIT: the <disk> that puts an attachment's volume into a guest,
# as the product's libvirt driver will: an NBD network disk on the gateway's unix socket, on
# SCSI unit UNIT of controller 0 (without an address, a target such as sdz makes libvirt
# hot-plug more SCSI controllers), with the volume's id as <serial> (how the guest finds it).
nbd_disk_xml() {
    "$SYSPY" - "$1" "$2" <<'PY'
import json, sys
from xml.sax.saxutils import quoteattr, escape
info, unit = json.loads(sys.argv[1]), int(sys.argv[2])
assert info["driver_volume_type"] == "nbd", info["driver_volume_type"]
d = info["data"]
target = "sd" + "abcdefghijklmnopqrstuvwxyz"[unit]
ro = "\n  <readonly/>" if d.get("access_mode") == "ro" else ""
print(f"""<disk type='network' device='disk'>
  <driver name='qemu' type='raw' cache='none' discard='unmap'/>
  <source protocol='nbd' name={quoteattr(d["export"])}>
    <host transport='unix' socket={quoteattr(d["socket"])}/>
  </source>
  <target dev='{target}' bus='scsi'/>
  <serial>{escape(d["volume_id"])}</serial>{ro}
  <address type='drive' controller='0' bus='0' target='0' unit='{unit}'/>
</disk>""")
PY
}

# qemu_user_check SOCKET EXPORT: QEMU opens the gateway's socket as $QEMU_USER, not as root;
# connect as that user (with its groups) first, so that a permission problem is reported as
# such rather than as an attach that fails somewhere inside libvirt.
qemu_user_check() {
    local socket=$1 export=$2 out d=$1
    if out=$(setpriv --reuid="$QEMU_USER" --regid="$(id -g "$QEMU_USER")" --init-groups \
             nbdinfo --size "$(unix_uri "$export" "$socket")" 2>&1); then
        return 0
    fi
    local perms=""
    while [[ $d != / ]]; do perms+=" $(stat -c '%A %U:%G %n' "$d")"; d=$(dirname "$d"); done
    fail "user $QEMU_USER (groups: $(id -Gn "$QEMU_USER")) cannot reach export $export on $socket: $out; path:$perms"
}

# ------------------------------------------------------------------------------------ cleanup

# Runs before lib.sh's cleanup: guests go first (while the gateway they read still runs), then
# the daemons this test started. The test's exit status is kept for lib.sh's _cleanup.
_guest_cleanup() {
    local rc=$? g
    set +e
    if ((rc != 0)); then
        for g in "${GUESTS[@]}"; do
            echo "---- last lines of guest $g's console ----" >&2
            tail -n 20 "${GUEST_DIR[$g]:-/nonexistent}/console.log" >&2 2>/dev/null
        done
    fi
    for g in "${GUESTS[@]}"; do guest_destroy "$g"; done
    libvirt_stop
    (exit "$rc")
    _cleanup
}
trap _guest_cleanup EXIT
