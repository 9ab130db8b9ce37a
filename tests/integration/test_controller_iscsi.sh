#!/usr/bin/env bash
# The controller with an iscsi pool on a private tgtd (its own control socket, two portals): a
# volume is a target with one LUN backed by a file; only the pool's initiator name may log in to
# it (another name is refused); an initiator with that name (libiscsi's iscsi-readcapacity16,
# QEMU's iscsi driver) sees its size and its data; volgate serve reaches it over both portals
# with the export target as it is; extend re-adds the LUN at the new size; copies from a snapshot or a
# volume are targets of their own; blank creates read as zeroes; concurrent creates and deletes
# leave exactly their targets; quota and bad input are refused with no target made; a
# controller killed mid-copy reverts the create, target and file included; a controller
# restarted with CHAP configured closes the targets an older one left open to all and requires
# the secret on every target, old and new (no secret, a wrong one, or the right one under
# another initiator name: refused), and volgate serve logs in with the export target's CHAP
# settings; a secret changed in the file takes effect at the next start; the secret is in no
# log and not in the database; delete removes target and file; volumes are backed up and
# restored (to a new volume, and over one whose LUN is exported) and read back over iSCSI.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_volgate
require_tool tgtd tgtadm iscsi-readcapacity16 iscsi-inq qemu-img curl nbdcopy sqlite3
T=$TEST_TMP
STATE=$T/state
export VOLGATE_URL=unix:$STATE/controller.sock
export TGT_IPC_SOCKET=$T/tgtd.ipc
PORT=$(free_tcp_port)
PORTAL=127.0.0.1:$PORT
PORTAL2=127.0.0.2:$PORT
PREFIX=iqn.2026-11.org.volgate.test$$
GW_IQN=iqn.2026-11.org.volgate.test$$:gateway    # the pool's initiator_name: the one admitted
OTHER_IQN=iqn.2026-11.org.volgate.test$$:intruder

tgtd -f --iscsi "portal=$PORTAL,portal=$PORTAL2" >"$T/tgtd.log" 2>&1 &
TGTD=$!
BG_PIDS+=("$TGTD")
for ((i = 0; i < 100; i++)); do
    tgtadm --lld iscsi --op show --mode target >/dev/null 2>&1 && break
    sleep 0.05
done
(echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || fail "tgtd is not listening on $PORTAL: $(cat "$T/tgtd.log")"
remove_targets() {  # tgtd ignores SIGTERM; its targets go first, then it is killed (BG_PIDS)
    local tid
    for tid in $(tgtadm --lld iscsi --op show --mode target 2>/dev/null | sed -n 's/^Target \([0-9]*\):.*/\1/p'); do
        tgtadm --lld iscsi --op delete --force --mode target --tid "$tid" || true
    done
}
# set +e first: under set -e, (exit $_rc) with a failure code would end the trap before _cleanup.
trap '_rc=$?; set +e; remove_targets; kill -KILL "$TGTD" 2>/dev/null; (exit $_rc); _cleanup' EXIT

mkdir -p "$T/images"  # where imageRef may take files from
cat >"$T/controller.json" <<JSON
{
  "state_dir": "$STATE",
  "image_dirs": ["$T/images"],
  "quotas": {"volumes": 12, "snapshots": 4, "gigabytes": 20},
  "pools": [{"name": "tgt", "driver": "iscsi", "directory": "$T/luns", "portals": ["$PORTAL", "$PORTAL2"],
             "iqn_prefix": "$PREFIX", "tgt_ipc_socket": "$TGT_IPC_SOCKET", "copy_bps_limit": 16777216,
             "initiator_name": "$GW_IQN"}]
}
JSON
start_controller "$T/controller.json" "$STATE/controller.sock"
CTL=$CTL_PID
json() { "$SYSPY" -c 'import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }
# Initiators log in as $GW_IQN, and with CHAP once the pool has it ($CHAP_AT is "USER@" then,
# and LIBISCSI_CHAP_PASSWORD holds the secret: libiscsi takes it from there, off the command line).
CHAP_AT=
capacity() {  # bytes: (last LBA + 1) * block length
    iscsi-readcapacity16 -i "$GW_IQN" "iscsi://$CHAP_AT$PORTAL/$PREFIX:volume-$1/1" | "$SYSPY" -c '
import re, sys
t = sys.stdin.read()
print((int(re.search(r"RETURNED LOGICAL BLOCK ADDRESS:(\d+)", t).group(1)) + 1) * int(re.search(r"LOGICAL BLOCK LENGTH IN BYTES:(\d+)", t).group(1)))'
}
show_targets() { tgtadm --lld iscsi --op show --mode target; }
read_lun() {  # PORTAL VOLUME_ID FILE: the whole LUN, read by QEMU's iscsi driver as $GW_IQN
    local chap=
    if [[ -n $CHAP_AT ]]; then  # QEMU's secret file is taken whole, newline and all
        (umask 077 && printf '%s' "$LIBISCSI_CHAP_PASSWORD" >"$T/qemu.secret")
        chap=",file.user=${CHAP_AT%@},file.password-secret=chap"
    fi
    qemu-img convert ${CHAP_AT:+--object "secret,id=chap,file=$T/qemu.secret"} -O raw --image-opts \
        "driver=raw,file.driver=iscsi,file.transport=tcp,file.portal=$1,file.target=$PREFIX:volume-$2,file.lun=1,file.initiator-name=$GW_IQN$chap" "$3"
}
logs_in() {  # INITIATOR_IQN VOLUME_ID [USER@]: whether that initiator gets past the login
    iscsi-inq -i "$1" "iscsi://${3:-}$PORTAL/$PREFIX:volume-$2/1" >/dev/null 2>&1
}
target_section() {  # VOLUME_ID SECTION: the entries of one section of the volume's target
    show_targets | awk -v t="^Target [0-9]+: $PREFIX:volume-$1\$" -v s="    $2:" '
        /^Target / { mine = ($0 ~ t) } mine && /^    [^ ]/ { on = ($0 == s); next } mine && on { sub(/^ +/, ""); print }'
}

grep -q '^tgt  *iSCSI .* true$' <<<"$("$VOLGATE" pool list)" || fail "pool list (multipath): $("$VOLGATE" pool list)"
make_random_file "$T/images/image.raw" 24
vol=$("$VOLGATE" volume create --output json --size 1G --image "$T/images/image.raw" from-image | json "d['volume']['id']")
target=$("$VOLGATE" volume show --output json "$vol" | json "d['volume']['volgate:export_target']")
assert_eq "$target" "iscsi://$PORTAL,$PORTAL2/$PREFIX:volume-$vol/1,initiator-name=$GW_IQN" "export target"
grep -q "Target [0-9]*: $PREFIX:volume-$vol" <<<"$(show_targets)" || fail "no target for $vol: $(show_targets)"
grep -q "Backing store path: $T/luns/volume-$vol.img" <<<"$(show_targets)" || fail "LUN not backed by the volume file"
assert_eq "$(target_section "$vol" "ACL information")" "$GW_IQN" "who the target admits"
if logs_in "$OTHER_IQN" "$vol"; then fail "an initiator named $OTHER_IQN logged in to $vol"; fi
logs_in "$GW_IQN" "$vol" || fail "the pool's initiator name $GW_IQN cannot log in to $vol"
assert_eq "$(capacity "$vol")" $((1 << 30)) "LUN capacity seen by an initiator"
read_lun "$PORTAL2" "$vol" "$T/back.raw"
assert_eq "$(head -c $((24 << 20)) "$T/back.raw" | sha256sum)" "$(sha256sum <"$T/images/image.raw")" "data read over iSCSI"
rm -f "$T/back.raw"
start_volgate --unix "$T/nbd.sock" --export "v=$target"
nbdcopy "$(unix_uri v "$T/nbd.sock")" "$T/served.raw"
stop_volgate
grep -q "path 1 $PORTAL2: up" "$VG_ERR" || fail "volgate serve did not log in on the second portal: $(grep path "$VG_ERR")"
assert_eq "$(head -c $((24 << 20)) "$T/served.raw" | sha256sum)" "$(sha256sum <"$T/images/image.raw")" \
    "the volume served by volgate serve --export v=$target"
rm -f "$T/served.raw"
pass "volume from image: a target with one LUN that admits only $GW_IQN, right size and data over iSCSI, served by volgate as it is"

"$VOLGATE" volume extend --size 2G "$vol" >/dev/null
assert_eq "$(capacity "$vol")" $((2 << 30)) "LUN capacity after extend"
snap=$("$VOLGATE" snapshot create --output json --volume "$vol" s1 | json "d['snapshot']['id']")
copy=$("$VOLGATE" volume create --output json --snapshot "$snap" copy | json "d['volume']['id']")
assert_eq "$(capacity "$copy")" $((2 << 30)) "capacity of the copy's LUN"
read_lun "$PORTAL" "$copy" "$T/copy.raw"
assert_eq "$(head -c $((24 << 20)) "$T/copy.raw" | sha256sum)" "$(sha256sum <"$T/images/image.raw")" "copy's data over iSCSI"
rm -f "$T/copy.raw"
clone=$("$VOLGATE" volume create --output json --source-volume "$vol" clone | json "d['volume']['id']")
read_lun "$PORTAL" "$clone" "$T/clone.raw"
assert_eq "$(head -c $((24 << 20)) "$T/clone.raw" | sha256sum)" "$(sha256sum <"$T/images/image.raw")" "clone's data over iSCSI"
rm -f "$T/clone.raw"
"$VOLGATE" volume delete "$clone" >/dev/null
pass "extend re-adds the LUN at the new size; copies from a snapshot and from a volume are targets of their own"

blank=$("$VOLGATE" volume create --output json --size 1G blank | json "d['volume']['id']")
assert_eq "$(capacity "$blank")" $((1 << 30)) "blank LUN capacity"
read_lun "$PORTAL" "$blank" "$T/blank.raw"
cmp -s -n $((1 << 30)) "$T/blank.raw" /dev/zero || fail "a blank volume does not read as zeroes over iSCSI"
rm -f "$T/blank.raw"
pass "a blank volume is a zeroed LUN of the right size"

# Backups read the LUN's backing file, restores write it while tgtd serves it (the volume is
# available: nobody is logged in); what an initiator reads afterwards is the restored data.
bv=$("$VOLGATE" backup create --output json --volume "$vol" of-vol | json "d['backup']['id']")
bb=$("$VOLGATE" backup create --output json --volume "$blank" of-blank | json "d['backup']['id']")
assert_eq "$("$VOLGATE" backup show --output json "$bv" | json "(d['backup']['status'], d['backup']['object_count'])")" \
    "('available', 6)" "backup of an iSCSI volume (24 MiB of data: six chunks)"
restored=$("$VOLGATE" backup restore --output json "$bv" | json "d['restore']['volume_id']")
assert_eq "$(capacity "$restored")" $((2 << 30)) "capacity of the LUN restored from a backup"
read_lun "$PORTAL" "$restored" "$T/restored.raw"
assert_eq "$(head -c $((24 << 20)) "$T/restored.raw" | sha256sum)" "$(sha256sum <"$T/images/image.raw")" \
    "a backup restored to a new iSCSI volume, read over iSCSI"
rm -f "$T/restored.raw"
# Over an existing volume whose LUN is exported: the copy (the image's data) becomes zeros.
"$VOLGATE" backup restore --volume "$copy" "$bb" >/dev/null
read_lun "$PORTAL2" "$copy" "$T/copy.raw"
cmp -s -n $((24 << 20)) "$T/copy.raw" /dev/zero || fail "restored over an exported LUN, the copy still holds its data"
rm -f "$T/copy.raw"
for b in "$bv" "$bb"; do "$VOLGATE" backup delete "$b" >/dev/null; done
"$VOLGATE" volume delete "$restored" >/dev/null
"$VOLGATE" volume delete "$blank" >/dev/null
pass "iSCSI volumes: backed up from the LUN's file, restored to a new volume and over an exported one, read over iSCSI"

# Concurrent creates, then concurrent deletes: every volume gets its own target, and none is left.
targets_before=$(show_targets | grep -c "^Target" || true)
pids=()
for i in 1 2 3 4 5 6; do
    "$VOLGATE" volume create --output json --size 1G "par$i" >"$T/par$i.json" &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || fail "a concurrent create failed"; done
par_ids=()
for i in 1 2 3 4 5 6; do
    id=$(json "d['volume']['id']" <"$T/par$i.json")
    par_ids+=("$id")
    assert_eq "$("$VOLGATE" volume show --output json "$id" | json "d['volume']['status']")" available "status of par$i"
    grep -q "Target [0-9]*: $PREFIX:volume-$id\$" <<<"$(show_targets)" || fail "no target for par$i ($id): $(show_targets | grep "^Target")"
done
assert_eq "$(show_targets | grep -c "^Target")" $((targets_before + 6)) "targets after six concurrent creates"
pids=()
for id in "${par_ids[@]}"; do
    "$VOLGATE" volume delete "$id" >/dev/null &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || fail "a concurrent delete failed"; done
for ((i = 0; i < 100; i++)); do
    [[ $(show_targets | grep -c "^Target") == "$targets_before" ]] && break
    sleep 0.1
done
assert_eq "$(show_targets | grep -c "^Target")" "$targets_before" "targets after the concurrent deletes"
pass "six concurrent creates make six targets; six concurrent deletes remove them"

# Quota and bad input: refused up front, with no target and no file.
files_before=$(ls "$T/luns" | sort)
rc=0
"$VOLGATE" volume create --size 30G too-big >/dev/null 2>"$T/quota.err" || rc=$?
assert_eq "$rc" 2 "exit code of a create over the gigabytes quota"
grep -qi quota "$T/quota.err" || fail "quota refusal: $(cat "$T/quota.err")"
rc=0
"$VOLGATE" volume create --size 1G --image relative.img bad >/dev/null 2>"$T/bad.err" || rc=$?
assert_eq "$rc" 2 "exit code of a create with a relative image path"
grep -q 'relative.img' "$T/bad.err" || fail "bad image: $(cat "$T/bad.err")"
assert_eq "$(show_targets | grep -c "^Target")" "$targets_before" "targets after refused creates"
assert_eq "$(ls "$T/luns" | sort)" "$files_before" "pool files after refused creates"
pass "quota exhaustion and bad input are refused with no target made"

# SIGKILL in the middle of a copy (16 MiB/s limit): the restarted controller reverts the create,
# its target and its file included, and the journal is empty.
make_random_file "$T/images/big.raw" 96
long=$("$VOLGATE" volume create --output json --no-wait --size 1G --image "$T/images/big.raw" long | json "d['volume']['id']")
for ((i = 0; i < 100; i++)); do
    p=$("$VOLGATE" volume show --output json "$long" | json "d['volume'].get('volgate:progress', 0)")
    ((p > 0)) && break
    sleep 0.05
done
((p > 0 && p < 100)) || fail "the long copy did not report progress between 0 and 100 (got $p)"
kill -KILL "$CTL"
wait "$CTL" 2>/dev/null || true
_forget_pid "$CTL"
# The killed controller's socket file is still there: wait for the new one's "unix:" line.
start_controller "$T/controller.json" "$STATE/controller.sock" '^unix:'
CTL=$CTL_PID
assert_eq "$("$VOLGATE" volume show --output json "$long" | json "d['volume']['status']")" error "status after restart"
if grep -q "volume-$long" <<<"$(show_targets)"; then fail "the reverted create left its target: $(show_targets)"; fi
[[ ! -e $T/luns/volume-$long.img ]] || fail "the reverted create left its file"
assert_eq "$(sqlite3 "$STATE/controller.db" "SELECT count(*) FROM flow_journal")" 0 "journal after recovery"
"$VOLGATE" volume delete "$long" >/dev/null
pass "SIGKILL mid-copy: the restarted controller reverts the create (status error, no target, no file)"

# CHAP. First, $vol's target is made what a controller before initiator names and CHAP left:
# open to every initiator. A controller started with chap_user must close it and require the secret.
tgt_tid=$(show_targets | sed -n "s/^Target \([0-9]*\): $PREFIX:volume-$vol\$/\1/p")
tgtadm --lld iscsi --op unbind --mode target --tid "$tgt_tid" --initiator-name "$GW_IQN"
tgtadm --lld iscsi --op bind --mode target --tid "$tgt_tid" --initiator-address ALL
logs_in "$OTHER_IQN" "$vol" || fail "the target as an older controller left it should admit anyone"
stop_volgate "$CTL" TERM 10
CHAP_USER=gw-$$
CHAP_FILE=$T/chap.secret
new_secret() { head -c 18 /dev/urandom | base64 | tr '+/' '-_'; }
CHAP_SECRET=$(new_secret)
(umask 077 && printf '%s\n' "$CHAP_SECRET" >"$CHAP_FILE")
"$SYSPY" -c '
import json, sys
c = json.load(open(sys.argv[1]))
c["pools"][0].update(chap_user=sys.argv[2], chap_secret_file=sys.argv[3])
json.dump(c, open(sys.argv[1], "w"))' "$T/controller.json" "$CHAP_USER" "$CHAP_FILE"
start_controller "$T/controller.json" "$STATE/controller.sock" '^unix:'
CTL=$CTL_PID
assert_eq "$(target_section "$vol" "ACL information")" "$GW_IQN" "who the old target admits after the restart"
assert_eq "$(target_section "$vol" "Account information")" "$CHAP_USER" "CHAP account of the old target"
export LIBISCSI_CHAP_PASSWORD=$CHAP_SECRET
if logs_in "$GW_IQN" "$vol"; then fail "$GW_IQN logged in to $vol without CHAP"; fi
if logs_in "$OTHER_IQN" "$vol" "$CHAP_USER@"; then fail "$OTHER_IQN logged in to $vol with the CHAP secret"; fi
if LIBISCSI_CHAP_PASSWORD=not-$CHAP_SECRET logs_in "$GW_IQN" "$vol" "$CHAP_USER@"; then
    fail "$GW_IQN logged in to $vol with a wrong CHAP secret"
fi
logs_in "$GW_IQN" "$vol" "$CHAP_USER@" || fail "$GW_IQN cannot log in to $vol with the CHAP secret"
CHAP_AT=$CHAP_USER@
target=$("$VOLGATE" volume show --output json "$vol" | json "d['volume']['volgate:export_target']")
assert_eq "$target" \
    "iscsi://$PORTAL,$PORTAL2/$PREFIX:volume-$vol/1,initiator-name=$GW_IQN,chap-user=$CHAP_USER,chap-secret-file=$CHAP_FILE" \
    "export target with CHAP"
start_volgate --unix "$T/nbd.sock" --export "v=$target"
nbdcopy "$(unix_uri v "$T/nbd.sock")" "$T/served.raw"
stop_volgate
assert_eq "$(head -c $((24 << 20)) "$T/served.raw" | sha256sum)" "$(sha256sum <"$T/images/image.raw")" \
    "the volume served by volgate serve --export v=<export target with CHAP>"
rm -f "$T/served.raw"
pass "restart with CHAP: the target left open to all admits only $GW_IQN with the secret; volgate serve logs in with the export target"

# New targets, and targets made again by an extend, require the secret as well.
chapvol=$("$VOLGATE" volume create --output json --size 1G chap | json "d['volume']['id']")
"$VOLGATE" volume extend --size 3G "$vol" >/dev/null
for v in "$chapvol" "$vol"; do
    assert_eq "$(target_section "$v" "ACL information")" "$GW_IQN" "who the target of $v admits"
    assert_eq "$(target_section "$v" "Account information")" "$CHAP_USER" "CHAP account of $v"
    if logs_in "$GW_IQN" "$v"; then fail "$GW_IQN logged in to $v without CHAP"; fi
done
assert_eq "$(capacity "$vol")" $((3 << 30)) "LUN capacity after an extend, read with CHAP"
read_lun "$PORTAL2" "$vol" "$T/back.raw"
assert_eq "$(head -c $((24 << 20)) "$T/back.raw" | sha256sum)" "$(sha256sum <"$T/images/image.raw")" "data read with CHAP"
rm -f "$T/back.raw"
"$VOLGATE" volume delete "$chapvol" >/dev/null
pass "a new target and one made again by extend admit only $GW_IQN with the CHAP secret"

# A new secret in the file takes effect when the controller starts again; the old one stops working.
OLD_SECRET=$CHAP_SECRET
CHAP_SECRET=$(new_secret)
printf '%s\n' "$CHAP_SECRET" >"$CHAP_FILE"
stop_volgate "$CTL" TERM 10
start_controller "$T/controller.json" "$STATE/controller.sock" '^unix:'
CTL=$CTL_PID
if LIBISCSI_CHAP_PASSWORD=$OLD_SECRET logs_in "$GW_IQN" "$vol" "$CHAP_USER@"; then
    fail "the old CHAP secret still works after the restart"
fi
export LIBISCSI_CHAP_PASSWORD=$CHAP_SECRET
logs_in "$GW_IQN" "$vol" "$CHAP_USER@" || fail "the new CHAP secret does not work after the restart"
assert_eq "$(target_section "$vol" "Account information")" "$CHAP_USER" "CHAP accounts of $vol after the new secret"
assert_eq "$(tgtadm --lld iscsi --op show --mode account | sed 1d | tr -d ' ')" "$CHAP_USER" "tgtd's accounts"
for secret in "$OLD_SECRET" "$CHAP_SECRET"; do
    if grep -rqF -- "$secret" "$T"/controller.*.err "$T"/controller.*.out "$STATE"/controller.db*; then
        fail "a CHAP secret is in a controller log or the database"
    fi
done
pass "a changed CHAP secret replaces the old one at the next start; no secret in logs or database"

"$VOLGATE" volume delete "$copy" >/dev/null
"$VOLGATE" snapshot delete "$snap" >/dev/null
"$VOLGATE" volume delete "$vol" >/dev/null
if grep -q "$PREFIX" <<<"$(show_targets)"; then fail "targets left after delete: $(show_targets)"; fi
[[ -z $(ls "$T/luns") ]] || fail "files left in the pool: $(ls "$T/luns")"
stop_volgate "$CTL" TERM 10
pass "delete removes targets and files; the controller stops cleanly"
