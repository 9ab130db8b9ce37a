# shellcheck shell=bash
# The FUSE rows of bench/run.sh (`--fuse`), sourced by it: the same image as a file in a FUSE
# mount, driven by fio's libaio engine with O_DIRECT (the workloads' block sizes and depths):
#   volgate-fuse     volgate serve --fuse DIR --export bench=file:IMAGE (default --fuse-threads)
#   volgate-fuse-1t  the same with --fuse-threads 1 (one thread reads /dev/fuse, as before 2026-12-05)
#   volgate-fuse@base  volgate-fuse with the binary of --baseline (only with it): before and
#                    after a change in one run
#   nbdfuse-volgate  nbdfuse (libnbd-bin) mounting volgate's NBD export of the image
#   qsd-fuse         qemu-storage-daemon's FUSE export of the image (file driver, io_uring)
# Server CPU is the whole stack's: volgate plus nbdfuse for the second row.
# Uses run.sh's helpers (cpu_ticks, parse_fio, workload_args, account_other, alive, log,
# anomaly, RES) and its variables (VOLGATE, IMG, WORK, RUNTIME, RAMP, CLK_TCK).

FUSE_SERVERS=(volgate-fuse volgate-fuse-1t nbdfuse-volgate qsd-fuse)
[[ -n ${BASELINE:-} ]] && FUSE_SERVERS=(volgate-fuse volgate-fuse@base volgate-fuse-1t nbdfuse-volgate qsd-fuse)

fuse_rows_check_tools() {
  command -v nbdfuse >/dev/null || die "nbdfuse not found (apt-get install libnbd-bin)"
  command -v qemu-storage-daemon >/dev/null || die "qemu-storage-daemon not found (apt-get install qemu-system-x86)"
  command -v fusermount3 >/dev/null || die "fusermount3 not found (apt-get install fuse3)"
  [[ -c /dev/fuse ]] || die "/dev/fuse is missing"
}

# fuse_start SERVER ID: starts the stack; sets FUSE_FILE (the file fio uses), FUSE_PIDS (every
# process of the stack, the first started first), FUSE_MNT; returns 1 when it did not come up.
fuse_start() {
  local s=$1 id=$2 i
  local sock=$WORK/$id.sock
  FUSE_PIDS=()
  FUSE_LOG=$WORK/$id.server
  case $s in
    volgate-fuse | volgate-fuse-1t | volgate-fuse@base)
      FUSE_MNT=$WORK/$id.mnt
      mkdir -p "$FUSE_MNT"
      FUSE_FILE=$FUSE_MNT/bench
      local threads=() binary=$VOLGATE
      [[ $s == volgate-fuse-1t ]] && threads=(--fuse-threads 1)
      [[ $s == volgate-fuse@base ]] && binary=$BASELINE
      RES[$s|cmd]="volgate serve --fuse DIR ${threads[*]}${threads:+ }--export bench=file:IMAGE"
      [[ $s == volgate-fuse@base ]] && RES[$s|cmd]="$BASELINE serve --fuse DIR --export bench=file:IMAGE"
      "$binary" serve --fuse "$FUSE_MNT" "${threads[@]}" --export "bench=file:$IMG" >"$FUSE_LOG.out" 2>"$FUSE_LOG.err" </dev/null &
      FUSE_PIDS+=($!)
      ;;
    nbdfuse-volgate)
      FUSE_MNT=$WORK/$id.mnt
      mkdir -p "$FUSE_MNT"
      FUSE_FILE=$FUSE_MNT/bench
      RES[$s|cmd]="volgate serve --unix SOCK --export bench=file:IMAGE; nbdfuse DIR/bench nbd+unix:///bench?socket=SOCK"
      "$VOLGATE" serve --unix "$sock" --export "bench=file:$IMG" >"$FUSE_LOG.out" 2>"$FUSE_LOG.err" </dev/null &
      FUSE_PIDS+=($!)
      for ((i = 0; i < 100; i++)); do [[ -S $sock ]] && break; sleep 0.1; done
      nbdfuse "$FUSE_MNT/bench" "nbd+unix:///bench?socket=$sock" >>"$FUSE_LOG.out" 2>>"$FUSE_LOG.err" </dev/null &
      FUSE_PIDS+=($!)
      ;;
    qsd-fuse)
      FUSE_MNT=$WORK/$id.file  # qemu-storage-daemon mounts over a regular file
      : >"$FUSE_MNT"
      FUSE_FILE=$FUSE_MNT
      RES[$s|cmd]="qemu-storage-daemon --blockdev file,filename=IMAGE,aio=io_uring --export fuse,mountpoint=FILE,writable=on"
      qemu-storage-daemon --blockdev "driver=file,node-name=f,filename=$IMG,aio=io_uring" \
        --export "type=fuse,id=e,node-name=f,mountpoint=$FUSE_MNT,writable=on" \
        >"$FUSE_LOG.out" 2>"$FUSE_LOG.err" </dev/null &
      FUSE_PIDS+=($!)
      ;;
  esac
  for ((i = 0; i < 200; i++)); do   # up to 20 s for the mount
    mountpoint -q "$FUSE_MNT" && [[ -e $FUSE_FILE ]] && return 0
    local p
    for p in "${FUSE_PIDS[@]}"; do alive "$p" || break 2; done
    sleep 0.1
  done
  anomaly "$s: no mount at $FUSE_MNT ($(tail -c 400 "$FUSE_LOG.err" | tr '\n' ' '))"
  fuse_stop "$s"
  return 1
}

# fuse_stop SERVER: unmounts and stops the stack, last started first.
fuse_stop() {
  local s=$1 i p rc
  mountpoint -q "$FUSE_MNT" && [[ $s == nbdfuse-volgate ]] && fusermount3 -u "$FUSE_MNT" 2>/dev/null
  for ((i = ${#FUSE_PIDS[@]} - 1; i >= 0; i--)); do
    p=${FUSE_PIDS[$i]}
    alive "$p" && kill -TERM "$p" 2>/dev/null
    for _ in {1..100}; do alive "$p" || break; sleep 0.1; done
    if alive "$p"; then
      anomaly "$s: PID $p still running 10 s after SIGTERM; killed"
      kill -KILL "$p" 2>/dev/null
    fi
    wait "$p" 2>/dev/null
    rc=$?
    ((rc == 0)) || anomaly "$s: PID $p exited with status $rc ($(tail -c 300 "$FUSE_LOG.err" | tr '\n' ' '))"
  done
  mountpoint -q "$FUSE_MNT" && { umount -l "$FUSE_MNT" 2>/dev/null || fusermount3 -u -z "$FUSE_MNT"; }
  FUSE_PIDS=()
}

fuse_stack_ticks() {
  local total=0 p t
  for p in "${FUSE_PIDS[@]}"; do
    t=$(cpu_ticks "$p")
    ((t >= 0)) || { echo -1; return; }
    total=$((total + t))
  done
  echo "$total"
}

fuse_run_row() {
  local s=$1 w=$2 id=$3 json err rc c0 c1 b0 b1 k0 k1 st0 st1 t0 t1 io bw iops lat ucpu scpu ferr
  if ! fuse_start "$s" "$id"; then RES[$s|$w|err]="no mount"; return; fi
  json=$WORK/$id.json
  err=$WORK/$id.fio.err
  # shellcheck disable=SC2046
  fio --name="$w" --ioengine=libaio --direct=1 --filename="$FUSE_FILE" $(workload_args "$w") \
      --numjobs=1 --time_based --runtime="$RUNTIME" --ramp_time="$RAMP" \
      --norandommap --randrepeat=0 --output-format=json --output="$json" \
      >"$WORK/$id.fio.out" 2>"$err" </dev/null &
  FIO_PID=$!
  sleep "$RAMP"
  c0=$(fuse_stack_ticks); b0=$(sys_busy_ticks); k0=$(storage_ticks); st0=$(steal_ticks); t0=$(date +%s.%N)
  wait "$FIO_PID"; rc=$?
  c1=$(fuse_stack_ticks); b1=$(sys_busy_ticks); k1=$(storage_ticks); st1=$(steal_ticks); t1=$(date +%s.%N)
  FIO_PID=""
  fuse_stop "$s"
  read -r io bw iops lat ucpu scpu ferr < <(parse_fio "$json")
  if ((rc != 0)) || [[ $ferr != 0 ]] || [[ $io == 0 ]]; then
    anomaly "$s/$w: fio failed (rc=$rc error=$ferr io_bytes=$io): $(tail -c 400 "$err" | tr '\n' ' ')"
    RES[$s|$w|err]="fio rc=$rc err=$ferr"
    return
  fi
  RES[$s|$w|mibs]=$(awk -v b="$bw" 'BEGIN{printf "%.1f", b / 1048576}')
  RES[$s|$w|iops]=$(awk -v x="$iops" 'BEGIN{printf "%.0f", x}')
  RES[$s|$w|lat]=$(awk -v x="$lat" 'BEGIN{printf "%.1f", x / 1000}')
  if ((c0 >= 0 && c1 >= 0)); then
    RES[$s|$w|cpug]=$(awk -v d=$((c1 - c0)) -v hz="$CLK_TCK" -v io="$io" 'BEGIN{printf "%.3f", (d / hz) / (io / 1073741824)}')
    RES[$s|$w|cpup]=$(awk -v d=$((c1 - c0)) -v hz="$CLK_TCK" -v t0="$t0" -v t1="$t1" 'BEGIN{printf "%.0f", 100 * (d / hz) / (t1 - t0)}')
  fi
  RES[$s|$w|fcpu]=$(awk -v u="$ucpu" -v s="$scpu" 'BEGIN{printf "%.0f", u + s}')
  account_other "$s" "$w" $((b1 - b0)) $((k1 - k0)) "$t0" "$t1" $((st1 - st0))
  log "$s/$w: ${RES[$s|$w|mibs]} MiB/s, ${RES[$s|$w|iops]} IOPS, ${RES[$s|$w|cpug]:-?} CPU-s/GiB"
}

# fuse_verify SERVER: whether the stack writes what it is given under the seq-write workload's
# concurrency (1 MiB, iodepth 16): fio writes up to 256 MiB with crc32c checksums and reads them
# back. Speed is only worth comparing between stacks that pass: QEMU 7.2's FUSE export does not
# (its one request buffer is overwritten by the next request while a write still reads from it;
# at iodepth 1 it passes).
fuse_verify() {
  local s=$1 out bad rc size=$((SIZE < (256 << 20) ? SIZE : (256 << 20)))
  if ! fuse_start "$s" "v-$s"; then RES[$s|verify]="no mount"; return; fi
  out=$WORK/v-$s.verify
  fio --name=check --ioengine=libaio --direct=1 --filename="$FUSE_FILE" --rw=write --bs=1M --iodepth=16 \
      --size="$size" --verify=crc32c --do_verify=1 --verify_fatal=0 >"$out" 2>&1 </dev/null
  rc=$?
  fuse_stop "$s"
  bad=$(grep -c 'verify: bad' "$out")
  if ((rc == 0 && bad == 0)); then
    RES[$s|verify]="ok"
  else
    RES[$s|verify]="**FAILED**: $bad of $((size >> 20)) MiB blocks read back wrong"
    anomaly "$s: fio verify (1 MiB writes at iodepth 16) failed, rc=$rc: $(grep -m1 -e 'verify: bad' -e 'error' "$out")"
  fi
  log "$s: writes verified: ${RES[$s|verify]}"
}

# Every workload with every FUSE stack, REPEAT rounds, the median kept (as for the NBD rows).
fuse_rows_run() {
  local round w s n=0 total=$((${#FUSE_SERVERS[@]} * ${#WORKLOADS[@]} * REPEAT))
  for s in "${FUSE_SERVERS[@]}"; do fuse_verify "$s"; done
  log "FUSE rows: $total, about $((total * (RUNTIME + RAMP + 2))) s"
  for ((round = 1; round <= REPEAT; round++)); do
    for w in "${WORKLOADS[@]}"; do
      for s in "${FUSE_SERVERS[@]}"; do
        n=$((n + 1))
        log "(FUSE $n/$total) $s / $w"
        fuse_run_row "$s" "$w" "f$n"
        keep_run "$s|$w" "$round"
      done
    done
  done
  for s in "${FUSE_SERVERS[@]}"; do
    for w in "${WORKLOADS[@]}"; do pick_median "$s|$w"; done
  done
}

fuse_rows_report() {
  echo
  echo "### FUSE: the image as a file, fio libaio O_DIRECT (the workloads' block sizes and depths)"
  echo
  echo "- srv CPU = the whole stack (volgate + nbdfuse for nbdfuse-volgate); ×nbdfuse and ×qsd = volgate-fuse[-1t] MiB/s / theirs"
  echo "  (the issue's bars: at least 1.5 ×nbdfuse and 1.0 ×qsd on every workload)"
  local s
  for s in "${FUSE_SERVERS[@]}"; do echo "  - $s: \`${RES[$s|cmd]:-}\`; writes verified (fio crc32c, 1 MiB at iodepth 16): ${RES[$s|verify]:-not run}"; done
  echo
  echo "| workload | stack | MiB/s | IOPS | lat µs | srv CPU s/GiB | srv CPU % | fio CPU % | other CPU % | MiB/s ×nbdfuse | MiB/s ×qsd |"
  echo "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
  local w r1 r2
  for w in "${WORKLOADS[@]}"; do
    for s in "${FUSE_SERVERS[@]}"; do
      if [[ -n ${RES[$s|$w|err]:-} ]]; then
        echo "| $w | $s | ERROR: ${RES[$s|$w|err]} | | | | | | | | |"
        continue
      fi
      r1="" r2=""
      if [[ $s == volgate-fuse* ]]; then
        r1=$(ratio "${RES[$s|$w|mibs]:-}" "${RES[nbdfuse-volgate|$w|mibs]:-}")
        r2=$(ratio "${RES[$s|$w|mibs]:-}" "${RES[qsd-fuse|$w|mibs]:-}")
      fi
      echo "| $w | $s | ${RES[$s|$w|mibs]:-} | ${RES[$s|$w|iops]:-} | ${RES[$s|$w|lat]:-} | ${RES[$s|$w|cpug]:-?} | ${RES[$s|$w|cpup]:-?} | ${RES[$s|$w|fcpu]:-} | ${RES[$s|$w|other]:-?} | $r1 | $r2 |"
    done
  done
  for s in "${FUSE_SERVERS[@]}"; do
    [[ ${RES[$s|verify]:-ok} == ok || ${RES[$s|verify]} == "no mount" ]] && continue
    echo
    echo "**$s wrote wrong data** under 1 MiB writes at iodepth 16 (${RES[$s|verify]}): its write rows measure a stack that"
    echo "does not keep what it is given, so a ratio against them is no bar."
  done
  if ((REPEAT > 1)); then
    echo
    echo "MiB/s of every FUSE run (rounds in order; the table shows the median):"
    for w in "${WORKLOADS[@]}"; do
      for s in "${FUSE_SERVERS[@]}"; do echo "- $w, $s: ${RUNS[$s|$w]}"; done
    done
  fi
}
