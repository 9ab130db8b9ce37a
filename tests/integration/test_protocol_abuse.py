#!/usr/bin/python3
"""Raw-socket NBD protocol conformance and abuse tests for volgate.

A tiny NBD client written here (no libnbd) speaks fixed newstyle over the unix socket and checks
the negotiation (GO, INFO, LIST, EXPORT_NAME, ABORT, STRUCTURED_REPLY, LIST/SET_META_CONTEXT and
their error replies), then the transmission phase: range, alignment, size and permission errors,
unknown commands and flags, refused writes whose payload must be skipped, bad magic, clients that
vanish mid-payload, 64 pipelined requests answered once each, DISC with writes in flight, block
status, trim, write_zeroes. Structured reply chunks are parsed and validated strictly.
The server must survive everything and exit 0 on SIGTERM.

Run: /usr/bin/python3 tests/integration/test_protocol_abuse.py   (VOLGATE=/path/to/volgate)
"""

import itertools
import mmap
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
VOLGATE = os.environ.get("VOLGATE") or os.path.join(REPO, "build", "volgate")
# What a sanitizer build writes when it finds something (lib.sh's SANITIZER_REPORT_RE).
SANITIZER_REPORT = re.compile(r"runtime error:|(ERROR|WARNING): [A-Za-z]*Sanitizer:")

# ---- protocol constants
NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
OPT_REPLY_MAGIC = 0x3E889045565A9
REQ_MAGIC = 0x25609513
SIMPLE_MAGIC = 0x67446698
STRUCT_MAGIC = 0x668E33EF

FLAG_FIXED_NEWSTYLE = 1
FLAG_NO_ZEROES = 2
C_FIXED = 1
C_NO_ZEROES = 2

OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_LIST = 3
OPT_PEEK_EXPORT = 4
OPT_STARTTLS = 5
OPT_INFO = 6
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_LIST_META_CONTEXT = 9
OPT_SET_META_CONTEXT = 10
OPT_EXTENDED_HEADERS = 11

REP_ACK = 1
REP_SERVER = 2
REP_INFO = 3
REP_META_CONTEXT = 4
REP_ERR = 1 << 31
REP_ERR_UNSUP = REP_ERR + 1
REP_ERR_POLICY = REP_ERR + 2
REP_ERR_INVALID = REP_ERR + 3
REP_ERR_PLATFORM = REP_ERR + 4
REP_ERR_TLS_REQD = REP_ERR + 5
REP_ERR_UNKNOWN = REP_ERR + 6
REP_ERR_SHUTDOWN = REP_ERR + 7
REP_ERR_BLOCK_SIZE_REQD = REP_ERR + 8
REP_ERR_TOO_BIG = REP_ERR + 9
REP_NAMES = {REP_ACK: "ACK", REP_SERVER: "SERVER", REP_INFO: "INFO", REP_META_CONTEXT: "META_CONTEXT",
             REP_ERR_UNSUP: "ERR_UNSUP", REP_ERR_POLICY: "ERR_POLICY", REP_ERR_INVALID: "ERR_INVALID",
             REP_ERR_PLATFORM: "ERR_PLATFORM", REP_ERR_TLS_REQD: "ERR_TLS_REQD",
             REP_ERR_UNKNOWN: "ERR_UNKNOWN", REP_ERR_SHUTDOWN: "ERR_SHUTDOWN",
             REP_ERR_BLOCK_SIZE_REQD: "ERR_BLOCK_SIZE_REQD", REP_ERR_TOO_BIG: "ERR_TOO_BIG"}

INFO_EXPORT = 0
INFO_NAME = 1
INFO_DESCRIPTION = 2
INFO_BLOCK_SIZE = 3

F_HAS_FLAGS = 1 << 0
F_READ_ONLY = 1 << 1
F_SEND_FLUSH = 1 << 2
F_SEND_FUA = 1 << 3
F_ROTATIONAL = 1 << 4
F_SEND_TRIM = 1 << 5
F_SEND_WRITE_ZEROES = 1 << 6
F_SEND_DF = 1 << 7
F_CAN_MULTI_CONN = 1 << 8
F_SEND_RESIZE = 1 << 9
F_SEND_CACHE = 1 << 10
F_SEND_FAST_ZERO = 1 << 11

CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_CACHE = 5
CMD_WRITE_ZEROES = 6
CMD_BLOCK_STATUS = 7
CMD_RESIZE = 8

CF_FUA = 1 << 0
CF_NO_HOLE = 1 << 1
CF_DF = 1 << 2
CF_REQ_ONE = 1 << 3
CF_FAST_ZERO = 1 << 4

RT_NONE = 0
RT_OFFSET_DATA = 1
RT_OFFSET_HOLE = 2
RT_BLOCK_STATUS = 5
RT_ERROR = (1 << 15) + 1
RT_ERROR_OFFSET = (1 << 15) + 2
RF_DONE = 1

STATE_HOLE = 1
STATE_ZERO = 2

EPERM, EIO, EINVAL, ENOSPC, EOVERFLOW, ENOTSUP, ESHUTDOWN = 1, 5, 22, 28, 75, 95, 108
ERRNAMES = {0: "OK", 1: "EPERM", 5: "EIO", 12: "ENOMEM", 22: "EINVAL", 28: "ENOSPC", 75: "EOVERFLOW",
            95: "ENOTSUP", 108: "ESHUTDOWN"}

KiB = 1024
MiB = 1024 * 1024
MAX_BLOCK = 32 * MiB


class TestFailure(Exception):
    pass


class Closed(Exception):
    pass


class ProtocolViolation(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def rname(t):
    return REP_NAMES.get(t, "0x%x" % t)


def ename(e):
    return ERRNAMES.get(e, str(e))


_handles = itertools.count(0x1000)


class Reply:
    def __init__(self, handle, cmd, offset, length, simple):
        self.handle = handle
        self.cmd = cmd
        self.offset = offset
        self.length = length
        self.simple = simple
        self.error = 0
        self.data = bytearray(length) if cmd == CMD_READ else None
        self.covered = []  # content/error byte ranges already described (read)
        self.extents = {}  # context id -> [(length, flags)]
        self.chunks = []  # (type, flags, payload length)
        self.messages = []

    def __repr__(self):
        return "<reply handle=%x cmd=%d err=%s chunks=%r>" % (self.handle, self.cmd, ename(self.error), self.chunks)


class Conn:
    """One NBD connection. Negotiation helpers, then requests and strictly validated replies."""

    def __init__(self, path, timeout=10.0):
        self.path = path
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.structured = False
        self.pending = {}
        self.partial = {}
        self.ready = {}
        self.size = None
        self.tflags = None
        self.infos = {}
        self.meta = {}

    # -- bytes
    def close(self):
        try:
            self.s.close()
        except OSError:
            pass

    def send(self, b):
        self.s.sendall(b)

    def recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.s.recv(min(n - len(buf), 4 * MiB))
            except (ConnectionResetError, BrokenPipeError) as e:
                raise Closed("connection reset after %d of %d bytes (%s)" % (len(buf), n, e))
            except socket.timeout:
                raise TestFailure("timed out waiting for %d bytes (got %d)" % (n, len(buf)))
            if not chunk:
                raise Closed("EOF after %d of %d bytes" % (len(buf), n))
            buf += chunk
        return bytes(buf)

    def wait_closed(self, timeout=5.0):
        """True if the server closes within timeout (any data it sends first is ignored)."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.s.settimeout(left)
                if not self.s.recv(65536):
                    return True
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True

    # -- negotiation
    def greet(self, cflags=C_FIXED | C_NO_ZEROES):
        magic, ihave, hflags = struct.unpack(">QQH", self.recv_exact(18))
        check(magic == NBDMAGIC, "bad server magic 0x%x" % magic)
        check(ihave == IHAVEOPT, "server does not speak newstyle: 0x%x" % ihave)
        check(hflags & FLAG_FIXED_NEWSTYLE, "server handshake flags lack FIXED_NEWSTYLE: 0x%x" % hflags)
        check(hflags & ~(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES) == 0, "unknown handshake flags 0x%x" % hflags)
        self.hflags = hflags
        if cflags & C_NO_ZEROES and not hflags & FLAG_NO_ZEROES:
            cflags &= ~C_NO_ZEROES
        self.cflags = cflags
        self.send(struct.pack(">I", cflags))
        return hflags

    def send_opt(self, opt, data=b"", length=None):
        self.send(struct.pack(">QII", IHAVEOPT, opt, len(data) if length is None else length) + data)

    def recv_opt_reply(self, opt):
        magic, ropt, rtype, length = struct.unpack(">QIII", self.recv_exact(20))
        if magic != OPT_REPLY_MAGIC:
            raise ProtocolViolation("bad option reply magic 0x%x" % magic)
        if ropt != opt:
            raise ProtocolViolation("option reply for option %d, expected %d" % (ropt, opt))
        if length > 64 * KiB:
            raise ProtocolViolation("option reply of %d bytes" % length)
        return rtype, (self.recv_exact(length) if length else b"")

    def option(self, opt, data=b"", length=None):
        """Send one option, return all its replies; the last one is ACK or an error."""
        self.send_opt(opt, data, length)
        replies = []
        while True:
            rtype, d = self.recv_opt_reply(opt)
            replies.append((rtype, d))
            if rtype == REP_ACK or rtype & REP_ERR:
                return replies
            if rtype not in (REP_SERVER, REP_INFO, REP_META_CONTEXT):
                raise ProtocolViolation("unexpected option reply type %s" % rname(rtype))
            if len(replies) > 1000:
                raise ProtocolViolation("endless option replies")

    def expect_final(self, replies, want, what):
        got = replies[-1][0]
        check(got == want, "%s: final reply %s, expected %s" % (what, rname(got), rname(want)))

    @staticmethod
    def go_data(name, infos=(INFO_BLOCK_SIZE,)):
        n = name.encode()
        return struct.pack(">I", len(n)) + n + struct.pack(">H", len(infos)) + \
            b"".join(struct.pack(">H", i) for i in infos)

    @staticmethod
    def parse_infos(replies):
        infos = {}
        for rtype, d in replies:
            if rtype != REP_INFO:
                continue
            if len(d) < 2:
                raise ProtocolViolation("REP_INFO of %d bytes" % len(d))
            (itype,) = struct.unpack(">H", d[:2])
            if itype == INFO_EXPORT:
                if len(d) != 12:
                    raise ProtocolViolation("INFO_EXPORT of %d bytes" % len(d))
                infos[INFO_EXPORT] = struct.unpack(">QH", d[2:])
            elif itype == INFO_BLOCK_SIZE:
                if len(d) != 14:
                    raise ProtocolViolation("INFO_BLOCK_SIZE of %d bytes" % len(d))
                infos[INFO_BLOCK_SIZE] = struct.unpack(">III", d[2:])
            else:
                infos[itype] = d[2:]
        return infos

    def go(self, name, infos=(INFO_BLOCK_SIZE,), opt=OPT_GO):
        replies = self.option(opt, self.go_data(name, infos))
        final = replies[-1][0]
        parsed = self.parse_infos(replies)
        if final == REP_ACK:
            if INFO_EXPORT not in parsed:
                raise ProtocolViolation("%s succeeded without NBD_INFO_EXPORT" % ("GO" if opt == OPT_GO else "INFO"))
            if opt == OPT_GO:
                self.size, self.tflags = parsed[INFO_EXPORT]
                self.infos = parsed
        return final, parsed

    def negotiate_structured(self):
        replies = self.option(OPT_STRUCTURED_REPLY)
        self.expect_final(replies, REP_ACK, "STRUCTURED_REPLY")
        self.structured = True

    @staticmethod
    def meta_data(name, queries):
        n = name.encode()
        d = struct.pack(">I", len(n)) + n + struct.pack(">I", len(queries))
        for q in queries:
            q = q.encode()
            d += struct.pack(">I", len(q)) + q
        return d

    def set_meta(self, name, queries, opt=OPT_SET_META_CONTEXT):
        replies = self.option(opt, self.meta_data(name, queries))
        ctx = {}
        for rtype, d in replies[:-1]:
            if rtype != REP_META_CONTEXT or len(d) < 5:
                raise ProtocolViolation("bad reply %s (%d bytes) to a META_CONTEXT option" % (rname(rtype), len(d)))
            (cid,) = struct.unpack(">I", d[:4])
            ctx[d[4:].decode()] = cid
        if opt == OPT_SET_META_CONTEXT and replies[-1][0] == REP_ACK:
            self.meta = ctx
        return replies[-1][0], ctx

    # -- transmission
    def request(self, cmd, offset, length, flags=0, payload=b"", handle=None, send=True):
        if handle is None:
            handle = next(_handles)
        raw = struct.pack(">IHHQQI", REQ_MAGIC, flags, cmd, handle, offset, length) + payload
        if cmd != CMD_DISC:
            if handle in self.pending:
                raise TestFailure("test bug: handle reused while in flight")
            self.pending[handle] = Reply(handle, cmd, offset, length, simple=False)
        if send:
            self.send(raw)
        return handle, raw

    def recv_one(self):
        """Read one simple reply or one structured chunk; return the handle it completed, or None."""
        (magic,) = struct.unpack(">I", self.recv_exact(4))
        if magic == SIMPLE_MAGIC:
            err, handle = struct.unpack(">IQ", self.recv_exact(12))
            r = self.pending.pop(handle, None)
            if r is None:
                raise ProtocolViolation("simple reply for unknown or finished handle 0x%x" % handle)
            if handle in self.partial:
                raise ProtocolViolation("simple reply after structured chunks for handle 0x%x" % handle)
            if self.structured and r.cmd == CMD_READ:
                raise ProtocolViolation("simple reply (error %s) to READ although structured replies were "
                                        "negotiated" % ename(err))
            if self.structured and r.cmd == CMD_BLOCK_STATUS and err == 0:
                raise ProtocolViolation("successful simple reply to BLOCK_STATUS")
            r.simple = True
            r.error = err
            if r.cmd == CMD_READ and err == 0:
                r.data = bytearray(self.recv_exact(r.length))
            self.ready[handle] = r
            return handle
        if magic != STRUCT_MAGIC:
            raise ProtocolViolation("bad reply magic 0x%08x" % magic)
        if not self.structured:
            raise ProtocolViolation("structured reply chunk although structured replies were not negotiated")
        rflags, rtype, handle, length = struct.unpack(">HHQI", self.recv_exact(16))
        if length > MAX_BLOCK + 4096:
            raise ProtocolViolation("chunk of %d bytes" % length)
        payload = self.recv_exact(length)
        r = self.pending.get(handle)
        if r is None:
            raise ProtocolViolation("chunk for unknown or finished handle 0x%x" % handle)
        self.partial[handle] = r
        r.chunks.append((rtype, rflags, length))
        end = r.offset + r.length

        def claim(lo, hi):
            if not (r.offset <= lo < hi <= end):
                raise ProtocolViolation("chunk [%d,%d) outside request [%d,%d)" % (lo, hi, r.offset, end))
            for a, b in r.covered:
                if lo < b and a < hi:
                    raise ProtocolViolation("chunk [%d,%d) overlaps earlier chunk [%d,%d)" % (lo, hi, a, b))
            r.covered.append((lo, hi))

        if rtype == RT_NONE:
            if length != 0 or not rflags & RF_DONE:
                raise ProtocolViolation("NONE chunk with length %d flags %d" % (length, rflags))
        elif rtype == RT_OFFSET_DATA:
            if r.cmd != CMD_READ or length < 9:
                raise ProtocolViolation("OFFSET_DATA chunk (length %d) for command %d" % (length, r.cmd))
            (off,) = struct.unpack(">Q", payload[:8])
            claim(off, off + length - 8)
            r.data[off - r.offset:off - r.offset + length - 8] = payload[8:]
        elif rtype == RT_OFFSET_HOLE:
            if r.cmd != CMD_READ or length != 12:
                raise ProtocolViolation("OFFSET_HOLE chunk (length %d) for command %d" % (length, r.cmd))
            off, hsize = struct.unpack(">QI", payload)
            if hsize == 0:
                raise ProtocolViolation("OFFSET_HOLE of size 0")
            claim(off, off + hsize)
            r.data[off - r.offset:off - r.offset + hsize] = bytes(hsize)
        elif rtype == RT_BLOCK_STATUS:
            if r.cmd != CMD_BLOCK_STATUS or length < 12 or (length - 4) % 8:
                raise ProtocolViolation("BLOCK_STATUS chunk (length %d) for command %d" % (length, r.cmd))
            (cid,) = struct.unpack(">I", payload[:4])
            if cid in r.extents:
                raise ProtocolViolation("two BLOCK_STATUS chunks for context %d" % cid)
            if cid not in self.meta.values():
                raise ProtocolViolation("BLOCK_STATUS chunk for context id %d never negotiated (%r)" % (cid, self.meta))
            ext = [struct.unpack(">II", payload[i:i + 8]) for i in range(4, length, 8)]
            if any(e[0] == 0 for e in ext):
                raise ProtocolViolation("zero-length block status descriptor")
            if sum(e[0] for e in ext) > r.length:
                raise ProtocolViolation("block status descriptors cover %d bytes, request %d" %
                                        (sum(e[0] for e in ext), r.length))
            r.extents[cid] = ext
        elif rtype & 0x8000:
            if length < 6:
                raise ProtocolViolation("error chunk of %d bytes" % length)
            err, mlen = struct.unpack(">IH", payload[:6])
            if err == 0:
                raise ProtocolViolation("error chunk with error 0")
            if rtype == RT_ERROR:
                if length != 6 + mlen:
                    raise ProtocolViolation("ERROR chunk length %d, message %d" % (length, mlen))
            elif rtype == RT_ERROR_OFFSET:
                if length != 14 + mlen:
                    raise ProtocolViolation("ERROR_OFFSET chunk length %d, message %d" % (length, mlen))
                (eoff,) = struct.unpack(">Q", payload[6 + mlen:])
                if r.cmd not in (CMD_READ, CMD_WRITE, CMD_TRIM, CMD_BLOCK_STATUS) or not r.offset <= eoff < end:
                    raise ProtocolViolation("ERROR_OFFSET at %d for command %d [%d,%d)" % (eoff, r.cmd, r.offset, end))
            elif 6 + mlen > length:
                raise ProtocolViolation("error chunk message longer than chunk")
            r.messages.append(payload[6:6 + mlen].decode("utf-8", "replace"))
            if r.error == 0:
                r.error = err
        else:
            raise ProtocolViolation("unknown structured chunk type %d" % rtype)

        if rflags & RF_DONE:
            del self.pending[handle]
            del self.partial[handle]
            if r.error == 0 and r.cmd == CMD_READ:
                if sum(b - a for a, b in r.covered) != r.length:
                    raise ProtocolViolation("successful read reply covers %d of %d bytes" %
                                            (sum(b - a for a, b in r.covered), r.length))
            if r.error == 0 and r.cmd == CMD_BLOCK_STATUS:
                missing = set(self.meta.values()) - set(r.extents)
                if missing:
                    raise ProtocolViolation("block status reply lacks contexts %r" % missing)
            if r.error == 0 and r.cmd not in (CMD_READ, CMD_BLOCK_STATUS) and r.chunks[-1][0] != RT_NONE:
                raise ProtocolViolation("successful reply to command %d ends with chunk type %d" %
                                        (r.cmd, r.chunks[-1][0]))
            self.ready[handle] = r
            return handle
        return None

    def wait(self, handle):
        while handle not in self.ready:
            self.recv_one()
        return self.ready.pop(handle)

    def wait_all(self, handles):
        return [self.wait(h) for h in handles]

    def cmd(self, cmd, offset, length, flags=0, payload=b""):
        h, _ = self.request(cmd, offset, length, flags, payload)
        return self.wait(h)

    def read(self, offset, length, flags=0):
        return self.cmd(CMD_READ, offset, length, flags)

    def write(self, offset, data, flags=0):
        return self.cmd(CMD_WRITE, offset, len(data), flags, data)

    def read_ok(self, offset, length):
        r = self.read(offset, length)
        check(r.error == 0, "read(%d, %d) failed: %s %r" % (offset, length, ename(r.error), r.messages))
        return bytes(r.data)

    def write_ok(self, offset, data, flags=0):
        r = self.write(offset, data, flags)
        check(r.error == 0, "write(%d, %d) failed: %s %r" % (offset, len(data), ename(r.error), r.messages))

    def disc(self):
        self.request(CMD_DISC, 0, 0)


# ---- the server under test


class Server:
    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="volgate-abuse.", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        self.disk = self._direct_dir()
        self.sock = os.path.join(self.tmp, "s.sock")
        self.err_path = os.path.join(self.tmp, "stderr")
        self.proc = None
        self.mirror = {}
        self.paths = {}

    @staticmethod
    def _direct_dir():
        cands = [os.environ.get("VOLGATE_DISK_TMPDIR"), "/var/tmp", os.path.expanduser("~"), "/var/cache"]
        for prefer_disk in (True, False):
            for base in cands:
                if not base or not os.path.isdir(base) or not os.access(base, os.W_OK):
                    continue
                if prefer_disk and _fstype(base) == "tmpfs":
                    continue
                d = tempfile.mkdtemp(prefix="volgate-abuse-disk.", dir=base)
                try:
                    fd = os.open(os.path.join(d, "probe"), os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600)
                    try:
                        os.write(fd, mmap.mmap(-1, 4096))
                    finally:
                        os.close(fd)
                    os.unlink(os.path.join(d, "probe"))
                    return d
                except OSError:
                    shutil.rmtree(d, ignore_errors=True)
        raise SystemExit("no directory supporting O_DIRECT (set VOLGATE_DISK_TMPDIR)")

    def start(self):
        rnd = random.Random(1234)
        # 'file': 16 MiB of random data with a hole at [8M, 12M); first export = default export
        f = bytearray(rnd.randbytes(16 * MiB))
        f[8 * MiB:12 * MiB] = bytes(4 * MiB)
        p = os.path.join(self.tmp, "file.img")
        with open(p, "wb") as fh:
            fh.write(f[:8 * MiB])
            fh.seek(12 * MiB)
            fh.write(f[12 * MiB:])
        self.mirror["file"] = f
        self.paths["file"] = p
        ro = rnd.randbytes(1 * MiB)
        p = os.path.join(self.tmp, "ro.img")
        open(p, "wb").write(ro)
        self.mirror["ro"] = bytearray(ro)
        self.paths["ro"] = p
        d = rnd.randbytes(4 * MiB)
        p = os.path.join(self.disk, "direct.img")
        open(p, "wb").write(d)
        self.mirror["direct"] = bytearray(d)
        self.paths["direct"] = p
        self.mirror["mem"] = bytearray(64 * MiB)
        self.mirror["mem2"] = bytearray(16 * MiB)
        self.exports = ["file", "ro", "direct", "mem", "mem2"]
        args = [VOLGATE, "serve", "--unix", self.sock,
                "--export", "file=file:%s" % self.paths["file"],
                "--export", "ro=file:%s,readonly" % self.paths["ro"],
                "--export", "direct=file:%s,direct" % self.paths["direct"],
                "--export", "mem=memory:64M",
                "--export", "mem2=memory:16M"]
        self.out = open(os.path.join(self.tmp, "stdout"), "w+")
        self.errf = open(self.err_path, "w")
        self.proc = subprocess.Popen(args, stdout=self.out, stderr=self.errf, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise SystemExit("volgate exited with %d before it was ready: %s" % (self.proc.returncode, self.log_tail()))
            with open(self.out.name) as fh:
                lines = [l for l in fh.read().splitlines() if l.startswith("nbd")]
            if len(lines) >= len(self.exports) and os.path.exists(self.sock):
                break
            if time.monotonic() > deadline:
                raise SystemExit("volgate not ready within 10 s: %r" % lines)
            time.sleep(0.05)

    def alive(self):
        return self.proc.poll() is None

    def log_tail(self, n=20):
        try:
            return "\n".join(open(self.err_path, errors="replace").read().splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=10):
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    # The first lines of the first sanitizer report in the server's log (lib.sh's pattern), or "".
    def sanitizer_report(self):
        try:
            lines = open(self.err_path, errors="replace").read().splitlines()
        except OSError:
            return ""
        for i, line in enumerate(lines):
            if SANITIZER_REPORT.search(line):
                return "\n".join("    " + l for l in lines[i:i + 16])
        return ""

    def cleanup(self):
        self.kill()
        if os.environ.get("VOLGATE_KEEP_TMP") == "1":
            print("keeping %s %s" % (self.tmp, self.disk))
            return
        shutil.rmtree(self.tmp, ignore_errors=True)
        shutil.rmtree(self.disk, ignore_errors=True)


def _fstype(path):
    try:
        out = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True).stdout.strip()
        return out
    except OSError:
        return "unknown"


SRV = None


def conn():
    return Conn(SRV.sock)


def tx(name, structured=False, meta=(), cflags=C_FIXED | C_NO_ZEROES):
    """A connection in the transmission phase on export NAME."""
    c = conn()
    c.greet(cflags)
    if structured or meta:
        c.negotiate_structured()
    if meta:
        t, ctx = c.set_meta(name, list(meta))
        check(t == REP_ACK, "SET_META_CONTEXT %r: %s" % (meta, rname(t)))
        for m in meta:
            check(m in ctx, "SET_META_CONTEXT did not select %s: %r" % (m, ctx))
    t, _ = c.go(name)
    check(t == REP_ACK, "GO %r: %s" % (name, rname(t)))
    return c


def expect_err(r, allowed, what):
    if isinstance(allowed, int):
        allowed = (allowed,)
    check(r.error in allowed, "%s: got %s, expected %s (messages %r)" %
          (what, ename(r.error), "/".join(ename(a) for a in allowed), r.messages))


# =====================================================================================
# negotiation cases


def t_greeting_and_go():
    c = conn()
    c.greet()
    t, info = c.go("mem")
    check(t == REP_ACK, "GO mem: %s" % rname(t))
    check(c.size == 64 * MiB, "GO mem: size %d" % c.size)
    check(info.get(INFO_BLOCK_SIZE) == (1, 4096, MAX_BLOCK), "GO mem block sizes %r" % (info.get(INFO_BLOCK_SIZE),))
    check(c.read_ok(0, 4096) == bytes(4096), "fresh memory export does not read as zeroes")
    c.close()


def t_unknown_option_then_go():
    c = conn()
    c.greet()
    for opt, data in ((0x1234, b"some option data"), (0x7FFFFFFF, b""), (OPT_PEEK_EXPORT, b"x" * 100),
                      (OPT_EXTENDED_HEADERS, b""), (0xABCD, bytes(5000))):
        replies = c.option(opt, data)
        check(len(replies) == 1, "option %d: %d replies" % (opt, len(replies)))
        c.expect_final(replies, REP_ERR_UNSUP, "unknown option %d" % opt)
    t, _ = c.go("mem")
    check(t == REP_ACK, "GO after unknown options: %s" % rname(t))
    check(c.read_ok(4096, 512) == bytes(SRV.mirror["mem"][4096:4608]), "read after unknown options")
    c.close()


def t_go_bad_lengths():
    c = conn()
    c.greet()
    n = b"mem"
    cases = [
        ("name length beyond the data", struct.pack(">I", 10) + n),
        ("data shorter than the name length field", b"\x00\x00"),
        ("empty data", b""),
        ("missing info count", struct.pack(">I", 3) + n),
        ("half an info count", struct.pack(">I", 3) + n + b"\x00"),
        ("info count 3, one info", struct.pack(">I", 3) + n + struct.pack(">HH", 3, INFO_BLOCK_SIZE)),
        ("odd trailing byte", struct.pack(">I", 3) + n + struct.pack(">HH", 1, INFO_BLOCK_SIZE) + b"\x00"),
        ("trailing garbage", struct.pack(">I", 3) + n + struct.pack(">H", 0) + b"garbage"),
        ("name length 0xffffffff", struct.pack(">I", 0xFFFFFFFF) + n + struct.pack(">H", 0)),
    ]
    for opt in (OPT_GO, OPT_INFO):
        for what, data in cases:
            replies = c.option(opt, data)
            c.expect_final(replies, REP_ERR_INVALID, "%s with %s" % ("GO" if opt == OPT_GO else "INFO", what))
    t, _ = c.go("mem")
    check(t == REP_ACK, "GO after invalid GO/INFO options: %s" % rname(t))
    c.read_ok(0, 512)
    c.close()


def t_structured_reply_with_data():
    c = conn()
    c.greet()
    c.expect_final(c.option(OPT_STRUCTURED_REPLY, b"\x00\x00\x00\x00"), REP_ERR_INVALID,
                   "STRUCTURED_REPLY with 4 bytes of data")
    c.expect_final(c.option(OPT_STRUCTURED_REPLY, b"x"), REP_ERR_INVALID, "STRUCTURED_REPLY with 1 byte")
    # the failed attempts did not switch structured replies on: reads come back simple
    t, _ = c.go("file")
    check(t == REP_ACK, "GO: %s" % rname(t))
    check(c.tflags & F_SEND_DF == 0, "SEND_DF advertised without structured replies (flags 0x%x)" % c.tflags)
    check(c.read_ok(100, 1000) == bytes(SRV.mirror["file"][100:1100]), "simple read after refused STRUCTURED_REPLY")
    c.close()
    c = conn()
    c.greet()
    c.negotiate_structured()
    t, _ = c.go("file")
    check(t == REP_ACK, "GO: %s" % rname(t))
    check(c.read_ok(100, 1000) == bytes(SRV.mirror["file"][100:1100]), "structured read")
    c.close()


def t_df_flag():
    # With structured replies the server must advertise SEND_DF on every export (volgate answers
    # every read with one data chunk, so "don't fragment" costs it nothing), and then answer each
    # DF read with exactly one content chunk. The protocol would allow EOVERFLOW for DF reads
    # over 64 KiB; volgate has no reason to use it, so a 3 MiB DF read must succeed too.
    for name in SRV.exports:
        c = tx(name, True)
        check(c.tflags & F_SEND_DF, "%s: SEND_DF not advertised with structured replies (flags 0x%x)"
              % (name, c.tflags))
        m = SRV.mirror[name]
        r = c.read(4096, 65536, CF_DF)
        check(r.error == 0, "%s: DF read of 64 KiB: %s" % (name, ename(r.error)))
        content = [t for t, f, l in r.chunks if t in (RT_OFFSET_DATA, RT_OFFSET_HOLE)]
        check(len(content) == 1, "%s: DF read answered with %d content chunks %r" % (name, len(content), r.chunks))
        check(bytes(r.data) == bytes(m[4096:4096 + 65536]), "%s: DF read: wrong data" % name)
        c.close()
    c = tx("mem2", True)
    # data in page [2M, 2M+64K) only; the reads below span hole, data, hole
    c.write_ok(2 * MiB + 1000, b"\x42" * 3000)
    SRV.mirror["mem2"][2 * MiB + 1000:2 * MiB + 4000] = b"\x42" * 3000
    m = SRV.mirror["mem2"]
    for off, ln in ((2 * MiB - 20000, 65536), (2 * MiB - 100, 5000), (2 * MiB - MiB, 3 * MiB)):
        r = c.read(off, ln, CF_DF)
        check(r.error == 0, "DF read(%d, %d): %s" % (off, ln, ename(r.error)))
        content = [t for t, f, l in r.chunks if t in (RT_OFFSET_DATA, RT_OFFSET_HOLE)]
        check(len(content) == 1, "DF read(%d, %d) answered with %d content chunks %r" % (off, ln, len(content), r.chunks))
        check(bytes(r.data) == bytes(m[off:off + ln]), "DF read(%d, %d): wrong data" % (off, ln))
    c.close()
    # Without structured replies DF is not advertised, and a client that sends it anyway gets
    # EINVAL like any flag it was not offered; the connection goes on.
    c = tx("mem2")
    check(not c.tflags & F_SEND_DF, "SEND_DF advertised without structured replies (flags 0x%x)" % c.tflags)
    expect_err(c.read(2 * MiB, 4096, CF_DF), EINVAL, "DF read without structured replies")
    check(c.read_ok(2 * MiB, 4096) == bytes(m[2 * MiB:2 * MiB + 4096]), "read after a refused DF read")
    c.close()


def t_long_export_names():
    c = conn()
    c.greet()
    for name in ("x" * 5000, "mem\0", "m" * 4096):
        t, _ = c.go(name, opt=OPT_INFO)
        check(t & REP_ERR, "INFO for a %d-byte bogus name: %s" % (len(name), rname(t)))
        t, _ = c.go(name)
        check(t & REP_ERR, "GO for a %d-byte bogus name: %s" % (len(name), rname(t)))
    t, _ = c.go("mem")
    check(t == REP_ACK, "GO mem after bogus names: %s" % rname(t))
    c.close()


def t_go_info_unknown_export():
    c = conn()
    c.greet()
    for opt in (OPT_INFO, OPT_GO):
        t, _ = c.go("nosuch", opt=opt)
        check(t == REP_ERR_UNKNOWN, "%s for unknown export: %s, expected ERR_UNKNOWN" %
              ("GO" if opt == OPT_GO else "INFO", rname(t)))
        t, _ = c.go("MEM", opt=opt)
        check(t == REP_ERR_UNKNOWN, "export names are case sensitive: %s" % rname(t))
    t, _ = c.go("mem2")
    check(t == REP_ACK and c.size == 16 * MiB, "GO mem2 after unknown exports: %s size %s" % (rname(t), c.size))
    c.close()


RW_FLAGS = F_HAS_FLAGS | F_SEND_FLUSH | F_SEND_FUA | F_SEND_TRIM | F_SEND_WRITE_ZEROES | F_SEND_FAST_ZERO | \
    F_SEND_CACHE | F_CAN_MULTI_CONN
RO_FLAGS = F_HAS_FLAGS | F_READ_ONLY | F_SEND_FLUSH | F_SEND_CACHE | F_CAN_MULTI_CONN
RO_FORBIDDEN = F_SEND_TRIM | F_SEND_WRITE_ZEROES | F_SEND_FUA | F_SEND_FAST_ZERO


def t_info_then_go():
    c = conn()
    c.greet()
    want = {"file": (16 * MiB, RW_FLAGS, (1, 4096, MAX_BLOCK)),
            "ro": (1 * MiB, RO_FLAGS, (1, 4096, MAX_BLOCK)),
            "direct": (4 * MiB, RW_FLAGS, (4096, 4096, MAX_BLOCK)),
            "mem": (64 * MiB, RW_FLAGS, (1, 4096, MAX_BLOCK)),
            "": (16 * MiB, RW_FLAGS, (1, 4096, MAX_BLOCK))}
    for name, (size, flags, bs) in want.items():
        t, info = c.go(name, opt=OPT_INFO)
        check(t == REP_ACK, "INFO %r: %s" % (name, rname(t)))
        esize, eflags = info[INFO_EXPORT]
        check(esize == size, "INFO %r size %d, expected %d" % (name, esize, size))
        check(eflags & flags == flags, "INFO %r flags 0x%x lack 0x%x" % (name, eflags, flags & ~eflags))
        check(eflags & F_SEND_DF == 0, "INFO %r: SEND_DF without structured replies" % name)
        check(eflags & (F_SEND_RESIZE | F_ROTATIONAL) == 0, "INFO %r: unexpected flags 0x%x" % (name, eflags))
        if flags & F_READ_ONLY:
            check(eflags & RO_FORBIDDEN == 0, "INFO %r (readonly) advertises 0x%x" % (name, eflags & RO_FORBIDDEN))
        else:
            check(eflags & F_READ_ONLY == 0, "INFO %r: READ_ONLY on a writable export" % name)
        check(info.get(INFO_BLOCK_SIZE) == bs, "INFO %r block sizes %r, expected %r" % (name, info.get(INFO_BLOCK_SIZE), bs))
    # INFO asking for nothing still gives INFO_EXPORT; asking for unknown info types is fine
    t, info = c.go("mem", infos=(), opt=OPT_INFO)
    check(t == REP_ACK and INFO_EXPORT in info, "INFO with no requests: %s %r" % (rname(t), info))
    t, info = c.go("mem", infos=(INFO_NAME, INFO_DESCRIPTION, 0x4242), opt=OPT_INFO)
    check(t == REP_ACK and INFO_EXPORT in info, "INFO with unknown info requests: %s" % rname(t))
    # after INFO the connection is still negotiating: GO the default export
    t, _ = c.go("")
    check(t == REP_ACK and c.size == 16 * MiB, "GO default export: %s size %s" % (rname(t), c.size))
    check(c.read_ok(0, 4096) == bytes(SRV.mirror["file"][:4096]), "default export is not 'file'")
    c.close()


def t_list():
    c = conn()
    c.greet()
    c.expect_final(c.option(OPT_LIST, b"junk"), REP_ERR_INVALID, "LIST with data")
    replies = c.option(OPT_LIST)
    c.expect_final(replies, REP_ACK, "LIST")
    names = set()
    for rtype, d in replies[:-1]:
        check(rtype == REP_SERVER, "LIST reply type %s" % rname(rtype))
        check(len(d) >= 4, "REP_SERVER of %d bytes" % len(d))
        (nlen,) = struct.unpack(">I", d[:4])
        check(nlen <= len(d) - 4, "REP_SERVER name length %d > %d" % (nlen, len(d) - 4))
        names.add(d[4:4 + nlen].decode())
    check(names - {""} == set(SRV.exports), "LIST names %r, expected %r" % (sorted(names), SRV.exports))
    t, _ = c.go("ro")
    check(t == REP_ACK, "GO after LIST: %s" % rname(t))
    c.close()


def t_meta_context():
    c = conn()
    c.greet()
    t, _ = c.set_meta("mem2", ["base:allocation"])
    check(t & REP_ERR, "SET_META_CONTEXT before STRUCTURED_REPLY succeeded (%s)" % rname(t))
    c.negotiate_structured()
    # truncated data
    d = Conn.meta_data("mem2", ["base:allocation"])
    for what, data in (("truncated query", d[:-3]), ("missing query count", d[:4 + 4]),
                       ("trailing garbage", d + b"zz"), ("short", b"\x00")):
        replies = c.option(OPT_SET_META_CONTEXT, data)
        c.expect_final(replies, REP_ERR_INVALID, "SET_META_CONTEXT with %s" % what)
    t, ctx = c.set_meta("mem2", [], opt=OPT_LIST_META_CONTEXT)
    check(t == REP_ACK and "base:allocation" in ctx, "LIST_META_CONTEXT: %s %r" % (rname(t), ctx))
    t, ctx = c.set_meta("mem2", ["base:"], opt=OPT_LIST_META_CONTEXT)
    check(t == REP_ACK and "base:allocation" in ctx, "LIST_META_CONTEXT 'base:': %s %r" % (rname(t), ctx))
    t, ctx = c.set_meta("mem2", ["base:allocation"], opt=OPT_LIST_META_CONTEXT)
    check(t == REP_ACK and list(ctx) == ["base:allocation"], "LIST_META_CONTEXT base:allocation: %s %r" % (rname(t), ctx))
    t, ctx = c.set_meta("nosuch", ["base:allocation"])
    check(t & REP_ERR, "SET_META_CONTEXT for an unknown export: %s %r" % (rname(t), ctx))
    t, ctx = c.set_meta("mem2", ["x-nosuch:thing"])
    check(t == REP_ACK and ctx == {}, "SET_META_CONTEXT of an unknown context: %s %r" % (rname(t), ctx))
    t, ctx = c.set_meta("mem2", ["x-nosuch:thing", "base:allocation"])
    check(t == REP_ACK and list(ctx) == ["base:allocation"], "SET_META_CONTEXT base:allocation: %s %r" % (rname(t), ctx))
    t, _ = c.go("mem2")
    check(t == REP_ACK, "GO: %s" % rname(t))
    c.write_ok(1 * MiB + 4096, b"\x5a" * 4096)
    SRV.mirror["mem2"][MiB + 4096:MiB + 8192] = b"\x5a" * 4096
    r = c.cmd(CMD_BLOCK_STATUS, 0, 16 * MiB)
    check(r.error == 0, "BLOCK_STATUS: %s" % ename(r.error))
    cid = ctx["base:allocation"]
    check(list(r.extents) == [cid], "BLOCK_STATUS contexts %r, expected [%d]" % (list(r.extents), cid))
    c.close()


def t_bad_client_flags():
    for cflags in (0, C_FIXED | 0x4, C_FIXED | 0x80000000, 0xFFFFFFFF, C_NO_ZEROES):
        c = conn()
        magic, ihave, hflags = struct.unpack(">QQH", c.recv_exact(18))
        c.send(struct.pack(">I", cflags))
        # an option after the bad flags must not be answered
        try:
            c.send_opt(OPT_GO, Conn.go_data("mem"))
        except (BrokenPipeError, ConnectionResetError):
            pass
        check(c.wait_closed(5), "server kept the connection open after client flags 0x%x" % cflags)
        c.close()


def t_huge_option_length():
    for opt in (OPT_GO, 0x5555, OPT_EXPORT_NAME, OPT_LIST_META_CONTEXT):
        for length in (1 << 31, 0xFFFFFFFF):
            c = conn()
            c.greet()
            c.send(struct.pack(">QII", IHAVEOPT, opt, length) + b"abc")
            deadline = time.monotonic() + 5
            outcome = None
            try:
                c.s.settimeout(5)
                hdr = c.s.recv(20)
                if not hdr:
                    outcome = "closed"
                else:
                    while len(hdr) < 20 and time.monotonic() < deadline:
                        more = c.s.recv(20 - len(hdr))
                        if not more:
                            break
                        hdr += more
                    if len(hdr) == 20:
                        magic, ropt, rtype, rlen = struct.unpack(">QIII", hdr)
                        check(magic == OPT_REPLY_MAGIC and ropt == opt and rtype & REP_ERR,
                              "reply to option %d with length %d: magic 0x%x type %s" % (opt, length, magic, rname(rtype)))
                        outcome = "error " + rname(rtype)
                    else:
                        outcome = "closed"
            except socket.timeout:
                pass
            except (ConnectionResetError, BrokenPipeError):
                outcome = "closed"
            check(outcome is not None, "option %d with length %d: no error reply and no close within 5 s "
                  "(server waits for the data)" % (opt, length))
            c.close()
            check(SRV.alive(), "server died after option %d with length %d" % (opt, length))
    c = tx("mem")
    c.read_ok(0, 512)
    c.close()


def t_abort():
    c = conn()
    c.greet()
    c.send_opt(OPT_ABORT)
    # the spec wants an ACK, and old servers just close: accept both, but no error reply
    try:
        c.s.settimeout(5)
        hdr = c.recv_exact(20)
        magic, ropt, rtype, rlen = struct.unpack(">QIII", hdr)
        check(magic == OPT_REPLY_MAGIC and ropt == OPT_ABORT and rtype == REP_ACK,
              "reply to ABORT: type %s" % rname(rtype))
    except Closed:
        pass
    check(c.wait_closed(5), "server did not close after ABORT")
    c.close()
    check(SRV.alive(), "server died after ABORT")


def t_export_name():
    # NO_ZEROES (when the server offers it)
    c = conn()
    c.greet(C_FIXED | C_NO_ZEROES)
    c.send_opt(OPT_EXPORT_NAME, b"mem")
    size, flags = struct.unpack(">QH", c.recv_exact(10))
    if not c.cflags & C_NO_ZEROES:
        check(c.recv_exact(124) == bytes(124), "EXPORT_NAME: 124 bytes not zero")
    check(size == 64 * MiB and flags & RW_FLAGS == RW_FLAGS, "EXPORT_NAME mem: size %d flags 0x%x" % (size, flags))
    c.size = size
    check(c.read_ok(0, 4096) == bytes(SRV.mirror["mem"][:4096]), "read after EXPORT_NAME")
    c.close()
    # without NO_ZEROES: 124 zero bytes follow
    c = conn()
    c.greet(C_FIXED)
    c.send_opt(OPT_EXPORT_NAME, b"ro")
    size, flags = struct.unpack(">QH", c.recv_exact(10))
    check(size == MiB and flags & F_READ_ONLY, "EXPORT_NAME ro: size %d flags 0x%x" % (size, flags))
    check(c.recv_exact(124) == bytes(124), "EXPORT_NAME without NO_ZEROES: 124 bytes not zero")
    check(c.read_ok(MiB - 4096, 4096) == bytes(SRV.mirror["ro"][-4096:]), "read after EXPORT_NAME ro")
    c.close()
    # default export
    c = conn()
    c.greet()
    c.send_opt(OPT_EXPORT_NAME, b"")
    size, flags = struct.unpack(">QH", c.recv_exact(10))
    if not c.cflags & C_NO_ZEROES:
        c.recv_exact(124)
    check(size == 16 * MiB, "EXPORT_NAME '' (default): size %d" % size)
    c.close()
    # after other options, EXPORT_NAME still works
    c = conn()
    c.greet()
    c.expect_final(c.option(0x999), REP_ERR_UNSUP, "unknown option")
    c.send_opt(OPT_EXPORT_NAME, b"mem2")
    size, flags = struct.unpack(">QH", c.recv_exact(10))
    check(size == 16 * MiB, "EXPORT_NAME mem2 after an option: size %d" % size)
    c.close()
    # unknown export: the server must close
    c = conn()
    c.greet()
    c.send_opt(OPT_EXPORT_NAME, b"nosuch")
    check(c.wait_closed(5), "server did not close after EXPORT_NAME of an unknown export")
    c.close()


def t_handshake_eof_storm():
    # clients that vanish at every point of the handshake
    for i in range(60):
        c = conn()
        k = i % 6
        try:
            if k >= 1:
                c.recv_exact(18)
            if k == 2:
                c.send(b"\x00\x00")
            if k >= 3:
                c.send(struct.pack(">I", C_FIXED | C_NO_ZEROES))
            if k == 4:
                c.send(struct.pack(">QII", IHAVEOPT, OPT_GO, 100) + b"\x00" * 10)
            if k == 5:
                c.send(struct.pack(">QI", IHAVEOPT, OPT_GO))
        except (Closed, OSError):
            pass
        c.close()
    time.sleep(0.2)
    check(SRV.alive(), "server died after clients vanished mid-handshake")
    c = tx("mem")
    c.read_ok(0, 512)
    c.close()


def t_bad_option_magic():
    c = conn()
    c.greet()
    c.send(struct.pack(">QII", 0x1122334455667788, OPT_GO, 0))
    # the server may answer with an error or close, but must not hang up the whole process
    c.wait_closed(3)
    c.close()
    check(SRV.alive(), "server died after a bad option magic")


# =====================================================================================
# transmission cases


def both_modes():
    return ((False, "simple"), (True, "structured"))


def t_read_write_roundtrip():
    for structured, mode in both_modes():
        c = tx("mem", structured)
        data = os.urandom(MiB + 333)
        off = 12345 + (7 * MiB if structured else 0)
        c.write_ok(off, data)
        SRV.mirror["mem"][off:off + len(data)] = data
        check(c.read_ok(off, len(data)) == data, "%s: read back differs" % mode)
        check(c.read_ok(off - 45, 100) == bytes(SRV.mirror["mem"][off - 45:off + 55]), "%s: read across start" % mode)
        # an untouched region reads as zeroes (structured: maybe as OFFSET_HOLE chunks)
        check(c.read_ok(40 * MiB + 17, 300000) == bytes(300000), "%s: untouched region not zero" % mode)
        # a read spanning untouched pages, data, untouched pages
        lo = max(0, off - 200000)
        ln = off - lo + len(data) + 200000
        check(c.read_ok(lo, ln) == bytes(SRV.mirror["mem"][lo:lo + ln]), "%s: read across holes and data" % mode)
        # FUA write, flush, cache
        c.write_ok(off, data[:4096], CF_FUA)
        for cmd, what in ((CMD_FLUSH, "flush"), (CMD_CACHE, "cache")):
            r = c.cmd(cmd, 0 if cmd == CMD_FLUSH else off, 0 if cmd == CMD_FLUSH else len(data))
            check(r.error == 0, "%s: %s failed: %s" % (mode, what, ename(r.error)))
            # success without a payload comes as a simple reply in both modes (one receive for
            # the client; the protocol allows it once structured replies are on)
            check(r.simple, "%s: %s answered with a structured chunk" % (mode, what))
        # FUA is valid on every command once SEND_FUA is advertised
        r = c.read(off, 4096, CF_FUA)
        check(r.error == 0 and bytes(r.data) == data[:4096], "%s: READ with FUA flag: %s" % (mode, ename(r.error)))
        c.close()


def t_out_of_range():
    size = 64 * MiB
    for structured, mode in both_modes():
        c = tx("mem", structured, meta=("base:allocation",) if structured else ())
        for off, ln in ((size - 512, 1024), (size, 1), (size + 4096, 4096), ((1 << 64) - 512, 1024),
                        ((1 << 63), 512)):
            expect_err(c.read(off, ln), EINVAL, "%s: read(%d, %d) beyond the end" % (mode, off, ln))
        check(c.read_ok(size - 4096, 4096) == bytes(SRV.mirror["mem"][-4096:]), "%s: read of the last 4 KiB" % mode)
        for off, ln in ((size - 100, 200), (size, 512), ((1 << 64) - 100, 200)):
            r = c.write(off, b"\xee" * ln)
            expect_err(r, (EINVAL, ENOSPC), "%s: write(%d, %d) beyond the end" % (mode, off, ln))
        for cmd, what in ((CMD_TRIM, "trim"), (CMD_WRITE_ZEROES, "write_zeroes")):
            r = c.cmd(cmd, size - 4096, 8192)
            expect_err(r, (EINVAL, ENOSPC), "%s: %s beyond the end" % (mode, what))
        expect_err(c.cmd(CMD_CACHE, size, 4096), EINVAL, "%s: cache beyond the end" % mode)
        if structured:
            expect_err(c.cmd(CMD_BLOCK_STATUS, size - 4096, 8192), EINVAL, "block status beyond the end")
        # nothing of the refused writes landed; the connection is still in sync
        check(c.read_ok(size - 4096, 4096) == bytes(SRV.mirror["mem"][-4096:]), "%s: refused write changed data" % mode)
        c.close()


def t_misaligned_direct():
    m = SRV.mirror["direct"]
    for structured, mode in both_modes():
        c = tx("direct", structured)
        check(c.infos.get(INFO_BLOCK_SIZE, (0,))[0] == 4096, "direct export minimum block size %r" %
              (c.infos.get(INFO_BLOCK_SIZE),))
        for off, ln in ((512, 4096), (0, 100), (4096, 4097), (1, 1)):
            expect_err(c.read(off, ln), EINVAL, "%s: misaligned read(%d, %d) on direct" % (mode, off, ln))
        for off, ln in ((4096 + 512, 4096), (0, 1000), (8192, 4095)):
            expect_err(c.write(off, b"\xee" * ln), EINVAL, "%s: misaligned write(%d, %d) on direct" % (mode, off, ln))
        for cmd, what in ((CMD_TRIM, "trim"), (CMD_WRITE_ZEROES, "write_zeroes")):
            expect_err(c.cmd(cmd, 512, 4096), EINVAL, "%s: misaligned %s on direct" % (mode, what))
        check(c.read_ok(0, 16384) == bytes(m[:16384]), "%s: misaligned requests changed data" % mode)
        data = os.urandom(8192)
        off = 65536 if structured else 131072
        c.write_ok(off, data)
        m[off:off + 8192] = data
        check(c.read_ok(off - 4096, 16384) == bytes(m[off - 4096:off + 12288]), "%s: aligned direct I/O" % mode)
        c.close()


def t_too_big():
    m = SRV.mirror["mem"]
    for structured, mode in both_modes():
        c = tx("mem", structured)
        expect_err(c.read(0, MAX_BLOCK + 1), EOVERFLOW if structured else EINVAL, "%s: read of 32 MiB + 1" % mode)
        expect_err(c.read(0, 64 * MiB), EOVERFLOW if structured else EINVAL, "%s: read of 64 MiB" % mode)
        check(c.read_ok(0, MAX_BLOCK) == bytes(m[:MAX_BLOCK]), "%s: read of exactly 32 MiB" % mode)
        # a too-big write with its whole payload: refused, payload skipped, connection in sync
        c.s.settimeout(60)
        h, raw = c.request(CMD_WRITE, 0, 64 * MiB, payload=b"\xcc" * (64 * MiB), send=False)
        sender = threading.Thread(target=lambda: c.send(raw))
        sender.start()
        r = c.wait(h)
        sender.join(60)
        check(not sender.is_alive(), "%s: server did not consume the payload of a refused 64 MiB write" % mode)
        expect_err(r, EINVAL, "%s: write of 64 MiB" % mode)
        expect_err(c.write(0, b"\xcd" * (MAX_BLOCK + 1)), EINVAL, "%s: write of 32 MiB + 1" % mode)
        check(c.read_ok(0, 8192) == bytes(m[:8192]) and c.read_ok(MAX_BLOCK - 4096, 8192) ==
              bytes(m[MAX_BLOCK - 4096:MAX_BLOCK + 4096]), "%s: a refused big write changed data" % mode)
        data = os.urandom(MAX_BLOCK)
        c.write_ok(32 * MiB, data)
        m[32 * MiB:64 * MiB] = data
        check(c.read_ok(32 * MiB, MAX_BLOCK) == data, "%s: 32 MiB write/read round trip" % mode)
        c.close()


def t_readonly():
    import hashlib
    before = hashlib.sha256(open(SRV.paths["ro"], "rb").read()).hexdigest()
    for structured, mode in both_modes():
        c = tx("ro", structured)
        check(c.tflags & F_READ_ONLY, "ro export lacks READ_ONLY")
        expect_err(c.write(0, b"\x11" * 4096), EPERM, "%s: write to readonly" % mode)
        expect_err(c.write(4096, b"\x11" * 100, CF_FUA), EPERM, "%s: FUA write to readonly" % mode)
        expect_err(c.cmd(CMD_TRIM, 0, 65536), EPERM, "%s: trim on readonly" % mode)
        expect_err(c.cmd(CMD_WRITE_ZEROES, 0, 65536), EPERM, "%s: write_zeroes on readonly" % mode)
        check(c.read_ok(0, 8192) == bytes(SRV.mirror["ro"][:8192]), "%s: read of readonly export" % mode)
        r = c.cmd(CMD_FLUSH, 0, 0)
        check(r.error == 0, "%s: flush on readonly: %s" % (mode, ename(r.error)))
        c.close()
    after = hashlib.sha256(open(SRV.paths["ro"], "rb").read()).hexdigest()
    check(before == after, "readonly backing file changed")


def t_unknown_command_and_flags():
    m = SRV.mirror["mem"]
    for structured, mode in both_modes():
        c = tx("mem", structured)
        for typ, ln in ((42, 0), (CMD_RESIZE, 0), (0xFFFF, 4096), (9, 512)):
            expect_err(c.cmd(typ, 0, ln), EINVAL, "%s: unknown command %d" % (mode, typ))
        # the server did not try to read a payload for them
        check(c.read_ok(0, 4096) == bytes(m[:4096]), "%s: read after unknown commands" % mode)
        expect_err(c.read(0, 4096, 0x8000), EINVAL, "%s: READ with unknown flag 0x8000" % mode)
        expect_err(c.read(0, 4096, 0x0100), EINVAL, "%s: READ with unknown flag 0x0100" % mode)
        expect_err(c.cmd(CMD_FLUSH, 0, 0, 0x4000), EINVAL, "%s: FLUSH with unknown flag" % mode)
        off = 20 * MiB + 4096
        expect_err(c.write(off, b"\xab" * 65536, 0x4000), EINVAL, "%s: WRITE with unknown flag" % mode)
        check(c.read_ok(off, 65536) == bytes(m[off:off + 65536]), "%s: refused WRITE changed data" % mode)
        expect_err(c.cmd(CMD_TRIM, off, 4096, 0x2000), EINVAL, "%s: TRIM with unknown flag" % mode)
        c.close()


def t_bad_magic_isolated():
    a = tx("mem", True)
    b = tx("mem")
    a.read_ok(0, 512)
    b.read_ok(0, 512)
    a.send(struct.pack(">IHHQQI", 0xDEADBEEF, 0, CMD_READ, 1, 0, 512))
    check(a.wait_closed(5), "server did not close the connection that sent a bad request magic")
    a.close()
    check(b.read_ok(4096, 4096) == bytes(SRV.mirror["mem"][4096:8192]), "second connection broken by the first's bad magic")
    # bad magic in the middle of a pipeline of good requests
    c = tx("mem")
    h1, raw1 = c.request(CMD_READ, 0, 4096, send=False)
    c.send(raw1 + struct.pack(">IHHQQI", 0x25609514, 0, CMD_READ, 2, 0, 512))
    try:
        r = c.wait(h1)
        check(r.error == 0, "read before a bad magic: %s" % ename(r.error))
    except Closed:
        pass  # replying to the earlier request is not required
    check(c.wait_closed(5), "server did not close after a bad magic following a good request")
    c.close()
    check(b.read_ok(0, 512) == bytes(SRV.mirror["mem"][:512]), "second connection broken")
    b.close()
    check(SRV.alive(), "server died after a bad request magic")


def t_disconnect_mid_write():
    m = SRV.mirror["file"]
    off, ln = 2 * MiB + 123, MiB
    for sent in (0, 300 * KiB, ln - 1):
        c = tx("file")
        h, raw = c.request(CMD_WRITE, off, ln, payload=b"\xee" * ln, send=False)
        c.send(raw[:28 + sent])
        c.close()
        time.sleep(0.3)
        d = tx("file")
        check(d.read_ok(off, ln) == bytes(m[off:off + ln]),
              "write with %d of %d payload bytes before disconnect changed the export" % (sent, ln))
        d.close()
    # the same mid-header
    c = tx("file")
    c.send(struct.pack(">IHHQ", REQ_MAGIC, 0, CMD_WRITE, 5))
    c.close()
    time.sleep(0.2)
    check(SRV.alive(), "server died after clients vanished mid-request")


def t_pipelined():
    m = SRV.mirror["file"]
    rnd = random.Random(99)
    for structured, mode in both_modes():
        c = tx("file", structured)
        reqs = {}
        raws = []
        used = set()
        for i in range(64):
            while True:
                h = rnd.getrandbits(64)
                if h not in used:
                    used.add(h)
                    break
            off = rnd.randrange(0, 16 * MiB - 200000)
            ln = rnd.choice((1, 512, 4096, 65536, 131072, 199999))
            hh, raw = c.request(CMD_READ, off, ln, handle=h, send=False)
            reqs[h] = (off, ln)
            raws.append(raw)
        c.send(b"".join(raws))
        done = set()
        while len(done) < 64:
            h = c.recv_one()
            if h is None:
                continue
            check(h in reqs and h not in done, "%s: reply for unexpected handle 0x%x" % (mode, h))
            r = c.ready.pop(h)
            off, ln = reqs[h]
            check(r.error == 0, "%s: pipelined read failed: %s" % (mode, ename(r.error)))
            check(bytes(r.data) == bytes(m[off:off + ln]), "%s: pipelined read(%d, %d) wrong data" % (mode, off, ln))
            done.add(h)
        check(not c.pending, "%s: %d requests unanswered" % (mode, len(c.pending)))
        # 48 pipelined writes to distinct ranges + a flush, then 48 pipelined reads of them. Large
        # writes (after which the server reads the next header alone) alternate with small ones
        # that arrive packed behind them.
        base = 20 * MiB + (8 * MiB if structured else 0)
        mm = SRV.mirror["mem"]
        c2 = tx("mem", structured)
        hs, raws, datas = [], [], []
        for i in range(48):
            d = os.urandom(65536 + i if i % 3 else 1 + 37 * i)
            o = base + i * 131072 + i
            h, raw = c2.request(CMD_WRITE, o, len(d), payload=d, send=False)
            hs.append(h)
            raws.append(raw)
            datas.append((o, d))
        hf, rawf = c2.request(CMD_FLUSH, 0, 0, send=False)
        c2.send(b"".join(raws))
        for r in c2.wait_all(hs):
            check(r.error == 0, "%s: pipelined write failed: %s" % (mode, ename(r.error)))
        c2.send(rawf)
        check(c2.wait(hf).error == 0, "%s: flush after pipelined writes failed" % mode)
        for o, d in datas:
            mm[o:o + len(d)] = d
        hs, raws = [], []
        for o, d in datas:
            h, raw = c2.request(CMD_READ, o, len(d), send=False)
            hs.append(h)
            raws.append(raw)
        c2.send(b"".join(raws))
        for (o, d), r in zip(datas, c2.wait_all(hs)):
            check(r.error == 0 and bytes(r.data) == d, "%s: pipelined read-back at %d differs" % (mode, o))
        c.close()
        c2.close()


def t_deep_pipeline():
    """4096 reads (128 MiB of replies) sent before reading anything: backpressure, no deadlock."""
    m = SRV.mirror["file"]
    for structured, mode in both_modes():
        c = tx("file", structured)
        c.s.settimeout(30)
        rnd = random.Random(7)
        reqs, raws = {}, []
        for i in range(4096):
            off = rnd.randrange(0, 16 * MiB - 32768)
            h, raw = c.request(CMD_READ, off, 32768, send=False)
            reqs[h] = off
            raws.append(raw)
        sender = threading.Thread(target=lambda: c.send(b"".join(raws)))
        sender.start()
        sender.join(30)
        check(not sender.is_alive(), "%s: server stopped reading requests (4096 x 28 bytes)" % mode)
        n = 0
        while n < 4096:
            h = c.recv_one()
            if h is None:
                continue
            r = c.ready.pop(h)
            check(r.error == 0 and bytes(r.data) == bytes(m[reqs[h]:reqs[h] + 32768]),
                  "%s: deep pipeline read at %d wrong (%s)" % (mode, reqs[h], ename(r.error)))
            n += 1
        c.close()


def t_vanish_with_reads_in_flight():
    for i in range(20):
        c = tx("mem", i % 2 == 0)
        raws = [c.request(CMD_READ, j * MiB, MiB, send=False)[1] for j in range(32)]
        c.send(b"".join(raws))
        c.s.recv(100)
        if i % 3 == 0:
            c.s.shutdown(socket.SHUT_WR)
        c.close()
    time.sleep(0.3)
    check(SRV.alive(), "server died after clients vanished with reads in flight")
    c = tx("mem", True)
    check(c.read_ok(0, MiB) == bytes(SRV.mirror["mem"][:MiB]), "read after vanished clients")
    c.close()


def t_idle_handshakes_do_not_block():
    idle = []
    for i in range(50):
        c = conn()
        if i % 2:
            c.recv_exact(18)  # read the greeting, never answer
        idle.append(c)
    c = tx("mem")
    check(c.read_ok(0, 4096) == bytes(SRV.mirror["mem"][:4096]), "read while 50 clients idle in the handshake")
    c.close()
    for c in idle:
        c.close()


def t_disc_with_writes_in_flight():
    mm = SRV.mirror["mem"]
    c = tx("mem")
    raws, datas, hs = [], [], []
    for i in range(16):
        d = os.urandom(256 * KiB)
        o = 48 * MiB + i * 256 * KiB
        h, raw = c.request(CMD_WRITE, o, len(d), payload=d, send=False)
        raws.append(raw)
        datas.append((o, d))
        hs.append(h)
    _, disc = c.request(CMD_DISC, 0, 0, send=False)
    c.send(b"".join(raws) + disc)
    replies = 0
    try:
        while True:
            h = c.recv_one()
            if h is not None:
                r = c.ready.pop(h)
                check(r.error == 0, "write before DISC failed: %s" % ename(r.error))
                replies += 1
    except Closed:
        pass
    check(replies == 16, "only %d of 16 writes sent before DISC were answered before the close" % replies)
    c.close()
    for o, d in datas:
        mm[o:o + len(d)] = d
    v = tx("mem")
    for o, d in datas:
        check(v.read_ok(o, len(d)) == d, "write sent before DISC at %d was not applied" % o)
    v.close()


def t_block_status():
    c = tx("mem2", True, meta=("base:allocation",))
    cid = c.meta["base:allocation"]
    size = 16 * MiB

    def extents(off, ln, flags=0):
        r = c.cmd(CMD_BLOCK_STATUS, off, ln, flags)
        check(r.error == 0, "block status(%d, %d): %s" % (off, ln, ename(r.error)))
        return r.extents[cid]

    def full_map():
        out, pos = [], 0
        while pos < size:
            ext = extents(pos, size - pos)
            for ln, fl in ext:
                if out and out[-1][2] == (fl & 3):
                    out[-1][1] += ln
                else:
                    out.append([pos, ln, fl & 3])
                pos += ln
        return out

    # 4 KiB of data at 1 MiB + 4 KiB (also written by t_meta_context): page [1M, 1M+64K) allocated
    c.write_ok(MiB + 4096, b"\x5a" * 4096)
    SRV.mirror["mem2"][MiB + 4096:MiB + 8192] = b"\x5a" * 4096
    want = [[0, MiB, 3], [MiB, 65536, 0], [MiB + 65536, size - MiB - 65536, 3]]
    got = full_map()
    check(got == want, "memory block status %r, expected %r" % (got, want))
    ext = extents(0, size, CF_REQ_ONE)
    check(len(ext) == 1 and 0 < ext[0][0] <= MiB and ext[0][1] & 3 == 3, "REQ_ONE at 0: %r" % ext)
    ext = extents(MiB, size - MiB, CF_REQ_ONE)
    check(len(ext) == 1 and 0 < ext[0][0] <= 65536 and ext[0][1] & 3 == 0, "REQ_ONE at 1 MiB: %r" % ext)
    ext = extents(MiB + 100, 1000, CF_REQ_ONE)
    check(len(ext) == 1 and ext[0][0] <= 1000 and ext[0][1] & 1 == 0, "REQ_ONE unaligned in data: %r" % ext)
    # trim frees pages: allocate 256 KiB, check data, trim, check hole + zeroes
    c.write_ok(4 * MiB, b"\x77" * (256 * KiB))
    ext = extents(4 * MiB, 256 * KiB)
    check(sum(e[0] for e in ext if e[1] & 1 == 0) == 256 * KiB, "written range not reported as data: %r" % ext)
    r = c.cmd(CMD_TRIM, 4 * MiB, 256 * KiB)
    check(r.error == 0, "trim: %s" % ename(r.error))
    ext = extents(4 * MiB, 256 * KiB)
    check(ext[0][1] & 3 == 3 and ext[0][0] >= 256 * KiB, "trimmed pages not reported as hole,zero: %r" % ext)
    check(c.read_ok(4 * MiB, 256 * KiB) == bytes(256 * KiB), "trimmed range does not read as zeroes")
    # write_zeroes (fast zero, no-hole, fua)
    for flags, what in ((CF_FAST_ZERO, "FAST_ZERO"), (CF_NO_HOLE, "NO_HOLE"), (CF_FUA, "FUA"), (0, "plain")):
        c.write_ok(6 * MiB, b"\x66" * (128 * KiB))
        r = c.cmd(CMD_WRITE_ZEROES, 6 * MiB + 512, 64 * KiB, flags)
        check(r.error == 0, "write_zeroes %s on memory: %s" % (what, ename(r.error)))
        got = c.read_ok(6 * MiB, 128 * KiB)
        check(got == b"\x66" * 512 + bytes(64 * KiB) + b"\x66" * (64 * KiB - 512), "write_zeroes %s: wrong bytes" % what)
    c.close()
    # block status without a negotiated context, and without structured replies
    for structured in (True, False):
        d = tx("mem2", structured)
        expect_err(d.cmd(CMD_BLOCK_STATUS, 0, 4096), EINVAL,
                   "block status without meta context (%s)" % ("structured" if structured else "simple"))
        d.read_ok(0, 512)
        d.close()
    # file export: data [0,8M), hole [8M,12M), data [12M,16M)
    f = tx("file", True, meta=("base:allocation",))
    fid = f.meta["base:allocation"]
    out, pos = [], 0
    while pos < 16 * MiB:
        r = f.cmd(CMD_BLOCK_STATUS, pos, 16 * MiB - pos)
        check(r.error == 0, "file block status: %s" % ename(r.error))
        for ln, fl in r.extents[fid]:
            if out and out[-1][2] == (fl & 3):
                out[-1][1] += ln
            else:
                out.append([pos, ln, fl & 3])
            pos += ln
    # the test may have written inside the hole? no: file writes stay below 8 MiB
    want = [[0, 8 * MiB, 0], [8 * MiB, 4 * MiB, 3], [12 * MiB, 4 * MiB, 0]]
    check(out == want, "file block status %r, expected %r" % (out, want))
    f.close()


def t_many_connections():
    cs = [tx(("mem", "file", "ro", "mem2")[i % 4], i % 2 == 0) for i in range(40)]
    for c in cs:
        c.read_ok(0, 4096)
    for c in cs:
        c.disc()
        c.close()
    c = tx("mem")
    c.read_ok(0, 512)
    c.close()


def t_multi_conn_visibility():
    a = tx("file")
    b = tx("file", True)
    d = os.urandom(10000)
    a.write_ok(5 * MiB + 1, d)
    check(a.cmd(CMD_FLUSH, 0, 0).error == 0, "flush failed")
    SRV.mirror["file"][5 * MiB + 1:5 * MiB + 10001] = d
    check(b.read_ok(5 * MiB + 1, 10000) == d, "write + flush on one connection not visible on another")
    a.close()
    b.close()


TESTS = [
    t_greeting_and_go,
    t_unknown_option_then_go,
    t_go_bad_lengths,
    t_structured_reply_with_data,
    t_go_info_unknown_export,
    t_long_export_names,
    t_info_then_go,
    t_list,
    t_meta_context,
    t_bad_client_flags,
    t_huge_option_length,
    t_abort,
    t_export_name,
    t_handshake_eof_storm,
    t_bad_option_magic,
    t_read_write_roundtrip,
    t_out_of_range,
    t_misaligned_direct,
    t_too_big,
    t_readonly,
    t_unknown_command_and_flags,
    t_bad_magic_isolated,
    t_disconnect_mid_write,
    t_pipelined,
    t_disc_with_writes_in_flight,
    t_deep_pipeline,
    t_vanish_with_reads_in_flight,
    t_idle_handshakes_do_not_block,
    t_block_status,
    t_df_flag,
    t_many_connections,
    t_multi_conn_visibility,
]


def main():
    global SRV
    if not os.access(VOLGATE, os.X_OK):
        print("FAIL [test_protocol_abuse.py]: volgate binary not found at %r (set VOLGATE)" % VOLGATE, file=sys.stderr)
        return 1
    only = sys.argv[1:]
    SRV = Server()
    failures = []
    try:
        SRV.start()
        for t in TESTS:
            if only and t.__name__ not in only:
                continue
            t0 = time.monotonic()
            try:
                t()
                print("ok   [test_protocol_abuse.py]: %s (%.0f ms)" % (t.__name__, (time.monotonic() - t0) * 1000))
            except Exception as e:  # noqa: BLE001 - every case reports, the next one runs
                kind = type(e).__name__
                msg = "%s: %s: %s" % (t.__name__, kind, e)
                if os.environ.get("VERBOSE") or not isinstance(e, (TestFailure, ProtocolViolation, Closed, OSError)):
                    traceback.print_exc()
                print("FAIL [test_protocol_abuse.py]: " + msg, file=sys.stderr)
                failures.append(msg)
            sys.stdout.flush()
            if not SRV.alive():
                failures.append("server died during %s (exit code %s)" % (t.__name__, SRV.proc.returncode))
                print("FAIL [test_protocol_abuse.py]: server died during %s (exit %s); log:\n%s" %
                      (t.__name__, SRV.proc.returncode, SRV.log_tail()), file=sys.stderr)
                break
        if SRV.alive():
            rc = SRV.stop()
            if rc != 0:
                failures.append("server exit code after SIGTERM: %s (None = still running after 10 s)" % rc)
                print("FAIL [test_protocol_abuse.py]: exit code after SIGTERM %s" % rc, file=sys.stderr)
            else:
                print("ok   [test_protocol_abuse.py]: server alive after all cases, exits 0 on SIGTERM")
                # the file export holds what the tests wrote (mirror), after the clean shutdown
                if open(SRV.paths["file"], "rb").read() != bytes(SRV.mirror["file"]):
                    failures.append("file export's backing file differs from the expected content after shutdown")
                    print("FAIL [test_protocol_abuse.py]: backing file content differs after shutdown", file=sys.stderr)
    finally:
        # However the server ended (stopped, died, killed here), a sanitizer report it wrote
        # fails the run, as lib.sh does for the shell tests.
        SRV.kill()
        report = SRV.sanitizer_report()
        if report:
            failures.append("sanitizer report in the server log")
            print("FAIL [test_protocol_abuse.py]: sanitizer report in %s:\n%s" % (SRV.err_path, report),
                  file=sys.stderr)
        if failures:
            print("---- volgate stderr (tail) ----\n" + SRV.log_tail(30), file=sys.stderr)
        SRV.cleanup()
    if failures:
        print("\n%d failure(s):\n  %s" % (len(failures), "\n  ".join(failures)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
