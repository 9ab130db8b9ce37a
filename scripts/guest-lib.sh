# shellcheck shell=bash disable=SC2034  # variables here are used by the scripts that source this file
# A real libvirtd and a tiny TCG guest, for the main job (scripts/demo.sh) and the integration
# tests (tests/integration/guest_lib.sh builds on it). Source it; it needs bash 4.
#
#   libvirt_start                 libvirtd (and virtlogd) running, started here if need be
#   libvirt_stop                  stops what libvirt_start started, and nothing else
#   guest_image DIR               DIR/vmlinuz + DIR/initramfs.cpio.gz (built once, cached)
#   guest_domain_xml NAME DIR     the domain XML of a guest booting DIR's image
#   guest_boot NAME DIR           starts the defined domain NAME and waits for its shell
#   guest_run NAME CMD [TIMEOUT]  runs CMD in the guest, prints its output, returns its status
#
# It uses the caller's fail, require_tool and now_ms when it has them (the tests' lib.sh does).
#
# Environment:
#   VOLGATE_GUEST_CACHE  where kernel .debs and built images are kept
#                        (default ${XDG_CACHE_HOME:-$HOME/.cache}/volgate-guest)
#
# Why things are the way they are (see /work/shared/ENVIRONMENT.md for the measurements):
# - No KVM: the guest runs under TCG (<domain type='qemu'>), so it must be tiny. A Debian cloud
#   kernel plus a busybox initramfs boots in a few seconds; there is no root disk at all.
# - No systemd: virtlogd and libvirtd are started by hand, and stopped again only by whoever
#   started them.
# - QEMU runs as libvirt-qemu, not root: every file it opens (kernel, initramfs, the gateway's
#   NBD socket) must be reachable by that user. The cache lives in a private home directory, so
#   guest_image copies the images into a directory of the caller's, which must be traversable.

declare -F fail >/dev/null || fail() { echo "error: $*" >&2; exit 1; }
declare -F now_ms >/dev/null || now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
declare -F require_tool >/dev/null || require_tool() {
    local t
    for t in "$@"; do command -v "$t" >/dev/null 2>&1 || fail "required tool '$t' is not installed"; done
}

GUEST_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GUEST_CACHE=${VOLGATE_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/volgate-guest}
VIRSH=(virsh -q -c qemu:///system)
QEMU_USER=libvirt-qemu     # Debian's default in /etc/libvirt/qemu.conf
LIBVIRT_STARTED=()         # daemons started by libvirt_start: stopped by libvirt_stop
declare -A GUEST_DIR=()    # domain -> its directory (console log, shell socket)
# The guest kernel's command line; drop "quiet" to see its boot in DIR/console.log.
GUEST_CMDLINE=${GUEST_CMDLINE:-console=ttyS0 quiet panic=-1}
# Extra elements for the domain's <features> (e.g. '<acpi/>', without which a 'pc' machine has
# no PCI hot-plug: virtio-blk disks can then be neither attached nor detached live).
GUEST_FEATURES=${GUEST_FEATURES:-}
GUEST_BOOT_MS=             # how long the last guest_boot took from start to a working shell

# The drivers the guest needs; the cloud kernel builds them as modules. guest_image adds what
# they depend on and orders them (insmod, unlike modprobe, does not resolve dependencies, and
# the order differs between kernel builds: in 6.1.0-57 virtio needs virtio_ring first).
GUEST_MODULES=(virtio_pci virtio_blk sd_mod virtio_scsi)

# ------------------------------------------------------------------------------------ libvirtd

# libvirt_start: makes sure virtlogd and libvirtd run and answer on qemu:///system. Idempotent.
libvirt_start() {
    require_tool virsh libvirtd virtlogd qemu-system-x86_64
    # Without this libvirt sees a /dev/kvm it may not open and re-probes QEMU on every call
    # (tens of seconds each); KVM itself is not used (TCG), so only the permissions matter.
    if [[ -e /dev/kvm ]]; then
        chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
    fi
    # virtlogd first: libvirtd hands it QEMU's output and fails to start a domain without it.
    # One that is on its way out (just sent SIGTERM) still shows in pgrep without its socket:
    # wait for it to go rather than count on it.
    local j
    for ((j = 0; j < 50; j++)); do
        pgrep -x virtlogd >/dev/null && [[ ! -S /run/libvirt/virtlogd-sock ]] || break
        sleep 0.1
    done
    if ! pgrep -x virtlogd >/dev/null; then
        virtlogd -d || fail "virtlogd did not start"
        LIBVIRT_STARTED+=(virtlogd)
    fi
    if ! pgrep -x libvirtd >/dev/null; then
        libvirtd -d || fail "libvirtd did not start"
        LIBVIRT_STARTED+=(libvirtd)
    fi
    local t0 i
    t0=$(now_ms)
    # The first start after installing probes QEMU's capabilities (a few seconds under TCG).
    for ((i = 0; i < 600; i++)); do
        "${VIRSH[@]}" version >/dev/null 2>&1 && { LIBVIRT_START_MS=$(($(now_ms) - t0)); return 0; }
        sleep 0.1
    done
    fail "libvirtd does not answer on qemu:///system after 60 s: $("${VIRSH[@]}" version 2>&1 | tail -n 2)"
}

# libvirt_stop: stops what libvirt_start started (by the pid in its pid file), and nothing else.
libvirt_stop() {
    local d pid i
    for d in libvirtd virtlogd; do  # libvirtd first: it holds connections to virtlogd
        [[ " ${LIBVIRT_STARTED[*]} " == *" $d "* ]] || continue
        pid=$(cat "/run/$d.pid" 2>/dev/null) || continue
        [[ $pid =~ ^[0-9]+$ ]] || continue
        kill -TERM "$pid" 2>/dev/null
        for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
    done
}

# ------------------------------------------------------------------------------------ the image

# The guest's PID 1. Its output goes to the kernel console (ttyS0, a file on the host).
_guest_init() {
    cat <<EOF
#!/bin/busybox sh
# PID 1 of volgate's test guest (tests/integration/guest_lib.sh). No udev, no systemd.
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in \$(cat /lib/modules/order); do
    insmod /lib/modules/\$m.ko || echo "volgate-guest: insmod \$m failed"
done
# The command port: raw (no echo, no CR/LF translation, no signals) so bytes pass unchanged;
# clocal so that the host connecting and going away is no hang-up.
stty -F /dev/ttyS1 115200 raw -echo clocal
echo "volgate-guest: ready"
# PID 1 must never exit (the kernel panics): run the shell again should it ever end.
while :; do /bin/guest-shell </dev/ttyS1 >/dev/ttyS1 2>&1; sleep 0.1; done
EOF
}

# The command loop on ttyS1 (the protocol is described in guest_shell.py, the host's side).
_guest_shell() {
    cat <<'EOF'
#!/bin/sh
while read -r id cmd; do
    disk-links
    echo "@@$id begin@@"
    if echo "$cmd" | base64 -d >/tmp/cmd 2>/dev/null; then
        sh /tmp/cmd </dev/null 2>&1
        rc=$?
    else
        echo "volgate-guest: the command line was not base64"
        rc=126
    fi
    printf '\n@@%s end %s@@\n' "$id" "$rc"
done
EOF
}

# /dev/disk/by-id without udev, rebuilt from sysfs before every command (so a hot-plugged or
# unplugged disk shows up at the next command). Names follow udev's so that a test can match
# the <serial> libvirt gave a disk, which is how Nova finds a volume (names like sdb are not
# stable):
#   virtio-blk: virtio-SERIAL from /sys/block/vdX/serial (the driver exposes it; 20 bytes max);
#   SCSI:       scsi-0VENDOR_MODEL_SERIAL from the Unit Serial Number VPD page (0x80), which
#               the kernel caches in /sys/block/sdX/device/vpd_pg80 (4-byte header, then the
#               serial); QEMU's scsi-hd puts libvirt's <serial> there (36 bytes max, so a
#               volume's UUID fits whole). Not /sys/block/sdX/device/wwid: with QEMU's scsi-hd
#               reading it fails with EINVAL here (6.1 kernel, QEMU 7.2).
_guest_disk_links() {
    cat <<'EOF'
#!/bin/sh
rm -rf /dev/disk/by-id
mkdir -p /dev/disk/by-id
trim() { sed 's/ *$//; s/ /_/g'; }
for b in /sys/block/*; do
    dev=${b##*/}
    link=
    if [ -r "$b/serial" ]; then
        s=$(cat "$b/serial")
        [ -n "$s" ] && link=virtio-$s
    elif [ -r "$b/device/vpd_pg80" ]; then
        s=$(tail -c +5 "$b/device/vpd_pg80" | tr -d '\000' | trim)
        [ -n "$s" ] && link=scsi-0$(trim <"$b/device/vendor")_$(trim <"$b/device/model")_$s
    fi
    if [ -n "$link" ]; then ln -s "../../$dev" "/dev/disk/by-id/$link"; fi
done
exit 0
EOF
}

# _guest_module_order DIR MODULE...: prints MODULE... and what they depend on, each after its
# dependencies, reading the depends= field that every .ko under DIR carries in its .modinfo.
_guest_module_order() {
    local dir=$1 m
    shift
    local -A seen=()
    local order=()
    _visit() {
        local ko deps dep
        [[ -n ${seen[$1]:-} ]] && return 0
        seen[$1]=1
        ko=$(find "$dir" -name "$1.ko" | head -n 1)
        [[ -n $ko ]] || fail "kernel module $1.ko is not in the kernel package"
        deps=$(tr '\0' '\n' <"$ko" | sed -n 's/^depends=//p' | head -n 1)
        for dep in ${deps//,/ }; do _visit "$dep"; done
        order+=("$1")
    }
    for m in "$@"; do _visit "$m"; done
    echo "${order[*]}"
}

# _guest_kernel_deb: prints the newest cloud kernel .deb in the cache, downloading the one
# Debian's linux-image-cloud-amd64 points at when there is none (install-deps.sh does this too).
_guest_kernel_deb() {
    local deb pkg
    deb=$(ls -t "$GUEST_CACHE"/linux-image-*-cloud-amd64_*.deb 2>/dev/null | head -n 1)
    if [[ -z $deb ]]; then
        pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
              sed -n 's/^ *Depends: \(linux-image-[^ ]*-cloud-amd64\)$/\1/p' | head -n 1)
        [[ -n $pkg ]] || fail "no cloud kernel in $GUEST_CACHE and none known to apt (run scripts/install-deps.sh)"
        mkdir -p "$GUEST_CACHE"
        (cd "$GUEST_CACHE" && apt-get -o APT::Sandbox::User="$(id -un)" download -qq "$pkg") >&2 ||
            fail "could not download $pkg into $GUEST_CACHE"
        deb=$(ls -t "$GUEST_CACHE"/linux-image-*-cloud-amd64_*.deb | head -n 1)
    fi
    echo "$deb"
}

# guest_image DIR: puts vmlinuz and initramfs.cpio.gz into DIR. Built once per kernel and per
# version of the guest's scripts (their hash is part of the cache key), then copied from the cache.
guest_image() {
    local dir=$1 deb kver key cache stage m order
    require_tool dpkg cpio gzip
    # The initramfs has no libc: its busybox must be the static one.
    dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' ||
        fail "busybox-static is not installed (scripts/install-deps.sh)"
    deb=$(_guest_kernel_deb)
    kver=$(basename "$deb")
    kver=${kver#linux-image-}
    kver=${kver%%_*}
    key=$( { _guest_init; _guest_shell; _guest_disk_links; echo "${GUEST_MODULES[*]}"; } | sha256sum | cut -c1-12)
    cache=$GUEST_CACHE/$kver-$key
    if [[ ! -f $cache/initramfs.cpio.gz ]]; then
        stage=$(mktemp -d "$GUEST_CACHE/build.XXXXXX")
        dpkg -x "$deb" "$stage/deb" || fail "dpkg -x $deb failed"
        mkdir -p "$stage/root/bin" "$stage/root/lib/modules" "$stage/out"
        cp /bin/busybox "$stage/root/bin/busybox"
        order=$(_guest_module_order "$stage/deb/lib/modules/$kver" "${GUEST_MODULES[@]}")
        for m in $order; do
            cp "$(find "$stage/deb/lib/modules/$kver" -name "$m.ko" | head -n 1)" "$stage/root/lib/modules/"
        done
        echo "$order" >"$stage/root/lib/modules/order"
        _guest_init >"$stage/root/init"
        _guest_shell >"$stage/root/bin/guest-shell"
        _guest_disk_links >"$stage/root/bin/disk-links"
        chmod 0755 "$stage/root/init" "$stage/root/bin/guest-shell" "$stage/root/bin/disk-links"
        (cd "$stage/root" && find . | cpio -o -H newc --quiet | gzip -1) >"$stage/out/initramfs.cpio.gz" ||
            fail "could not pack the initramfs"
        cp "$stage/deb/boot/vmlinuz-$kver" "$stage/out/vmlinuz"
        # Another test may have built the same image meanwhile: the rename decides, both are equal.
        mv -T "$stage/out" "$cache" 2>/dev/null || true
        rm -rf "$stage"
        [[ -f $cache/initramfs.cpio.gz ]] || fail "guest image not in $cache"
    fi
    mkdir -p "$dir"
    cp "$cache/vmlinuz" "$cache/initramfs.cpio.gz" "$dir/"
    GUEST_KERNEL=$kver
}

# ------------------------------------------------------------------------------------ the guest

# guest_domain_xml NAME DIR: a domain booting DIR's image (TCG, 256 MiB, one vCPU), with a
# virtio-scsi controller for volumes, its kernel console in DIR/console.log and its command port
# (ttyS1) on the unix socket DIR/shell.sock.
guest_domain_xml() {
    local name=$1 dir=$2
    cat <<EOF
<domain type='qemu'>
  <name>$name</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$dir/vmlinuz</kernel>
    <initrd>$dir/initramfs.cpio.gz</initrd>
    <cmdline>$GUEST_CMDLINE</cmdline>
  </os>
  <features>$GUEST_FEATURES</features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='scsi' index='0' model='virtio-scsi'/>
    <controller type='usb' model='none'/>
    <serial type='file'>
      <source path='$dir/console.log'/>
      <target port='0'/>
    </serial>
    <serial type='unix'>
      <source mode='bind' path='$dir/shell.sock'/>
      <target port='1'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
}

# guest_wait_ready NAME DIR: waits (60 s at most) until the guest booting from DIR says it is
# ready on its console and its shell answers.
guest_wait_ready() {
    local name=$1 dir=$2 i
    GUEST_DIR[$name]=$dir
    for ((i = 0; i < 600; i++)); do
        grep -q '^volgate-guest: ready' "$dir/console.log" 2>/dev/null && break
        [[ $("${VIRSH[@]}" domstate "$name" 2>/dev/null) == running ]] ||
            fail "guest $name stopped while booting: $(tail -n 5 "$dir/console.log" 2>/dev/null)"
        sleep 0.1
    done
    grep -q '^volgate-guest: ready' "$dir/console.log" 2>/dev/null ||
        fail "guest $name not up within 60 s; console: $(tail -n 10 "$dir/console.log" 2>/dev/null)"
    [[ $(guest_run "$name" 'echo up' 20) == up ]] || fail "the shell of guest $name does not answer"
}

# guest_boot NAME DIR: starts the defined domain NAME (booting DIR's image) and waits for its
# shell; GUEST_BOOT_MS says how long that took.
guest_boot() {
    local name=$1 dir=$2 t0
    rm -f "$dir/console.log"
    t0=$(now_ms)
    "${VIRSH[@]}" start "$name" >/dev/null || fail "virsh start $name failed"
    guest_wait_ready "$name" "$dir"
    GUEST_BOOT_MS=$(($(now_ms) - t0))
}

# guest_run NAME CMD [TIMEOUT_S]: runs CMD with the guest's sh; prints its output (stdout and
# stderr together) and returns its status (124: no answer within TIMEOUT_S, default 30).
guest_run() {
    local name=$1 cmd=$2 timeout=${3:-30}
    /usr/bin/python3 "$GUEST_LIB_DIR/guest_shell.py" "${GUEST_DIR[$name]}/shell.sock" "$timeout" "$cmd"
}
