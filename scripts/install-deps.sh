#!/usr/bin/env bash
# Installs every Debian package volgate needs to build, test and benchmark.
#   scripts/install-deps.sh [--fuzz]    --fuzz: also clang and libFuzzer, for scripts/fuzz.sh
# Safe to run repeatedly; skips apt entirely when everything is already present.
set -euo pipefail

packages=(
  # build
  build-essential cmake ninja-build pkg-config
  libboost-dev liburing-dev libspdlog-dev libfmt-dev libcli11-dev
  libgtest-dev libgmock-dev
  libssl-dev libcryptsetup-dev libgcrypt20-dev nlohmann-json3-dev
  libzstd-dev  # backups: chunks are compressed with zstd (controller/backup/)
  nbdkit-plugin-dev  # the nbdkit plugin (gateway/nbdkit_plugin.cpp)
  # real NBD clients and peers used by the tests and the benchmark
  libnbd-bin python3-libnbd nbdkit qemu-utils fio python3 python3-cryptography
  procps time iproute2  # ss: test_server_hardening reads a TCP connection's keepalive timer
  # LUKS interoperability tests
  cryptsetup-bin
  # Ceph RBD: librbd to build against, a throwaway cluster and QEMU's rbd driver for the tests
  librbd-dev librados-dev libradospp-dev ceph-mon ceph-osd ceph-common qemu-block-extra
  # iSCSI volumes (and the controller's iscsi pools): libiscsi, and tgt as the real target
  libiscsi-dev libiscsi-bin tgt
  # NBD servers as backends (libnbd's asynchronous API)
  libnbd-dev
  # sd_notify: a gateway run by systemd (Type=notify) says when it is ready, and which process
  # is the service's after a hand-over (MAINPID)
  libsystemd-dev
  # controller: SQLite, and the tools its integration tests drive the REST API with (curl,
  # and OpenStack's own client, to prove the API is Cinder's to it)
  libsqlite3-dev sqlite3 curl python3-cinderclient python3-novaclient
  # the controller's virt driver (libvirt's C API), a real libvirtd and a tiny TCG guest
  # (busybox initramfs) that attached volumes are put into; the guest's kernel is only
  # downloaded and unpacked (see guest_kernel_deb below), never installed
  libvirt-daemon-system libvirt-clients libvirt-dev qemu-system-x86 busybox-static cpio
  # volgate serve --fuse (libfuse3; fusermount3 for non-root mounts and dead-mount cleanup);
  # the benchmark's FUSE rows also use nbdfuse (libnbd-bin) and qemu-storage-daemon
  # (qemu-system-x86), both listed above
  libfuse3-dev fuse3
  # the metrics tests check every scrape with promtool (the prometheus package: ~19 MB to
  # download, ~96 MB installed; its service is not started here)
  prometheus
  systemd  # systemd-analyze, which verifies the units (test_systemd_units.sh); it is not made the init
)
case "${1:-}" in
  "") ;;
  --fuzz) packages+=(clang-14 libclang-rt-14-dev) ;;  # the pair Debian 12 ships
  *) echo "usage: scripts/install-deps.sh [--fuzz]" >&2; exit 2 ;;
esac

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get -o DPkg::Lock::Timeout=900 update -qq
  $SUDO apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${missing[@]}"
fi

# The guest's kernel: the .deb of the kernel Debian's cloud-amd64 meta-package points at, kept in
# the cache that scripts/guest-lib.sh builds the guest from (it unpacks it with dpkg -x).
# Downloaded, not installed: this machine keeps its own kernel.
guest_cache=${VOLGATE_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/volgate-guest}
kernel_pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[^ ]*-cloud-amd64\)$/\1/p' | head -n 1)
if [[ -z $kernel_pkg ]]; then
  echo "install-deps: no linux-image-cloud-amd64 in the package lists (apt-get update?)" >&2
  exit 1
fi
if ! compgen -G "$guest_cache/${kernel_pkg}_*.deb" >/dev/null; then
  echo "install-deps: downloading $kernel_pkg for the test guest into $guest_cache" >&2
  mkdir -p "$guest_cache"
  # (as root: _apt, the sandbox user, may not write into a private cache directory)
  (cd "$guest_cache" && apt-get -o DPkg::Lock::Timeout=900 -o APT::Sandbox::User="$(id -un)" download -qq "$kernel_pkg")
fi
