// Ring matrix products against a naive triple loop: odd sizes, k spanning
// several chunks, wrap-around values, accumulate mode, leading dimensions.
#include <random>
#include <vector>

#include <pgkernels/ring.h>

#include "check.h"

using namespace pgk;

static std::vector<uint64_t> rnd(size_t n, std::mt19937_64& g, bool edge) {
  std::vector<uint64_t> v(n);
  for (auto& x : v) x = edge ? (g() & 1 ? ~0ull - (g() & 3) : (1ull << 63) + (g() & 3)) : g();
  return v;
}

int main() {
  std::mt19937_64 g(7);
  const int64_t sizes[][3] = {{0, 3, 5}, {1, 1, 1}, {3, 5, 7}, {4, 4, 512}, {9, 6, 1100}, {13, 13, 1025}, {5, 2, 0}};
  for (auto& s : sizes) {
    for (bool edge : {false, true}) {
      const int64_t m = s[0], n = s[1], k = s[2], lda = k + 3, ldb = k + 1, ldc = n + 2;
      auto A = rnd(size_t(m) * lda, g, edge), B = rnd(size_t(n) * ldb, g, edge);
      auto C = rnd(size_t(m) * ldc, g, false), C0 = C;
      ring_matmul_nt(m, n, k, A.data(), lda, B.data(), ldb, C.data(), ldc, true);
      bool ok = true;
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
          uint64_t want = C0[i * ldc + j];
          for (int64_t t = 0; t < k; ++t) want += A[i * lda + t] * B[j * ldb + t];
          ok = ok && C[i * ldc + j] == want;
        }
      CHECK(ok, "ring_matmul_nt m=%lld n=%lld k=%lld", (long long)m, (long long)n, (long long)k);
    }
    // syr2k / syrk on m x k with B of the same shape
    const int64_t m = s[0], k = s[2];
    auto A = rnd(size_t(m) * k, g, false), B = rnd(size_t(m) * k, g, true);
    std::vector<uint64_t> C(size_t(m) * m), S(size_t(m) * m);
    ring_syr2k(m, k, A.data(), k, B.data(), k, C.data(), m);
    ring_syr2k(m, k, A.data(), k, nullptr, 0, S.data(), m);
    bool ok = true, oks = true;
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < m; ++j) {
        uint64_t w = 0, ws = 0;
        for (int64_t t = 0; t < k; ++t) {
          w += A[i * k + t] * B[j * k + t] + B[i * k + t] * A[j * k + t];
          ws += A[i * k + t] * A[j * k + t];
        }
        ok = ok && C[i * m + j] == w;
        oks = oks && S[i * m + j] == ws;
      }
    CHECK(ok, "ring_syr2k m=%lld k=%lld", (long long)m, (long long)k);
    CHECK(oks, "ring_syr2k (syrk) m=%lld k=%lld", (long long)m, (long long)k);
  }
  return report("ring");
}
