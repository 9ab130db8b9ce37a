"""What an initiator sent to an iSCSI target, as `tcp_relay.py --iscsi` logged it, and an NBD
export of that target's LUN checked byte for byte against a model of what it must hold.

    wire = Wire(RELAY_LOG)          # from now on
    ... requests ...
    wire.commands("WRITE16")        # the SCSI commands seen since, in order
    volume = Volume(NBD_URI, LUN_FILE)
    volume.write(offset, data); volume.check(lo, hi)
"""
import os
import signal
import time

import nbd

MiB = 1 << 20


class Wire:
    """The relay's log from a mark on: one record (a dict) per command, answer or control line."""

    def __init__(self, path, pid=None):
        self.path, self.pid = path, pid
        self.controls = 0
        self.mark()

    def _lines(self):
        with open(self.path) as f:
            return f.readlines()

    def mark(self):
        self.start = len(self._lines())

    def records(self):
        out = []
        for line in self._lines()[self.start:]:
            words = line.split()
            if len(words) < 2 or words[1] not in ("cmd", "status", "rewrote"):
                continue
            record = {"t": float(words[0]), "what": words[1], "injected": "injected" in words}
            for word in words[2:]:
                key, _, value = word.partition("=")
                if value:
                    record[key] = int(value) if value.isdigit() else value
            out.append(record)
        return out

    def commands(self, *ops):
        return [r for r in self.records() if r["what"] == "cmd" and (not ops or r["op"] in ops)]

    def answers(self, *ops):
        return [r for r in self.records() if r["what"] == "status" and (not ops or r["op"] in ops)]

    def control(self, control_file, line, timeout=20):
        """Hands LINE to the relay (its --control file and SIGUSR2) and waits for its answer."""
        with open(control_file, "a") as f:
            f.write(line + "\n")
        self.controls += 1
        want = "control %d: " % self.controls
        os.kill(self.pid, signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for text in self._lines():
                if want in text:
                    if "not understood" in text:
                        raise AssertionError("the relay did not understand %r" % line)
                    return
            time.sleep(0.01)
        raise AssertionError("the relay did not take %r within %d s" % (line, timeout))


def tiles(commands, first_block, blocks, limit):
    """The commands' (lba, blocks) cover [first_block, first_block + blocks) exactly, in order,
    none larger than LIMIT blocks. Returns their sizes."""
    at = first_block
    sizes = []
    for c in commands:
        assert c["lba"] == at, "a part starts at block %d, expected %d: %r" % (c["lba"], at, commands)
        assert 0 < c["blocks"] <= limit, "a part of %d blocks, limit %d" % (c["blocks"], limit)
        at += c["blocks"]
        sizes.append(c["blocks"])
    assert at == first_block + blocks, "the parts end at block %d, expected %d" % (at, first_block + blocks)
    return sizes


def unmap_ranges(command):
    return [tuple(int(n) for n in r.split("+")) for r in command["ranges"].split(",")]


def one_after_another(wire, op):
    """Each command OP was sent only after the one before it was answered."""
    records = [r for r in wire.records() if r.get("op") == op and r["what"] in ("cmd", "status")]
    for before, after in zip(records, records[1:]):
        assert before["what"] != after["what"], "two %s %s in a row: parts overlap: %r" % (
            op, before["what"], records)


class Volume:
    """An NBD export of a LUN through volgate, and the model of what the LUN must hold."""

    def __init__(self, uri, lun_path):
        self.lun_path = lun_path
        with open(lun_path, "rb") as f:
            self.model = bytearray(f.read())
        self.h = nbd.NBD()
        self.h.connect_uri(uri)
        assert self.h.get_size() == len(self.model), "export size %d, LUN file %d" % (
            self.h.get_size(), len(self.model))

    def write(self, offset, data, fua=False):
        for at in range(0, len(data), 32 * MiB):  # the largest NBD request volgate takes
            self.h.pwrite(data[at:at + 32 * MiB], offset + at, nbd.CMD_FLAG_FUA if fua else 0)
        self.model[offset:offset + len(data)] = data

    def read(self, offset, length):
        out = bytearray()
        for at in range(offset, offset + length, 32 * MiB):
            out += self.h.pread(min(32 * MiB, offset + length - at), at)
        return bytes(out)

    def trim(self, offset, length):
        self.h.trim(length, offset)
        # Trimmed blocks read as zeroes on this target (LBPRZ); checked by check().
        self.model[offset:offset + length] = bytes(length)

    def zero(self, offset, length, flags=0):
        self.h.zero(length, offset, flags)
        self.model[offset:offset + length] = bytes(length)

    def check(self, offset, length):
        """The export (read through volgate) and the LUN's backing file hold the model there."""
        self._compare("read through the export", offset, self.read(offset, length))
        self.check_lun(offset, length)

    def check_lun(self, offset=0, length=None):
        """The LUN's backing file holds the model there (all of it by default)."""
        length = len(self.model) - offset if length is None else length
        with open(self.lun_path, "rb") as f:
            f.seek(offset)
            self._compare("the LUN's backing file", offset, f.read(length))

    def _compare(self, name, offset, data):
        if len(data) != len(self.model[offset:offset + len(data)]):
            raise AssertionError("%s: %d bytes past the model's end" % (name, len(data)))
        for at in range(0, len(data), 4 * MiB):  # slices, compared by memcmp
            end = min(at + 4 * MiB, len(data))
            want = self.model[offset + at:offset + end]
            if data[at:end] != want:
                first = next(i for i in range(len(want)) if data[at + i] != want[i])
                raise AssertionError("%s differs from the model at byte %d" % (name, offset + at + first))

    def close(self):
        self.h.shutdown()
