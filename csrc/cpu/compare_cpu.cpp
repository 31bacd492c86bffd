// CPU implementations of the comparison ops over int64 share tensors.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "core/bits.h"
#include "cmp_spec.h"
#include "core/compare.h"
#include "core/prg.h"

namespace {

using u64 = uint64_t;

void check_words(const at::Tensor& t, const char* name, int64_t min_numel = -1) {
  TORCH_CHECK(t.scalar_type() == at::kLong, name, " must be an int64 tensor, got ", t.scalar_type());
  TORCH_CHECK(t.device().is_cpu(), name, " must be on the CPU");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
  if (min_numel >= 0)
    TORCH_CHECK(t.numel() >= min_numel, name, " has ", t.numel(), " words, expected at least ", min_numel);
}

const u64* rd(const at::Tensor& t) { return reinterpret_cast<const u64*>(t.data_ptr<int64_t>()); }
u64* wr(at::Tensor& t) { return reinterpret_cast<u64*>(t.data_ptr<int64_t>()); }

at::Tensor words(int64_t n) { return at::empty({n}, at::TensorOptions().dtype(at::kLong)); }

pgk::CmpSpec spec(int64_t n, int64_t k, int64_t mode, int64_t payloads, int64_t self_sign) {
  return pgk_aten::checked_spec(n, k, mode, payloads, self_sign);
}

void prg_fill_cpu(at::Tensor out, const at::Tensor& key, int64_t nonce, int64_t first_block) {
  check_words(out, "out");
  TORCH_CHECK(key.scalar_type() == at::kByte && key.numel() == 16 && key.is_contiguous(),
              "key must be a contiguous uint8 tensor of 16 bytes");
  pgk::prg_fill_u64(key.data_ptr<uint8_t>(), u64(nonce), u64(first_block), wr(out), size_t(out.numel()));
}

at::Tensor bitslice_cpu(const at::Tensor& values, int64_t k) {
  check_words(values, "values");
  TORCH_CHECK(k >= 1 && k <= 64, "k must be in [1, 64]");
  const int64_t n = values.numel();
  at::Tensor planes = words(k * pgk::plane_words(n));
  pgk::bitslice(rd(values), n, int(k), wr(planes));
  return planes;
}

at::Tensor unbitslice_cpu(const at::Tensor& planes, int64_t n, int64_t k) {
  TORCH_CHECK(k >= 1 && k <= 64, "k must be in [1, 64]");
  check_words(planes, "planes", k * pgk::plane_words(n));
  at::Tensor vals = words(n);
  pgk::unbitslice(rd(planes), n, int(k), wr(vals));
  return vals;
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

void cmp_dealer_cpu(at::Tensor corr, at::TensorList mats, int64_t n, int64_t k, int64_t mode, int64_t payloads,
                    int64_t self_sign) {
  TORCH_CHECK(mats.size() >= 2, "cmp_dealer: need the material of at least 2 parties");
  const pgk::CmpSpec s = spec(n, k, mode, payloads, self_sign);
  const pgk::CmpLayout L = pgk::cmp_layout(s);
  std::vector<const u64*> ptrs;
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
  m.impl("prg_fill_", &prg_fill_cpu);
  m.impl("bitslice", &bitslice_cpu);
  m.impl("unbitslice", &unbitslice_cpu);
  m.impl("cmp_open1", &cmp_open1_cpu);
  m.impl("cmp_start", &cmp_start_cpu);
  m.impl("cmp_step", &cmp_step_cpu);
  m.impl("cmp_finish", &cmp_finish_cpu);
  m.impl("cmp_dealer_", &cmp_dealer_cpu);
}
