#!/usr/bin/env bash
# Installs volgate on a hypervisor: the binary (and the nbdkit plugin) through `cmake --install`,
# the systemd units volgate-gateway.service and volgate-controller.service, and a controller
# configuration /etc/volgate/controller.json if there is none (an existing one is kept).
#   scripts/install-units.sh [--prefix DIR] [--root DIR] [--build DIR] [--enable]
# --prefix  where the binary goes, DIR/bin/volgate (default /usr/local); the units name it there
# --root    install into DIR as if it were / (a staging tree for a package or a test); nothing
#           is started then
# --build   the build directory (default build/, made by scripts/build.sh release)
# --enable  systemctl enable --now both units (with --root /, on a host where systemd runs)
# See README.md, "Running on a hypervisor".
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=/usr/local root=/ build=build enable=0
usage() { echo "usage: scripts/install-units.sh [--prefix DIR] [--root DIR] [--build DIR] [--enable]" >&2; exit 2; }
while (($#)); do
  case "$1" in
    --prefix) [[ $# -ge 2 ]] || usage; prefix=$2; shift 2 ;;
    --root)   [[ $# -ge 2 ]] || usage; root=$2; shift 2 ;;
    --build)  [[ $# -ge 2 ]] || usage; build=$2; shift 2 ;;
    --enable) enable=1; shift ;;
    *) usage ;;
  esac
done
[[ $prefix == /* ]] || { echo "install-units: --prefix must be an absolute path: $prefix" >&2; exit 2; }
[[ -x $build/volgate ]] || { echo "install-units: no $build/volgate: build it first (scripts/build.sh release)" >&2; exit 2; }
root=${root%/}
if [[ -n $root && $enable == 1 ]]; then
  echo "install-units: --enable installs on this host only (not with --root)" >&2
  exit 2
fi

DESTDIR=$root cmake --install "$build" --prefix "$prefix" >/dev/null

units=$root/etc/systemd/system
install -d -m 0755 "$units"
for unit in volgate-gateway.service volgate-controller.service; do
  sed "s|/usr/local/bin/volgate|$prefix/bin/volgate|g" "packaging/systemd/$unit" >"$units/$unit.tmp"
  chmod 0644 "$units/$unit.tmp"
  mv "$units/$unit.tmp" "$units/$unit"
done
share=$root$prefix/share/volgate/systemd
install -d -m 0755 "$share"
sed "s|/usr/local/bin/volgate|$prefix/bin/volgate|g" packaging/systemd/volgate-gateway-fuse.conf >"$share/volgate-gateway-fuse.conf"
install -d -m 0755 "$root/etc/volgate"
if [[ ! -e $root/etc/volgate/controller.json ]]; then
  install -m 0644 packaging/systemd/controller.json "$root/etc/volgate/controller.json"
else
  echo "install-units: keeping the existing $root/etc/volgate/controller.json" >&2
fi
echo "installed $root$prefix/bin/volgate, $units/volgate-gateway.service, $units/volgate-controller.service"

# Only on a host where systemd is the init system.
if [[ -z $root && -d /run/systemd/system ]]; then
  systemctl daemon-reload
  if ((enable)); then
    systemctl enable --now volgate-gateway.service volgate-controller.service
  else
    echo "start them with: systemctl enable --now volgate-gateway volgate-controller"
  fi
elif ((enable)); then
  echo "install-units: systemd does not run here: nothing enabled" >&2
  exit 1
fi
