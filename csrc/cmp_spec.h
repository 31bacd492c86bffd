#pragma once
// One place that turns op arguments into a validated CmpSpec for the ATen
// wrappers: the checks themselves live in the core (pgk::cmp_check, <pgkernels/compare.h>).
#include <stdexcept>

#include <torch/library.h>

#include <pgkernels/compare.h>

namespace pgk_aten {

inline pgk::CmpSpec checked_spec(int64_t n, int64_t k, int64_t mode, int64_t payloads, int64_t self_sign) {
  const pgk::CmpSpec s{n, int(k), int(mode), int(payloads), int(self_sign)};
  try {
    pgk::cmp_check(s);
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK(false, e.what());
  }
  return s;
}

}  // namespace pgk_aten
