// Self-contained tests for pgkernels/prg.h (csrc/core/prg.cpp). Exit status is non-zero on failure.
#include <pgkernels/prg.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <vector>

namespace {

int g_passed = 0;
int g_failed = 0;

#define CHECK(cond)                                                      \
  do {                                                                   \
    if (cond) {                                                          \
      ++g_passed;                                                        \
    } else {                                                             \
      ++g_failed;                                                        \
      std::fprintf(stderr, "CHECK failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
    }                                                                    \
  } while (0)

uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void random_key(uint64_t& s, uint8_t key[16]) {
  const uint64_t a = splitmix64(s), b = splitmix64(s);
  std::memcpy(key, &a, 8);
  std::memcpy(key + 8, &b, 8);
}

void hex_to_bytes(const char* hex, uint8_t* out, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    unsigned v = 0;
    std::sscanf(hex + 2 * i, "%2x", &v);
    out[i] = static_cast<uint8_t>(v);
  }
}

void test_known_answers() {
  struct Kat {
    const char *key, *pt, *ct;
  };
  const Kat kats[] = {
      // FIPS-197 Appendix C.1.
      {"000102030405060708090a0b0c0d0e0f", "00112233445566778899aabbccddeeff", "69c4e0d86a7b0430d8cdb78070b4c55a"},
      // NIST SP 800-38A F.1.1 (ECB-AES128, block 1).
      {"2b7e151628aed2a6abf7158809cf4f3c", "6bc1bee22e409f96e93d7e117393172a", "3ad77bb40d7a3660a89ecaf32466ef97"},
      // FIPS-197 Appendix B.
      {"2b7e151628aed2a6abf7158809cf4f3c", "3243f6a8885a308d313198a2e0370734", "3925841d02dc09fbdc118597196a0b32"},
  };
  for (const Kat& k : kats) {
    uint8_t key[16], pt[16], ct[16], out[16];
    hex_to_bytes(k.key, key, 16);
    hex_to_bytes(k.pt, pt, 16);
    hex_to_bytes(k.ct, ct, 16);
    pgk::aes128_encrypt_block_portable(key, pt, out);
    CHECK(std::memcmp(out, ct, 16) == 0);
    std::memset(out, 0, 16);
    const bool ran = pgk::aes128_encrypt_block_aesni(key, pt, out);
    CHECK(ran == pgk::aesni_available());
    if (ran) CHECK(std::memcmp(out, ct, 16) == 0);
  }
}

// Pins the stream definition: block i = AES_key(LE64(nonce) || LE64(i)).
void test_stream_definition() {
  uint64_t s = 42;
  for (int t = 0; t < 20; ++t) {
    uint8_t key[16];
    random_key(s, key);
    const uint64_t nonce = splitmix64(s);
    const uint64_t i = (t == 0) ? 0 : (t == 1) ? ~0ULL : splitmix64(s);
    uint8_t in[16], expect[16], got[16], got_p[16];
    for (int b = 0; b < 8; ++b) {
      in[b] = static_cast<uint8_t>(nonce >> (8 * b));
      in[8 + b] = static_cast<uint8_t>(i >> (8 * b));
    }
    pgk::aes128_encrypt_block_portable(key, in, expect);
    pgk::aes128_ctr(key, nonce, i, got, 16);
    pgk::aes128_ctr_portable(key, nonce, i, got_p, 16);
    CHECK(std::memcmp(got, expect, 16) == 0);
    CHECK(std::memcmp(got_p, expect, 16) == 0);
  }
  // Counter wraps mod 2^64: block after ~0 is block 0.
  uint8_t key[16] = {1, 2, 3};
  uint8_t two[32], zero[16];
  pgk::aes128_ctr(key, 7, ~0ULL, two, 32);
  pgk::aes128_ctr(key, 7, 0, zero, 16);
  CHECK(std::memcmp(two + 16, zero, 16) == 0);
}

// AES-NI vs portable, including lengths that are 0 or not a multiple of 16,
// and a guard region to catch writes past nbytes.
void test_aesni_matches_portable() {
  if (!pgk::aesni_available()) {
    std::printf("AES-NI not available: cross-check skipped\n");
    return;
  }
  const size_t lens[] = {0, 1, 7, 8, 15, 16, 17, 31, 32, 33, 100, 127, 128, 129, 143, 144, 255, 256, 257, 1000, 4103, 65536 + 5};
  const uint64_t firsts[] = {0, 1, 5, 8, 1000, ~0ULL - 3, ~0ULL};
  const size_t guard = 32;
  uint64_t s = 1234;
  for (size_t len : lens) {
    for (uint64_t first : firsts) {
      uint8_t key[16];
      random_key(s, key);
      const uint64_t nonce = (first == 5) ? ~0ULL : splitmix64(s);
      std::vector<uint8_t> a(len + guard, 0xa5), p(len + guard, 0xa5);
      pgk::aes128_ctr(key, nonce, first, a.data(), len);
      pgk::aes128_ctr_portable(key, nonce, first, p.data(), len);
      CHECK(a == p);
      bool guard_ok = true;
      for (size_t g = len; g < len + guard; ++g) guard_ok &= (a[g] == 0xa5 && p[g] == 0xa5);
      CHECK(guard_ok);
    }
  }
}

// Random access: starting at block b must equal the suffix of the stream from block 0.
void test_random_access() {
  uint8_t key[16];
  uint64_t s = 99;
  random_key(s, key);
  const uint64_t nonce = splitmix64(s);
  const size_t total_blocks = 300;
  std::vector<uint8_t> full(16 * total_blocks), full_p(16 * total_blocks);
  pgk::aes128_ctr(key, nonce, 0, full.data(), full.size());
  pgk::aes128_ctr_portable(key, nonce, 0, full_p.data(), full_p.size());
  CHECK(full == full_p);
  const size_t starts[] = {0, 1, 2, 7, 8, 9, 15, 16, 17, 100, 255, 299};
  const size_t lens[] = {0, 5, 16, 100, 128, 1000};
  for (size_t b : starts) {
    for (size_t len : lens) {
      if (16 * b + len > full.size()) continue;
      std::vector<uint8_t> part(len), part_p(len);
      pgk::aes128_ctr(key, nonce, b, part.data(), len);
      pgk::aes128_ctr_portable(key, nonce, b, part_p.data(), len);
      CHECK(len == 0 || std::memcmp(part.data(), full.data() + 16 * b, len) == 0);
      CHECK(len == 0 || std::memcmp(part_p.data(), full.data() + 16 * b, len) == 0);
    }
  }
  // prg_fill_u64 is the same bytes viewed as little-endian words.
  std::vector<uint64_t> words(20);
  pgk::prg_fill_u64(key, nonce, 3, words.data(), words.size());
  CHECK(std::memcmp(words.data(), full.data() + 48, words.size() * 8) == 0);
}

double throughput_mbs(void (*fn)(const uint8_t*, uint64_t, uint64_t, void*, size_t), std::vector<uint8_t>& buf) {
  const uint8_t key[16] = {0x42};
  fn(key, 1, 0, buf.data(), buf.size());  // warm-up (page faults, caches)
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    fn(key, 1, 0, buf.data(), buf.size());
    const auto t1 = std::chrono::steady_clock::now();
    const double sec = std::chrono::duration<double>(t1 - t0).count();
    if (sec < best) best = sec;
  }
  return static_cast<double>(buf.size()) / best / 1e6;
}

void report_throughput() {
  std::vector<uint8_t> buf(64u << 20);
  if (pgk::aesni_available()) {
    std::printf("throughput (64 MiB, best of 3): AES-NI   %8.1f MB/s\n", throughput_mbs(&pgk::aes128_ctr, buf));
  }
  std::printf("throughput (64 MiB, best of 3): portable %8.1f MB/s\n",
              throughput_mbs(&pgk::aes128_ctr_portable, buf));
}

}  // namespace

int main() {
  std::printf("AES-NI available: %s\n", pgk::aesni_available() ? "yes" : "no");
  test_known_answers();
  test_stream_definition();
  test_aesni_matches_portable();
  test_random_access();
  report_throughput();
  std::printf("prg tests: %d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
