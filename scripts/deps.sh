#!/usr/bin/env bash
# Installs every Debian package ctok needs, only what is missing. Idempotent,
# non-interactive. This is the one place the package list lives.
set -euo pipefail

CTOK_APT_PACKAGES=(
  # toolchain
  build-essential cmake pkg-config git ccache
  # C++ libraries
  libtorch-dev libopencv-dev libsentencepiece-dev nlohmann-json3-dev libcli11-dev
  libspdlog-dev libgtest-dev libgmock-dev zlib1g-dev
  # retrieval over big galleries (ctok-index, ctok-search); needs OpenMP (libgomp)
  libfaiss-dev
  # fast BLAS for libtorch (the reference BLAS is ~15x slower for matrix products)
  libopenblas0-pthread
  # Python side: FashionWorld generator, default-model trainer, exporters, tests
  python3 python3-torch python3-numpy python3-sentencepiece python3-pil python3-opencv
  # FashionWorld source images
  dataset-fashion-mnist
  # plots (ctok-batch, scripts/python/ctok_py/plots.py) and the report browser test
  python3-matplotlib chromium
  # bench/*.sh: peak RSS through GNU time
  time
  # fuzzing (tests/fuzz, scripts/fuzz.sh): clang, libFuzzer + sanitizer runtimes, symbolizer
  clang-14 libclang-rt-14-dev llvm-14
)

missing=()
for p in "${CTOK_APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#CTOK_APT_PACKAGES[@]} packages present"
  exit 0
fi

echo "deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
