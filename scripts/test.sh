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

# The CUDA backend (docs/gpu.md) is built where the CUDA toolkit is: nvcc on
# PATH, in $CUDA_HOME/bin or in /usr/local/cuda/bin (/etc/profile.d puts it on
# PATH for login shells only; a CI job's shell need not be one). Nothing CUDA
# runs here: its tests (label gpu) skip without a GPU, and the same tests run
# on the CPU through the emulator of tests/gpu_emu (label cuda-emu).
nvcc=$(command -v nvcc || true)
for d in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda; do
  if [ -z "$nvcc" ] && [ -n "$d" ] && [ -x "$d/bin/nvcc" ]; then nvcc=$d/bin/nvcc; fi
done

echo "== sanitizer build (ASan + UBSan; without CUDA: the CUDA-free build), unit and cuda-emu tests"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DQS_WERROR=ON -DQS_SANITIZE=ON -DQS_CUDA=OFF -DPython3_EXECUTABLE="$py" >/dev/null
cmake --build build-asan -j"$jobs"
# unit, and the gpu tests on the CPU through the CUDA emulator (its kernels under ASan too)
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest -L 'unit|cuda-emu' -j"$jobs" --output-on-failure)

if command -v clang >/dev/null && [ -f tests/fuzz/CMakeLists.txt ]; then
  echo "== fuzzing the parsers (libFuzzer, ${QS_FUZZ_SECONDS:-60} s)"
  CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DQS_FUZZ=ON -DBUILD_TESTING=OFF >/dev/null
  cmake --build build-fuzz -j"$jobs" --target fuzz_parsers
  mkdir -p build-fuzz/corpus
  build-fuzz/tests/fuzz/fuzz_parsers -max_total_time="${QS_FUZZ_SECONDS:-60}" -max_len=4096 \
    build-fuzz/corpus "$here/tests/fuzz/seeds" 2>&1 | tail -n 3
fi

if [ -n "$nvcc" ]; then
  echo "== release build with the CUDA backend (nvcc $("$nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), sm_80 + sm_90), whole test suite"
  cuda=(-DQS_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc")
else
  echo "== CUDA configuration skipped: no nvcc (looked on PATH, in \$CUDA_HOME/bin and /usr/local/cuda/bin)"
  echo "== release build (CPU only), whole test suite"
  cuda=(-DQS_CUDA=OFF)
fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQS_WERROR=ON "${cuda[@]}" -DPython3_EXECUTABLE="$py" >/dev/null
cmake --build build -j"$jobs"
# label peers (tests/peers.cmake) needs scripts/install_peers.sh and is left out;
# cuda-emu ran under the sanitizers above
cd build && ctest -j"$jobs" -LE 'peers|cuda-emu' --output-on-failure
