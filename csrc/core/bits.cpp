#include "core/bits.h"

#include <algorithm>
#include <cstring>

namespace pgk {

void transpose64(uint64_t a[64]) {
  // Swap the off-diagonal j x j blocks of every 2j x 2j block, for j = 32..1.
  uint64_t m = 0x00000000FFFFFFFFull;
  for (int j = 32; j != 0; j >>= 1, m ^= (m << j)) {
    for (int k = 0; k < 64; ++k) {
      if (k & j) continue;
      const uint64_t t = ((a[k] >> j) ^ a[k | j]) & m;
      a[k] ^= t << j;
      a[k | j] ^= t;
    }
  }
}

void bitslice(const uint64_t* vals, int64_t n, int k, uint64_t* planes) {
  const int64_t W = plane_words(n);
  uint64_t blk[64];
  for (int64_t w = 0; w < W; ++w) {
    const int64_t base = w * 64;
    const int64_t cnt = std::min<int64_t>(64, n - base);
    std::memcpy(blk, vals + base, sizeof(uint64_t) * cnt);
    std::fill(blk + cnt, blk + 64, 0);
    transpose64(blk);
    for (int b = 0; b < k; ++b) planes[b * W + w] = blk[b];
  }
}

void unbitslice(const uint64_t* planes, int64_t n, int k, uint64_t* vals) {
  const int64_t W = plane_words(n);
  uint64_t blk[64];
  for (int64_t w = 0; w < W; ++w) {
    for (int b = 0; b < 64; ++b) blk[b] = b < k ? planes[b * W + w] : 0;
    transpose64(blk);
    const int64_t base = w * 64;
    const int64_t cnt = std::min<int64_t>(64, n - base);
    std::memcpy(vals + base, blk, sizeof(uint64_t) * cnt);
  }
}

}  // namespace pgk
