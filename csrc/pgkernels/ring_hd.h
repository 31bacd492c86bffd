#pragma once
// Ring (Z_2^64) arithmetic shared by csrc/core/ring.cpp and the GPU ring
// products (csrc/cuda/ring.cu); see hd.h. Unsigned 64-bit wrap-around is the
// ring, so every order of summation gives the same bits: the GPU may split k
// across blocks and add partial sums atomically and still match the CPU.
//
#include <cstdint>

#include <pgkernels/hd.h>

namespace pgk {
namespace hd {

// acc + a * b mod 2^64.
PGK_HD inline uint64_t ring_mac(uint64_t acc, uint64_t a, uint64_t b) { return acc + a * b; }

// Entry (i, j) of A B^T + B A^T from the upper-triangle product U = A B^T
// (or of A A^T from U = A A^T when sym is false): u_ij + u_ji.
PGK_HD inline uint64_t ring_sym2(uint64_t u_ij, uint64_t u_ji) { return u_ij + u_ji; }

}  // namespace hd
}  // namespace pgk
