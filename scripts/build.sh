#!/usr/bin/env bash
# Configures and builds one flavour of volgate into build/ (or build-<flavour>/).
#   scripts/build.sh [release|asan|tsan|fuzz] [TARGET]
# fuzz: clang with libFuzzer, ASan and UBSan, and only the fuzz targets (see scripts/fuzz.sh), or
# only TARGET.
set -euo pipefail
cd "$(dirname "$0")/.."

flavour=${1:-release}
targets=()  # all
case "$flavour" in
  release) dir=build; args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo) ;;
  asan)    dir=build-asan; args=(-DCMAKE_BUILD_TYPE=Debug -DVOLGATE_SANITIZE=address,undefined) ;;
  tsan)    dir=build-tsan; args=(-DCMAKE_BUILD_TYPE=Debug -DVOLGATE_SANITIZE=thread) ;;
  fuzz)    dir=build-fuzz; targets=(--target "${2:-fuzz_targets}")
           args=(-DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVOLGATE_FUZZ=ON
                 -DVOLGATE_SANITIZE=address,undefined) ;;
  *) echo "usage: scripts/build.sh [release|asan|tsan|fuzz] [TARGET]" >&2; exit 2 ;;
esac

cmake -S . -B "$dir" -G Ninja "${args[@]}" > /dev/null
cmake --build "$dir" "${targets[@]}"
