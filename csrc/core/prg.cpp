#include <pgkernels/prg.h>

#include <cstring>

#include <pgkernels/prg_hd.h>

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
// Portable AES-128: the T-table rounds and the counter layout are in
// prg_hd.h, shared with the GPU stream; here byte (de)serialisation, which
// keeps the portable path endian-independent.
// ---------------------------------------------------------------------------

constexpr hd::AesTables kAes = hd::make_aes_tables();
static_assert(kAes.sbox[0x00] == 0x63 && kAes.sbox[0x01] == 0x7c && kAes.sbox[0x53] == 0xed &&
                  kAes.sbox[0xff] == 0x16,
              "AES S-box generation is wrong");

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

using PortableSchedule = hd::AesSchedule;

void expand_key_portable(const uint8_t key[16], PortableSchedule& ks) {
  uint32_t k[4];
  for (int i = 0; i < 4; ++i) k[i] = load_le32(key + 4 * i);
  hd::aes_expand_key(kAes.sbox, k, ks);
}

inline void encrypt_words_portable(const PortableSchedule& ks, uint32_t s[4]) {
  hd::aes_encrypt_words(ks.rk, kAes.te, kAes.sbox, s);
}

inline void store_block(const uint32_t s[4], uint8_t out[16]) {
  for (int i = 0; i < 4; ++i) store_le32(out + 4 * i, s[i]);
}

void encrypt_block_portable(const PortableSchedule& ks, const uint8_t in[16], uint8_t out[16]) {
  uint32_t s[4];
  for (int i = 0; i < 4; ++i) s[i] = load_le32(in + 4 * i);
  encrypt_words_portable(ks, s);
  store_block(s, out);
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
  uint32_t s[4];
  uint64_t i = first_block;
  while (nbytes >= 16) {
    hd::aes_counter_words(nonce, i++, s);
    encrypt_words_portable(ks, s);
    store_block(s, dst);
    dst += 16;
    nbytes -= 16;
  }
  if (nbytes != 0) {
    uint8_t tmp[16];
    hd::aes_counter_words(nonce, i, s);
    encrypt_words_portable(ks, s);
    store_block(s, tmp);
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
