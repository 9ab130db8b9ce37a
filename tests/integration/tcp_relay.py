#!/usr/bin/python3
"""A TCP relay standing in for the network path to one iSCSI portal, so tests can break it.

    tcp_relay.py [--delay-answers MS] [--iscsi [REWRITES] [--control FILE]] LISTEN TARGET

LISTEN and TARGET are HOST:PORT ([V6ADDR]:PORT for IPv6). Prints "listening" once it accepts
connections. Faults, from the test:
  SIGKILL       the path dies: the kernel closes both ends (restart the relay to heal it)
  SIGUSR1       every connection is reset (RST on both sides); new connections are accepted
  SIGSTOP/CONT  the path freezes and thaws: what was sent meanwhile waits in socket buffers
                and is delivered late, like a stalled network or target process
  --delay-answers MS   everything the target sends reaches the initiator MS later (in order):
                a slow target, which answers every request, late

With --iscsi the relay also reads the iSCSI PDUs going through (RFC 7143: a 48-byte basic
header segment, additional header segments, a data segment padded to 4 bytes; no digests: it
checks that every login ends with HeaderDigest and DataDigest None, and resets the connection
otherwise). It prints one line per SCSI command and one per answer, so a test can see what the
initiator really sent:
  T cmd conn=C itt=I op=WRITE16 lba=L blocks=B fua=0|1
  T cmd conn=C itt=I op=UNMAP ranges=L+B,L+B          (from the parameter list)
  T cmd conn=C itt=I op=WRITESAME16 lba=L blocks=B unmap=0|1
  T status conn=C itt=I op=WRITE16 status=GOOD|BUSY|TASK_SET_FULL|... [injected]
  T login conn=C HeaderDigest=None DataDigest=None
(T: the relay's monotonic clock in ms.) It can also change what the target says:
  --max-transfer-blocks N     MAXIMUM TRANSFER LENGTH in the Block Limits VPD page (0xB0)
  --max-unmap-blocks N        MAXIMUM UNMAP LBA COUNT there
  --max-write-same-blocks N   MAXIMUM WRITE SAME LENGTH there
  --no-dpofua                 clears DPOFUA in MODE SENSE's device-specific parameter
and, on SIGUSR2, it reads commands from the --control file, one a line, and answers each with
"T control N: LINE" (N counts the commands since the start):
  inject STATUS KIND COUNT    the next COUNT commands of KIND (read, write, flush, unmap,
                              writesame, io: any of these) are answered STATUS (BUSY,
                              TASK_SET_FULL) instead of the target's answer. The target did
                              execute them: a retry of the same command is harmless.
"""
import argparse
import collections
import selectors
import signal
import socket
import struct
import sys
import time

BUFFER_LIMIT = 1 << 20  # per direction; reading pauses beyond it, like a real window

BHS = 48
OP_SCSI_COMMAND, OP_DATA_OUT = 0x01, 0x05
OP_SCSI_RESPONSE, OP_LOGIN_RESPONSE, OP_DATA_IN = 0x21, 0x23, 0x25
FULL_FEATURE_PHASE = 3

STATUS_NAMES = {0x00: "GOOD", 0x02: "CHECK_CONDITION", 0x08: "BUSY", 0x18: "RESERVATION_CONFLICT",
                0x28: "TASK_SET_FULL", 0x40: "TASK_ABORTED"}
STATUS_CODES = {name: code for code, name in STATUS_NAMES.items()}

# SCSI operation codes the tests look at: name, kind (for injections).
OPS = {0x28: ("READ10", "read"), 0x88: ("READ16", "read"), 0x2A: ("WRITE10", "write"),
       0x8A: ("WRITE16", "write"), 0x35: ("SYNC_CACHE10", "flush"), 0x91: ("SYNC_CACHE16", "flush"),
       0x42: ("UNMAP", "unmap"), 0x93: ("WRITESAME16", "writesame"), 0x12: ("INQUIRY", None),
       0x1A: ("MODE_SENSE6", None), 0x5A: ("MODE_SENSE10", None), 0x00: ("TEST_UNIT_READY", None),
       0x9E: ("READ_CAPACITY16", None), 0x5E: ("PR_IN", None), 0x5F: ("PR_OUT", None)}
IO_KINDS = ("read", "write", "flush", "unmap", "writesame")
VPD_BLOCK_LIMITS = 0xB0
DPOFUA = 0x10


def now_ms():
    return "%.3f" % (time.monotonic() * 1000)


def say(text):
    print(now_ms(), text, flush=True)


def split_host_port(text):
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def be(data, start, length):
    return int.from_bytes(data[start:start + length], "big")


class Task:
    """One SCSI command in flight on a connection, by its initiator task tag."""

    def __init__(self, op, name, kind):
        self.op, self.name, self.kind = op, name, kind
        self.evpd_page = None      # INQUIRY with EVPD: the page asked for
        self.inject = None         # status to answer instead of the target's
        self.data_in_dropped = 0   # Data-In PDUs of an injected command, kept from the initiator
        self.param = None          # UNMAP: the parameter list, gathered from the Data-Out
        self.param_length = 0


class IscsiConnection:
    """The PDU streams of one relayed connection, both ways, and what the relay does to them."""

    def __init__(self, number, options, injections):
        self.number = number
        self.options = options
        self.injections = injections  # shared by all connections: kind -> [status, count]
        self.buffers = {"initiator": bytearray(), "target": bytearray()}
        self.tasks = {}
        self.digests = {"HeaderDigest": "None", "DataDigest": "None"}
        self.broken = False  # a digest was negotiated: the stream cannot be parsed

    def feed(self, side, data):
        """Bytes from SIDE; returns what to pass on: whole PDUs only, maybe changed. A PDU left
        as it is costs no copy of its own (data PDUs are most of the traffic); a handler that
        changes one patches it in place or returns what goes instead."""
        if self.broken:
            return b""
        buffer = self.buffers[side]
        buffer += data
        handle = self.from_initiator if side == "initiator" else self.from_target
        out = []
        at = unchanged_from = 0
        while len(buffer) - at >= BHS:
            ahs = buffer[at + 4] * 4
            data_length = be(buffer, at + 5, 3)
            length = BHS + ahs + ((data_length + 3) & ~3)
            if len(buffer) - at < length:
                break
            header = bytes(buffer[at:at + BHS])
            instead = handle(header, buffer, at + BHS + ahs, data_length)
            if self.broken:
                return b""
            if instead is not None:
                out.append(buffer[unchanged_from:at])
                out.append(instead)
                unchanged_from = at + length
            at += length
        out.append(buffer[unchanged_from:at])
        del buffer[:at]
        return b"".join(out)

    # --- initiator to target ---------------------------------------------------------------
    def from_initiator(self, header, buffer, data_at, data_length):
        opcode = header[0] & 0x3F
        itt = be(header, 16, 4)
        if opcode == OP_SCSI_COMMAND:
            self.command(header, itt, buffer[data_at:data_at + data_length])
        elif opcode == OP_DATA_OUT:
            task = self.tasks.get(itt)
            if task is not None and task.param is not None:
                self.gather_param(task, itt, be(header, 40, 4), buffer[data_at:data_at + data_length])
        return None

    def command(self, header, itt, immediate_data):
        cdb = header[32:48]
        op = cdb[0]
        name, kind = OPS.get(op, ("OP_%02X" % op, None))
        task = Task(op, name, kind)
        self.tasks[itt] = task
        fields = ""
        if op in (0x88, 0x8A):
            fields = " lba=%d blocks=%d" % (be(cdb, 2, 8), be(cdb, 10, 4))
        elif op in (0x28, 0x2A):
            fields = " lba=%d blocks=%d" % (be(cdb, 2, 4), be(cdb, 7, 2))
        elif op == 0x93:
            fields = " lba=%d blocks=%d unmap=%d" % (be(cdb, 2, 8), be(cdb, 10, 4), (cdb[1] >> 3) & 1)
        elif op == 0x12 and cdb[1] & 1:
            task.evpd_page = cdb[2]
            fields = " page=0x%02x" % cdb[2]
        if op in (0x8A, 0x2A):
            fields += " fua=%d" % ((cdb[1] >> 3) & 1)
        armed = self.injections.get(kind)
        if armed is None and kind is not None:
            armed = self.injections.get("io")
        if armed and armed[1] > 0:
            armed[1] -= 1
            task.inject = armed[0]
        if op == 0x42:
            # The ranges travel in the parameter list: immediate data here, or Data-Out PDUs.
            task.param = bytearray()
            task.param_length = be(cdb, 7, 2)
            self.gather_param(task, itt, 0, immediate_data)
            return
        say("cmd conn=%d itt=0x%08x op=%s%s" % (self.number, itt, name, fields))

    def gather_param(self, task, itt, offset, data):
        if not data:
            return
        if len(task.param) < offset + len(data):
            task.param.extend(bytes(offset + len(data) - len(task.param)))
        task.param[offset:offset + len(data)] = data
        if len(task.param) < task.param_length:
            return
        ranges = []
        descriptors = task.param[8:8 + be(task.param, 2, 2)]
        for at in range(0, len(descriptors) - 15, 16):
            ranges.append("%d+%d" % (be(descriptors, at, 8), be(descriptors, at + 8, 4)))
        task.param = None
        say("cmd conn=%d itt=0x%08x op=UNMAP ranges=%s" % (self.number, itt, ",".join(ranges)))

    # --- target to initiator ---------------------------------------------------------------
    def from_target(self, header, buffer, data_at, data_length):
        opcode = header[0] & 0x3F
        itt = be(header, 16, 4)
        if opcode == OP_LOGIN_RESPONSE:
            return self.login_response(header, buffer[data_at:data_at + data_length])
        task = self.tasks.get(itt)
        if task is None:
            return None
        if opcode == OP_DATA_IN:
            has_status = header[1] & 0x01
            if task.inject is not None:
                task.data_in_dropped += 1
                if not has_status:
                    return b""
                # The answer comes with the last data: it becomes a SCSI Response instead,
                # which is how a target says BUSY (status only in Data-In means success).
                del self.tasks[itt]
                self.report(itt, task, task.inject, True)
                return self.response(itt, task.inject, header[24:36], task.data_in_dropped)
            self.rewrite_data(task, header, buffer, data_at, data_length)
            if has_status:
                del self.tasks[itt]
                self.report(itt, task, header[3], False)
            return None
        if opcode == OP_SCSI_RESPONSE:
            del self.tasks[itt]
            if task.inject is not None and header[2] == 0 and header[3] == 0:
                self.report(itt, task, task.inject, True)
                return self.response(itt, task.inject, header[24:36], be(header, 36, 4))
            self.report(itt, task, header[3], False)
        return None

    def report(self, itt, task, status, injected):
        say("status conn=%d itt=0x%08x op=%s status=%s%s" % (
            self.number, itt, task.name, STATUS_NAMES.get(status, "0x%02x" % status),
            " injected" if injected else ""))

    @staticmethod
    def response(itt, status, sequence_numbers, exp_data_sn):
        """A SCSI Response PDU with STATUS and no data; StatSN, ExpCmdSN and MaxCmdSN as the
        target gave them, so the session's numbering goes on as if the target had said it."""
        bhs = bytearray(BHS)
        bhs[0] = OP_SCSI_RESPONSE
        bhs[1] = 0x80  # final
        bhs[3] = status
        bhs[16:20] = itt.to_bytes(4, "big")
        bhs[24:36] = sequence_numbers
        bhs[36:40] = exp_data_sn.to_bytes(4, "big")
        return bytes(bhs)

    def rewrite_data(self, task, header, buffer, data_at, data_length):
        """Changes, in the buffer, the fields of the target's data that the options name."""
        options = self.options
        offset = be(header, 40, 4)  # where this PDU's data sits in the command's data

        def field(at, length):  # the field's place in the buffer, if it is in this PDU
            if at < offset or at + length > offset + data_length:
                return None
            return data_at + at - offset

        def patch(at, length, value, what):
            place = field(at, length)
            if value is None or place is None:
                return
            old = be(buffer, place, length)
            buffer[place:place + length] = value.to_bytes(length, "big")
            say("rewrote conn=%d %s %d->%d" % (self.number, what, old, value))

        if task.op == 0x12 and task.evpd_page == VPD_BLOCK_LIMITS:
            patch(8, 4, options.max_transfer_blocks, "block-limits max-transfer-blocks")
            patch(20, 4, options.max_unmap_blocks, "block-limits max-unmap-blocks")
            patch(36, 8, options.max_write_same_blocks, "block-limits max-write-same-blocks")
        elif task.op in (0x1A, 0x5A) and options.no_dpofua:
            place = field(2 if task.op == 0x1A else 3, 1)
            if place is not None and buffer[place] & DPOFUA:
                buffer[place] &= ~DPOFUA & 0xFF
                say("rewrote conn=%d mode-sense dpofua 1->0" % self.number)

    def login_response(self, header, text):
        for pair in bytes(text).split(b"\0"):
            key, _, value = pair.decode("ascii", "replace").partition("=")
            if key in self.digests:
                self.digests[key] = value
        transit, next_stage, status_class = header[1] & 0x80, header[1] & 0x03, header[36]
        if transit and next_stage == FULL_FEATURE_PHASE and status_class == 0:
            say("login conn=%d HeaderDigest=%s DataDigest=%s" % (
                self.number, self.digests["HeaderDigest"], self.digests["DataDigest"]))
            if self.digests != {"HeaderDigest": "None", "DataDigest": "None"}:
                say("error conn=%d: digests negotiated; this relay only parses PDUs without "
                    "them: resetting the connection" % self.number)
                self.broken = True
        return None


class Relay:
    def __init__(self, listen, target, options):
        self.target = target
        self.options = options
        self.selector = selectors.DefaultSelector()
        family = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(listen)
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.peer = {}     # socket -> the other end of its pair
        self.pending = {}  # socket -> bytes waiting to be written to it
        self.iscsi = {}    # socket -> (IscsiConnection, "initiator" or "target"): what it sends
        self.servers = set()  # the sockets to the target
        self.delayed = collections.deque()  # (when, socket, bytes): held back by --delay-answers
        self.injections = {}
        self.connections = 0
        self.controls = 0
        self.reset_requested = False
        self.control_requested = False

    def watch(self, sock):
        events = 0
        peer = self.peer.get(sock)
        if peer is not None and len(self.pending.get(peer, b"")) < BUFFER_LIMIT:
            events |= selectors.EVENT_READ
        if self.pending.get(sock):
            events |= selectors.EVENT_WRITE
        try:
            if events:
                self.selector.modify(sock, events) if sock in self.selector.get_map() else \
                    self.selector.register(sock, events)
            elif sock in self.selector.get_map():
                self.selector.unregister(sock)
        except (KeyError, ValueError):
            pass

    def close_pair(self, sock, reset=False):
        for s in (sock, self.peer.get(sock)):
            if s is None or s not in self.peer:
                continue
            if s.fileno() >= 0 and s in self.selector.get_map():
                self.selector.unregister(s)
            if reset:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
            del self.peer[s]
            self.pending.pop(s, None)
            self.iscsi.pop(s, None)
            self.servers.discard(s)

    def accept(self):
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        try:
            server = socket.create_connection(self.target, timeout=2)
        except OSError:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            return
        for s in (client, server):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.peer[client] = server
        self.peer[server] = client
        self.servers.add(server)
        if self.options.iscsi:
            self.connections += 1
            connection = IscsiConnection(self.connections, self.options, self.injections)
            self.iscsi[client] = (connection, "initiator")
            self.iscsi[server] = (connection, "target")
        self.watch(client)
        self.watch(server)

    def readable(self, sock):
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            # The far end finished: pass on what it said last (a login reject, say), then close.
            peer = self.peer[sock]
            try:
                peer.settimeout(1)
                peer.sendall(self.pending.get(peer, b""))
            except OSError:
                pass
            return self.close_pair(sock)
        if sock in self.iscsi:
            connection, side = self.iscsi[sock]
            data = connection.feed(side, data)
            if connection.broken:
                return self.close_pair(sock, reset=True)
        peer = self.peer[sock]
        if self.options.delay_answers and sock in self.servers:
            when = time.monotonic() + self.options.delay_answers / 1000
            self.delayed.append((when, peer, data))
            return
        self.pending[peer] = self.pending.get(peer, b"") + data
        self.watch(peer)
        self.watch(sock)

    def release_delayed(self):
        """Passes on what --delay-answers held back long enough; returns the wait until the next."""
        while self.delayed:
            when, sock, data = self.delayed[0]
            wait = when - time.monotonic()
            if wait > 0:
                return wait
            self.delayed.popleft()
            if sock in self.peer:
                self.pending[sock] = self.pending.get(sock, b"") + data
                self.watch(sock)
        return None

    def writable(self, sock):
        data = self.pending.get(sock, b"")
        try:
            sent = sock.send(data)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return self.close_pair(sock)
        self.pending[sock] = data[sent:]
        self.watch(sock)
        self.watch(self.peer[sock])

    def control(self):
        """Reads the control file and acts on each line not read before."""
        try:
            with open(self.options.control) as f:
                lines = [line.strip() for line in f if line.strip()]
        except OSError as e:
            return say("control: cannot read %s: %s" % (self.options.control, e))
        for line in lines[self.controls:]:
            self.controls += 1
            words = line.split()
            if (len(words) == 4 and words[0] == "inject" and words[1] in STATUS_CODES
                    and words[2] in IO_KINDS + ("io",) and words[3].isdigit()):
                self.injections[words[2]] = [STATUS_CODES[words[1]], int(words[3])]
                say("control %d: %s" % (self.controls, line))
            else:
                say("control %d: not understood: %s" % (self.controls, line))

    def run(self):
        print("listening", flush=True)
        while True:
            if self.reset_requested:
                self.reset_requested = False
                for s in list(self.peer):
                    self.close_pair(s, reset=True)
            if self.control_requested:
                self.control_requested = False
                self.control()
            wait = self.release_delayed()
            for key, events in self.selector.select(timeout=min(0.05, wait or 0.05)):
                sock = key.fileobj
                if sock is self.listener:
                    self.accept()
                    continue
                if sock not in self.peer:
                    continue
                if events & selectors.EVENT_WRITE:
                    self.writable(sock)
                if sock in self.peer and events & selectors.EVENT_READ:
                    self.readable(sock)


def main():
    parser = argparse.ArgumentParser(description="a TCP relay for fault injection")
    parser.add_argument("listen")
    parser.add_argument("target")
    parser.add_argument("--delay-answers", type=int, metavar="MS", help="a slow target (see above)")
    parser.add_argument("--iscsi", action="store_true", help="parse iSCSI PDUs (see above)")
    parser.add_argument("--max-transfer-blocks", type=int)
    parser.add_argument("--max-unmap-blocks", type=int)
    parser.add_argument("--max-write-same-blocks", type=int)
    parser.add_argument("--no-dpofua", action="store_true")
    parser.add_argument("--control", help="commands read on SIGUSR2")
    options = parser.parse_args()
    rewrites = (options.max_transfer_blocks, options.max_unmap_blocks, options.max_write_same_blocks)
    if (any(r is not None for r in rewrites) or options.no_dpofua or options.control) and not options.iscsi:
        parser.error("rewrites and --control need --iscsi")
    relay = Relay(split_host_port(options.listen), split_host_port(options.target), options)

    def on_reset(signum, frame):
        relay.reset_requested = True

    def on_control(signum, frame):
        relay.control_requested = True

    signal.signal(signal.SIGUSR1, on_reset)
    signal.signal(signal.SIGUSR2, on_control)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    relay.run()


if __name__ == "__main__":
    main()
