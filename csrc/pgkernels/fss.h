// Function secret sharing for two parties: a distributed comparison function
// (DCF) and the one-round "x < 0" built on it.
//
// DCF (Boyle, Gilboa, Ishai, "FSS: improvements and extensions", CCS 2016; in
// the form of Boyle et al., "FSS for mixed-mode and fixed-point secure
// computation", EUROCRYPT 2021, Fig. 1): for a secret alpha, beta, offset, the
// dealer makes keys k_0, k_1 such that for every public x
//     eval(0, k_0, x) + eval(1, k_1, x) = offset + beta * [x < alpha]  (mod 2^64),
// x and alpha compared as unsigned `bits`-bit integers (their low `bits`
// bits; 1 <= bits <= 64). Each key alone is pseudorandom: it reveals nothing
// about alpha, beta or offset. The offset costs nothing: it is folded into
// the first level's value correction.
//
// Output group Z_2^64 (not one XOR bit) because the comparison result must be
// an arithmetic share that mixes with CrypTen; a 1-bit output would need a
// bit-to-arithmetic conversion, i.e. one more round.
//
// PRG: G(s) = MMO(s), MMO(b) = AES_K(b) ^ b with a fixed public key K (the
// correlation-robust construction of libfss and sycret), three blocks per
// node: MMO(s), MMO(s ^ 1), MMO(s ^ 2) = (left seed | t_L), (right seed |
// t_R), (v_L | v_R). Seeds are 126 bits: their two low bits are cleared and
// carry the control bit (bit 0 of the block) and, in a correction word, the
// two control-bit corrections. Evaluation costs 2 AES blocks per bit,
// generation 6, 8 (eval) or 4 (gen) elements interleaved: on VAES (two
// blocks per instruction) when the CPU has it, else AES-NI, else a portable
// AES; all three give identical bytes.
//
// Key layout. A party's key for one element is its root seed (2 words; in
// the MPC protocol drawn from the party's PRG stream, shared with the dealer
// only) and the correction words common to both keys, dcf_cw_words(bits) =
// 3 bits + 1 words, element-major:
//   [2 l, 2 l + 1]   seed correction of level l (bit 0: t_L correction, bit 1: t_R correction)
//   [2 bits + l]     value correction of level l
//   [3 bits]         final correction
// i.e. 24 bits + 8 bytes (776 bytes at 32 bits, 1520 at 63) plus 16 bytes of
// seed. Levels go from the most significant of the `bits` bits down.
#pragma once
#include <cstddef>
#include <cstdint>

namespace pgk {

inline int64_t dcf_cw_words(int bits) { return 3 * int64_t(bits) + 1; }
constexpr int64_t kDcfSeedWords = 2;

// Throws std::invalid_argument unless 1 <= bits <= 64.
void dcf_check_bits(int bits);

// Dealer: correction words of n keys into cw (n * dcf_cw_words(bits) words).
// alpha, seed0, seed1 (2 words per element) required; beta (default 1) and
// offset (default 0) may be null.
void dcf_gen(int bits, int64_t n, const uint64_t* alpha, const uint64_t* beta, const uint64_t* offset,
             const uint64_t* seed0, const uint64_t* seed1, uint64_t* cw);

// Party `party` (0 or 1): out[i] = its share of f_i(x[i]) for key i (seed[2 i ..],
// cw + i * dcf_cw_words(bits)).
void dcf_eval(int party, int bits, int64_t n, const uint64_t* x, const uint64_t* seed, const uint64_t* cw,
              uint64_t* out);

// Block-function implementations; all give identical keys and shares.
enum DcfIsa : int { kDcfPortable = 0, kDcfAesni = 1, kDcfVaes = 2 };
// The one dcf_gen/dcf_eval use: VAES (AVX2 width) if present, else AES-NI, else portable.
DcfIsa dcf_best_isa();
bool dcf_isa_available(DcfIsa isa);
// As dcf_gen/dcf_eval on a given implementation (tests, benchmarks); throws
// std::invalid_argument if this CPU lacks it.
void dcf_gen_isa(DcfIsa isa, int bits, int64_t n, const uint64_t* alpha, const uint64_t* beta,
                 const uint64_t* offset, const uint64_t* seed0, const uint64_t* seed1, uint64_t* cw);
void dcf_eval_isa(DcfIsa isa, int party, int bits, int64_t n, const uint64_t* x, const uint64_t* seed,
                  const uint64_t* cw, uint64_t* out);

// One-round sign test on k-bit two's complement values (2 <= k <= 64).
//
// The parties hold additive shares of x and of a dealer mask r, open
// c = x + r mod 2^k, and evaluate locally. With m = k - 1, c' = c mod 2^m and
// r' = r mod 2^m,
//     msb_m(x) = c_m ^ r_m ^ [c' < r']     (subtracting r borrows from bit m iff c' < r'),
// exact for every x mod 2^k (for k = 64, every int64 including -2^63 and
// 2^63 - 1). The dealer gives a DCF on m bits with alpha = r', and
// beta = 1 - 2 r_m, offset = r_m, i.e. shares of v = r_m ^ [c' < r']; a party
// outputs v's share if c_m = 0, and (1 - v)'s share (party 0: 1 - share,
// party 1: -share) if c_m = 1. Result: arithmetic shares of [x < 0] (x read
// as a k-bit signed value). Key: dcf_cw_words(k - 1) words per element.
void fss_ltz_gen(int k, int64_t n, const uint64_t* r, const uint64_t* seed0, const uint64_t* seed1, uint64_t* cw);
void fss_ltz_eval(int party, int k, int64_t n, const uint64_t* c, const uint64_t* seed, const uint64_t* cw,
                  uint64_t* out);

}  // namespace pgk
