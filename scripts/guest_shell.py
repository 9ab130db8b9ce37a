#!/usr/bin/python3
"""Runs one shell command in the tiny guest and prints its output; exits with its status.

    guest_shell.py SOCKET TIMEOUT_S COMMAND

SOCKET is the guest's second serial port (ttyS1), which QEMU serves as a unix socket on the
host (see scripts/guest-lib.sh). The guest's /init reads one line per command from that port:

    <id> <command, base64>\\n

and answers

    @@<id> begin@@\\n <output> \\n@@<id> end <status>@@\\n

The command travels in base64 so that quotes and newlines need no escaping on a serial line.
The id is fresh per call: anything the port still held from an earlier command (one that timed
out, or output QEMU buffered while nobody was connected) comes before our begin marker and is
skipped. Exit status 124 (like timeout(1)) when the guest does not answer in time.
"""
import base64
import os
import re
import socket
import sys
import time


def main():
    path, timeout, command = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    ident = "%d.%d" % (os.getpid(), time.monotonic_ns())
    begin = ("@@%s begin@@\n" % ident).encode()
    end = re.compile(rb"\n@@" + re.escape(ident.encode()) + rb" end (\d+)@@\n")
    deadline = time.monotonic() + timeout

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    s.sendall(ident.encode() + b" " + base64.b64encode(command.encode()) + b"\n")
    buf = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            sys.stderr.write("guest_shell: the guest's port closed (QEMU gone?)\n")
            sys.exit(125)
        buf += chunk
        start = buf.find(begin)
        if start < 0:
            continue
        m = end.search(buf, start + len(begin))
        if m:
            sys.stdout.buffer.write(buf[start + len(begin):m.start()])
            sys.stdout.buffer.flush()
            sys.exit(int(m.group(1)))
    tail = buf[-300:].decode(errors="replace")
    sys.stderr.write("guest_shell: no answer within %g s to %r; last output: %r\n" % (timeout, command, tail))
    sys.exit(124)


if __name__ == "__main__":
    main()
