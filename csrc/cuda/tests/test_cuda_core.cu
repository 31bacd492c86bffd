// Standalone (torch-free) device test: every launcher of csrc/cuda/kernels.h
// against the CPU core function of the same name, on the same inputs, word for
// word. Random words are enough (the kernels are functions of words; the
// protocol's correctness is tested on the CPU). Exits 77 (ctest: skipped) when
// no CUDA device is visible, so it builds and "passes" on a machine without one.
//
//   nvcc -std=c++17 -arch=sm_90 -Icsrc csrc/cuda/tests/test_cuda_core.cu csrc/cuda/{bits,prg,ring,compare}.cu \
//        csrc/core/*.cpp -o test_cuda_core && ./test_cuda_core
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include <cuda_runtime.h>

#include <pgkernels/bits.h>
#include <pgkernels/compare.h>
#include <pgkernels/prg.h>
#include <pgkernels/ring.h>

// The core tests' harness (csrc/core/tests/check.h), repeated: CHECK counts,
// report prints "<name> tests: N passed, M failed".
static int g_pass = 0, g_fail = 0;
#define CHECK(cond, ...)                               \
  do {                                                 \
    if (cond) {                                        \
      ++g_pass;                                        \
    } else {                                           \
      ++g_fail;                                        \
      std::printf("FAIL %s:%d: ", __FILE__, __LINE__); \
      std::printf(__VA_ARGS__);                        \
      std::printf("\n");                               \
    }                                                  \
  } while (0)

static int report(const char* name) {
  std::printf("%s tests: %d passed, %d failed\n", name, g_pass, g_fail);
  return g_fail == 0 ? 0 : 1;
}
#include "../kernels.h"

using u64 = uint64_t;
using Vec = std::vector<u64>;

static std::mt19937_64 rng(2024);

static Vec rand_words(int64_t n) {
  Vec v(size_t(n > 0 ? n : 0));
  for (auto& w : v) w = rng();
  return v;
}

#define CUDA_OK(expr)                                                                   \
  do {                                                                                  \
    cudaError_t err_ = (expr);                                                          \
    if (err_ != cudaSuccess) {                                                          \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(err_), __FILE__, __LINE__); \
      std::exit(2);                                                                     \
    }                                                                                   \
  } while (0)

// A device copy of a host vector (or zeroed device words).
struct Dev {
  u64* p = nullptr;
  int64_t n = 0;
  explicit Dev(int64_t words) : n(words) {
    CUDA_OK(cudaMalloc(&p, size_t(words > 0 ? words : 1) * 8));
    CUDA_OK(cudaMemset(p, 0, size_t(words > 0 ? words : 1) * 8));
  }
  explicit Dev(const Vec& v) : Dev(int64_t(v.size())) {
    if (!v.empty()) CUDA_OK(cudaMemcpy(p, v.data(), v.size() * 8, cudaMemcpyHostToDevice));
  }
  ~Dev() { cudaFree(p); }
  Dev(const Dev&) = delete;
  Vec get() const {
    CUDA_OK(cudaDeviceSynchronize());
    Vec v(size_t(n > 0 ? n : 0));
    if (n > 0) CUDA_OK(cudaMemcpy(v.data(), p, size_t(n) * 8, cudaMemcpyDeviceToHost));
    return v;
  }
};

static bool same(const Vec& a, const Vec& b, int64_t words) {
  return std::memcmp(a.data(), b.data(), size_t(words) * 8) == 0;
}

static void test_prg() {
  const uint8_t key[16] = {0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6, 0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf, 0x4f, 0x3c};
  const struct { u64 nonce, first; int64_t words; } cases[] = {
      {0, 0, 1}, {7, 3, 2}, {~0ull, ~0ull - 2, 13}, {123, 0, 1000001}, {1, 5, 0}};
  for (const auto& c : cases) {
    Vec cpu(size_t(c.words));
    pgk::prg_fill_u64(key, c.nonce, c.first, cpu.data(), cpu.size());
    Dev d(c.words);
    pgk::cuda::prg_fill(key, c.nonce, c.first, d.p, c.words, 0);
    CHECK(same(cpu, d.get(), c.words), "prg nonce %llu first %llu words %lld", (unsigned long long)c.nonce,
          (unsigned long long)c.first, (long long)c.words);
  }
}

static void test_bits() {
  for (int64_t n : {0, 1, 63, 64, 65, 1000, 100003})
    for (int k : {1, 7, 63, 64}) {
      const Vec vals = rand_words(n);
      const int64_t W = pgk::plane_words(n);
      Vec planes(static_cast<size_t>(k * W)), back(static_cast<size_t>(n));
      pgk::bitslice(vals.data(), n, k, planes.data());
      pgk::unbitslice(planes.data(), n, k, back.data());
      Dev dv(vals), dp(k * W), db(n);
      pgk::cuda::bitslice(dv.p, n, k, dp.p, 0);
      pgk::cuda::unbitslice(dp.p, n, k, db.p, 0);
      CHECK(same(planes, dp.get(), k * W), "bitslice n %lld k %d", (long long)n, k);
      CHECK(same(back, db.get(), n), "unbitslice n %lld k %d", (long long)n, k);
    }
}

static void test_ring() {
  const struct { int64_t m, n, k; } shapes[] = {{0, 3, 4}, {3, 0, 4}, {2, 3, 0}, {1, 1, 1}, {5, 7, 33},
                                                {17, 33, 1000}, {50, 50, 100000}, {130, 70, 257}};
  for (const auto& s : shapes) {
    const Vec A = rand_words(s.m * s.k), B = rand_words(s.n * s.k);
    Vec C(size_t(s.m * s.n));
    const int64_t lda = s.k > 0 ? s.k : 1, ldc = s.n > 0 ? s.n : 1;
    pgk::ring_matmul_nt(s.m, s.n, s.k, A.data(), lda, B.data(), lda, C.data(), ldc);
    Dev dA(A), dB(B), dC(s.m * s.n);
    pgk::cuda::ring_matmul_nt(s.m, s.n, s.k, dA.p, lda, dB.p, lda, dC.p, ldc, 0);
    CHECK(same(C, dC.get(), s.m * s.n), "matmul_nt %lld x %lld x %lld", (long long)s.m, (long long)s.n,
          (long long)s.k);
    for (bool two : {false, true}) {
      const Vec A2 = rand_words(s.m * s.k), B2 = rand_words(s.m * s.k);
      Vec S(size_t(s.m * s.m));
      const int64_t lds = s.m > 0 ? s.m : 1;
      pgk::ring_syr2k(s.m, s.k, A2.data(), lda, two ? B2.data() : nullptr, lda, S.data(), lds);
      Dev dA2(A2), dB2(B2), dS(s.m * s.m), scratch(s.m * s.m);
      pgk::cuda::ring_syr2k(s.m, s.k, dA2.p, lda, two ? dB2.p : nullptr, lda, dS.p, lds, scratch.p, 0);
      CHECK(same(S, dS.get(), s.m * s.m), "syr2k%s %lld x %lld", two ? "(b)" : "", (long long)s.m, (long long)s.k);
    }
  }
}

// Every round of one comparison spec, CPU vs GPU, for `parties` dealer inputs.
static void test_compare_spec(const pgk::CmpSpec& s, int parties) {
  const pgk::CmpLayout L = pgk::cmp_layout(s);
  const int64_t n = s.n, W = L.W, P = s.payloads;
  std::vector<Vec> mats;
  std::vector<const u64*> hp;
  std::vector<Dev*> dm;
  std::vector<const u64*> dp;
  for (int p = 0; p < parties; ++p) mats.push_back(rand_words(L.total_words));
  for (int p = 0; p < parties; ++p) {
    hp.push_back(mats[p].data());
    dm.push_back(new Dev(mats[p]));
    dp.push_back(dm.back()->p);
  }
  Vec corr(size_t(L.corr_words()));
  pgk::cmp_dealer(s, L, parties, hp.data(), corr.data());
  Dev dcorr(L.corr_words()), dscr(pgk::cuda::cmp_dealer_scratch_words(s, L));
  pgk::cuda::cmp_dealer(s, L, parties, dp.data(), dcorr.p, dscr.p, 0);
  CHECK(same(corr, dcorr.get(), L.corr_words()), "dealer n %lld k %d mode %d P %d self %d parties %d", (long long)n,
        s.k, s.mode, s.payloads, s.self_sign, parties);
  Vec mat = mats[0];
  std::copy(corr.begin(), corr.end(), mat.begin() + L.stream_words);
  Dev dmat(mat);
  for (bool rank0 : {true, false}) {
    const Vec x = rand_words(n), v = rand_words(P * n);
    Vec out(size_t(pgk::cmp_open1_words(s))), zout(size_t(s.mode == pgk::kCmpMUX ? W : 0));
    pgk::cmp_open1(s, L, x.data(), P ? v.data() : nullptr, mat.data(), rank0, out.data(), zout.data());
    Dev dx(x), dv(v), dout(int64_t(out.size())), dz(int64_t(zout.size()));
    pgk::cuda::cmp_open1(s, L, dx.p, dv.p, dmat.p, rank0, dout.p, dz.p, 0);
    CHECK(same(out, dout.get(), int64_t(out.size())) && same(zout, dz.get(), int64_t(zout.size())),
          "open1 n %lld k %d mode %d", (long long)n, s.k, s.mode);
    if (s.mode != pgk::kCmpMUX) {
      const Vec c = rand_words(n);
      Vec state(size_t(L.state_words())), open(size_t(L.open_words(0)));
      pgk::cmp_start(s, L, c.data(), mat.data(), rank0, !rank0, state.data(), open.data());
      Dev dc(c), dstate(L.state_words()), dopen(L.open_words(0)), dscratch(pgk::cuda::cmp_start_scratch_words(s, L));
      pgk::cuda::cmp_start(s, L, dc.p, dmat.p, rank0, !rank0, dstate.p, dopen.p, dscratch.p, 0);
      CHECK(same(state, dstate.get(), L.state_words()) && same(open, dopen.get(), L.open_words(0)),
            "start n %lld k %d mode %d", (long long)n, s.k, s.mode);
      for (int level = 0; level < L.levels; ++level) {
        const Vec opened = rand_words(L.open_words(level));
        Vec next(size_t(L.open_words(level + 1)));
        pgk::cmp_step(s, L, level, opened.data(), mat.data(), rank0, state.data(), next.data());
        Dev dopened(opened), dnext(L.open_words(level + 1));
        pgk::cuda::cmp_step(s, L, level, dopened.p, dmat.p, rank0, dstate.p, dnext.p, 0);
        CHECK(same(state, dstate.get(), L.state_words()) && same(next, dnext.get(), L.open_words(level + 1)),
              "step %d n %lld k %d mode %d", level, (long long)n, s.k, s.mode);
      }
    }
    const Vec z = rand_words(W), e = rand_words(P * n);
    Vec fin(size_t(P ? P * n : n));
    pgk::cmp_finish(s, L, z.data(), mat.data(), rank0, P ? v.data() : nullptr, P ? e.data() : nullptr, fin.data());
    Dev dzz(z), de(e), dfin(int64_t(fin.size()));
    pgk::cuda::cmp_finish(s, L, dzz.p, dmat.p, rank0, dv.p, de.p, dfin.p, 0);
    CHECK(same(fin, dfin.get(), int64_t(fin.size())), "finish n %lld k %d mode %d", (long long)n, s.k, s.mode);
  }
  for (Dev* d : dm) delete d;
}

static void test_compare() {
  for (int64_t n : {1, 63, 64, 65, 1000, 100003})
    for (int parties : {2, 3}) {
      test_compare_spec({n, 64, pgk::kCmpLT, 0, 0}, parties);
      test_compare_spec({n, 64, pgk::kCmpLT, 2, 1}, parties);
      test_compare_spec({n, 64, pgk::kCmpEQ, 1, -1}, parties);
      test_compare_spec({n, 2, pgk::kCmpLT, 0, 0}, parties);
      test_compare_spec({n, 5, pgk::kCmpEQ, 0, 0}, parties);
      test_compare_spec({n, 20, pgk::kCmpLT, 3, 0}, parties);
      test_compare_spec({n, 64, pgk::kCmpMUX, 2, 0}, parties);
    }
}

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("cuda_core: no CUDA device visible, skipped\n");
    return 77;
  }
  test_prg();
  test_bits();
  test_ring();
  test_compare();
  return report("cuda_core");
}
