#!/usr/bin/env bash
# Configures and builds one flavour of volgate into build/ (or build-<flavour>/).
#   scripts/build.sh [release|asan|tsan]
set -euo pipefail
cd "$(dirname "$0")/.."

flavour=${1:-release}
case "$flavour" in
  release) dir=build; args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo) ;;
  asan)    dir=build-asan; args=(-DCMAKE_BUILD_TYPE=Debug -DVOLGATE_SANITIZE=address,undefined) ;;
  tsan)    dir=build-tsan; args=(-DCMAKE_BUILD_TYPE=Debug -DVOLGATE_SANITIZE=thread) ;;
  *) echo "usage: scripts/build.sh [release|asan|tsan]" >&2; exit 2 ;;
esac

cmake -S . -B "$dir" -G Ninja "${args[@]}" > /dev/null
cmake --build "$dir"
