// ZCOLL_HD marks per-element math compiled for host and device alike, so the CPU tests prove
// the arithmetic the CUDA kernels run (docs/arithmetic.md).
#pragma once

#if defined(__CUDACC__)
#define ZCOLL_HD __host__ __device__ __forceinline__
#else
#define ZCOLL_HD inline
#endif
