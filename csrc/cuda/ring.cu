// Ring (Z_2^64) matrix products on the GPU (<pgkernels/ring.h>).
//
// Method: native 64-bit integer multiply-adds (hd::ring_mac, the CPU's
// formula) in shared-memory tiles, with the k dimension split across blocks
// and the partial sums added with 64-bit atomicAdd. Why not limb splitting
// onto tensor cores (CryptGPU, Piranha): the products this library needs are
// thin (the Gram matrix of n <= a few hundred updates of d up to 1e6-1e7
// entries, X W^T of one layer), so they are bound by reading A and B once
// (50 x 1e5 words: 40 MB, about 10 us of H200 bandwidth), not by the multiply
// rate; an exact 64-bit product from 8-bit limbs needs 36 IMMA passes and a
// carry-propagating recombination for no gain there. Split-k keeps the whole
// GPU busy although C has only m x n entries, and since addition mod 2^64 is
// associative and commutative, atomics in any order give the CPU's bits.
#include "kernels.h"
#include "launch.cuh"

#include <pgkernels/ring_hd.h>

namespace pgk {
namespace cuda {
namespace {

constexpr int TS = 16;  // C tile: TS x TS, one entry per thread
constexpr int KT = 32;  // k step held in shared memory
constexpr int64_t kMaxRowTiles = 65535;

// C[i][j] += <A_i, B_j> over k in [kb, kb + kchunk) of this block (blockIdx.z);
// `upper`: skip tiles entirely below the diagonal (A A^T needs one triangle).
__global__ void matmul_nt_kernel(int64_t m, int64_t n, int64_t k, const uint64_t* A, int64_t lda,
                                 const uint64_t* B, int64_t ldb, uint64_t* C, int64_t ldc, int64_t kchunk,
                                 bool upper) {
  __shared__ uint64_t As[TS][KT + 1], Bs[TS][KT + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t i0 = int64_t(blockIdx.y) * TS, j0 = int64_t(blockIdx.x) * TS;
  if (upper && j0 + TS <= i0) return;  // whole block: no thread reaches a barrier
  const int64_t kb = int64_t(blockIdx.z) * kchunk;
  const int64_t ke = kb + kchunk < k ? kb + kchunk : k;
  uint64_t acc = 0;
  for (int64_t k0 = kb; k0 < ke; k0 += KT) {
    for (int t = ty * TS + tx; t < TS * KT; t += TS * TS) {
      const int r = t / KT, c = t % KT;
      const int64_t gk = k0 + c, gi = i0 + r, gj = j0 + r;
      As[r][c] = (gi < m && gk < ke) ? A[gi * lda + gk] : 0;
      Bs[r][c] = (gj < n && gk < ke) ? B[gj * ldb + gk] : 0;
    }
    __syncthreads();
#pragma unroll 8
    for (int c = 0; c < KT; ++c) acc = hd::ring_mac(acc, As[ty][c], Bs[tx][c]);
    __syncthreads();
  }
  const int64_t i = i0 + ty, j = j0 + tx;
  if (i < m && j < n && kb < k)
    atomicAdd(reinterpret_cast<unsigned long long*>(C + i * ldc + j), static_cast<unsigned long long>(acc));
}

// C = U + U^T (sym2) or the upper triangle of U mirrored (A A^T).
__global__ void mirror_kernel(int64_t m, const uint64_t* U, uint64_t* C, int64_t ldc, bool sym2) {
  PGK_GRID_LOOP(t, m * m) {
    const int64_t i = t / m, j = t % m;
    C[i * ldc + j] = sym2 ? hd::ring_sym2(U[i * m + j], U[j * m + i]) : (j >= i ? U[i * m + j] : U[j * m + i]);
  }
}

// Zeroes C (m x n, leading dimension ldc) and accumulates A B^T into it.
void matmul_accumulate(int64_t m, int64_t n, int64_t k, const uint64_t* A, int64_t lda, const uint64_t* B,
                       int64_t ldb, uint64_t* C, int64_t ldc, bool upper, cudaStream_t stream) {
  if (m == 0 || n == 0) return;
  cudaMemset2DAsync(C, size_t(ldc) * 8, 0, size_t(n) * 8, size_t(m), stream);
  if (k == 0) return;
  const int64_t rt = (m + TS - 1) / TS, ct = (n + TS - 1) / TS;
  // Enough blocks to fill the GPU (a few thousand), at least a few k steps each.
  const int64_t tiles = rt * ct;
  int64_t splits = std::max<int64_t>(1, std::min<int64_t>((k + 4 * KT - 1) / (4 * KT), 4096 / std::max<int64_t>(tiles, 1)));
  splits = std::min<int64_t>(splits, 65535);
  int64_t kchunk = (k + splits - 1) / splits;
  kchunk = (kchunk + KT - 1) / KT * KT;
  splits = (k + kchunk - 1) / kchunk;
  const dim3 block(TS, TS);
  // grid.y is limited to 65535 row tiles: larger m goes in row slabs.
  for (int64_t r0 = 0; r0 < rt; r0 += kMaxRowTiles) {
    const int64_t rows = std::min<int64_t>(m - r0 * TS, kMaxRowTiles * TS);
    const dim3 grid(unsigned(ct), unsigned((rows + TS - 1) / TS), unsigned(splits));
    matmul_nt_kernel<<<grid, block, 0, stream>>>(rows, n, k, A + r0 * TS * lda, lda, B, ldb, C + r0 * TS * ldc, ldc,
                                                 kchunk, upper && r0 == 0 && rt <= kMaxRowTiles);
  }
}

}  // namespace

void ring_matmul_nt(int64_t m, int64_t n, int64_t k, const uint64_t* A, int64_t lda, const uint64_t* B,
                    int64_t ldb, uint64_t* C, int64_t ldc, cudaStream_t stream) {
  matmul_accumulate(m, n, k, A, lda, B, ldb, C, ldc, false, stream);
}

void ring_syr2k(int64_t m, int64_t k, const uint64_t* A, int64_t lda, const uint64_t* B, int64_t ldb, uint64_t* C,
                int64_t ldc, uint64_t* scratch, cudaStream_t stream) {
  if (m == 0) return;
  // A A^T: one triangle of tiles; A B^T + B A^T: the full U = A B^T, then U + U^T.
  matmul_accumulate(m, m, k, A, lda, B ? B : A, B ? ldb : lda, scratch, m, B == nullptr, stream);
  mirror_kernel<<<grid_for(m * m), kThreads, 0, stream>>>(m, scratch, C, ldc, B != nullptr);
}

}  // namespace cuda
}  // namespace pgk
