#!/usr/bin/env bash
# bench/bench_replicas.sh — data-parallel replicas (issue 13): the exact
# schedule on one stage of D = 2 replicas against D = 1, one thread per rank.
#
# Job: synthetic llama, 8 blocks, hidden 1024, 16 heads, ffn 2816, vocab 32000
# (f32 weights), 128 × 256 calibration tokens, GPTQ W4 g128, exact schedule,
# micro-batches of 4 rows (32 chunks), each rank bound to its own core.
#
# Prints, from one run of this script:
#   1. the machine's ceiling for two ranks, before and after the runs: two
#      1-thread sgemms on two cores at once against one alone (as GFLOP/s:
#      2·T1 / T2concurrent);
#   2. wall and CPU time of `qshard run --replicas 1` on 1 rank and
#      `--replicas 2` on 2 ranks (medians of QS_BENCH_REPEATS runs, default 3,
#      the runs listed), the speed-up and its share of the mean ceiling, and
#      the CPU ratio (the replicas' overhead: duplicated factorizations,
#      messages; independent of what else runs on the cores);
#   3. whether the two exports are byte-identical.
#
# usage: bench/bench_replicas.sh [BUILD_DIR]   (default build/)
# Other agents' processes on the cores make the numbers noisy: the ratios are
# from the same run of the script; the ceiling is measured right before.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
q=$build/qshard
. "$here/scripts/env.sh"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
py=${PYTHON:-$here/.venv/bin/python3}
tmp=$(mktemp -d /tmp/qs-bench-replicas-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

layers=${QS_BENCH_LAYERS:-8} hidden=${QS_BENCH_HIDDEN:-1024} ffn=${QS_BENCH_FFN:-2816}
rows=${QS_BENCH_ROWS:-128} seq=${QS_BENCH_SEQ:-256} repeats=${QS_BENCH_REPEATS:-3}
"$q" synth --arch llama --layers "$layers" --hidden "$hidden" --heads 16 --ffn "$ffn" --vocab 32000 \
  --seed 1 --out "$tmp/model" >/dev/null
"$py" -c "import numpy as np; np.save('$tmp/calib.npy', np.random.default_rng(0).integers(0, 32000, size=($rows, $seq), dtype=np.int32))"

run() { # D tag → "wall-seconds cpu-seconds" (CPU: user + system of every rank)
  rm -rf "$tmp/w-$2" "$tmp/o-$2"
  /usr/bin/time -f "%e %U %S" -o "$tmp/time-$2" mpirun -np "$1" --bind-to core --oversubscribe "$q" run \
    --model "$tmp/model" --calib "$tmp/calib.npy" --work "$tmp/w-$2" --out "$tmp/o-$2" --schedule exact \
    --replicas "$1" --micro-batch 4 --group-size 128 --compute-dtype f32 --quiet >"$tmp/log-$2" 2>&1 ||
    { cat "$tmp/log-$2" >&2; exit 1; }
  awk '{print $1, $2 + $3}' "$tmp/time-$2"
}
ceiling() { # two 1-thread sgemms on two cores at once against one alone
  local one two
  one=$("$build/bench/bench_sgemm" 1024 | awk '{print $2}')
  two=$( (taskset -c 0 "$build/bench/bench_sgemm" 1024 & taskset -c 1 "$build/bench/bench_sgemm" 1024; wait) | awk '{s += $2} END {print s}')
  echo "$one $two"
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

echo "job: llama $layers blocks, hidden $hidden, 16 heads, ffn $ffn (f32); calibration $rows x $seq tokens; GPTQ W4 g128, exact schedule; 1 thread per rank; median of $repeats"
read -r one two <<<"$(ceiling)"
c0=$(awk "BEGIN{print $two / $one}")
printf "machine before: 1-thread sgemm %.1f GFLOP/s; two at once on two cores %.1f GFLOP/s: ceiling for 2 ranks %.2fx\n" \
  "$one" "$two" "$c0"
d1=() d2=() c1=() c2=()
for ((i = 0; i < repeats; i++)); do
  read -r w c <<<"$(run 1 d1)"; d1+=("$w"); c1+=("$c")
  read -r w c <<<"$(run 2 d2)"; d2+=("$w"); c2+=("$c")
done
read -r one two <<<"$(ceiling)"
c9=$(awk "BEGIN{print $two / $one}")
printf "machine after:  1-thread sgemm %.1f GFLOP/s; two at once on two cores %.1f GFLOP/s: ceiling for 2 ranks %.2fx\n" \
  "$one" "$two" "$c9"
ceil=$(awk "BEGIN{print ($c0 + $c9) / 2}")
m1=$(median "${d1[@]}") m2=$(median "${d2[@]}") u1=$(median "${c1[@]}") u2=$(median "${c2[@]}")
same=$(cd "$tmp" && for f in o-d1/*.safetensors o-d1/*.json; do cmp -s "$f" "o-d2/$(basename "$f")" || { echo no; exit; }; done; echo yes)
printf "exact 1x1 (D=1, 1 rank)   wall %7.2f s (runs: %s), CPU %7.2f s\n" "$m1" "$(printf '%.2f ' "${d1[@]}")" "$u1"
printf "exact 1x2 (D=2, 2 ranks)  wall %7.2f s (runs: %s), CPU %7.2f s\n" "$m2" "$(printf '%.2f ' "${d2[@]}")" "$u2"
printf "replicas: D=2 over D=1 speed-up %.2fx; machine ceiling %.2fx (mean of before/after; %.0f%% of it); CPU of D=2 / D=1 %.3f; exports identical: %s\n" \
  "$(awk "BEGIN{print $m1 / $m2}")" "$ceil" "$(awk "BEGIN{print 100 * ($m1 / $m2) / $ceil}")" \
  "$(awk "BEGIN{print $u2 / $u1}")" "$same"
