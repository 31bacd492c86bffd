#pragma once
// Per-element (per-word) arithmetic of the comparison rounds, shared by the
// CPU loops of csrc/core/compare.cpp and the CUDA kernels of
// csrc/cuda/compare.cu (see hd.h). The protocol and the word layouts are
// documented in <pgkernels/compare.h>; each function here is one formula of
// it, so both backends compute the same words.
#include <cstdint>

#include <pgkernels/compare.h>

#include <pgkernels/hd.h>

namespace pgk {
namespace hd {

constexpr int kCmpGroup = 4;       // bits per leaf group: 2^4 - 5 = 11 monomials each
constexpr int kCmpMaxGroups = 16;  // ceil(64 / 4)
constexpr int kCmpMaxLevels = 8;   // tree levels + 1 (16 groups: 5)

// The layout as plain values (no std::vector), so a kernel can take it by value.
struct CmpDims {
  int64_t n, W;
  int k, mode, payloads, self_sign, G, levels;
  int group_bits[kCmpMaxGroups];
  int64_t mono_plane[kCmpMaxGroups];
  int nodes[kCmpMaxLevels];
  int64_t ab_plane[kCmpMaxLevels];
  int64_t c_plane[kCmpMaxLevels];
  int64_t rA, sB, mA, ab, stream_words, rB, mono, cc, sA, smA, total_words;
  PGK_HD int masked_payloads() const { return payloads - (self_sign != 0 ? 1 : 0); }
  PGK_HD int pairs_at(int level) const { return nodes[level] / 2; }
};

// Host only: the layout's values (the spec was checked by cmp_layout).
inline CmpDims cmp_dims(const CmpSpec& s, const CmpLayout& L) {
  CmpDims d{};
  d.n = s.n;
  d.W = L.W;
  d.k = s.k;
  d.mode = s.mode;
  d.payloads = s.payloads;
  d.self_sign = s.self_sign;
  d.G = L.G;
  d.levels = L.levels;
  for (int g = 0; g < L.G; ++g) {
    d.group_bits[g] = L.group_bits[g];
    d.mono_plane[g] = L.mono_plane[g];
  }
  for (size_t l = 0; l < L.nodes.size(); ++l) d.nodes[l] = L.nodes[l];
  for (size_t l = 0; l < L.ab_plane.size(); ++l) d.ab_plane[l] = L.ab_plane[l];
  for (size_t l = 0; l < L.c_plane.size(); ++l) d.c_plane[l] = L.c_plane[l];
  d.rA = L.rA;
  d.sB = L.sB;
  d.mA = L.mA;
  d.ab = L.ab;
  d.stream_words = L.stream_words;
  d.rB = L.rB;
  d.mono = L.mono;
  d.cc = L.cc;
  d.sA = L.sA;
  d.smA = L.smA;
  d.total_words = L.total_words;
  return d;
}

PGK_HD inline uint64_t mask_bits(int k) { return k >= 64 ? ~0ull : ((1ull << k) - 1); }

// Index of the multi-bit monomial T (popcount >= 2) among those of its group.
PGK_HD inline int mono_index(unsigned T) {
  int idx = 0;
  for (unsigned u = 1; u < T; ++u)
    if (popc(u) >= 2) ++idx;
  return idx;
}

// Round 1: the masked value c = x + r (+ 2^(k-1)) mod 2^k, and a masked payload.
PGK_HD inline uint64_t cmp_mask_value(uint64_t x, uint64_t r, uint64_t offset, uint64_t mask) {
  return (x + r + offset) & mask;
}
PGK_HD inline uint64_t cmp_mask_payload(uint64_t v, uint64_t m) { return v + m; }

// MUX round 1: the low bits of cnt (<= 64) 0/1 shares packed into one word.
PGK_HD inline uint64_t pack_low_bits(const uint64_t* x, int64_t cnt) {
  uint64_t word = 0;
  for (int64_t j = 0; j < cnt; ++j) word |= (x[j] & 1ull) << j;
  return word;
}

// The tree's base word: LT holds r's and c's top bit (c's for party 0 only),
// flipped by `flip` (negate); EQ only the flip.
PGK_HD inline uint64_t cmp_base_word(bool lt, bool rank0, uint64_t rtop, uint64_t ctop, uint64_t flip) {
  return lt ? (rtop ^ (rank0 ? ctop : 0) ^ flip) : flip;
}

// Leaf of one m-bit group (one word, 64 elements): nc[j] = ~c_j (public),
// M[T] = share of prod_{j in T} r_j (M[0] = the public constant 1).
//   eq = prod_j (r_j ^ nc_j), expanded over subsets T of the group;
//   lt = xor_j nc_j r_j prod_{l > j} (r_l ^ nc_l): c < r decided at bit j.
PGK_HD inline void cmp_leaf(int m, bool lt_mode, const uint64_t nc[kCmpGroup], const uint64_t M[16],
                            uint64_t* lt_out, uint64_t* eq_out) {
  const unsigned full = (1u << m) - 1;
  uint64_t ncprod[16];
  ncprod[0] = ~0ull;
  for (unsigned U = 1; U <= full; ++U) ncprod[U] = ncprod[U & (U - 1)] & nc[ctz(U)];
  uint64_t eqv = 0;
  for (unsigned T = 0; T <= full; ++T) eqv ^= M[T] & ncprod[full ^ T];
  uint64_t ltv = 0;
  if (lt_mode) {
    for (int j = 0; j < m; ++j) {
      const unsigned above = full & ~((2u << j) - 1);
      uint64_t acc = 0;
      for (unsigned T = above;; T = (T - 1) & above) {
        acc ^= M[T | (1u << j)] & ncprod[above ^ T];
        if (T == 0) break;
      }
      ltv ^= nc[j] & acc;
    }
  }
  *lt_out = ltv;
  *eq_out = eqv;
}

// Beaver AND on XOR shares: x & y = c ^ (e & b) ^ (d & a) ^ (e & d), with
// e = x ^ a and d = y ^ b public (the e & d term held by party 0: pub = ~0).
PGK_HD inline uint64_t beaver_and(uint64_t c, uint64_t e, uint64_t d, uint64_t a, uint64_t b, uint64_t pub) {
  return c ^ (e & b) ^ (d & a) ^ (e & d & pub);
}

// Dealer: the corrected party's share of a triple's c = a & b, given the
// plain a and b and the XOR of every other party's c share.
PGK_HD inline uint64_t beaver_triple_c(uint64_t a, uint64_t b, uint64_t others_c) { return (a & b) ^ others_c; }

// Dealer: prod[T] = prod_{j in T} r_j of an m-bit group's planes (one word).
PGK_HD inline void group_products(int m, const uint64_t r[kCmpGroup], uint64_t prod[16]) {
  const unsigned full = (1u << m) - 1;
  prod[0] = ~0ull;
  for (unsigned T = 1; T <= full; ++T) prod[T] = prod[T & (T - 1)] & r[ctz(T)];
}

// Output bit as an arithmetic share: bit = z ^ s = z + s - 2 z s.
PGK_HD inline uint64_t cmp_finish_bit(uint64_t zb, uint64_t sA, uint64_t one) { return zb ? one - sA : sA; }

// bit * v = z v + (1 - 2z) s v, and s v = e s - s m with e = v + m public.
PGK_HD inline uint64_t cmp_finish_payload(uint64_t zb, uint64_t v, uint64_t e, uint64_t sA, uint64_t smA) {
  const uint64_t sv = e * sA - smA;
  return zb ? v - sv : sv;
}

}  // namespace hd
}  // namespace pgk
