#!/usr/bin/env bash
# Runs a libFuzzer campaign on one of volgate's fuzz targets (tests/fuzz), with AddressSanitizer
# and UndefinedBehaviorSanitizer, then merges the inputs that reached new code into the stored
# corpus that the unit tests replay.
#   scripts/fuzz.sh [--seconds N] [--no-merge] [TARGET]
#     TARGET      a fuzz target (default: nbd_session_fuzz)
#     --seconds   how long to fuzz (default: 600)
#     --no-merge  leave tests/fuzz/corpus/TARGET as it is
# Installs clang and libFuzzer if missing and builds TARGET into build-fuzz/. A crash leaves its
# input in build-fuzz/fuzz-artifacts/ and the script exits non-zero; replay it with
#   build-fuzz/tests/fuzz/TARGET FILE
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=600
merge=1
target=nbd_session_fuzz
while (($#)); do
  case "$1" in
    --seconds) seconds=${2:?--seconds needs a number}; shift 2 ;;
    --no-merge) merge=0; shift ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) target=$1; shift ;;
  esac
done
[[ $seconds =~ ^[1-9][0-9]*$ ]] || { echo "fuzz.sh: --seconds takes a positive whole number, not '$seconds'" >&2; exit 2; }
[[ -d tests/fuzz/corpus/$target ]] || { echo "fuzz.sh: no fuzz target '$target' (see tests/fuzz/corpus)" >&2; exit 2; }

scripts/install-deps.sh --fuzz
scripts/build.sh fuzz "$target"  # just the one: the machine has two cores

stored=tests/fuzz/corpus/$target
work=build-fuzz/fuzz-corpus/$target   # grows during campaigns; only its essence is stored
artifacts=build-fuzz/fuzz-artifacts
mkdir -p "$stored" "$work" "$artifacts"
dict=()
[[ -f tests/fuzz/$target.dict ]] && dict=(-dict="tests/fuzz/$target.dict")

# Stop at the first finding of either sanitizer, so it is saved as an artifact and fails the run.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
binary=build-fuzz/tests/fuzz/$target
# No -max_len: libFuzzer then allows inputs as long as the longest stored one (at least 4 KiB),
# which lets the NBD target keep requests large enough for the LUKS helper path.
echo "fuzz.sh: $target for ${seconds} s (corpus $work, seeded from $stored)" >&2
"$binary" "${dict[@]}" -max_total_time="$seconds" -timeout=25 \
  -artifact_prefix="$artifacts/" -print_final_stats=1 "$work" "$stored"

if ((merge)); then
  # Keep the smallest set of inputs that covers everything the stored and new inputs cover.
  # The stored corpus is replaced only once a merge has produced a non-empty one.
  merged=$(mktemp -d)
  trap 'rm -rf "$merged"' EXIT
  "$binary" -merge=1 "$merged" "$stored" "$work" >"$merged.log" 2>&1 ||
    { cat "$merged.log" >&2; rm -f "$merged.log"; echo "fuzz.sh: the merge failed; $stored is unchanged" >&2; exit 1; }
  grep -E '^MERGE-OUTER: [0-9]+ new files' "$merged.log" >&2 || true
  rm -f "$merged.log"
  if [[ -z $(ls -A "$merged") ]]; then
    echo "fuzz.sh: the merge kept no inputs; $stored is unchanged" >&2
    exit 1
  fi
  rm -f "$stored"/*
  cp "$merged"/* "$stored"/
  echo "fuzz.sh: $stored now holds $(ls "$stored" | wc -l) inputs" >&2
fi
