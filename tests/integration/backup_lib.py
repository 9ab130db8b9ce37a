"""Helpers for the backup tests: seeded writes into volume files and a digest of a volume file's
contents that reads only its data extents (SEEK_DATA), so that a 1 GiB sparse file is compared
in milliseconds and a hole equals zeros written."""
import hashlib
import os
import random

BLOCK = 64 << 10


def write_random(path, offset, length, seed):
    data = random.Random(seed).randbytes(length)
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def digest(path):
    """SHA-256 over (offset, block) of every 64 KiB block that is not all zeros, and the size."""
    h = hashlib.sha256()
    zero = bytes(BLOCK)
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        h.update(size.to_bytes(8, "little"))
        at = 0
        while at < size:
            try:
                data = os.lseek(fd, at, os.SEEK_DATA)
            except OSError:
                break  # only a hole up to the end
            hole = os.lseek(fd, data, os.SEEK_HOLE)
            block = data - data % BLOCK
            while block < hole:
                piece = os.pread(fd, BLOCK, block)
                if piece != zero[:len(piece)]:
                    h.update(block.to_bytes(8, "little"))
                    h.update(piece)
                block += BLOCK
            at = block
    finally:
        os.close(fd)
    return h.hexdigest()


if __name__ == "__main__":
    import sys
    if sys.argv[1] == "write":
        write_random(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    elif sys.argv[1] == "digest":
        print(digest(sys.argv[2]))
    else:
        raise SystemExit("usage: backup_lib.py write FILE OFFSET LENGTH SEED | digest FILE")
