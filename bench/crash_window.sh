#!/usr/bin/env bash
# The crash window: from SIGKILL of the gateway to the first successful read on a new NBD
# connection to a volume it served, over N kills, under one of two supervisors:
#   controller    `volgate controller --gateway`: the controller starts its own gateway again
#   restart-loop  the gateway's ExecStart in a loop as systemd's Restart=always runs it (RestartSec
#                 from packaging/systemd/volgate-gateway.service), beside a controller that only
#                 watches it (no --gateway)
# Either way the controller serves the attached volume again once the new gateway answers.
#   bench/crash_window.sh [--mode controller|restart-loop|both] [--kills N] [--encrypted]
#                         [--volgate PATH]
# Prints min, p50 and max per mode, and every window. Between kills it waits until the last
# gateway has run 2.5 s: the controller does not start gateways more often than every 2 s (a
# gateway that dies at once is not restarted in a tight loop), which is not the window measured;
# then up to 1 s more at random, so that kills fall at any phase of the controller's checks.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CMDLINE="$0 $*"
MODE=both KILLS=20 ENCRYPTED=0 VOLGATE=$ROOT/build/volgate
while (($#)); do
  case "$1" in
    --mode) MODE=$2; shift 2 ;;
    --kills) KILLS=$2; shift 2 ;;
    --encrypted) ENCRYPTED=1; shift ;;
    --volgate) VOLGATE=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "crash_window: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$MODE" in controller|restart-loop) MODES=("$MODE") ;; both) MODES=(controller restart-loop) ;;
  *) echo "crash_window: --mode controller|restart-loop|both" >&2; exit 2 ;; esac
[[ -x $VOLGATE ]] || { echo "crash_window: no $VOLGATE (build it, or --volgate PATH)" >&2; exit 2; }
RESTART_SEC=$(sed -n 's/^RestartSec=//p' "$ROOT/packaging/systemd/volgate-gateway.service" | tail -n 1)
RESTART_SEC=$(awk -v d="${RESTART_SEC:-100ms}" 'BEGIN { if (d ~ /ms$/) print d / 1000; else print d + 0 }')

T=$(mktemp -d /dev/shm/volgate-crash.XXXXXX)
GROUPS_STARTED=()
cleanup() {
  local g
  for g in "${GROUPS_STARTED[@]}"; do kill -TERM -- "-$g" 2>/dev/null || true; done
  sleep 0.5
  for g in "${GROUPS_STARTED[@]}"; do kill -KILL -- "-$g" 2>/dev/null || true; done
  # A gateway the controller started runs in a session of its own: by its pid.
  [[ -s $T/last_gateway ]] && kill -KILL "$(cat "$T/last_gateway")" 2>/dev/null || true
  local s pid
  for s in "$T"/*/run/gateway.sock; do
    pid=$(curl -s --max-time 2 --unix-socket "$s" http://gw/v1/health 2>/dev/null |
          python3 -c 'import json, sys; print(json.load(sys.stdin)["pid"])' 2>/dev/null) || continue
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$T"
}
trap cleanup EXIT

echo "## crash window, $(date -u '+%Y-%m-%d %H:%M:%S') UTC"
echo
echo "- command: \`$CMDLINE\`"
echo "- volgate: $VOLGATE (tree: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown))"
echo "- machine: $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg) at the start"
echo "- volume: 1 GiB file pool volume$( ((ENCRYPTED)) && echo ', encrypted (LUKS2)'), attached through the controller's attachment API"
echo "- window: SIGKILL of the gateway to the first successful 4 KiB read on a new libnbd connection (tried every 5 ms)"
echo

run_mode() {
  local mode=$1
  local state=$T/$mode
  mkdir -p "$state"
  local start=false
  cat >"$state.json" <<JSON
{"state_dir": "$state", "libvirt_uri": "none",
 "gateway": {"control_socket": "$state/run/gateway.sock", "nbd_socket": "$state/run/nbd.sock", "socket_group": ""}}
JSON
  mkdir -p "$state/run"
  if [[ $mode == restart-loop ]]; then
    setsid bash -c 'while :; do "$0" serve --control "$1/run/gateway.sock" --unix "$1/run/nbd.sock" 2>>"$1/gateway.log"; sleep "$2"; done' \
      "$VOLGATE" "$state" "$RESTART_SEC" >/dev/null 2>&1 &
    GROUPS_STARTED+=("$!")
    setsid "$VOLGATE" controller --config "$state.json" >"$state/controller.log" 2>&1 &
  else
    setsid "$VOLGATE" controller --config "$state.json" --gateway >"$state/controller.log" 2>&1 &
  fi
  GROUPS_STARTED+=("$!")
  local i
  for ((i = 0; i < 200; i++)); do [[ -s $state/token && -S $state/controller.sock ]] && break; sleep 0.05; done
  export VOLGATE_URL=unix:$state/controller.sock
  local vol
  vol=$("$VOLGATE" volume create --size 1 $( ((ENCRYPTED)) && echo --encrypted) --output json crash |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["volume"]["id"])')
  for ((i = 0; i < 200; i++)); do
    "$VOLGATE" volume show --output json "$vol" | grep -q '"status": "available"' && break
    sleep 0.05
  done
  for ((i = 0; i < 200; i++)); do
    curl -s --max-time 1 --unix-socket "$state/run/gateway.sock" http://gw/v1/health >/dev/null 2>&1 && break
    sleep 0.05
  done
  "$VOLGATE" attachment create --host "$(hostname)" "$vol" >/dev/null
  WINDOWS_FILE=$T/windows /usr/bin/python3 - "$mode" "$state/run/gateway.sock" "nbd+unix:///volume-$vol?socket=$state/run/nbd.sock" "$KILLS" \
      "$T/last_gateway" <<'PY'
import json, os, random, signal, socket, statistics, sys, time
import nbd

mode, control, uri, kills, last_file = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]

def gateway_pid():
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(2)
    s.connect(control)
    s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    return json.loads(data.split(b"\r\n\r\n", 1)[1])["pid"]

def read_once():
    h = nbd.NBD()
    try:
        h.connect_uri(uri)
        h.pread(4096, 0)
        return True
    except nbd.Error:
        return False
    finally:
        del h  # closes the connection

windows = []
started = time.monotonic()  # when the current gateway started (about)
for k in range(kills):
    deadline = time.monotonic() + 30
    while not read_once():
        if time.monotonic() > deadline: sys.exit("the volume is not served (before kill %d)" % k)
        time.sleep(0.05)
    pid = gateway_pid()
    open(last_file, "w").write(str(pid))
    # Plus up to a second at random: kills at a fixed period would meet the controller's
    # periodic check always at the same phase.
    time.sleep(max(0.0, 2.5 - (time.monotonic() - started)) + random.uniform(0, 1.0))
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    while not read_once():
        if time.monotonic() - t0 > 30: sys.exit("the volume was not served again within 30 s of kill %d" % k)
        time.sleep(0.005)
    windows.append((time.monotonic() - t0) * 1000)
    started = t0
ms = sorted(windows)
print("| %-12s | %5d | %7.0f | %7.0f | %7.0f |" % (mode, len(ms), ms[0], statistics.median(ms), ms[-1]))
with open(os.environ["WINDOWS_FILE"], "a") as f:
    f.write("- %s, every window in ms: %s\n" % (mode, " ".join("%.0f" % w for w in windows)))
PY
  # The gateway running now (a controller's runs in a session of its own).
  curl -s --max-time 2 --unix-socket "$state/run/gateway.sock" http://gw/v1/health |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["pid"])' >"$T/last_gateway" 2>/dev/null || true
  for g in "${GROUPS_STARTED[@]}"; do kill -TERM -- "-$g" 2>/dev/null || true; done
  sleep 0.5
  for g in "${GROUPS_STARTED[@]}"; do kill -KILL -- "-$g" 2>/dev/null || true; done
  GROUPS_STARTED=()
  [[ -s $T/last_gateway ]] && kill -KILL "$(cat "$T/last_gateway")" 2>/dev/null || true
  rm -f "$T/last_gateway"
}

echo "| supervisor   | kills | min ms  | p50 ms  | max ms  |"
echo "|--------------|-------|---------|---------|---------|"
for m in "${MODES[@]}"; do run_mode "$m"; done
echo
cat "$T/windows"
echo "- restart-loop: RestartSec=$RESTART_SEC s (the unit's); load $(cut -d' ' -f1-3 /proc/loadavg) at the end"
