#pragma once
// Portable AES-128 (FIPS-197), 32-bit T-table formulation, and the CTR
// counter layout, shared by the CPU portable path (csrc/core/prg.cpp) and the
// GPU stream (csrc/cuda/prg.cu); see hd.h. The stream (fixed, <pgkernels/prg.h>):
// block i of (key, nonce) = AES-128_key(LE64(nonce) || LE64(i)).
//
// Tables are generated at compile time rather than pasted in, so there is no
// hand-copied constant to get wrong; the known-answer tests pin the result.
// Table lookups are indexed by secret data, so this is not cache-timing
// resistant on a CPU (the CPU uses AES-NI where present); on the GPU the
// tables sit in each block's shared memory.
#include <cstdint>

#include <pgkernels/hd.h>

namespace pgk {
namespace hd {

PGK_HD constexpr uint8_t aes_rotl8(uint8_t x, int s) { return static_cast<uint8_t>((x << s) | (x >> (8 - s))); }
PGK_HD constexpr uint8_t aes_xtime(uint8_t x) { return static_cast<uint8_t>((x << 1) ^ ((x & 0x80) ? 0x1b : 0x00)); }
PGK_HD constexpr uint32_t aes_rotl32(uint32_t x, int s) { return (x << s) | (x >> (32 - s)); }

struct AesTables {
  uint8_t sbox[256];
  // te[k][x]: contribution of S(x) sitting in row k of a column to the
  // MixColumns output, packed little-endian (row 0 in the low byte).
  uint32_t te[4][256];
};

PGK_HD constexpr AesTables make_aes_tables() {
  AesTables t{};
  // Walk GF(2^8)* with generator 3: p runs over x = 3^k while q tracks
  // 3^-k = x^-1, giving the field inverse without a 256x256 search.
  uint8_t p = 1, q = 1;
  do {
    p = static_cast<uint8_t>(p ^ aes_xtime(p));  // p *= 3
    q = static_cast<uint8_t>(q ^ (q << 1));      // q /= 3 (multiply by 0xf6)
    q = static_cast<uint8_t>(q ^ (q << 2));
    q = static_cast<uint8_t>(q ^ (q << 4));
    if (q & 0x80) q = static_cast<uint8_t>(q ^ 0x09);
    const uint8_t affine =
        static_cast<uint8_t>(q ^ aes_rotl8(q, 1) ^ aes_rotl8(q, 2) ^ aes_rotl8(q, 3) ^ aes_rotl8(q, 4));
    t.sbox[p] = static_cast<uint8_t>(affine ^ 0x63);
  } while (p != 1);
  t.sbox[0] = 0x63;  // 0 has no inverse; FIPS-197 maps it to 0 before the affine step.

  for (int x = 0; x < 256; ++x) {
    const uint32_t s = t.sbox[x];
    const uint32_t s2 = aes_xtime(static_cast<uint8_t>(s));
    const uint32_t s3 = s2 ^ s;
    const uint32_t w = s2 | (s << 8) | (s << 16) | (s3 << 24);  // column (2s, s, s, 3s)
    t.te[0][x] = w;
    t.te[1][x] = aes_rotl32(w, 8);
    t.te[2][x] = aes_rotl32(w, 16);
    t.te[3][x] = aes_rotl32(w, 24);
  }
  return t;
}

// 11 round keys of 4 little-endian words each.
struct AesSchedule {
  uint32_t rk[44];
};

PGK_HD inline uint32_t aes_sub_word(const uint8_t* S, uint32_t w) {
  return static_cast<uint32_t>(S[w & 0xff]) | (static_cast<uint32_t>(S[(w >> 8) & 0xff]) << 8) |
         (static_cast<uint32_t>(S[(w >> 16) & 0xff]) << 16) | (static_cast<uint32_t>(S[w >> 24]) << 24);
}

// key: the 16 key bytes as 4 little-endian words.
PGK_HD inline void aes_expand_key(const uint8_t* S, const uint32_t key[4], AesSchedule& ks) {
  const uint8_t rcon[10] = {0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x1b, 0x36};
  for (int i = 0; i < 4; ++i) ks.rk[i] = key[i];
  for (int i = 4; i < 44; ++i) {
    uint32_t temp = ks.rk[i - 1];
    // RotWord moves byte 1 to byte 0, i.e. a right rotation of the LE word.
    if (i % 4 == 0) temp = aes_sub_word(S, (temp >> 8) | (temp << 24)) ^ rcon[i / 4 - 1];
    ks.rk[i] = ks.rk[i - 4] ^ temp;
  }
}

// Encrypts the block held as 4 little-endian words s[0..3] in place.
// T: te[4][256] (as 4 * 256 words), S: the S-box.
PGK_HD inline void aes_encrypt_words(const uint32_t* rk, const uint32_t (*T)[256], const uint8_t* S, uint32_t s[4]) {
  uint32_t s0 = s[0] ^ rk[0], s1 = s[1] ^ rk[1], s2 = s[2] ^ rk[2], s3 = s[3] ^ rk[3];
  // ShiftRows sends row r of column (c + r) into column c, hence the index pattern.
  for (int round = 1; round < 10; ++round) {
    rk += 4;
    const uint32_t t0 = T[0][s0 & 0xff] ^ T[1][(s1 >> 8) & 0xff] ^ T[2][(s2 >> 16) & 0xff] ^ T[3][s3 >> 24] ^ rk[0];
    const uint32_t t1 = T[0][s1 & 0xff] ^ T[1][(s2 >> 8) & 0xff] ^ T[2][(s3 >> 16) & 0xff] ^ T[3][s0 >> 24] ^ rk[1];
    const uint32_t t2 = T[0][s2 & 0xff] ^ T[1][(s3 >> 8) & 0xff] ^ T[2][(s0 >> 16) & 0xff] ^ T[3][s1 >> 24] ^ rk[2];
    const uint32_t t3 = T[0][s3 & 0xff] ^ T[1][(s0 >> 8) & 0xff] ^ T[2][(s1 >> 16) & 0xff] ^ T[3][s2 >> 24] ^ rk[3];
    s0 = t0;
    s1 = t1;
    s2 = t2;
    s3 = t3;
  }
  rk += 4;
  auto col = [S](uint32_t a, uint32_t b, uint32_t c, uint32_t d, uint32_t k) {
    return (static_cast<uint32_t>(S[a & 0xff]) | (static_cast<uint32_t>(S[(b >> 8) & 0xff]) << 8) |
            (static_cast<uint32_t>(S[(c >> 16) & 0xff]) << 16) | (static_cast<uint32_t>(S[d >> 24]) << 24)) ^
           k;
  };
  s[0] = col(s0, s1, s2, s3, rk[0]);
  s[1] = col(s1, s2, s3, s0, rk[1]);
  s[2] = col(s2, s3, s0, s1, rk[2]);
  s[3] = col(s3, s0, s1, s2, rk[3]);
}

// Counter block i of stream `nonce` as 4 little-endian words: LE64(nonce) || LE64(i).
PGK_HD inline void aes_counter_words(uint64_t nonce, uint64_t i, uint32_t s[4]) {
  s[0] = static_cast<uint32_t>(nonce);
  s[1] = static_cast<uint32_t>(nonce >> 32);
  s[2] = static_cast<uint32_t>(i);
  s[3] = static_cast<uint32_t>(i >> 32);
}

}  // namespace hd
}  // namespace pgk
