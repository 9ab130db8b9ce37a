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
  libssl-dev libcryptsetup-dev nlohmann-json3-dev
  # real NBD clients and peers used by the tests and the benchmark
  libnbd-bin python3-libnbd nbdkit qemu-utils fio python3 python3-cryptography
  procps time
  # LUKS interoperability tests
  cryptsetup-bin
  # Ceph RBD: librbd to build against, a throwaway cluster and QEMU's rbd driver for the tests
  librbd-dev librados-dev libradospp-dev ceph-mon ceph-osd ceph-common qemu-block-extra
  # iSCSI volumes (and the controller's iscsi pools): libiscsi, and tgt as the real target
  libiscsi-dev libiscsi-bin tgt
  # controller: SQLite, and the tools its integration tests drive the REST API with (curl,
  # and OpenStack's own client, to prove the API is Cinder's to it)
  libsqlite3-dev sqlite3 curl python3-cinderclient
  # the controller's virt driver: libvirt's C API
  libvirt-dev
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
