#pragma once
// Bit-plane arithmetic shared by csrc/core/bits.cpp and the CUDA kernels
// (see hd.h). Plane b, word w, bit j holds bit b of element 64 w + j.
//
#include <cstdint>

#include <pgkernels/hd.h>

namespace pgk {
namespace hd {

// Swap the off-diagonal J x J blocks of every 2J x 2J block of a 64x64 bit matrix.
template <int J>
PGK_HD inline void transpose_stage(uint64_t a[64], uint64_t m) {
  for (int base = 0; base < 64; base += 2 * J) {
    for (int k = base; k < base + J; ++k) {
      const uint64_t t = ((a[k] >> J) ^ a[k + J]) & m;
      a[k] ^= t << J;
      a[k + J] ^= t;
    }
  }
}

// In place: afterwards bit j of a[i] equals the old bit i of a[j].
PGK_HD inline void transpose64(uint64_t a[64]) {
  transpose_stage<32>(a, 0x00000000FFFFFFFFull);
  transpose_stage<16>(a, 0x0000FFFF0000FFFFull);
  transpose_stage<8>(a, 0x00FF00FF00FF00FFull);
  transpose_stage<4>(a, 0x0F0F0F0F0F0F0F0Full);
  transpose_stage<2>(a, 0x3333333333333333ull);
  transpose_stage<1>(a, 0x5555555555555555ull);
}

// Bit b of value v as a 0/1 word (the GPU slices with warp ballots of this).
PGK_HD inline uint64_t value_bit(uint64_t v, int b) { return (v >> b) & 1ull; }

}  // namespace hd
}  // namespace pgk
