// CPU implementations of the FSS ops (<pgkernels/fss.h>): the DCF and the
// one-round sign test, split over at::parallel_for chunks of elements (keys
// are independent, so any split gives the same words).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <pgkernels/fss.h>

#include "tensor_words.h"

namespace {

using pgk_aten::check_words;
using pgk_aten::rd;
using pgk_aten::words;
using pgk_aten::wr;

constexpr int64_t kGrain = 2048;  // elements per task: ~1 ms of AES at 64 bits

void check_bits(int64_t bits, const char* name, int64_t lo) {
  TORCH_CHECK(bits >= lo && bits <= 64, name, " must be in [", lo, ", 64], got ", bits);
}

void check_party(int64_t party) { TORCH_CHECK(party == 0 || party == 1, "party must be 0 or 1, got ", party); }

at::Tensor dcf_gen_cpu(const at::Tensor& alpha, const c10::optional<at::Tensor>& beta,
                       const c10::optional<at::Tensor>& offset, const at::Tensor& seed0, const at::Tensor& seed1,
                       int64_t bits) {
  check_bits(bits, "bits", 1);
  check_words(alpha, "alpha");
  const int64_t n = alpha.numel();
  check_words(seed0, "seed0", 2 * n);
  check_words(seed1, "seed1", 2 * n);
  if (beta) check_words(*beta, "beta", n);
  if (offset) check_words(*offset, "offset", n);
  const int64_t kw = pgk::dcf_cw_words(int(bits));
  at::Tensor cw = words(n * kw);
  const uint64_t *a = rd(alpha), *b = beta ? rd(*beta) : nullptr, *o = offset ? rd(*offset) : nullptr;
  const uint64_t *s0 = rd(seed0), *s1 = rd(seed1);
  uint64_t* out = wr(cw);
  at::parallel_for(0, n, kGrain, [&](int64_t lo, int64_t hi) {
    pgk::dcf_gen(int(bits), hi - lo, a + lo, b ? b + lo : nullptr, o ? o + lo : nullptr, s0 + 2 * lo, s1 + 2 * lo,
                 out + lo * kw);
  });
  return cw;
}

at::Tensor dcf_eval_cpu(const at::Tensor& x, const at::Tensor& seed, const at::Tensor& cw, int64_t bits,
                        int64_t party) {
  check_bits(bits, "bits", 1);
  check_party(party);
  check_words(x, "x");
  const int64_t n = x.numel();
  const int64_t kw = pgk::dcf_cw_words(int(bits));
  check_words(seed, "seed", 2 * n);
  check_words(cw, "cw", n * kw);
  at::Tensor out = words(n);
  const uint64_t *xs = rd(x), *s = rd(seed), *k = rd(cw);
  uint64_t* o = wr(out);
  at::parallel_for(0, n, kGrain, [&](int64_t lo, int64_t hi) {
    pgk::dcf_eval(int(party), int(bits), hi - lo, xs + lo, s + 2 * lo, k + lo * kw, o + lo);
  });
  return out;
}

void fss_ltz_gen__cpu(at::Tensor cw, const at::Tensor& r, const at::Tensor& seed0, const at::Tensor& seed1,
                      int64_t k) {
  check_bits(k, "k", 2);
  check_words(r, "r");
  const int64_t n = r.numel();
  const int64_t kw = pgk::dcf_cw_words(int(k - 1));
  check_words(seed0, "seed0", 2 * n);
  check_words(seed1, "seed1", 2 * n);
  check_words(cw, "cw", n * kw);
  const uint64_t *rs = rd(r), *s0 = rd(seed0), *s1 = rd(seed1);
  uint64_t* out = wr(cw);
  at::parallel_for(0, n, kGrain, [&](int64_t lo, int64_t hi) {
    pgk::fss_ltz_gen(int(k), hi - lo, rs + lo, s0 + 2 * lo, s1 + 2 * lo, out + lo * kw);
  });
}

at::Tensor fss_ltz_eval_cpu(const at::Tensor& c, const at::Tensor& seed, const at::Tensor& cw, int64_t k,
                            int64_t party) {
  check_bits(k, "k", 2);
  check_party(party);
  check_words(c, "c");
  const int64_t n = c.numel();
  const int64_t kw = pgk::dcf_cw_words(int(k - 1));
  check_words(seed, "seed", 2 * n);
  check_words(cw, "cw", n * kw);
  at::Tensor out = words(n);
  const uint64_t *cs = rd(c), *s = rd(seed), *key = rd(cw);
  uint64_t* o = wr(out);
  at::parallel_for(0, n, kGrain, [&](int64_t lo, int64_t hi) {
    pgk::fss_ltz_eval(int(party), int(k), hi - lo, cs + lo, s + 2 * lo, key + lo * kw, o + lo);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pgkernels, CPU, m) {
  m.impl("dcf_gen", &dcf_gen_cpu);
  m.impl("dcf_eval", &dcf_eval_cpu);
  m.impl("fss_ltz_gen_", &fss_ltz_gen__cpu);
  m.impl("fss_ltz_eval", &fss_ltz_eval_cpu);
}
