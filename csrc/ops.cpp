// Every pgkernels op schema, declared once. Backends register implementations
// in csrc/cpu/*.cpp and csrc/cuda/*.cu with TORCH_LIBRARY_IMPL, so a CPU-only
// build simply leaves the CUDA files out.
#include <torch/library.h>

#include "core/compare.h"
#include "core/prg.h"

namespace {

// Sizes the Python protocol layer needs, in words:
// [stream_words, total_words, levels, plane_words, open1_words, state_words,
//  open_words(0), ..., open_words(levels)]
std::vector<int64_t> cmp_layout_op(int64_t n, int64_t k, int64_t mode, int64_t payloads) {
  TORCH_CHECK(n >= 0, "cmp_layout: n must be >= 0");
  TORCH_CHECK(mode >= 0 && mode <= 2, "cmp_layout: unknown mode ", mode);
  TORCH_CHECK(mode == pgk::kCmpMUX || (k >= 2 && k <= 64), "cmp_layout: bits must be in [2, 64], got ", k);
  TORCH_CHECK(payloads >= 0 && (mode != pgk::kCmpMUX || payloads > 0), "cmp_layout: bad payload count ", payloads);
  pgk::CmpSpec s{n, int(k), int(mode), int(payloads)};
  const pgk::CmpLayout L = pgk::cmp_layout(s);
  std::vector<int64_t> out = {L.stream_words, L.total_words, L.levels, L.W, pgk::cmp_open1_words(s),
                              L.state_words()};
  for (int step = 0; step <= L.levels; ++step) out.push_back(L.open_words(step));
  return out;
}

bool aesni_available_op() { return pgk::aesni_available(); }

}  // namespace

TORCH_LIBRARY(pgkernels, m) {
  m.def("aesni_available() -> bool", &aesni_available_op);
  m.def("cmp_layout(int n, int k, int mode, int payloads) -> int[]", &cmp_layout_op);
  // AES-128-CTR stream (key: 16 uint8) written over an int64 tensor.
  m.def("prg_fill_(Tensor(a!) out, Tensor key, int nonce, int first_block) -> ()");
  m.def("bitslice(Tensor values, int k) -> Tensor");
  m.def("unbitslice(Tensor planes, int n, int k) -> Tensor");
  // Comparison rounds; see csrc/core/compare.h for the protocol.
  m.def("cmp_open1(Tensor x, Tensor v, Tensor mat, int k, int mode, int payloads, bool rank0) -> (Tensor, Tensor)");
  m.def("cmp_start(Tensor c, Tensor mat, int k, int mode, int payloads, bool rank0, bool negate) -> (Tensor, Tensor)");
  m.def("cmp_step(Tensor opened, Tensor mat, Tensor(a!) state, int n, int k, int mode, int payloads, bool rank0, int level) -> Tensor");
  m.def("cmp_finish(Tensor z, Tensor mat, Tensor v, Tensor e, int n, int k, int mode, int payloads, bool rank0) -> Tensor");
  // Dealer: writes party 0's corrected words into corr (reused between calls).
  m.def("cmp_dealer_(Tensor(a!) corr, Tensor[] mats, int n, int k, int mode, int payloads) -> ()");
}
