#!/usr/bin/env bash
# Backup throughput of `volgate controller` (issue 24): a full backup of a volume half full of
# data, then incrementals after part of it changed, and a restore, through the REST API on a
# file pool whose files and repository are on a disk filesystem. Prints a Markdown section for
# bench/RESULTS.md.
#   bench/backup.sh [--size-gb 4] [--dir /var/tmp] [--volgate PATH] [--zstd-level 1]
# Rows:
#   full           every data chunk new: MiB/s of the volume read (holes are skipped, not read),
#                  MiB/s of data read, MiB/s written to the repository, stored bytes
#   incr-1%-chunks 4 KiB written into 1 % of the volume's 4 MiB blocks (the chunk size), chosen
#                  at random among all of them (holes included)
#   incr-1%-4k     1 % of its 4 KiB blocks rewritten at random places: most chunks change, which
#                  is what fixed 4 MiB chunks cost against small scattered writes
#   restore        the last backup into a new volume
# Half of the data compresses (text), half does not (random bytes), chunk by chunk.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CMDLINE="$0 $*"
SIZE_GB=4
DIR=/var/tmp
VOLGATE=$ROOT/build/volgate
ZSTD_LEVEL=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --size-gb) SIZE_GB=$2; shift 2 ;;
    --dir) DIR=$2; shift 2 ;;
    --volgate) VOLGATE=$2; shift 2 ;;
    --zstd-level) ZSTD_LEVEL=$2; shift 2 ;;
    -h|--help) sed -n 2,16p "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
SYSPY=/usr/bin/python3
WORK=$(mktemp -d "$DIR/volgate-backup-bench.XXXXXX")
CTL_PID=
cleanup() {
  [[ -n $CTL_PID ]] && kill "$CTL_PID" 2>/dev/null && wait "$CTL_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$($SYSPY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$WORK/controller.json" <<JSON
{
  "state_dir": "$WORK/state",
  "tcp_listen": "127.0.0.1:$PORT",
  "libvirt_uri": "none",
  "quotas": {"gigabytes": 1000, "backup_gigabytes": 1000},
  "backups": {"directory": "$WORK/repo", "zstd_level": $ZSTD_LEVEL},
  "pools": [{"name": "disk", "driver": "file", "directory": "$WORK/pool"}]
}
JSON
"$VOLGATE" controller --config "$WORK/controller.json" >"$WORK/controller.out" 2>"$WORK/controller.err" &
CTL_PID=$!
for ((i = 0; i < 200; i++)); do grep -q '^http://' "$WORK/controller.out" 2>/dev/null && break; sleep 0.05; done
grep -q '^http://' "$WORK/controller.out" || { echo "controller did not start: $(cat "$WORK/controller.err")" >&2; exit 1; }

"$SYSPY" - "http://127.0.0.1:$PORT/v3/bench" "$WORK" "$SIZE_GB" "$VOLGATE" "$CMDLINE" <<'PY'
import json, os, random, subprocess, sys, time, urllib.request

url, work, size_gb, volgate, cmdline = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
token = open(work + "/state/token").read().strip()
CHUNK = 4 << 20
MiB = 1 << 20

def call(method, path, body=None):
    req = urllib.request.Request(url + path, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"X-Auth-Token": token, "Content-Type": "application/json",
                                          "OpenStack-API-Version": "volume 3.53"})
    with urllib.request.urlopen(req) as r:
        text = r.read()
        return json.loads(text) if text else {}

def wait(path, key, want):
    while True:
        obj = next(iter(call("GET", path).values()))
        if obj["status"] == want:
            return obj
        assert not obj["status"].startswith("error"), obj
        time.sleep(0.02)

vol = call("POST", "/volumes", {"volume": {"size": size_gb, "name": "bench"}})["volume"]["id"]
wait("/volumes/" + vol, "status", "available")
path = "%s/pool/volume-%s.img" % (work, vol)
size = size_gb << 30
chunks = size // CHUNK
rng = random.Random(1)
line = b"volgate backup benchmark: a line of text that compresses like logs do, number %08d\n"
data_chunks = sorted(rng.sample(range(chunks), chunks // 2))  # 50 % of the volume holds data
fd = os.open(path, os.O_WRONLY)
for n, c in enumerate(data_chunks):
    if n % 2:
        payload = os.urandom(CHUNK)
    else:
        text = b"".join(line % (c * 100000 + i) for i in range(CHUNK // 80 + 1))
        payload = text[:CHUNK]
    os.pwrite(fd, payload, c * CHUNK)
os.fsync(fd)
os.close(fd)
data_bytes = len(data_chunks) * CHUNK
subprocess.run(["sync"], check=True)

def drop_caches():
    # Cold reads, as a backup of a volume nobody read lately sees them.
    subprocess.run(["sync"], check=True)
    try:
        open("/proc/sys/vm/drop_caches", "w").write("3\n")
        return True
    except OSError:
        return False

rows = []
def backup(name, incremental):
    cold = drop_caches()
    t0 = time.monotonic()
    b = call("POST", "/backups", {"backup": {"volume_id": vol, "incremental": incremental, "name": name}})["backup"]["id"]
    obj = wait("/backups/" + b, "status", "available")
    seconds = time.monotonic() - t0
    stored = obj["volgate:stored_bytes"]
    rows.append((name, seconds, size / MiB / seconds, data_bytes / MiB / seconds, stored / MiB / seconds, stored,
                 obj["object_count"], cold))
    return b, seconds, stored

full_id, full_s, full_stored = backup("full", False)

fd = os.open(path, os.O_WRONLY)
for c in rng.sample(range(chunks), max(1, chunks // 100)):  # 1 % of the 4 MiB blocks, anywhere
    os.pwrite(fd, os.urandom(4096), c * CHUNK + rng.randrange(0, CHUNK // 4096) * 4096)
os.fsync(fd)
os.close(fd)
inc1_id, inc1_s, inc1_stored = backup("incr-1%-chunks", True)

fd = os.open(path, os.O_WRONLY)
blocks = size // 4096
for blk in rng.sample(range(blocks), blocks // 100):  # 1 % of the 4 KiB blocks, anywhere
    os.pwrite(fd, os.urandom(4096), blk * 4096)
os.fsync(fd)
os.close(fd)
inc2_id, inc2_s, inc2_stored = backup("incr-1%-4k", True)

cold = drop_caches()
t0 = time.monotonic()
target = call("POST", "/backups/%s/restore" % inc1_id, {"restore": {"name": "restored"}})["restore"]["volume_id"]
wait("/volumes/" + target, "status", "available")
wait("/backups/" + inc1_id, "status", "available")
restore_s = time.monotonic() - t0

tree = subprocess.run(["git", "-C", os.path.dirname(os.path.dirname(os.path.abspath(volgate))), "rev-parse", "--short",
                       "HEAD"], capture_output=True, text=True).stdout.strip() or "?"
cpu = "?"
for l in open("/proc/cpuinfo"):
    if l.startswith("model name"):
        cpu = l.split(":", 1)[1].strip()
        break
print("## volgate backup throughput, %s UTC\n" % time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()))
print("- command: `%s`" % cmdline.strip())
print("- volgate: %s (tree: %s)" % (volgate, tree))
print("- machine: %d CPUs (%s), load %s at the end" % (os.cpu_count(), cpu, open("/proc/loadavg").read().split()[:3]))
print("- volume: %d GiB file volume, %d of its %d chunks (4 MiB) hold data (%.0f MiB; half text, half random);"
      " pool and repository on %s; caches dropped before each row: %s" %
      (size_gb, len(data_chunks), chunks, data_bytes / MiB, work, "yes" if cold else "no (not root)"))
print()
print("| row | seconds | volume MiB/s | data MiB/s read | MiB/s stored | stored MiB | chunks |")
print("|---|--:|--:|--:|--:|--:|--:|")
for name, s, vol_rate, data_rate, stored_rate, stored, count, _ in rows:
    print("| %s | %.2f | %.0f | %.0f | %.1f | %.1f | %d |" % (name, s, vol_rate, data_rate, stored_rate, stored / MiB, count))
print("| restore (incr-1%%-chunks, new volume) | %.2f | %.0f | %.0f | | | |" %
      (restore_s, size / MiB / restore_s, data_bytes / MiB / restore_s))
print()
print("- incr-1%%-chunks against full: stored %.2f %% of the bytes (bar < 2 %%), took %.2f of the time (bar < 0.20)"
      % (100.0 * inc1_stored / full_stored, inc1_s / full_s))
print("- incr-1%%-4k against full: stored %.1f %% of the bytes, took %.2f of the time"
      % (100.0 * inc2_stored / full_stored, inc2_s / full_s))
PY
