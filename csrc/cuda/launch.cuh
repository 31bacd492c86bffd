#pragma once
// Launch helpers shared by the torch-free kernels of csrc/cuda/.
#include <algorithm>
#include <cstdint>

#include <cuda_runtime.h>

namespace pgk {
namespace cuda {

constexpr int kThreads = 256;

// Grid for a grid-stride loop over `count` items (capped: the loop covers the rest).
inline unsigned grid_for(int64_t count, int per_block = kThreads) {
  const int64_t blocks = (count + per_block - 1) / per_block;
  return unsigned(std::max<int64_t>(1, std::min<int64_t>(blocks, 1 << 16)));
}

}  // namespace cuda
}  // namespace pgk

// for (i over [0, n)) spread over the whole grid; int64 indices throughout.
#define PGK_GRID_LOOP(i, n)                                                                   \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < int64_t(n); \
       i += int64_t(gridDim.x) * blockDim.x)
