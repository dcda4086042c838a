#!/usr/bin/env bash
# The README's test command: install what is missing, build with warnings as
# errors, run the unit tests under ASan+UBSan, fuzz the parsers for 60 s, and
# run the whole test suite.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
"$here/scripts/install_deps.sh"
. "$here/scripts/env.sh"
jobs=$(nproc)
py="$here/.venv/bin/python3"

echo "== sanitizer build (ASan + UBSan), unit tests"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DQS_WERROR=ON -DQS_SANITIZE=ON -DPython3_EXECUTABLE="$py" >/dev/null
cmake --build build-asan -j"$jobs"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest -L unit -j"$jobs" --output-on-failure)

if command -v clang >/dev/null && [ -f tests/fuzz/CMakeLists.txt ]; then
  echo "== fuzzing the parsers (libFuzzer, ${QS_FUZZ_SECONDS:-60} s)"
  CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DQS_FUZZ=ON -DBUILD_TESTING=OFF >/dev/null
  cmake --build build-fuzz -j"$jobs" --target fuzz_parsers
  mkdir -p build-fuzz/corpus
  build-fuzz/tests/fuzz/fuzz_parsers -max_total_time="${QS_FUZZ_SECONDS:-60}" -max_len=4096 \
    build-fuzz/corpus "$here/tests/fuzz/seeds" 2>&1 | tail -n 3
fi

echo "== release build, whole test suite"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQS_WERROR=ON -DPython3_EXECUTABLE="$py" >/dev/null
cmake --build build -j"$jobs"
# label peers (tests/peers.cmake) needs scripts/install_peers.sh and is left out
cd build && ctest -j"$jobs" -LE peers --output-on-failure
