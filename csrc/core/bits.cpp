#include <pgkernels/bits.h>

#include <algorithm>
#include <cstring>

#include <pgkernels/bits_hd.h>

namespace pgk {

void transpose64(uint64_t a[64]) { hd::transpose64(a); }

void bitslice(const uint64_t* vals, int64_t n, int k, uint64_t* planes) {
  const int64_t W = plane_words(n);
  uint64_t blk[64];
  for (int64_t w = 0; w < W; ++w) {
    const int64_t base = w * 64;
    const int64_t cnt = std::min<int64_t>(64, n - base);
    std::memcpy(blk, vals + base, sizeof(uint64_t) * cnt);
    std::fill(blk + cnt, blk + 64, 0);
    hd::transpose64(blk);
    for (int b = 0; b < k; ++b) planes[b * W + w] = blk[b];
  }
}

void unbitslice(const uint64_t* planes, int64_t n, int k, uint64_t* vals) {
  const int64_t W = plane_words(n);
  uint64_t blk[64];
  for (int64_t w = 0; w < W; ++w) {
    for (int b = 0; b < 64; ++b) blk[b] = b < k ? planes[b * W + w] : 0;
    hd::transpose64(blk);
    const int64_t base = w * 64;
    const int64_t cnt = std::min<int64_t>(64, n - base);
    std::memcpy(vals + base, blk, sizeof(uint64_t) * cnt);
  }
}

}  // namespace pgk
