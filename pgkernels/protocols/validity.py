"""Validity of secret-shared inputs: every coordinate in a public range, every
row's L2 norm under a public bound -- checked on the shares, before any product.

A client controls every bit of its shares, so its "update" can be any element
of Z_2^64, not only what an honest fixed-point encoder produces. Products of
such values wrap around mod 2^64 (e.g. 65536 encodes as 2^32, whose square is
0), which turns any rule built on products (norms, distances, cosines) against
itself. These checks bound the inputs exactly, for every ring element.

Protocol of :func:`check_rows` with ``policy="drop"`` (n rows of d ring
integers x; public bound ``B = 2^(k-1)`` ring units, a power of two as
:func:`pgkernels.defenses.validity.input_bound` returns; p parties;
optional public norm bound N):

1. ``y = x + 2^(k-1)``; x is in range exactly when ``y < 2^k`` read as an
   unsigned 64-bit integer, i.e. when ``y_H = floor(y / 2^k)`` is 0. Each
   party splits its own share ``s = 2^k h + l`` (``l < 2^k``) locally. Over
   the integers ``sum_p s_p = y + W 2^64`` for some wrap count W, so
   ``sum_p h_p + delta = y_H + W 2^(64-k)`` with the carry
   ``delta = floor(sum_p l_p / 2^k)`` in [0, p - 1]. Hence
   ``z = 2^k (sum_p h_p + delta) = 2^k y_H mod 2^64`` -- the wrap term
   vanishes -- and ``z = 0`` exactly when x is in range, for every ring
   element x.
2. The carry: ``delta = sum_{m=1}^{p-1} [m 2^k - 1 - sum_p l_p < 0]``, each a
   comparison on ``k + 1 + ceil(log2(p - 1))`` bits of a value that every
   party's own ``l_p`` determines (no masked copy of x is opened): one
   batched comparison (6 rounds; for k < 32 the opening is 4 bytes, plus
   about 2 bytes of tree, per element and per ``m``).
3. Zero test of all d values of a row at once: the parties agree on public
   random ``rho`` (s x d, s = 40; each party contributes a fresh 16-byte
   ``secrets`` key, XOR-combined in 1 round, expanded with AES-CTR) drawn
   after the shares are fixed, and compute ``t = z rho^T`` locally (n x s).
   For a row with some ``z_j != 0``, ``t_l = 0`` has probability at most 1/2
   per sketch (conditioned on the other coefficients, ``rho_lj z_j`` takes at
   least two values), so an invalid row passes with probability at most
   ``2^-40``; a valid row always passes.
4. (with N) exact squared norms ``s_i = sum_j x_ij^2`` at twice the input's
   fractional bits, without truncation (one dealer square pair per element,
   open ``x - r``: 1 round, 8 bytes per element), and
   ``nb_i = [s_i - N^2 - 1 >= 0]`` (a comparison of n values). A row that
   fails the range may have a wrapped ``s_i``; it is invalid anyway.
5. ``[t_il == 0]`` for the n s sketch values (one 64-bit equality test),
   ``bad_i = sum_l (1 - [t_il == 0]) + nb_i`` and ``valid_i = [bad_i == 0]``
   (a small equality test) opened (1 round): **one validity bit per row is
   revealed**, nothing else.

Cost, 2 parties, n d coordinates: about 6 bytes sent per coordinate and a local
(n x d) by (d x 40) ring product, about 19 rounds in all; the norm bound adds
8 bytes per coordinate and 7 rounds.

``method="compare"`` (and any bound that is not a power of two) uses two
64-bit comparisons per coordinate instead of steps 1-3: ``[x - B >= 0]`` and
``[-x - B - 1 >= 0]``, which for every signed 64-bit x are both 0 exactly when
``-B <= x < B``; ``bad_i`` counts them (6 rounds, 26.5 bytes per coordinate,
deterministic).

``policy="clamp"``: nothing is revealed; the two comparisons per coordinate
as above, then each coordinate is replaced by B - 1 when ``[x - B >= 0]`` and
by -B when ``[-x - B - 1 >= 0]`` (``v = x + lo (-B - x)``, then
``v + hi (B - 1 - v)``: 2 rounds of bit injection, 8 bytes per element each),
so every output is in [-B, B) whatever the input; with N the rows are then
scaled by ``min(1, N / ||x_i||)`` (squared norms of the clamped rows, the
range-robust inverse square root of :mod:`pgkernels.protocols.roots`, one
ReLU and one product).
"""

import secrets

import torch

from ..runtime import comm as _comm
from ..runtime.dealer import stream
from ..runtime.session import dealer_client
from . import shares
from .blocks import public_share
from .compare import EQ, LT, compare_shares, mux_shares
from .linalg import ring_matmul_nt

POLICIES = ("drop", "clamp")
MAX_BOUND = 2 ** 62


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


SKETCHES = 40  # zero-test repetitions: an invalid row passes with probability <= 2^-40
METHODS = ("carry", "compare")


def _const(value, shape):
    return public_share(torch.full(shape, value, dtype=torch.long))


def _carry_sketches(X, k):
    """Steps 1-3 of the module docstring: (n, SKETCHES) shares of ``z rho^T``,
    all zero for the rows with every coordinate in [-2^(k-1), 2^(k-1))."""
    n, d = X.shape
    p = _comm.world_size()
    y = X + _const(1 << (k - 1), (1, 1))
    low = y & ((1 << k) - 1)
    high = (y >> k) & ((1 << (64 - k)) - 1) if k < 64 else torch.zeros_like(y)
    # carry of the parties' low parts: delta = sum_m [m 2^k - 1 - sum_p l_p < 0]
    ts = [(_const((m << k) - 1, (1, 1)) - low).reshape(-1) for m in range(1, p)]
    bits = k + 1 + (p - 2).bit_length()
    lt = compare_shares(torch.cat(ts), LT, bits, negate=True)  # [t < 0]
    delta = lt.view(p - 1, n, d).sum(0)
    z = (high + delta) << k
    # public sketch coefficients, fixed only now that every share is in place
    key = torch.frombuffer(bytearray(secrets.token_bytes(16)), dtype=torch.uint8).clone()
    _comm.exchange(xor_tensor=key)
    rho = stream(key, 0, SKETCHES * d).view(SKETCHES, d)
    return ring_matmul_nt(z, rho)


def plan(n, d, k, parties=2):
    """``"carry"`` or ``"compare"``, whichever the cost model
    (:mod:`pgkernels.protocols.cost`) expects to be faster for n rows of d
    coordinates, bound 2^(k-1) ring units: the carry method has about 5 more
    rounds and a local sketch product, the comparison method 4x the bytes."""
    from .cost import MODEL, compare_cost

    nd, p = n * d, parties
    r_small, b_small = compare_cost(max(2, (SKETCHES + 1).bit_length() + 1), EQ, 0)
    r_eq, b_eq = compare_cost(64, EQ, 0)
    r_c, b_c = compare_cost(min(64, k + 1 + (p - 2).bit_length()), LT, 0)
    carry = MODEL.time(r_c + 1 + r_eq + r_small + 1,
                       (p - 1) * ((p - 1) * b_c * nd + b_eq * n * SKETCHES + b_small * n + 16),
                       (p - 1) * nd + n * SKETCHES + n, nd)  # sketch: ~0.2 ns per product, ~8 ns per element
    r_64, b_64 = compare_cost(64, LT, 0)
    r_w, b_w = compare_cost(max(2, (2 * d + 1).bit_length() + 1), EQ, 0)
    compare = MODEL.time(r_64 + r_w + 1, (p - 1) * (2 * b_64 * nd + b_w * n), 2 * nd + n, 0)
    return "carry" if carry <= compare else "compare"


def check_rows(U, bound, max_norm=None, policy="drop", method=None):
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

    ``method`` (drop only): ``"carry"`` (probabilistic: an invalid row passes
    with probability at most 2^-40; needs a bound that is a power of two in
    ring units) or ``"compare"`` (two 64-bit comparisons per coordinate,
    deterministic); by default the one :func:`plan` expects to be faster. Protocols, rounds and bytes: see the module docstring.
    """
    U = shares.check_mpc(U, "U")
    if U.dim() != 2:
        raise ValueError(f"U must be 2-D (rows x coordinates), got shape {tuple(U.size())}")
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    if method is not None and method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    frac = shares.frac_bits(U.encoder.scale)
    if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not bound > 0:
        raise ValueError(f"bound must be a positive number, got {bound!r}")
    B = _ring(bound, frac, "bound")
    N2 = None
    if max_norm is not None:
        if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)) or not max_norm > 0:
            raise ValueError(f"max_norm must be a positive number, got {max_norm!r}")
        N2 = _ring(float(max_norm) ** 2, 2 * frac, "max_norm^2")
    power_of_two = B & (B - 1) == 0
    if method == "carry" and not power_of_two:
        raise ValueError(f"method='carry' needs a power-of-two bound in ring units, got {B}")
    n, d = U.size()
    if method is None:
        method = plan(n, d, B.bit_length(), _comm.world_size()) if power_of_two else "compare"
    X = shares.flat_share(U).view(n, d)
    if policy == "clamp":
        return _clamp(U, X, B, max_norm, frac), None
    if n == 0:
        return U, torch.zeros(0, dtype=torch.bool)
    norm_bad = None
    if N2 is not None:
        sq = square_sums(X) - _const(N2 + 1, (n,))
        norm_bad = compare_shares(sq, LT, 64, negate=False)  # [s - N^2 - 1 >= 0]
    if method == "carry":
        if d:
            t = _carry_sketches(X, B.bit_length())
            nonzero = compare_shares(t.reshape(-1), EQ, 64, negate=True).view(n, SKETCHES)  # [t != 0]
            bad = nonzero.sum(1)
        else:
            bad = torch.zeros(n, dtype=torch.long)
        width = SKETCHES + 1
    else:
        parts = [(X - _const(B, (1, 1))).reshape(-1), (-X - _const(B + 1, (1, 1))).reshape(-1)]
        bits = compare_shares(torch.cat(parts), LT, 64, negate=False)  # [t >= 0]
        bad = bits.view(2, n, d).sum((0, 2))
        width = 2 * d + 1
    if norm_bad is not None:
        bad = bad + norm_bad
    ok = compare_shares(bad, EQ, max(2, width.bit_length() + 1), negate=False)  # [bad == 0]
    _comm.exchange(sum_tensor=ok)  # open: one bit per row
    valid = ok == 1
    if bool(valid.all()):
        return U, valid
    rows = torch.nonzero(valid).view(-1)
    kept = shares.like_shape(X[rows].contiguous(), U.encoder.scale)
    return kept, valid


def _clamp(U, X, B, max_norm, frac):
    n, d = X.shape
    if n * d == 0:
        return U
    hi_t = X - public_share(torch.full((1, 1), B, dtype=torch.long))
    lo_t = -X - public_share(torch.full((1, 1), B + 1, dtype=torch.long))
    bits = compare_shares(torch.cat([hi_t.reshape(-1), lo_t.reshape(-1)]), LT, 64, negate=False)
    hi, lo = bits[: n * d], bits[n * d:]
    # v = lo ? -B : x, then out = hi ? B - 1 : v -- in range whatever x is, even when
    # both bits are set (x within B of +-2^63, where x - B or -x - B wraps)
    to_lo = (-X - public_share(torch.full((1, 1), B, dtype=torch.long))).reshape(1, -1)
    v = X.reshape(-1) + mux_shares(lo, to_lo).view(-1)
    to_hi = (public_share(torch.full((n * d,), B - 1, dtype=torch.long)) - v).view(1, -1)
    out = (v + mux_shares(hi, to_hi).view(-1)).view(n, d)
    C = shares.like_shape(out, U.encoder.scale)
    if max_norm is None:
        return C
    from .compare import relu
    from .roots import inv_sqrt
    from .truncation import div_shares

    (sq,) = div_shares([square_sums(out)], [2 ** frac])  # squared norms at U's scale
    a = inv_sqrt(shares.like_shape(sq, U.encoder.scale)) * float(max_norm)
    factor = a - relu(a - 1)  # min(1, N / ||x||); 0 for a zero row, whose product is 0 anyway
    from .truncation import exact

    # CrypTen's own truncation fails with probability ~|x| 2^-63, off by 2^48: a
    # reduced-width comparison downstream would not see it (it vanishes mod 2^k)
    with exact():
        return C * factor.unsqueeze(1)


__all__ = ["METHODS", "POLICIES", "SKETCHES", "check_rows", "plan", "square_sums"]
