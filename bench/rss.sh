#!/usr/bin/env bash
# The gateway's memory, the two bars of its footprint on a hypervisor:
#   exports  peak RSS (VmHWM) of one `volgate serve` with N file exports open (default 100),
#            each read once through NBD so that every export has had a connection
#   soak     a fio run of 4 KiB random writes through one file export for --minutes (default
#            30), a new NBD connection every 10 s (each a fio run of its own); RSS sampled after
#            every connection. Reports RSS after the first minute, the last, the highest, and
#            the growth from the first minute to the end (bar: under 10 %).
#   bench/rss.sh [--mode exports|soak|both] [--exports N] [--minutes M] [--rate-iops N]
#                [--encrypted] [--volgate PATH]
# --rate-iops caps fio (default: none); RSS, not speed, is measured, so a cap keeps a long soak
# from starving other work on the machine without changing what it measures. --encrypted makes
# every export LUKS2 (4096-byte sectors).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CMDLINE="$0 $*"
MODE=both EXPORTS=100 MINUTES=30 RATE= ENCRYPTED=0 VOLGATE=$ROOT/build/volgate
while (($#)); do
  case "$1" in
    --mode) MODE=$2; shift 2 ;;
    --exports) EXPORTS=$2; shift 2 ;;
    --minutes) MINUTES=$2; shift 2 ;;
    --rate-iops) RATE=$2; shift 2 ;;
    --encrypted) ENCRYPTED=1; shift ;;
    --volgate) VOLGATE=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "rss: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$MODE" in exports|soak|both) ;; *) echo "rss: --mode exports|soak|both" >&2; exit 2 ;; esac
[[ $EXPORTS =~ ^[0-9]+$ && $EXPORTS -ge 1 ]] || { echo "rss: --exports N (N >= 1)" >&2; exit 2; }
[[ $MINUTES =~ ^[0-9]+$ && $MINUTES -ge 2 ]] || { echo "rss: --minutes M (M >= 2)" >&2; exit 2; }
[[ -x $VOLGATE ]] || { echo "rss: no $VOLGATE (build it, or --volgate PATH)" >&2; exit 2; }
for tool in fio nbdinfo cryptsetup; do
  command -v "$tool" >/dev/null || { echo "rss: $tool not found" >&2; exit 2; }
done

T=$(mktemp -d /dev/shm/volgate-rss.XXXXXX)
PID=
cleanup() {
  [[ -n $PID ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT
printf 'rss bench passphrase' >"$T/key"
chmod 600 "$T/key"

rss_kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }
# image FILE SIZE: a file, LUKS2-formatted with --encrypted
image() {
  truncate -s "$2" "$1"
  if ((ENCRYPTED)); then
    cryptsetup luksFormat -q --type luks2 --sector-size 4096 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
      --key-file "$T/key" "$1"
  fi
}
spec() {  # spec NAME FILE: the --export of FILE
  local s="$1=file:$2"
  ((ENCRYPTED)) && s+=",luks-key-file=$T/key"
  echo "$s"
}
serve() {  # serve ARGS...: starts volgate serve on $T/s.sock, waits for the socket
  "$VOLGATE" serve --unix "$T/s.sock" "$@" >"$T/serve.out" 2>"$T/serve.err" &
  PID=$!
  for _ in $(seq 600); do [[ -S $T/s.sock ]] && return 0; sleep 0.05; done
  echo "rss: volgate serve did not start: $(tail -n 3 "$T/serve.err")" >&2
  exit 1
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=; rm -f "$T/s.sock"; }

echo "## volgate memory, $(date -u '+%Y-%m-%d %H:%M:%S') UTC"
echo
echo "- command: \`$CMDLINE\`"
echo "- machine: $(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), $(free -g | awk '/^Mem:/{print $2}') GiB RAM"
echo "- volgate: $VOLGATE ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))"
echo "- exports: $( ((ENCRYPTED)) && echo 'LUKS2 (4096-byte sectors) on files' || echo 'plain files') in /dev/shm"
echo

if [[ $MODE != soak ]]; then
  args=()
  for ((i = 0; i < EXPORTS; i++)); do
    image "$T/e$i.img" 64M
    args+=(--export "$(spec "e$i" "$T/e$i.img")")
  done
  serve "${args[@]}"
  idle=$(rss_kib "$PID" VmRSS)
  for ((i = 0; i < EXPORTS; i++)); do
    nbdinfo --size "nbd+unix:///e$i?socket=$T/s.sock" >/dev/null
  done
  echo "- $EXPORTS exports: RSS $((idle / 1024)) MiB once started, peak (VmHWM) $(($(rss_kib "$PID" VmHWM) / 1024)) MiB after a connection to each (bar: under 100 MiB)"
  stop
  rm -f "$T"/e*.img
fi

if [[ $MODE != exports ]]; then
  image "$T/soak.img" 1G
  serve --export "$(spec soak "$T/soak.img")"
  rounds=$((MINUTES * 6))
  samples=()
  for ((r = 0; r < rounds; r++)); do
    fio --name=soak --ioengine=nbd --uri="nbd+unix:///soak?socket=$T/s.sock" --rw=randwrite --bs=4k \
      --iodepth=32 --time_based --runtime=10 --norandommap ${RATE:+--rate_iops=$RATE} \
      --output-format=terse >/dev/null 2>"$T/fio.err" || { echo "rss: fio failed: $(tail -n 3 "$T/fio.err")" >&2; exit 1; }
    samples+=("$(rss_kib "$PID" VmRSS)")
  done
  first=${samples[5]}  # after the first minute: buffers and caches have reached their size
  last=${samples[-1]}
  max=$(printf '%s\n' "${samples[@]}" | sort -n | tail -n 1)
  growth=$(awk -v a="$first" -v b="$last" 'BEGIN { printf "%.1f", (b - a) * 100 / a }')
  echo "- soak: $MINUTES min of 4 KiB random writes at depth 32${RATE:+ (capped at $RATE IOPS)}, $rounds connections of 10 s:"
  echo "  RSS after minute 1 $((first / 1024)) MiB, at the end $((last / 1024)) MiB, highest $((max / 1024)) MiB, peak (VmHWM) $(($(rss_kib "$PID" VmHWM) / 1024)) MiB;"
  echo "  growth from minute 1 to the end: $growth % (bar: under 10 %)"
  echo "- RSS after each minute (MiB): $(for ((r = 5; r < rounds; r += 6)); do printf '%s ' $((samples[r] / 1024)); done)"
  stop
fi
