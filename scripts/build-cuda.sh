#!/usr/bin/env bash
# Builds a release `flow` with CUDA (`--features cuda`) on a machine without a CUDA install:
# NVIDIA's CUDA 13 wheels from PyPI give nvcc, the headers and the libraries candle links
# (cuBLAS, cuBLASLt, cuRAND, NVRTC, the runtime). The one piece no wheel carries is the
# driver library, libcuda.so.1, which comes with the NVIDIA driver on a GPU machine; the build
# links against a stub of it made here from cuda.h (every entry point returns
# CUDA_ERROR_NO_DEVICE), and at run time the real one is used.
#
#   bash scripts/build-cuda.sh            # → target/cuda/release/flow, target/cuda/flow.gz
#   CUDA_COMPUTE_CAP=80 bash scripts/build-cuda.sh   # another GPU generation (default 90: H100/H200)
#
# The toolkit is CUDA 13.0, the oldest 13.x: candle JIT-compiles its kernels from PTX at run
# time, and a driver accepts PTX only from a toolkit no newer than itself.
#
# Everything goes under target/: the wheels in target/cuda-venv (about 1.2 GB, once), link
# names and the stub in target/cuda-link, the build in target/cuda. With a normal CUDA install
# (nvcc on PATH, the driver present) this script is not needed:
#   CUDA_COMPUTE_CAP=90 cargo build --release --features cuda
#
# The binary needs at run time the driver (libcuda.so.1) and the CUDA 13 libraries, found
# through LD_LIBRARY_PATH (for instance the nvidia/cu13/lib directory of a Python environment
# with PyTorch); without the driver it does not start, so CPU-only machines use the default
# build. scripts/gpu-check.sh runs it on a GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/cuda-venv
if [ ! -x "$venv/lib/python3.11/site-packages/nvidia/cu13/bin/nvcc" ] && ! ls "$venv"/lib/python3*/site-packages/nvidia/cu13/bin/nvcc >/dev/null 2>&1; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-runtime==13.0.*" "nvidia-cublas==13.0.*" "nvidia-curand==10.*" \
    "nvidia-cuda-nvrtc==13.0.*" "nvidia-cuda-cccl==13.0.*" "nvidia-nvvm==13.0.*" "nvidia-cuda-crt==13.0.*"
fi
nv=$(realpath "$(ls -d "$venv"/lib/python3*/site-packages/nvidia/cu13 | head -1)")
link=$(realpath -m target/cuda-link)
mkdir -p "$link"
# The linker looks for unversioned names.
for lib in cublas cublasLt curand nvrtc cudart; do
  real=$(ls "$nv"/lib/lib$lib.so.* | sort | head -1)
  ln -sf "$real" "$link/lib$lib.so"
done
# The driver stub: every `cu…` name cuda.h declares or maps to (`cuCtxCreate_v2`, …).
grep -oE '\bcu[A-Z][A-Za-z0-9_]*\b' "$nv/include/cuda.h" | sort -u \
  | awk '{ printf "int %s(void) { return 100; }\n", $1 }' > "$link/libcuda-stub.c"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$link/libcuda.so" "$link/libcuda-stub.c"
ln -sf libcuda.so "$link/libcuda.so.1"

export PATH="$nv/bin:$PATH"
export CUDA_ROOT="$nv" CUDA_PATH="$nv" CUDA_TOOLKIT_ROOT_DIR="$nv"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export LIBRARY_PATH="$link${LIBRARY_PATH:+:$LIBRARY_PATH}"
export RUSTFLAGS="${RUSTFLAGS:-} -L native=$link"
cargo build --release --features cuda --target-dir target/cuda
# A stripped, compressed copy (about 20 MB rather than 180) to take to a GPU machine;
# scripts/gpu-check.sh unpacks it.
strip -o target/cuda/flow target/cuda/release/flow
gzip -kf target/cuda/flow
echo "built target/cuda/release/flow (compute capability $CUDA_COMPUTE_CAP) and target/cuda/flow.gz"
