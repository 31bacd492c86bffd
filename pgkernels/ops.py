"""Typed Python wrappers of the compiled ops (``torch.ops.pgkernels.*``).

The one place the Python layers call the C++ kernels from: ``runtime/`` (the
dealer), ``protocols/`` (comparisons, ring products, sorting networks, cost
model) and the tests. It imports only torch and the extension
``pgkernels._C``, so every layer may use it. The schemas are declared in
``csrc/ops.cpp``; the kernels' contracts (protocol, word layouts) in
``csrc/core/compare.h``, ``csrc/core/bits.h``, ``csrc/core/ring.h`` and
``csrc/pgkernels/fss.h``.

All word buffers are contiguous 1-D int64 tensors holding uint64 words
(shares mod 2^64 or packed bit planes: 64 elements per word), all on the CPU
or all on one CUDA device: an extension built with CUDA (``setup.py`` with
nvcc and a CUDA torch, see :func:`cuda_built`) registers a CUDA kernel for
every op with tensor inputs (``csrc/cuda/``), giving the CPU kernels' words
bit for bit.

The extension is loaded on the first call (so that ``import pgkernels`` works
without it, e.g. to read the version before a build); :func:`load` loads it
explicitly. Loading also registers a fake (meta) kernel for every op with
tensor inputs, computing its output sizes from the same C++ layout as the real
kernel, so the ops trace under ``torch.compile``/``torch.export`` and
``torch.library.opcheck`` runs all its tests on them. The ops without
tensor inputs are host-side functions of Python ints: :func:`aesni_available`,
:func:`dcf_isa`, :func:`dcf_cw_words` and :func:`cmp_layout` run as they are under a fake mode
(``CompositeImplicitAutograd``); :func:`sorting_network` returns a tensor, so
it is ``CompositeExplicitAutograd`` with a fake kernel that runs the (cheap,
deterministic) real network outside the fake mode for its size.
"""

import dataclasses
import threading
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

# Comparison modes of csrc/core/compare.h (enum CmpMode).
CMP_LT = 0   # output [x >= 0] (negate: [x < 0]) on the low k bits
CMP_EQ = 1   # output [x == 0 mod 2^k] (negate: [x != 0])
CMP_MUX = 2  # no comparison: bit * payload for a 0/1 sharing given by its low bits
CMP_MODES = (CMP_LT, CMP_EQ, CMP_MUX)

_LOCK = threading.Lock()
_LIB = None


def load():
    """Load the extension and register the fake kernels (idempotent); returns ``torch.ops.pgkernels``."""
    global _LIB
    if _LIB is None:
        with _LOCK:
            if _LIB is None:
                from . import _C  # noqa: F401  (runs TORCH_LIBRARY: registers the ops)

                _register_fakes()
                _LIB = torch.ops.pgkernels
    return _LIB


# --- the comparison layout -------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class CmpLayout:
    """Word counts of one party's material and messages for one comparison
    (``csrc/core/compare.h``, ``CmpLayout``), decoded once from ``cmp_layout``.

    ``stream``: words of the material every party draws from its PRG stream;
    ``total``: all words of the material (``total - stream`` are the dealer's
    corrections for the request's corrected party); ``levels``: AND levels of
    the comparison tree (rounds = 2 + levels); ``W``: words per bit plane
    (``ceil(n / 64)``); ``open1``: words sum-opened in round 1; ``state``:
    scratch words a party keeps between rounds; ``open``: words XOR-opened at
    tree step 0..levels (``levels + 1`` entries; the last is the output bit's
    ``W`` words).
    """

    stream: int
    total: int
    levels: int
    W: int
    open1: int
    state: int
    open: Tuple[int, ...]

    @property
    def corrected(self):
        """Words the dealer sends the corrected party."""
        return self.total - self.stream


def cmp_layout(n: int, k: int, mode: int, payloads: int, self_sign: int = 0) -> CmpLayout:
    """Layout of a comparison of n elements on k bits in ``mode`` with
    ``payloads`` values multiplied into the output bit (``self_sign``: payload
    row 0 is +-x itself). RuntimeError naming the field for a malformed spec."""
    raw = load().cmp_layout(n, k, mode, payloads, self_sign)
    return CmpLayout(stream=raw[0], total=raw[1], levels=raw[2], W=raw[3], open1=raw[4], state=raw[5],
                     open=tuple(raw[6:]))


def cuda_built() -> bool:
    """Whether the loaded extension has the CUDA kernels (``csrc/cuda/``,
    compiled when ``setup.py`` found nvcc and a CUDA torch, or FORCE_CUDA=1)."""
    load()
    return bool(torch._C._dispatch_has_kernel_for_dispatch_key("pgkernels::cmp_open1", "CUDA"))


def cuda_ready() -> bool:
    """Whether shares can live on the GPU here: CUDA kernels built and a GPU visible."""
    return cuda_built() and torch.cuda.is_available()


def aesni_available() -> bool:
    """Whether the CPU has AES-NI (the PRG then runs on it; a portable AES otherwise)."""
    return bool(load().aesni_available())


def sorting_network(n: int, outputs: Optional[Sequence[int]] = None) -> Tensor:
    """Rows ``(layer, i, j)`` (int64, (C, 3)) of Batcher's odd-even merge sort
    on n wires, pruned to the comparators that reach ``outputs`` (all wires when
    None or empty). ``n`` in [0, 2^24]."""
    return load().sorting_network(n, list(outputs) if outputs else [])


# --- PRG, bit slicing, ring products ------------------------------------------------------

def prg_fill_(out: Tensor, key: Tensor, nonce: int, first_block: int = 0) -> None:
    """Overwrite the int64 tensor ``out`` with the AES-128-CTR stream of ``key``
    (16 uint8) for ``nonce``, starting at 16-byte block ``first_block``."""
    load().prg_fill_(out, key, nonce, first_block)


def bitslice(values: Tensor, k: int) -> Tensor:
    """The k low bits of each of the n int64 ``values`` as k bit planes of
    ``ceil(n / 64)`` words each (plane b, word w, bit j = bit b of element 64 w + j)."""
    return load().bitslice(values, k)


def unbitslice(planes: Tensor, n: int, k: int) -> Tensor:
    """Inverse of :func:`bitslice`: n int64 values from k bit planes."""
    return load().unbitslice(planes, n, k)


def ring_matmul_nt(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b.T`` mod 2^64 for int64 matrices (m, k) and (p, k), both on the CPU or one GPU: (m, p)."""
    return load().ring_matmul_nt(a, b)


def ring_syr2k(a: Tensor, b: Optional[Tensor] = None) -> Tensor:
    """``a @ b.T + b @ a.T`` (or ``a @ a.T``) mod 2^64 for int64 (m, k) on the
    CPU or one GPU: (m, m), computing one triangle (the GPU: the full A B^T)."""
    return load().ring_syr2k(a, b)


# --- comparison rounds (csrc/core/compare.h) ---------------------------------------------------

def cmp_open1(x: Tensor, v: Tensor, mat: Tensor, k: int, mode: int, payloads: int, rank0: bool,
              self_sign: int = 0) -> Tuple[Tensor, Tensor]:
    """Round 1: the words to sum-open (``open1`` words: masked ``x`` and
    payload rows ``v`` (payloads x n)) and, for MUX, the ``W`` words to XOR-open
    (empty otherwise). ``mat``: this party's material (``total`` words)."""
    return load().cmp_open1(x, v, mat, k, mode, payloads, rank0, self_sign)


def cmp_start(c: Tensor, mat: Tensor, k: int, mode: int, payloads: int, rank0: bool, negate: bool,
              self_sign: int = 0) -> Tuple[Tensor, Tensor]:
    """After round 1 (``c``: the n opened values): the state (``state`` words)
    and the words to XOR-open at tree step 0 (``open[0]`` words)."""
    return load().cmp_start(c, mat, k, mode, payloads, rank0, negate, self_sign)


def cmp_step(opened: Tensor, mat: Tensor, state: Tensor, n: int, k: int, mode: int, payloads: int,
             rank0: bool, level: int, self_sign: int = 0) -> Tensor:
    """Close tree level ``level`` from its XOR-opened words (updates ``state``
    in place); returns the words to open next (``open[level + 1]`` words)."""
    return load().cmp_step(opened, mat, state, n, k, mode, payloads, rank0, level, self_sign)


def cmp_finish(z: Tensor, mat: Tensor, v: Tensor, e: Tensor, n: int, k: int, mode: int, payloads: int,
               rank0: bool, self_sign: int = 0) -> Tensor:
    """After the last XOR-open ``z`` (``W`` words): arithmetic shares of the
    output bit (n words) or of bit * payload (payloads x n words; ``v`` the
    payload shares, ``e`` their openings from round 1)."""
    return load().cmp_finish(z, mat, v, e, n, k, mode, payloads, rank0, self_sign)


def cmp_dealer_(corr: Tensor, mats: List[Tensor], n: int, k: int, mode: int, payloads: int,
                self_sign: int = 0) -> None:
    """Dealer: write the corrected party's words (``total - stream``) into
    ``corr`` from every party's stream material (``mats[0]``: the corrected
    party's)."""
    load().cmp_dealer_(corr, mats, n, k, mode, payloads, self_sign)


# --- function secret sharing (csrc/pgkernels/fss.h) ---------------------------------------------

def dcf_cw_words(bits: int) -> int:
    """Correction words (uint64) per element of a DCF key on ``bits`` bits
    (``3 bits + 1``); a party's full key adds its 2-word root seed."""
    return int(load().dcf_cw_words(bits))


DCF_ISAS = ("portable", "aesni", "vaes")


def dcf_isa() -> str:
    """The DCF's AES implementation on this CPU: ``"vaes"``, ``"aesni"`` or
    ``"portable"`` (all give identical keys and shares)."""
    return DCF_ISAS[int(load().dcf_isa())]


def dcf_gen(alpha: Tensor, beta: Optional[Tensor], offset: Optional[Tensor], seed0: Tensor, seed1: Tensor,
            bits: int) -> Tensor:
    """Dealer: the correction words (n x ``dcf_cw_words(bits)``, flat) of n
    DCF keys with ``eval(0) + eval(1) = offset + beta [x < alpha]`` on the low
    ``bits`` bits (unsigned); ``beta`` defaults to 1, ``offset`` to 0; party
    b's root seeds are ``seed_b`` (2 words per element)."""
    return load().dcf_gen(alpha, beta, offset, seed0, seed1, bits)


def dcf_eval(x: Tensor, seed: Tensor, cw: Tensor, bits: int, party: int) -> Tensor:
    """Party ``party`` (0 or 1): its additive shares (n words) of the n DCFs at the public ``x``."""
    return load().dcf_eval(x, seed, cw, bits, party)


def fss_ltz_gen_(cw: Tensor, r: Tensor, seed0: Tensor, seed1: Tensor, k: int) -> None:
    """Dealer: write into ``cw`` (n x ``dcf_cw_words(k - 1)`` words) the keys
    of the one-round sign test of k-bit values masked by ``r`` (n words, the
    sum of the parties' mask shares)."""
    load().fss_ltz_gen_(cw, r, seed0, seed1, k)


def fss_ltz_eval(c: Tensor, seed: Tensor, cw: Tensor, k: int, party: int) -> Tensor:
    """Party ``party``: its additive shares of ``[x < 0]`` (x read as a k-bit
    signed value) from the opened ``c = x + r mod 2^k`` (high bits ignored)."""
    return load().fss_ltz_eval(c, seed, cw, k, party)


# --- fake kernels ---------------------------------------------------------------------------------

def _size(v):
    """A concrete int for a (possibly symbolic) size: the layouts are C++
    functions of ints, so a symbolic n is specialised (guarded) here."""
    return int(v)


def _words(like, count):
    return like.new_empty((count,), dtype=torch.long)


def _check_words(t, name):
    torch._check(t.dtype == torch.long, lambda: f"{name} must be an int64 tensor, got {t.dtype}")


def _check_mat(t, name):
    _check_words(t, name)
    torch._check(t.dim() == 2, lambda: f"{name} must be 2-D, got {t.dim()} dims")


def _register_fakes():
    lay = torch.ops.pgkernels.cmp_layout  # ints only: runs as is under a fake mode

    @torch.library.register_fake("pgkernels::prg_fill_")
    def _prg_fill(out, key, nonce, first_block):
        _check_words(out, "out")
        torch._check(key.dtype == torch.uint8 and key.numel() == 16,
                     lambda: "key must be a contiguous uint8 tensor of 16 bytes")

    @torch.library.register_fake("pgkernels::sorting_network")
    def _sorting_network(n, outputs):
        from torch._subclasses.fake_tensor import unset_fake_temporarily

        with unset_fake_temporarily():  # the same checks and size as the kernel
            rows = torch.ops.pgkernels.sorting_network(n, outputs).shape[0]
        return torch.empty((rows, 3), dtype=torch.long)

    @torch.library.register_fake("pgkernels::bitslice")
    def _bitslice(values, k):
        _check_words(values, "values")
        n = values.numel()
        return _words(values, k * ((n + 63) // 64))

    @torch.library.register_fake("pgkernels::unbitslice")
    def _unbitslice(planes, n, k):
        _check_words(planes, "planes")
        return _words(planes, n)

    @torch.library.register_fake("pgkernels::ring_matmul_nt")
    def _ring_matmul_nt(a, b):
        _check_mat(a, "a")
        _check_mat(b, "b")
        torch._check(a.shape[1] == b.shape[1], lambda: "ring_matmul_nt: inner dimensions differ")
        return a.new_empty((a.shape[0], b.shape[0]))

    @torch.library.register_fake("pgkernels::ring_syr2k")
    def _ring_syr2k(a, b=None):
        _check_mat(a, "a")
        if b is not None:
            _check_mat(b, "b")
        return a.new_empty((a.shape[0], a.shape[0]))

    @torch.library.register_fake("pgkernels::cmp_open1")
    def _cmp_open1(x, v, mat, k, mode, payloads, rank0, self_sign=0):
        _check_words(x, "x")
        L = lay(_size(x.numel()), k, mode, payloads, self_sign)
        return _words(x, L[4]), _words(x, L[3] if mode == CMP_MUX else 0)

    @torch.library.register_fake("pgkernels::cmp_start")
    def _cmp_start(c, mat, k, mode, payloads, rank0, negate, self_sign=0):
        _check_words(c, "c")
        torch._check(mode != CMP_MUX, lambda: "cmp_start: MUX has no comparison tree")
        L = lay(_size(c.numel()), k, mode, payloads, self_sign)
        return _words(c, L[5]), _words(c, L[6])

    @torch.library.register_fake("pgkernels::cmp_step")
    def _cmp_step(opened, mat, state, n, k, mode, payloads, rank0, level, self_sign=0):
        L = lay(n, k, mode, payloads, self_sign)
        torch._check(0 <= level < L[2], lambda: f"cmp_step: level {level} out of range [0, {L[2]})")
        return _words(opened, L[6 + level + 1])

    @torch.library.register_fake("pgkernels::cmp_finish")
    def _cmp_finish(z, mat, v, e, n, k, mode, payloads, rank0, self_sign=0):
        lay(n, k, mode, payloads, self_sign)  # the same spec checks as the kernel
        return _words(z, payloads * n if payloads else n)

    cw_words = torch.ops.pgkernels.dcf_cw_words

    @torch.library.register_fake("pgkernels::dcf_gen")
    def _dcf_gen(alpha, beta, offset, seed0, seed1, bits):
        _check_words(alpha, "alpha")
        return _words(alpha, _size(alpha.numel()) * cw_words(bits))

    @torch.library.register_fake("pgkernels::dcf_eval")
    def _dcf_eval(x, seed, cw, bits, party):
        _check_words(x, "x")
        cw_words(bits)  # the kernel's range check
        torch._check(party in (0, 1), lambda: f"party must be 0 or 1, got {party}")
        return _words(x, x.numel())

    @torch.library.register_fake("pgkernels::fss_ltz_gen_")
    def _fss_ltz_gen(cw, r, seed0, seed1, k):
        _check_words(r, "r")
        torch._check(2 <= k <= 64, lambda: f"k must be in [2, 64], got {k}")

    @torch.library.register_fake("pgkernels::fss_ltz_eval")
    def _fss_ltz_eval(c, seed, cw, k, party):
        _check_words(c, "c")
        torch._check(2 <= k <= 64, lambda: f"k must be in [2, 64], got {k}")
        torch._check(party in (0, 1), lambda: f"party must be 0 or 1, got {party}")
        return _words(c, c.numel())

    @torch.library.register_fake("pgkernels::cmp_dealer_")
    def _cmp_dealer(corr, mats, n, k, mode, payloads, self_sign=0):
        torch._check(len(mats) >= 2, lambda: "cmp_dealer: need the material of at least 2 parties")
        lay(n, k, mode, payloads, self_sign)


__all__ = [
    "CMP_EQ", "CMP_LT", "CMP_MODES", "CMP_MUX", "CmpLayout", "DCF_ISAS", "aesni_available", "bitslice",
    "cmp_dealer_", "cmp_finish", "cmp_layout", "cmp_open1", "cmp_start", "cmp_step", "cuda_built", "cuda_ready",
    "dcf_cw_words", "dcf_eval", "dcf_gen", "dcf_isa", "fss_ltz_eval", "fss_ltz_gen_", "load", "prg_fill_",
    "ring_matmul_nt", "ring_syr2k", "sorting_network", "unbitslice",
]
