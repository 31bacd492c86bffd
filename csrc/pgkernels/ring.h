#pragma once
// Matrix products over the ring Z_2^64 (uint64 wrap-around arithmetic): the
// local work of Beaver-style secure matrix products and Gram matrices.
// Row-major buffers with explicit leading dimensions; no allocation.
#include <cstdint>

namespace pgk {

// C (m x n) = A (m x k) * B (n x k)^T mod 2^64; C += ... when accumulate.
// Rows of A and B are contiguous (dot products of rows), the layout of
// shares of X X^T and of X W^T.
void ring_matmul_nt(int64_t m, int64_t n, int64_t k, const uint64_t* A, int64_t lda, const uint64_t* B,
                    int64_t ldb, uint64_t* C, int64_t ldc, bool accumulate = false);

// Symmetric rank-2k update over the ring, both triangles written:
//   C (m x m) = A B^T + B A^T   (B == nullptr: C = A A^T)
// computing only the upper triangle (half the products of two general
// matmuls, a quarter when B is given) and mirroring it.
void ring_syr2k(int64_t m, int64_t k, const uint64_t* A, int64_t lda, const uint64_t* B, int64_t ldb,
                uint64_t* C, int64_t ldc, bool accumulate = false);

}  // namespace pgk
