/* emu_backend.cpp — kernels/cuda/backend_cuda.cu built for the CUDA emulator (tests/gpu_emu/). */
#include "kernels/cuda/backend_cuda.cu"
