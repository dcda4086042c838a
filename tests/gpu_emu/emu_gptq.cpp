/* emu_gptq.cpp — kernels/cuda/gptq_cuda.cu built for the CUDA emulator (tests/gpu_emu/). */
#include "kernels/cuda/gptq_cuda.cu"
