#!/usr/bin/env bash
# bench/e2e.sh — one node, end to end: a whole quantization job on qshard and,
# when it is installed in a side virtual environment, on GPTQModel, side by
# side on this machine, from model load to saved export.
#
# The job (issue 16): `qshard synth --arch llama --layers 8 --hidden 1024
# --heads 16 --kv-heads 16 --ffn 2816 --vocab 32000 --seed 1` (f32 weights),
# 128 × 256 calibration token ids, GPTQ W4 g128 symmetric, no act-order,
# true-sequential, damping 0.01. Held-out: 32 other rows of 256 ids. Prints:
#   - the machine: f32 and bf16 GEMM rates (bench_gemm, the threads of one
#     rank on all cores) and the job's FLOP floor at each rate;
#   - qshard, 1 rank × all threads and P ranks × 1 thread (exact, pipelined),
#     bf16 compute: wall time (median of QS_E2E_REPEATS, default 3), CPU
#     seconds, the time split of the report (forward, Hessians, solve, I/O,
#     comm, idle, summed over ranks), each phase's rate, held-out NLL;
#   - qshard f32 compute once (QS_E2E_F32_REPEATS), for the cost of bf16;
#   - GPTQModel (QS_PEERS_VENV: a venv where `import gptqmodel` works, made
#     by scripts/install_peers.sh) on the same ids with GPTQMODEL_CPU_WORKERS =
#     cores, desc_act=False, act_group_aware=False: wall (median), CPU seconds,
#     held-out NLL, and the wall-time ratio. Skipped without it; never in CI.
# Every NLL is `qshard eval --compute-dtype f32` on the same held-out ids.
#
# usage: bench/e2e.sh [BUILD_DIR]  (default build/)
#   QS_E2E_DIR=DIR keeps the files there (default: a temp dir, removed)
#   QS_E2E_LAYERS, _HIDDEN, _HEADS, _FFN, _VOCAB, _ROWS, _SEQ: a smaller job
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$here/build}" && pwd)
q=$build/qshard
. "$here/scripts/env.sh"
# threads follow each rank's cores (kernels/cpu/threads.c), not these
unset OMP_NUM_THREADS OPENBLAS_NUM_THREADS
py=${PYTHON:-$here/.venv/bin/python3}
reps=${QS_E2E_REPEATS:-3}
f32reps=${QS_E2E_F32_REPEATS:-1}
cores=$(nproc)
if [ -n "${QS_E2E_DIR:-}" ]; then
  tmp=$QS_E2E_DIR
  mkdir -p "$tmp"
else
  tmp=$(mktemp -d /tmp/qs-e2e-XXXXXX)
  trap 'rm -rf "$tmp"' EXIT
fi
layers=${QS_E2E_LAYERS:-8} hidden=${QS_E2E_HIDDEN:-1024} heads=${QS_E2E_HEADS:-16} ffn=${QS_E2E_FFN:-2816}
vocab=${QS_E2E_VOCAB:-32000} rows=${QS_E2E_ROWS:-128} seq=${QS_E2E_SEQ:-256}

# ---- the job's inputs ----------------------------------------------------------
"$q" synth --arch llama --layers "$layers" --hidden "$hidden" --heads "$heads" --kv-heads "$heads" --ffn "$ffn" \
  --vocab "$vocab" --seed 1 --out "$tmp/model" >/dev/null
"$py" -c "
import numpy as np
np.save('$tmp/calib.npy', np.random.default_rng(1).integers(0, $vocab, size=($rows, $seq), dtype=np.int32))
np.save('$tmp/heldout.npy', np.random.default_rng(2).integers(0, $vocab, size=(32, $seq), dtype=np.int32))"
job=(--model "$tmp/model" --calib "$tmp/calib.npy" --bits 4 --group-size 128 --damp 0.01)
echo "job: llama $layers blocks, hidden $hidden, $heads heads, ffn $ffn, vocab $vocab (f32 weights); calibration" \
  "$rows × $seq ids; GPTQ W4 g128 sym, no act-order, true-sequential; $cores cores; median of $reps runs"

# ---- the machine ------------------------------------------------------------------
read -r _ f32r _ bf16r _ gthreads _ _ _ _ _ _ _ kern < <("$build/bench/bench_gemm")
plan=$("$q" plan "$tmp/model" --ranks 1 --calib-tokens "${rows}x${seq}" --json)
read -r ffwd fhess fgptq < <("$py" -c "
import json, sys
p = json.loads(sys.argv[1]); b = p['blocks']
print(b * p['block_flops_forward'], b * p['block_flops_hessian'], b * p['block_flops_gptq'])" "$plan")
awk -v f="$ffwd" -v h="$fhess" -v g="$fgptq" -v b="$bf16r" -v s="$f32r" -v t="$gthreads" -v k="$kern" 'BEGIN {
  printf "machine: GEMM %.1f GFLOP/s f32, %.1f GFLOP/s bf16 (%s), %d threads\n", s, b, k, t
  printf "FLOP floor: forward %.2f + Hessians %.2f + GPTQ %.2f TFLOP: %.1f s with bf16 forward/Hessians (solve f32), %.1f s all f32\n",
    f / 1e12, h / 1e12, g / 1e12, (f + h) / (b * 1e9) + g / (s * 1e9), (f + h + g) / (s * 1e9) }'

median() { sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
heldout_nll() { "$q" eval --model "$1" --tokens "$tmp/heldout.npy" --compute-dtype f32 --json |
  "$py" -c "import json, sys; print('%.5f' % json.load(sys.stdin)['nll'])"; }

# run_qshard TAG REPEATS LAUNCH... -- RUN_FLAGS...: prints one line; sets best_wall/best_tag/best_nll
best_wall=
run_qshard() {
  local tag=$1 n=$2
  shift 2
  local launch=()
  while [ "$1" != -- ]; do launch+=("$1"); shift; done
  shift
  local walls=() cpus=() i
  for i in $(seq 1 "$n"); do
    rm -rf "$tmp/w-$tag" "$tmp/o-$tag"
    /usr/bin/time -f "%e %U %S" -o "$tmp/time-$tag-$i" "${launch[@]}" "$q" run "${job[@]}" \
      --work "$tmp/w-$tag" --out "$tmp/o-$tag" "$@" >"$tmp/log-$tag-$i" 2>&1 ||
      { echo "qshard $tag failed:"; tail -5 "$tmp/log-$tag-$i"; exit 1; }
    cp "$tmp/w-$tag/qshard_report.json" "$tmp/report-$tag-$i.json"
    read -r w u s < "$tmp/time-$tag-$i"
    walls+=("$w")
    cpus+=("$(awk -v u="$u" -v s="$s" 'BEGIN {print u + s}')")
  done
  local wall cpu k
  wall=$(printf '%s\n' "${walls[@]}" | median)
  for k in $(seq 1 "$n"); do [ "${walls[$((k - 1))]}" = "$wall" ] && break; done
  cpu=${cpus[$((k - 1))]}
  local nll
  nll=$(heldout_nll "$tmp/o-$tag")
  "$py" - "$tmp/report-$tag-$k.json" "$tag" "$wall" "$cpu" "$nll" "$ffwd" "$fhess" "$fgptq" "${walls[*]}" <<'EOF'
import json, sys
rep, tag, wall, cpu, nll = json.load(open(sys.argv[1])), sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
ffwd, fhess, fgptq = (float(x) for x in sys.argv[6:9])
r = rep["per_rank"]
tot = {k: sum(x[k] for x in r) for k in ("forward_s", "hessian_s", "solve_s", "io_s", "comm_s", "idle_s")}
eq = sum(x["forward_flops"] for x in r) / ffwd
print(f"qshard {tag:<22} wall {wall:6.1f} s (runs: {sys.argv[9]}), CPU {cpu:6.1f} s; split: forward {tot['forward_s']:.1f} s,"
      f" Hessians {tot['hessian_s']:.1f}, solve {tot['solve_s']:.1f}, I/O {tot['io_s']:.1f}, comm {tot['comm_s']:.1f},"
      f" idle {tot['idle_s']:.1f} (" + ", ".join(f"rank {x['rank']} {x['idle_s']:.1f}" for x in r) + ");"
      f" forward {eq:.2f} passes at {eq * ffwd / max(tot['forward_s'], 1e-9) / 1e9:.0f} GFLOP/s, Hessians"
      f" {fhess / max(tot['hessian_s'], 1e-9) / 1e9:.0f}, solve {fgptq / max(tot['solve_s'], 1e-9) / 1e9:.0f};"
      f" held-out NLL {nll}")
EOF
  if [ -z "$best_wall" ] || awk -v a="$wall" -v b="$best_wall" 'BEGIN {exit !(a < b)}'; then
    best_wall=$wall best_tag=$tag best_nll=$nll
  fi
}

fp_nll=$(heldout_nll "$tmp/model")
echo "original model: held-out NLL $fp_nll"
pe=1
run_qshard "1x${cores} exact bf16" "$reps" mpirun -np 1 --map-by "ppr:1:node:pe=$cores" -- --compute-dtype bf16
if [ "$cores" -ge 2 ]; then
  run_qshard "${cores}x1 exact bf16" "$reps" mpirun -np "$cores" --map-by "ppr:$cores:node:pe=$pe" -- \
    --compute-dtype bf16
  run_qshard "${cores}x1 pipelined bf16" "$reps" mpirun -np "$cores" --map-by "ppr:$cores:node:pe=$pe" -- \
    --compute-dtype bf16 --schedule pipelined
fi
bf16_tag=$best_tag bf16_wall=$best_wall bf16_nll=$best_nll
if [ "$f32reps" -gt 0 ]; then
  save=$best_wall
  best_wall=
  run_qshard "1x${cores} exact f32" "$f32reps" mpirun -np 1 --map-by "ppr:1:node:pe=$cores" -- --compute-dtype f32
  kl() { "$q" eval --model "$1" --ref "$tmp/model" --tokens "$tmp/heldout.npy" --compute-dtype f32 --json |
    "$py" -c "import json, sys; print('%.5f' % json.load(sys.stdin)['kl_mean'])"; }
  echo "bf16 vs f32 compute (1 rank): held-out NLL $(heldout_nll "$tmp/o-1x${cores} exact bf16") vs" \
    "$(heldout_nll "$tmp/o-1x${cores} exact f32"), KL to the original $(kl "$tmp/o-1x${cores} exact bf16") vs" \
    "$(kl "$tmp/o-1x${cores} exact f32") nats/token"
  best_wall=$save
fi

# ---- GPTQModel --------------------------------------------------------------------
pv=${QS_PEERS_VENV:-$here/.peers/venv}
if [ -x "$pv/bin/python" ] && "$pv/bin/python" -c "import gptqmodel" >/dev/null 2>&1; then
  # GPTQModel wants a tokenizer next to the weights; any will do (it gets ids)
  view=$tmp/model-gptqmodel
  mkdir -p "$view"
  ln -sf "$tmp/model/config.json" "$tmp/model/model.safetensors" "$view/"
  cp "$here/tests/fixtures/tokenizers/bytelevel.json" "$view/tokenizer.json"
  versions=$("$pv/bin/python" -c "import gptqmodel, torch; print(f'GPTQModel {gptqmodel.__version__}, torch {torch.__version__}')" 2>/dev/null | tail -1)
  walls=() cpus=()
  for i in $(seq 1 "$reps"); do
    rm -rf "$tmp/o-gptqmodel"
    # (in the temp dir: GPTQModel writes logs/ into its working directory)
    (cd "$tmp" && GPTQMODEL_CPU_WORKERS=$cores /usr/bin/time -f "%e %U %S" -o "$tmp/time-gq-$i" "$pv/bin/python" \
      "$here/bench/gptqmodel_job.py" "$view" "$tmp/calib.npy" "$tmp/o-gptqmodel" --bits 4 --group-size 128 \
      --damp 0.01 --threads "$cores") >"$tmp/log-gq-$i" 2>&1 || { echo "GPTQModel failed:"; tail -5 "$tmp/log-gq-$i"; exit 1; }
    read -r w u s < "$tmp/time-gq-$i"
    walls+=("$w")
    cpus+=("$(awk -v u="$u" -v s="$s" 'BEGIN {print u + s}')")
  done
  gw=$(printf '%s\n' "${walls[@]}" | median)
  for k in $(seq 1 "$reps"); do [ "${walls[$((k - 1))]}" = "$gw" ] && break; done
  gnll=$(heldout_nll "$tmp/o-gptqmodel")
  printf "%-29s wall %6.1f s (runs: %s), CPU %6.1f s; held-out NLL %s\n" "GPTQModel" "$gw" "${walls[*]}" \
    "${cpus[$((k - 1))]}" "$gnll"
  awk -v g="$gw" -v qw="$bf16_wall" -v t="$bf16_tag" -v qn="$bf16_nll" -v gn="$gnll" -v v="$versions" 'BEGIN {
    printf "side by side (%s): qshard %s is %.2fx faster than GPTQModel in wall time; held-out NLL qshard %s," \
      " GPTQModel %s (qshard - GPTQModel = %+.5f)\n", v, t, g / qw, qn, gn, qn - gn }'
else
  echo "GPTQModel: not installed in $pv (QS_PEERS_VENV; scripts/install_peers.sh makes it): skipped"
fi
