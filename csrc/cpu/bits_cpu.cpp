// CPU implementations of the bit-slicing ops (<pgkernels/bits.h>): n k-bit
// values <-> k bit planes of 64 elements per word.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <pgkernels/bits.h>

#include "tensor_words.h"

namespace {

using pgk_aten::check_words;
using pgk_aten::rd;
using pgk_aten::words;
using pgk_aten::wr;

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

}  // namespace

TORCH_LIBRARY_IMPL(pgkernels, CPU, m) {
  m.impl("bitslice", &bitslice_cpu);
  m.impl("unbitslice", &unbitslice_cpu);
}
