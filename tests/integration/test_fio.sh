#!/usr/bin/env bash
# fio's nbd engine against volgate with crc32c verification: 4 KiB random writes at depth 32,
# 1 MiB sequential writes at depth 16, two connections at once, variable sub-4K block sizes,
# and a second fio process that only verifies what the first one wrote. Memory, file and
# direct-file exports. Any I/O error or verify failure fails the test. Then --poll-max-us 1000
# and 0: the data is right with both, and the first makes the server sleep far less often at
# queue depth 1 (the window is used).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_volgate
require_tool fio
need_disk_tmpdir

S=$TEST_TMP/s.sock
PORT=$(free_tcp_port)
truncate -s 256M "$TEST_TMP/file.img" "$DISK_TMP/direct.img"
start_volgate --unix "$S" --listen "127.0.0.1:$PORT" \
    --export "mem=memory:256M" \
    --export "file=file:$TEST_TMP/file.img" \
    --export "direct=file:$DISK_TMP/direct.img,direct"
u() { unix_uri "$1" "$S"; }

N=0
# run_fio WHAT EXPECT_WRITE_BYTES EXPECT_READ_BYTES FIO-ARGS...   (-1: do not check writes;
# verify_only runs count the writes they pretend to do)
run_fio() {
    local what=$1 wbytes=$2 rbytes=$3
    shift 3
    N=$((N + 1))
    local js=$TEST_TMP/fio.$N.json t0 rc=0
    t0=$(now_ms)
    # run in the scratch directory: fio drops *-verify.state files into its working directory
    (cd "$TEST_TMP" && timeout -k 5 120 fio --output-format=json --output="$js" --verify_fatal=1 \
        --verify_state_save=0 --group_reporting=0 --ioengine=nbd "$@") >"$TEST_TMP/fio.$N.log" 2>&1 || rc=$?
    [[ $rc == 0 ]] || fail "$what: fio exit code $rc: $(grep -v 'connected to NBD' "$TEST_TMP/fio.$N.log" | tail -n 5)"
    "$SYSPY" - "$js" "$wbytes" "$rbytes" <<'EOF' || fail "$what: fio reported errors (json: $js)"
import json, sys
d = json.load(open(sys.argv[1]))
wb, rb = int(sys.argv[2]), int(sys.argv[3])
errs = []
tw = tr = 0
for j in d["jobs"]:
    if j.get("error", 0) != 0:
        errs.append("job %s: error %d" % (j["jobname"], j["error"]))
    for k in ("read", "write", "trim"):
        if j.get(k, {}).get("total_err", 0):
            errs.append("job %s: %s errors %d" % (j["jobname"], k, j[k]["total_err"]))
    tw += j["write"]["io_bytes"]
    tr += j["read"]["io_bytes"]
if wb >= 0 and tw != wb:
    errs.append("wrote %d bytes, expected %d" % (tw, wb))
if tr != rb:
    errs.append("read (verified) %d bytes, expected %d" % (tr, rb))
if errs:
    print("\n".join(errs), file=sys.stderr)
    sys.exit(1)
EOF
    pass "$what ($(($(now_ms) - t0)) ms)"
}

M64=$((64 << 20))
for e in mem file direct; do
    run_fio "$e: 4k randwrite depth 32, verify crc32c" $M64 $M64 \
        --name=rand --uri="$(u "$e")" --rw=randwrite --bs=4k --iodepth=32 --size=64M \
        --verify=crc32c --do_verify=1
    run_fio "$e: 1M seq write depth 16, verify crc32c" $((128 << 20)) $((128 << 20)) \
        --name=seq --uri="$(u "$e")" --rw=write --bs=1M --iodepth=16 --offset=64M --size=128M \
        --verify=crc32c --do_verify=1
    # a separate process (new connection) verifies what the last one wrote
    run_fio "$e: verify_only pass of the 1M sequential data" -1 $((128 << 20)) \
        --name=seq --uri="$(u "$e")" --rw=write --bs=1M --iodepth=16 --offset=64M --size=128M \
        --verify=crc32c --verify_only
done

# two connections at once (two jobs), separate halves of the first 128 MiB
run_fio "mem: 2 jobs x 4k randwrite depth 32, verify" $((128 << 20)) $((128 << 20)) \
    --name=multi --uri="$(u mem)" --rw=randwrite --bs=4k --iodepth=32 --size=64M \
    --numjobs=2 --offset_increment=64M --verify=crc32c --do_verify=1
run_fio "file: 2 jobs x 64k randwrite depth 8, verify" $((128 << 20)) $((128 << 20)) \
    --name=multi --uri="$(u file)" --rw=randwrite --bs=64k --iodepth=8 --size=64M \
    --numjobs=2 --offset_increment=64M --verify=crc32c --do_verify=1

# variable, unaligned block sizes (512 B .. 64 KiB) on byte-granular exports
for e in mem file; do
    run_fio "$e: bsrange 512-64k randwrite depth 32, verify" $M64 $M64 \
        --name=var --uri="$(u "$e")" --rw=randwrite --bsrange=512-64k --blockalign=512 \
        --iodepth=32 --offset=128M --size=64M --verify=crc32c --do_verify=1
done

# over TCP
run_fio "mem over TCP: 4k randwrite depth 32, verify" $M64 $M64 \
    --name=tcp --uri="nbd://127.0.0.1:$PORT/mem" --rw=randwrite --bs=4k --iodepth=32 --offset=192M --size=64M \
    --verify=crc32c --do_verify=1

# verify while writing (backlog)
run_fio "direct: 4k randwrite with verify_backlog" $M64 $M64 \
    --name=backlog --uri="$(u direct)" --rw=randwrite --bs=4k --iodepth=32 --offset=192M --size=64M \
    --verify=crc32c --verify_backlog=256 --do_verify=1

assert_alive
stop_volgate
pass "server exits 0 on SIGTERM"

# --poll-max-us: windows other than the default are taken, and the data is right with them. At
# queue depth 1 with 300 µs between requests, a window of 1000 µs covers every gap, so the
# worker rarely sleeps; with 0 it sleeps in epoll_wait after most requests. Sleeps are the
# process's voluntary context switches (a yield while polling is not one). A loaded machine can
# keep a worker of either from sleeping (it is preempted instead), so the pair runs up to three
# times until one round shows the difference.
voluntary_switches() { cat "/proc/$1/task/"*/status | awk '/^voluntary_ctxt_switches/ {n += $2} END {print n}'; }
declare -A POLL_PID=() SLEEPS=()
for window in 1000 0; do
    start_volgate --unix "$TEST_TMP/poll$window.sock" --poll-max-us "$window" --export "mem=memory:16M"
    POLL_PID[$window]=$VG_PID
done
for round in 1 2 3; do
    for window in 1000 0; do
        before=$(voluntary_switches "${POLL_PID[$window]}")
        run_fio "--poll-max-us $window: 4k randwrite depth 1, 300 us apart, verify" $((1 << 20)) $((1 << 20)) \
            --name=poll --uri="$(unix_uri mem "$TEST_TMP/poll$window.sock")" --rw=randwrite --bs=4k --iodepth=1 \
            --size=1M --thinktime=300 --verify=crc32c --do_verify=1
        SLEEPS[$window]=$(($(voluntary_switches "${POLL_PID[$window]}") - before))
    done
    info "round $round, 512 requests at depth 1: ${SLEEPS[1000]} sleeps with --poll-max-us 1000, ${SLEEPS[0]} with 0"
    ((SLEEPS[1000] * 2 < SLEEPS[0])) && break
    ((round < 3)) || fail "--poll-max-us 1000 never slept far less often than --poll-max-us 0 (last round ${SLEEPS[1000]} and ${SLEEPS[0]} times): the window is not used"
done
for window in 1000 0; do stop_volgate "${POLL_PID[$window]}"; done
pass "--poll-max-us 1000 and 0: data verified; the server slept ${SLEEPS[1000]} and ${SLEEPS[0]} times over the same 512 requests"
