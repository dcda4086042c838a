#!/usr/bin/env bash
# The README's test command: install what is missing, build with warnings as
# errors, run the unit tests under ASan+UBSan, fuzz the parsers, checkpoint
# checks, tokenizer.json and job files for 60 s in all, and run the whole
# test suite.
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
  # QS_FUZZ_SECONDS (default 60) is the whole fuzz stage, split over the targets;
  # a crash, leak or timeout fails the script (pipefail) with the fuzzer's last lines
  total=${QS_FUZZ_SECONDS:-60}
  echo "== fuzzing (libFuzzer, ${total} s over 4 targets)"
  CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DQS_FUZZ=ON -DBUILD_TESTING=OFF >/dev/null
  cmake --build build-fuzz -j"$jobs" --target fuzz_parsers fuzz_checkpoint fuzz_tokenizer fuzz_jobfile
  # target  share-of-the-time%  max_len  seed dirs
  while read -r target share max_len seeds; do
    secs=$(( total * share / 100 )); [ "$secs" -ge 5 ] || secs=5
    mkdir -p "build-fuzz/corpus-$target"
    echo "-- $target: $secs s"
    # shellcheck disable=SC2086
    "build-fuzz/tests/fuzz/$target" -max_total_time="$secs" -max_len="$max_len" -rss_limit_mb=2048 \
      -artifact_prefix="build-fuzz/$target-" "build-fuzz/corpus-$target" $seeds 2>&1 | tail -n 4
  done <<EOF2
fuzz_parsers 30 4096 $here/tests/fuzz/seeds
fuzz_checkpoint 25 8192 $here/tests/fuzz/seeds_checkpoint
fuzz_tokenizer 30 16384 $here/tests/fuzz/seeds_tokenizer
fuzz_jobfile 15 4096 $here/tests/fuzz/seeds_jobfile
EOF2
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
# cuda-emu ran under the sanitizers above; known-limit (slurm_chain) shows a product
# limit under load (tests/slurm.cmake) and runs with `ctest -L known-limit`
cd build && ctest -j"$jobs" -LE 'peers|cuda-emu|known-limit' --output-on-failure
