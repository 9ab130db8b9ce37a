#!/usr/bin/env bash
# Backup of an RBD volume (issue 24): a full backup of a volume with every other 4 MiB object
# written (50 % data: half text, half random), then 4 KiB written into 1 % of its objects and an
# incremental, which reads only what rbd_diff_iterate2 reports changed; twice. Needs what the
# integration tests need (a throwaway one-node Ceph on memstore, python3-rbd).
#   bench/backup_rbd.sh [SIZE_GB, default 4]   (VOLGATE=path/to/volgate to choose the binary)
# Prints one line per run: time, bytes read and stored of each, and the incremental's stored
# bytes and time as fractions of the full's (the issue's bars: under 2 % and under 1/5).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export VOLGATE=${VOLGATE:-$ROOT/build/volgate}
SIZE_GB=${1:-4}
. "$ROOT/tests/integration/lib.sh"
. "$ROOT/tests/integration/ceph_cluster.sh"
require_volgate
T=$TEST_TMP; STATE=$T/state; SOCK=$STATE/controller.sock; PORT=$(free_tcp_port); URL=http://127.0.0.1:$PORT
CEPH_POOL=vols
ceph_start memstore
cat >"$T/c.json" <<JSON
{"state_dir": "$STATE", "tcp_listen": "127.0.0.1:$PORT", "libvirt_uri": "none",
 "backups": {"directory": "$T/repo"},
 "pools": [{"name": "ceph", "driver": "rbd", "rbd_pool": "$CEPH_POOL", "ceph_conf": "$CEPH_CONF", "ceph_keyring": "$CEPH_KEYRING", "total_capacity_gb": 100}]}
JSON
start_controller "$T/c.json" "$SOCK" '^http://'
export OS_TOKEN=$(cat "$STATE/token") CEPH_CONF CEPH_KEYRING CEPH_POOL CTL_LOG=${VG_LOG_OF[$CTL_PID]} SIZE_GB
"$SYSPY" - "$URL/v3/demo" <<'PY'
import os, random, re, sys, time
import rados, rbd
from keystoneauth1 import session
from keystoneauth1.token_endpoint import Token
from cinderclient import client
c = client.Client("3.53", session=session.Session(auth=Token(sys.argv[1], os.environ["OS_TOKEN"])))
cl = rados.Rados(conffile=os.environ["CEPH_CONF"], conf={"keyring": os.environ["CEPH_KEYRING"]}); cl.connect()
io = cl.open_ioctx(os.environ["CEPH_POOL"])
CH = 4 << 20
GB = int(os.environ["SIZE_GB"])
OBJECTS = GB * 256
v = c.volumes.create(GB)
while c.volumes.get(v.id).status != "available": time.sleep(0.05)
text = (b"the quick brown fox jumps over the lazy dog %d\n" * 100000)
rng = random.Random(1)
with rbd.Image(io, "volume-" + v.id) as img:
    for i in range(0, OBJECTS, 2):  # every other object: 50 % data, half text, half random
        data = rng.randbytes(CH) if (i // 2) % 2 else (text * 2)[:CH]
        img.write(data, i * CH)
def backup(inc):
    t = time.time()
    b = c.backups.create(v.id, incremental=inc)
    while c.backups.get(b.id).status != "available": time.sleep(0.02)  # polling: ~20 ms of the time
    el = time.time() - t
    for line in open(os.environ["CTL_LOG"]):
        m = re.search(r"backup %s of volume \S+: read (\d+) bytes, (\d+) chunks with data \((\d+) unchanged since backup (\S+), unread\), stored (\d+)" % b.id, line)
        if m: return el, int(m[1]), int(m[3]), int(m[5])
for run in range(2):
    full = backup(False)
    with rbd.Image(io, "volume-" + v.id) as img:
        for o in random.Random(run + 7).sample(range(OBJECTS), max(1, OBJECTS // 100)):  # 1 % of the objects
            img.write(rng.randbytes(4096), o * CH + 8192)
    inc = backup(True)
    print("run %d: full %.2f s read %d MiB stored %.1f MiB | incremental %.2f s read %d MiB (%d chunks unread) stored %.2f MiB | stored %.2f %% of full, time %.2f of full" % (
        run, full[0], full[1] >> 20, full[3] / 2**20, inc[0], inc[1] >> 20, inc[2], inc[3] / 2**20, 100.0 * inc[3] / full[3] if full[3] else 0, inc[0] / full[0]))
PY
