#!/usr/bin/env bash
# The README's demo command: install what is missing, build, and run the demo
# job end to end on a generated model (jobs/demo.ini).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
"$here/scripts/install_deps.sh"
. "$here/scripts/env.sh"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"
q="$here/build/qshard"
out="${QS_DEMO_DIR:-$here/build/demo}"
rm -rf "$out"
mkdir -p "$out"
echo "== qshard synth: a 4-block synthetic llama with outlier channels"
"$q" synth --arch llama --layers 4 --hidden 256 --heads 8 --kv-heads 4 --ffn 688 --vocab 1024 --seed 1 --out "$out/model"
echo "== qshard inspect"
"$q" inspect "$out/model"
