#!/usr/bin/env bash
# Compares volgate against nbdkit and qemu-nbd in one run, on one RAM-backed image,
# with fio's nbd ioengine over unix sockets. See bench/README.md and --help.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CMDLINE=$0
for a in "$@"; do
  if [[ $a =~ ^[A-Za-z0-9_./,=:@+%-]+$ ]]; then CMDLINE+=" $a"; else CMDLINE+=" $(printf '%q' "$a")"; fi
done

ALL_SERVERS=(volgate-file volgate-file-metrics volgate-memory nbdkit-file nbdkit-memory nbdkit-null qemu-nbd
             volgate-luks nbdkit-luks qemu-nbd-luks volgate-luks2 volgate-luks-openssl volgate-luks2-openssl
             volgate-iscsi volgate-iscsi-rr qemu-nbd-iscsi)
# Rows of volgate's device stack inside nbdkit (the plugin, build/nbdkit-volgate-plugin.so): on
# the same image as nbdkit-file and volgate-file, and on the LUKS2 image of volgate-luks2.
PLUGIN_SERVERS=(nbdkit-volgate-file nbdkit-volgate-luks2)
ALL_SERVERS+=("${PLUGIN_SERVERS[@]}")
# volgate re-exporting another NBD server (its libnbd backend): chained to a private
# `nbdkit memory`, compared with the nbdkit-memory row (the same upstream, direct).
ALL_SERVERS+=(volgate-nbd-memory)
# NBD over TLS (x509, TLS required) on the image of the file rows: volgate, nbdkit and qemu-nbd.
TLS_SERVERS=(volgate-file-tls nbdkit-file-tls qemu-nbd-tls)
ALL_SERVERS+=("${TLS_SERVERS[@]}")
# Rows on a Ceph RBD image; they need --ceph, which starts a throwaway cluster.
RBD_SERVERS=(volgate-rbd volgate-rbd-wt qemu-nbd-rbd qsd-rbd rbd-bench)
is_rbd_row() { [[ " ${RBD_SERVERS[*]} " == *" ${1%@base} "* ]]; }  # NAME or NAME@base
ALL_WORKLOADS=(seq-read seq-write rand-read rand-write rand-read-qd1)

RUNTIME=10
RAMP=2
REPEAT=1
SIZE_ARG=1G
SERVERS_ARG=""
CEPH_STORE=""
WORKLOADS_ARG=$(IFS=,; echo "${ALL_WORKLOADS[*]}")
VOLGATE=$ROOT/build/volgate
BASELINE=""  # --baseline
OUT=""
SHM=/dev/shm
FUSE_ROWS=0  # --fuse: the FUSE section (bench/fuse_rows.sh)

usage() {
  cat <<EOF
Usage: bench/run.sh [OPTIONS]

Serves one RAM-backed image (a file in $SHM, filled with data once) with each selected
server over a unix socket and runs each selected fio workload against it with fio's nbd
ioengine (one job, one connection, time_based). Every (server, workload) row gets a fresh
server: start, [prefill for memory servers], fio, read the server's peak RSS, SIGTERM.
At the end prints one markdown table (MiB/s, IOPS, mean latency, server CPU-seconds per
GiB moved, server CPU %, fio CPU %, CPU % of everything else on the machine, server peak
RSS, and volgate/nbdkit ratios) plus the command line, machine and date. Rows measured
while other processes used more than 15 % CPU are listed as problems: run it on an idle
machine.

Options:
  --runtime SEC      measured seconds per workload (default $RUNTIME)
  --ramp SEC         fio ramp_time before measuring, not counted (default $RAMP)
  --size SIZE        image / memory export size, N[K|M|G|T], binary units, a multiple
                     of 1 MiB (default $SIZE_ARG)
  --servers LIST     comma-separated subset of:
                       ${ALL_SERVERS[*]}
                       ${RBD_SERVERS[*]} (with --ceph)
                     nbdkit-volgate-file and nbdkit-volgate-luks2 are nbdkit with volgate's
                     plugin (nbdkit-volgate-plugin.so beside --volgate) on the image of
                     nbdkit-file and volgate-file, and on the LUKS2 image of volgate-luks2
                     (default: all of them; the RBD ones only with --ceph)
  --workloads LIST   comma-separated subset of (default: all):
                       seq-read       1 MiB sequential read,  iodepth 16
                       seq-write      1 MiB sequential write, iodepth 16
                       rand-read      4 KiB random read,      iodepth 32
                       rand-write     4 KiB random write,     iodepth 32
                       rand-read-qd1  4 KiB random read,      iodepth 1
  --ceph STORE       also start a one-mon, one-OSD Ceph cluster (tests/integration/
                     ceph_cluster.sh) with STORE = memstore (in RAM) or bluestore (a
                     file in /var/tmp), and add the RBD rows on one image of --size:
                       volgate-rbd    volgate serve rbd:POOL/IMAGE
                       volgate-rbd-wt the same with librbd writing through and without
                                      copying writes (rbd_cache_max_dirty = 0,
                                      rbd_disable_zero_copy_writes = false in its conf)
                       qemu-nbd-rbd   qemu-nbd with its rbd driver, --cache=writeback
                       qsd-rbd        qemu-storage-daemon: the same rbd driver and cache
                                      (writeback), its NBD export over a unix socket
                       rbd-bench      \`rbd bench\` with the same pattern, thread count and
                                      duration: the cluster's own ceiling (no NBD)
  --repeat N         run every row N times (default 1), all servers of a workload one after
                     the other in each round, the server order rotated from round to round;
                     the table shows each row's median run by MiB/s (the lower middle one
                     for an even N: use an odd N), and a list under it
                     gives every run, so noise shows as the spread rather than as a verdict
  --volgate PATH     volgate binary (default: build/volgate under the repo root,
                     i.e. $ROOT/build/volgate)
  --baseline PATH    an earlier volgate binary, for a before/after comparison in one run: a
                     server NAME@base (e.g. volgate-file@base) is row NAME served by it; with
                     --fuse, a row volgate-fuse@base too
  --out FILE         also append the header and table to FILE
  --fuse             add the FUSE section (bench/fuse_rows.sh): the image as a file, fio
                     libaio O_DIRECT with each workload, through volgate serve --fuse, through
                     nbdfuse over volgate's NBD export, and through qemu-storage-daemon's FUSE
                     export; its own table. With --fuse and no --servers, no NBD rows run
                     (--servers none does the same without --fuse)
  -h, --help         show this help

Defaults take about 40 s per server row (5 workloads x (ramp + runtime + ~0.5 s)), plus
~2-3 s of untimed prefill per memory-server row and the LUKS image preparation.
The LUKS rows: volgate-luks, nbdkit-luks (--filter=luks) and qemu-nbd-luks serve one LUKS1
image made by qemu-img; volgate-luks2 serves a LUKS2 image (4096-byte sectors) made by
cryptsetup. Both payloads are --size and are filled with data through volgate first.
volgate-luks and volgate-luks2 use the AES-XTS provider volgate chooses (--xts-provider auto);
volgate-luks-openssl and volgate-luks2-openssl name OpenSSL's, for the comparison.
The iSCSI rows serve the image through a private tgtd (two portals on 127.0.0.1 and
127.0.0.2, the image as a file-backed LUN): volgate-iscsi over one portal, volgate-iscsi-rr over
both with path-policy=round-robin, qemu-nbd-iscsi with QEMU's iscsi:// driver on the same LUN.
tgtd's CPU is counted neither as the server's nor as other CPU.
The TLS rows (volgate-file-tls, nbdkit-file-tls, qemu-nbd-tls) serve the image of the file rows
with TLS required and x509 certificates made for the run (openssl, ECDSA P-256), no client
certificates asked for (qemu-nbd: verify-peer=off); fio's libnbd
(GnuTLS) connects with nbds+unix:// and finds the CA in \$HOME/.pki/libnbd (a private HOME).
volgate-file-tls's ×nbdkit is against nbdkit-file-tls, its ×volgate-file against the clear-text
volgate-file row.
volgate-nbd-memory is volgate serving nbd+unix:///?socket=UPSTREAM, a private \`nbdkit -f
memory --size\` started once for the run (its CPU is counted neither as the server's nor as
other CPU); its ×nbdkit ratios compare it with the nbdkit-memory row, i.e. with going to the
same kind of upstream directly.
The RBD table (--ceph) gives volgate-rbd's MiB/s against qemu-nbd-rbd, qsd-rbd and rbd-bench
(and volgate-rbd-wt's: librbd's cache set to write through, so that it sends write payloads
without copying them), and its CPU bar: rbd-bench's server CPU-seconds per GiB plus
volgate-memory's on the same workload (librbd's cost plus the NBD hop), so add volgate-memory
to --servers for it. With --baseline, volgate-rbd@base is the same row served by the earlier
binary.
Needs: fio (with the nbd engine), nbdkit, qemu-nbd, qemu-img, cryptsetup, ss (iproute2),
/usr/bin/python3; tgt and qemu-block-extra for the iSCSI rows; ceph, qemu-block-extra and
qemu-storage-daemon (qemu-system-x86) for the RBD rows.
Exits non-zero if any row failed; the failures are listed under the table.
EOF
}

die() { echo "bench: $*" >&2; exit 2; }

while (($#)); do
  case $1 in
    --runtime) RUNTIME=${2:?}; shift 2 ;;
    --ramp) RAMP=${2:?}; shift 2 ;;
    --size) SIZE_ARG=${2:?}; shift 2 ;;
    --servers) SERVERS_ARG=${2:?}; shift 2 ;;
    --workloads) WORKLOADS_ARG=${2:?}; shift 2 ;;
    --volgate) VOLGATE=${2:?}; shift 2 ;;
    --baseline) BASELINE=${2:?}; shift 2 ;;
    --out) OUT=${2:?}; shift 2 ;;
    --ceph) CEPH_STORE=${2:?}; shift 2 ;;
    --repeat) REPEAT=${2:?}; shift 2 ;;
    --fuse) FUSE_ROWS=1; shift ;;
    --runtime=*|--ramp=*|--size=*|--servers=*|--workloads=*|--volgate=*|--out=*|--ceph=*|--repeat=*)
      set -- "${1%%=*}" "${1#*=}" "${@:2}" ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

[[ $RUNTIME =~ ^[0-9]+$ && $RUNTIME -ge 1 ]] || die "--runtime must be a whole number of seconds >= 1"
[[ $RAMP =~ ^[0-9]+$ ]] || die "--ramp must be a whole number of seconds"
[[ $REPEAT =~ ^[0-9]+$ && $REPEAT -ge 1 ]] || die "--repeat must be a whole number >= 1"

# Size: binary units; passed to every server in the same normalised spelling.
[[ ${SIZE_ARG^^} =~ ^([0-9]+)([KMGT]?)(I?B)?$ ]] || die "bad --size '$SIZE_ARG' (want N[K|M|G|T])"
n=${BASH_REMATCH[1]}
case ${BASH_REMATCH[2]} in
  K) SIZE=$((n << 10)) ;; M) SIZE=$((n << 20)) ;; G) SIZE=$((n << 30)) ;; T) SIZE=$((n << 40)) ;; *) SIZE=$n ;;
esac
((SIZE > 0 && SIZE % (1 << 20) == 0)) || die "--size must be a positive multiple of 1 MiB"
if ((SIZE % (1 << 30) == 0)); then SIZE_STR=$((SIZE >> 30))G; else SIZE_STR=$((SIZE >> 20))M; fi

[[ -z $CEPH_STORE || $CEPH_STORE == memstore || $CEPH_STORE == bluestore ]] ||
  die "--ceph takes memstore or bluestore"
((FUSE_ROWS)) && [[ -z $SERVERS_ARG ]] && SERVERS_ARG=none
if [[ -z $SERVERS_ARG ]]; then
  SERVERS_ARG=$(IFS=,; echo "${ALL_SERVERS[*]}")
  [[ -n $CEPH_STORE ]] && SERVERS_ARG+=,$(IFS=,; echo "${RBD_SERVERS[*]}")
fi
IFS=, read -r -a SERVERS <<<"$SERVERS_ARG"
[[ $SERVERS_ARG == none ]] && SERVERS=()
IFS=, read -r -a WORKLOADS <<<"$WORKLOADS_ARG"
need_ceph=0
for s in "${SERVERS[@]}"; do
  if is_rbd_row "$s"; then
    need_ceph=1
    [[ -n $CEPH_STORE ]] || die "server '$s' needs a cluster: add --ceph memstore (or bluestore)"
  else
    [[ " ${ALL_SERVERS[*]} " == *" ${s%@base} "* ]] || die "unknown server '$s'"
  fi
  [[ $s != *@base || ($s == volgate-* && -x ${BASELINE:-}) ]] ||
    die "server '$s' needs --baseline with an executable volgate, and a volgate-* row"
done
for w in "${WORKLOADS[@]}"; do [[ " ${ALL_WORKLOADS[*]} " == *" $w "* ]] || die "unknown workload '$w'"; done
(((${#SERVERS[@]} || FUSE_ROWS) && ${#WORKLOADS[@]})) || die "empty --servers or --workloads"

need_volgate=0
for s in "${SERVERS[@]}"; do [[ $s == volgate-* || $s == nbdkit-volgate-* ]] && need_volgate=1; done
if ((FUSE_ROWS)); then
  need_volgate=1
  [[ -z $BASELINE || -x $BASELINE ]] || die "--baseline: $BASELINE is not an executable"
  . "$ROOT/bench/fuse_rows.sh"
  fuse_rows_check_tools
fi
for tool in fio ss; do command -v "$tool" >/dev/null || die "$tool not found (scripts/install-deps.sh)"; done
[[ -x /usr/bin/python3 ]] || die "/usr/bin/python3 not found"
for s in "${SERVERS[@]}"; do
  case $s in
    nbdkit-*) command -v nbdkit >/dev/null || die "nbdkit not found" ;;
    qemu-nbd*) command -v qemu-nbd >/dev/null || die "qemu-nbd not found" ;;
    qsd-*) command -v qemu-storage-daemon >/dev/null || die "qemu-storage-daemon not found (apt-get install qemu-system-x86)" ;;
  esac
  case $s in
    *-iscsi*) command -v tgtd >/dev/null || die "tgtd not found (apt-get install tgt)" ;;
  esac
done
if ((need_volgate)); then
  [[ -x $VOLGATE ]] || die "volgate binary not found at $VOLGATE (build it, pass --volgate, or leave volgate-* out of --servers)"
  VOLGATE=$(cd "$(dirname "$VOLGATE")" && pwd)/$(basename "$VOLGATE")
fi
PLUGIN=$(dirname "$VOLGATE")/nbdkit-volgate-plugin.so
for s in "${SERVERS[@]}"; do
  [[ $s != nbdkit-volgate-* || -f $PLUGIN ]] || die "the nbdkit plugin is not at $PLUGIN (build it, or leave $s out of --servers)"
done
fio --enghelp=nbd >/dev/null 2>&1 || die "this fio has no nbd ioengine"

avail=$(df -B1 --output=avail "$SHM" | tail -1)
((avail > SIZE + (256 << 20))) || die "not enough space in $SHM for a $SIZE_STR image"

CLK_TCK=$(getconf CLK_TCK)
WORK=$(mktemp -d "$SHM/volgate-bench.XXXXXX") || die "mktemp failed"
IMG=$WORK/image.raw
SERVER_PID=""
FIO_PID=""
TGTD_PID=""

BG_PIDS=()   # the Ceph daemons, when --ceph started them
DISK_TMP=""

cleanup() {
  trap - EXIT INT TERM
  [[ -n $FIO_PID ]] && { kill -KILL "$FIO_PID"; wait "$FIO_PID"; } 2>/dev/null
  if [[ -n $SERVER_PID ]]; then
    kill -TERM "$SERVER_PID" 2>/dev/null
    for _ in {1..30}; do alive "$SERVER_PID" || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null
  fi
  local p
  for p in "${BG_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  [[ -n $TGTD_PID ]] && kill -KILL "$TGTD_PID" 2>/dev/null   # tgtd ignores SIGTERM
  wait 2>/dev/null
  rm -rf "$WORK"
  [[ -n $DISK_TMP ]] && rm -rf "$DISK_TMP"
}
trap cleanup EXIT
trap 'echo "bench: interrupted" >&2; exit 130' INT
trap 'echo "bench: terminated" >&2; exit 143' TERM

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

# A process is alive if it exists and is not a zombie (our own children stay zombies
# until waited for, so kill -0 alone is not enough).
alive() {
  local st
  st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  st=${st##*) }
  [[ ${st%% *} != Z ]]
}

# utime+stime of the whole process (all threads), in clock ticks.
cpu_ticks() {
  local st
  st=$(cat "/proc/$1/stat" 2>/dev/null) || { echo -1; return; }
  st=${st##*) }   # after "(comm) ": field 3 (state) is $1, so utime (14) is $12, stime (15) is $13
  awk '{print $12 + $13}' <<<"$st"
}

# CPU ticks spent by the whole machine (all CPUs, everything but idle and iowait).
sys_busy_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
# Time the hypervisor gave the vCPUs to someone else (counted in sys_busy_ticks as well).
steal_ticks() { awk '/^cpu /{print $9}' /proc/stat; }

vm_hwm_kib() { awk '/^VmHWM:/{print $2}' "/proc/$1/status" 2>/dev/null || echo -1; }

# The PID that holds the listening unix socket: the real server even when the launched
# command is a wrapper that forks or execs it.
listener_pid() {
  ss -xlpnH 2>/dev/null | awk -v p="$1" '$5 == p' | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2
}

server_cmd() { # server sock -> prints argv, one per line
  local s=$1 sock=$2
  if [[ $s == *@base ]]; then
    VOLGATE=$BASELINE server_cmd "${s%@base}" "$sock"
    return
  fi
  case $s in
    volgate-file)   printf '%s\n' "$VOLGATE" serve --unix "$sock" --export "bench=file:$IMG" ;;
    # The same with --metrics: requests timed for the latency histograms (counting is always on).
    volgate-file-metrics) printf '%s\n' "$VOLGATE" serve --unix "$sock" --metrics 127.0.0.1:0 --export "bench=file:$IMG" ;;
    volgate-memory) printf '%s\n' "$VOLGATE" serve --unix "$sock" --export "bench=memory:$SIZE_STR" ;;
    nbdkit-file)    printf '%s\n' nbdkit -f -U "$sock" file "$IMG" ;;
    nbdkit-memory)  printf '%s\n' nbdkit -f -U "$sock" memory "size=$SIZE" ;;
    nbdkit-null)    printf '%s\n' nbdkit -f -U "$sock" null "size=$SIZE" ;;
    qemu-nbd)       printf '%s\n' qemu-nbd -f raw -k "$sock" -t -e 8 --cache=writeback --aio=threads "$IMG" ;;
    volgate-luks)   printf '%s\n' "$VOLGATE" serve --unix "$sock" --export "bench=file:$LUKS1_IMG,luks-key-file=$KEY" ;;
    volgate-luks2)  printf '%s\n' "$VOLGATE" serve --unix "$sock" --export "bench=file:$LUKS2_IMG,luks-key-file=$KEY" ;;
    # The same with OpenSSL's AES-XTS named, beside the provider auto chooses (the rows above).
    volgate-luks-openssl)  printf '%s\n' "$VOLGATE" serve --unix "$sock" --xts-provider openssl \
                             --export "bench=file:$LUKS1_IMG,luks-key-file=$KEY" ;;
    volgate-luks2-openssl) printf '%s\n' "$VOLGATE" serve --unix "$sock" --xts-provider openssl \
                             --export "bench=file:$LUKS2_IMG,luks-key-file=$KEY" ;;
    nbdkit-luks)    printf '%s\n' nbdkit -f -U "$sock" --filter=luks file "$LUKS1_IMG" "passphrase=+$KEY" ;;
    qemu-nbd-luks)  printf '%s\n' qemu-nbd -k "$sock" -t -e 8 --cache=writeback --aio=threads \
                      --object "secret,id=s0,file=$KEY" --image-opts "driver=luks,key-secret=s0,file.filename=$LUKS1_IMG" ;;
    volgate-rbd)    printf '%s\n' "$VOLGATE" serve --unix "$sock" \
                      --export "bench=rbd:$CEPH_POOL/bench,ceph-conf=$CEPH_CONF,keyring=$CEPH_KEYRING" ;;
    volgate-rbd-wt) printf '%s\n' "$VOLGATE" serve --unix "$sock" \
                      --export "bench=rbd:$CEPH_POOL/bench,ceph-conf=$CEPH_WT_CONF,keyring=$CEPH_KEYRING" ;;
    qemu-nbd-rbd)   printf '%s\n' qemu-nbd -k "$sock" -t -e 8 --cache=writeback --image-opts \
                      "driver=rbd,pool=$CEPH_POOL,image=bench,conf=$CEPH_CONF,user=admin" ;;
    # The same driver under qemu-storage-daemon: cache.direct=off keeps librbd's cache on (as
    # qemu-nbd's --cache=writeback does) and an export is writeback unless writethrough=on.
    # name= (empty) is the default export fio's URI asks for, as with qemu-nbd.
    qsd-rbd)        printf '%s\n' qemu-storage-daemon \
                      --blockdev "driver=rbd,node-name=rbd0,pool=$CEPH_POOL,image=bench,conf=$CEPH_CONF,user=admin,cache.direct=off" \
                      --nbd-server "addr.type=unix,addr.path=$sock" \
                      --export "type=nbd,id=exp0,node-name=rbd0,name=,writable=on" ;;
    volgate-iscsi)  printf '%s\n' "$VOLGATE" serve --unix "$sock" --export "bench=iscsi://127.0.0.1:$TGTD_PORT/$ISCSI_IQN/1" ;;
    volgate-iscsi-rr) printf '%s\n' "$VOLGATE" serve --unix "$sock" \
                      --export "bench=iscsi://127.0.0.1:$TGTD_PORT,127.0.0.2:$TGTD_PORT/$ISCSI_IQN/1,path-policy=round-robin" ;;
    volgate-nbd-memory) printf '%s\n' "$VOLGATE" serve --unix "$sock" --export "bench=nbd+unix:///?socket=$CHAIN_SOCK" ;;
    qemu-nbd-iscsi) printf '%s\n' qemu-nbd -f raw -k "$sock" -t -e 8 --cache=writeback "iscsi://127.0.0.1:$TGTD_PORT/$ISCSI_IQN/1" ;;
    volgate-file-tls) printf '%s\n' "$VOLGATE" serve --unix "$sock" --tls require --tls-certificates "$TLS_DIR" \
                      --export "bench=file:$IMG" ;;
    nbdkit-file-tls) printf '%s\n' nbdkit -f -U "$sock" --tls=require --tls-certificates="$TLS_DIR" file "$IMG" ;;
    qemu-nbd-tls)   printf '%s\n' qemu-nbd -f raw -k "$sock" -t -e 8 --cache=writeback --aio=threads \
                      --object "tls-creds-x509,id=tls0,dir=$TLS_DIR,endpoint=server,verify-peer=off" --tls-creds tls0 "$IMG" ;;
    nbdkit-volgate-*) plugin_server_cmd "$s" "$sock" ;;
  esac
}

# The nbdkit plugin rows: nbdkit's own threads (16 per connection by default, as for
# nbdkit-file) call the plugin, which runs the device on its worker threads.
plugin_server_cmd() { # server sock -> prints argv, one per line
  case $1 in
    nbdkit-volgate-file)  printf '%s\n' nbdkit -f -U "$2" "$PLUGIN" "file:$IMG" ;;
    nbdkit-volgate-luks2) printf '%s\n' nbdkit -f -U "$2" "$PLUGIN" "file:$LUKS2_IMG,luks-key-file=$KEY" ;;
  esac
}

workload_args() {
  case $1 in
    seq-read)      echo "--rw=read --bs=1M --iodepth=16" ;;
    seq-write)     echo "--rw=write --bs=1M --iodepth=16" ;;
    rand-read)     echo "--rw=randread --bs=4k --iodepth=32" ;;
    rand-write)    echo "--rw=randwrite --bs=4k --iodepth=32" ;;
    rand-read-qd1) echo "--rw=randread --bs=4k --iodepth=1" ;;
  esac
}

ANOMALIES=()
anomaly() { ANOMALIES+=("$*"); log "ANOMALY: $*"; }

# start_server NAME ROWID -> sets SERVER_PID, SOCK, SLOG; returns 1 on failure
start_server() {
  local s=$1 id=$2 argv launched i pid
  SOCK=$WORK/$id.sock
  SLOG=$WORK/$id.server
  rm -f "$SOCK"
  mapfile -t argv < <(server_cmd "$s" "$SOCK")
  LAST_SERVER_CMD="${argv[*]}"
  "${argv[@]}" >"$SLOG.out" 2>"$SLOG.err" </dev/null &
  launched=$!
  SERVER_PID=$launched
  for ((i = 0; i < 200; i++)); do   # up to 20 s
    if [[ -S $SOCK ]]; then
      pid=$(listener_pid "$SOCK")
      [[ -n $pid ]] && break
    fi
    alive "$launched" || break
    sleep 0.1
  done
  if [[ -z ${pid:-} ]]; then
    anomaly "$s: did not start listening on $SOCK ($(tail -c 400 "$SLOG.err" | tr '\n' ' '))"
    stop_server "$s" >/dev/null
    return 1
  fi
  [[ $pid != "$launched" ]] && log "$s: launched PID $launched, listening PID $pid (measuring $pid)"
  MEASURE_PID=$pid
  return 0
}

# stop_server NAME -> SIGTERM, wait up to 10 s, SIGKILL; records unexpected exits
stop_server() {
  local s=$1 rc i
  [[ -n $SERVER_PID ]] || return 0
  if alive "$SERVER_PID"; then
    kill -TERM "$SERVER_PID" 2>/dev/null
    for ((i = 0; i < 100; i++)); do alive "$SERVER_PID" || break; sleep 0.1; done
    if alive "$SERVER_PID"; then
      anomaly "$s: still running 10 s after SIGTERM; killed"
      kill -KILL "$SERVER_PID" 2>/dev/null
    fi
    wait "$SERVER_PID" 2>/dev/null; rc=$?
    ((rc == 0)) || anomaly "$s: exited with status $rc after SIGTERM ($(tail -c 300 "$SLOG.err" | tr '\n' ' '))"
  else
    wait "$SERVER_PID" 2>/dev/null; rc=$?
    anomaly "$s: server had already exited (status $rc) before SIGTERM ($(tail -c 300 "$SLOG.err" | tr '\n' ' '))"
  fi
  if [[ -n ${MEASURE_PID:-} && $MEASURE_PID != "$SERVER_PID" ]] && alive "$MEASURE_PID"; then
    kill -TERM "$MEASURE_PID" 2>/dev/null; sleep 0.5; kill -KILL "$MEASURE_PID" 2>/dev/null
    anomaly "$s: forked server PID $MEASURE_PID outlived its launcher"
  fi
  SERVER_PID=""
  MEASURE_PID=""
  rm -f "$SOCK"
}

# uri SOCKET [SERVER]: nbds+unix:// for the TLS rows (the CA is in $HOME/.pki/libnbd, see fio()).
uri() { if [[ ${2:-} == *-tls ]]; then echo "nbds+unix:///?socket=$1"; else echo "nbd+unix:///?socket=$1"; fi; }

# fio JSON -> "io_bytes bw_bytes iops lat_mean_ns usr_cpu sys_cpu error"
parse_fio() {
  /usr/bin/python3 - "$1" <<'EOF'
import json, sys
try:
    j = json.load(open(sys.argv[1]))["jobs"][0]
except Exception as e:
    print("0 0 0 0 0 0 parse-error"); sys.exit(0)
r, w = j["read"], j["write"]
io = r["io_bytes"] + w["io_bytes"]
bw = r["bw_bytes"] + w["bw_bytes"]
iops = r["iops"] + w["iops"]
n = r["lat_ns"]["N"] + w["lat_ns"]["N"]
lat = (r["lat_ns"]["mean"] * r["lat_ns"]["N"] + w["lat_ns"]["mean"] * w["lat_ns"]["N"]) / n if n else 0
print(io, bw, iops, lat, j["usr_cpu"], j["sys_cpu"], j["error"])
EOF
}

declare -A RES   # RES[server|workload|field]

run_row() {
  local s=$1 w=$2 id=$3 json err t0 t1 c0 c1 b0 b1 st0 st1 rc io bw iops lat ucpu scpu ferr hwm
  if ! start_server "$s" "$id"; then RES[$s|$w|err]="no start"; return; fi
  local target=$MEASURE_PID
  if [[ ${s%@base} == *-memory ]]; then
    # untimed prefill so reads hit data and writes overwrite allocated memory
    if ! fio --name=prefill --ioengine=nbd --uri="$(uri "$SOCK")" --rw=write --bs=1M --iodepth=16 \
        --output=/dev/null >"$WORK/$id.prefill.err" 2>&1; then
      anomaly "$s/$w: prefill failed ($(tail -c 300 "$WORK/$id.prefill.err" | tr '\n' ' '))"
    fi
  fi
  json=$WORK/$id.json
  err=$WORK/$id.fio.err
  # shellcheck disable=SC2046
  fio --name="$w" --ioengine=nbd --uri="$(uri "$SOCK" "$s")" $(workload_args "$w") \
      --numjobs=1 --time_based --runtime="$RUNTIME" --ramp_time="$RAMP" \
      --norandommap --randrepeat=0 --output-format=json --output="$json" \
      >"$WORK/$id.fio.out" 2>"$err" </dev/null &
  FIO_PID=$!
  sleep "$RAMP"   # server CPU is sampled over fio's measured window, not its ramp
  local u0=-1 u1=-1
  [[ $s == volgate-nbd-memory ]] && u0=$(cpu_ticks "$CHAIN_PID")
  c0=$(cpu_ticks "$target"); b0=$(sys_busy_ticks); k0=$(storage_ticks); st0=$(steal_ticks); t0=$(date +%s.%N)
  wait "$FIO_PID"; rc=$?
  c1=$(cpu_ticks "$target"); b1=$(sys_busy_ticks); k1=$(storage_ticks); st1=$(steal_ticks); t1=$(date +%s.%N)
  [[ $s == volgate-nbd-memory ]] && u1=$(cpu_ticks "$CHAIN_PID")
  FIO_PID=""
  hwm=$(vm_hwm_kib "$target")
  alive "$target" || anomaly "$s/$w: server died during the workload"
  stop_server "$s"
  read -r io bw iops lat ucpu scpu ferr < <(parse_fio "$json")
  if ((rc != 0)) || [[ $ferr != 0 ]] || [[ $io == 0 ]]; then
    anomaly "$s/$w: fio failed (rc=$rc error=$ferr io_bytes=$io): $(tail -c 400 "$err" | tr '\n' ' ')"
    RES[$s|$w|err]="fio rc=$rc err=$ferr"
    return
  fi
  [[ -s $err ]] && log "$s/$w: fio stderr: $(tail -c 300 "$err" | tr '\n' ' ')"
  RES[$s|$w|mibs]=$(awk -v b="$bw" 'BEGIN{printf "%.1f", b / 1048576}')
  RES[$s|$w|iops]=$(awk -v x="$iops" 'BEGIN{printf "%.0f", x}')
  RES[$s|$w|lat]=$(awk -v x="$lat" 'BEGIN{printf "%.1f", x / 1000}')
  if ((c0 >= 0 && c1 >= 0)); then
    RES[$s|$w|cpug]=$(awk -v d=$((c1 - c0)) -v hz="$CLK_TCK" -v io="$io" \
      'BEGIN{printf "%.3f", (d / hz) / (io / 1073741824)}')
    RES[$s|$w|cpup]=$(awk -v d=$((c1 - c0)) -v hz="$CLK_TCK" -v t0="$t0" -v t1="$t1" \
      'BEGIN{printf "%.0f", 100 * (d / hz) / (t1 - t0)}')
  fi
  RES[$s|$w|fcpu]=$(awk -v u="$ucpu" -v s="$scpu" 'BEGIN{printf "%.0f", u + s}')
  # fio's own CPU-seconds per GiB (its usr+sys % is of one CPU over its measured runtime)
  RES[$s|$w|fiog]=$(awk -v f="${RES[$s|$w|fcpu]}" -v b="$bw" 'BEGIN{printf "%.3f", (f / 100) / (b / 1073741824)}')
  ((u0 >= 0 && u1 >= 0)) && RES[$s|$w|upg]=$(awk -v d=$((u1 - u0)) -v hz="$CLK_TCK" -v io="$io" \
      'BEGIN{printf "%.3f", (d / hz) / (io / 1073741824)}')
  account_other "$s" "$w" $((b1 - b0)) $((k1 - k0)) "$t0" "$t1" $((st1 - st0))
  ((hwm >= 0)) && RES[$s|$w|rss]=$(awk -v k="$hwm" 'BEGIN{printf "%.1f", k / 1024}')
  log "$s/$w: ${RES[$s|$w|mibs]} MiB/s, ${RES[$s|$w|iops]} IOPS, ${RES[$s|$w|cpug]:-?} CPU-s/GiB, peak RSS ${RES[$s|$w|rss]:-?} MiB"
}

# account_other SERVER WORKLOAD BUSY_TICKS STORAGE_TICKS T0 T1 [STEAL_TICKS]: the Ceph daemons' CPU % (with
# --ceph), and whatever else ran on the machine meanwhile: all busy CPU minus the server, fio
# and the storage daemons (Ceph, tgtd), which are part of the setup rather than "other".
account_other() {
  local s=$1 w=$2 busy=$3 storage=$4 t0=$5 t1=$6 steal=${7:-0}
  local storage_pct steal_pct
  storage_pct=$(awk -v d="$storage" -v hz="$CLK_TCK" -v t0="$t0" -v t1="$t1" \
    'BEGIN{printf "%.0f", 100 * (d / hz) / (t1 - t0)}')
  ((need_ceph)) && RES[$s|$w|ceph]=$storage_pct
  RES[$s|$w|other]=$(awk -v d="$busy" -v hz="$CLK_TCK" -v t0="$t0" -v t1="$t1" \
    -v srv="${RES[$s|$w|cpup]:-0}" -v f="${RES[$s|$w|fcpu]:-0}" -v c="$storage_pct" \
    'BEGIN{o = 100 * (d / hz) / (t1 - t0) - srv - f - c; printf "%.0f", (o < 0 ? 0 : o)}')
  steal_pct=$(awk -v d="$steal" -v hz="$CLK_TCK" -v t0="$t0" -v t1="$t1" \
    'BEGIN{printf "%.0f", 100 * (d / hz) / (t1 - t0)}')
  ((RES[$s|$w|other] > 15)) &&
    anomaly "$s/$w: other processes used ${RES[$s|$w|other]} % CPU during the measurement ($steal_pct % of it stolen by the hypervisor); this row is skewed"
}

# CPU ticks of the storage daemons: Ceph's (with --ceph) and tgtd (for the iSCSI rows).
storage_ticks() {
  local total=0 p t
  for p in "${BG_PIDS[@]}" $TGTD_PID; do
    t=$(cpu_ticks "$p")
    ((t > 0)) && total=$((total + t))
  done
  echo "$total"
}

rbd_bench_args() {
  case $1 in
    seq-read)      echo "--io-type read --io-pattern seq --io-size 1M --io-threads 16" ;;
    seq-write)     echo "--io-type write --io-pattern seq --io-size 1M --io-threads 16" ;;
    rand-read)     echo "--io-type read --io-pattern rand --io-size 4K --io-threads 32" ;;
    rand-write)    echo "--io-type write --io-pattern rand --io-size 4K --io-threads 32" ;;
    rand-read-qd1) echo "--io-type read --io-pattern rand --io-size 4K --io-threads 1" ;;
  esac
}

# The same pattern with `rbd bench` (librbd in one process, no NBD): the ceiling of the RBD rows.
# It runs for the ramp plus the runtime and is stopped with SIGINT; the rate is taken from its
# per-second progress lines after the ramp. "srv" CPU here is the rbd process itself.
run_rbd_bench_row() {
  local w=$1 id=$2 out pid c0 c1 b0 b1 st0 st1 k0 k1 t0 t1 threads bs
  out=$WORK/$id.rbdbench
  # shellcheck disable=SC2046
  stdbuf -oL rbd --conf "$CEPH_CONF" --keyring "$CEPH_KEYRING" --id admin bench $(rbd_bench_args "$w") \
    --io-total 1T "$CEPH_POOL/bench" >"$out" 2>&1 </dev/null &
  pid=$!
  RES[rbd-bench|cmd]="rbd bench --io-type/--io-pattern/--io-size/--io-threads as the workload, --io-total 1T, SIGINT after ramp + runtime"
  sleep "$RAMP"
  c0=$(cpu_ticks "$pid"); b0=$(sys_busy_ticks); k0=$(storage_ticks); st0=$(steal_ticks); t0=$(date +%s.%N)
  sleep "$RUNTIME"
  c1=$(cpu_ticks "$pid"); b1=$(sys_busy_ticks); k1=$(storage_ticks); st1=$(steal_ticks); t1=$(date +%s.%N)
  local hwm
  hwm=$(vm_hwm_kib "$pid")
  kill -INT "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  read -r threads bs < <(rbd_bench_args "$w" | awk '{print $8, $6}')
  local rate
  rate=$(awk -v ramp="$RAMP" '
    $1 ~ /^[0-9]+$/ && $2 ~ /^[0-9]+$/ { if ($1 <= ramp) { s0 = $1; o0 = $2 } s1 = $1; o1 = $2 }
    END { if (s1 > s0) printf "%.1f", (o1 - o0) / (s1 - s0) }' "$out")
  if [[ -z $rate ]]; then
    anomaly "rbd-bench/$w: no progress lines ($(tail -c 300 "$out" | tr '\n' ' '))"
    RES[rbd-bench|$w|err]="no result"
    return
  fi
  local bytes=$((1 << 20))
  [[ $bs == 4K ]] && bytes=4096
  RES[rbd-bench|$w|iops]=$(awk -v x="$rate" 'BEGIN{printf "%.0f", x}')
  RES[rbd-bench|$w|mibs]=$(awk -v x="$rate" -v b="$bytes" 'BEGIN{printf "%.1f", x * b / 1048576}')
  RES[rbd-bench|$w|lat]=$(awk -v x="$rate" -v n="$threads" 'BEGIN{printf "%.1f", 1e6 * n / x}')
  RES[rbd-bench|$w|cpug]=$(awk -v d=$((c1 - c0)) -v hz="$CLK_TCK" -v x="$rate" -v b="$bytes" -v t0="$t0" -v t1="$t1" \
    'BEGIN{printf "%.3f", (d / hz) / (x * b * (t1 - t0) / 1073741824)}')
  RES[rbd-bench|$w|cpup]=$(awk -v d=$((c1 - c0)) -v hz="$CLK_TCK" -v t0="$t0" -v t1="$t1" \
    'BEGIN{printf "%.0f", 100 * (d / hz) / (t1 - t0)}')
  account_other rbd-bench "$w" $((b1 - b0)) $((k1 - k0)) "$t0" "$t1" $((st1 - st0))
  ((hwm >= 0)) && RES[rbd-bench|$w|rss]=$(awk -v k="$hwm" 'BEGIN{printf "%.1f", k / 1024}')
  log "rbd-bench/$w: ${RES[rbd-bench|$w|mibs]} MiB/s, ${RES[rbd-bench|$w|iops]} IOPS"
}

# LUKS images: one LUKS1 image made by qemu-img, served by volgate, nbdkit's luks filter and
# qemu-nbd alike, and a LUKS2 image (4096-byte sectors) made by cryptsetup for volgate. Both
# have a payload of SIZE, filled through volgate so every read decrypts real ciphertext.
KEY=$WORK/passphrase
LUKS1_IMG=$WORK/luks1.img
LUKS2_IMG=$WORK/luks2.img
need_luks1=0 need_luks2=0
for s in "${SERVERS[@]}"; do
  case ${s%@base} in
    volgate-luks | volgate-luks-openssl | nbdkit-luks | qemu-nbd-luks) need_luks1=1 ;;
    volgate-luks2 | volgate-luks2-openssl | nbdkit-volgate-luks2) need_luks2=1 ;;
  esac
done
if ((need_luks1 + need_luks2)); then
  [[ -x $VOLGATE ]] || die "the LUKS rows fill their images through volgate: build it first"
  command -v qemu-img >/dev/null || die "qemu-img not found"
  ((need_luks2 == 0)) || command -v cryptsetup >/dev/null || die "cryptsetup not found"
  printf 'bench passphrase' >"$KEY"
  avail=$(df -B1 --output=avail "$SHM" | tail -1)
  ((avail > (1 + need_luks1 + need_luks2) * SIZE + (256 << 20))) || die "not enough space in $SHM for the LUKS images"
fi

prepare_luks() {  # IMAGE: fills the payload through a volgate export
  local img=$1 sock=$WORK/fill.sock pid i
  "$VOLGATE" serve --unix "$sock" --export "fill=file:$img,luks-key-file=$KEY" >/dev/null 2>"$WORK/fill.err" &
  pid=$!
  for ((i = 0; i < 100; i++)); do [[ -S $sock ]] && break; sleep 0.1; done
  fio --name=fill --ioengine=nbd --uri="$(uri "$sock")" --rw=write --bs=1M --iodepth=16 \
      --output=/dev/null >"$WORK/fill.fio" 2>&1 || die "filling $img failed: $(tail -c 300 "$WORK/fill.fio")"
  kill -TERM "$pid"; wait "$pid"
}

# ---------------------------------------------------------------------------
# TLS rows: a CA and a server certificate for this run; the clients (fio's libnbd) trust the CA
# from $HOME/.pki/libnbd, HOME being private to fio.
TLS_DIR=$WORK/tls
need_tls=0
for s in "${SERVERS[@]}"; do [[ " ${TLS_SERVERS[*]} " == *" $s "* ]] && need_tls=1; done
if ((need_tls)); then
  command -v openssl >/dev/null || die "openssl not found"
  mkdir -p "$TLS_DIR" "$WORK/home/.pki/libnbd"
  tls_key="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
  # shellcheck disable=SC2086
  openssl req -x509 $tls_key -keyout "$TLS_DIR/ca-key.pem" -out "$TLS_DIR/ca-cert.pem" -days 2 \
      -subj "/CN=bench CA" 2>"$WORK/tls.err" &&
  openssl req $tls_key -keyout "$TLS_DIR/server-key.pem" -out "$TLS_DIR/server.csr" -subj /CN=localhost \
      2>>"$WORK/tls.err" &&
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$TLS_DIR/server.ext" &&
  openssl x509 -req -in "$TLS_DIR/server.csr" -CA "$TLS_DIR/ca-cert.pem" -CAkey "$TLS_DIR/ca-key.pem" \
      -CAcreateserial -days 2 -extfile "$TLS_DIR/server.ext" -out "$TLS_DIR/server-cert.pem" 2>>"$WORK/tls.err" ||
    die "making the TLS certificates failed: $(cat "$WORK/tls.err")"
  chmod 600 "$TLS_DIR/server-key.pem"
  cp "$TLS_DIR/ca-cert.pem" "$WORK/home/.pki/libnbd/ca-cert.pem"
  FIO_HOME=$WORK/home
fi
fio() { HOME=${FIO_HOME:-$HOME} command fio "$@"; }

if ((need_luks1)); then
  log "LUKS1 image by qemu-img: $LUKS1_IMG ($SIZE_STR payload)"
  # QEMU 7.2's PBKDF timing often measures SHA-256's first round as zero CPU time and gives up
  # ("Unable to get accurate CPU usage"); SHA-512 (the keyslot's hash only) is measurable.
  for attempt in 1 2 3 4 5; do
    qemu-img create -q -f luks --object "secret,id=s0,file=$KEY" \
        -o key-secret=s0,iter-time=100,hash-alg=sha512 "$LUKS1_IMG" "$SIZE" 2>"$WORK/qemu-img.err" && break
    ((attempt < 5)) || die "qemu-img create -f luks failed: $(cat "$WORK/qemu-img.err")"
  done
  prepare_luks "$LUKS1_IMG"
fi
if ((need_luks2)); then
  log "LUKS2 image by cryptsetup: $LUKS2_IMG ($SIZE_STR payload, 4096-byte sectors)"
  truncate -s $((SIZE + (16 << 20))) "$LUKS2_IMG"
  cryptsetup luksFormat -q --type luks2 --sector-size 4096 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
      --key-file "$KEY" "$LUKS2_IMG" || die "cryptsetup luksFormat failed"
  prepare_luks "$LUKS2_IMG"
fi
if ((need_ceph)); then
  # The test suite's cluster helper, with the few lib.sh functions it leans on.
  fail() { die "ceph: $*"; }
  info() { log "$*"; }
  require_tool() { local t; for t in "$@"; do command -v "$t" >/dev/null || die "$t not found (scripts/install-deps.sh)"; done; }
  free_tcp_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
  _proc_running() { alive "$1"; }
  need_disk_tmpdir() { [[ -n $DISK_TMP ]] || DISK_TMP=$(mktemp -d /var/tmp/volgate-bench-ceph.XXXXXX) || die "mktemp failed"; }
  TEST_TMP=$WORK
  # shellcheck source=../tests/integration/ceph_cluster.sh
  . "$ROOT/tests/integration/ceph_cluster.sh"
  command -v stdbuf >/dev/null || die "stdbuf not found (coreutils)"
  log "starting a Ceph cluster ($CEPH_STORE)"
  ceph_start "$CEPH_STORE"
  # volgate-rbd-wt's librbd: writes acknowledged when the OSD has them, sent without a copy.
  CEPH_WT_CONF=$WORK/ceph-write-through.conf
  { cat "$CEPH_CONF"; printf '[client]\nrbd_cache_max_dirty = 0\nrbd_disable_zero_copy_writes = false\n'; } \
    >"$CEPH_WT_CONF" || die "could not write $CEPH_WT_CONF"
  rbd_cmd create --size "$SIZE_STR" "$CEPH_POOL/bench" 2>/dev/null || die "rbd create failed"
  log "RBD image $CEPH_POOL/bench ($SIZE_STR), filling with data"
  rbd_cmd bench --io-type write --io-pattern seq --io-size 4M --io-threads 16 --io-total "$SIZE" \
    "$CEPH_POOL/bench" >"$WORK/rbd-fill.out" 2>&1 || die "filling the RBD image failed: $(tail -c 300 "$WORK/rbd-fill.out")"
fi
log "image: $IMG ($SIZE_STR), filling with data"
if ! fio --name=fill --ioengine=psync --rw=write --bs=1M --size="$SIZE" --filename="$IMG" \
    --output=/dev/null >"$WORK/fill.err" 2>&1; then
  die "could not fill $IMG: $(tail -c 300 "$WORK/fill.err")"
fi
[[ $(stat -c %s "$IMG") == "$SIZE" ]] || die "image has the wrong size"

# iSCSI rows: a private tgtd serving the image as LUN 1 on two loopback portals.
ISCSI_IQN=iqn.2026-01.org.volgate.bench:image
need_tgtd=0
for s in "${SERVERS[@]}"; do [[ $s == *-iscsi* ]] && need_tgtd=1; done
if ((need_tgtd)); then
  TGTD_PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  export TGT_IPC_SOCKET=$WORK/tgtd.ipc
  tgtd -f --iscsi "portal=127.0.0.1:$TGTD_PORT,portal=127.0.0.2:$TGTD_PORT" >"$WORK/tgtd.log" 2>&1 &
  TGTD_PID=$!
  for _ in {1..100}; do tgtadm --lld iscsi --op show --mode sys >/dev/null 2>&1 && break; sleep 0.05; done
  tgtadm --lld iscsi --op new --mode target --tid 1 -T "$ISCSI_IQN" &&
    tgtadm --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$IMG" &&
    tgtadm --lld iscsi --op bind --mode target --tid 1 -I ALL || die "could not set up tgtd: $(tail -c 300 "$WORK/tgtd.log")"
  log "tgtd (pid $TGTD_PID) serves the image on 127.0.0.1:$TGTD_PORT and 127.0.0.2:$TGTD_PORT"
fi

# The chained row's upstream: one nbdkit memory for the whole run, like tgtd (BG_PIDS: killed
# at exit, its CPU counted as the storage's).
CHAIN_SOCK=$WORK/chain-upstream.sock
CHAIN_PID=""  # its CPU is sampled apart for the chain's arithmetic (chain_report)
if [[ " ${SERVERS[*]} " == *" volgate-nbd-memory "* ]]; then
  nbdkit -f -U "$CHAIN_SOCK" memory "$SIZE" >"$WORK/chain-upstream.log" 2>&1 &
  BG_PIDS+=($!)
  CHAIN_PID=$!
  for _ in {1..100}; do [[ -S $CHAIN_SOCK ]] && break; sleep 0.05; done
  [[ -S $CHAIN_SOCK ]] || die "the nbdkit memory upstream did not start: $(tail -c 300 "$WORK/chain-upstream.log")"
  log "nbdkit memory (pid ${BG_PIDS[-1]}) is the upstream of volgate-nbd-memory"
fi

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${LOAD_START%% *}" 'BEGIN{exit !(l > 0.5)}'; then
  log "WARNING: load average is $LOAD_START before the run; other work on this machine will skew the numbers"
fi
RESULT_FIELDS=(mibs iops lat cpug cpup fcpu other rss ceph err)
# Files one run's results of row SERVER|WORKLOAD under round ROUND, and clears the live ones.
keep_run() {
  local key=$1 round=$2 f
  for f in "${RESULT_FIELDS[@]}"; do
    [[ -n ${RES[$key|$f]:-} ]] && RES[$key|run$round|$f]=${RES[$key|$f]}
    unset "RES[$key|$f]"
  done
}
# Puts the median run (by MiB/s; failed runs count as lowest) of row SERVER|WORKLOAD back in
# the live fields, and lists every run's MiB/s in RUNS[key].
declare -A RUNS
pick_median() {
  local key=$1 round f order
  order=$(for ((round = 1; round <= REPEAT; round++)); do
    echo "${RES[$key|run$round|mibs]:--1} $round"
  done | sort -g | awk '{print $2}')
  # shellcheck disable=SC2206
  local sorted=($order)
  local median=${sorted[$(((REPEAT - 1) / 2))]}
  for f in "${RESULT_FIELDS[@]}"; do
    [[ -n ${RES[$key|run$median|$f]:-} ]] && RES[$key|$f]=${RES[$key|run$median|$f]}
  done
  RUNS[$key]=$(for ((round = 1; round <= REPEAT; round++)); do
    echo -n "${RES[$key|run$round|mibs]:-failed}, "
  done | sed 's/, $//')
}

rows=$((${#SERVERS[@]} * ${#WORKLOADS[@]} * REPEAT))
log "$rows rows, about $((rows * (RUNTIME + RAMP + 1))) s plus prefills"
row=0
for ((round = 1; round <= (${#SERVERS[@]} ? REPEAT : 0); round++)); do  # none with --fuse alone
  # Rotate the server order so that no server is always the first after a quiet spell.
  ordered=("${SERVERS[@]:$(((round - 1) % ${#SERVERS[@]}))}" "${SERVERS[@]:0:$(((round - 1) % ${#SERVERS[@]}))}")
  for w in "${WORKLOADS[@]}"; do
    for s in "${ordered[@]}"; do
      row=$((row + 1))
      log "($row/$rows) $s / $w$( ((REPEAT > 1)) && echo " (round $round of $REPEAT)")"
      if [[ $s == rbd-bench ]]; then
        run_rbd_bench_row "$w" "r$row"
      else
        run_row "$s" "$w" "r$row"
        RES[$s|cmd]=$LAST_SERVER_CMD
      fi
      keep_run "$s|$w" "$round"
    done
  done
done
for s in "${SERVERS[@]}"; do
  for w in "${WORKLOADS[@]}"; do pick_median "$s|$w"; done
done
((FUSE_ROWS)) && fuse_rows_run

# ---------------------------------------------------------------------------
ratio() { # a b -> a/b with 2 decimals, or empty
  [[ -n $1 && -n $2 ]] && awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2f", a / b }'
}

faster() {  # WORKLOAD SERVER... -> the server with the highest MiB/s on WORKLOAD, if any ran
  local w=$1 best="" s
  shift
  for s in "$@"; do
    [[ -n ${RES[$s|$w|mibs]:-} ]] || continue
    if [[ -z $best ]] || awk -v a="${RES[$s|$w|mibs]}" -v b="${RES[$best|$w|mibs]}" 'BEGIN{exit !(a > b)}'; then
      best=$s
    fi
  done
  echo "$best"
}

# The chained export's bar in CPU: what a GiB costs each process of the chain (fio, the
# re-exporting volgate = the hop, the upstream nbdkit) against going to the upstream directly
# (fio, nbdkit-memory), and the throughput those costs allow when every core of the machine
# works for the benchmark and nothing else (cores / CPU-seconds per GiB): the ceiling's ratio is
# what the MiB/s ratio can reach here, whatever the hop's latency.
chain_report() {
  local cores w c d up hop fc fd
  cores=$(nproc)
  echo
  echo "### The chain's arithmetic: CPU-seconds per GiB moved, volgate-nbd-memory against nbdkit-memory"
  echo
  echo "- chain = fio + the hop (volgate re-exporting over libnbd) + the upstream nbdkit memory; direct = fio + nbdkit-memory"
  echo "- ceiling = $cores cores / the total (GiB/s, if every core worked for the chain and nothing else); hop budget for 0.8 ="
  echo "  what the hop may cost for the chain's ceiling to be 0.8 of the direct one: total direct / 0.8 - fio - upstream"
  echo
  echo "| workload | MiB/s chain | MiB/s direct | ×direct | fio | hop | upstream | total chain | fio direct | nbdkit direct | total direct | ceiling chain GiB/s | ceiling direct GiB/s | ceilings' ratio | hop ×nbdkit direct | hop budget for 0.8 |"
  echo "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
  for w in "${WORKLOADS[@]}"; do
    c=volgate-nbd-memory d=nbdkit-memory
    hop=${RES[$c|$w|cpug]:-} up=${RES[$c|$w|upg]:-} fc=${RES[$c|$w|fiog]:-} fd=${RES[$d|$w|fiog]:-}
    if [[ -z $hop || -z $up || -z $fc || -z $fd || -z ${RES[$d|$w|cpug]:-} ]]; then
      echo "| $w | (a row is missing) | | | | | | | | | | | | | | |"
      continue
    fi
    awk -v w="$w" -v mc="${RES[$c|$w|mibs]}" -v md="${RES[$d|$w|mibs]}" -v fc="$fc" -v hop="$hop" -v up="$up" \
        -v fd="$fd" -v nd="${RES[$d|$w|cpug]}" -v n="$cores" 'BEGIN{
      tc = fc + hop + up; td = fd + nd
      printf "| %s | %s | %s | %.2f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.2f | %.2f | %.2f | %.2f | %.3f |\n",
        w, mc, md, mc / md, fc, hop, up, tc, fd, nd, td, n / tc, n / td, td / tc, hop / nd, td / 0.8 - fc - up }'
  done
}

report() {
  local cpu mem
  cpu=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
  mem=$(awk '/^MemTotal/{printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
  echo
  echo "## volgate NBD benchmark, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo
  echo "- command: \`$CMDLINE\`"
  echo "- machine: $(nproc) CPUs ($cpu), $mem RAM, kernel $(uname -r), $(sed -n 's/^PRETTY_NAME="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' /etc/os-release 2>/dev/null)"
  echo "- tools: $(fio --version), nbdkit $(nbdkit --version 2>/dev/null | awk '{print $2}'), qemu-nbd $(qemu-nbd --version 2>/dev/null | awk 'NR==1{print $2}')"
  if ((need_volgate)); then
    local rev
    rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "no commit")
    [[ -n $(git -C "$ROOT" status --porcelain 2>/dev/null | head -1) ]] && rev="$rev + uncommitted changes"
    local bt="unknown (no CMakeCache.txt beside the binary)"
    if [[ -f $(dirname "$VOLGATE")/CMakeCache.txt ]]; then
      bt=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$(dirname "$VOLGATE")/CMakeCache.txt")
      bt="CMAKE_BUILD_TYPE=${bt:-<empty, so the project default>}"
    fi
    echo "- volgate: $VOLGATE ($bt; tree: $rev)"
    [[ -n ${BASELINE:-} ]] && echo "- baseline (rows NAME@base): $BASELINE (tree: $(git -C "$(dirname "$BASELINE")" rev-parse --short HEAD 2>/dev/null || echo unknown))"
  fi
  echo "- load average (1/5/15 min): $LOAD_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
  echo "- image: $SIZE_STR file in $SHM filled with data; memory servers prefilled by one untimed 1 MiB sequential write pass"
  echo "- fio: ioengine=nbd over a unix socket, 1 job (1 connection), time_based, runtime ${RUNTIME} s after ${RAMP} s ramp, norandommap"
  ((REPEAT > 1)) && echo "- $REPEAT rounds; each row is its median run by MiB/s (every run is listed under the table)"
  echo "- server commands (socket and image paths vary):"
  for s in "${SERVERS[@]}"; do echo "  - $s: \`${RES[$s|cmd]:-}\`"; done
  echo "- columns: lat = mean total latency; srv CPU s/GiB = server utime+stime over the measured window per GiB moved;"
  echo "  srv CPU % = the same over wall time (200 % = both cores); fio CPU % = fio's usr+sys;"
  echo "  other CPU % = busy CPU of everything else on the machine (should be near 0); peak RSS = server VmHWM;"
  echo "  ×nbdkit = volgate value / nbdkit value on the same backend (MiB/s: higher is better; CPU s/GiB: lower is better)"
  echo "  ×best other LUKS = volgate LUKS MiB/s / the faster of nbdkit-luks and qemu-nbd-luks (same LUKS1 image);"
  echo "  ×volgate-file = volgate LUKS MiB/s / volgate's plaintext file export"
  echo "  nbdkit-volgate-*: ×nbdkit is against nbdkit-file (the plugin on the same image; bar: ≥ 0.90), or"
  echo "  against volgate-luks2 for the plugin's LUKS2 row; ×volgate-file = the plugin / volgate serve on the same image"
  echo
  local w s ref r1 r2 plain=0
  for s in "${SERVERS[@]}"; do is_rbd_row "$s" || plain=1; done
  if ((plain)); then
    echo "| workload | server | MiB/s | IOPS | lat µs | srv CPU s/GiB | srv CPU % | fio CPU % | other CPU % | peak RSS MiB | MiB/s ×nbdkit | CPU/GiB ×nbdkit | MiB/s ×best other LUKS | MiB/s ×volgate-file |"
    echo "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
  fi
  for w in "${WORKLOADS[@]}"; do
    for s in "${SERVERS[@]}"; do
      is_rbd_row "$s" && continue
      if [[ -n ${RES[$s|$w|err]:-} ]]; then
        echo "| $w | $s | ERROR: ${RES[$s|$w|err]} | | | | | | | | | | | |"
        continue
      fi
      r1="" r2="" r3="" r4=""
      case $s in
        volgate-file | volgate-memory | volgate-nbd-memory | volgate-file-metrics)
          ref=nbdkit-${s#volgate-}
          ref=${ref%-metrics}
          ref=${ref/nbdkit-nbd-/nbdkit-}  # the chained export against its upstream, direct
          r1=$(ratio "${RES[$s|$w|mibs]:-}" "${RES[$ref|$w|mibs]:-}")
          r2=$(ratio "${RES[$s|$w|cpug]:-}" "${RES[$ref|$w|cpug]:-}")
          [[ -n $r1 ]] || r1="n/a"
          [[ -n $r2 ]] || r2="n/a"
          # metrics on against off, same image and run
          [[ $s == volgate-file-metrics ]] && r4=$(ratio "${RES[$s|$w|mibs]:-}" "${RES[volgate-file|$w|mibs]:-}")
          ;;
        nbdkit-volgate-file | nbdkit-volgate-luks2)
          # the plugin against nbdkit's file plugin (the bar: within 10 %), and against volgate serve
          ref=nbdkit-file
          [[ $s == nbdkit-volgate-luks2 ]] && ref=volgate-luks2
          r1=$(ratio "${RES[$s|$w|mibs]:-}" "${RES[$ref|$w|mibs]:-}")
          r2=$(ratio "${RES[$s|$w|cpug]:-}" "${RES[$ref|$w|cpug]:-}")
          [[ -n $r1 ]] && r1="$r1 ($ref)" || r1="n/a"
          [[ -n $r2 ]] || r2="n/a"
          [[ $s == nbdkit-volgate-file ]] && r4=$(ratio "${RES[$s|$w|mibs]:-}" "${RES[volgate-file|$w|mibs]:-}")
          ;;
        volgate-file-tls)
          r1=$(ratio "${RES[$s|$w|mibs]:-}" "${RES[nbdkit-file-tls|$w|mibs]:-}")
          r2=$(ratio "${RES[$s|$w|cpug]:-}" "${RES[nbdkit-file-tls|$w|cpug]:-}")
          [[ -n $r1 ]] && r1="$r1 (nbdkit-file-tls)" || r1="n/a"
          [[ -n $r2 ]] || r2="n/a"
          r4=$(ratio "${RES[$s|$w|mibs]:-}" "${RES[volgate-file|$w|mibs]:-}")
          ;;
        volgate-luks | volgate-luks2 | volgate-luks-openssl | volgate-luks2-openssl)
          ref=$(faster "$w" nbdkit-luks qemu-nbd-luks)
          [[ -n $ref ]] && r3="$(ratio "${RES[$s|$w|mibs]:-}" "${RES[$ref|$w|mibs]:-}") (${ref})"
          r4=$(ratio "${RES[$s|$w|mibs]:-}" "${RES[volgate-file|$w|mibs]:-}")
          ;;
      esac
      echo "| $w | $s | ${RES[$s|$w|mibs]} | ${RES[$s|$w|iops]} | ${RES[$s|$w|lat]} | ${RES[$s|$w|cpug]:-?} | ${RES[$s|$w|cpup]:-?} | ${RES[$s|$w|fcpu]} | ${RES[$s|$w|other]:-?} | ${RES[$s|$w|rss]:-?} | $r1 | $r2 | $r3 | $r4 |"
    done
  done
  ((need_ceph)) && rbd_report
  [[ " ${SERVERS[*]} " == *" volgate-nbd-memory "* && " ${SERVERS[*]} " == *" nbdkit-memory "* ]] && chain_report
  ((FUSE_ROWS)) && fuse_rows_report
  if ((REPEAT > 1)); then
    echo
    echo "MiB/s of every run (rounds in order; the table shows the median):"
    for w in "${WORKLOADS[@]}"; do
      for s in "${SERVERS[@]}"; do echo "- $w, $s: ${RUNS[$s|$w]}"; done
    done
  fi
  if ((${#ANOMALIES[@]})); then
    echo
    echo "Problems seen during the run:"
    local a
    for a in "${ANOMALIES[@]}"; do echo "- $a"; done
  fi
}

rbd_report() {
  echo
  echo "### Ceph RBD ($CEPH_STORE OSD, pool size 1, one $SIZE_STR image filled with data by rbd bench)"
  echo
  echo "- Ceph CPU % = ceph-mon + ceph-osd utime+stime over the measured window; for rbd-bench, srv CPU is the rbd process"
  echo "  (librbd + the benchmark loop) and fio CPU is empty; its latency is io-threads / IOPS."
  echo "- ×qemu-nbd-rbd, ×qsd-rbd and ×rbd bench = volgate-rbd MiB/s / theirs on the same workload (and volgate-rbd-wt's:"
  echo "  librbd writing through, without copying writes)"
  echo "- CPU bar = rbd-bench's srv CPU s/GiB + volgate-memory's on the same workload (librbd's own cost plus"
  echo "  the NBD hop; volgate-memory's row must be in --servers); met when volgate-rbd's srv CPU s/GiB is at most that"
  echo
  echo "| workload | server | MiB/s | IOPS | lat µs | srv CPU s/GiB | srv CPU % | fio CPU % | Ceph CPU % | other CPU % | peak RSS MiB | MiB/s ×qemu-nbd-rbd | MiB/s ×qsd-rbd | MiB/s ×rbd bench | CPU bar s/GiB |"
  echo "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
  local w s r1 r2 r3 bar rows=()
  for s in "${RBD_SERVERS[@]}"; do
    [[ " ${SERVERS[*]} " == *" $s "* ]] && rows+=("$s")
    [[ " ${SERVERS[*]} " == *" $s@base "* ]] && rows+=("$s@base")
  done
  for w in "${WORKLOADS[@]}"; do
    for s in "${rows[@]}"; do
      if [[ -n ${RES[$s|$w|err]:-} ]]; then
        echo "| $w | $s | ERROR: ${RES[$s|$w|err]} | | | | | | | | | | | | |"
        continue
      fi
      r1="" r2="" r3="" bar=""
      if [[ ${s%@base} == volgate-rbd* ]]; then
        r1=$(ratio "${RES[$s|$w|mibs]:-}" "${RES[qemu-nbd-rbd|$w|mibs]:-}")
        r2=$(ratio "${RES[$s|$w|mibs]:-}" "${RES[qsd-rbd|$w|mibs]:-}")
        r3=$(ratio "${RES[$s|$w|mibs]:-}" "${RES[rbd-bench|$w|mibs]:-}")
        bar=$(rbd_cpu_bar "$s" "$w")
      fi
      echo "| $w | $s | ${RES[$s|$w|mibs]:-} | ${RES[$s|$w|iops]:-} | ${RES[$s|$w|lat]:-} | ${RES[$s|$w|cpug]:-?} | ${RES[$s|$w|cpup]:-?} | ${RES[$s|$w|fcpu]:-} | ${RES[$s|$w|ceph]:-?} | ${RES[$s|$w|other]:-?} | ${RES[$s|$w|rss]:-?} | $r1 | $r2 | $r3 | $bar |"
    done
  done
}

# rbd_cpu_bar SERVER WORKLOAD -> "BAR met" / "BAR NOT met" (issue 21: librbd's cost, measured
# by rbd bench, plus the NBD hop, measured by volgate-memory), or "n/a" when a row is missing.
rbd_cpu_bar() {
  local lib=${RES[rbd-bench|$2|cpug]:-} hop=${RES[volgate-memory|$2|cpug]:-} own=${RES[$1|$2|cpug]:-}
  if [[ -z $lib || -z $hop || -z $own ]]; then echo "n/a"; return; fi
  awk -v lib="$lib" -v hop="$hop" -v own="$own" \
    'BEGIN{ bar = lib + hop; printf "%.3f %s", bar, (own <= bar ? "met" : "NOT met") }'
}

report_text=$(report)
printf '%s\n' "$report_text"
if [[ -n $OUT ]]; then
  printf '%s\n' "$report_text" >>"$OUT" || die "could not append to $OUT"
  log "table appended to $OUT"
fi
((${#ANOMALIES[@]} == 0))
