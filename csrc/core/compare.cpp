#include <pgkernels/compare.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include <pgkernels/bits.h>

#include <pgkernels/compare_hd.h>

// The per-word formulas live in compare_hd.h (shared with the CUDA kernels);
// this file holds the layout and the CPU loops around them.
namespace pgk {
namespace {

using hd::kCmpGroup;
constexpr int kGroup = kCmpGroup;
using hd::mask_bits;
using hd::mono_index;

inline int popcount(unsigned v) { return hd::popc(v); }

inline int mono_count(int m) { return (1 << m) - 1 - m; }

inline int pairs_at(const CmpLayout& L, int level) { return L.nodes[level] / 2; }

// a/b planes opened per level: LT opens eq_H, lt_L and (except for the pair
// holding the lowest group, whose eq is never needed) eq_L.
inline int ab_planes(int mode, int P) {
  if (P == 0) return 0;
  return mode == kCmpLT ? 3 * P - 1 : 2 * P;
}
inline int c_planes(int mode, int P) {
  if (P == 0) return 0;
  return mode == kCmpLT ? 2 * P - 1 : P;
}

// Per-thread scratch reused across calls: fresh multi-megabyte buffers per
// call cost more in page faults than the kernels themselves.
inline uint64_t* scratch(int slot, size_t nwords) {
  thread_local std::vector<uint64_t> bufs[4];
  auto& b = bufs[slot];
  if (b.size() < nwords) b.resize(nwords);
  return b.data();
}

}  // namespace

void cmp_check(const CmpSpec& s) {
  if (s.n < 0) throw std::invalid_argument("pgk compare: n must be >= 0");
  if (s.mode != kCmpLT && s.mode != kCmpEQ && s.mode != kCmpMUX)
    throw std::invalid_argument("pgk compare: unknown mode " + std::to_string(s.mode));
  if (s.mode != kCmpMUX && (s.k < 2 || s.k > 64))
    throw std::invalid_argument("pgk compare: bits must be in [2, 64], got " + std::to_string(s.k));
  if (s.payloads < 0) throw std::invalid_argument("pgk compare: payloads must be >= 0");
  if (s.mode == kCmpMUX && s.payloads == 0)
    throw std::invalid_argument("pgk compare: MUX mode needs payloads");
  if (s.self_sign != 0 && (s.self_sign != 1 && s.self_sign != -1))
    throw std::invalid_argument("pgk compare: self_sign must be -1, 0 or 1");
  if (s.self_sign != 0 && (s.mode == kCmpMUX || s.k != 64 || s.payloads < 1))
    throw std::invalid_argument("pgk compare: a self payload needs k = 64, LT/EQ and payloads >= 1");
}

int64_t CmpLayout::state_words() const { return (1 + 2 * (G > 0 ? G : 1)) * W; }

int64_t CmpLayout::open_words(int step) const {
  if (step >= levels) return W;
  return (ab_plane[step + 1] - ab_plane[step]) * W;
}

CmpLayout cmp_layout(const CmpSpec& s) {
  cmp_check(s);
  CmpLayout L;
  L.W = plane_words(s.n);
  const int64_t W = L.W, n = s.n;
  if (s.mode != kCmpMUX) {
    L.B = s.mode == kCmpLT ? s.k - 1 : s.k;
    L.G = (L.B + kGroup - 1) / kGroup;
    for (int g = 0; g < L.G; ++g) L.group_bits.push_back(std::min(kGroup, L.B - kGroup * g));
    for (int c = L.G; c >= 1; c = (c == 1 ? 0 : (c + 1) / 2)) L.nodes.push_back(c);
    L.levels = int(L.nodes.size()) - 1;
  }
  int64_t off = 0;
  // stream segment
  L.rA = off;
  off += s.mode != kCmpMUX ? n : 0;
  L.sB = off;
  off += W;
  L.mA = off;
  off += int64_t(s.masked_payloads()) * n;
  L.ab = off;
  int64_t planes = 0;
  for (int l = 0; l <= L.levels; ++l) {
    L.ab_plane.push_back(planes);
    if (l < L.levels) planes += ab_planes(s.mode, pairs_at(L, l));
  }
  off += planes * W;
  L.stream_words = off;
  // corrected segment
  L.rB = off;
  off += (s.mode != kCmpMUX ? s.k : 0) * W;
  L.mono = off;
  planes = 0;
  for (int g = 0; g < L.G; ++g) {
    L.mono_plane.push_back(planes);
    planes += mono_count(L.group_bits[g]);
  }
  off += planes * W;
  L.cc = off;
  planes = 0;
  for (int l = 0; l <= L.levels; ++l) {
    L.c_plane.push_back(planes);
    if (l < L.levels) planes += c_planes(s.mode, pairs_at(L, l));
  }
  off += planes * W;
  L.sA = off;
  off += n;
  L.smA = off;
  off += int64_t(s.payloads) * n;
  L.total_words = off;
  return L;
}

int64_t cmp_open1_words(const CmpSpec& s) {
  if (s.mode == kCmpMUX) return int64_t(s.payloads) * s.n;
  return int64_t(1 + s.masked_payloads()) * s.n;
}

void cmp_open1(const CmpSpec& s, const CmpLayout& L, const uint64_t* x, const uint64_t* v,
               const uint64_t* mat, bool rank0, uint64_t* out, uint64_t* zout) {
  const int64_t n = s.n;
  if (s.mode == kCmpMUX) {
    const uint64_t* mA = mat + L.mA;
    for (int64_t i = 0; i < int64_t(s.payloads) * n; ++i) out[i] = hd::cmp_mask_payload(v[i], mA[i]);
    const uint64_t* sB = mat + L.sB;
    for (int64_t w = 0; w < L.W; ++w) {
      const int64_t base = w * 64;
      zout[w] = hd::pack_low_bits(x + base, std::min<int64_t>(64, n - base)) ^ sB[w];
    }
    return;
  }
  const uint64_t mask = mask_bits(s.k);
  const uint64_t offset = (rank0 && s.mode == kCmpLT) ? (1ull << (s.k - 1)) : 0;
  const uint64_t* rA = mat + L.rA;
  for (int64_t i = 0; i < n; ++i) out[i] = hd::cmp_mask_value(x[i], rA[i], offset, mask);
  const uint64_t* mA = mat + L.mA;
  const uint64_t* vm = v + (s.self_sign != 0 ? n : 0);  // masked payload rows
  for (int64_t i = 0; i < int64_t(s.masked_payloads()) * n; ++i) out[n + i] = hd::cmp_mask_payload(vm[i], mA[i]);
}

namespace {

// Writes the words to XOR-open at tree step `level` from the current nodes.
void emit_open(const CmpSpec& s, const CmpLayout& L, int level, const uint64_t* mat,
               const uint64_t* state, uint64_t* out) {
  const int64_t W = L.W;
  const uint64_t* base = state;
  auto lt = [&](int j) { return state + (1 + 2 * j) * W; };
  auto eq = [&](int j) { return state + (2 + 2 * j) * W; };
  if (level == L.levels) {
    const uint64_t* root = s.mode == kCmpLT ? lt(0) : eq(0);
    const uint64_t* sB = mat + L.sB;
    for (int64_t w = 0; w < W; ++w) out[w] = base[w] ^ root[w] ^ sB[w];
    return;
  }
  const int P = pairs_at(L, level);
  const uint64_t* ab = mat + L.ab + L.ab_plane[level] * W;
  for (int i = 0; i < P; ++i) {
    const uint64_t* eqH = eq(2 * i + 1);
    const uint64_t* a = ab + int64_t(i) * W;
    uint64_t* oa = out + int64_t(i) * W;
    for (int64_t w = 0; w < W; ++w) oa[w] = eqH[w] ^ a[w];
    const uint64_t* yL = s.mode == kCmpLT ? lt(2 * i) : eq(2 * i);
    const uint64_t* b1 = ab + int64_t(P + i) * W;
    uint64_t* ob1 = out + int64_t(P + i) * W;
    for (int64_t w = 0; w < W; ++w) ob1[w] = yL[w] ^ b1[w];
    if (s.mode == kCmpLT && i > 0) {
      const uint64_t* eqL = eq(2 * i);
      const uint64_t* b2 = ab + int64_t(2 * P + i - 1) * W;
      uint64_t* ob2 = out + int64_t(2 * P + i - 1) * W;
      for (int64_t w = 0; w < W; ++w) ob2[w] = eqL[w] ^ b2[w];
    }
  }
}

}  // namespace

void cmp_start(const CmpSpec& s, const CmpLayout& L, const uint64_t* c, const uint64_t* mat,
               bool rank0, bool negate, uint64_t* state, uint64_t* open_out) {
  const int64_t W = L.W, n = s.n;
  const int k = s.k;
  // Bits >= k of c are never read, so c needs no masking before slicing.
  uint64_t* cPbuf = scratch(0, size_t(k) * W);
  bitslice(c, n, k, cPbuf);
  const uint64_t* cP = cPbuf;

  const uint64_t* rB = mat + L.rB;
  const uint64_t ones = rank0 ? ~0ull : 0ull;  // public constant 1, held by party 0
  uint64_t* base = state;
  const uint64_t flip = negate ? ones : 0;
  if (s.mode == kCmpLT) {
    const uint64_t* ctop = cP + int64_t(k - 1) * W;
    const uint64_t* rtop = rB + int64_t(k - 1) * W;
    for (int64_t w = 0; w < W; ++w) base[w] = hd::cmp_base_word(true, rank0, rtop[w], ctop[w], flip);
  } else {
    for (int64_t w = 0; w < W; ++w) base[w] = hd::cmp_base_word(false, rank0, 0, 0, flip);
  }

  for (int g = 0; g < L.G; ++g) {
    const int m = L.group_bits[g];
    const unsigned full = (1u << m) - 1;
    const uint64_t* mono = mat + L.mono + L.mono_plane[g] * W;
    const uint64_t* Mp[16];  // share of prod_{j in T} r_{4g+j}; T = 0 is the constant 1
    Mp[0] = nullptr;
    for (unsigned T = 1; T <= full; ++T) {
      Mp[T] = popcount(T) == 1 ? rB + int64_t(kGroup * g + hd::ctz(T)) * W
                               : mono + int64_t(mono_index(T)) * W;
    }
    uint64_t* lt_out = state + (1 + 2 * g) * W;
    uint64_t* eq_out = state + (2 + 2 * g) * W;
    for (int64_t w = 0; w < W; ++w) {
      uint64_t nc[kGroup], M[16];
      for (int j = 0; j < m; ++j) nc[j] = ~cP[int64_t(kGroup * g + j) * W + w];
      M[0] = ones;
      for (unsigned T = 1; T <= full; ++T) M[T] = Mp[T][w];
      hd::cmp_leaf(m, s.mode == kCmpLT, nc, M, lt_out + w, eq_out + w);
    }
  }
  emit_open(s, L, 0, mat, state, open_out);
}

void cmp_step(const CmpSpec& s, const CmpLayout& L, int level, const uint64_t* opened,
              const uint64_t* mat, bool rank0, uint64_t* state, uint64_t* open_out) {
  if (level < 0 || level >= L.levels) throw std::invalid_argument("pgk cmp_step: bad level");
  const int64_t W = L.W;
  const int nodes = L.nodes[level];
  const int P = nodes / 2;
  const uint64_t* ab = mat + L.ab + L.ab_plane[level] * W;
  const uint64_t* cc = mat + L.cc + L.c_plane[level] * W;
  const uint64_t pub = rank0 ? ~0ull : 0ull;
  auto lt = [&](int j) { return state + (1 + 2 * j) * W; };
  auto eq = [&](int j) { return state + (2 + 2 * j) * W; };
  for (int i = 0; i < P; ++i) {
    const uint64_t* E = opened + int64_t(i) * W;
    const uint64_t* D1 = opened + int64_t(P + i) * W;
    const uint64_t* a = ab + int64_t(i) * W;
    const uint64_t* b1 = ab + int64_t(P + i) * W;
    const uint64_t* c1 = cc + int64_t(i) * W;
    uint64_t* ltH = lt(2 * i + 1);
    uint64_t* ltN = lt(i);
    uint64_t* eqN = eq(i);
    if (s.mode == kCmpLT) {
      const bool need_eq = i > 0;
      const uint64_t* D2 = need_eq ? opened + int64_t(2 * P + i - 1) * W : nullptr;
      const uint64_t* b2 = need_eq ? ab + int64_t(2 * P + i - 1) * W : nullptr;
      const uint64_t* c2 = need_eq ? cc + int64_t(P + i - 1) * W : nullptr;
      for (int64_t w = 0; w < W; ++w) {
        const uint64_t e = E[w];
        const uint64_t and1 = hd::beaver_and(c1[w], e, D1[w], a[w], b1[w], pub);
        const uint64_t nl = ltH[w] ^ and1;  // lt_H and (eq_H & lt_L) never both 1
        uint64_t ne = 0;
        if (need_eq) ne = hd::beaver_and(c2[w], e, D2[w], a[w], b2[w], pub);
        ltN[w] = nl;
        eqN[w] = ne;
      }
    } else {
      for (int64_t w = 0; w < W; ++w) {
        eqN[w] = hd::beaver_and(c1[w], E[w], D1[w], a[w], b1[w], pub);
      }
    }
  }
  if (nodes % 2 == 1) {
    const int last = nodes - 1;
    std::copy(lt(last), lt(last) + W, lt(P));
    std::copy(eq(last), eq(last) + W, eq(P));
  }
  emit_open(s, L, level + 1, mat, state, open_out);
}

void cmp_finish(const CmpSpec& s, const CmpLayout& L, const uint64_t* z, const uint64_t* mat,
                bool rank0, const uint64_t* v, const uint64_t* e, uint64_t* out) {
  const int64_t n = s.n;
  const uint64_t* sA = mat + L.sA;
  const uint64_t one = rank0 ? 1 : 0;
  if (s.payloads == 0) {
    for (int64_t i = 0; i < n; ++i) {
      out[i] = hd::cmp_finish_bit(hd::plane_bit(z, i), sA[i], one);
    }
    return;
  }
  const uint64_t* smA = mat + L.smA;
  for (int p = 0; p < s.payloads; ++p) {
    const int64_t base = int64_t(p) * n;
    for (int64_t i = 0; i < n; ++i) {
      out[base + i] = hd::cmp_finish_payload(hd::plane_bit(z, i), v[base + i], e[base + i], sA[i], smA[base + i]);
    }
  }
}

void cmp_dealer(const CmpSpec& s, const CmpLayout& L, int parties, const uint64_t* const* mats,
                uint64_t* corr) {
  if (parties < 2) throw std::invalid_argument("pgk cmp_dealer: need at least 2 parties");
  const int64_t W = L.W, n = s.n;
  auto C = [&](int64_t off) { return corr + (off - L.stream_words); };
  // XOR of every party's plane at `off` except the corrected party's (mats[0]).
  auto others_xor = [&](int64_t off, int64_t w) {
    uint64_t acc = 0;
    for (int p = 1; p < parties; ++p) acc ^= mats[p][off + w];
    return acc;
  };
  auto all_xor = [&](int64_t off, int64_t w) { return others_xor(off, w) ^ mats[0][off + w]; };

  const uint64_t* rsum = nullptr;  // plain r, for a self payload's mask
  if (s.mode != kCmpMUX) {
    const int k = s.k;
    uint64_t* r = scratch(1, size_t(n));
    rsum = r;
    for (int64_t i = 0; i < n; ++i) r[i] = mats[0][L.rA + i];
    for (int p = 1; p < parties; ++p)
      for (int64_t i = 0; i < n; ++i) r[i] += mats[p][L.rA + i];
    uint64_t* rT = scratch(2, size_t(k) * W);
    bitslice(r, n, k, rT);
    // Corrected planes: true value, then XOR out every other party's share.
    uint64_t* rBc = C(L.rB);
    for (int64_t j = 0; j < int64_t(k) * W; ++j) rBc[j] = rT[j];
    for (int g = 0; g < L.G; ++g) {
      const int m = L.group_bits[g];
      const unsigned full = (1u << m) - 1;
      uint64_t* planes[16];
      for (unsigned T = 1; T <= full; ++T)
        planes[T] = popcount(T) < 2 ? nullptr
                                    : C(L.mono + (L.mono_plane[g] + mono_index(T)) * W);
      const uint64_t* rg = rT + int64_t(kGroup * g) * W;
      for (int64_t w = 0; w < W; ++w) {
        uint64_t r[kGroup], prod[16];
        for (int j = 0; j < m; ++j) r[j] = rg[int64_t(j) * W + w];
        hd::group_products(m, r, prod);
        for (unsigned T = 1; T <= full; ++T)
          if (planes[T]) planes[T][w] = prod[T];
      }
    }
    const int64_t ndeal = L.cc - L.rB;  // rB and monomial planes
    for (int p = 1; p < parties; ++p) {
      const uint64_t* src = mats[p] + L.rB;
      for (int64_t j = 0; j < ndeal; ++j) rBc[j] ^= src[j];
    }
    for (int l = 0; l < L.levels; ++l) {
      const int P = pairs_at(L, l);
      const int64_t ab = L.ab + L.ab_plane[l] * W;
      const int64_t cc = L.cc + L.c_plane[l] * W;
      for (int i = 0; i < P; ++i) {
        const int64_t a = ab + int64_t(i) * W;
        const int64_t b1 = ab + int64_t(P + i) * W;
        const int64_t c1 = cc + int64_t(i) * W;
        for (int64_t w = 0; w < W; ++w)
          C(c1)[w] = hd::beaver_triple_c(all_xor(a, w), all_xor(b1, w), others_xor(c1, w));
        if (s.mode == kCmpLT && i > 0) {
          const int64_t b2 = ab + int64_t(2 * P + i - 1) * W;
          const int64_t c2 = cc + int64_t(P + i - 1) * W;
          for (int64_t w = 0; w < W; ++w)
            C(c2)[w] = hd::beaver_triple_c(all_xor(a, w), all_xor(b2, w), others_xor(c2, w));
        }
      }
    }
  }
  uint64_t* sAc = C(L.sA);
  for (int64_t w = 0; w < W; ++w) {
    const uint64_t sw = all_xor(L.sB, w);
    const int64_t end = std::min<int64_t>(n, (w + 1) * 64);
    for (int64_t i = w * 64; i < end; ++i) sAc[i] = (sw >> (i & 63)) & 1;
  }
  // [s m] needs the plain s, so it comes before the other shares of s come off
  const int64_t pn = int64_t(s.payloads) * n;
  if (pn) {
    uint64_t* smc = C(L.smA);
    const int64_t first = s.self_sign != 0 ? n : 0;
    for (int64_t j = 0; j < first; ++j) smc[j] = sAc[j] * (uint64_t(int64_t(s.self_sign)) * rsum[j]);
    for (int64_t j = first; j < pn; ++j) {
      uint64_t m = 0;
      for (int p = 0; p < parties; ++p) m += mats[p][L.mA + j - first];
      smc[j] = sAc[j % n] * m;
    }
    for (int p = 1; p < parties; ++p)
      for (int64_t j = 0; j < pn; ++j) smc[j] -= mats[p][L.smA + j];
  }
  for (int p = 1; p < parties; ++p)
    for (int64_t i = 0; i < n; ++i) sAc[i] -= mats[p][L.sA + i];
}

}  // namespace pgk
