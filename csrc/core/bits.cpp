#include <pgkernels/bits.h>

#include <algorithm>
#include <cstring>

namespace pgk {

namespace {

template <int J>
inline void transpose_stage(uint64_t a[64], uint64_t m) {
  // Swap the off-diagonal J x J blocks of every 2J x 2J block.
  for (int base = 0; base < 64; base += 2 * J) {
    for (int k = base; k < base + J; ++k) {
      const uint64_t t = ((a[k] >> J) ^ a[k + J]) & m;
      a[k] ^= t << J;
      a[k + J] ^= t;
    }
  }
}

}  // namespace

void transpose64(uint64_t a[64]) {
  transpose_stage<32>(a, 0x00000000FFFFFFFFull);
  transpose_stage<16>(a, 0x0000FFFF0000FFFFull);
  transpose_stage<8>(a, 0x00FF00FF00FF00FFull);
  transpose_stage<4>(a, 0x0F0F0F0F0F0F0F0Full);
  transpose_stage<2>(a, 0x3333333333333333ull);
  transpose_stage<1>(a, 0x5555555555555555ull);
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
