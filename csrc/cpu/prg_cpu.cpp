// CPU implementation of the PRG op (AES-128-CTR, <pgkernels/prg.h>).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <pgkernels/prg.h>

#include "tensor_words.h"

namespace {

using pgk_aten::check_words;
using pgk_aten::wr;

void prg_fill__cpu(at::Tensor out, const at::Tensor& key, int64_t nonce, int64_t first_block) {
  check_words(out, "out");
  TORCH_CHECK(key.scalar_type() == at::kByte && key.numel() == 16 && key.is_contiguous(),
              "key must be a contiguous uint8 tensor of 16 bytes");
  pgk::prg_fill_u64(key.data_ptr<uint8_t>(), uint64_t(nonce), uint64_t(first_block), wr(out),
                    size_t(out.numel()));
}

}  // namespace

TORCH_LIBRARY_IMPL(pgkernels, CPU, m) {
  m.impl("prg_fill_", &prg_fill__cpu);
}
