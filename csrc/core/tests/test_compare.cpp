// Simulates every party of the comparison protocol in one process and checks
// the opened result against plaintext.
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include <pgkernels/bits.h>
#include <pgkernels/compare.h>

#include "check.h"

using u64 = uint64_t;

static std::mt19937_64 rng(12345);

// Runs the protocol on plaintext inputs x (and v for inject); returns the
// reconstructed arithmetic output.
static std::vector<u64> run(const pgk::CmpSpec& s, int parties, const std::vector<u64>& x,
                            const std::vector<u64>& v, bool negate) {
  const pgk::CmpLayout L = pgk::cmp_layout(s);
  const int64_t n = s.n, W = L.W;
  std::vector<std::vector<u64>> mat(parties, std::vector<u64>(L.total_words));
  for (auto& m : mat)
    for (auto& w : m) w = rng();
  std::vector<const u64*> ptrs;
  for (auto& m : mat) ptrs.push_back(m.data());
  std::vector<u64> corr(L.corr_words());
  pgk::cmp_dealer(s, L, parties, ptrs.data(), corr.data());
  std::copy(corr.begin(), corr.end(), mat[0].begin() + L.stream_words);

  // secret-share x and v (payload-major, P x n) additively
  const int64_t nv = int64_t(v.size());
  std::vector<std::vector<u64>> xs(parties, std::vector<u64>(n)), vs(parties, std::vector<u64>(nv));
  for (int64_t i = 0; i < n; ++i) {
    u64 ax = x[i];
    for (int p = 1; p < parties; ++p) {
      xs[p][i] = rng();
      ax -= xs[p][i];
    }
    xs[0][i] = ax;
  }
  for (int64_t i = 0; i < nv; ++i) {
    u64 av = v[i];
    for (int p = 1; p < parties; ++p) {
      vs[p][i] = rng();
      av -= vs[p][i];
    }
    vs[0][i] = av;
  }
  if (s.mode == pgk::kCmpMUX) {  // x holds an arithmetic 0/1 bit
    for (int64_t i = 0; i < n; ++i) {
      u64 acc = x[i] & 1;
      for (int p = 1; p < parties; ++p) {
        xs[p][i] = rng();
        acc -= xs[p][i];
      }
      xs[0][i] = acc;
    }
  }
  const int64_t w1 = pgk::cmp_open1_words(s);
  std::vector<u64> open1(w1, 0), zsum(W, 0);
  for (int p = 0; p < parties; ++p) {
    std::vector<u64> o(w1), z(W);
    pgk::cmp_open1(s, L, xs[p].data(), vs[p].data(), mat[p].data(), p == 0, o.data(), z.data());
    for (int64_t i = 0; i < w1; ++i) open1[i] += o[i];
    for (int64_t i = 0; i < W; ++i) zsum[i] ^= z[i];
  }
  std::vector<u64> zfinal;
  std::vector<u64> e;
  if (s.mode == pgk::kCmpMUX) {
    zfinal = zsum;
    e.assign(open1.begin(), open1.end());
  } else {
    if (s.payloads) {
      if (s.self_sign != 0) {  // row 0 follows from c: self_sign * (c - offset)
        const u64 off = s.mode == pgk::kCmpLT ? (1ull << 63) : 0;
        for (int64_t i = 0; i < n; ++i) e.push_back(u64(int64_t(s.self_sign)) * (open1[i] - off));
      }
      e.insert(e.end(), open1.begin() + n, open1.end());
    }
    std::vector<std::vector<u64>> state(parties, std::vector<u64>(L.state_words()));
    std::vector<u64> opened(L.open_words(0), 0);
    for (int p = 0; p < parties; ++p) {
      std::vector<u64> o(L.open_words(0));
      pgk::cmp_start(s, L, open1.data(), mat[p].data(), p == 0, negate, state[p].data(), o.data());
      for (size_t i = 0; i < o.size(); ++i) opened[i] ^= o[i];
    }
    for (int l = 0; l < L.levels; ++l) {
      std::vector<u64> next(L.open_words(l + 1), 0);
      for (int p = 0; p < parties; ++p) {
        std::vector<u64> o(L.open_words(l + 1));
        pgk::cmp_step(s, L, l, opened.data(), mat[p].data(), p == 0, state[p].data(), o.data());
        for (size_t i = 0; i < o.size(); ++i) next[i] ^= o[i];
      }
      opened.swap(next);
    }
    zfinal = opened;
  }
  const int64_t nout = s.payloads ? int64_t(s.payloads) * n : n;
  std::vector<u64> out(nout, 0);
  for (int p = 0; p < parties; ++p) {
    std::vector<u64> o(nout);
    pgk::cmp_finish(s, L, zfinal.data(), mat[p].data(), p == 0, vs[p].data(), e.data(), o.data());
    for (int64_t i = 0; i < nout; ++i) out[i] += o[i];
  }
  return out;
}

static std::vector<u64> sample(int64_t n, int k) {
  std::vector<u64> x(n);
  const u64 half = k >= 64 ? (1ull << 63) : (1ull << (k - 1));
  const u64 edges[] = {0, 1, ~0ull, half - 1, u64(0) - half, 2, u64(-2), 12345, u64(-12345)};
  for (int64_t i = 0; i < n; ++i) {
    if (i < 9) {
      x[i] = edges[i];
    } else {
      u64 r = rng();
      if (k < 64) {  // bounded: sign-extend a k-bit value
        r &= (1ull << k) - 1;
        if (r & half) r |= ~((1ull << k) - 1);
      }
      x[i] = (i % 7 == 0) ? x[i - 1] : r;
    }
  }
  return x;
}

static bool in_range(u64 x, int k) {
  if (k >= 64) return true;
  const int64_t v = int64_t(x), lim = int64_t(1) << (k - 1);
  return v >= -lim && v < lim;
}

int main() {
  const int64_t sizes[] = {0, 1, 9, 63, 64, 65, 200};
  const int ks[] = {2, 3, 5, 6, 17, 32, 63, 64};
  for (int parties : {2, 3}) {
    for (int64_t n : sizes) {
      for (int k : ks) {
        std::vector<u64> x = sample(n, k);
        // LT: ltz (negate) and x >= 0
        for (bool negate : {true, false}) {
          pgk::CmpSpec s{n, k, pgk::kCmpLT, 0};
          auto out = run(s, parties, x, {}, negate);
          for (int64_t i = 0; i < n; ++i) {
            if (!in_range(x[i], k)) continue;
            const u64 want = (int64_t(x[i]) < 0) == negate ? 1 : 0;
            CHECK(out[i] == want, "lt p=%d n=%ld k=%d i=%ld x=%ld got %lu", parties, long(n), k,
                  long(i), long(int64_t(x[i])), (unsigned long)out[i]);
          }
        }
        // EQ with ties
        {
          std::vector<u64> xe = x;
          for (int64_t i = 0; i < n; i += 3) xe[i] = 0;
          pgk::CmpSpec s{n, k, pgk::kCmpEQ, 0};
          auto out = run(s, parties, xe, {}, false);
          for (int64_t i = 0; i < n; ++i) {
            if (!in_range(xe[i], k)) continue;
            CHECK(out[i] == (xe[i] == 0 ? 1u : 0u), "eq p=%d n=%ld k=%d i=%ld", parties, long(n),
                  k, long(i));
          }
        }
        // relu-style inject: (x >= 0) * x
        {
          pgk::CmpSpec s{n, k, pgk::kCmpLT, 1};
          auto out = run(s, parties, x, x, false);
          for (int64_t i = 0; i < n; ++i) {
            if (!in_range(x[i], k)) continue;
            const u64 want = int64_t(x[i]) >= 0 ? x[i] : 0;
            CHECK(out[i] == want, "relu p=%d n=%ld k=%d i=%ld", parties, long(n), k, long(i));
          }
        }
      }
      // several payloads: [x == 0] * (v0, v1, v2) and [x >= 0] * (x, -x)
      {
        std::vector<u64> x = sample(n, 64), v(3 * n);
        for (int64_t i = 0; i < n; i += 2) x[i] = 0;
        for (auto& w : v) w = rng();
        pgk::CmpSpec s{n, 64, pgk::kCmpEQ, 3};
        auto out = run(s, parties, x, v, false);
        for (int p = 0; p < 3; ++p)
          for (int64_t i = 0; i < n; ++i)
            CHECK(out[p * n + i] == (x[i] == 0 ? v[p * n + i] : 0), "eq-payload p=%d n=%ld", parties,
                  long(n));
        std::vector<u64> v2(2 * n);
        for (int64_t i = 0; i < n; ++i) {
          v2[i] = x[i];
          v2[n + i] = u64(0) - x[i];
        }
        pgk::CmpSpec s2{n, 64, pgk::kCmpLT, 2};
        auto out2 = run(s2, parties, x, v2, false);
        for (int64_t i = 0; i < n; ++i) {
          const bool b = int64_t(x[i]) >= 0;
          CHECK(out2[i] == (b ? x[i] : 0) && out2[n + i] == (b ? u64(0) - x[i] : 0), "lt-payload");
        }
      }
      // self payloads: relu as [x >= 0] * x with no extra opening, and a
      // compare-exchange [b - a < 0] * (a - b) with a second payload
      {
        std::vector<u64> x = sample(n, 64), v(2 * n);
        for (int64_t i = 0; i < n; ++i) {
          v[i] = x[i];
          v[n + i] = rng();
        }
        pgk::CmpSpec s{n, 64, pgk::kCmpLT, 2, 1};
        auto out = run(s, parties, x, v, false);
        for (int64_t i = 0; i < n; ++i) {
          const bool b = int64_t(x[i]) >= 0;
          CHECK(out[i] == (b ? x[i] : 0) && out[n + i] == (b ? v[n + i] : 0), "self+1 p=%d", parties);
        }
        std::vector<u64> neg(n);
        for (int64_t i = 0; i < n; ++i) neg[i] = u64(0) - x[i];
        pgk::CmpSpec s2{n, 64, pgk::kCmpLT, 1, -1};
        auto out2 = run(s2, parties, x, neg, true);
        for (int64_t i = 0; i < n; ++i)
          CHECK(out2[i] == (int64_t(x[i]) < 0 ? neg[i] : 0), "self-1 p=%d", parties);
        pgk::CmpSpec s3{n, 64, pgk::kCmpEQ, 1, 1};
        std::vector<u64> xe = x;
        for (int64_t i = 0; i < n; i += 2) xe[i] = 0;
        auto out3 = run(s3, parties, xe, xe, true);  // [x != 0] * x == x
        for (int64_t i = 0; i < n; ++i) CHECK(out3[i] == xe[i], "self eq p=%d", parties);
      }
      // MUX: bit * v
      {
        std::vector<u64> b(n), v(n);
        for (int64_t i = 0; i < n; ++i) {
          b[i] = rng() & 1;
          v[i] = rng();
        }
        pgk::CmpSpec s{n, 64, pgk::kCmpMUX, 1};
        auto out = run(s, parties, b, v, false);
        for (int64_t i = 0; i < n; ++i)
          CHECK(out[i] == (b[i] ? v[i] : 0), "mux p=%d n=%ld i=%ld", parties, long(n), long(i));
      }
    }
  }
  // bitslice round trip
  {
    std::vector<u64> x = sample(130, 64), back(130);
    std::vector<u64> planes(64 * pgk::plane_words(130));
    pgk::bitslice(x.data(), 130, 64, planes.data());
    pgk::unbitslice(planes.data(), 130, 64, back.data());
    CHECK(back == x, "bitslice round trip");
    CHECK(((planes[5 * 3 + 1] >> 2) & 1) == ((x[66] >> 5) & 1), "bitslice orientation");
  }
  return report("compare");
}
