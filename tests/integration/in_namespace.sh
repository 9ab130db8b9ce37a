#!/bin/sh
# Runs $VOLGATE_REAL with the arguments given, in a mount namespace of its own where NS_HOSTS (if
# set) is /etc/hosts and NS_RESOLV (if set) is /etc/resolv.conf: name resolution made to order for
# one process, without touching the machine's files. Needs root (unshare -m). The process keeps
# this one's PID (each step execs the next).
set -e
exec unshare -m sh -c '
  [ -z "$NS_HOSTS" ] || mount --bind "$NS_HOSTS" /etc/hosts
  [ -z "$NS_RESOLV" ] || mount --bind "$NS_RESOLV" /etc/resolv.conf
  exec "$VOLGATE_REAL" "$@"' sh "$@"
