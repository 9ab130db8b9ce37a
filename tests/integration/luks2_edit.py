#!/usr/bin/python3
"""Rewrites the JSON metadata of a LUKS2 image in place, in both header copies, with valid
checksums: a way to make containers that cryptsetup cannot create here (no device-mapper).

    luks2_edit.py IMAGE requirement NAME   # add NAME to config.requirements.mandatory
    luks2_edit.py IMAGE integrity ALG      # give data segment 0 an integrity section
    luks2_edit.py IMAGE data-offset BYTES  # move data segment 0 (a crafted header, e.g. 1 GiB)
    luks2_edit.py IMAGE sector-size BYTES  # data segment 0's encryption sector size
"""
import hashlib
import json
import struct
import sys

BINARY_HEADER = 4096
CHECKSUM_AT, CHECKSUM_LEN = 448, 64


def rewrite(image, change):
    with open(image, "r+b") as f:
        primary = f.read(BINARY_HEADER)
        assert primary[:6] == b"LUKS\xba\xbe", "not a LUKS2 image"
        (hdr_size,) = struct.unpack(">Q", primary[8:16])
        for at in (0, hdr_size):
            f.seek(at)
            area = bytearray(f.read(hdr_size))
            text = bytes(area[BINARY_HEADER:]).split(b"\0", 1)[0]
            meta = json.loads(text)
            change(meta)
            new = json.dumps(meta, separators=(",", ":")).encode()
            assert len(new) < hdr_size - BINARY_HEADER, "metadata no longer fits"
            area[BINARY_HEADER:] = new + b"\0" * (hdr_size - BINARY_HEADER - len(new))
            area[CHECKSUM_AT:CHECKSUM_AT + CHECKSUM_LEN] = b"\0" * CHECKSUM_LEN
            digest = hashlib.sha256(area).digest()
            area[CHECKSUM_AT:CHECKSUM_AT + len(digest)] = digest
            f.seek(at)
            f.write(area)


def main():
    image, what, value = sys.argv[1:4]
    if what == "requirement":
        def change(meta):
            reqs = meta["config"].setdefault("requirements", {})
            reqs.setdefault("mandatory", []).append(value)
    elif what == "integrity":
        def change(meta):
            meta["segments"]["0"]["integrity"] = {
                "type": value, "journal_encryption": "none", "journal_integrity": "none"}
    elif what == "data-offset":
        def change(meta):
            meta["segments"]["0"]["offset"] = str(int(value))
    elif what == "sector-size":
        def change(meta):
            meta["segments"]["0"]["sector_size"] = int(value)
    else:
        sys.exit("unknown edit " + what)
    rewrite(image, change)


if __name__ == "__main__":
    main()
