// The PGK_HD formulas (<pgkernels/*_hd.h>) that only the CUDA kernels call,
// checked on the CPU against the core functions they must agree with: the
// GPU's ballot bit slicing (hd::value_bit) against pgk::bitslice, its
// syr2k mirror (hd::ring_sym2) against pgk::ring_syr2k, and the shared AES
// block (hd::aes_encrypt_words on the counter words) against the stream.
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include <pgkernels/bits.h>
#include <pgkernels/bits_hd.h>
#include <pgkernels/compare_hd.h>
#include <pgkernels/prg.h>
#include <pgkernels/prg_hd.h>
#include <pgkernels/ring.h>
#include <pgkernels/ring_hd.h>

#include "check.h"

using u64 = uint64_t;

int main() {
  std::mt19937_64 rng(7);
  // bit slicing as the GPU does it: word w of plane b gathers value_bit(v[64 w + j], b)
  for (int64_t n : {1, 63, 64, 65, 1000}) {
    std::vector<u64> v(n);
    for (auto& x : v) x = rng();
    const int64_t W = pgk::plane_words(n);
    std::vector<u64> planes(64 * W);
    pgk::bitslice(v.data(), n, 64, planes.data());
    bool ok = true;
    for (int b = 0; b < 64; ++b)
      for (int64_t w = 0; w < W; ++w) {
        u64 word = 0;
        for (int j = 0; j < 64 && 64 * w + j < n; ++j) word |= pgk::hd::value_bit(v[64 * w + j], b) << j;
        ok = ok && word == planes[b * W + w];
      }
    CHECK(ok, "value_bit slicing differs from bitslice at n=%lld", (long long)n);
  }
  // the GPU's syr2k: U = A B^T in full, then C_ij = U_ij + U_ji
  {
    const int64_t m = 9, k = 37;
    std::vector<u64> A(m * k), B(m * k), U(m * m), C(m * m);
    for (auto& x : A) x = rng();
    for (auto& x : B) x = rng();
    pgk::ring_matmul_nt(m, m, k, A.data(), k, B.data(), k, U.data(), m);
    pgk::ring_syr2k(m, k, A.data(), k, B.data(), k, C.data(), m);
    bool ok = true;
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < m; ++j) ok = ok && pgk::hd::ring_sym2(U[i * m + j], U[j * m + i]) == C[i * m + j];
    CHECK(ok, "ring_sym2 mirror differs from ring_syr2k");
    u64 acc = 0;
    for (int64_t t = 0; t < k; ++t) acc = pgk::hd::ring_mac(acc, A[t], B[t]);
    CHECK(acc == U[0], "ring_mac dot differs from ring_matmul_nt");
  }
  // the GPU stream's block: counter words, shared rounds, words stored little-endian
  {
    constexpr pgk::hd::AesTables T = pgk::hd::make_aes_tables();
    uint8_t key[16];
    for (auto& b : key) b = uint8_t(rng());
    uint32_t kw[4];
    std::memcpy(kw, key, 16);
    pgk::hd::AesSchedule ks;
    pgk::hd::aes_expand_key(T.sbox, kw, ks);
    const u64 nonce = rng(), first = ~0ull - 3;  // crosses the counter's wrap
    std::vector<u64> want(16);
    pgk::aes128_ctr_portable(key, nonce, first, want.data(), want.size() * 8);
    bool ok = true;
    for (int b = 0; b < 8; ++b) {
      uint32_t s[4];
      pgk::hd::aes_counter_words(nonce, first + u64(b), s);
      pgk::hd::aes_encrypt_words(ks.rk, T.te, T.sbox, s);
      ok = ok && (u64(s[0]) | (u64(s[1]) << 32)) == want[2 * b] && (u64(s[2]) | (u64(s[3]) << 32)) == want[2 * b + 1];
    }
    CHECK(ok, "aes_encrypt_words on counter words differs from the portable stream");
  }
  // mono_index enumerates the multi-bit subsets of a group in order
  {
    int next = 0;
    bool ok = true;
    for (unsigned T = 1; T < 16; ++T)
      if (pgk::hd::popc(T) >= 2) ok = ok && pgk::hd::mono_index(T) == next++;
    CHECK(ok && next == 11, "mono_index");
  }
  return report("hd");
}
