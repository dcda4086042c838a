#!/usr/bin/env bash
# omniquant_quality.sh — the quality table of docs/omniquant.md: held-out NLL of
# tinystories-656K quantized with RTN, GPTQ, OmniQuant (LWC) and OmniQuant
# (LWC + LET) at W4/W3/W2, asymmetric, group 32, with the time per block.
#
#   bench/omniquant_quality.sh [BUILD_DIR] [OUT_DIR] [BITS...]
#
# Data (docs/omniquant.md): calibration = characters 100,000–600,000 of
# ../shared/text/tinystories_valid_head.txt, 128 random windows of 256 tokens
# with BOS (seed 1); evaluation = its first 60,000 characters as consecutive
# rows of 256 tokens with BOS. Both made with `qshard tokenize`. Every run is a
# fresh `qshard run` on one rank; each number is one run (the methods are
# deterministic), times are wall seconds per block on a machine others share.
# OMP_WAIT_POLICY=passive: with many small parallel regions between BLAS calls,
# spinning OpenMP threads take the cores OpenBLAS needs.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
out=${2:-$(mktemp -d /tmp/qs-omniquant-quality.XXXXXX)}
shift $(( $# > 2 ? 2 : $# ))
bits_list=${*:-4 3 2}
q=$build/qshard
model=${QS_SHARED:-$here/../shared}/models/tinystories-656K
text=${QS_SHARED:-$here/../shared}/text/tinystories_valid_head.txt
export OMP_WAIT_POLICY=passive
mkdir -p "$out"
cd "$out"

python3 - "$text" <<'EOF'
import sys
t = open(sys.argv[1], encoding="utf-8").read()
open("calib.txt", "w", encoding="utf-8").write(t[100000:600000])
open("eval.txt", "w", encoding="utf-8").write(t[:60000])
EOF
"$q" tokenize --tokenizer "$model/tokenizer.json" --text calib.txt --seq-len 256 --rows 128 --seed 1 --bos \
    --out calib.npy 2> /dev/null
"$q" tokenize --tokenizer "$model/tokenizer.json" --text eval.txt --seq-len 256 --bos --out eval.npy 2> /dev/null

nll() { "$q" eval --model "$1" --tokens eval.npy --json | python3 -c 'import json,sys; print("%.4f" % json.load(sys.stdin)["nll"])'; }

# one run: method tag, then qshard run flags; prints "NLL seconds-per-block"
run() {
    local tag=$1; shift
    rm -rf "w-$tag" "o-$tag"
    local t0 t1
    t0=$(date +%s.%N)
    "$q" run --model "$model" --calib calib.npy --work "w-$tag" --out "o-$tag" --group-size 32 --asym "$@" \
        > "log-$tag.txt" 2>&1
    t1=$(date +%s.%N)
    echo "$(nll "o-$tag") $(python3 -c "print('%.1f' % (($t1 - $t0) / 2))")"
}

fp=$(nll "$model")
{
echo "| bits | method | NLL | ΔNLL vs FP | s/block |"
echo "| --- | --- | --- | --- | --- |"
echo "| 16 | FP (bf16) | $fp | 0 | - |"
} > table.md
for bits in $bits_list; do
    for m in rtn gptq lwc letlwc; do
        case $m in
            rtn) r=$(run "w$bits-$m" --bits "$bits" --method rtn); name=RTN ;;
            gptq) r=$(run "w$bits-$m" --bits "$bits" --method gptq); name=GPTQ ;;
            lwc) r=$(run "w$bits-$m" --bits "$bits" --method omniquant); name="OmniQuant LWC" ;;
            letlwc) r=$(run "w$bits-$m" --bits "$bits" --method omniquant --let); name="OmniQuant LWC+LET" ;;
        esac
        set -- $r
        echo "| W$bits g32 | $name | $1 | $(python3 -c "print('%+.4f' % ($1 - $fp))") | $2 |" >> table.md
        tail -1 table.md
    done
done
echo
cat table.md
echo "(work dirs, logs and the table in $out)"
