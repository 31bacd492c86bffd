// Tests of the DCF and the FSS sign test (<pgkernels/fss.h>): both parties'
// evaluations must add up to offset + beta [x < alpha] for every bit width,
// random and edge inputs, on the AES-NI and the portable path alike.
#include <chrono>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <vector>

#include <pgkernels/fss.h>
#include <pgkernels/prg.h>

#include "check.h"

using u64 = uint64_t;

static std::mt19937_64 rng(2021);

static u64 low(u64 v, int bits) { return bits == 64 ? v : v & ((u64(1) << bits) - 1); }

struct Keys {
  std::vector<u64> seed0, seed1, cw;
};

static Keys gen(int bits, const std::vector<u64>& alpha, const std::vector<u64>* beta, const std::vector<u64>* off,
                pgk::DcfIsa isa) {
  const int64_t n = int64_t(alpha.size());
  Keys k{std::vector<u64>(2 * n), std::vector<u64>(2 * n), std::vector<u64>(n * pgk::dcf_cw_words(bits))};
  for (auto& w : k.seed0) w = rng();
  for (auto& w : k.seed1) w = rng();
  pgk::dcf_gen_isa(isa, bits, n, alpha.data(), beta ? beta->data() : nullptr, off ? off->data() : nullptr, k.seed0.data(),
    k.seed1.data(), k.cw.data());
  return k;
}

static std::vector<u64> eval_sum(int bits, const Keys& k, const std::vector<u64>& x, pgk::DcfIsa isa) {
  const int64_t n = int64_t(x.size());
  std::vector<u64> o0(n), o1(n);
  pgk::dcf_eval_isa(isa, 0, bits, n, x.data(), k.seed0.data(), k.cw.data(), o0.data());
  pgk::dcf_eval_isa(isa, 1, bits, n, x.data(), k.seed1.data(), k.cw.data(), o1.data());
  for (int64_t i = 0; i < n; ++i) o0[i] += o1[i];
  return o0;
}

// For each alpha: x in {0, alpha-1, alpha, alpha+1, 2^bits-1, random}; random alphas plus edges.
static void test_dcf(int bits, pgk::DcfIsa isa) {
  const u64 top = low(~u64(0), bits);
  std::vector<u64> alphas = {0, 1, top, top - 1, low(u64(1) << (bits - 1), bits)};
  for (int i = 0; i < 40; ++i) alphas.push_back(low(rng(), bits));
  std::vector<u64> A, X, B, O;
  for (u64 a : alphas) {
    const u64 xs[] = {0, low(a - 1, bits), a, low(a + 1, bits), top, low(rng(), bits), rng() /* high bits ignored */};
    for (u64 x : xs) {
      A.push_back(a);
      X.push_back(x);
      B.push_back(rng());
      O.push_back(rng());
    }
  }
  // unit beta, no offset: exactly [x < alpha]
  Keys k = gen(bits, A, nullptr, nullptr, isa);
  std::vector<u64> got = eval_sum(bits, k, X, isa);
  int bad = 0;
  for (size_t i = 0; i < A.size(); ++i) bad += got[i] != u64(low(X[i], bits) < A[i]);
  CHECK(bad == 0, "dcf bits=%d isa=%d: %d of %zu wrong (beta 1)", bits, int(isa), bad, A.size());
  // random beta and offset
  k = gen(bits, A, &B, &O, isa);
  got = eval_sum(bits, k, X, isa);
  bad = 0;
  for (size_t i = 0; i < A.size(); ++i) bad += got[i] != O[i] + (low(X[i], bits) < A[i] ? B[i] : 0);
  CHECK(bad == 0, "dcf bits=%d isa=%d: %d of %zu wrong (beta, offset)", bits, int(isa), bad, A.size());
  // a single key's share is not the answer by itself (pseudorandom)
  std::vector<u64> o0(1);
  pgk::dcf_eval(0, bits, 1, X.data(), k.seed0.data(), k.cw.data(), o0.data());
  CHECK(o0[0] != O[0] + (low(X[0], bits) < A[0] ? B[0] : 0), "dcf bits=%d: party 0 alone holds the output", bits);
}

// Every block function gives the same keys and shares, word for word.
static void test_paths_agree() {
  for (pgk::DcfIsa isa : {pgk::kDcfAesni, pgk::kDcfVaes}) {
    if (!pgk::dcf_isa_available(isa)) {
      std::printf("block function %d not available here: not compared\n", int(isa));
      continue;
    }
    for (int bits : {1, 7, 32, 64}) {
      std::vector<u64> A(37), X(37), s0(74), s1(74);
      for (auto& v : A) v = rng();
      for (auto& v : X) v = rng();
      for (auto& v : s0) v = rng();
      for (auto& v : s1) v = rng();
      const int64_t kw = pgk::dcf_cw_words(bits);
      std::vector<u64> c1(37 * kw), c2(37 * kw), o1(37), o2(37);
      pgk::dcf_gen_isa(isa, bits, 37, A.data(), nullptr, nullptr, s0.data(), s1.data(), c1.data());
      pgk::dcf_gen_isa(pgk::kDcfPortable, bits, 37, A.data(), nullptr, nullptr, s0.data(), s1.data(), c2.data());
      CHECK(c1 == c2, "isa=%d bits=%d: keys differ from the portable path", int(isa), bits);
      pgk::dcf_eval_isa(isa, 1, bits, 37, X.data(), s1.data(), c1.data(), o1.data());
      pgk::dcf_eval_isa(pgk::kDcfPortable, 1, bits, 37, X.data(), s1.data(), c1.data(), o2.data());
      CHECK(o1 == o2, "isa=%d bits=%d: shares differ from the portable path", int(isa), bits);
    }
  }
}

// Sign test: open c = x + r mod 2^k, shares of [x < 0] for x a k-bit signed value.
static void test_ltz(int k) {
  const u64 half = u64(1) << (k - 1);
  std::vector<u64> xs = {0, 1, low(~u64(0), k), low(half, k), half - 1, low(half + 1, k), low(half - 2, k)};
  for (int i = 0; i < 300; ++i) xs.push_back(low(rng(), k));
  const int64_t n = int64_t(xs.size()) * 3;
  std::vector<u64> x, r(n), s0(2 * n), s1(2 * n);
  for (u64 v : xs) {
    x.push_back(v);
    x.push_back(v);
    x.push_back(v);
  }
  for (auto& v : r) v = rng();
  // edge masks: r = 0, r = -x (c = 0), r = 2^(k-1)
  for (int64_t i = 0; i + 2 < n; i += 3) {
    r[i] = 0;
    r[i + 1] = 0 - x[i];
    r[i + 2] = half;
  }
  for (auto& v : s0) v = rng();
  for (auto& v : s1) v = rng();
  std::vector<u64> cw(n * pgk::dcf_cw_words(k - 1)), c(n), o0(n), o1(n);
  pgk::fss_ltz_gen(k, n, r.data(), s0.data(), s1.data(), cw.data());
  for (int64_t i = 0; i < n; ++i) c[i] = low(x[i] + r[i], k) | (k < 64 ? (rng() << k) : 0);  // high garbage ignored
  pgk::fss_ltz_eval(0, k, n, c.data(), s0.data(), cw.data(), o0.data());
  pgk::fss_ltz_eval(1, k, n, c.data(), s1.data(), cw.data(), o1.data());
  int bad = 0;
  for (int64_t i = 0; i < n; ++i) bad += o0[i] + o1[i] != u64((x[i] >> (k - 1)) & 1);
  CHECK(bad == 0, "fss_ltz k=%d: %d of %lld wrong", k, bad, (long long)n);
}

static void test_errors() {
  bool threw = false;
  try {
    pgk::dcf_check_bits(0);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw, "bits=0 accepted");
  threw = false;
  try {
    pgk::dcf_check_bits(65);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw, "bits=65 accepted");
  threw = false;
  try {
    u64 z = 0;
    pgk::fss_ltz_eval(0, 1, 0, &z, &z, &z, &z);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw, "ltz k=1 accepted");
  // n = 0 is a no-op
  pgk::dcf_eval(0, 5, 0, nullptr, nullptr, nullptr, nullptr);
  CHECK(pgk::dcf_cw_words(32) == 97 && pgk::dcf_cw_words(63) == 190, "key layout changed");
}

int main() {
  for (int bits = 1; bits <= 64; ++bits) test_dcf(bits, pgk::dcf_best_isa());
  for (pgk::DcfIsa isa : {pgk::kDcfPortable, pgk::kDcfAesni})
    if (pgk::dcf_isa_available(isa))
      for (int bits : {1, 2, 31, 63, 64}) test_dcf(bits, isa);
  test_paths_agree();
  for (int k : {2, 3, 8, 16, 32, 33, 63, 64}) test_ltz(k);
  test_errors();
  return report("fss");
}
