// Every pgkernels op schema, declared once. Backends register implementations
// in csrc/cpu/*.cpp and csrc/cuda/*.cu with TORCH_LIBRARY_IMPL, so a CPU-only
// build simply leaves the CUDA files out. Op <op> has its CPU implementation
// <op>_cpu in csrc/cpu/<family>_cpu.cpp (prg, bits, compare, ring, fss), next to
// the torch-free core function it wraps (<pgkernels/<family>.h>).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <pgkernels/compare.h>
#include <pgkernels/fss.h>
#include <pgkernels/network.h>
#include <pgkernels/prg.h>

#include "cmp_spec.h"

namespace {

// Sizes the Python protocol layer needs, in words:
// [stream_words, total_words, levels, plane_words, open1_words, state_words,
//  open_words(0), ..., open_words(levels)]
std::vector<int64_t> cmp_layout_op(int64_t n, int64_t k, int64_t mode, int64_t payloads, int64_t self_sign) {
  const pgk::CmpSpec s = pgk_aten::checked_spec(n, k, mode, payloads, self_sign);
  const pgk::CmpLayout L = pgk::cmp_layout(s);
  std::vector<int64_t> out = {L.stream_words, L.total_words, L.levels, L.W, pgk::cmp_open1_words(s),
                              L.state_words()};
  for (int step = 0; step <= L.levels; ++step) out.push_back(L.open_words(step));
  return out;
}

bool aesni_available_op() { return pgk::aesni_available(); }

int64_t dcf_cw_words_op(int64_t bits) {
  TORCH_CHECK(bits >= 1 && bits <= 64, "dcf_cw_words: bits must be in [1, 64], got ", bits);
  return pgk::dcf_cw_words(int(bits));
}

// 0 portable AES, 1 AES-NI, 2 VAES: the DCF's block function on this CPU.
int64_t dcf_isa_op() { return int64_t(pgk::dcf_best_isa()); }

// Rows (layer, i, j) of Batcher's odd-even merge sort on n wires, pruned to the
// comparators that reach `outputs` (all wires when empty).
at::Tensor sorting_network_op(int64_t n, std::vector<int64_t> outputs) {
  TORCH_CHECK(n >= 0 && n <= (1 << 24), "sorting_network: n must be in [0, 2^24], got ", n);
  pgk::Network net = pgk::oddeven_merge_sort(int(n));
  if (!outputs.empty()) {
    std::vector<int> outs;
    for (int64_t o : outputs) {
      TORCH_CHECK(o >= 0 && o < n, "sorting_network: output wire ", o, " out of range [0, ", n, ")");
      outs.push_back(int(o));
    }
    net = pgk::prune_network(net, int(n), outs);
  }
  at::Tensor rows = at::empty({pgk::network_size(net), 3}, at::TensorOptions().dtype(at::kLong));
  int64_t* r = rows.data_ptr<int64_t>();
  for (size_t l = 0; l < net.size(); ++l)
    for (const auto& c : net[l]) {
      *r++ = int64_t(l);
      *r++ = c.i;
      *r++ = c.j;
    }
  return rows;
}

}  // namespace

// Comparison ops name their mode argument cmp_mode: torch's
// auto_functionalized calls impl(mode, *args), so an op argument called
// "mode" breaks functionalization of the mutating ones (cmp_step, cmp_dealer_).
TORCH_LIBRARY(pgkernels, m) {
  m.def("aesni_available() -> bool", &aesni_available_op);
  m.def("cmp_layout(int n, int k, int cmp_mode, int payloads, int self_sign=0) -> int[]", &cmp_layout_op);
  // CompositeExplicitAutograd (below), not a function-pointer def (implicit): a
  // fake kernel can then be registered, so opcheck and tracing run on it.
  m.def("sorting_network(int n, int[] outputs) -> Tensor");
  // AES-128-CTR stream (key: 16 uint8) written over an int64 tensor.
  m.def("prg_fill_(Tensor(a!) out, Tensor key, int nonce, int first_block) -> ()");
  // Ring (mod 2^64) matrix products on int64 tensors; see <pgkernels/ring.h>.
  m.def("ring_matmul_nt(Tensor a, Tensor b) -> Tensor");  // a @ b.T
  m.def("ring_syr2k(Tensor a, Tensor? b=None) -> Tensor");  // a @ b.T + b @ a.T, or a @ a.T
  m.def("bitslice(Tensor values, int k) -> Tensor");
  m.def("unbitslice(Tensor planes, int n, int k) -> Tensor");
  // Comparison rounds; see <pgkernels/compare.h> for the protocol.
  m.def("cmp_open1(Tensor x, Tensor v, Tensor mat, int k, int cmp_mode, int payloads, bool rank0, int self_sign=0) -> (Tensor, Tensor)");
  m.def("cmp_start(Tensor c, Tensor mat, int k, int cmp_mode, int payloads, bool rank0, bool negate, int self_sign=0) -> (Tensor, Tensor)");
  m.def("cmp_step(Tensor opened, Tensor mat, Tensor(a!) state, int n, int k, int cmp_mode, int payloads, bool rank0, int level, int self_sign=0) -> Tensor");
  m.def("cmp_finish(Tensor z, Tensor mat, Tensor v, Tensor e, int n, int k, int cmp_mode, int payloads, bool rank0, int self_sign=0) -> Tensor");
  // Dealer: writes the corrected party's words (its material is mats[0]) into corr.
  m.def("cmp_dealer_(Tensor(a!) corr, Tensor[] mats, int n, int k, int cmp_mode, int payloads, int self_sign=0) -> ()");
  // Function secret sharing (2 parties); see <pgkernels/fss.h>. Seeds: 2 words per element.
  m.def("dcf_cw_words(int bits) -> int", &dcf_cw_words_op);
  m.def("dcf_isa() -> int", &dcf_isa_op);
  m.def("dcf_gen(Tensor alpha, Tensor? beta, Tensor? offset, Tensor seed0, Tensor seed1, int bits) -> Tensor");
  m.def("dcf_eval(Tensor x, Tensor seed, Tensor cw, int bits, int party) -> Tensor");
  m.def("fss_ltz_gen_(Tensor(a!) cw, Tensor r, Tensor seed0, Tensor seed1, int k) -> ()");
  m.def("fss_ltz_eval(Tensor c, Tensor seed, Tensor cw, int k, int party) -> Tensor");
}

TORCH_LIBRARY_IMPL(pgkernels, CompositeExplicitAutograd, m) {
  m.impl("sorting_network", &sorting_network_op);
}
