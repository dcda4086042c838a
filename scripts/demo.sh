#!/usr/bin/env bash
# The README's first command: install what is missing, build, and quantize a
# real model shipped in this repository (jobs/models/tinystories-656K, a
# 656K-parameter Llama that writes children's stories; Apache-2.0) end to end:
#
#   calibration text: stories the model writes itself (qshard generate: sampled
#     with a temperature and a seed — data-free calibration), or the text file
#     given as the first argument (scripts/demo.sh my-text.txt)
#   → tokenize → inspect → plan → GPTQ 4-bit g32 on 2 MPI ranks (GPTQ
#     safetensors + GGUF + HDF5 archive + report.html) → RTN on the same grid
#   → eval FP, RTN and GPTQ on held-out stories (another seed) against FP
#   → the first 40 greedy tokens after "Once upon a time" from each model
#   → the run report: build/demo/out/report.html
#
# About a minute on 2 cores once built. QS_DEMO_DIR moves the outputs.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
text_file=${1:+$(cd "$(dirname "$1")" && pwd)/$(basename "$1")}
cd "$here"
"$here/scripts/install_deps.sh"
. "$here/scripts/env.sh"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
q="$here/build/qshard"
m="$here/jobs/models/tinystories-656K"
d="${QS_DEMO_DIR:-$here/build/demo}"
rm -rf "$d"
mkdir -p "$d"
prompt="Once upon a time"

echo "== qshard inspect: the model"
"$q" inspect "$m"

if [ -n "$text_file" ]; then
  echo "== calibration text: $text_file"
  cp "$text_file" "$d/calib.txt"
else
  echo "== qshard generate: 24 stories the model writes itself (temperature 1, seed 1) as calibration text"
  "$q" generate --model "$m" --stories 24 --max-new 128 --seed 1 --out "$d/calib.txt"
  sed -n '1p' "$d/calib.txt" | cut -c1-200 | sed 's/^/   the first: /'
fi
echo "== held-out text: 16 more stories with another seed"
"$q" generate --model "$m" --stories 16 --max-new 128 --seed 2 --out "$d/heldout.txt"
rows=$("$q" tokenize --tokenizer "$m/tokenizer.json" --text "$d/calib.txt" --docs --no-prefix-space --seq-len 128 \
  --out "$d/calib.npy" 2>&1 | tee /dev/stderr | sed -n 's/.*wrote \([0-9]*\) rows.*/\1/p')
"$q" tokenize --tokenizer "$m/tokenizer.json" --text "$d/heldout.txt" --docs --no-prefix-space --seq-len 128 \
  --out "$d/heldout.npy"

echo "== qshard plan: 2 ranks"
"$q" plan "$m" --ranks 2 --calib-tokens "${rows}x128" --micro-batch 8

echo "== mpirun -np 2 qshard run jobs/demo.ini (GPTQ 4-bit g32, act-order + static groups)"
mpirun -np 2 --oversubscribe "$q" run jobs/demo.ini --model "$m" --calib "$d/calib.npy" \
  --work "$d/work" --out "$d/out" --formats gptq,gguf,hdf5 --rtn-baseline
echo "== the same grid with round-to-nearest, for comparison"
mpirun -np 2 --oversubscribe "$q" run jobs/demo.ini --model "$m" --calib "$d/calib.npy" \
  --work "$d/work-rtn" --out "$d/out-rtn" --method rtn --act-order false --static-groups false --quiet

echo "== qshard eval on the held-out stories (KL and top-1 against the original; rows go to the report)"
field() { sed -E "s/.*\"$1\": ([-0-9.e+]+).*/\1/"; }
printf "%-6s %12s %12s %10s\n" model "NLL" "KL vs FP" "top-1"
for pair in "FP:$m" "RTN:$d/out-rtn" "GPTQ:$d/out"; do
  name=${pair%%:*} dir=${pair#*:}
  j=$("$q" eval --model "$dir" --ref "$m" --tokens "$d/heldout.npy" --json --report "$d/work" 2>/dev/null)
  printf "%-6s %12.4f %12.4f %10.3f\n" "$name" "$(echo "$j" | field nll)" "$(echo "$j" | field kl_mean)" \
    "$(echo "$j" | field top1)"
done

echo "== the first 40 greedy tokens after \"$prompt\""
for pair in "FP:$m" "RTN:$d/out-rtn" "GPTQ:$d/out"; do
  name=${pair%%:*} dir=${pair#*:}
  printf "%-5s %s\n" "$name:" "$("$q" generate --model "$dir" --prompt "$prompt" --no-prefix-space --max-new 40 | tr '\n' ' ')"
done

echo "== qshard status"
"$q" status "$d/work"
echo "== the run report (open it in a browser): $d/out/report.html"
