#pragma once
#include <cstddef>
#include <cstdint>

namespace pgk {

// Stream definition (fixed, parties on different machines must agree):
// block i of stream (key, nonce) = AES-128_key( LE64(nonce) || LE64(i) ), 16 bytes.
// The block counter i wraps modulo 2^64.
// aes128_ctr writes bytes [16*first_block, 16*first_block + nbytes) of that stream to out.
// Uses AES-NI when the CPU supports it, otherwise the portable path; both give
// byte-identical output. Single-threaded by design: callers parallelise by
// giving each thread a disjoint block range.
void aes128_ctr(const uint8_t key[16], uint64_t nonce, uint64_t first_block, void* out, size_t nbytes);

// Pure C++ (FIPS-197) implementation of the same stream; always available.
void aes128_ctr_portable(const uint8_t key[16], uint64_t nonce, uint64_t first_block, void* out, size_t nbytes);

// True if aes128_ctr dispatches to the AES-NI implementation on this machine.
bool aesni_available();

// Expanded AES-128 key: the 11 round keys in FIPS-197 byte order (the layout
// AES-NI's aesenc takes), for fixed-key constructions that encrypt many blocks
// under one public key (the FSS PRG, <pgkernels/fss.h>).
struct Aes128RoundKeys {
  alignas(16) uint8_t bytes[11][16];
};
void aes128_expand_key(const uint8_t key[16], Aes128RoundKeys& out);
// ECB encryption of nblocks 16-byte blocks with an expanded key, portable
// path (out may equal in). Byte-identical to AES-NI on the same round keys.
void aes128_ecb_portable(const Aes128RoundKeys& ks, const uint8_t* in, uint8_t* out, size_t nblocks);

// Single-block AES-128 encryption (for known-answer tests).
void aes128_encrypt_block_portable(const uint8_t key[16], const uint8_t in[16], uint8_t out[16]);
// AES-NI single-block encryption. Returns false (and leaves out untouched) if
// AES-NI is not available or not compiled in.
bool aes128_encrypt_block_aesni(const uint8_t key[16], const uint8_t in[16], uint8_t out[16]);

// The u64 view below reinterprets the byte stream in native order; the library
// assumes little-endian hosts so that all parties see the same words.
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__)
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "pgkernels assumes a little-endian host");
#endif

// Convenience: fill n uint64 words; word j = little-endian bytes [8*(2*first_block)+8j ...)
// i.e. same as aes128_ctr on the byte buffer.
inline void prg_fill_u64(const uint8_t key[16], uint64_t nonce, uint64_t first_block, uint64_t* out, size_t nwords) {
  aes128_ctr(key, nonce, first_block, out, nwords * 8);
}

}  // namespace pgk
