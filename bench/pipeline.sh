#!/usr/bin/env bash
# bench/pipeline.sh — the distributed pipeline measured on this machine.
#
# Prints, from one run of this script:
#   1. pipelined schedule, P = 2 vs P = 1 (one thread per rank, each rank bound
#      to its own core): wall time of each and the speed-up;
#   2. exact schedule P = 1 and P = 2 for reference (ranks run one after the
#      other by construction, so P buys memory, not speed);
#   3. the cost model against the measurement: the scheduler's predicted
#      seconds per block (qshard plan with this machine's measured 1-thread
#      sgemm rate) vs the measured mean seconds per block.
#
# usage: bench/pipeline.sh [BUILD_DIR]   (default build/)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
q=$build/qshard
. "$here/scripts/env.sh"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
py=${PYTHON:-$here/.venv/bin/python3}
tmp=$(mktemp -d /tmp/qs-bench-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

layers=${QS_BENCH_LAYERS:-8} hidden=${QS_BENCH_HIDDEN:-1024} ffn=${QS_BENCH_FFN:-2816} rows=${QS_BENCH_ROWS:-8} seq=${QS_BENCH_SEQ:-128}
"$q" synth --arch llama --layers "$layers" --hidden "$hidden" --heads 8 --kv-heads 4 --ffn "$ffn" --vocab 4096 \
  --seed 1 --out "$tmp/model" >/dev/null
"$py" -c "import numpy as np; np.save('$tmp/calib.npy', np.random.default_rng(0).integers(0, 4096, size=($rows, $seq), dtype=np.int32))"

run() { # P schedule tag
  local t0 t1
  t0=$(date +%s.%N)
  mpirun -np "$1" --bind-to core --oversubscribe "$q" run --model "$tmp/model" --calib "$tmp/calib.npy" \
    --work "$tmp/w-$3" --out "$tmp/o-$3" --schedule "$2" --micro-batch 4 --group-size 128 >"$tmp/log-$3" 2>&1
  t1=$(date +%s.%N)
  awk "BEGIN{print $t1 - $t0}"
}

echo "model: llama $layers blocks, hidden $hidden, ffn $ffn; calibration $rows x $seq tokens; 1 thread per rank"
# What two ranks can gain at most here: two 1-thread sgemms on two cores at
# once vs one alone (2 vCPUs that share a physical core give far less than 2x).
one=$("$build/bench/bench_sgemm" 1024 | awk '{print $2}')
two=$( (taskset -c 0 "$build/bench/bench_sgemm" 1024 & taskset -c 1 "$build/bench/bench_sgemm" 1024; wait) | awk '{s += $2} END {print s}')
printf "machine: 1-thread sgemm %.1f GFLOP/s; two at once on two cores %.1f GFLOP/s: ceiling for P=2 %.2fx\n" \
  "$one" "$two" "$(awk "BEGIN{print $two / $one}")"
p1=$(run 1 pipelined pipe1)
p2=$(run 2 pipelined pipe2)
printf "pipelined  P=1 %7.2f s   P=2 %7.2f s   speed-up %.2fx (%.0f%% of the machine's ceiling)\n" "$p1" "$p2" \
  "$(awk "BEGIN{print $p1 / $p2}")" "$(awk "BEGIN{print 100 * ($p1 / $p2) / ($two / $one)}")"
e1=$(run 1 exact exact1)
e2=$(run 2 exact exact2)
printf "exact      P=1 %7.2f s   P=2 %7.2f s   (ranks run in turn; exports identical: %s)\n" "$e1" "$e2" \
  "$(cd "$tmp" && for f in o-exact1/*.safetensors; do cmp -s "$f" "o-exact2/$(basename "$f")" || { echo no; exit; }; done; echo yes)"

rate=$one
pred=$("$q" plan "$tmp/model" --ranks 1 --calib-tokens "${rows}x${seq}" --micro-batch 4 --device-flops "${rate}e9" \
  --io-bw 1e12 --json | "$py" -c "import json,sys; print(json.load(sys.stdin)['block_seconds'])")
meas=$("$py" -c "
import re
s = [float(m) for m in re.findall(r'seconds=([0-9.]+)', open('$tmp/w-exact1/journal.log').read())]
print(sum(s) / len(s))")
printf "cost model: sgemm %.1f GFLOP/s (1 thread); predicted %.3f s/block, measured %.3f s/block (ratio %.2f)\n" \
  "$rate" "$pred" "$meas" "$(awk "BEGIN{print $meas / $pred}")"
