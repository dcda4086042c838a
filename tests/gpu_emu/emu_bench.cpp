/* emu_bench.cpp — bench/gpu/gpu_bench.cu built for the CUDA emulator (tests/gpu_emu/): its logic checked here. */
#include "bench/gpu/gpu_bench.cu"
