// Round-local kernels of the dealer-assisted secure comparison.
//
// The protocol (n parties, additive shares mod 2^64, XOR shares of bits):
//   1. open c = x + r (+ 2^(k-1) in LT mode) mod 2^k, r from the dealer;
//   2. leaves: for 4-bit groups of c and r, (lt, eq) of the group is a local
//      function of public c and dealer-made shares of the products of r's bits
//      within the group (the "monomials");
//   3. a tree of Beaver ANDs over the groups, one round per level;
//   4. open z = out ^ s for a dealer bit s shared both ways, and turn z into an
//      arithmetic share (optionally multiplied into an arithmetic value).
// Each function below does one round's local work; the caller moves the words
// between parties (sum for arithmetic opens, XOR for bit opens), so any
// transport can drive it. All buffers are uint64 words; bit planes hold 64
// elements per word (element i at word i / 64, bit i % 64).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace pgk {

enum CmpMode : int {
  kCmpLT = 0,   // out = MSB_{k-1}(x + 2^(k-1)) ^ negate, i.e. x >= 0 (negate: x < 0)
  kCmpEQ = 1,   // out = [x == 0 mod 2^k] ^ negate
  kCmpMUX = 2,  // no comparison: out = b * d for a bit b given by LSB shares
};

struct CmpSpec {
  int64_t n = 0;        // elements
  int k = 64;           // ring bits the comparison looks at (2..64)
  int mode = kCmpLT;
  int payloads = 0;  // arithmetic values (per element) the output bit is multiplied into
  // +1 / -1: payload row 0 is (self_sign * x), the compared value itself (k = 64,
  // LT/EQ). Its mask is then self_sign * r, so its opening e_0 = self_sign * (c -
  // offset) follows from c: no extra words sent and no mask drawn. 0: none.
  int self_sign = 0;
  int masked_payloads() const { return payloads - (self_sign != 0 ? 1 : 0); }
};

// Offsets (in words) into one party's correlated-randomness buffer ("material").
// The buffer is [stream segment | corrected segment]: every party draws the
// stream segment from its PRG stream with the dealer; the corrected party (the
// request's seq mod n, passed first to cmp_dealer) receives the
// corrected segment from the dealer, the others draw it from their stream too.
struct CmpLayout {
  int64_t W = 0;  // words per bit plane
  int B = 0;      // bits in the comparison tree
  int G = 0;      // 4-bit groups
  int levels = 0; // AND levels of the tree
  std::vector<int> group_bits;
  std::vector<int64_t> mono_plane;  // first monomial plane of each group
  std::vector<int> nodes;           // nodes per level, nodes[0] = G, back() = 1
  std::vector<int64_t> ab_plane;    // first a/b plane of each level
  std::vector<int64_t> c_plane;     // first c plane of each level
  // stream segment
  int64_t rA = 0, sB = 0, mA = 0, ab = 0, stream_words = 0;
  // corrected segment
  int64_t rB = 0, mono = 0, cc = 0, sA = 0, smA = 0, total_words = 0;
  int64_t corr_words() const { return total_words - stream_words; }
  int64_t state_words() const;        // scratch the party keeps between rounds
  int64_t open_words(int step) const; // words opened (XOR) at tree step 0..levels
};

// Throws std::invalid_argument naming the field when the spec is malformed.
void cmp_check(const CmpSpec& s);

CmpLayout cmp_layout(const CmpSpec& s);

// Round 1 (sum-open). out[0:n] = (x + rA + offset) mod 2^k (LT/EQ); with P
// payloads also out[n + q n + i] = v[p n + i] + mA[q n + i] for each masked
// payload row p (q = p, or p - 1 with self_sign). For MUX:
// out[p n + i] = v[p n + i] + mA[...] (sum-open) and zout[0:W] = (x & 1 bits)
// ^ sB (xor-open), where x holds the 0/1 shares. v is payload-major (P x n).
int64_t cmp_open1_words(const CmpSpec& s);
void cmp_open1(const CmpSpec& s, const CmpLayout& L, const uint64_t* x, const uint64_t* v,
               const uint64_t* mat, bool rank0, uint64_t* out, uint64_t* zout);

// After round 1: c holds the opened n values. Writes the scratch state and the
// words to XOR-open next (open_words(0)).
void cmp_start(const CmpSpec& s, const CmpLayout& L, const uint64_t* c, const uint64_t* mat,
               bool rank0, bool negate, uint64_t* state, uint64_t* open_out);

// After the XOR-open of tree level `level`: closes it and writes the words to
// open next (open_words(level + 1)).
void cmp_step(const CmpSpec& s, const CmpLayout& L, int level, const uint64_t* opened,
              const uint64_t* mat, bool rank0, uint64_t* state, uint64_t* open_out);

// After the final XOR-open z (W words): arithmetic shares of the output bit
// (n words), or of bit * v for each payload (P x n words; e = the opened v + m,
// P x n, with row 0 = self_sign * (c - offset) under self_sign).
void cmp_finish(const CmpSpec& s, const CmpLayout& L, const uint64_t* z, const uint64_t* mat,
                bool rank0, const uint64_t* v, const uint64_t* e, uint64_t* out);

// Dealer: mats[i] is party i's material with every word drawn from its stream.
// mats[0] belongs to the request's corrected party. Writes that party's
// corrected segment (corr_words words).
void cmp_dealer(const CmpSpec& s, const CmpLayout& L, int parties, const uint64_t* const* mats,
                uint64_t* corr);

}  // namespace pgk
