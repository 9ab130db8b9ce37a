# shellcheck shell=bash
# The nbdkit plugin (build/nbdkit-volgate-plugin.so) run by the nbdkit Debian ships, for the test
# scripts that serve a device stack through it. Source after lib.sh.
#   PLUGIN                  the plugin (VOLGATE_NBDKIT_PLUGIN, or beside $VOLGATE)
#   nbdkit_ ARGS...         nbdkit with a sanitized plugin's runtime preloaded
#   plugin_forked_roundtrip WHAT SPEC SIZE_MIB
#                           nbdkit forked into the background serving SPEC (a device of
#                           SIZE_MIB); qemu-img writes SIZE_MIB of random data through it and
#                           compares it back; leaves the data in $TEST_TMP/plugin.data for the
#                           caller's independent check
PLUGIN=${VOLGATE_NBDKIT_PLUGIN:-$(dirname "$VOLGATE")/nbdkit-volgate-plugin.so}
[[ -f $PLUGIN ]] || fail "plugin not found at '$PLUGIN' (build it, or set VOLGATE_NBDKIT_PLUGIN)"

# nbdkit is not built with the sanitizers: a plugin that is must have their runtime loaded first,
# and with ASan libstdc++ too (nbdkit is C): its interceptor of __cxa_throw looks the real one up
# when it starts, and finds none if libstdc++ only comes with the plugin.
SAN_PRELOAD=$(ldd "$PLUGIN" | awk '/lib(asan|tsan)\.so/ {print $3; exit}')
[[ $SAN_PRELOAD == *asan* ]] && SAN_PRELOAD+=:$(ldd "$PLUGIN" | awk '/libstdc\+\+\.so/ {print $3; exit}')
nbdkit_() { LD_PRELOAD=$SAN_PRELOAD nbdkit "$@"; }

PLUGIN_RUNS=0
plugin_forked_roundtrip() {
    local what=$1 spec=$2 mib=$3 n sock pidfile err pid deadline
    PLUGIN_RUNS=$((PLUGIN_RUNS + 1))
    n=$PLUGIN_RUNS
    sock=$TEST_TMP/plugin.$n.sock
    pidfile=$TEST_TMP/plugin.$n.pid
    err=$TEST_TMP/plugin.$n.err
    watch_log "$err"
    make_random_file "$TEST_TMP/plugin.data" "$mib"
    # No -f: nbdkit forks into the background once the plugin is ready, and the plugin opens
    # backends that start threads (librados, the iSCSI paths) only after that (.after_fork).
    # Errors to stderr, not to syslog, so that they are seen. No leak check at nbdkit's exit (see
    # test_nbdkit_plugin.sh).
    ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 \
        LD_PRELOAD=$SAN_PRELOAD nbdkit --log=stderr -U "$sock" -P "$pidfile" "$PLUGIN" "$spec" \
        </dev/null >/dev/null 2>"$err" || fail "$what: nbdkit did not start: $(tail -n 3 "$err")"
    # nbdkit's parent returns once it has forked; the PID file is the child's to write, a moment
    # later (seen missing at once on a loaded machine).
    deadline=$(($(now_ms) + 5000))
    while ! [[ -S $sock && -s $pidfile ]] && (($(now_ms) < deadline)); do sleep 0.02; done
    [[ -S $sock && -s $pidfile ]] || fail "$what: nbdkit returned without a socket and a PID file within 5 s"
    pid=$(cat "$pidfile")
    local uri="nbd+unix:///?socket=$sock"
    timeout -k 5 60 qemu-img convert -n -f raw -O raw "$TEST_TMP/plugin.data" "$uri" 2>"$TEST_TMP/plugin.qemu" \
        || fail "$what: qemu-img convert into the plugin: $(cat "$TEST_TMP/plugin.qemu") $(tail -n 3 "$err")"
    timeout -k 5 60 qemu-img compare -q -f raw -F raw "$TEST_TMP/plugin.data" "$uri" 2>"$TEST_TMP/plugin.qemu" \
        || fail "$what: qemu-img compare through the plugin differs: $(cat "$TEST_TMP/plugin.qemu")"
    # nbdkit in the background is not our child: SIGTERM, then its exit is awaited by its PID.
    # A sanitized run may hang in nbdkit's own exit (see test_nbdkit_plugin.sh): killed there.
    kill -TERM "$pid"
    deadline=$(($(now_ms) + 10000))
    while kill -0 "$pid" 2>/dev/null; do
        if (($(now_ms) > deadline)); then
            kill -KILL "$pid" 2>/dev/null || true
            [[ -n $SAN_PRELOAD ]] || fail "$what: nbdkit still running 10 s after SIGTERM"
            break
        fi
        sleep 0.05
    done
}
