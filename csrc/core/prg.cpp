#include <pgkernels/prg.h>

#include <cstring>

// The AES-NI path relies on GCC/Clang function-level target attributes and
// __builtin_cpu_supports, so the file builds without -maes and still runs on
// CPUs lacking AES-NI.
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define PGK_PRG_HAVE_AESNI 1
#include <immintrin.h>
#else
#define PGK_PRG_HAVE_AESNI 0
#endif

namespace pgk {
namespace {

// ---------------------------------------------------------------------------
// Portable AES-128 (FIPS-197), 32-bit T-table formulation.
//
// Tables are generated at compile time rather than pasted in, so there is no
// hand-copied constant to get wrong; the known-answer tests pin the result.
// Note: table lookups are indexed by secret data, so this path is not
// cache-timing resistant. It exists as a fallback for machines without AES-NI.
// ---------------------------------------------------------------------------

constexpr uint8_t rotl8(uint8_t x, int s) { return static_cast<uint8_t>((x << s) | (x >> (8 - s))); }
constexpr uint8_t xtime(uint8_t x) { return static_cast<uint8_t>((x << 1) ^ ((x & 0x80) ? 0x1b : 0x00)); }
constexpr uint32_t rotl32(uint32_t x, int s) { return (x << s) | (x >> (32 - s)); }

struct AesTables {
  uint8_t sbox[256];
  // te[k][x]: contribution of S(x) sitting in row k of a column to the
  // MixColumns output, packed little-endian (row 0 in the low byte).
  uint32_t te[4][256];
};

constexpr AesTables make_aes_tables() {
  AesTables t{};
  // Walk GF(2^8)* with generator 3: p runs over x = 3^k while q tracks
  // 3^-k = x^-1, giving the field inverse without a 256x256 search.
  uint8_t p = 1, q = 1;
  do {
    p = static_cast<uint8_t>(p ^ xtime(p));  // p *= 3
    q = static_cast<uint8_t>(q ^ (q << 1));  // q /= 3 (multiply by 0xf6)
    q = static_cast<uint8_t>(q ^ (q << 2));
    q = static_cast<uint8_t>(q ^ (q << 4));
    if (q & 0x80) q = static_cast<uint8_t>(q ^ 0x09);
    const uint8_t affine = static_cast<uint8_t>(q ^ rotl8(q, 1) ^ rotl8(q, 2) ^ rotl8(q, 3) ^ rotl8(q, 4));
    t.sbox[p] = static_cast<uint8_t>(affine ^ 0x63);
  } while (p != 1);
  t.sbox[0] = 0x63;  // 0 has no inverse; FIPS-197 maps it to 0 before the affine step.

  for (int x = 0; x < 256; ++x) {
    const uint32_t s = t.sbox[x];
    const uint32_t s2 = xtime(static_cast<uint8_t>(s));
    const uint32_t s3 = s2 ^ s;
    const uint32_t w = s2 | (s << 8) | (s << 16) | (s3 << 24);  // column (2s, s, s, 3s)
    t.te[0][x] = w;
    t.te[1][x] = rotl32(w, 8);
    t.te[2][x] = rotl32(w, 16);
    t.te[3][x] = rotl32(w, 24);
  }
  return t;
}

constexpr AesTables kAes = make_aes_tables();
static_assert(kAes.sbox[0x00] == 0x63 && kAes.sbox[0x01] == 0x7c && kAes.sbox[0x53] == 0xed &&
                  kAes.sbox[0xff] == 0x16,
              "AES S-box generation is wrong");

// Explicit byte (de)serialisation keeps the portable path endian-independent.
inline uint32_t load_le32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}
inline void store_le32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
  p[2] = static_cast<uint8_t>(v >> 16);
  p[3] = static_cast<uint8_t>(v >> 24);
}

inline uint32_t sub_word(uint32_t w) {
  return static_cast<uint32_t>(kAes.sbox[w & 0xff]) | (static_cast<uint32_t>(kAes.sbox[(w >> 8) & 0xff]) << 8) |
         (static_cast<uint32_t>(kAes.sbox[(w >> 16) & 0xff]) << 16) |
         (static_cast<uint32_t>(kAes.sbox[w >> 24]) << 24);
}

// 11 round keys of 4 little-endian words each.
struct PortableSchedule {
  uint32_t rk[44];
};

void expand_key_portable(const uint8_t key[16], PortableSchedule& ks) {
  static constexpr uint8_t kRcon[10] = {0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x1b, 0x36};
  for (int i = 0; i < 4; ++i) ks.rk[i] = load_le32(key + 4 * i);
  for (int i = 4; i < 44; ++i) {
    uint32_t temp = ks.rk[i - 1];
    if (i % 4 == 0) {
      // RotWord moves byte 1 to byte 0, i.e. a right rotation of the LE word.
      temp = sub_word((temp >> 8) | (temp << 24)) ^ kRcon[i / 4 - 1];
    }
    ks.rk[i] = ks.rk[i - 4] ^ temp;
  }
}

void encrypt_block_portable(const PortableSchedule& ks, const uint8_t in[16], uint8_t out[16]) {
  const uint32_t* rk = ks.rk;
  uint32_t s0 = load_le32(in + 0) ^ rk[0];
  uint32_t s1 = load_le32(in + 4) ^ rk[1];
  uint32_t s2 = load_le32(in + 8) ^ rk[2];
  uint32_t s3 = load_le32(in + 12) ^ rk[3];

  const auto& T = kAes.te;
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
  const uint8_t* S = kAes.sbox;
  auto final_col = [&](uint32_t a, uint32_t b, uint32_t c, uint32_t d, uint32_t k) {
    return (static_cast<uint32_t>(S[a & 0xff]) | (static_cast<uint32_t>(S[(b >> 8) & 0xff]) << 8) |
            (static_cast<uint32_t>(S[(c >> 16) & 0xff]) << 16) | (static_cast<uint32_t>(S[d >> 24]) << 24)) ^
           k;
  };
  store_le32(out + 0, final_col(s0, s1, s2, s3, rk[0]));
  store_le32(out + 4, final_col(s1, s2, s3, s0, rk[1]));
  store_le32(out + 8, final_col(s2, s3, s0, s1, rk[2]));
  store_le32(out + 12, final_col(s3, s0, s1, s2, rk[3]));
}

inline void make_counter_block(uint64_t nonce, uint64_t i, uint8_t blk[16]) {
  for (int b = 0; b < 8; ++b) {
    blk[b] = static_cast<uint8_t>(nonce >> (8 * b));
    blk[8 + b] = static_cast<uint8_t>(i >> (8 * b));
  }
}

#if PGK_PRG_HAVE_AESNI
// ---------------------------------------------------------------------------
// AES-NI path. Every helper carries the target attribute: GCC refuses to
// inline intrinsics into functions compiled for a narrower target.
// ---------------------------------------------------------------------------
#define PGK_AESNI_TARGET __attribute__((target("aes,sse4.1")))

struct AesniSchedule {
  __m128i rk[11];
};

PGK_AESNI_TARGET inline __m128i expand_step(__m128i key, __m128i assist) {
  assist = _mm_shuffle_epi32(assist, _MM_SHUFFLE(3, 3, 3, 3));
  key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
  key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
  key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
  return _mm_xor_si128(key, assist);
}

PGK_AESNI_TARGET void expand_key_aesni(const uint8_t key[16], AesniSchedule& ks) {
  __m128i k = _mm_loadu_si128(reinterpret_cast<const __m128i*>(key));
  ks.rk[0] = k;
  // aeskeygenassist needs the round constant as an immediate, hence the unrolling.
#define PGK_EXPAND(i, rcon)                              \
  k = expand_step(k, _mm_aeskeygenassist_si128(k, rcon)); \
  ks.rk[i] = k;
  PGK_EXPAND(1, 0x01)
  PGK_EXPAND(2, 0x02)
  PGK_EXPAND(3, 0x04)
  PGK_EXPAND(4, 0x08)
  PGK_EXPAND(5, 0x10)
  PGK_EXPAND(6, 0x20)
  PGK_EXPAND(7, 0x40)
  PGK_EXPAND(8, 0x80)
  PGK_EXPAND(9, 0x1b)
  PGK_EXPAND(10, 0x36)
#undef PGK_EXPAND
}

PGK_AESNI_TARGET inline __m128i encrypt_one_aesni(const AesniSchedule& ks, __m128i b) {
  b = _mm_xor_si128(b, ks.rk[0]);
  for (int r = 1; r < 10; ++r) b = _mm_aesenc_si128(b, ks.rk[r]);
  return _mm_aesenclast_si128(b, ks.rk[10]);
}

PGK_AESNI_TARGET void ctr_aesni(const uint8_t key[16], uint64_t nonce, uint64_t first_block, uint8_t* out,
                                size_t nbytes) {
  AesniSchedule ks;
  expand_key_aesni(key, ks);

  // Block layout LE64(nonce) || LE64(i): nonce in the low lane, counter in the
  // high lane, so incrementing is a 64-bit add on the high lane (wraps mod 2^64).
  __m128i ctr = _mm_set_epi64x(static_cast<long long>(first_block), static_cast<long long>(nonce));
  const __m128i one = _mm_set_epi64x(1, 0);
  const __m128i eight = _mm_set_epi64x(8, 0);

  size_t nblocks = nbytes / 16;
  // Eight independent blocks in flight hide the aesenc latency (~4 cycles,
  // throughput 1-2/cycle on modern cores).
  // Written out by hand: GCC -O2 does not unroll an array-of-8 version, and
  // then keeps the blocks in memory (measured ~5x slower).
  while (nblocks >= 8) {
    __m128i b0 = _mm_xor_si128(ctr, ks.rk[0]);
    __m128i c = _mm_add_epi64(ctr, one);
    __m128i b1 = _mm_xor_si128(c, ks.rk[0]);
    c = _mm_add_epi64(c, one);
    __m128i b2 = _mm_xor_si128(c, ks.rk[0]);
    c = _mm_add_epi64(c, one);
    __m128i b3 = _mm_xor_si128(c, ks.rk[0]);
    c = _mm_add_epi64(c, one);
    __m128i b4 = _mm_xor_si128(c, ks.rk[0]);
    c = _mm_add_epi64(c, one);
    __m128i b5 = _mm_xor_si128(c, ks.rk[0]);
    c = _mm_add_epi64(c, one);
    __m128i b6 = _mm_xor_si128(c, ks.rk[0]);
    c = _mm_add_epi64(c, one);
    __m128i b7 = _mm_xor_si128(c, ks.rk[0]);
    ctr = _mm_add_epi64(ctr, eight);
#define PGK_ROUND8(op, k) \
  b0 = op(b0, k);         \
  b1 = op(b1, k);         \
  b2 = op(b2, k);         \
  b3 = op(b3, k);         \
  b4 = op(b4, k);         \
  b5 = op(b5, k);         \
  b6 = op(b6, k);         \
  b7 = op(b7, k);
    PGK_ROUND8(_mm_aesenc_si128, ks.rk[1])
    PGK_ROUND8(_mm_aesenc_si128, ks.rk[2])
    PGK_ROUND8(_mm_aesenc_si128, ks.rk[3])
    PGK_ROUND8(_mm_aesenc_si128, ks.rk[4])
    PGK_ROUND8(_mm_aesenc_si128, ks.rk[5])
    PGK_ROUND8(_mm_aesenc_si128, ks.rk[6])
    PGK_ROUND8(_mm_aesenc_si128, ks.rk[7])
    PGK_ROUND8(_mm_aesenc_si128, ks.rk[8])
    PGK_ROUND8(_mm_aesenc_si128, ks.rk[9])
    PGK_ROUND8(_mm_aesenclast_si128, ks.rk[10])
#undef PGK_ROUND8
    __m128i* o = reinterpret_cast<__m128i*>(out);
    _mm_storeu_si128(o + 0, b0);
    _mm_storeu_si128(o + 1, b1);
    _mm_storeu_si128(o + 2, b2);
    _mm_storeu_si128(o + 3, b3);
    _mm_storeu_si128(o + 4, b4);
    _mm_storeu_si128(o + 5, b5);
    _mm_storeu_si128(o + 6, b6);
    _mm_storeu_si128(o + 7, b7);
    out += 128;
    nblocks -= 8;
  }
  while (nblocks > 0) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), encrypt_one_aesni(ks, ctr));
    ctr = _mm_add_epi64(ctr, one);
    out += 16;
    --nblocks;
  }
  const size_t tail = nbytes % 16;
  if (tail != 0) {
    alignas(16) uint8_t tmp[16];
    _mm_store_si128(reinterpret_cast<__m128i*>(tmp), encrypt_one_aesni(ks, ctr));
    std::memcpy(out, tmp, tail);
  }
}

PGK_AESNI_TARGET void encrypt_block_aesni(const uint8_t key[16], const uint8_t in[16], uint8_t out[16]) {
  AesniSchedule ks;
  expand_key_aesni(key, ks);
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), encrypt_one_aesni(ks, b));
}

bool detect_aesni() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("aes") && __builtin_cpu_supports("sse4.1");
}
#endif  // PGK_PRG_HAVE_AESNI

}  // namespace

bool aesni_available() {
#if PGK_PRG_HAVE_AESNI
  static const bool available = detect_aesni();
  return available;
#else
  return false;
#endif
}

void aes128_encrypt_block_portable(const uint8_t key[16], const uint8_t in[16], uint8_t out[16]) {
  PortableSchedule ks;
  expand_key_portable(key, ks);
  encrypt_block_portable(ks, in, out);
}

bool aes128_encrypt_block_aesni(const uint8_t key[16], const uint8_t in[16], uint8_t out[16]) {
#if PGK_PRG_HAVE_AESNI
  if (aesni_available()) {
    encrypt_block_aesni(key, in, out);
    return true;
  }
#else
  (void)key;
  (void)in;
  (void)out;
#endif
  return false;
}

void aes128_expand_key(const uint8_t key[16], Aes128RoundKeys& out) {
  PortableSchedule ks;
  expand_key_portable(key, ks);
  // The schedule's little-endian words, stored in order, are the FIPS-197 bytes.
  for (int i = 0; i < 44; ++i) store_le32(&out.bytes[i / 4][4 * (i % 4)], ks.rk[i]);
}

void aes128_ecb_portable(const Aes128RoundKeys& keys, const uint8_t* in, uint8_t* out, size_t nblocks) {
  PortableSchedule ks;
  for (int i = 0; i < 44; ++i) ks.rk[i] = load_le32(&keys.bytes[i / 4][4 * (i % 4)]);
  uint8_t tmp[16];
  for (size_t b = 0; b < nblocks; ++b) {
    encrypt_block_portable(ks, in + 16 * b, tmp);
    std::memcpy(out + 16 * b, tmp, 16);
  }
}

void aes128_ctr_portable(const uint8_t key[16], uint64_t nonce, uint64_t first_block, void* out, size_t nbytes) {
  PortableSchedule ks;
  expand_key_portable(key, ks);
  uint8_t* dst = static_cast<uint8_t*>(out);
  uint8_t ctr[16];
  uint64_t i = first_block;
  while (nbytes >= 16) {
    make_counter_block(nonce, i++, ctr);
    encrypt_block_portable(ks, ctr, dst);
    dst += 16;
    nbytes -= 16;
  }
  if (nbytes != 0) {
    uint8_t tmp[16];
    make_counter_block(nonce, i, ctr);
    encrypt_block_portable(ks, ctr, tmp);
    std::memcpy(dst, tmp, nbytes);
  }
}

void aes128_ctr(const uint8_t key[16], uint64_t nonce, uint64_t first_block, void* out, size_t nbytes) {
#if PGK_PRG_HAVE_AESNI
  if (aesni_available()) {
    ctr_aesni(key, nonce, first_block, static_cast<uint8_t*>(out), nbytes);
    return;
  }
#endif
  aes128_ctr_portable(key, nonce, first_block, out, nbytes);
}

}  // namespace pgk
