#!/usr/bin/env bash
# bench/gpu_check.sh — the GPU check in one command, run from the repository
# root on a machine with a GPU (docs/gpu.md). The machine may be bare: nvcc,
# CMake >= 3.18, the CUDA libraries and a C compiler; no Debian packages, no
# network. It builds what it needs (-DQS_GPU_STANDALONE=ON: the kernels, the
# gpu tests and the GPU benchmark, on the CUDA toolkit and libc alone), runs
# the gpu tests (every CUDA kernel and backend call against the CPU backend,
# and a one-rank NCCL communicator: one GPU allows no more) and the benchmark (TF/s against the device's own SGEMM rate, same run), and
# writes what it saw to RESULTS_DIR. Meant to finish in well under 6 minutes.
#
#   bench/gpu_check.sh [--dry-run] [--quick] [RESULTS_DIR]
#
#   RESULTS_DIR  default $OUT when set, else ./gpu-check-results
#   --dry-run    everything but the GPU: build, run the tests (each skips with
#                exit 77 where there is no GPU) and print the benchmark's plan
#   --quick      the benchmark at a quarter of the sizes (a smoke run)
#
# Files: summary.txt (the verdict, the device, the numbers), build.log,
# ctest.txt, bench.txt, gpu_bench.json. Exit 0 when the build, every test
# that ran and the benchmark passed.
set -uo pipefail
t_start=$(date +%s)
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
dry=0 quick=0 results=""
for a in "$@"; do
  case "$a" in
    --dry-run) dry=1 ;;
    --quick) quick=1 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    -*) echo "gpu_check: unknown option $a" >&2; exit 2 ;;
    *) results=$a ;;
  esac
done
results=${results:-${OUT:-$root/gpu-check-results}}
mkdir -p "$results" || { echo "gpu_check: cannot create $results" >&2; exit 2; }
results=$(cd "$results" && pwd)
summary=$results/summary.txt
: > "$summary"
say() { echo "$*" | tee -a "$summary"; }

# ---- the tools: nvcc where the toolkit puts it, CMake >= 3.18 ----------------------
if ! command -v nvcc >/dev/null; then
  for d in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda; do
    if [ -n "$d" ] && [ -x "$d/bin/nvcc" ]; then export PATH="$d/bin:$PATH"; break; fi
  done
fi
command -v nvcc >/dev/null || { say "gpu_check: FAIL: no nvcc (looked on PATH, in \$CUDA_HOME/bin and /usr/local/cuda/bin)"; exit 1; }
command -v cmake >/dev/null || { say "gpu_check: FAIL: no cmake on PATH (>= 3.18 needed)"; exit 1; }
cmake_v=$(cmake --version | head -n1 | awk '{print $3}')
if [ "$(printf '%s\n' 3.18 "$cmake_v" | sort -V | head -n1)" != 3.18 ]; then
  say "gpu_check: FAIL: cmake $cmake_v, the standalone build needs >= 3.18"; exit 1
fi
nvcc_v=$(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p' | head -n1)

# ---- the device and its architecture -------------------------------------------------
arch=90 device="none (dry run)"
if [ "$dry" = 0 ]; then
  if command -v nvidia-smi >/dev/null; then
    device=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -n1)
    cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d ' .')
    [ -n "$cc" ] && arch=$cc
  else
    device="unknown (no nvidia-smi)"
  fi
fi
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo "unknown")
dirty=$(git -C "$root" status --porcelain 2>/dev/null | grep -c . || true)
say "qshard GPU check — $(date -u '+%Y-%m-%d %H:%M:%S UTC')$([ "$dry" = 1 ] && echo ' — DRY RUN (no GPU steps)')"
say "commit     $commit$([ "${dirty:-0}" != 0 ] && echo " (+$dirty changed files)")"
say "host       $(uname -n), $(nproc) cores"
say "device     $device"
say "toolchain  nvcc $nvcc_v, cmake $cmake_v, $(cc --version 2>/dev/null | head -n1)"
say "arch       sm_$arch"

# ---- NCCL: the toolkit's, or pip's nvidia-nccl (torch's) for the one-rank check -----------
nccl_args=()
if [ ! -f "$(dirname "$(command -v nvcc)")/../include/nccl.h" ]; then
  ndir=$(python3 -c 'import nvidia.nccl; print(list(nvidia.nccl.__path__)[0])' 2>/dev/null || true)
  if [ -n "$ndir" ] && [ -f "$ndir/include/nccl.h" ]; then
    nccl_args=(-DQS_NCCL_INCLUDE_DIR="$ndir/include")
    export LD_LIBRARY_PATH="$ndir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
fi
say "nccl       $([ ${#nccl_args[@]} = 0 ] && echo "the toolkit's (or none: gpu_nccl then skips)" || echo "pip's: ${nccl_args[0]#*=}")"

# ---- build -----------------------------------------------------------------------------------
bdir=$root/build-gpu-check
t0=$(date +%s)
if cmake -S "$root" -B "$bdir" -DQS_GPU_STANDALONE=ON -DCMAKE_BUILD_TYPE=Release \
     -DCMAKE_CUDA_ARCHITECTURES="$arch" "${nccl_args[@]}" > "$results/build.log" 2>&1 &&
   cmake --build "$bdir" -j"$(nproc)" >> "$results/build.log" 2>&1; then
  say "build      ok ($(( $(date +%s) - t0 )) s; build.log)"
else
  say "build      FAILED ($(( $(date +%s) - t0 )) s): the end of build.log:"
  tail -n 30 "$results/build.log" | tee -a "$summary"
  exit 1
fi

# ---- the gpu tests ----------------------------------------------------------------------------
t0=$(date +%s)
(cd "$bdir" && ctest -L gpu -V --timeout 300) > "$results/ctest.txt" 2>&1
ctest_rc=$?
passed=$(grep -cE 'Test +#[0-9]+: .* Passed' "$results/ctest.txt" || true)
skipped=$(grep -cE 'Test +#[0-9]+: .*Skipped' "$results/ctest.txt" || true)
failed=$(grep -cE 'Test +#[0-9]+: .*\*\*\*(Failed|Timeout|Exception)' "$results/ctest.txt" || true)
say "tests      $passed passed, $failed failed, $skipped skipped ($(( $(date +%s) - t0 )) s; ctest.txt)"
# what the tests measured: the GPTQ code agreement and the largest differences
grep -E '^[0-9]+: (gpu |gpu_nccl|sgemm|ssyrk|spotr|dpotr|hessian|rtn|rmsnorm|layernorm|rope|attention|add|scale|silu|relu|gelu|embed|nll|cuda:0|SKIP|FAIL)' \
  "$results/ctest.txt" | sed 's/^[0-9]*: /  /' | tee -a "$summary"

# ---- the benchmark ------------------------------------------------------------------------------
t0=$(date +%s)
bargs=(--json "$results/gpu_bench.json")
[ "$dry" = 1 ] && bargs=(--dry-run)
[ "$quick" = 1 ] && bargs+=(--quick)
"$bdir/bench/gpu/qs_gpu_bench" "${bargs[@]}" > "$results/bench.txt" 2>&1
bench_rc=$?
say "bench      $([ $bench_rc = 0 ] && echo ok || echo "FAILED (exit $bench_rc)") ($(( $(date +%s) - t0 )) s; bench.txt$([ "$dry" = 0 ] && echo ', gpu_bench.json'))"
sed 's/^/  /' "$results/bench.txt" | tee -a "$summary"

rc=0
[ "$ctest_rc" = 0 ] || rc=1
[ "$bench_rc" = 0 ] || rc=1
say "verdict    $([ $rc = 0 ] && echo PASS || echo FAIL)$([ "$dry" = 1 ] && echo ' (dry run: no GPU step ran)') — $(( $(date +%s) - t_start )) s in all"
exit $rc
