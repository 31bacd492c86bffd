// ATen wrappers of the ring matrix products (<pgkernels/ring.h>).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <pgkernels/ring.h>

namespace {

using u64 = uint64_t;

void check_mat(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kLong, name, " must be an int64 tensor, got ", t.scalar_type());
  TORCH_CHECK(t.device().is_cpu(), name, " must be on the CPU");
  TORCH_CHECK(t.dim() == 2, name, " must be 2-D, got ", t.dim(), " dims");
}

const u64* rd(const at::Tensor& t) { return reinterpret_cast<const u64*>(t.data_ptr<int64_t>()); }

// The core kernels read rows at a fixed leading dimension ld >= k. Expanded
// (stride 0) rows, column views and transposes do not have one, so anything
// but a dense row-major matrix is copied first (a public op must not read out
// of bounds whatever strides it is given).
at::Tensor rowmajor(const at::Tensor& t) { return t.is_contiguous() ? t : t.contiguous(); }

int64_t ld(const at::Tensor& t) { return std::max<int64_t>(t.size(1), 1); }

at::Tensor ring_matmul_nt_cpu(const at::Tensor& a_in, const at::Tensor& b_in) {
  check_mat(a_in, "a");
  check_mat(b_in, "b");
  const at::Tensor a = rowmajor(a_in), b = rowmajor(b_in);
  TORCH_CHECK(a.size(1) == b.size(1), "ring_matmul_nt: a is ", a.sizes(), " and b is ", b.sizes(),
              ": inner dimensions differ");
  auto c = at::empty({a.size(0), b.size(0)}, a.options());
  pgk::ring_matmul_nt(a.size(0), b.size(0), a.size(1), rd(a), ld(a), rd(b), ld(b),
                      reinterpret_cast<u64*>(c.data_ptr<int64_t>()), std::max<int64_t>(b.size(0), 1));
  return c;
}

at::Tensor ring_syr2k_cpu(const at::Tensor& a_in, const c10::optional<at::Tensor>& b_opt) {
  check_mat(a_in, "a");
  const at::Tensor a = rowmajor(a_in);
  at::Tensor b;
  if (b_opt.has_value() && b_opt->defined()) {
    check_mat(*b_opt, "b");
    b = rowmajor(*b_opt);
    TORCH_CHECK(b.sizes() == a.sizes(), "ring_syr2k: b must have a's shape ", a.sizes(), ", got ", b.sizes());
  }
  const int64_t m = a.size(0);
  auto c = at::empty({m, m}, a.options());
  pgk::ring_syr2k(m, a.size(1), rd(a), ld(a), b.defined() ? rd(b) : nullptr, b.defined() ? ld(b) : 0,
                  reinterpret_cast<u64*>(c.data_ptr<int64_t>()), std::max<int64_t>(m, 1));
  return c;
}

}  // namespace

TORCH_LIBRARY_IMPL(pgkernels, CPU, m) {
  m.impl("ring_matmul_nt", &ring_matmul_nt_cpu);
  m.impl("ring_syr2k", &ring_syr2k_cpu);
}
