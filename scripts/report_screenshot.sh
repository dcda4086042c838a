#!/usr/bin/env bash
# Makes docs/report-tinystories.png, the README's picture of a run report:
# tinystories-656K (../shared) with GPTQ 4-bit g32 asymmetric on 2 MPI ranks
# (--rtn-baseline), calibrated as in scripts/results.sh; RTN on the same grid;
# FP, RTN and GPTQ scored on the results' held-out text with --report; then
# the report in headless chromium, 1100 px wide, cut below the eval table.
#
#   scripts/report_screenshot.sh [OUT.png]      (default docs/report-tinystories.png)
#
# Needs a built qshard (build/qshard or QSHARD=...), ../shared (QS_SHARED=...),
# chromium and .venv's Pillow (scripts/install_deps.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
q=${QSHARD:-$here/build/qshard}
shared=${QS_SHARED:-$here/../shared}
png=${1:-$here/docs/report-tinystories.png}
case "$png" in /*) ;; *) png="$PWD/$png" ;; esac
py="$here/.venv/bin/python3"
. "$here/scripts/env.sh"
d=$(mktemp -d "${TMPDIR:-/tmp}/qshard-shot.XXXXXX")
trap 'rm -rf "$d"' EXIT
# relative paths inside $d, so that the report shows no machine paths
cp -r "$shared/models/tinystories-656K" "$d/tinystories-656K"
chmod -R u+w "$d"
cd "$d"
python3 - "$shared/text/tinystories_valid_head.txt" <<'PY'
import sys
t = open(sys.argv[1], encoding="utf-8").read()
open("calib.txt", "w", encoding="utf-8").write(t[100000:600000])
open("heldout.txt", "w", encoding="utf-8").write(t[:60000])
PY
m=tinystories-656K
"$q" tokenize --tokenizer $m/tokenizer.json --text calib.txt --seq-len 256 --rows 128 --seed 1 --bos --out calib.npy >/dev/null
"$q" tokenize --tokenizer $m/tokenizer.json --text heldout.txt --seq-len 256 --bos --out heldout.npy >/dev/null
mpirun -np 2 --oversubscribe "$q" run --model $m --calib calib.npy --bits 4 --group-size 32 --asym --rtn-baseline \
  --work work --out out --formats gptq,gguf,hdf5 --quiet
mpirun -np 2 --oversubscribe "$q" run --model $m --calib calib.npy --bits 4 --group-size 32 --asym --method rtn \
  --work work-rtn --out out-rtn --quiet
for model in $m out-rtn out; do
  "$q" eval --model $model --ref $m --tokens heldout.npy --report work >/dev/null 2>&1
done
no_sandbox=()
[ "$(id -u)" -ne 0 ] || no_sandbox=(--no-sandbox)
chromium --headless "${no_sandbox[@]}" --disable-gpu --disable-background-networking --disable-component-update \
  --disable-sync --no-first-run --disable-default-apps --disable-extensions --hide-scrollbars \
  --force-device-scale-factor=1 --user-data-dir="$d/profile" --window-size=1100,2400 \
  --screenshot="$d/full.png" "file://$d/out/report.html" >/dev/null 2>&1
# cut above the "The run" heading: headings are underlined by a full-width #d8dce3 rule (the 5th)
"$py" - "$d/full.png" "$png" <<'PY'
import sys
import numpy as np
from PIL import Image
img = Image.open(sys.argv[1]).convert("RGB")
a = np.asarray(img)
rule = (np.all(a == (0xd8, 0xdc, 0xe3), axis=2).mean(axis=1) > 0.6).nonzero()[0]
rules = [r for k, r in enumerate(rule) if k == 0 or r - rule[k - 1] > 1]
if len(rules) < 5:
    sys.exit(f"report_screenshot: found {len(rules)} heading rules, expected 5 or more")
cut = int(rules[4]) - 40
img.crop((0, 0, img.size[0], cut)).quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(sys.argv[2], optimize=True)
print(f"{sys.argv[2]}: {img.size[0]}x{cut}")
PY
