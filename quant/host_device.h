// LOADSTAR_HOST_DEVICE marks a function that both the host compiler and nvcc compile, so
// the CPU path (quant/) and the CUDA kernels (kernels/) run the same math and the CPU tests
// cover the GPU's per-element decisions. Headers using it must stay free of the C++
// standard library beyond <cstdint>/<cmath>-level builtins, of absl and of exceptions.
#pragma once

#if defined(__CUDACC__)
#define LOADSTAR_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define LOADSTAR_HOST_DEVICE inline
#endif

// Floating-point multiply and add that must not be contracted into an FMA: bitsandbytes
// rounds after each of them (e.g. double-quant dequant is `code*absmax` in a kernel, then
// `+ offset` in torch). nvcc contracts by default, so device code uses the _rn intrinsics;
// host code is built with -ffp-contract=off (quant/CMakeLists.txt).
// Never compile these headers with --use_fast_math / -ffast-math: 1.0f / absmax must be
// the IEEE quotient (nvcc's default -prec-div=true) and subnormals must not be flushed
// (-ftz=false), or codes change.
#if defined(__CUDA_ARCH__)
#define LOADSTAR_FMUL_RN(a, b) __fmul_rn((a), (b))
#define LOADSTAR_FADD_RN(a, b) __fadd_rn((a), (b))
#else
#define LOADSTAR_FMUL_RN(a, b) ((a) * (b))
#define LOADSTAR_FADD_RN(a, b) ((a) + (b))
#endif
