#!/usr/bin/env bash
# Runs one of a systemd unit's commands the way systemd would start it, on a machine where
# systemd does not run:
#   unit_exec.sh [--restart] [--command ExecStart|ExecReload] UNIT_FILE ROOT
# ROOT is a tree `scripts/install-units.sh --root ROOT` made. The command runs in a mount namespace
# of its own in which ROOT/run/NAME, ROOT/var/lib/NAME and ROOT/etc/NAME are bind-mounted on
# /run/NAME, /var/lib/NAME and /etc/NAME, and ROOT/PREFIX/bin on PREFIX/bin, so that it sees the
# unit's own paths while nothing of the machine's changes (the mount points are made if missing,
# and stay, empty, outside the namespace).
# Before the command, what systemd does: RuntimeDirectory=, StateDirectory= and
# ConfigurationDirectory= created (in ROOT) with their modes, UMask=, and CapabilityBoundingSet=
# and NoNewPrivileges= through setpriv. ReadWritePaths= that exist in ROOT are bind-mounted too.
# Without --restart the command replaces this process (same PID). With --restart it runs in a
# loop as Restart=always does: again RestartSec= after it ended, unless its exit status is in
# RestartPreventExitStatus= (this then exits with it); SIGTERM stops the command and the loop.
set -euo pipefail

restart=${UNIT_EXEC_RESTART:-0} key=${UNIT_EXEC_KEY:-ExecStart}
while (($#)); do
  case "$1" in
    --restart) restart=1; shift ;;
    --command) key=$2; shift 2 ;;
    *) break ;;
  esac
done
(($# == 2)) || { echo "usage: unit_exec.sh [--restart] [--command KEY] UNIT_FILE ROOT" >&2; exit 2; }
unit=$1 root=$(cd "$2" && pwd)

# The last assignment of KEY in the unit (later ones win, as in systemd), or empty; every
# assignment of a list (ReadWritePaths=), which systemd adds up.
value() { sed -n "s/^$1=//p" "$unit" | tail -n 1; }
values() { sed -n "s/^$1=//p" "$unit" | tr '\n' ' '; }

if [[ -z ${UNIT_EXEC_INSIDE:-} ]]; then
  export UNIT_EXEC_INSIDE=1 UNIT_EXEC_RESTART=$restart UNIT_EXEC_KEY=$key
  exec unshare --mount --propagation private "$0" "$unit" "$root"
fi

command_line=$(value "$key")
[[ -n $command_line ]] || { echo "unit_exec: $unit has no $key=" >&2; exit 2; }
read -r -a argv <<<"$command_line"

bind() {  # bind ROOT$1 on $1
  mkdir -p "$1" "$root$1"
  mount --bind "$root$1" "$1"
}
made() {  # made DIR MODE: a directory systemd makes for the unit, in ROOT, mode MODE, bound
  bind "$1"
  chmod "${2:-0755}" "$1"
}
for name in $(value RuntimeDirectory); do made "/run/$name" "$(value RuntimeDirectoryMode)"; done
for name in $(value StateDirectory); do made "/var/lib/$name" "$(value StateDirectoryMode)"; done
for name in $(value ConfigurationDirectory); do made "/etc/$name" "$(value ConfigurationDirectoryMode)"; done
for path in $(values ReadWritePaths); do
  path=${path#-}
  [[ -d $root$path ]] && bind "$path"
done
bindir=$(dirname "${argv[0]}")
[[ -d $root$bindir ]] || { echo "unit_exec: $root$bindir: no such directory (install-units.sh --root $root?)" >&2; exit 2; }
mount --bind "$root$bindir" "$bindir"

umask "$(value UMask || true)"
priv=(setpriv)
[[ $(value NoNewPrivileges) == yes ]] && priv+=(--no-new-privs)
caps=$(value CapabilityBoundingSet)
if [[ -n $caps ]]; then
  set=-all
  for c in $caps; do c=${c#CAP_}; set+=",+${c,,}"; done
  priv+=(--bounding-set "$set")
fi

((restart)) || exec "${priv[@]}" -- "${argv[@]}"

# RestartSec= in seconds: 250ms -> 0.25, 1s -> 1, 2 -> 2 (systemd's default: 100ms).
delay=$(value RestartSec)
delay=$(awk -v d="${delay:-100ms}" 'BEGIN { if (d ~ /ms$/) print d / 1000; else print d + 0 }')
prevent=" $(value RestartPreventExitStatus) "
child=
trap '[[ -n $child ]] && kill -TERM "$child" 2>/dev/null; wait; exit 0' TERM
while :; do
  "${priv[@]}" -- "${argv[@]}" &
  child=$!
  rc=0
  wait "$child" || rc=$?
  child=
  [[ $prevent == *" $rc "* ]] && exit "$rc"
  sleep "$delay"
done
