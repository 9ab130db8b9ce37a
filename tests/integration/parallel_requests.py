#!/usr/bin/python3
"""Sends HTTP requests to the controller's unix socket all at once, and times them.

    parallel_requests.py SOCKET TOKEN_FILE OUT_DIR NAME[@DELAY_MS]=METHOD:PATH[:BODY]...

Each request gets its own connection and thread; they are released together (a barrier), so
they reach the server within a fraction of a millisecond of each other, which background curls
started by a shell do not (a fork each). For every NAME it writes OUT_DIR/NAME.code (status),
OUT_DIR/NAME.body, OUT_DIR/NAME.ms (its own time, from sending it to the end of its answer) and
OUT_DIR/NAME.end (from the release to the end of its answer), and prints the wall time from the
release to the last answer, in ms. A request with @DELAY_MS is sent that long after the release.
"""
import http.client
import os
import socket
import sys
import threading
import time


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=120)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(120)
        self.sock.connect(self.unix_path)


def main():
    sock, token_file, out = sys.argv[1:4]
    with open(token_file) as f:
        token = f.read().strip()
    requests = []
    for spec in sys.argv[4:]:
        name, rest = spec.split("=", 1)
        name, _, delay = name.partition("@")
        method, path, *body = rest.split(":", 2)
        requests.append((name, float(delay or 0) / 1000, method, path, body[0] if body else None))
    barrier = threading.Barrier(len(requests) + 1)
    results = {}

    def send(name, delay, method, path, body):
        c = UnixHTTP(sock)
        c.connect()  # before the barrier: only the request itself is timed
        headers = {"X-Auth-Token": token}
        if body is not None:
            headers["Content-Type"] = "application/json"
        barrier.wait()
        time.sleep(delay)
        t0 = time.monotonic()
        try:
            c.request(method, path, body, headers)
            r = c.getresponse()
            results[name] = (r.status, r.read(), time.monotonic())
        except OSError as e:
            results[name] = (0, str(e).encode(), time.monotonic())
        c.close()
        results[name] += (t0,)

    threads = [threading.Thread(target=send, args=r) for r in requests]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.monotonic()
    for t in threads:
        t.join()
    for name, (status, body, end, t0) in results.items():
        with open(os.path.join(out, name + ".code"), "w") as f:
            f.write("%d\n" % status)
        with open(os.path.join(out, name + ".body"), "wb") as f:
            f.write(body)
        with open(os.path.join(out, name + ".ms"), "w") as f:
            f.write("%d\n" % round((end - t0) * 1000))
        with open(os.path.join(out, name + ".end"), "w") as f:
            f.write("%d\n" % round((end - start) * 1000))
    print(round((max(r[2] for r in results.values()) - start) * 1000))


if __name__ == "__main__":
    main()
