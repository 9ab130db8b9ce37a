#!/usr/bin/python3
"""Attach latency and the gateway's footprint, on the controller's embedded default.

    bench/attach_latency.py [--volgate build/volgate] [--cycles 50] [--exports 100]

Starts `volgate controller --gateway` in a scratch state directory, then for a plain and an
encrypted volume (LUKS2 with the controller's own PBKDF) runs CYCLES times: PUT the attachment's
connector (the gateway serves the volume) and read the first 4 KiB through the connection info
with libnbd; the time from sending the PUT to having the block is one sample. The attachment is
deleted between cycles, so every cycle opens (and unlocks) the volume anew. Then it attaches
EXPORTS plain volumes at once and reports the gateway's peak RSS (VmHWM).
Prints p50/p90 per kind and the RSS as one table.
"""
import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import nbd


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=60)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


class Api:
    """The controller's REST API on its unix socket; paths are relative to `prefix`."""

    def __init__(self, state, prefix="/v3/bench"):
        self.sock = os.path.join(state, "controller.sock")
        self.prefix = prefix
        with open(os.path.join(state, "token")) as f:
            self.token = f.read().strip()

    def call(self, method, path, body=None, want=(200, 202, 204)):
        c = UnixHTTP(self.sock)
        headers = {"X-Auth-Token": self.token, "OpenStack-API-Version": "volume 3.44"}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        c.request(method, self.prefix + path, data, headers)
        r = c.getresponse()
        text = r.read()
        c.close()
        if r.status not in want:
            sys.exit(f"{method} {path}: {r.status} {text[:300]!r}")
        return json.loads(text) if text else None


def wait_for(predicate, what, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    sys.exit(f"timed out waiting for {what}")


def create_volume(api, name, encrypted):
    v = api.call("POST", "/volumes", {"volume": {"size": 1, "name": name, "encrypted": encrypted}})["volume"]
    wait_for(lambda: api.call("GET", "/volumes/" + v["id"])["volume"]["status"] == "available", "volume " + name)
    return v["id"]


def attach_cycle(api, volume_id):
    a = api.call("POST", "/attachments", {"attachment": {"volume_uuid": volume_id, "instance_uuid": "bench"}})
    attachment = a["attachment"]["id"]
    t0 = time.perf_counter()
    r = api.call("PUT", "/attachments/" + attachment, {"attachment": {"connector": {"host": socket.gethostname()}}})
    data = r["attachment"]["connection_info"]["data"]
    h = nbd.NBD()
    h.set_export_name(data["export"])
    h.connect_unix(data["socket"])
    h.pread(4096, 0)
    elapsed = time.perf_counter() - t0
    h.shutdown()
    api.call("DELETE", "/attachments/" + attachment)
    return elapsed


def percentile(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--volgate", default=os.path.join(here, "..", "build", "volgate"))
    p.add_argument("--cycles", type=int, default=50)
    p.add_argument("--exports", type=int, default=100)
    args = p.parse_args()

    work = tempfile.mkdtemp(prefix="volgate-attach-bench.", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    state = os.path.join(work, "state")
    config = os.path.join(work, "controller.json")
    with open(config, "w") as f:
        json.dump({"state_dir": state, "quotas": {"volumes": -1, "gigabytes": -1, "snapshots": -1}}, f)
    log = open(os.path.join(work, "controller.log"), "w")
    ctl = subprocess.Popen([args.volgate, "controller", "--config", config, "--gateway"], stdout=log, stderr=log)
    gateway_pid = None
    try:
        api = None
        wait_for(lambda: os.path.exists(os.path.join(state, "controller.sock")) and
                 os.path.exists(os.path.join(state, "run", "nbd.sock")), "controller and gateway")
        api = Api(state)
        rows = []
        for kind, encrypted in (("plain", False), ("encrypted (LUKS2, pbkdf2)", True)):
            vid = create_volume(api, kind.split()[0], encrypted)
            attach_cycle(api, vid)  # warm-up: first connection, page cache
            samples = [attach_cycle(api, vid) for _ in range(args.cycles)]
            rows.append((kind, percentile(samples, 50) * 1000, percentile(samples, 90) * 1000, max(samples) * 1000))

        ids = [create_volume(api, f"idle-{i}", False) for i in range(args.exports)]
        for vid in ids:
            a = api.call("POST", "/attachments", {"attachment": {"volume_uuid": vid, "instance_uuid": "bench",
                                                                 "connector": {"host": "bench"}}})
            assert a["attachment"]["connection_info"]
        c = UnixHTTP(os.path.join(state, "run", "gateway.sock"))
        c.request("GET", "/v1/health")
        health = json.loads(c.getresponse().read())
        gateway_pid = health["pid"]
        exports = health["exports"]
        hwm = vm_hwm_kib(gateway_pid)

        print(f"attach latency: PUT attachment (connector) -> first 4 KiB read through its connection info, "
              f"{args.cycles} cycles each")
        print(f"{'volume':<28}{'p50 ms':>10}{'p90 ms':>10}{'max ms':>10}")
        for kind, p50, p90, worst in rows:
            print(f"{kind:<28}{p50:>10.1f}{p90:>10.1f}{worst:>10.1f}")
        print(f"gateway peak RSS with {exports} idle exports: {hwm / 1024:.1f} MiB")
    finally:
        ctl.terminate()
        ctl.wait(timeout=30)
        if gateway_pid:
            try:
                os.kill(gateway_pid, 9)
            except ProcessLookupError:
                pass
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
