#!/usr/bin/env bash
# The README's results table, measured: tinystories-656K (../shared) quantized
# with RTN and GPTQ at 4, 3 and 2 bits, group size 32, asymmetric, on 2 MPI
# ranks, scored on held-out text against the original model.
#
#   calibration: characters 100,000–600,000 of ../shared/text/tinystories_valid_head.txt,
#                128 random rows of 256 tokens, each starting with BOS (qshard tokenize --seed 1)
#   evaluation:  its first 60,000 characters, consecutive rows of 256 tokens with BOS
#   NLL:         nats per scored token; KL(FP ‖ model) per token; top-1 agreement with FP
#
#   scripts/results.sh                   prints the table (markdown)
#   scripts/results.sh --update-readme   also writes it into README.md between the markers
#
# Needs a built qshard (build/qshard, or QSHARD=...) and ../shared (QS_SHARED=...).
# tests/py/test_readme_results.py checks that README.md holds what this prints.
# About a minute on 2 cores.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
q=${QSHARD:-$here/build/qshard}
shared=${QS_SHARED:-$here/../shared}
model="$shared/models/tinystories-656K"
text="$shared/text/tinystories_valid_head.txt"
mpirun=${QS_MPIEXEC:-mpirun}
[ -x "$q" ] || { echo "results.sh: $q is not built (cmake --build build)" >&2; exit 1; }
[ -d "$model" ] && [ -f "$text" ] || { echo "results.sh: $shared/models/tinystories-656K and $shared/text are needed" >&2; exit 77; }
. "$here/scripts/env.sh"
d=$(mktemp -d "${TMPDIR:-/tmp}/qshard-results.XXXXXX")
trap 'rm -rf "$d"' EXIT

# characters (not bytes) of the text: the file has some multi-byte quotes
python3 - "$text" "$d" <<'PY'
import sys
t = open(sys.argv[1], encoding="utf-8").read()
open(sys.argv[2] + "/calib.txt", "w", encoding="utf-8").write(t[100000:600000])
open(sys.argv[2] + "/eval.txt", "w", encoding="utf-8").write(t[:60000])
PY
"$q" tokenize --tokenizer "$model/tokenizer.json" --text "$d/calib.txt" --seq-len 256 --rows 128 --seed 1 --bos \
  --out "$d/calib.npy" >/dev/null
"$q" tokenize --tokenizer "$model/tokenizer.json" --text "$d/eval.txt" --seq-len 256 --bos --out "$d/eval.npy" >/dev/null

field() { sed -E "s/.*\"$1\": ([-0-9.e+]+).*/\1/"; }
row() { # method bits dir
  local j
  # f32 compute (the reference path) for runs and evals: the table does not depend on the CPU
  j=$("$q" eval --model "$3" --ref "$model" --tokens "$d/eval.npy" --json --compute-dtype f32)
  printf "| %s | %s | %.4f | %.2f | %.4f | %.3f |\n" "$1" "$2" "$(echo "$j" | field nll)" "$(echo "$j" | field ppl)" \
    "$(echo "$j" | field kl_mean)" "$(echo "$j" | field top1)"
}

table="$d/table.md"
{
  echo "| method | bits | NLL | perplexity | KL vs FP | top-1 vs FP |"
  echo "| --- | --- | --- | --- | --- | --- |"
  row FP 16 "$model"
  for bits in 4 3 2; do
    # OmniQuant trains each block for minutes here, so its rows come from bench/omniquant_quality.sh
    # (README, below the table), not from this script that readme_results reruns in CI
    for method in rtn gptq; do
      "$mpirun" -np 2 --oversubscribe "$q" run --model "$model" --calib "$d/calib.npy" --work "$d/w-$method$bits" \
        --out "$d/o-$method$bits" --method "$method" --bits "$bits" --group-size 32 --asym --quiet --compute-dtype f32
      name=$(echo "$method" | tr a-z A-Z)
      row "$name" "$bits" "$d/o-$method$bits"
    done
  done
} > "$table"
cat "$table"

if [ "${1:-}" = "--update-readme" ]; then
  python3 - "$here/README.md" "$table" <<'PY'
import sys
readme, table = sys.argv[1], open(sys.argv[2], encoding="utf-8").read()
text = open(readme, encoding="utf-8").read()
begin, end = "<!-- results: scripts/results.sh -->\n", "<!-- /results -->"
a, b = text.index(begin) + len(begin), text.index(end)
open(readme, "w", encoding="utf-8").write(text[:a] + table + text[b:])
PY
  echo "README.md updated" >&2
fi
