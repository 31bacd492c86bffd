// The dealer stream on the GPU: AES-128-CTR (<pgkernels/prg.h>), byte for
// byte the stream of csrc/core/prg.cpp: the same key schedule, T-table rounds
// and counter layout (<pgkernels/prg_hd.h>). One thread per 16-byte block; the
// tables (4 KiB + the S-box) and the round keys sit in each block's shared
// memory. The key schedule is expanded on the host, so the key bytes reach the
// device only as round keys in the launch parameters.
#include "kernels.h"
#include "launch.cuh"

#include <pgkernels/prg_hd.h>

namespace pgk {
namespace cuda {
namespace {

// Evaluated at compile time (constexpr), so device and host tables are one definition.
__device__ const hd::AesTables kAesDevice = hd::make_aes_tables();
constexpr hd::AesTables kAesHost = hd::make_aes_tables();

__global__ void ctr_kernel(hd::AesSchedule ks, uint64_t nonce, uint64_t first_block, uint64_t* out,
                           int64_t nwords) {
  __shared__ uint32_t T[4][256];
  __shared__ uint8_t S[256];
  __shared__ uint32_t rk[44];
  for (int t = threadIdx.x; t < 256; t += blockDim.x) {
    S[t] = kAesDevice.sbox[t];
    for (int r = 0; r < 4; ++r) T[r][t] = kAesDevice.te[r][t];
    if (t < 44) rk[t] = ks.rk[t];
  }
  __syncthreads();
  const int64_t nblocks = (nwords + 1) / 2;
  PGK_GRID_LOOP(b, nblocks) {
    uint32_t s[4];
    hd::aes_counter_words(nonce, first_block + uint64_t(b), s);  // wraps mod 2^64 like the CPU counter
    hd::aes_encrypt_words(rk, T, S, s);
    out[2 * b] = uint64_t(s[0]) | (uint64_t(s[1]) << 32);
    if (2 * b + 1 < nwords) out[2 * b + 1] = uint64_t(s[2]) | (uint64_t(s[3]) << 32);
  }
}

}  // namespace

void prg_fill(const uint8_t key[16], uint64_t nonce, uint64_t first_block, uint64_t* out, int64_t nwords,
              cudaStream_t stream) {
  if (nwords <= 0) return;
  uint32_t k[4];
  for (int i = 0; i < 4; ++i)
    k[i] = uint32_t(key[4 * i]) | (uint32_t(key[4 * i + 1]) << 8) | (uint32_t(key[4 * i + 2]) << 16) |
           (uint32_t(key[4 * i + 3]) << 24);
  hd::AesSchedule ks;
  hd::aes_expand_key(kAesHost.sbox, k, ks);
  ctr_kernel<<<grid_for((nwords + 1) / 2), kThreads, 0, stream>>>(ks, nonce, first_block, out, nwords);
}

}  // namespace cuda
}  // namespace pgk
