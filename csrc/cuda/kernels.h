#pragma once
// Torch-free CUDA launchers of pgkernels' kernels: device pointers in, work
// queued on `stream`, no allocation (callers pass scratch), no sync. The ATen
// wrappers (ops_cuda.cu) and the standalone device test (tests/test_cuda_core.cu)
// call these. Each launcher computes exactly what the CPU function of the same
// name in <pgkernels/*.h> does, word for word: the per-element formulas are the
// same PGK_HD functions (csrc/pgkernels/*_hd.h), and the loops around them keep the
// CPU's order wherever a word depends on an earlier one.
#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

#include <pgkernels/compare.h>

namespace pgk {
namespace cuda {

constexpr int kMaxDealerParties = 32;

// <pgkernels/bits.h>: planes (k * plane_words(n)) <-> n values.
void bitslice(const uint64_t* vals, int64_t n, int k, uint64_t* planes, cudaStream_t stream);
void unbitslice(const uint64_t* planes, int64_t n, int k, uint64_t* vals, cudaStream_t stream);

// <pgkernels/prg.h>: nwords words of the AES-128-CTR stream (key in host
// memory), the same bytes as pgk::prg_fill_u64.
void prg_fill(const uint8_t key[16], uint64_t nonce, uint64_t first_block, uint64_t* out, int64_t nwords,
              cudaStream_t stream);

// <pgkernels/ring.h> (C overwritten, row-major with leading dimensions).
void ring_matmul_nt(int64_t m, int64_t n, int64_t k, const uint64_t* A, int64_t lda, const uint64_t* B,
                    int64_t ldb, uint64_t* C, int64_t ldc, cudaStream_t stream);
// scratch: m * m words.
void ring_syr2k(int64_t m, int64_t k, const uint64_t* A, int64_t lda, const uint64_t* B, int64_t ldb,
                uint64_t* C, int64_t ldc, uint64_t* scratch, cudaStream_t stream);

// <pgkernels/compare.h>, round by round.
void cmp_open1(const CmpSpec& s, const CmpLayout& L, const uint64_t* x, const uint64_t* v, const uint64_t* mat,
               bool rank0, uint64_t* out, uint64_t* zout, cudaStream_t stream);
int64_t cmp_start_scratch_words(const CmpSpec& s, const CmpLayout& L);
void cmp_start(const CmpSpec& s, const CmpLayout& L, const uint64_t* c, const uint64_t* mat, bool rank0,
               bool negate, uint64_t* state, uint64_t* open_out, uint64_t* scratch, cudaStream_t stream);
void cmp_step(const CmpSpec& s, const CmpLayout& L, int level, const uint64_t* opened, const uint64_t* mat,
              bool rank0, uint64_t* state, uint64_t* open_out, cudaStream_t stream);
void cmp_finish(const CmpSpec& s, const CmpLayout& L, const uint64_t* z, const uint64_t* mat, bool rank0,
                const uint64_t* v, const uint64_t* e, uint64_t* out, cudaStream_t stream);
// mats: host array of `parties` device pointers (parties <= kMaxDealerParties).
int64_t cmp_dealer_scratch_words(const CmpSpec& s, const CmpLayout& L);
void cmp_dealer(const CmpSpec& s, const CmpLayout& L, int parties, const uint64_t* const* mats, uint64_t* corr,
                uint64_t* scratch, cudaStream_t stream);

}  // namespace cuda
}  // namespace pgk
