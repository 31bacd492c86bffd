#pragma once
// Argument checks and raw word access shared by the CPU wrappers whose
// tensors are flat buffers of uint64 words stored as int64 (PRG output, bit
// planes, comparison material). Internal to the extension: not installed.
#include <cstdint>

#include <ATen/ATen.h>
#include <torch/library.h>

namespace pgk_aten {

inline void check_words(const at::Tensor& t, const char* name, int64_t min_numel = -1) {
  TORCH_CHECK(t.scalar_type() == at::kLong, name, " must be an int64 tensor, got ", t.scalar_type());
  TORCH_CHECK(t.device().is_cpu(), name, " must be on the CPU");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
  if (min_numel >= 0)
    TORCH_CHECK(t.numel() >= min_numel, name, " has ", t.numel(), " words, expected at least ", min_numel);
}

inline const uint64_t* rd(const at::Tensor& t) { return reinterpret_cast<const uint64_t*>(t.data_ptr<int64_t>()); }
inline uint64_t* wr(at::Tensor& t) { return reinterpret_cast<uint64_t*>(t.data_ptr<int64_t>()); }

inline at::Tensor words(int64_t n) { return at::empty({n}, at::TensorOptions().dtype(at::kLong)); }

}  // namespace pgk_aten
