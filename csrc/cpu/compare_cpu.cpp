// CPU implementations of the comparison ops over int64 share tensors
// (<pgkernels/compare.h>).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <pgkernels/compare.h>

#include "cmp_spec.h"
#include "tensor_words.h"

namespace {

using pgk_aten::check_words;
using pgk_aten::rd;
using pgk_aten::words;
using pgk_aten::wr;

pgk::CmpSpec spec(int64_t n, int64_t k, int64_t mode, int64_t payloads, int64_t self_sign) {
  return pgk_aten::checked_spec(n, k, mode, payloads, self_sign);
}

std::tuple<at::Tensor, at::Tensor> cmp_open1_cpu(const at::Tensor& x, const at::Tensor& v, const at::Tensor& mat,
                                                 int64_t k, int64_t mode, int64_t payloads, bool rank0, int64_t self_sign) {
  check_words(x, "x");
  const int64_t n = x.numel();
  const pgk::CmpSpec s = spec(n, k, mode, payloads, self_sign);
  const pgk::CmpLayout L = pgk::cmp_layout(s);
  check_words(mat, "mat", L.total_words);
  if (payloads) check_words(v, "v", payloads * n);
  at::Tensor out = words(pgk::cmp_open1_words(s));
  at::Tensor zout = words(mode == pgk::kCmpMUX ? L.W : 0);
  pgk::cmp_open1(s, L, rd(x), payloads ? rd(v) : nullptr, rd(mat), rank0, wr(out), wr(zout));
  return {out, zout};
}

std::tuple<at::Tensor, at::Tensor> cmp_start_cpu(const at::Tensor& c, const at::Tensor& mat, int64_t k,
                                                 int64_t mode, int64_t payloads, bool rank0, bool negate, int64_t self_sign) {
  check_words(c, "c");
  const pgk::CmpSpec s = spec(c.numel(), k, mode, payloads, self_sign);
  TORCH_CHECK(mode != pgk::kCmpMUX, "cmp_start: MUX has no comparison tree");
  const pgk::CmpLayout L = pgk::cmp_layout(s);
  check_words(mat, "mat", L.total_words);
  at::Tensor state = words(L.state_words());
  at::Tensor open = words(L.open_words(0));
  pgk::cmp_start(s, L, rd(c), rd(mat), rank0, negate, wr(state), wr(open));
  return {state, open};
}

at::Tensor cmp_step_cpu(const at::Tensor& opened, const at::Tensor& mat, at::Tensor state, int64_t n, int64_t k,
                        int64_t mode, int64_t payloads, bool rank0, int64_t level, int64_t self_sign) {
  const pgk::CmpSpec s = spec(n, k, mode, payloads, self_sign);
  const pgk::CmpLayout L = pgk::cmp_layout(s);
  TORCH_CHECK(level >= 0 && level < L.levels, "cmp_step: level ", level, " out of range [0, ", L.levels, ")");
  check_words(opened, "opened", L.open_words(int(level)));
  check_words(mat, "mat", L.total_words);
  check_words(state, "state", L.state_words());
  at::Tensor open = words(L.open_words(int(level) + 1));
  pgk::cmp_step(s, L, int(level), rd(opened), rd(mat), rank0, wr(state), wr(open));
  return open;
}

at::Tensor cmp_finish_cpu(const at::Tensor& z, const at::Tensor& mat, const at::Tensor& v, const at::Tensor& e,
                          int64_t n, int64_t k, int64_t mode, int64_t payloads, bool rank0, int64_t self_sign) {
  const pgk::CmpSpec s = spec(n, k, mode, payloads, self_sign);
  const pgk::CmpLayout L = pgk::cmp_layout(s);
  check_words(z, "z", L.W);
  check_words(mat, "mat", L.total_words);
  if (payloads) {
    check_words(v, "v", payloads * n);
    check_words(e, "e", payloads * n);
  }
  at::Tensor out = words(payloads ? payloads * n : n);
  pgk::cmp_finish(s, L, rd(z), rd(mat), rank0, payloads ? rd(v) : nullptr, payloads ? rd(e) : nullptr, wr(out));
  return out;
}

void cmp_dealer__cpu(at::Tensor corr, at::TensorList mats, int64_t n, int64_t k, int64_t mode, int64_t payloads,
                    int64_t self_sign) {
  TORCH_CHECK(mats.size() >= 2, "cmp_dealer: need the material of at least 2 parties");
  const pgk::CmpSpec s = spec(n, k, mode, payloads, self_sign);
  const pgk::CmpLayout L = pgk::cmp_layout(s);
  std::vector<const uint64_t*> ptrs;
  for (size_t i = 0; i < mats.size(); ++i) {
    // the corrected party's (mats[0]) corrected segment is never read: its stream segment is enough
    check_words(mats[i], "mats[i]", i == 0 ? L.stream_words : L.total_words);
    ptrs.push_back(rd(mats[i]));
  }
  check_words(corr, "corr", L.corr_words());
  pgk::cmp_dealer(s, L, int(mats.size()), ptrs.data(), wr(corr));
}

}  // namespace

TORCH_LIBRARY_IMPL(pgkernels, CPU, m) {
  m.impl("cmp_open1", &cmp_open1_cpu);
  m.impl("cmp_start", &cmp_start_cpu);
  m.impl("cmp_step", &cmp_step_cpu);
  m.impl("cmp_finish", &cmp_finish_cpu);
  m.impl("cmp_dealer_", &cmp_dealer__cpu);
}
