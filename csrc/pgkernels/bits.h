// Bit-slicing helpers: 64 elements' bits packed per 64-bit word.
#pragma once
#include <cstddef>
#include <cstdint>

namespace pgk {

// Words per bit plane for n elements.
inline int64_t plane_words(int64_t n) { return (n + 63) / 64; }

// In-place transpose of a 64x64 bit matrix: afterwards bit j of a[i] equals
// the old bit i of a[j].
void transpose64(uint64_t a[64]);

// planes[b * W + w] bit j = bit b of vals[64 w + j], for b < k (W = plane_words(n)).
// Padding lanes (elements >= n) are zero.
void bitslice(const uint64_t* vals, int64_t n, int k, uint64_t* planes);

// Inverse of bitslice: vals[i] = sum_b bit(planes[b], i) << b, for b < k.
void unbitslice(const uint64_t* planes, int64_t n, int k, uint64_t* vals);

}  // namespace pgk
