"""Raw NBD handshakes against a TLS server, for what real clients never send.

usage: tls_wire.py require-refusals HOST PORT    every option but STARTTLS/ABORT gets TLS_REQD
                                                  before TLS, EXPORT_NAME closes; STARTTLS is
                                                  acknowledged (TLS itself is not started)
       tls_wire.py garbage HOST PORT             STARTTLS, then bytes that are no ClientHello:
                                                  prints the seconds until the server hung up
       tls_wire.py stall HOST PORT               STARTTLS, half a ClientHello, then silence:
                                                  prints the seconds until the server hung up
       tls_wire.py x509-list HOST PORT CADIR [1.2]  STARTTLS, TLS with Python's ssl (OpenSSL;
                                                  TLS 1.2 at most with "1.2"), then NBD_OPT_LIST:
                                                  prints the export names and the TLS version
"""
import socket
import ssl
import struct
import sys
import time

OPT_MAGIC = 0x49484156454F5054
REPLY_MAGIC = 0x0003E889045565A9
EXPORT_NAME, ABORT, LIST, STARTTLS, INFO, GO, STRUCTURED_REPLY = 1, 2, 3, 5, 6, 7, 8
LIST_META_CONTEXT, SET_META_CONTEXT = 9, 10
REP_ACK, REP_SERVER = 1, 2
ERR_TLS_REQD = 0x80000005


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            return out
        out += chunk
    return out


def connect(host, port):
    s = socket.create_connection((host, int(port)), timeout=20)
    greeting = recv_exact(s, 18)
    assert greeting[:8] == b"NBDMAGIC", greeting
    s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
    return s


def option(s, opt, data=b""):
    s.sendall(struct.pack(">QII", OPT_MAGIC, opt, len(data)) + data)


def reply(s):
    head = recv_exact(s, 20)
    if len(head) < 20:
        return None
    magic, opt, typ, length = struct.unpack(">QIII", head)
    assert magic == REPLY_MAGIC, hex(magic)
    return opt, typ, recv_exact(s, length)


def export_query(name):
    n = name.encode()
    return struct.pack(">I", len(n)) + n + struct.pack(">H", 0)


def meta_query(name, queries):
    n = name.encode()
    out = struct.pack(">I", len(n)) + n + struct.pack(">I", len(queries))
    for q in queries:
        out += struct.pack(">I", len(q)) + q.encode()
    return out


def require_refusals(host, port):
    s = connect(host, port)
    for opt, data in [(LIST, b""), (INFO, export_query("disk")), (GO, export_query("disk")),
                      (STRUCTURED_REPLY, b""), (LIST_META_CONTEXT, meta_query("disk", [])),
                      (SET_META_CONTEXT, meta_query("disk", ["base:allocation"])), (4242, b"")]:
        option(s, opt, data)
        got = reply(s)
        assert got is not None, "connection closed after option %d" % opt
        assert got[0] == opt and got[1] == ERR_TLS_REQD, (opt, hex(got[1]))
        assert b"disk" not in got[2], got
    option(s, STARTTLS)
    got = reply(s)
    assert got[:2] == (STARTTLS, REP_ACK), got
    s.close()
    s = connect(host, port)
    option(s, EXPORT_NAME, b"disk")
    assert s.recv(1) == b"", "EXPORT_NAME before TLS was not refused by closing"
    s.close()
    s = connect(host, port)
    option(s, ABORT)
    got = reply(s)
    assert got is None or got[1] == REP_ACK, got
    print("refused")


def starttls(host, port):
    s = connect(host, port)
    option(s, STARTTLS)
    got = reply(s)
    assert got[:2] == (STARTTLS, REP_ACK), got
    return s


def seconds_until_closed(s, start):
    s.settimeout(60)
    try:
        while s.recv(4096):
            pass
    except (ConnectionResetError, socket.timeout):
        pass
    return time.monotonic() - start


def garbage(host, port):
    s = starttls(host, port)
    start = time.monotonic()
    s.sendall(b"GET / HTTP/1.0\r\n\r\n" + b"\0" * 600)
    print("%.2f" % seconds_until_closed(s, start))


def stall(host, port):
    s = starttls(host, port)
    start = time.monotonic()
    # A TLS record header announcing a 512-byte handshake message, and only part of it.
    s.sendall(bytes([22, 3, 1, 2, 0]) + bytes([1, 0, 1, 252]) + b"\0" * 40)
    print("%.2f" % seconds_until_closed(s, start))


def x509_list(host, port, cadir, version=None):
    s = starttls(host, port)
    ctx = ssl.create_default_context(cafile=cadir + "/ca-cert.pem")
    if version == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cadir + "/client-cert.pem", cadir + "/client-key.pem")
    t = ctx.wrap_socket(s, server_hostname="localhost")
    names = []
    option(t, LIST)
    while True:
        opt, typ, data = reply(t)
        if typ == REP_ACK:
            break
        assert typ == REP_SERVER, hex(typ)
        (n,) = struct.unpack(">I", data[:4])
        names.append(data[4:4 + n].decode())
    option(t, STARTTLS)
    got = reply(t)
    assert got[1] == 0x80000003, got  # a second STARTTLS is invalid
    print(" ".join(names), t.version())


if __name__ == "__main__":
    what, host, port = sys.argv[1:4]
    if what == "require-refusals":
        require_refusals(host, port)
    elif what == "garbage":
        garbage(host, port)
    elif what == "stall":
        stall(host, port)
    elif what == "x509-list":
        x509_list(host, port, sys.argv[4], sys.argv[5] if len(sys.argv) > 5 else None)
    else:
        sys.exit(__doc__)
