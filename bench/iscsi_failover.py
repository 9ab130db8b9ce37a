#!/usr/bin/python3
"""Failover time of volgate's iSCSI multipath, with default settings.

    bench/iscsi_failover.py [--volgate PATH] [--rounds N]

A private tgtd serves a LUN; two TCP relays (tests/integration/tcp_relay.py) stand for the two
network paths; volgate serves iscsi://RELAY_A,RELAY_B/... with default options (failover
policy, so path A carries the I/O). A client writes 4 KiB blocks at queue depth 1 without pause
and timestamps every completion. Then path A fails:
  closed  the relay is killed: the kernel closes both of its connections
  silent  the relay is frozen (SIGSTOP): nothing is answered and nothing is refused, the way a
          dropped link or a hung target looks to the initiator
The failover time is the longest stall after the fault: from the fault (or the last completion
after it) to the next completed write, which went through path B. Path A is then healed and the
next round waits for the failback. Prints one markdown table (min / median / max per kind).
Needs tgt, libnbd's Python module, and a built volgate.
"""
import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import nbd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELAY = os.path.join(ROOT, "tests", "integration", "tcp_relay.py")
IQN = "iqn.2026-01.org.volgate.bench:failover"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Bench:
    def __init__(self, volgate, work):
        self.volgate = volgate
        self.work = work
        self.procs = []
        self.port = free_port()
        self.env = dict(os.environ, TGT_IPC_SOCKET=os.path.join(work, "tgtd.ipc"))

    def spawn(self, argv, log):
        p = subprocess.Popen(argv, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=self.env)
        self.procs.append(p)
        return p

    def tgtadm(self, *args):
        subprocess.run(["tgtadm", "--lld", "iscsi", *args], env=self.env, check=True)

    def start_target(self):
        lun = os.path.join(self.work, "lun.img")
        with open(lun, "wb") as f:
            f.truncate(256 << 20)
        self.tgtd = self.spawn(["tgtd", "-f", "--iscsi", "portal=127.0.0.1:%d" % self.port],
                               os.path.join(self.work, "tgtd.log"))
        for _ in range(100):
            if subprocess.run(["tgtadm", "--lld", "iscsi", "--op", "show", "--mode", "sys"],
                              env=self.env, capture_output=True).returncode == 0:
                break
            time.sleep(0.05)
        self.tgtadm("--op", "new", "--mode", "target", "--tid", "1", "-T", IQN)
        self.tgtadm("--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "1", "-b", lun)
        self.tgtadm("--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL")

    def start_relay(self, host):
        log = os.path.join(self.work, "relay-%s.log" % host)
        p = self.spawn([sys.executable, RELAY, "%s:%d" % (host, self.port),
                        "127.0.0.1:%d" % self.port], log)
        for _ in range(100):
            if "listening" in open(log).read():
                return p
            time.sleep(0.05)
        raise RuntimeError("relay %s did not start" % host)

    def start_volgate(self):
        self.sock = os.path.join(self.work, "vg.sock")
        self.log = os.path.join(self.work, "volgate.log")
        self.vg = self.spawn([self.volgate, "serve", "--unix", self.sock, "--export",
                              "v=iscsi://127.0.0.2:%d,127.0.0.3:%d/%s/1" % (self.port, self.port, IQN)],
                             self.log)
        for _ in range(200):
            if os.path.exists(self.sock):
                return
            time.sleep(0.05)
        raise RuntimeError("volgate did not start: " + open(self.log).read())

    def wait_log(self, pattern, after, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = open(self.log).read().splitlines()[after:]
            if any(re.search(pattern, l) for l in lines):
                return
            time.sleep(0.05)
        raise RuntimeError("no log line matching %r" % pattern)

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                if p is getattr(self, "vg", None):
                    p.send_signal(signal.SIGTERM)
                    try:
                        p.wait(10)
                        continue
                    except subprocess.TimeoutExpired:
                        pass
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait()


def measure(bench, relay, kind):
    """One fault on path A under a QD1 write load; returns the stall in milliseconds."""
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///v?socket=" + bench.sock)
    done = []
    stop = threading.Event()
    errors = []

    def load():
        block = b"\x5a" * 4096
        i = 0
        while not stop.is_set():
            try:
                h.pwrite(block, (i % 4096) * 4096)
            except nbd.Error as e:
                errors.append(str(e))
                return
            done.append(time.monotonic())
            i += 1

    worker = threading.Thread(target=load)
    worker.start()
    time.sleep(1.0)
    fault = time.monotonic()
    relay.send_signal(signal.SIGKILL if kind == "closed" else signal.SIGSTOP)
    while time.monotonic() - fault < 15:
        if done and done[-1] > fault + 0.5 and errors == []:
            # well past the fault and writing again: the stall is over
            break
        if errors:
            break
        time.sleep(0.05)
    stop.set()
    worker.join()
    h.shutdown()
    if errors:
        raise RuntimeError("I/O error during failover: " + errors[0])
    stall = 0.0
    previous = fault
    for t in done:
        if t <= fault:
            continue
        stall = max(stall, t - max(previous, fault))
        previous = t
    return stall * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--volgate", default=os.path.join(ROOT, "build", "volgate"))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not shutil.which("tgtd"):
        sys.exit("tgtd not found (apt-get install tgt)")
    work = tempfile.mkdtemp(prefix="volgate-failover.", dir="/dev/shm")
    bench = Bench(os.path.abspath(args.volgate), work)
    results = {"closed": [], "silent": []}
    try:
        bench.start_target()
        relay_a = bench.start_relay("127.0.0.2")
        bench.start_relay("127.0.0.3")
        bench.start_volgate()
        for kind in ("closed", "silent"):
            for _ in range(args.rounds):
                mark = len(open(bench.log).read().splitlines())
                results[kind].append(measure(bench, relay_a, kind))
                print("%s: %.0f ms" % (kind, results[kind][-1]), file=sys.stderr)
                if kind == "closed":
                    relay_a = bench.start_relay("127.0.0.2")
                else:
                    relay_a.send_signal(signal.SIGCONT)
                # path A is tested and taken back by the path checker (default: every 5 s)
                bench.wait_log(r"path 0 [^ ]+: up, failing back", mark)
    finally:
        bench.stop()
        shutil.rmtree(work, ignore_errors=True)
    print("| path A fails | rounds | failover min ms | median ms | max ms |")
    print("|---|--:|--:|--:|--:|")
    for kind in ("closed", "silent"):
        r = results[kind]
        print("| %s | %d | %.0f | %.0f | %.0f |" % (
            "closed connection (relay killed)" if kind == "closed" else "silently dropped (relay frozen)",
            len(r), min(r), statistics.median(r), max(r)))


if __name__ == "__main__":
    main()
