"""A raw NBD connection for tests that must control every byte on the wire."""
import socket
import struct
import sys

NBD_OPT_MAGIC = 0x49484156454F5054
NBD_OPT_GO = 7
NBD_REP_ACK = 1


def go(path, name, timeout=20):
    """Connects to the unix socket PATH, negotiates fixed newstyle and NBD_OPT_GO for export
    NAME (simple replies, no structured replies), and returns the socket in transmission."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.settimeout(timeout)
    s.recv(18, socket.MSG_WAITALL)  # NBDMAGIC, IHAVEOPT, handshake flags
    s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
    n = name.encode()
    s.sendall(struct.pack(">QII", NBD_OPT_MAGIC, NBD_OPT_GO, 4 + len(n) + 2)
              + struct.pack(">I", len(n)) + n + b"\0\0")
    while True:
        _magic, _opt, typ, ln = struct.unpack(">QIII", s.recv(20, socket.MSG_WAITALL))
        if ln:
            s.recv(ln, socket.MSG_WAITALL)
        if typ == NBD_REP_ACK:
            return s
        if typ & 0x80000000:
            sys.exit("NBD_OPT_GO %r failed: reply type 0x%x" % (name, typ))
