"""A raw NBD connection for tests that must control every byte on the wire."""
import socket
import struct
import sys

NBD_OPT_MAGIC = 0x49484156454F5054
NBD_OPT_GO = 7
NBD_REP_ACK = 1


def go(path, name, timeout=20):
    """Connects to the unix socket PATH (or the TCP address PATH, a (host, port) tuple),
    negotiates fixed newstyle and NBD_OPT_GO for export NAME (simple replies, no structured
    replies), and returns the socket in transmission."""
    s = socket.socket(socket.AF_INET if isinstance(path, tuple) else socket.AF_UNIX)
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


NBD_REQUEST_MAGIC = 0x25609513
NBD_SIMPLE_REPLY_MAGIC = 0x67446698
NBD_CMD_READ = 0
NBD_CMD_WRITE = 1


def recv_exact(s, n):
    """N bytes from S, however many receives it takes (MSG_WAITALL does not wait on a socket
    with a timeout); fewer only if the server closed the connection."""
    chunks, got = [], 0
    while got < n:
        b = s.recv(min(n - got, 1 << 20))
        if not b:
            break
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def request(kind, handle, offset, length):
    """The 28-byte header of an NBD request (a WRITE's payload follows it)."""
    return struct.pack(">IHHQQI", NBD_REQUEST_MAGIC, 0, kind, handle, offset, length)


def simple_reply(s, handle, length=0):
    """Reads a successful simple reply to HANDLE and its LENGTH bytes of data."""
    head = recv_exact(s, 16)
    if len(head) != 16:
        raise ConnectionError("the server closed the connection")
    magic, error, got = struct.unpack(">IIQ", head)
    if magic != NBD_SIMPLE_REPLY_MAGIC or error != 0 or got != handle:
        raise AssertionError("reply magic 0x%x error %d handle %d, expected handle %d"
                             % (magic, error, got, handle))
    data = recv_exact(s, length)
    if len(data) != length:
        raise ConnectionError("the server closed the connection mid-reply")
    return data
