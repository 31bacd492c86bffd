"""Validity of secret-shared inputs: every coordinate in a public range, every
row's L2 norm under a public bound -- checked on the shares, before any product.

A client controls every bit of its shares, so its "update" can be any element
of Z_2^64, not only what an honest fixed-point encoder produces. Products of
such values wrap around mod 2^64 (e.g. 65536 encodes as 2^32, whose square is
0), which turns any rule built on products (norms, distances, cosines) against
itself. These checks bound the inputs exactly, for every ring element.

Protocol of :func:`check_rows` (n rows of d ring integers x, bound B >= 1
and optional norm bound N, both public):

1. (only with N) Shares of the exact squared norm ``s_i = sum_j x_ij^2`` at
   twice the input's fractional bits, without truncation: one dealer square
   pair (r, r^2) per element, open ``e = x - r`` (1 round, 8 bytes sent per
   element to every other party), ``x^2 = e^2 + 2 e r + r^2`` locally.
2. One batched comparison (6 rounds, 2 n d + n elements) of
   ``hi = [x - B >= 0]``, ``lo = [-x - B - 1 >= 0]`` and (with N)
   ``nb = [s - N^2 - 1 >= 0]``. For every x in Z_2^64 read as a signed
   integer, ``hi + lo = 0`` exactly when ``-B <= x < B`` (both sides are
   exact signed comparisons; the subtractions cannot wrap into the wrong sign
   for B <= 2^62). A row that fails the range may have a wrapped ``s``; its
   ``nb`` is then meaningless but the row is invalid anyway.
3. ``drop`` (default): ``bad_i = sum_j (hi_ij + lo_ij) + nb_i`` is a small
   integer (at most 2d + 1); one equality test ``[bad_i == 0]`` on
   ``bit_length(2d + 1) + 1`` bits (5-6 rounds, n elements) and one opening
   (1 round): **reveals one validity bit per row** and nothing else.
   ``clamp``: nothing is revealed; each coordinate is replaced by B - 1 when
   ``hi``, by -B when ``lo`` (``x + lo (-B - x)``, then ``v + hi (B - 1 - v)``:
   2 rounds of bit injection, 8 bytes per element each), so every output is
   in [-B, B) whatever the input; with N the rows are then scaled by
   ``min(1, N / ||x_i||)`` (squared norms of the clamped rows, the
   range-robust inverse square root of :mod:`pgkernels.protocols.roots`, one
   ReLU and one product).

Cost for n rows of d coordinates, 2 parties (``drop``, no N): 6 + 5 + 1 rounds
and about 26.5 bytes sent per coordinate (two 64-bit comparisons, 13.25 bytes
each); N adds 1 round and 8 bytes per coordinate. Honest rows always pass (no
error probability: every step is exact).
"""

import torch

from ..runtime import comm as _comm
from ..runtime.session import dealer_client
from . import _shares
from .compare import EQ, LT, compare_shares, mux_shares

POLICIES = ("drop", "clamp")
MAX_BOUND = 2 ** 62


def _public(t):
    return t if _comm.rank() == 0 else torch.zeros_like(t)


def _check_ring_bound(value, name):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int (ring units), got {type(value).__name__}")
    if not 1 <= value <= MAX_BOUND:
        raise ValueError(f"{name} must be in [1, 2^62] ring units, got {value}")


def square_sums(X):
    """Shares of ``sum_j x_ij^2`` (n,) for the (n, d) int64 shares X, exact mod
    2^64 at twice X's scale (no truncation): 1 round, 8 bytes per element."""
    n, d = X.shape
    if n * d == 0:
        return torch.zeros(n, dtype=torch.long)
    mat = dealer_client().crypten({"fn": "square", "size": [n, d]})
    r = mat.words[: n * d].view(n, d)
    e = X - r
    _comm.exchange(sum_tensor=e)
    r2 = mat.wait()[n * d: 2 * n * d].view(n, d)
    sq = (2 * e * r + r2).sum(1)
    if _comm.rank() == 0:
        sq += (e * e).sum(1)
    return sq


def _ring(value, frac, name):
    v = value * 2 ** frac
    if not v == v or v in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {value!r}")
    r = int(round(v))
    _check_ring_bound(r, name)
    return r


def check_rows(U, bound, max_norm=None, policy="drop"):
    """Check (or force) the validity of the rows of a shared (n, d) MPCTensor U.

    ``bound``: every coordinate must lie in ``[-bound, bound)`` (real units; at
    least one unit in the last place, at most 2^62 ring units). ``max_norm``:
    optionally every row's L2 norm must be at most this (its square at twice
    U's fractional bits must be at most 2^62). ``policy``:

    * ``"drop"``: returns ``(U restricted to the valid rows, valid)`` with
      ``valid`` a public bool tensor (n,): one bit per row is revealed.
    * ``"clamp"``: returns ``(U', None)`` with every coordinate clamped into
      ``[-bound, bound)`` and, with ``max_norm``, every row scaled to norm at
      most ``max_norm``; reveals nothing.

    Protocol, rounds and bytes: see the module docstring.
    """
    U = _shares.check_mpc(U, "U")
    if U.dim() != 2:
        raise ValueError(f"U must be 2-D (rows x coordinates), got shape {tuple(U.size())}")
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    frac = _shares.frac_bits(U.encoder.scale)
    if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not bound > 0:
        raise ValueError(f"bound must be a positive number, got {bound!r}")
    B = _ring(bound, frac, "bound")
    N2 = None
    if max_norm is not None:
        if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)) or not max_norm > 0:
            raise ValueError(f"max_norm must be a positive number, got {max_norm!r}")
        N2 = _ring(float(max_norm) ** 2, 2 * frac, "max_norm^2")
    n, d = U.size()
    X = _shares.flat_share(U).view(n, d)
    if policy == "clamp":
        return _clamp(U, X, B, max_norm, frac), None
    parts = [(X - _public(torch.full((1, 1), B, dtype=torch.long))).reshape(-1),
             (-X - _public(torch.full((1, 1), B + 1, dtype=torch.long))).reshape(-1)]
    if N2 is not None:
        parts.append(square_sums(X) - _public(torch.full((n,), N2 + 1, dtype=torch.long)))
    bits = compare_shares(torch.cat(parts), LT, 64, negate=False)  # [t >= 0]
    bad = bits[: 2 * n * d].view(2, n, d).sum((0, 2))
    if N2 is not None:
        bad = bad + bits[2 * n * d:]
    ok = compare_shares(bad, EQ, max(2, (2 * d + 1).bit_length() + 1), negate=False)  # [bad == 0]
    _comm.exchange(sum_tensor=ok)  # open: one bit per row
    valid = ok == 1
    if bool(valid.all()):
        return U, valid
    rows = torch.nonzero(valid).view(-1)
    kept = _shares.like_shape(X[rows].contiguous(), U.encoder.scale)
    return kept, valid


def _clamp(U, X, B, max_norm, frac):
    n, d = X.shape
    if n * d == 0:
        return U
    hi_t = X - _public(torch.full((1, 1), B, dtype=torch.long))
    lo_t = -X - _public(torch.full((1, 1), B + 1, dtype=torch.long))
    bits = compare_shares(torch.cat([hi_t.reshape(-1), lo_t.reshape(-1)]), LT, 64, negate=False)
    hi, lo = bits[: n * d], bits[n * d:]
    # v = lo ? -B : x, then out = hi ? B - 1 : v -- in range whatever x is, even when
    # both bits are set (x within B of +-2^63, where x - B or -x - B wraps)
    to_lo = (-X - _public(torch.full((1, 1), B, dtype=torch.long))).reshape(1, -1)
    v = X.reshape(-1) + mux_shares(lo, to_lo).view(-1)
    to_hi = (_public(torch.full((n * d,), B - 1, dtype=torch.long)) - v).view(1, -1)
    out = (v + mux_shares(hi, to_hi).view(-1)).view(n, d)
    C = _shares.like_shape(out, U.encoder.scale)
    if max_norm is None:
        return C
    from .compare import relu
    from .roots import inv_sqrt
    from .truncation import div_shares

    (sq,) = div_shares([square_sums(out)], [2 ** frac])  # squared norms at U's scale
    a = inv_sqrt(_shares.like_shape(sq, U.encoder.scale)) * float(max_norm)
    factor = a - relu(a - 1)  # min(1, N / ||x||); 0 for a zero row, whose product is 0 anyway
    return C * factor.unsqueeze(1)


__all__ = ["POLICIES", "check_rows", "square_sums"]
