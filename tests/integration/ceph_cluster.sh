# shellcheck shell=bash disable=SC2034  # variables here are used by the scripts that source this file
# A throwaway single-node Ceph cluster (one mon, one OSD, cephx) on 127.0.0.1, for the RBD tests
# and the benchmark. Source it after lib.sh (it uses fail/info and the BG_PIDS cleanup):
#   . "$(dirname "$0")/ceph_cluster.sh"
#   ceph_start [memstore|bluestore]     # sets CEPH_CONF, CEPH_KEYRING, CEPH_POOL
#   rbd_cmd create --size 64M "$CEPH_POOL/img"
# Everything lives in $CEPH_DIR (under $TEST_TMP, or a disk directory for bluestore) and goes
# away with the test's EXIT trap; the daemons are started in the foreground and registered in
# BG_PIDS, so they are SIGKILLed even when the test fails half way.
#
# Why these settings: pool size 1 needs mon_allow_pool_size_one (and --yes-i-really-mean-it);
# the health warnings about no redundancy and a nearly full /dev/shm are silenced so that
# nothing waits on HEALTH_OK; IPv6 binding is off because loopback is all we have. The OSD
# must use its own keyring (set in [osd]) or it authenticates with the admin key and is
# refused (handle_auth_bad_method). No mgr: RBD does not need one.

CEPH_DIR=
CEPH_CONF=
CEPH_KEYRING=
CEPH_POOL=rbd
CEPH_MON_PID=
CEPH_OSD_PID=

# rbd_cmd ARGS...: the rbd tool, as the admin client of the test cluster
rbd_cmd() { rbd --conf "$CEPH_CONF" --keyring "$CEPH_KEYRING" --id admin "$@"; }
rados_cmd() { rados --conf "$CEPH_CONF" --keyring "$CEPH_KEYRING" --id admin "$@"; }
ceph_cmd() { ceph --conf "$CEPH_CONF" --keyring "$CEPH_KEYRING" --id admin "$@"; }

# ceph_start [memstore|bluestore] [DIR]: starts the cluster and waits until a pool named
# $CEPH_POOL takes RADOS writes (about 10 s). bluestore keeps its data in a sparse file in DIR
# (default: a disk directory), for data sets larger than RAM wants to hold.
ceph_start() {
    local store=${1:-memstore} dir=${2:-}
    require_tool ceph-mon ceph-osd ceph-authtool monmaptool rbd rados ceph
    if [[ -z $dir ]]; then
        if [[ $store == bluestore ]]; then
            need_disk_tmpdir
            dir=$DISK_TMP/ceph
        else
            dir=$TEST_TMP/ceph
        fi
    fi
    CEPH_DIR=$dir
    mkdir -p "$CEPH_DIR"/{mon,osd,run,log}
    local mon_port fsid
    mon_port=$(free_tcp_port)
    fsid=$(cat /proc/sys/kernel/random/uuid)
    CEPH_CONF=$CEPH_DIR/ceph.conf
    CEPH_KEYRING=$CEPH_DIR/admin.keyring
    cat >"$CEPH_CONF" <<EOF
[global]
fsid = $fsid
mon_host = v2:127.0.0.1:$mon_port
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
ms_bind_ipv6 = false
ms_bind_ipv4 = true
public_addr = 127.0.0.1
run_dir = $CEPH_DIR/run
log_file = $CEPH_DIR/log/\$name.log
pid_file =
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
mon_data_avail_warn = 1
mon_data_avail_crit = 0
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_crush_chooseleaf_type = 0
mon_max_pg_per_osd = 1000
[client]
keyring = $CEPH_KEYRING
log_file = $CEPH_DIR/log/\$name.\$pid.log
admin_socket =
[mon]
admin_socket = $CEPH_DIR/run/\$name.asok
mon_data = $CEPH_DIR/mon
mon_initial_members = a
[osd]
admin_socket = $CEPH_DIR/run/\$name.asok
osd_data = $CEPH_DIR/osd
keyring = $CEPH_DIR/osd/keyring
osd_objectstore = $store
memstore_device_bytes = 4294967296
bluestore_block_path = $CEPH_DIR/bluestore.block
bluestore_block_size = 21474836480
bluestore_block_create = true
bluestore_fsck_on_mount = false
osd_op_num_shards = 2
osd_op_num_threads_per_shard = 1
EOF
    ceph-authtool --create-keyring "$CEPH_DIR/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    ceph-authtool --create-keyring "$CEPH_KEYRING" --gen-key -n client.admin \
        --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
    ceph-authtool "$CEPH_DIR/mon.keyring" --import-keyring "$CEPH_KEYRING" >/dev/null
    monmaptool --create --clobber --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" \
        "$CEPH_DIR/monmap" >/dev/null
    ceph-mon --conf "$CEPH_CONF" --id a --mkfs --monmap "$CEPH_DIR/monmap" \
        --keyring "$CEPH_DIR/mon.keyring" >"$CEPH_DIR/log/mkfs-mon.out" 2>&1 ||
        fail "ceph-mon --mkfs: $(tail -n 3 "$CEPH_DIR/log/mkfs-mon.out")"
    ceph-mon --conf "$CEPH_CONF" --id a -f >"$CEPH_DIR/log/mon.out" 2>&1 &
    CEPH_MON_PID=$!
    BG_PIDS+=("$CEPH_MON_PID")

    local osd_id
    osd_id=$(ceph_cmd osd create 2>"$CEPH_DIR/log/osd-create.err") ||
        fail "ceph osd create: $(cat "$CEPH_DIR/log/osd-create.err")"
    ceph-osd --conf "$CEPH_CONF" --id "$osd_id" --mkfs --mkkey --no-mon-config >"$CEPH_DIR/log/mkfs-osd.out" 2>&1 ||
        fail "ceph-osd --mkfs: $(tail -n 3 "$CEPH_DIR/log/mkfs-osd.out")"
    ceph_cmd auth add "osd.$osd_id" osd 'allow *' mon 'allow profile osd' -i "$CEPH_DIR/osd/keyring" \
        >/dev/null 2>&1 || fail "ceph auth add osd.$osd_id failed"
    ceph_cmd osd crush add "osd.$osd_id" 1.0 host=localhost root=default >/dev/null 2>&1 ||
        fail "ceph osd crush add failed"
    ceph-osd --conf "$CEPH_CONF" --id "$osd_id" -f >"$CEPH_DIR/log/osd.out" 2>&1 &
    CEPH_OSD_PID=$!
    BG_PIDS+=("$CEPH_OSD_PID")

    ceph_cmd osd pool create "$CEPH_POOL" 8 8 >/dev/null 2>&1 || fail "ceph osd pool create failed"
    ceph_cmd osd pool set "$CEPH_POOL" size 1 --yes-i-really-mean-it >/dev/null 2>&1 ||
        fail "setting the pool size to 1 failed"
    # a plain command, not the rbd_cmd function, so that $! is rbd itself and the cleanup can
    # kill it if the cluster never comes up
    rbd --conf "$CEPH_CONF" --keyring "$CEPH_KEYRING" --id admin pool init "$CEPH_POOL" >/dev/null 2>&1 &
    local init_pid=$! i
    BG_PIDS+=("$init_pid")
    # The pool is usable once a RADOS object can be written and read back.
    echo ready >"$CEPH_DIR/probe"
    for ((i = 0; i < 120; i++)); do
        if timeout 5 rados --conf "$CEPH_CONF" --keyring "$CEPH_KEYRING" --id admin -p "$CEPH_POOL" \
            put volgate-probe "$CEPH_DIR/probe" 2>/dev/null &&
            timeout 5 rados --conf "$CEPH_CONF" --keyring "$CEPH_KEYRING" --id admin -p "$CEPH_POOL" \
                get volgate-probe - 2>/dev/null | grep -q ready; then
            wait "$init_pid" || fail "rbd pool init failed"
            rados_cmd -p "$CEPH_POOL" rm volgate-probe
            info "ceph: one mon + one $store OSD ready in $CEPH_DIR"
            return 0
        fi
        _proc_running "$CEPH_OSD_PID" || fail "ceph-osd died: $(tail -n 5 "$CEPH_DIR/log/osd.out")"
        sleep 0.5
    done
    fail "ceph: the pool did not become writable within 60 s; osd log: $(tail -n 5 "$CEPH_DIR/log/osd.out")"
}
