#!/usr/bin/env bash
# libnbd (nbdsh / python3-libnbd) against volgate: advertised capabilities and block sizes,
# block status with and without REQ_ONE, cache, write_zeroes with FAST_ZERO / NO_HOLE, trim
# freeing memory pages and punching holes in files (block status + allocated blocks), FUA writes
# and flush, multi-conn visibility, 64 async reads in flight, and server-side errors with
# libnbd's client-side checks turned off (set_strict_mode(0)).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_volgate
need_disk_tmpdir
"$SYSPY" -c 'import nbd' 2>/dev/null || fail "python3-libnbd is not installed for $SYSPY"

S=$TEST_TMP/s.sock
truncate -s 8M "$TEST_TMP/file.img" "$DISK_TMP/disk.img" "$DISK_TMP/direct.img"
head -c 1M /dev/urandom >"$TEST_TMP/ro.img"
start_volgate --unix "$S" \
    --export "mem=memory:64M" \
    --export "file=file:$TEST_TMP/file.img" \
    --export "disk=file:$DISK_TMP/disk.img" \
    --export "direct=file:$DISK_TMP/direct.img,direct" \
    --export "ro=file:$TEST_TMP/ro.img,readonly" \
    --export "romem=memory:1M,readonly"

# nbdsh itself (one-liners; exceptions make nbdsh exit non-zero)
nbdsh -u "$(unix_uri mem "$S")" -c 'assert h.can_multi_conn() and h.can_fast_zero() and h.can_cache()' ||
    fail "nbdsh: mem lacks multi-conn / fast-zero / cache"
nbdsh -u "$(unix_uri ro "$S")" -c 'assert h.is_read_only() and not h.can_trim() and not h.can_zero()' ||
    fail "nbdsh: ro export flags"
nbdsh --base-allocation -u "$(unix_uri mem "$S")" -c '
seen = []
h.block_status(65536, 0, lambda ctx, off, e, err: seen.append((ctx, off, list(e))) or 0)
assert seen == [("base:allocation", 0, [65536, 3])], seen
' || fail "nbdsh: block status of an untouched memory page"
pass "nbdsh one-liners: flags and block status"

SOCK=$S FILE_TMPFS=$TEST_TMP/file.img FILE_DISK=$DISK_TMP/disk.img RO_IMG=$TEST_TMP/ro.img \
    "$SYSPY" - <<'EOF' || fail "libnbd checks failed (see above)"
import ctypes, errno, os, sys
import nbd

S = os.environ["SOCK"]
MiB = 1 << 20
failures = []


def uri(name):
    return "nbd+unix:///%s?socket=%s" % (name, S)


def connect(name, meta=True):
    h = nbd.NBD()
    if meta:
        h.add_meta_context("base:allocation")
    h.connect_uri(uri(name))
    return h


def case(fn):
    try:
        fn()
        print("ok   [test_nbdsh.sh]: %s" % fn.__doc__)
    except Exception as e:  # noqa: BLE001 - report every failure, keep going
        failures.append("%s: %s: %s" % (fn.__doc__, type(e).__name__, e))
        print("FAIL [test_nbdsh.sh]: %s: %s: %s" % (fn.__doc__, type(e).__name__, e), file=sys.stderr)
    sys.stdout.flush()
    return fn


def bstatus(h, off, count, flags=0):
    out = []

    def cb(ctx, offset, entries, err):
        assert ctx == "base:allocation", ctx
        out.append((offset, list(entries)))
        return 0
    h.block_status(count, off, cb, flags)
    assert len(out) == 1 and out[0][0] == off, out
    e = out[0][1]
    return [(e[i], e[i + 1]) for i in range(0, len(e), 2)]


def block_map(h, off, count):
    """[[offset, length, flags&3], ...] covering [off, off+count), adjacent equal merged"""
    res, pos, end = [], off, off + count
    while pos < end:
        ext = bstatus(h, pos, end - pos)
        assert ext and all(l > 0 for l, _ in ext), ext
        for l, f in ext:
            l = min(l, end - pos)
            if res and res[-1][2] == f & 3:
                res[-1][1] += l
            else:
                res.append([pos, l, f & 3])
            pos += l
    return res


def expect_errno(fn, allowed, what):
    try:
        fn()
    except nbd.Error as e:
        assert e.errnum in allowed, "%s: errno %s (%s), expected %s" % (what, e.errnum, e.string, allowed)
        return e
    raise AssertionError("%s: succeeded, expected errno %s" % (what, allowed))


@case
def flags():
    "capabilities, block sizes, structured replies and base:allocation"
    for name, size, ro, minbs in (("mem", 64 * MiB, False, 1), ("file", 8 * MiB, False, 1),
                                  ("direct", 8 * MiB, False, 4096), ("ro", MiB, True, 1),
                                  ("romem", MiB, True, 1)):
        h = connect(name)
        assert h.get_size() == size, (name, h.get_size())
        assert h.get_structured_replies_negotiated(), name
        assert h.can_meta_context("base:allocation"), name
        assert h.is_read_only() == ro, (name, "is_read_only")
        assert h.can_flush() and h.can_cache() and h.can_multi_conn(), name
        for f in ("can_trim", "can_zero", "can_fast_zero", "can_fua"):
            assert getattr(h, f)() == (not ro), (name, f, getattr(h, f)())
        assert h.get_block_size(nbd.SIZE_MINIMUM) == minbs, (name, h.get_block_size(nbd.SIZE_MINIMUM))
        assert h.get_block_size(nbd.SIZE_PREFERRED) == 4096, name
        assert h.get_block_size(nbd.SIZE_MAXIMUM) == 32 * MiB, name
        h.shutdown()


@case
def block_status_memory():
    "memory block status: 64 KiB pages, REQ_ONE gives exactly one extent"
    h = connect("mem")
    assert block_map(h, 0, 64 * MiB) == [[0, 64 * MiB, 3]], block_map(h, 0, 64 * MiB)
    h.pwrite(b"\x01" * 100, 3 * MiB + 70000)  # inside page [3M+64K, 3M+128K)
    want = [[0, 3 * MiB + 65536, 3], [3 * MiB + 65536, 65536, 0], [3 * MiB + 131072, 61 * MiB - 131072, 3]]
    got = block_map(h, 0, 64 * MiB)
    assert got == want, got
    e = bstatus(h, 0, 64 * MiB, nbd.CMD_FLAG_REQ_ONE)
    assert len(e) == 1 and 0 < e[0][0] <= 3 * MiB + 65536 and e[0][1] & 3 == 3, e
    e = bstatus(h, 3 * MiB + 65536, 16 * MiB, nbd.CMD_FLAG_REQ_ONE)
    assert len(e) == 1 and 0 < e[0][0] <= 65536 and e[0][1] & 1 == 0, e
    e = bstatus(h, 3 * MiB + 70000, 10, nbd.CMD_FLAG_REQ_ONE)
    assert len(e) == 1 and 0 < e[0][0] <= 10 and e[0][1] & 1 == 0, e
    h.shutdown()


@case
def cache_flush_fua():
    "cache, flush and FUA writes succeed and data is visible"
    for name in ("mem", "file", "direct", "ro"):
        h = connect(name)
        h.cache(MiB, 0)
        h.cache(4096, h.get_size() - 4096)
        h.flush()
        if not h.is_read_only():
            d = os.urandom(8192)
            h.pwrite(d, 4096, nbd.CMD_FLAG_FUA)
            assert h.pread(8192, 4096) == d, name
            h.flush()
        h.shutdown()


@case
def trim_frees_memory():
    "trim frees memory pages: block status turns into holes, reads zero"
    h = connect("mem")
    h.pwrite(b"\xaa" * MiB, 8 * MiB)
    assert block_map(h, 8 * MiB, MiB) == [[8 * MiB, MiB, 0]], block_map(h, 8 * MiB, MiB)
    h.trim(512 * 1024, 8 * MiB)
    got = block_map(h, 8 * MiB, MiB)
    assert got == [[8 * MiB, 512 * 1024, 3], [8 * MiB + 512 * 1024, 512 * 1024, 0]], got
    assert h.pread(512 * 1024, 8 * MiB) == bytes(512 * 1024)
    assert h.pread(512 * 1024, 8 * MiB + 512 * 1024) == b"\xaa" * (512 * 1024)
    h.trim(512 * 1024, 8 * MiB + 512 * 1024, nbd.CMD_FLAG_FUA)
    assert block_map(h, 8 * MiB, MiB) == [[8 * MiB, MiB, 3]]
    h.shutdown()


@case
def zero_memory():
    "write_zeroes on memory (FAST_ZERO, NO_HOLE, FUA, unaligned) reads back zero"
    h = connect("mem")
    for flags in (nbd.CMD_FLAG_FAST_ZERO, nbd.CMD_FLAG_NO_HOLE, nbd.CMD_FLAG_FUA,
                  nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE, 0):
        h.pwrite(b"\x55" * (256 * 1024), 16 * MiB)
        h.zero(100000, 16 * MiB + 777, flags)
        got = h.pread(256 * 1024, 16 * MiB)
        want = b"\x55" * 777 + bytes(100000) + b"\x55" * (256 * 1024 - 100777)
        assert got == want, "flags %d" % flags
    h.shutdown()


# fallocate modes as the server uses them, each with FALLOC_FL_KEEP_SIZE (0x1)
FALLOC_PUNCH_HOLE, FALLOC_ZERO_RANGE = 0x2 | 0x1, 0x10 | 0x1
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def fs_can_fallocate(directory, mode):
    """Whether the filesystem of DIRECTORY does fallocate MODE, tried on a file of its own."""
    path = os.path.join(directory, "fallocate-probe")
    with open(path, "wb") as f:
        f.write(b"\1" * 65536)
        f.flush()
        rc = _libc.fallocate(f.fileno(), mode, 0, 4096)
        err = ctypes.get_errno()
    os.unlink(path)
    if rc == 0:
        return True
    if err in (errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, "fallocate probe in %s: %s" % (directory, os.strerror(err)))


def file_holes(name, path):
    h = connect(name)
    h.pwrite(os.urandom(8 * MiB), 0)
    h.flush()
    full = os.stat(path).st_blocks
    assert full >= 8 * MiB // 512, "%s: only %d blocks allocated after writing 8 MiB" % (name, full)
    assert block_map(h, 0, 8 * MiB) == [[0, 8 * MiB, 0]], block_map(h, 0, 8 * MiB)
    # trim punches a hole
    h.trim(2 * MiB, 0)
    h.flush()
    b1 = os.stat(path).st_blocks
    assert full - b1 >= 2 * MiB // 512, "%s: trim of 2 MiB freed %d blocks" % (name, full - b1)
    assert block_map(h, 0, 2 * MiB) == [[0, 2 * MiB, 3]], block_map(h, 0, 2 * MiB)
    assert h.pread(2 * MiB, 0) == bytes(2 * MiB)
    # write_zeroes without NO_HOLE punches too
    h.zero(2 * MiB, 2 * MiB)
    h.flush()
    b2 = os.stat(path).st_blocks
    assert b1 - b2 >= 2 * MiB // 512, "%s: write_zeroes of 2 MiB freed %d blocks" % (name, b1 - b2)
    assert block_map(h, 2 * MiB, 2 * MiB)[0][2] & 2, block_map(h, 2 * MiB, 2 * MiB)
    assert h.pread(2 * MiB, 2 * MiB) == bytes(2 * MiB)
    # NO_HOLE: reads zero, stays allocated
    h.zero(2 * MiB, 4 * MiB, nbd.CMD_FLAG_NO_HOLE)
    h.flush()
    b3 = os.stat(path).st_blocks
    assert b2 - b3 < MiB // 512, "%s: write_zeroes with NO_HOLE freed %d blocks" % (name, b2 - b3)
    assert h.pread(2 * MiB, 4 * MiB) == bytes(2 * MiB)
    # FAST_ZERO: advertised for every writable file export, and done only by the filesystem's
    # fallocate (PUNCH_HOLE, or ZERO_RANGE with NO_HOLE), never by writing zeroes. So the answer
    # is decided by what this filesystem can do: a success that frees (or keeps) the blocks where
    # it has that operation, ENOTSUP with the data untouched where it has not (tmpfs has no
    # ZERO_RANGE, ext4 has both).
    assert h.can_fast_zero(), name
    for flags, mode in ((nbd.CMD_FLAG_FAST_ZERO, FALLOC_PUNCH_HOLE),
                        (nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE, FALLOC_ZERO_RANGE)):
        what = "%s: FAST_ZERO%s" % (name, "|NO_HOLE" if flags & nbd.CMD_FLAG_NO_HOLE else "")
        h.pwrite(b"\x33" * MiB, 6 * MiB)
        h.flush()
        before = os.stat(path).st_blocks
        if fs_can_fallocate(os.path.dirname(path), mode):
            h.zero(MiB, 6 * MiB, flags)
            h.flush()
            assert h.pread(MiB, 6 * MiB) == bytes(MiB), what
            freed = before - os.stat(path).st_blocks
            if mode == FALLOC_PUNCH_HOLE:
                assert freed >= MiB // 512, "%s freed %d blocks" % (what, freed)
                assert block_map(h, 6 * MiB, MiB) == [[6 * MiB, MiB, 3]], (what, block_map(h, 6 * MiB, MiB))
            else:
                assert freed < MiB // 512, "%s freed %d blocks" % (what, freed)
            print("..   [test_nbdsh.sh]: %s: done by the filesystem" % what)
        else:
            expect_errno(lambda: h.zero(MiB, 6 * MiB, flags), (errno.ENOTSUP,), what)
            assert h.pread(MiB, 6 * MiB) == b"\x33" * MiB, "%s: refused but changed the data" % what
            print("..   [test_nbdsh.sh]: %s: ENOTSUP (the filesystem cannot)" % what)
    # unaligned zero and trim in the middle of data
    h.pwrite(b"\x44" * 65536, 7 * MiB)
    h.zero(1000, 7 * MiB + 5)
    assert h.pread(65536, 7 * MiB) == b"\x44" * 5 + bytes(1000) + b"\x44" * (65536 - 1005)
    h.shutdown()
    data = open(path, "rb").read()
    assert data[:4 * MiB] == bytes(4 * MiB) and data[7 * MiB + 5:7 * MiB + 1005] == bytes(1000), name


@case
def file_tmpfs_holes():
    "file on tmpfs: trim and write_zeroes punch holes (st_blocks, block status), NO_HOLE keeps blocks"
    file_holes("file", os.environ["FILE_TMPFS"])


@case
def file_disk_holes():
    "file on a disk filesystem: trim and write_zeroes punch holes, NO_HOLE keeps blocks"
    file_holes("disk", os.environ["FILE_DISK"])


@case
def multi_conn():
    "multi-conn: a flushed write on one connection is visible on another"
    a, b = connect("file"), connect("file")
    d = os.urandom(123457)
    a.pwrite(d, 5 * MiB + 3)
    a.flush()
    assert b.pread(len(d), 5 * MiB + 3) == d
    b.pwrite(d[::-1], 5 * MiB + 3, nbd.CMD_FLAG_FUA)
    assert a.pread(len(d), 5 * MiB + 3) == d[::-1]
    a.shutdown()
    b.shutdown()


@case
def aio_pipeline():
    "64 asynchronous reads and writes in flight on one connection"
    h = connect("mem")
    chunks = [(i * 300000 + 11, os.urandom(4096 + i)) for i in range(64)]
    cookies = [h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(d)), off) for off, d in chunks]
    while h.aio_in_flight() > 0:
        h.poll(-1)
    for c in cookies:
        assert h.aio_command_completed(c)
    bufs = [(nbd.Buffer(len(d)), d) for off, d in chunks]
    cookies = [h.aio_pread(b, off) for (off, _), (b, _) in zip(chunks, bufs)]
    while h.aio_in_flight() > 0:
        h.poll(-1)
    for c, (b, d) in zip(cookies, bufs):
        assert h.aio_command_completed(c)
        assert bytes(b.to_bytearray()) == d
    h.shutdown()


@case
def server_errors():
    "errors from the server with libnbd strict mode off: EINVAL, ENOSPC, EPERM, EOVERFLOW"
    h = connect("mem")
    h.set_strict_mode(0)
    size = h.get_size()
    expect_errno(lambda: h.pread(1024, size - 512), (errno.EINVAL,), "pread beyond the end")
    expect_errno(lambda: h.pread(1, size), (errno.EINVAL,), "pread at the end")
    expect_errno(lambda: h.pwrite(b"x" * 1024, size - 512), (errno.EINVAL, errno.ENOSPC), "pwrite beyond the end")
    expect_errno(lambda: h.trim(8192, size - 4096), (errno.EINVAL, errno.ENOSPC), "trim beyond the end")
    expect_errno(lambda: h.zero(8192, size - 4096), (errno.EINVAL, errno.ENOSPC), "zero beyond the end")
    expect_errno(lambda: h.pread(32 * MiB + 4096, 0), (errno.EOVERFLOW,), "pread of 32 MiB + 4 KiB")
    expect_errno(lambda: h.pwrite(bytes(32 * MiB + 4096), 0), (errno.EINVAL,), "pwrite of 32 MiB + 4 KiB")
    expect_errno(lambda: h.pread(4096, 0, 0x100), (errno.EINVAL,), "pread with an unknown flag")
    assert h.pread(4096, size - 4096) is not None  # still usable
    h.shutdown()
    h = connect("ro")
    h.set_strict_mode(0)
    expect_errno(lambda: h.pwrite(b"x" * 512, 0), (errno.EPERM,), "pwrite on readonly")
    expect_errno(lambda: h.trim(4096, 0), (errno.EPERM,), "trim on readonly")
    expect_errno(lambda: h.zero(4096, 0), (errno.EPERM,), "zero on readonly")
    assert h.pread(4096, 0) == open(os.environ["RO_IMG"], "rb").read(4096)
    h.shutdown()
    h = connect("romem")
    h.set_strict_mode(0)
    expect_errno(lambda: h.pwrite(b"x" * 512, 0), (errno.EPERM,), "pwrite on readonly memory")
    expect_errno(lambda: h.trim(65536, 0), (errno.EPERM,), "trim on readonly memory")
    assert h.pread(4096, 0) == bytes(4096)
    h.shutdown()
    h = connect("direct")
    h.set_strict_mode(0)
    expect_errno(lambda: h.pread(100, 0), (errno.EINVAL,), "unaligned pread on direct")
    expect_errno(lambda: h.pread(4096, 512), (errno.EINVAL,), "misaligned pread on direct")
    expect_errno(lambda: h.pwrite(b"y" * 1000, 4096), (errno.EINVAL,), "unaligned pwrite on direct")
    h.pwrite(b"z" * 4096, 4096)
    assert h.pread(8192, 0) == bytes(4096) + b"z" * 4096
    h.shutdown()


if failures:
    print("\n%d libnbd case(s) failed:\n  %s" % (len(failures), "\n  ".join(failures)), file=sys.stderr)
    sys.exit(1)
EOF

assert_alive
stop_volgate
pass "server exits 0 on SIGTERM"
