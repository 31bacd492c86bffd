#include <pgkernels/fss.h>
#include <pgkernels/prg.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define PGK_FSS_HAVE_AESNI 1
#include <immintrin.h>
// The kernels are templates on the PRG's block function and carry no target
// attribute; each instruction set gets an entry point with its target and
// `flatten`, which inlines the kernel and the block function into it (GCC
// inlines intrinsics only into functions of a wide enough target), so the
// portable instantiation never contains AES or AVX instructions.
#define PGK_FSS_TARGET __attribute__((target("aes")))
#define PGK_FSS_VAES_TARGET __attribute__((target("aes,vaes,avx2")))
#else
#define PGK_FSS_HAVE_AESNI 0
#define PGK_FSS_TARGET
#endif

namespace pgk {
namespace {

struct alignas(16) Block {
  uint64_t lo, hi;
};

constexpr uint64_t kSeedMask = ~uint64_t(3);  // a seed's two low bits carry control bits

// The PRG's fixed public AES key (MMO in the correlation-robust model: the key
// need not be secret, only fixed).
const Aes128RoundKeys& fixed_key() {
  static const Aes128RoundKeys ks = [] {
    static const uint8_t key[16] = {'p', 'g', 'k', 'e', 'r', 'n', 'e', 'l', 's', ' ', 'd', 'c', 'f', ' ', 'v', '1'};
    Aes128RoundKeys k;
    aes128_expand_key(key, k);
    return k;
  }();
  return ks;
}

// out[i] = AES_K(in[i]) ^ in[i], N blocks.
struct PortableMmo {
  template <int N>
  void run(const Block* in, Block* out) const {
    aes128_ecb_portable(fixed_key(), reinterpret_cast<const uint8_t*>(in), reinterpret_cast<uint8_t*>(out), N);
    for (int i = 0; i < N; ++i) {
      out[i].lo ^= in[i].lo;
      out[i].hi ^= in[i].hi;
    }
  }
};

#if PGK_FSS_HAVE_AESNI
struct NiMmo {
  __m128i rk[11];
  PGK_FSS_TARGET NiMmo() {
    for (int r = 0; r < 11; ++r) rk[r] = _mm_load_si128(reinterpret_cast<const __m128i*>(fixed_key().bytes[r]));
  }
  // N independent blocks in flight hide aesenc's latency; the block loops
  // unroll fully (N is a constant), the round loop stays a loop.
  template <int N>
  PGK_FSS_TARGET void run(const Block* in, Block* out) const {
    __m128i b[N];
#pragma GCC unroll 24
    for (int i = 0; i < N; ++i)
      b[i] = _mm_xor_si128(_mm_load_si128(reinterpret_cast<const __m128i*>(in + i)), rk[0]);
    for (int r = 1; r < 10; ++r) {
#pragma GCC unroll 24
      for (int i = 0; i < N; ++i) b[i] = _mm_aesenc_si128(b[i], rk[r]);
    }
#pragma GCC unroll 24
    for (int i = 0; i < N; ++i) {
      const __m128i x = _mm_load_si128(reinterpret_cast<const __m128i*>(in + i));
      _mm_store_si128(reinterpret_cast<__m128i*>(out + i), _mm_xor_si128(_mm_aesenclast_si128(b[i], rk[10]), x));
    }
  }
};

// VAES (AVX2 width): two blocks per instruction, twice AES-NI's throughput on
// CPUs that have it (AMD Zen 3+, Intel Ice Lake+). N must be even.
struct VaesMmo {
  __m256i rk[11];
  PGK_FSS_VAES_TARGET VaesMmo() {
    for (int r = 0; r < 11; ++r)
      rk[r] = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(fixed_key().bytes[r])));
  }
  template <int N>
  PGK_FSS_VAES_TARGET void run(const Block* in, Block* out) const {
    static_assert(N % 2 == 0, "VaesMmo takes pairs of blocks");
    constexpr int H = N / 2;
    __m256i b[H];
#pragma GCC unroll 24
    for (int i = 0; i < H; ++i)
      b[i] = _mm256_xor_si256(_mm256_load_si256(reinterpret_cast<const __m256i*>(in + 2 * i)), rk[0]);
    for (int r = 1; r < 10; ++r) {
#pragma GCC unroll 24
      for (int i = 0; i < H; ++i) b[i] = _mm256_aesenc_epi128(b[i], rk[r]);
    }
#pragma GCC unroll 24
    for (int i = 0; i < H; ++i) {
      const __m256i x = _mm256_load_si256(reinterpret_cast<const __m256i*>(in + 2 * i));
      _mm256_store_si256(reinterpret_cast<__m256i*>(out + 2 * i),
                         _mm256_xor_si256(_mm256_aesenclast_epi128(b[i], rk[10]), x));
    }
  }
};

// Evaluation on VAES with the per-level work in vector registers: each
// element's two blocks, (s ^ x_i | s ^ 2), are one 256-bit lane pair, built by
// broadcasting the seed and xoring a tweak, and the next seed is masked and
// corrected in place; only t and the value sum stay scalar. Same words as
// eval_impl (the tests compare every path against the portable one).
PGK_FSS_VAES_TARGET void eval_vaes_simd(int party, int bits, int64_t n, const uint64_t* x, const uint64_t* seed,
                                        const uint64_t* cw, uint64_t* out) {
  constexpr int E = 8;
  const VaesMmo mmo;
  const int64_t kw = dcf_cw_words(bits);
  const uint64_t keep_mask = bits == 64 ? ~uint64_t(0) : ((uint64_t(1) << bits) - 1);
  const __m128i seed_mask = _mm_set_epi64x(-1, static_cast<long long>(kSeedMask));
  const __m256i tweak[2] = {_mm256_set_epi64x(0, 2, 0, 0), _mm256_set_epi64x(0, 2, 0, 1)};
  for (int64_t base = 0; base < n; base += E) {
    const int m = int(std::min<int64_t>(E, n - base));
    alignas(32) __m128i s[E];
    uint64_t t[E], V[E], xv[E];
    const uint64_t* key[E];
    for (int e = 0; e < E; ++e) {
      const int64_t i = base + (e < m ? e : 0);
      s[e] = _mm_and_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(seed + 2 * i)), seed_mask);
      t[e] = uint64_t(party);
      V[e] = 0;
      xv[e] = x[i] & keep_mask;
      key[e] = cw + i * kw;
    }
    for (int l = 0; l < bits; ++l) {
      const int sh = bits - 1 - l;
      __m256i b[E];
#pragma GCC unroll 8
      for (int e = 0; e < E; ++e)
        b[e] = _mm256_xor_si256(_mm256_xor_si256(_mm256_broadcastsi128_si256(s[e]), tweak[(xv[e] >> sh) & 1]),
                                mmo.rk[0]);
      for (int r = 1; r < 10; ++r) {
#pragma GCC unroll 8
        for (int e = 0; e < E; ++e) b[e] = _mm256_aesenc_epi128(b[e], mmo.rk[r]);
      }
#pragma GCC unroll 8
      for (int e = 0; e < E; ++e) {
        const uint64_t xi = (xv[e] >> sh) & 1;
        const __m256i in = _mm256_xor_si256(_mm256_broadcastsi128_si256(s[e]), tweak[xi]);
        const __m256i res = _mm256_xor_si256(_mm256_aesenclast_epi128(b[e], mmo.rk[10]), in);
        const __m128i bs = _mm256_castsi256_si128(res);
        const __m128i bv = _mm256_extracti128_si256(res, 1);
        const uint64_t* c = key[e] + 2 * l;
        const uint64_t tm = 0 - t[e];
        const __m128i corr = _mm_and_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c)),
                                           _mm_and_si128(_mm_set1_epi64x(static_cast<long long>(tm)), seed_mask));
        s[e] = _mm_xor_si128(_mm_and_si128(bs, seed_mask), corr);
        t[e] = (uint64_t(_mm_cvtsi128_si64(bs)) & 1) ^ (t[e] & (c[0] >> xi) & 1);
        const uint64_t vlo = uint64_t(_mm_cvtsi128_si64(bv)), vhi = uint64_t(_mm_extract_epi64(bv, 1));
        V[e] += (xi ? vhi : vlo) + (tm & key[e][2 * bits + l]);
      }
    }
    for (int e = 0; e < m; ++e) {
      const uint64_t hi = uint64_t(_mm_extract_epi64(s[e], 1));
      const uint64_t r = V[e] + hi + ((0 - t[e]) & key[e][3 * bits]);
      out[base + e] = party ? 0 - r : r;
    }
  }
}

bool vaes_available() {
  static const bool ok = [] {
    __builtin_cpu_init();
    return aesni_available() && __builtin_cpu_supports("vaes") && __builtin_cpu_supports("avx2");
  }();
  return ok;
}
#endif

// Elements processed together (their AES blocks interleave).
#ifndef PGK_EVAL_BATCH
#define PGK_EVAL_BATCH 8
#endif
constexpr int kEvalBatch = PGK_EVAL_BATCH;  // 2 blocks per element and level
constexpr int kGenBatch = 4;   // 24 blocks per level

template <class Mmo>
void eval_impl(const Mmo& mmo, int party, int bits, int64_t n, const uint64_t* x,
                              const uint64_t* seed, const uint64_t* cw, uint64_t* out) {
  constexpr int E = kEvalBatch;
  const int64_t kw = dcf_cw_words(bits);
  const uint64_t keep_mask = bits == 64 ? ~uint64_t(0) : ((uint64_t(1) << bits) - 1);
  for (int64_t base = 0; base < n; base += E) {
    const int m = int(std::min<int64_t>(E, n - base));
    alignas(32) Block in[2 * E];
    alignas(32) Block res[2 * E];
    Block s[E];
    uint64_t t[E], V[E], xv[E];
    const uint64_t* key[E];
    for (int e = 0; e < E; ++e) {
      const int64_t i = base + (e < m ? e : 0);  // pad a short batch with a copy of its first element
      s[e] = {seed[2 * i] & kSeedMask, seed[2 * i + 1]};
      t[e] = uint64_t(party);
      V[e] = 0;
      xv[e] = x[i] & keep_mask;
      key[e] = cw + i * kw;
    }
    for (int l = 0; l < bits; ++l) {
      const int sh = bits - 1 - l;
      for (int e = 0; e < E; ++e) {
        const uint64_t xi = (xv[e] >> sh) & 1;
        in[2 * e] = {s[e].lo ^ xi, s[e].hi};  // MMO(s ^ x_i): the seed of the side taken
        in[2 * e + 1] = {s[e].lo ^ 2, s[e].hi};  // MMO(s ^ 2): both sides' values
      }
      mmo.template run<2 * E>(in, res);
      for (int e = 0; e < E; ++e) {
        const uint64_t xi = (xv[e] >> sh) & 1;
        const uint64_t tm = 0 - t[e];
        const uint64_t* c = key[e] + 2 * l;
        const Block& bs = res[2 * e];
        const Block& bv = res[2 * e + 1];
        t[e] = (bs.lo & 1) ^ (t[e] & (c[0] >> xi) & 1);
        s[e] = {(bs.lo & kSeedMask) ^ (tm & c[0] & kSeedMask), bs.hi ^ (tm & c[1])};
        const uint64_t v = xi ? bv.hi : bv.lo;
        V[e] += v + (tm & key[e][2 * bits + l]);
      }
    }
    for (int e = 0; e < m; ++e) {
      const uint64_t r = V[e] + s[e].hi + ((0 - t[e]) & key[e][3 * bits]);
      out[base + e] = party ? 0 - r : r;  // party 1 subtracts: the shares sum to f(x)
    }
  }
}

template <class Mmo>
void gen_impl(const Mmo& mmo, int bits, int64_t n, const uint64_t* alpha, const uint64_t* beta,
                             const uint64_t* offset, const uint64_t* seed0, const uint64_t* seed1, uint64_t* cw) {
  constexpr int E = kGenBatch;
  const int64_t kw = dcf_cw_words(bits);
  const uint64_t keep_mask = bits == 64 ? ~uint64_t(0) : ((uint64_t(1) << bits) - 1);
  for (int64_t base = 0; base < n; base += E) {
    const int m = int(std::min<int64_t>(E, n - base));
    alignas(32) Block in[6 * E];
    alignas(32) Block res[6 * E];
    Block s0[E], s1[E];
    uint64_t t0[E], t1[E], Va[E], a[E], b[E];
    uint64_t* key[E];
    for (int e = 0; e < E; ++e) {
      const int64_t i = base + (e < m ? e : 0);
      s0[e] = {seed0[2 * i] & kSeedMask, seed0[2 * i + 1]};
      s1[e] = {seed1[2 * i] & kSeedMask, seed1[2 * i + 1]};
      t0[e] = 0;
      t1[e] = 1;
      // Starting the tracked on-path sum at -offset makes every path end at
      // offset (+ beta where x < alpha): the offset rides on the corrections.
      Va[e] = offset ? 0 - offset[i] : 0;
      a[e] = alpha[i] & keep_mask;
      b[e] = beta ? beta[i] : 1;
      key[e] = cw + i * kw;
    }
    for (int l = 0; l < bits; ++l) {
      const int sh = bits - 1 - l;
      for (int e = 0; e < E; ++e) {
        for (uint64_t j = 0; j < 3; ++j) {
          in[6 * e + j] = {s0[e].lo ^ j, s0[e].hi};
          in[6 * e + 3 + j] = {s1[e].lo ^ j, s1[e].hi};
        }
      }
      mmo.template run<6 * E>(in, res);
      for (int e = 0; e < m; ++e) {
        const Block* g0 = res + 6 * e;  // party 0: (sL|tL), (sR|tR), (vL|vR)
        const Block* g1 = res + 6 * e + 3;
        const uint64_t ai = (a[e] >> sh) & 1;  // keep = ai (0: L, 1: R), lose = 1 - ai
        const int lose = int(1 - ai), keep = int(ai);
        const Block sc = {(g0[lose].lo ^ g1[lose].lo) & kSeedMask, g0[lose].hi ^ g1[lose].hi};
        const uint64_t v0l = lose ? g0[2].hi : g0[2].lo, v1l = lose ? g1[2].hi : g1[2].lo;
        const uint64_t v0k = keep ? g0[2].hi : g0[2].lo, v1k = keep ? g1[2].hi : g1[2].lo;
        const uint64_t neg = 0 - t1[e];  // (-1)^{t1}: y -> (y ^ neg) - neg
        uint64_t vcw = v1l - v0l - Va[e];
        if (lose == 0) vcw += b[e];  // leaving to the left: x < alpha, add beta
        vcw = (vcw ^ neg) - neg;
        Va[e] = Va[e] - v1k + v0k + ((vcw ^ neg) - neg);
        const uint64_t tl = (g0[0].lo ^ g1[0].lo ^ ai ^ 1) & 1;
        const uint64_t tr = (g0[1].lo ^ g1[1].lo ^ ai) & 1;
        uint64_t* k = key[e];
        k[2 * l] = sc.lo | tl | (tr << 1);
        k[2 * l + 1] = sc.hi;
        k[2 * bits + l] = vcw;
        const uint64_t tk = keep ? tr : tl;
        const uint64_t m0 = 0 - t0[e], m1 = 0 - t1[e];
        s0[e] = {(g0[keep].lo & kSeedMask) ^ (m0 & sc.lo), g0[keep].hi ^ (m0 & sc.hi)};
        s1[e] = {(g1[keep].lo & kSeedMask) ^ (m1 & sc.lo), g1[keep].hi ^ (m1 & sc.hi)};
        t0[e] = (g0[keep].lo & 1) ^ (t0[e] & tk);
        t1[e] = (g1[keep].lo & 1) ^ (t1[e] & tk);
      }
    }
    for (int e = 0; e < m; ++e) {
      const uint64_t neg = 0 - t1[e];
      const uint64_t y = s1[e].hi - s0[e].hi - Va[e];
      key[e][3 * bits] = (y ^ neg) - neg;
    }
  }
}

#if PGK_FSS_HAVE_AESNI
PGK_FSS_TARGET __attribute__((flatten)) void gen_ni(int bits, int64_t n, const uint64_t* alpha, const uint64_t* beta,
                                                    const uint64_t* offset, const uint64_t* seed0,
                                                    const uint64_t* seed1, uint64_t* cw) {
  gen_impl(NiMmo{}, bits, n, alpha, beta, offset, seed0, seed1, cw);
}
PGK_FSS_TARGET __attribute__((flatten)) void eval_ni(int party, int bits, int64_t n, const uint64_t* x,
                                                     const uint64_t* seed, const uint64_t* cw, uint64_t* out) {
  eval_impl(NiMmo{}, party, bits, n, x, seed, cw, out);
}
// (VAES evaluation is eval_vaes_simd above: 1.3x faster than eval_impl on VaesMmo.)
PGK_FSS_VAES_TARGET __attribute__((flatten)) void gen_vaes(int bits, int64_t n, const uint64_t* alpha,
                                                           const uint64_t* beta, const uint64_t* offset,
                                                           const uint64_t* seed0, const uint64_t* seed1,
                                                           uint64_t* cw) {
  gen_impl(VaesMmo{}, bits, n, alpha, beta, offset, seed0, seed1, cw);
}
#endif

void gen_on(DcfIsa isa, int bits, int64_t n, const uint64_t* alpha, const uint64_t* beta, const uint64_t* offset,
            const uint64_t* seed0, const uint64_t* seed1, uint64_t* cw) {
#if PGK_FSS_HAVE_AESNI
  if (isa == kDcfVaes) return gen_vaes(bits, n, alpha, beta, offset, seed0, seed1, cw);
  if (isa == kDcfAesni) return gen_ni(bits, n, alpha, beta, offset, seed0, seed1, cw);
#endif
  gen_impl(PortableMmo{}, bits, n, alpha, beta, offset, seed0, seed1, cw);
}

void eval_on(DcfIsa isa, int party, int bits, int64_t n, const uint64_t* x, const uint64_t* seed,
             const uint64_t* cw, uint64_t* out) {
#if PGK_FSS_HAVE_AESNI
  if (isa == kDcfVaes) return eval_vaes_simd(party, bits, n, x, seed, cw, out);
  if (isa == kDcfAesni) return eval_ni(party, bits, n, x, seed, cw, out);
#endif
  eval_impl(PortableMmo{}, party, bits, n, x, seed, cw, out);
}

void check_ltz_k(int k) {
  if (k < 2 || k > 64) throw std::invalid_argument("fss_ltz: k must be in [2, 64], got " + std::to_string(k));
}

void check_party(int party) {
  if (party != 0 && party != 1) throw std::invalid_argument("dcf: party must be 0 or 1, got " + std::to_string(party));
}

void ltz_gen_impl(int k, int64_t n, const uint64_t* r, const uint64_t* seed0,
                                 const uint64_t* seed1, uint64_t* cw) {
  // Chunks keep the derived alpha/beta/offset in cache.
  constexpr int64_t C = 256;
  uint64_t al[C], be[C], of[C];
  const int m = k - 1;
  const int64_t kw = dcf_cw_words(m);
  for (int64_t base = 0; base < n; base += C) {
    const int64_t cnt = std::min<int64_t>(C, n - base);
    for (int64_t i = 0; i < cnt; ++i) {
      const uint64_t ri = r[base + i];
      const uint64_t rm = (ri >> m) & 1;
      al[i] = ri;  // gen keeps the low m bits
      of[i] = rm;
      be[i] = 1 - 2 * rm;
    }
    gen_on(dcf_best_isa(), m, cnt, al, be, of, seed0 + 2 * base, seed1 + 2 * base, cw + base * kw);
  }
}

void ltz_finish(int party, int k, int64_t n, const uint64_t* c, uint64_t* out) {
  const int m = k - 1;
  for (int64_t i = 0; i < n; ++i) {
    // c_m = 1: output 1 - v (party 0 adds the 1)
    const uint64_t flip = 0 - ((c[i] >> m) & 1);
    out[i] = ((out[i] ^ flip) - flip) + (party == 0 ? (flip & 1) : 0);
  }
}

}  // namespace

void dcf_check_bits(int bits) {
  if (bits < 1 || bits > 64) throw std::invalid_argument("dcf: bits must be in [1, 64], got " + std::to_string(bits));
}

DcfIsa dcf_best_isa() {
#if PGK_FSS_HAVE_AESNI
  if (vaes_available()) return kDcfVaes;
  if (aesni_available()) return kDcfAesni;
#endif
  return kDcfPortable;
}

bool dcf_isa_available(DcfIsa isa) {
  if (isa == kDcfPortable) return true;
#if PGK_FSS_HAVE_AESNI
  if (isa == kDcfAesni) return aesni_available();
  if (isa == kDcfVaes) return vaes_available();
#endif
  return false;
}

static void check_isa(DcfIsa isa) {
  if (!dcf_isa_available(isa))
    throw std::invalid_argument("dcf: block function " + std::to_string(int(isa)) + " is not available on this CPU");
}

void dcf_gen_isa(DcfIsa isa, int bits, int64_t n, const uint64_t* alpha, const uint64_t* beta,
                 const uint64_t* offset, const uint64_t* seed0, const uint64_t* seed1, uint64_t* cw) {
  dcf_check_bits(bits);
  check_isa(isa);
  gen_on(isa, bits, n, alpha, beta, offset, seed0, seed1, cw);
}

void dcf_eval_isa(DcfIsa isa, int party, int bits, int64_t n, const uint64_t* x, const uint64_t* seed,
                  const uint64_t* cw, uint64_t* out) {
  dcf_check_bits(bits);
  check_party(party);
  check_isa(isa);
  eval_on(isa, party, bits, n, x, seed, cw, out);
}

void dcf_gen(int bits, int64_t n, const uint64_t* alpha, const uint64_t* beta, const uint64_t* offset,
             const uint64_t* seed0, const uint64_t* seed1, uint64_t* cw) {
  dcf_gen_isa(dcf_best_isa(), bits, n, alpha, beta, offset, seed0, seed1, cw);
}

void dcf_eval(int party, int bits, int64_t n, const uint64_t* x, const uint64_t* seed, const uint64_t* cw,
              uint64_t* out) {
  dcf_eval_isa(dcf_best_isa(), party, bits, n, x, seed, cw, out);
}

void fss_ltz_gen(int k, int64_t n, const uint64_t* r, const uint64_t* seed0, const uint64_t* seed1, uint64_t* cw) {
  check_ltz_k(k);
  ltz_gen_impl(k, n, r, seed0, seed1, cw);
}

void fss_ltz_eval(int party, int k, int64_t n, const uint64_t* c, const uint64_t* seed, const uint64_t* cw,
                  uint64_t* out) {
  check_ltz_k(k);
  dcf_eval(party, k - 1, n, c, seed, cw, out);  // eval keeps c's low k - 1 bits
  ltz_finish(party, k, n, c, out);
}

}  // namespace pgk
