#include <pgkernels/ring.h>

#include <algorithm>
#include <vector>

#include <pgkernels/ring_hd.h>

namespace pgk {
namespace {

// Inner products of a 4-row block of A with a 4-row block of B over one
// k-chunk: 16 independent accumulators whose k-loop vectorises (AVX-512DQ has
// a 64-bit lane multiply; the clones let one binary use it where present).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define PGK_CLONES __attribute__((target_clones("arch=skylake-avx512", "avx2", "default")))
#else
#define PGK_CLONES
#endif

constexpr int64_t KC = 512;  // k-chunk: 8 rows x 512 words = 32 KiB, about L1

PGK_CLONES
void block4x4(int64_t kc, const uint64_t* const a[4], const uint64_t* const b[4], uint64_t acc[16]) {
  uint64_t s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
  uint64_t s20 = 0, s21 = 0, s22 = 0, s23 = 0, s30 = 0, s31 = 0, s32 = 0, s33 = 0;
  const uint64_t *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3];
  const uint64_t *b0 = b[0], *b1 = b[1], *b2 = b[2], *b3 = b[3];
  for (int64_t t = 0; t < kc; ++t) {
    const uint64_t x0 = a0[t], x1 = a1[t], x2 = a2[t], x3 = a3[t];
    const uint64_t y0 = b0[t], y1 = b1[t], y2 = b2[t], y3 = b3[t];
    s00 = hd::ring_mac(s00, x0, y0); s01 = hd::ring_mac(s01, x0, y1);
    s02 = hd::ring_mac(s02, x0, y2); s03 = hd::ring_mac(s03, x0, y3);
    s10 = hd::ring_mac(s10, x1, y0); s11 = hd::ring_mac(s11, x1, y1);
    s12 = hd::ring_mac(s12, x1, y2); s13 = hd::ring_mac(s13, x1, y3);
    s20 = hd::ring_mac(s20, x2, y0); s21 = hd::ring_mac(s21, x2, y1);
    s22 = hd::ring_mac(s22, x2, y2); s23 = hd::ring_mac(s23, x2, y3);
    s30 = hd::ring_mac(s30, x3, y0); s31 = hd::ring_mac(s31, x3, y1);
    s32 = hd::ring_mac(s32, x3, y2); s33 = hd::ring_mac(s33, x3, y3);
  }
  const uint64_t s[16] = {s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, s31, s32, s33};
  for (int i = 0; i < 16; ++i) acc[i] += s[i];
}

PGK_CLONES
uint64_t dot(int64_t kc, const uint64_t* a, const uint64_t* b) {
  uint64_t s = 0;
  for (int64_t t = 0; t < kc; ++t) s = hd::ring_mac(s, a[t], b[t]);
  return s;
}

// C[i][j] += <A_i, B_j> over rows i in [i0, i1), j in [j0, j1), one k-chunk;
// `upper` restricts to j >= i (blocks straddling the diagonal compute a few
// extra entries of the lower triangle, which the caller overwrites).
void chunk(int64_t i0, int64_t i1, int64_t j0, int64_t j1, int64_t k0, int64_t kc, const uint64_t* A,
           int64_t lda, const uint64_t* B, int64_t ldb, uint64_t* C, int64_t ldc, bool upper) {
  int64_t i = i0;
  for (; i + 4 <= i1; i += 4) {
    const uint64_t* a[4] = {A + i * lda + k0, A + (i + 1) * lda + k0, A + (i + 2) * lda + k0,
                            A + (i + 3) * lda + k0};
    int64_t j = upper ? std::max(j0, i - i % 4) : j0;
    for (; j + 4 <= j1; j += 4) {
      const uint64_t* b[4] = {B + j * ldb + k0, B + (j + 1) * ldb + k0, B + (j + 2) * ldb + k0,
                              B + (j + 3) * ldb + k0};
      uint64_t acc[16] = {0};
      block4x4(kc, a, b, acc);
      for (int r = 0; r < 4; ++r)
        for (int c = 0; c < 4; ++c) C[(i + r) * ldc + j + c] += acc[r * 4 + c];
    }
    for (; j < j1; ++j)
      for (int r = 0; r < 4; ++r) C[(i + r) * ldc + j] += dot(kc, a[r], B + j * ldb + k0);
  }
  for (; i < i1; ++i)
    for (int64_t j = upper ? std::max(j0, i) : j0; j < j1; ++j)
      C[i * ldc + j] += dot(kc, A + i * lda + k0, B + j * ldb + k0);
}

void zero_or_keep(int64_t m, int64_t n, uint64_t* C, int64_t ldc, bool accumulate) {
  if (accumulate) return;
  for (int64_t i = 0; i < m; ++i) std::fill(C + i * ldc, C + i * ldc + n, uint64_t(0));
}

}  // namespace

void ring_matmul_nt(int64_t m, int64_t n, int64_t k, const uint64_t* A, int64_t lda, const uint64_t* B,
                    int64_t ldb, uint64_t* C, int64_t ldc, bool accumulate) {
  zero_or_keep(m, n, C, ldc, accumulate);
  for (int64_t k0 = 0; k0 < k; k0 += KC)
    chunk(0, m, 0, n, k0, std::min(KC, k - k0), A, lda, B, ldb, C, ldc, false);
}

void ring_syr2k(int64_t m, int64_t k, const uint64_t* A, int64_t lda, const uint64_t* B, int64_t ldb,
                uint64_t* C, int64_t ldc, bool accumulate) {
  // Upper triangle into a scratch copy, then C (+)= U + strict-upper(U)^T.
  std::vector<uint64_t> U(size_t(m) * size_t(m), 0);
  for (int64_t k0 = 0; k0 < k; k0 += KC) {
    const int64_t kc = std::min(KC, k - k0);
    chunk(0, m, 0, m, k0, kc, A, lda, B ? B : A, B ? ldb : lda, U.data(), m, true);
    if (B) chunk(0, m, 0, m, k0, kc, B, ldb, A, lda, U.data(), m, true);
  }
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < m; ++j) {
      const uint64_t v = j >= i ? U[i * m + j] : U[j * m + i];
      C[i * ldc + j] = accumulate ? C[i * ldc + j] + v : v;
    }
}

}  // namespace pgk
