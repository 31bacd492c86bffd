// CUDA implementations of the pgkernels ops, registered for the CUDA dispatch
// key under the schemas of csrc/ops.cpp (no schema of its own). Each wrapper
// checks its arguments as the CPU wrapper does (csrc/cpu/*_cpu.cpp), plus that
// every tensor sits on one CUDA device, allocates outputs and scratch there
// (torch's caching allocator) and queues the torch-free launchers of
// kernels.h on the current stream; nothing synchronises.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <pgkernels/bits.h>
#include <pgkernels/compare.h>

#include "../cmp_spec.h"
#include "kernels.h"

namespace {

using u64 = uint64_t;

void check_cuda(const at::Tensor& t, const char* name, const at::Device& dev) {
  TORCH_CHECK(t.device() == dev, name, " must be on ", dev, " (the device of the op's first tensor), got ",
              t.device());
}

void check_words(const at::Tensor& t, const char* name, const at::Device& dev, int64_t min_numel = -1) {
  TORCH_CHECK(t.scalar_type() == at::kLong, name, " must be an int64 tensor, got ", t.scalar_type());
  check_cuda(t, name, dev);
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
  if (min_numel >= 0)
    TORCH_CHECK(t.numel() >= min_numel, name, " has ", t.numel(), " words, expected at least ", min_numel);
}

const u64* rd(const at::Tensor& t) { return reinterpret_cast<const u64*>(t.data_ptr<int64_t>()); }
u64* wr(at::Tensor& t) { return reinterpret_cast<u64*>(t.data_ptr<int64_t>()); }
at::Tensor words(int64_t n, const at::Device& dev) {
  return at::empty({n}, at::TensorOptions().dtype(at::kLong).device(dev));
}
cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

// --- PRG, bit slicing --------------------------------------------------------------------

void prg_fill__cuda(at::Tensor out, const at::Tensor& key, int64_t nonce, int64_t first_block) {
  TORCH_CHECK(out.is_cuda(), "out must be a CUDA tensor");
  const at::Device dev = out.device();
  check_words(out, "out", dev);
  TORCH_CHECK(key.scalar_type() == at::kByte && key.numel() == 16 && key.is_contiguous(),
              "key must be a contiguous uint8 tensor of 16 bytes");
  const c10::cuda::CUDAGuard guard(dev);
  // The schedule is expanded on the host: a key on the GPU is read back once (16 bytes).
  const at::Tensor hkey = key.is_cpu() ? key : key.cpu();
  pgk::cuda::prg_fill(hkey.data_ptr<uint8_t>(), u64(nonce), u64(first_block), wr(out), out.numel(), stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor bitslice_cuda(const at::Tensor& values, int64_t k) {
  const at::Device dev = values.device();
  check_words(values, "values", dev);
  TORCH_CHECK(k >= 1 && k <= 64, "k must be in [1, 64]");
  const c10::cuda::CUDAGuard guard(dev);
  const int64_t n = values.numel();
  at::Tensor planes = words(k * pgk::plane_words(n), dev);
  pgk::cuda::bitslice(rd(values), n, int(k), wr(planes), stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return planes;
}

at::Tensor unbitslice_cuda(const at::Tensor& planes, int64_t n, int64_t k) {
  TORCH_CHECK(k >= 1 && k <= 64, "k must be in [1, 64]");
  TORCH_CHECK(n >= 0, "n must be >= 0");
  const at::Device dev = planes.device();
  check_words(planes, "planes", dev, k * pgk::plane_words(n));
  const c10::cuda::CUDAGuard guard(dev);
  at::Tensor vals = words(n, dev);
  pgk::cuda::unbitslice(rd(planes), n, int(k), wr(vals), stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return vals;
}

// --- ring products ---------------------------------------------------------------------

void check_mat(const at::Tensor& t, const char* name, const at::Device& dev) {
  TORCH_CHECK(t.scalar_type() == at::kLong, name, " must be an int64 tensor, got ", t.scalar_type());
  check_cuda(t, name, dev);
  TORCH_CHECK(t.dim() == 2, name, " must be 2-D, got ", t.dim(), " dims");
}

// As on the CPU: anything but a dense row-major matrix is copied first.
at::Tensor rowmajor(const at::Tensor& t) { return t.is_contiguous() ? t : t.contiguous(); }
int64_t ld(const at::Tensor& t) { return std::max<int64_t>(t.size(1), 1); }

at::Tensor ring_matmul_nt_cuda(const at::Tensor& a_in, const at::Tensor& b_in) {
  const at::Device dev = a_in.device();
  check_mat(a_in, "a", dev);
  check_mat(b_in, "b", dev);
  const c10::cuda::CUDAGuard guard(dev);
  const at::Tensor a = rowmajor(a_in), b = rowmajor(b_in);
  TORCH_CHECK(a.size(1) == b.size(1), "ring_matmul_nt: a is ", a.sizes(), " and b is ", b.sizes(),
              ": inner dimensions differ");
  at::Tensor c = at::empty({a.size(0), b.size(0)}, a.options());
  pgk::cuda::ring_matmul_nt(a.size(0), b.size(0), a.size(1), rd(a), ld(a), rd(b), ld(b), wr(c),
                            std::max<int64_t>(b.size(0), 1), stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return c;
}

at::Tensor ring_syr2k_cuda(const at::Tensor& a_in, const c10::optional<at::Tensor>& b_opt) {
  const at::Device dev = a_in.device();
  check_mat(a_in, "a", dev);
  const c10::cuda::CUDAGuard guard(dev);
  const at::Tensor a = rowmajor(a_in);
  at::Tensor b;
  if (b_opt.has_value() && b_opt->defined()) {
    check_mat(*b_opt, "b", dev);
    b = rowmajor(*b_opt);
    TORCH_CHECK(b.sizes() == a.sizes(), "ring_syr2k: b must have a's shape ", a.sizes(), ", got ", b.sizes());
  }
  const int64_t m = a.size(0);
  TORCH_CHECK(m <= (int64_t(1) << 20), "ring_syr2k: a has ", m, " rows, at most 2^20 on the GPU");
  at::Tensor c = at::empty({m, m}, a.options());
  at::Tensor scratch = words(m * m, dev);
  pgk::cuda::ring_syr2k(m, a.size(1), rd(a), ld(a), b.defined() ? rd(b) : nullptr, b.defined() ? ld(b) : 0, wr(c),
                        std::max<int64_t>(m, 1), wr(scratch), stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return c;
}

// --- comparison rounds -----------------------------------------------------------------

using pgk_aten::checked_spec;

std::tuple<at::Tensor, at::Tensor> cmp_open1_cuda(const at::Tensor& x, const at::Tensor& v, const at::Tensor& mat,
                                                  int64_t k, int64_t mode, int64_t payloads, bool rank0,
                                                  int64_t self_sign) {
  const at::Device dev = x.device();
  check_words(x, "x", dev);
  const int64_t n = x.numel();
  const pgk::CmpSpec s = checked_spec(n, k, mode, payloads, self_sign);
  const pgk::CmpLayout L = pgk::cmp_layout(s);
  check_words(mat, "mat", dev, L.total_words);
  if (payloads) check_words(v, "v", dev, payloads * n);
  const c10::cuda::CUDAGuard guard(dev);
  at::Tensor out = words(pgk::cmp_open1_words(s), dev);
  at::Tensor zout = words(mode == pgk::kCmpMUX ? L.W : 0, dev);
  pgk::cuda::cmp_open1(s, L, rd(x), payloads ? rd(v) : nullptr, rd(mat), rank0, wr(out), wr(zout), stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {out, zout};
}

std::tuple<at::Tensor, at::Tensor> cmp_start_cuda(const at::Tensor& c, const at::Tensor& mat, int64_t k, int64_t mode,
                                                  int64_t payloads, bool rank0, bool negate, int64_t self_sign) {
  const at::Device dev = c.device();
  check_words(c, "c", dev);
  const pgk::CmpSpec s = checked_spec(c.numel(), k, mode, payloads, self_sign);
  TORCH_CHECK(mode != pgk::kCmpMUX, "cmp_start: MUX has no comparison tree");
  const pgk::CmpLayout L = pgk::cmp_layout(s);
  check_words(mat, "mat", dev, L.total_words);
  const c10::cuda::CUDAGuard guard(dev);
  at::Tensor state = words(L.state_words(), dev);
  at::Tensor open = words(L.open_words(0), dev);
  at::Tensor scratch = words(pgk::cuda::cmp_start_scratch_words(s, L), dev);
  pgk::cuda::cmp_start(s, L, rd(c), rd(mat), rank0, negate, wr(state), wr(open), wr(scratch), stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {state, open};
}

at::Tensor cmp_step_cuda(const at::Tensor& opened, const at::Tensor& mat, at::Tensor state, int64_t n, int64_t k,
                         int64_t mode, int64_t payloads, bool rank0, int64_t level, int64_t self_sign) {
  const at::Device dev = state.device();
  const pgk::CmpSpec s = checked_spec(n, k, mode, payloads, self_sign);
  const pgk::CmpLayout L = pgk::cmp_layout(s);
  TORCH_CHECK(level >= 0 && level < L.levels, "cmp_step: level ", level, " out of range [0, ", L.levels, ")");
  check_words(opened, "opened", dev, L.open_words(int(level)));
  check_words(mat, "mat", dev, L.total_words);
  check_words(state, "state", dev, L.state_words());
  const c10::cuda::CUDAGuard guard(dev);
  at::Tensor open = words(L.open_words(int(level) + 1), dev);
  pgk::cuda::cmp_step(s, L, int(level), rd(opened), rd(mat), rank0, wr(state), wr(open), stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return open;
}

at::Tensor cmp_finish_cuda(const at::Tensor& z, const at::Tensor& mat, const at::Tensor& v, const at::Tensor& e,
                           int64_t n, int64_t k, int64_t mode, int64_t payloads, bool rank0, int64_t self_sign) {
  const at::Device dev = z.device();
  const pgk::CmpSpec s = checked_spec(n, k, mode, payloads, self_sign);
  const pgk::CmpLayout L = pgk::cmp_layout(s);
  check_words(z, "z", dev, L.W);
  check_words(mat, "mat", dev, L.total_words);
  if (payloads) {
    check_words(v, "v", dev, payloads * n);
    check_words(e, "e", dev, payloads * n);
  }
  const c10::cuda::CUDAGuard guard(dev);
  at::Tensor out = words(payloads ? payloads * n : n, dev);
  pgk::cuda::cmp_finish(s, L, rd(z), rd(mat), rank0, payloads ? rd(v) : nullptr, payloads ? rd(e) : nullptr,
                        wr(out), stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

void cmp_dealer__cuda(at::Tensor corr, at::TensorList mats, int64_t n, int64_t k, int64_t mode, int64_t payloads,
                      int64_t self_sign) {
  TORCH_CHECK(mats.size() >= 2, "cmp_dealer: need the material of at least 2 parties");
  TORCH_CHECK(mats.size() <= size_t(pgk::cuda::kMaxDealerParties), "cmp_dealer: at most ",
              pgk::cuda::kMaxDealerParties, " parties on the GPU, got ", mats.size());
  const at::Device dev = corr.device();
  const pgk::CmpSpec s = checked_spec(n, k, mode, payloads, self_sign);
  const pgk::CmpLayout L = pgk::cmp_layout(s);
  std::vector<const u64*> ptrs;
  for (size_t i = 0; i < mats.size(); ++i) {
    check_words(mats[i], "mats[i]", dev, i == 0 ? L.stream_words : L.total_words);
    ptrs.push_back(rd(mats[i]));
  }
  check_words(corr, "corr", dev, L.corr_words());
  const c10::cuda::CUDAGuard guard(dev);
  at::Tensor scratch = words(pgk::cuda::cmp_dealer_scratch_words(s, L), dev);
  pgk::cuda::cmp_dealer(s, L, int(mats.size()), ptrs.data(), wr(corr), wr(scratch), stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

TORCH_LIBRARY_IMPL(pgkernels, CUDA, m) {
  m.impl("prg_fill_", &prg_fill__cuda);
  m.impl("bitslice", &bitslice_cuda);
  m.impl("unbitslice", &unbitslice_cuda);
  m.impl("ring_matmul_nt", &ring_matmul_nt_cuda);
  m.impl("ring_syr2k", &ring_syr2k_cuda);
  m.impl("cmp_open1", &cmp_open1_cuda);
  m.impl("cmp_start", &cmp_start_cuda);
  m.impl("cmp_step", &cmp_step_cuda);
  m.impl("cmp_finish", &cmp_finish_cuda);
  m.impl("cmp_dealer_", &cmp_dealer__cuda);
}
