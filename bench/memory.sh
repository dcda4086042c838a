#!/usr/bin/env bash
# bench/memory.sh — a model larger than what we want any rank to hold,
# quantized by 2 ranks; each rank's peak RSS against what it must hold.
#
# A synthetic llama of >= 6 GB (f32) is written with `qshard synth` (streamed),
# then `mpirun -np 2 qshard run` quantizes it with GPTQ under /usr/bin/time -v.
# The bound per rank is: its own blocks (bytes on disk) + the boundary
# activations (2 × N × L × hidden f32) + the largest Hessian three times
# (accumulator, factor, copy for the loss) + 20 %. The model is never held whole
# if every rank stays below it.
#
# usage: bench/memory.sh [BUILD_DIR]     (QS_MEM_LAYERS, QS_MEM_HIDDEN, QS_MEM_FFN to resize)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
q=$build/qshard
. "$here/scripts/env.sh"
py=${PYTHON:-$here/.venv/bin/python3}
tmp=$(mktemp -d /tmp/qs-mem-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
layers=${QS_MEM_LAYERS:-30} hidden=${QS_MEM_HIDDEN:-2048} ffn=${QS_MEM_FFN:-5504} rows=8 seq=128

/usr/bin/time -v "$q" synth --arch llama --layers "$layers" --hidden "$hidden" --heads 16 --kv-heads 16 --ffn "$ffn" \
  --vocab 4096 --dtype f32 --seed 1 --out "$tmp/model" 2>"$tmp/synth.time" >/dev/null
echo "synth: $(du -sb "$tmp/model" | awk '{printf "%.2f GB", $1/1e9}') written, peak RSS $(awk -F: '/Maximum resident/ {printf "%.0f MB", $2/1024}' "$tmp/synth.time")"
"$py" -c "import numpy as np; np.save('$tmp/calib.npy', np.random.default_rng(0).integers(0, 4096, size=($rows, $seq), dtype=np.int32))"

mpirun -np 2 --oversubscribe sh -c '/usr/bin/time -v -o '"$tmp"'/rank$OMPI_COMM_WORLD_RANK.time "$@"' sh \
  "$q" run --model "$tmp/model" --calib "$tmp/calib.npy" --work "$tmp/work" --out "$tmp/out" --group-size 128 \
  --micro-batch 4 2>"$tmp/run.log" || { tail -20 "$tmp/run.log"; exit 1; }
tail -4 "$tmp/run.log"

"$q" inspect "$tmp/model" --json >"$tmp/inspect.json"
"$py" - "$tmp" "$rows" "$seq" "$hidden" "$ffn" <<'PY'
import json, re, sys
tmp, rows, seq, hidden, ffn = sys.argv[1], *map(int, sys.argv[2:])
ins = json.load(open(f"{tmp}/inspect.json"))
rep = json.load(open(f"{tmp}/work/qshard_report.json"))
blocks = ins["blocks"] if isinstance(ins["blocks"], list) else None
total = sum(b["bytes"] for b in blocks) if blocks else None
acts = 2 * rows * seq * hidden * 4
hess = 3 * ffn * ffn * 4
for r in rep["per_rank"]:
    mine = sum(blocks[i]["bytes"] for i in range(r["first_block"], r["end_block"]))
    bound = 1.2 * (mine + acts + hess)
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(f"{tmp}/rank{r['rank']}.time").read()).group(1)) * 1024
    print(f"rank {r['rank']}: blocks [{r['first_block']}, {r['end_block']}) {mine/1e9:.2f} GB of {total/1e9:.2f} GB; "
          f"peak RSS {rss/1e9:.3f} GB; bound (own blocks + activations + Hessians) + 20% = {bound/1e9:.2f} GB: "
          f"{'OK' if rss <= bound else 'OVER'}")
PY
