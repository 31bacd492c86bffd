"""Local randomness that protects something (noise shares), from AES-CTR.

torch's and numpy's generators are Mersenne Twister / PCG: their state follows
from a few outputs or from a small seed (``torch.manual_seed`` keeps 64 bits,
and processes started the same way often share one), so a party that knows
the seed can recompute another's "random" noise and strip it. Here every call
draws a fresh 128-bit key from ``secrets`` and expands it with the AES-128-CTR
stream of :mod:`pgkernels.runtime.dealer` (csrc/core/prg).
"""

import math
import secrets

import torch

from .dealer import stream


def _words(n):
    key = torch.frombuffer(bytearray(secrets.token_bytes(16)), dtype=torch.uint8).clone()
    return stream(key, 0, n)


def uniform(n):
    """n float64 values uniform in (0, 1]: 53 random bits each, never 0."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    w = _words(n)
    mant = (w >> 11) & ((1 << 53) - 1)  # top 53 bits (arithmetic shift, then masked)
    return (mant.double() + 1.0) * 2.0 ** -53


def normal(n):
    """n float64 standard normal values by the Box-Muller transform of AES-CTR
    uniforms (two normals per pair of uniforms)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    m = (n + 1) // 2
    u = uniform(2 * m)
    radius = torch.sqrt(-2.0 * torch.log(u[:m]))
    angle = (2.0 * math.pi) * u[m:]
    return torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)])[:n]
