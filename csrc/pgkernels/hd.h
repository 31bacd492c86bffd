#pragma once
// PGK_HD marks the per-element arithmetic that the CPU loops (csrc/core/*.cpp)
// and the CUDA kernels (csrc/cuda/*.cu) share: __host__ __device__ under nvcc,
// nothing for a plain C++ compiler. Keeping one definition of each formula is
// what makes the GPU results bit-identical to the CPU ones, and lets the CPU
// tests exercise the GPU arithmetic. Installed with the public headers, so other code
// can build its own CUDA kernels on the same formulas.
#include <cstdint>

#if defined(__CUDACC__)
#define PGK_HD __host__ __device__
#else
#define PGK_HD
#endif

namespace pgk {
namespace hd {

PGK_HD inline int popc(unsigned v) {
#if defined(__CUDA_ARCH__)
  return __popc(v);
#else
  return __builtin_popcount(v);
#endif
}

// Index of the lowest set bit (v != 0).
PGK_HD inline int ctz(unsigned v) {
#if defined(__CUDA_ARCH__)
  return __ffs(int(v)) - 1;
#else
  return __builtin_ctz(v);
#endif
}

PGK_HD inline int64_t plane_words(int64_t n) { return (n + 63) / 64; }

// Bit i of a bit-plane buffer (element i at word i / 64, bit i % 64).
PGK_HD inline uint64_t plane_bit(const uint64_t* planes, int64_t i) { return (planes[i >> 6] >> (i & 63)) & 1; }

}  // namespace hd
}  // namespace pgk
