#!/usr/bin/env bash
# Installs what qshard needs on Debian 12 (as root, or via sudo for a normal
# user): the C toolchain and libraries, Slurm + munge for the Slurm tests,
# chromium for the report's browser test, iproute2 for the multi-host tests
# (network namespaces), and a Python virtual environment with the test-only
# readers (numpy, safetensors, gguf, h5py, tokenizers, pillow) in .venv/.
# Installs only what is missing.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

packages=(build-essential cmake pkg-config clang libclang-rt-14-dev libomp-dev time
  openmpi-bin libopenmpi-dev libhdf5-openmpi-dev hdf5-tools libcmocka-dev
  libopenblas-dev liblapacke-dev libdnnl-dev libcjson-dev libxxhash-dev libpcre2-dev
  libinih-dev libyaml-dev python3 python3-venv python3-pip
  slurm-wlm munge chromium iproute2)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "qshard: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Python test tools (test-only: independent readers to compare formats with).
venv="$here/.venv"
if [ ! -x "$venv/bin/python3" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python3" -c "import numpy, safetensors, gguf, h5py, tokenizers, PIL" 2>/dev/null; then
  "$venv/bin/python3" -m pip install -q --disable-pip-version-check numpy safetensors gguf h5py tokenizers pillow
fi
