#!/usr/bin/env bash
# How long a live hand-over (volgate gateway restart) makes a client wait, per kind of export:
# each run is one fio job (nbd engine, one connection, 4 KiB random reads and writes at depth 32,
# time-based) with one hand-over in its middle; fio's largest completion latency in that run is
# the longest any request waited. Runs without a hand-over give the same figure with nothing
# happening, for comparison. Prints one markdown table: p50 and max over the runs of that
# largest latency, with and without hand-overs, and the pause the gateway itself logged.
#
#   bench/handover_pause.sh [--runs N] [--volgate PATH] [--out FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

RUNS=20
VOLGATE=$REPO/build/volgate
OUT=
while (($#)); do
  case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --volgate) VOLGATE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h | --help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
for tool in fio cryptsetup tgtd tgtadm curl; do command -v "$tool" >/dev/null || { echo "$tool not found" >&2; exit 2; }; done
[[ -x $VOLGATE ]] || { echo "no volgate at $VOLGATE" >&2; exit 2; }

WORK=$(mktemp -d /dev/shm/volgate-handover.XXXXXX)
# The volumes on a disk filesystem, as on a hypervisor: the page cache fills with dirty data.
DISK=$(mktemp -d /var/tmp/volgate-handover.XXXXXX)
TGTD_PID=
cleanup() {
  pkill -KILL -f -- "serve --take-over $WORK/" 2>/dev/null || true
  pkill -KILL -f -- "serve --unix $WORK/" 2>/dev/null || true
  [[ -n $TGTD_PID ]] && kill -KILL "$TGTD_PID" 2>/dev/null
  rm -rf "$WORK" "$DISK"
}
trap cleanup EXIT
log() { echo "[$(date +%T)] $*" >&2; }

truncate -s 1G "$DISK/plain.img"
truncate -s 1G "$DISK/luks.img"
truncate -s 1G "$DISK/lun.img"
head -c 32 /dev/urandom >"$WORK/key"
cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$WORK/key" "$DISK/luks.img"
TGTD_PORT=$((20000 + RANDOM % 20000))
export TGT_IPC_SOCKET=$WORK/tgtd.ipc
tgtd -f --iscsi "portal=127.0.0.1:$TGTD_PORT,portal=127.0.0.2:$TGTD_PORT" >"$WORK/tgtd.log" 2>&1 &
TGTD_PID=$!
for _ in {1..100}; do tgtadm --lld iscsi --op show --mode sys >/dev/null 2>&1 && break; sleep 0.05; done
IQN=iqn.2026-01.org.volgate.bench:handover
tgtadm --lld iscsi --op new --mode target --tid 1 -T "$IQN"
tgtadm --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$DISK/lun.img"
tgtadm --lld iscsi --op bind --mode target --tid 1 -I ALL

CTL=$WORK/ctl.sock
SOCK=$WORK/nbd.sock
"$VOLGATE" serve --unix "$SOCK" --control "$CTL" \
  --export "plain=file:$DISK/plain.img" \
  --export "luks=file:$DISK/luks.img,luks-key-file=$WORK/key" \
  --export "lun=iscsi://127.0.0.1:$TGTD_PORT,127.0.0.2:$TGTD_PORT/$IQN/1" >"$WORK/serve.out" 2>"$WORK/gateway.log" &
for _ in {1..200}; do [[ -S $CTL ]] && break; sleep 0.05; done

# one_run EXPORT HANDOVER(0|1): prints fio's largest completion latency in µs
one_run() {
  local json=$WORK/fio.json
  fio --name=r --ioengine=nbd --uri="nbd+unix:///$1?socket=$SOCK" --rw=randrw --bs=4k --iodepth=32 \
    --size=1G --norandommap --time_based --runtime=1.6 --output-format=json --output="$json" >/dev/null 2>&1 &
  local fio=$!
  if (($2)); then
    sleep 0.8
    "$VOLGATE" gateway restart --control "$CTL" --log "$WORK/gateway.log" >/dev/null ||
      { echo "hand-over failed: $(tail -n 3 "$WORK/gateway.log")" >&2; exit 1; }
  fi
  wait "$fio" || { echo "fio failed on $1" >&2; exit 1; }
  python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
if j["error"] or j["read"].get("total_err", 0) or j["write"].get("total_err", 0): sys.exit("fio saw errors")
print(max(j["read"]["clat_ns"]["max"], j["write"]["clat_ns"]["max"]) // 1000)' "$json"
}

# p50_max VALUES...: "p50 / max"
p50_max() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {printf "%d / %d", v[int((NR+1)/2)], v[NR]}'; }

rows=()
for export in plain luks lun; do
  base=() with=()
  log "$export: $RUNS runs without a hand-over, $RUNS with one"
  for ((i = 0; i < RUNS; i++)); do base+=("$(one_run "$export" 0)"); done
  before=$(grep -c "after a pause of" "$WORK/gateway.log" || true)
  for ((i = 0; i < RUNS; i++)); do with+=("$(one_run "$export" 1)"); done
  mapfile -t pauses < <(grep -o "after a pause of [0-9]* ms" "$WORK/gateway.log" | tail -n +$((before + 1)) | awk '{print $5}')
  rows+=("| $export | $(p50_max "${base[@]}") | $(p50_max "${with[@]}") | $(p50_max "${pauses[@]}") |")
done

{
  echo "## volgate hand-over pause, $(date -u '+%Y-%m-%d %H:%M:%S') UTC"
  echo
  echo "- command: \`bench/handover_pause.sh --runs $RUNS\`"
  echo "- machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), kernel $(uname -r)"
  echo "- volgate: $VOLGATE (tree: $(git -C "$REPO" rev-parse --short HEAD))"
  echo "- each run: fio nbd engine, one connection, 4 KiB randrw at depth 32 for 1.6 s; the hand-over"
  echo "  (\`volgate gateway restart\`) starts 0.8 s in. Largest request latency of a run, in µs, p50 / max over $RUNS runs;"
  echo "  pause = what the old gateway logged (stop accepting to commit), in ms. Volumes in files on a disk filesystem"
  echo "  (/var/tmp); lun = iSCSI, two portals on one tgtd serving a file there."
  echo
  echo "| export | largest latency, no hand-over (µs) | largest latency, one hand-over (µs) | pause logged (ms) |"
  echo "|---|--:|--:|--:|"
  printf '%s\n' "${rows[@]}"
} | tee ${OUT:+-a "$OUT"}
