/* emu_ops.cpp — kernels/cuda/ops_cuda.cu built for the CUDA emulator (tests/gpu_emu/). */
#include "kernels/cuda/ops_cuda.cu"
