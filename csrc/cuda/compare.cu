// The comparison rounds on the GPU (<pgkernels/compare.h>): the same words as
// csrc/core/compare.cpp for the same inputs. Elementwise rounds (open1,
// finish, the dealer's per-element words) run one thread per element; the
// tree rounds (start, step) one thread per plane word w, walking the groups
// and pairs in the CPU's order (step overwrites node i while pair 2i + 1 still
// reads, which a thread per (pair, word) would race on). Every formula is a
// PGK_HD function of <pgkernels/compare_hd.h>.
#include <stdexcept>
#include "kernels.h"
#include "launch.cuh"

#include <pgkernels/compare_hd.h>

namespace pgk {
namespace cuda {
namespace {

using hd::CmpDims;

struct DealerMats {
  const uint64_t* p[kMaxDealerParties];
  int parties;
};

__global__ void mask_value_kernel(int64_t n, const uint64_t* x, const uint64_t* rA, uint64_t offset, uint64_t mask,
                                  uint64_t* out) {
  PGK_GRID_LOOP(i, n) out[i] = hd::cmp_mask_value(x[i], rA[i], offset, mask);
}

__global__ void mask_payload_kernel(int64_t count, const uint64_t* v, const uint64_t* m, uint64_t* out) {
  PGK_GRID_LOOP(i, count) out[i] = hd::cmp_mask_payload(v[i], m[i]);
}

__global__ void pack_low_kernel(int64_t n, int64_t W, const uint64_t* x, const uint64_t* sB, uint64_t* zout) {
  PGK_GRID_LOOP(w, W) {
    const int64_t base = w * 64;
    zout[w] = hd::pack_low_bits(x + base, n - base < 64 ? n - base : 64) ^ sB[w];
  }
}

// Word w of the words XOR-opened at tree step `level` (csrc/core/compare.cpp: emit_open).
__device__ void emit_word(const CmpDims& d, int level, const uint64_t* mat, const uint64_t* state, uint64_t* out,
                          int64_t w) {
  const int64_t W = d.W;
  const bool lt = d.mode == kCmpLT;
  const uint64_t* LT = state + W;      // lt(j) = LT + 2 j W
  const uint64_t* EQ = state + 2 * W;  // eq(j) = EQ + 2 j W
  if (level == d.levels) {
    const uint64_t root = lt ? LT[w] : EQ[w];
    out[w] = state[w] ^ root ^ mat[d.sB + w];
    return;
  }
  const int P = d.pairs_at(level);
  const uint64_t* ab = mat + d.ab + d.ab_plane[level] * W;
  for (int i = 0; i < P; ++i) {
    out[int64_t(i) * W + w] = EQ[int64_t(2 * (2 * i + 1)) * W + w] ^ ab[int64_t(i) * W + w];
    const uint64_t yL = lt ? LT[int64_t(2 * (2 * i)) * W + w] : EQ[int64_t(2 * (2 * i)) * W + w];
    out[int64_t(P + i) * W + w] = yL ^ ab[int64_t(P + i) * W + w];
    if (lt && i > 0)
      out[int64_t(2 * P + i - 1) * W + w] = EQ[int64_t(2 * (2 * i)) * W + w] ^ ab[int64_t(2 * P + i - 1) * W + w];
  }
}

__global__ void start_kernel(CmpDims d, const uint64_t* cP, const uint64_t* mat, bool rank0, bool negate,
                             uint64_t* state, uint64_t* open_out) {
  const int64_t W = d.W;
  const bool lt = d.mode == kCmpLT;
  const uint64_t ones = rank0 ? ~0ull : 0ull;  // public constant 1, held by party 0
  const uint64_t flip = negate ? ones : 0;
  const uint64_t* rB = mat + d.rB;
  PGK_GRID_LOOP(w, W) {
    const int64_t top = int64_t(d.k - 1) * W + w;
    state[w] = lt ? hd::cmp_base_word(true, rank0, rB[top], cP[top], flip) : hd::cmp_base_word(false, rank0, 0, 0, flip);
    for (int g = 0; g < d.G; ++g) {
      const int m = d.group_bits[g];
      const unsigned full = (1u << m) - 1;
      uint64_t nc[hd::kCmpGroup], M[16];
      for (int j = 0; j < m; ++j) nc[j] = ~cP[int64_t(hd::kCmpGroup * g + j) * W + w];
      M[0] = ones;
      for (unsigned T = 1; T <= full; ++T)
        M[T] = hd::popc(T) == 1 ? rB[int64_t(hd::kCmpGroup * g + hd::ctz(T)) * W + w]
                                : mat[d.mono + (d.mono_plane[g] + hd::mono_index(T)) * W + w];
      hd::cmp_leaf(m, lt, nc, M, state + (1 + 2 * int64_t(g)) * W + w, state + (2 + 2 * int64_t(g)) * W + w);
    }
    emit_word(d, 0, mat, state, open_out, w);
  }
}

__global__ void step_kernel(CmpDims d, int level, const uint64_t* opened, const uint64_t* mat, bool rank0,
                            uint64_t* state, uint64_t* open_out) {
  const int64_t W = d.W;
  const int nodes = d.nodes[level];
  const int P = nodes / 2;
  const uint64_t* ab = mat + d.ab + d.ab_plane[level] * W;
  const uint64_t* cc = mat + d.cc + d.c_plane[level] * W;
  const uint64_t pub = rank0 ? ~0ull : 0ull;
  uint64_t* LT = state + W;
  uint64_t* EQ = state + 2 * W;
  PGK_GRID_LOOP(w, W) {
    for (int i = 0; i < P; ++i) {
      const uint64_t e = opened[int64_t(i) * W + w];
      const uint64_t D1 = opened[int64_t(P + i) * W + w];
      const uint64_t a = ab[int64_t(i) * W + w];
      const uint64_t b1 = ab[int64_t(P + i) * W + w];
      const uint64_t c1 = cc[int64_t(i) * W + w];
      if (d.mode == kCmpLT) {
        const uint64_t nl = LT[int64_t(2 * (2 * i + 1)) * W + w] ^ hd::beaver_and(c1, e, D1, a, b1, pub);
        uint64_t ne = 0;
        if (i > 0)
          ne = hd::beaver_and(cc[int64_t(P + i - 1) * W + w], e, opened[int64_t(2 * P + i - 1) * W + w], a,
                              ab[int64_t(2 * P + i - 1) * W + w], pub);
        LT[int64_t(2 * i) * W + w] = nl;
        EQ[int64_t(2 * i) * W + w] = ne;
      } else {
        EQ[int64_t(2 * i) * W + w] = hd::beaver_and(c1, e, D1, a, b1, pub);
      }
    }
    if (nodes % 2 == 1) {
      const int last = nodes - 1;
      LT[int64_t(2 * P) * W + w] = LT[int64_t(2 * last) * W + w];
      EQ[int64_t(2 * P) * W + w] = EQ[int64_t(2 * last) * W + w];
    }
    emit_word(d, level + 1, mat, state, open_out, w);
  }
}

__global__ void finish_bit_kernel(int64_t n, const uint64_t* z, const uint64_t* sA, uint64_t one, uint64_t* out) {
  PGK_GRID_LOOP(i, n) out[i] = hd::cmp_finish_bit(hd::plane_bit(z, i), sA[i], one);
}

__global__ void finish_payload_kernel(int64_t n, int64_t count, const uint64_t* z, const uint64_t* sA,
                                      const uint64_t* smA, const uint64_t* v, const uint64_t* e, uint64_t* out) {
  PGK_GRID_LOOP(t, count) {
    const int64_t i = t % n;
    out[t] = hd::cmp_finish_payload(hd::plane_bit(z, i), v[t], e[t], sA[i], smA[t]);
  }
}

// --- dealer ---------------------------------------------------------------------------

__global__ void dealer_rsum_kernel(CmpDims d, DealerMats M, uint64_t* r) {
  PGK_GRID_LOOP(i, d.n) {
    uint64_t acc = M.p[0][d.rA + i];
    for (int p = 1; p < M.parties; ++p) acc += M.p[p][d.rA + i];
    r[i] = acc;
  }
}

// rB planes and monomial planes of the corrected party (true value XOR the others' shares).
__global__ void dealer_planes_kernel(CmpDims d, DealerMats M, const uint64_t* rT, uint64_t* corr) {
  const int64_t W = d.W;
  uint64_t* rBc = corr + (d.rB - d.stream_words);
  uint64_t* monoc = corr + (d.mono - d.stream_words);
  const int64_t nplanes = (d.cc - d.rB) / (W > 0 ? W : 1);
  PGK_GRID_LOOP(w, W) {
    for (int b = 0; b < d.k; ++b) rBc[int64_t(b) * W + w] = rT[int64_t(b) * W + w];
    for (int g = 0; g < d.G; ++g) {
      const int m = d.group_bits[g];
      const unsigned full = (1u << m) - 1;
      uint64_t r[hd::kCmpGroup], prod[16];
      for (int j = 0; j < m; ++j) r[j] = rT[int64_t(hd::kCmpGroup * g + j) * W + w];
      hd::group_products(m, r, prod);
      for (unsigned T = 1; T <= full; ++T)
        if (hd::popc(T) >= 2) monoc[(d.mono_plane[g] + hd::mono_index(T)) * W + w] = prod[T];
    }
    for (int64_t j = 0; j < nplanes; ++j) {
      uint64_t x = rBc[j * W + w];
      for (int p = 1; p < M.parties; ++p) x ^= M.p[p][d.rB + j * W + w];
      rBc[j * W + w] = x;
    }
  }
}

__device__ uint64_t others_xor(const DealerMats& M, int64_t off) {
  uint64_t acc = 0;
  for (int p = 1; p < M.parties; ++p) acc ^= M.p[p][off];
  return acc;
}

__global__ void dealer_triples_kernel(CmpDims d, DealerMats M, uint64_t* corr) {
  const int64_t W = d.W;
  uint64_t* C = corr - d.stream_words;  // C[off] is the corrected word at material offset off
  PGK_GRID_LOOP(w, W) {
    for (int l = 0; l < d.levels; ++l) {
      const int P = d.pairs_at(l);
      const int64_t ab = d.ab + d.ab_plane[l] * W, cc = d.cc + d.c_plane[l] * W;
      for (int i = 0; i < P; ++i) {
        const int64_t a = ab + int64_t(i) * W + w;
        const uint64_t av = others_xor(M, a) ^ M.p[0][a];
        const int64_t b1 = ab + int64_t(P + i) * W + w, c1 = cc + int64_t(i) * W + w;
        C[c1] = hd::beaver_triple_c(av, others_xor(M, b1) ^ M.p[0][b1], others_xor(M, c1));
        if (d.mode == kCmpLT && i > 0) {
          const int64_t b2 = ab + int64_t(2 * P + i - 1) * W + w, c2 = cc + int64_t(P + i - 1) * W + w;
          C[c2] = hd::beaver_triple_c(av, others_xor(M, b2) ^ M.p[0][b2], others_xor(M, c2));
        }
      }
    }
  }
}

// The output mask s (arithmetic share) and its products with the payload masks.
__global__ void dealer_masks_kernel(CmpDims d, DealerMats M, const uint64_t* rsum, uint64_t* corr) {
  const int64_t n = d.n;
  uint64_t* sAc = corr + (d.sA - d.stream_words);
  uint64_t* smc = corr + (d.smA - d.stream_words);
  const int first = d.self_sign != 0 ? 1 : 0;
  PGK_GRID_LOOP(i, n) {
    const int64_t wi = d.sB + (i >> 6);
    const uint64_t s = ((others_xor(M, wi) ^ M.p[0][wi]) >> (i & 63)) & 1;
    for (int q = 0; q < d.payloads; ++q) {
      const int64_t j = int64_t(q) * n + i;
      uint64_t v;
      if (q < first) {
        v = s * (uint64_t(int64_t(d.self_sign)) * rsum[i]);
      } else {
        uint64_t m = 0;
        for (int p = 0; p < M.parties; ++p) m += M.p[p][d.mA + j - first * n];
        v = s * m;
      }
      for (int p = 1; p < M.parties; ++p) v -= M.p[p][d.smA + j];
      smc[j] = v;
    }
    uint64_t sv = s;
    for (int p = 1; p < M.parties; ++p) sv -= M.p[p][d.sA + i];
    sAc[i] = sv;
  }
}

}  // namespace

void cmp_open1(const CmpSpec& s, const CmpLayout& L, const uint64_t* x, const uint64_t* v, const uint64_t* mat,
               bool rank0, uint64_t* out, uint64_t* zout, cudaStream_t stream) {
  const int64_t n = s.n;
  if (s.mode == kCmpMUX) {
    const int64_t cnt = int64_t(s.payloads) * n;
    if (cnt) mask_payload_kernel<<<grid_for(cnt), kThreads, 0, stream>>>(cnt, v, mat + L.mA, out);
    if (L.W) pack_low_kernel<<<grid_for(L.W), kThreads, 0, stream>>>(n, L.W, x, mat + L.sB, zout);
    return;
  }
  const uint64_t offset = (rank0 && s.mode == kCmpLT) ? (1ull << (s.k - 1)) : 0;
  if (n) mask_value_kernel<<<grid_for(n), kThreads, 0, stream>>>(n, x, mat + L.rA, offset, hd::mask_bits(s.k), out);
  const int64_t cnt = int64_t(s.masked_payloads()) * n;
  if (cnt)
    mask_payload_kernel<<<grid_for(cnt), kThreads, 0, stream>>>(cnt, v + (s.self_sign != 0 ? n : 0), mat + L.mA,
                                                                out + n);
}

int64_t cmp_start_scratch_words(const CmpSpec& s, const CmpLayout& L) { return int64_t(s.k) * L.W; }

void cmp_start(const CmpSpec& s, const CmpLayout& L, const uint64_t* c, const uint64_t* mat, bool rank0,
               bool negate, uint64_t* state, uint64_t* open_out, uint64_t* scratch, cudaStream_t stream) {
  if (L.W == 0) return;
  // Bits >= k of c are never read, so c needs no masking before slicing.
  bitslice(c, s.n, s.k, scratch, stream);
  start_kernel<<<grid_for(L.W), kThreads, 0, stream>>>(hd::cmp_dims(s, L), scratch, mat, rank0, negate, state,
                                                       open_out);
}

void cmp_step(const CmpSpec& s, const CmpLayout& L, int level, const uint64_t* opened, const uint64_t* mat,
              bool rank0, uint64_t* state, uint64_t* open_out, cudaStream_t stream) {
  if (L.W == 0) return;
  step_kernel<<<grid_for(L.W), kThreads, 0, stream>>>(hd::cmp_dims(s, L), level, opened, mat, rank0, state,
                                                      open_out);
}

void cmp_finish(const CmpSpec& s, const CmpLayout& L, const uint64_t* z, const uint64_t* mat, bool rank0,
                const uint64_t* v, const uint64_t* e, uint64_t* out, cudaStream_t stream) {
  const int64_t n = s.n;
  if (n == 0) return;
  if (s.payloads == 0) {
    finish_bit_kernel<<<grid_for(n), kThreads, 0, stream>>>(n, z, mat + L.sA, rank0 ? 1 : 0, out);
    return;
  }
  const int64_t cnt = int64_t(s.payloads) * n;
  finish_payload_kernel<<<grid_for(cnt), kThreads, 0, stream>>>(n, cnt, z, mat + L.sA, mat + L.smA, v, e, out);
}

int64_t cmp_dealer_scratch_words(const CmpSpec& s, const CmpLayout& L) {
  return s.mode == kCmpMUX ? 0 : s.n + int64_t(s.k) * L.W;
}

void cmp_dealer(const CmpSpec& s, const CmpLayout& L, int parties, const uint64_t* const* mats, uint64_t* corr,
                uint64_t* scratch, cudaStream_t stream) {
  // the CPU dealer's contract (the ATen wrapper checks too; this launcher is public)
  if (parties < 2 || parties > kMaxDealerParties)
    throw std::invalid_argument("pgk::cuda::cmp_dealer: parties must be in [2, kMaxDealerParties]");
  DealerMats M{};
  M.parties = parties;
  for (int p = 0; p < parties && p < kMaxDealerParties; ++p) M.p[p] = mats[p];
  const CmpDims d = hd::cmp_dims(s, L);
  const int64_t n = s.n, W = L.W;
  if (n == 0) return;
  uint64_t* rsum = scratch;
  if (s.mode != kCmpMUX) {
    uint64_t* rT = scratch + n;
    dealer_rsum_kernel<<<grid_for(n), kThreads, 0, stream>>>(d, M, rsum);
    bitslice(rsum, n, s.k, rT, stream);
    dealer_planes_kernel<<<grid_for(W), kThreads, 0, stream>>>(d, M, rT, corr);
    if (L.levels) dealer_triples_kernel<<<grid_for(W), kThreads, 0, stream>>>(d, M, corr);
  }
  dealer_masks_kernel<<<grid_for(n), kThreads, 0, stream>>>(d, M, rsum, corr);
}

}  // namespace cuda
}  // namespace pgk
