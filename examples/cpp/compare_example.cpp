// Using the pgkernels C++ core from other MPC code, without Python.
//
// Computes shares of [x < 0] for a few fixed-point values with the
// dealer-assisted secure comparison, simulating the dealer and 2 parties in one
// process. Every place where a real deployment would move words over the
// network is marked "NETWORK".
//
// Setup assumed by the protocol:
//   * the dealer shares a 16-byte AES key with each party (key[p]); both sides
//     expand it with the same AES-128-CTR stream, so most of a party's
//     correlated randomness ("material") never has to be sent;
//   * each comparison request has a number that both sides use as the stream
//     nonce, so every request gets fresh randomness from the same key;
//   * only party 0 receives a "corrected" segment from the dealer.
//
// Build (after `cmake --install`):  see examples/cpp/CMakeLists.txt.
#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include <pgkernels/compare.h>
#include <pgkernels/prg.h>
#include <pgkernels/version.h>

using u64 = uint64_t;

namespace {

constexpr int kParties = 2;
constexpr int kFracBits = 16;  // fixed-point encoding: x = round(value * 2^16) mod 2^64

// Demo keys only. In a deployment key[p] comes from a key exchange between the
// dealer and party p and is never known to the other parties.
void demo_key(int party, uint8_t key[16]) {
  for (int i = 0; i < 16; ++i) key[i] = uint8_t(0x10 * (party + 1) + i);
}

u64 encode(double v) { return u64(int64_t(std::llround(v * double(1 << kFracBits)))); }

}  // namespace

int main() {
  std::printf("pgkernels %s\n", PGKERNELS_VERSION);
  const std::vector<double> values = {-3.5, -0.25, -1.0 / 65536, 0.0, 1.0 / 65536, 0.25, 2.75,
                                      -1000.0, 1000.0, -123456.789, 123456.789};
  const size_t n = values.size();

  // One comparison of n elements over the full 64-bit ring; LT mode with
  // negate = true gives [x < 0].
  const pgk::CmpSpec spec{int64_t(n), /*k=*/64, pgk::kCmpLT, /*payloads=*/0};
  const bool negate = true;
  const pgk::CmpLayout L = pgk::cmp_layout(spec);
  const u64 request = 1;  // request number = PRG nonce; must never repeat for a key

  uint8_t key[kParties][16];
  for (int p = 0; p < kParties; ++p) demo_key(p, key[p]);

  // ---------------------------------------------------------------- dealer
  // The dealer expands every party's stream over the whole buffer, then
  // computes party 0's corrected segment from all of them.
  std::vector<u64> corr(L.corr_words());
  {
    std::vector<std::vector<u64>> dmat(kParties, std::vector<u64>(L.total_words));
    std::vector<const u64*> ptrs;
    for (int p = 0; p < kParties; ++p) {
      pgk::prg_fill_u64(key[p], request, 0, dmat[p].data(), dmat[p].size());
      ptrs.push_back(dmat[p].data());
    }
    pgk::cmp_dealer(spec, L, kParties, ptrs.data(), corr.data());
  }
  // NETWORK: dealer -> party 0: corr (L.corr_words() words). Nothing is sent
  // to the other parties; they regenerate their material from the key.

  // --------------------------------------------------------------- parties
  // Each party rebuilds its own material from its stream.
  std::vector<std::vector<u64>> mat(kParties, std::vector<u64>(L.total_words));
  for (int p = 0; p < kParties; ++p) {
    if (p == 0) {
      pgk::prg_fill_u64(key[0], request, 0, mat[0].data(), size_t(L.stream_words));
      std::copy(corr.begin(), corr.end(), mat[0].begin() + L.stream_words);
    } else {
      pgk::prg_fill_u64(key[p], request, 0, mat[p].data(), mat[p].size());
    }
  }

  // Additive shares of the inputs, x = sum_p xs[p] mod 2^64. Here an input
  // owner splits the plaintext using its own stream; in a real application
  // the shares come out of earlier MPC computation.
  std::vector<std::vector<u64>> xs(kParties, std::vector<u64>(n));
  {
    const uint8_t owner_key[16] = {0xa5, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    for (int p = 1; p < kParties; ++p)
      pgk::prg_fill_u64(owner_key, u64(p), 0, xs[p].data(), n);
    for (size_t i = 0; i < n; ++i) {
      u64 acc = encode(values[i]);
      for (int p = 1; p < kParties; ++p) acc -= xs[p][i];
      xs[0][i] = acc;
    }
  }

  // Round 1: open c = x + r + 2^(k-1) (a sum of the parties' words).
  const size_t w1 = size_t(pgk::cmp_open1_words(spec));
  const size_t W = size_t(L.W);  // words per bit plane (64 elements per word)
  std::vector<u64> c(w1, 0);
  for (int p = 0; p < kParties; ++p) {
    std::vector<u64> out(w1), zout(W);  // zout is only used in MUX mode
    pgk::cmp_open1(spec, L, xs[p].data(), /*v=*/nullptr, mat[p].data(), p == 0, out.data(),
                   zout.data());
    // NETWORK: broadcast `out`; every party sums what it receives (mod 2^64).
    for (size_t i = 0; i < w1; ++i) c[i] += out[i];
  }

  // Round 2: leaves of the comparison tree, then one round per tree level.
  // Every later open is an XOR of the parties' words.
  std::vector<std::vector<u64>> state(kParties, std::vector<u64>(size_t(L.state_words())));
  std::vector<u64> opened(size_t(L.open_words(0)), 0);
  for (int p = 0; p < kParties; ++p) {
    std::vector<u64> out(opened.size());
    pgk::cmp_start(spec, L, c.data(), mat[p].data(), p == 0, negate, state[p].data(), out.data());
    // NETWORK: broadcast `out`; every party XORs what it receives.
    for (size_t i = 0; i < out.size(); ++i) opened[i] ^= out[i];
  }
  for (int level = 0; level < L.levels; ++level) {
    std::vector<u64> next(size_t(L.open_words(level + 1)), 0);
    for (int p = 0; p < kParties; ++p) {
      std::vector<u64> out(next.size());
      pgk::cmp_step(spec, L, level, opened.data(), mat[p].data(), p == 0, state[p].data(),
                    out.data());
      // NETWORK: broadcast `out`; every party XORs what it receives.
      for (size_t i = 0; i < out.size(); ++i) next[i] ^= out[i];
    }
    opened.swap(next);
  }

  // Local: turn the last opened word planes (W words) into arithmetic shares.
  std::vector<std::vector<u64>> result(kParties, std::vector<u64>(n));
  for (int p = 0; p < kParties; ++p)
    pgk::cmp_finish(spec, L, opened.data(), mat[p].data(), p == 0, /*v=*/nullptr, /*e=*/nullptr,
                    result[p].data());

  // Reconstruct (only for the demo: a real application keeps the shares and
  // continues computing on them) and check against plaintext.
  std::printf("secure [x < 0]: %d parties, k = %d, %d AND levels, %" PRId64 " material words/party\n",
              kParties, spec.k, L.levels, L.total_words);
  std::printf("%14s  %16s  %5s  %5s\n", "x", "fixed-point", "plain", "mpc");
  int mismatches = 0;
  for (size_t i = 0; i < n; ++i) {
    u64 got = 0;
    for (int p = 0; p < kParties; ++p) got += result[p][i];
    const u64 enc = encode(values[i]);
    const u64 want = int64_t(enc) < 0 ? 1 : 0;
    const bool ok = got == want;
    mismatches += ok ? 0 : 1;
    std::printf("%14.6f  %016" PRIx64 "  %5" PRIu64 "  %5" PRIu64 "%s\n", values[i], enc,
                want, got, ok ? "" : "  MISMATCH");
  }
  std::printf("%s: %d of %zu correct\n", mismatches ? "FAILED" : "OK",
              int(n) - mismatches, n);
  return mismatches ? 1 : 0;
}
