#!/usr/bin/env bash
# Installs the "peers": the real loaders that qshard's exports are checked
# against (tests/peers/, ctest label `peers`), in a side virtual environment
# of their own because the stack is several GB (torch pulls its CUDA wheels
# from PyPI even on a CPU-only machine) and is no part of the default CI run.
#
# Where: $QS_PEERS_VENV, default .peers/venv under the repository (ignored by
# git). What: tests/peers/requirements.txt (top-level pins) constrained by
# tests/peers/peers.lock (the full `pip freeze` of the last install that passed
# the peer checks), in two stages so the first is usable early:
#
#   1. torch, transformers, optimum, gptqmodel, numpy, safetensors, tokenizers.
#      When `import gptqmodel, optimum, transformers, torch` works the script
#      writes the marker file $QS_PEERS_VENV/.ready — readers must check for it
#      (the directory exists, half-filled, while stage 1 installs).
#   2. llama-cpp-python, compiled from source (its sdist builds llama.cpp with
#      CMake; ~15 min on 2 cores). When `import llama_cpp` works the script
#      writes $QS_PEERS_VENV/.ready-llama.
#
# Each stage is skipped when its marker is there; remove the markers (or the
# directory) to reinstall. Set QS_PEERS_NICE=19 to build at low priority.
# Needs python3 with venv, a C/C++ compiler and cmake (scripts/install_deps.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${QS_PEERS_VENV:-$here/.peers/venv}
reqs="$here/tests/peers/requirements.txt"
lock="$here/tests/peers/peers.lock"
nice_cmd=()
[ -z "${QS_PEERS_NICE:-}" ] || nice_cmd=(nice -n "$QS_PEERS_NICE")

if [ ! -x "$venv/bin/python3" ]; then
  echo "qshard peers: creating $venv"
  mkdir -p "$(dirname "$venv")"
  "${PYTHON:-python3}" -m venv "$venv"
fi
py="$venv/bin/python3"
pip=("${nice_cmd[@]}" "$py" -m pip --disable-pip-version-check)
constraints=()
[ -f "$lock" ] && constraints=(-c "$lock")

# --- stage 1: the GPTQ loaders ---------------------------------------------
if [ ! -f "$venv/.ready" ]; then
  echo "qshard peers: stage 1 (torch, transformers, optimum, gptqmodel)"
  "${pip[@]}" install -q --upgrade pip
  # requirements.txt minus llama-cpp-python, which stage 2 compiles
  grep -v '^llama-cpp-python' "$reqs" > "$venv/stage1.txt"
  "${pip[@]}" install -q "${constraints[@]}" -r "$venv/stage1.txt"
  "$py" -c "import torch, transformers, optimum, gptqmodel, numpy, safetensors, tokenizers"
  touch "$venv/.ready"
  echo "qshard peers: stage 1 ready ($venv/.ready)"
fi

# --- stage 2: llama.cpp through llama-cpp-python, built from source --------
if [ ! -f "$venv/.ready-llama" ]; then
  echo "qshard peers: stage 2 (llama-cpp-python from source; this takes a while)"
  # The build of the CPU backend only; GGML_NATIVE tunes it for this CPU.
  CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
  CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON}" \
    "${pip[@]}" install -q --no-binary llama-cpp-python "${constraints[@]}" \
      "$(grep '^llama-cpp-python' "$reqs")"
  "$py" -c "import llama_cpp"
  touch "$venv/.ready-llama"
  echo "qshard peers: stage 2 ready ($venv/.ready-llama)"
fi

"$py" -m pip --disable-pip-version-check freeze > "$venv/freeze.txt"
echo "qshard peers: $venv ready; versions in $venv/freeze.txt"
