// Bit slicing on the GPU (<pgkernels/bits.h>, launchers in kernels.h).
//
// bitslice: one warp per plane word w; lane j holds elements 64 w + j and
// 64 w + 32 + j, and a warp ballot of hd::value_bit(., b) gathers bit b of all
// 64 elements, i.e. word w of plane b. This is the GPU's native 32x32 bit
// transpose, so the CPU's hd::transpose64 (a register-hungry 64-word array per
// thread) is not used here; the tests pin the two layouts to the same bits.
// unbitslice: one thread per element reads its bit from each of the k planes.
#include "kernels.h"
#include "launch.cuh"

#include <pgkernels/bits_hd.h>

namespace pgk {
namespace cuda {
namespace {

__global__ void bitslice_kernel(const uint64_t* vals, int64_t n, int k, int64_t W, uint64_t* planes) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int64_t nwarps = (int64_t(gridDim.x) * blockDim.x) >> 5;
  for (int64_t w = warp; w < W; w += nwarps) {  // warp-uniform: the ballots need every lane
    const int64_t i = w * 64 + lane;
    const uint64_t lo = i < n ? vals[i] : 0, hi = i + 32 < n ? vals[i + 32] : 0;
    for (int b = 0; b < k; ++b) {
      const unsigned blo = __ballot_sync(0xffffffffu, hd::value_bit(lo, b) != 0);
      const unsigned bhi = __ballot_sync(0xffffffffu, hd::value_bit(hi, b) != 0);
      if (lane == (b & 31)) planes[int64_t(b) * W + w] = uint64_t(blo) | (uint64_t(bhi) << 32);
    }
  }
}

__global__ void unbitslice_kernel(const uint64_t* planes, int64_t n, int k, int64_t W, uint64_t* vals) {
  PGK_GRID_LOOP(i, n) {
    const int64_t w = i >> 6;
    const int j = int(i & 63);
    uint64_t v = 0;
    for (int b = 0; b < k; ++b) v |= hd::value_bit(planes[int64_t(b) * W + w], j) << b;
    vals[i] = v;
  }
}

}  // namespace

void bitslice(const uint64_t* vals, int64_t n, int k, uint64_t* planes, cudaStream_t stream) {
  const int64_t W = hd::plane_words(n);
  if (W == 0 || k == 0) return;
  bitslice_kernel<<<grid_for(W * 32), kThreads, 0, stream>>>(vals, n, k, W, planes);
}

void unbitslice(const uint64_t* planes, int64_t n, int k, uint64_t* vals, cudaStream_t stream) {
  if (n == 0) return;
  unbitslice_kernel<<<grid_for(n), kThreads, 0, stream>>>(planes, n, k, hd::plane_words(n), vals);
}

}  // namespace cuda
}  // namespace pgk
