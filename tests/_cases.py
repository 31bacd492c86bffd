"""Inputs shared by the comparison tests, built identically in every party.

Values are raw ring integers (fixed-point encoded with 16 fractional bits), so
results are checked against the plaintext comparison of the encoded values --
CrypTen's float decoding is not exact for large magnitudes.
"""

import torch

FRAC = 16
I64_MIN, I64_MAX = -(2**63), 2**63 - 1


def edge_values():
    one = 1 << FRAC
    v = [0, 1, -1, one, -one, 2, -2, 12345 * one, -12345 * one, I64_MAX, I64_MIN,
         I64_MAX - 1, I64_MIN + 1, 2**62, -(2**62), 2**31, -(2**31), 2**31 - 1, -(2**31) - 1]
    return torch.tensor(v, dtype=torch.long)


def random_values(n, seed, bits=64):
    g = torch.Generator().manual_seed(seed)
    if bits == 64:
        return torch.randint(I64_MIN, I64_MAX, (n,), generator=g, dtype=torch.long)
    lim = 2 ** (bits - 1)
    return torch.randint(-lim, lim, (n,), generator=g, dtype=torch.long)


def bounded_edges(bits):
    lim = 2 ** (bits - 1)
    v = torch.tensor([0, 1, -1, lim - 1, -lim, lim // 2, -lim // 2, 2, -2], dtype=torch.long)
    return v[(v >= -lim) & (v < lim)]


def share(raw, frac=FRAC):
    """A random sharing of raw ring values, as an MPCTensor with `frac` fractional bits."""
    import crypten

    t = crypten.cryptensor(raw, precision=0)  # random PRZS sharing of the raw integers
    return crypten.mpc.MPCTensor.from_shares(t.share.clone(), precision=frac)


def reveal(x):
    return x._tensor.reveal()
