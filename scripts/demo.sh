#!/usr/bin/env bash
# The README's demo command: install what is missing, build, and run the demo
# job (jobs/demo.ini) end to end on a generated model:
#   synth a 4-block llama with outlier channels → tokenize calibration/eval
#   text with a real byte-level tokenizer → plan → quantize with GPTQ on 2 MPI
#   ranks (GPTQ safetensors + GGUF + HDF5 archive) → RTN on the same grid for
#   comparison → eval both against the original → status of the work dir.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
"$here/scripts/install_deps.sh"
. "$here/scripts/env.sh"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"
q="$here/build/qshard"
d="${QS_DEMO_DIR:-$here/build/demo}"
rm -rf "$d"
mkdir -p "$d"

echo "== qshard synth: a 4-block synthetic llama (hidden 256, GQA, outlier channels)"
"$q" synth --arch llama --layers 4 --hidden 256 --heads 8 --kv-heads 4 --ffn 768 --vocab 2000 --seed 1 --out "$d/model"
cp tests/fixtures/tokenizers/bytelevel.json "$d/model/tokenizer.json"
"$q" inspect "$d/model"

echo "== qshard tokenize: this repository's docs as text, a byte-level BPE tokenizer"
cat README.md docs/*.md > "$d/text.txt"
"$q" tokenize --tokenizer "$d/model/tokenizer.json" --text "$d/text.txt" --seq-len 128 --rows 32 --seed 0 --out "$d/calib.npy"
"$q" tokenize --tokenizer "$d/model/tokenizer.json" --text "$d/text.txt" --seq-len 128 --rows 16 --out "$d/eval.npy"

echo "== qshard plan: 2 ranks"
"$q" plan "$d/model" --ranks 2 --calib-tokens 32x128 --micro-batch 4

echo "== mpirun -np 2 qshard run jobs/demo.ini (GPTQ 4-bit g64, act-order + static groups)"
mpirun -np 2 --oversubscribe "$q" run jobs/demo.ini --model "$d/model" --calib "$d/calib.npy" \
  --work "$d/work" --out "$d/out" --formats gptq,gguf,hdf5
echo "== the same grid with round-to-nearest, for comparison"
mpirun -np 2 --oversubscribe "$q" run jobs/demo.ini --model "$d/model" --calib "$d/calib.npy" \
  --work "$d/work-rtn" --out "$d/out-rtn" --method rtn --act-order false --static-groups false

echo "== qshard eval against the original model"
printf "GPTQ: "; "$q" eval --model "$d/out" --ref "$d/model" --tokens "$d/eval.npy"
printf "RTN:  "; "$q" eval --model "$d/out-rtn" --ref "$d/model" --tokens "$d/eval.npy"
echo "== qshard status"
"$q" status "$d/work"
ls -la "$d/out"
