/* emu_quant.cpp — kernels/cuda/quant_cuda.cu built for the CUDA emulator (tests/gpu_emu/). */
#include "kernels/cuda/quant_cuda.cu"
