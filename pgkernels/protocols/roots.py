"""Square roots, inverse square roots and reciprocals over the whole fixed-point range.

CrypTen's ``inv_sqrt`` is accurate only for inputs of roughly [0.05, 200]
(CrypTen issues #284, #367, #400), while squared norms of model updates span
many orders of magnitude. Two methods, picked by size (``method=None``):

``"table"`` (constant rounds; up to ``TABLE_MAX`` comparisons in all) --
    a piecewise-linear table on a fine grid. With X = x 2^f the encoded input
    (an integer) and ``T_0 < ... < T_{K-1}`` public integer thresholds (every
    integer up to about 2^6 at f = 16, then a geometric grid of ``STEPS``
    points per octave up to 2^37), bucket j is ``[T_j, T_{j+1})`` and the
    output there is the bucket's minimax line ``P_j(X) = A_j + B_j (X - T_j) /
    2^F_j`` (public A_j, B_j, F_j; the output scale, ``shift`` and the bucket's
    power are folded into them). :func:`reciprocal` uses the lines of 1/x.

    1. Every P_j(X) is computed for every element, whatever its bucket: K
       rows ``(X - T_j) B_j``, each divided by its public 2^F_j with the exact
       division of :mod:`pgkernels.protocols.truncation` (1 round, its dealer
       round trip overlapping it; the comparison's material is asked for in
       the same breath and travels during this round). F_j is chosen so that
       ``|(X - T_j) B_j| < 2^61`` inside bucket j; outside it the row may wrap
       and is garbage, which step 2 cancels exactly.
    2. One batched comparison of X against all K thresholds, ``b_j = [X >=
       T_j]`` (a prefix of ones), carries the payload ``w_j = P_j - P_{j-1}``
       (``P_{-1} = 0``) and multiplies it into b_j in its own last round; the
       sum telescopes, in the ring, to ``sum_j b_j w_j = P_{j*}`` for X's
       bucket j* (0 below T_0): 6 rounds, no extra one.

    8 rounds in all (one of them the dealer round trip), against about 75 for
    the "newton" method. Bytes sent per element per party (2 parties): about
    29 per threshold (comparison 13.25, payload 8, division 8), K = 2320 at
    f = 16 (fewer with a higher ``floor``): 6.8 MB for 101 values, and about
    48 bytes per threshold from the dealer; :func:`sqrt_and_inv_sqrt` gets
    both roots for 16 bytes more per threshold (a second payload and division
    row). Accuracy: the lines' relative error is below ``3/64 (2^(1/STEPS) -
    1)^2`` (9.9e-6 at STEPS = 48; exact where a bucket is a single integer),
    plus 2-3 units of 2^-f from the division and the rounding of A_j.

``"newton"`` (any size; about 75 rounds) -- normalisation by a secret power of four:

    1. One batched comparison of x against the 24 public thresholds ``4^j``,
       j = -8..15 (2^-16 is the smallest encodable value), gives bits
       ``b_j = [x >= 4^j]`` and the one-hot bucket ``h_j = b_j - b_{j+1}`` (the
       top bucket is open-ended): x lies in ``[4^j, 4^(j+1))`` (6 rounds, 24
       comparisons per element).
    2. ``m = sum_j (h_j * x) / 4^j``, in [1, 4) (up to 200 in the top bucket):
       one round of bit injection selects x into its bucket's row, then each row
       is scaled locally (multiplication by 4^-j, or CrypTen's truncation for
       j > 0, which thus touches x itself only once).
    3. ``y = 1 / sqrt(m)`` with CrypTen's ``inv_sqrt`` inside its accurate range,
       refined by one Newton step ``y (3 - m y^2) / 2``.
    4. ``1/sqrt(x) = sum_j h_j * (y / 2^j)`` and ``sqrt(x) = sum_j h_j * (m y 2^j)``:
       one more round of bit injection.

Range and accuracy: x in [2^-16, 2^37). The table's lines are within 1e-5
(1/x: 2.6e-5) of the exact value; measured end to end over the grid's edges
and a log-uniform sample, each output's 2-3 units of rounding included:
1.9e-5 for inv_sqrt, 1.2e-5 for sqrt, 3.6e-5 for 1/x (2 and 3 parties, outputs
of at least 1e5 units). The "newton" method: about
1e-4 for inv_sqrt and up to 2e-3 for sqrt of large x (3 parties; m reaches up
to 200 for x >= 2^32), plus the fixed-point resolution 2^-16 of input and output (so
x near 2^-16 is only known to a few percent, and ``inv_sqrt`` of x >= 2^32 is
below the output resolution and returns 0). x is divided only by the
dealer-assisted division of :mod:`pgkernels.protocols.truncation` (exact to 2
units; CrypTen's truncation would fail with probability about ``x * 2^-47``,
e.g. 2^-17 at x = 2^30); the "newton" method's steps on [1, 4) use CrypTen's.
Inputs below 2^-16 (0 included, and negative values) fall in no bucket: both
functions return 0 there. Above the range the "table" method saturates at
the value for 2^37. Reveals nothing.
"""

import functools
import math

import torch

from ..runtime import comm as _comm
from . import compare as _compare
from . import shares
from .compare import LT, compare_shares, mux_shares

J = list(range(-8, 16))  # "newton": thresholds 4^j; the top bucket is open-ended

STEPS = 48  # "table": grid points per octave (line error 3/64 (2^(1/STEPS) - 1)^2)
TOP = 37  # "table": the grid ends at 2^TOP; above it the output saturates
TABLE_MAX = 1 << 22  # "table" while elements x thresholds stay within this
METHODS = ("table", "newton")


# --- "table": piecewise-linear on a fine grid ---------------------------------------

@functools.lru_cache(maxsize=64)
def _table(kind, shift, frac, floor):
    """Thresholds T (K,) and per-bucket A (output units), B, F for
    ``P_j(X) = A_j + floor((X - T_j) B_j / 2^F_j)``: int64 tensors."""
    lo = 2.0 ** (2 * floor)  # smallest input kept, in real terms
    top = TOP * STEPS
    T = sorted({max(1, math.ceil(2.0 ** (k / STEPS + frac))) for k in range(2 * floor * STEPS, top + 1)
                if 2.0 ** (k / STEPS) >= lo})
    if kind == "inv":
        c, p = 2.0 ** (frac + shift) * 2.0 ** (frac / 2), -0.5  # out(X) = c X^-1/2 (units of 2^-f)
    elif kind == "recip":
        c, p = 2.0 ** (2 * frac + shift), -1.0  # out(X) = c / X
    else:
        c, p = 2.0 ** (frac / 2), 0.5  # out(X) = c X^1/2
    f = lambda X: c * X ** p  # noqa: E731
    A, B, F = [], [], []
    for j, a in enumerate(T):
        if j + 1 == len(T):  # open-ended top bucket: saturate
            A.append(round(f(a)))
            B.append(0)
            F.append(0)
            continue
        e = T[j + 1] - 1  # X is an integer: the bucket is {a, ..., e}
        if e == a:
            A.append(round(f(a)))
            B.append(0)
            F.append(0)
            continue
        s = (f(e) - f(a)) / (e - a)
        xi = (s / (p * c)) ** (1 / (p - 1))  # where f' = s: the chord's farthest point
        d = f(a) + s * (xi - a) - f(xi)
        # floor division: +0.5 centres its rounding
        A.append(math.floor(f(a) - d / 2 + 0.5 + 0.5))
        mag = abs(s) * (e - a)
        Fj = min(62, math.floor(61 - math.log2(mag))) if mag > 0 else 0
        Fj = max(Fj, 0)
        B.append(round(s * 2.0 ** Fj))
        F.append(Fj)
    long = functools.partial(torch.tensor, dtype=torch.long)
    return long(T), long(A), long(B), long(F)


def _table_eval(specs, x, floor):
    """The "table" method for each (kind, shift) in specs, on the same x and
    in the same rounds: the divisions of all specs in one round, their
    payloads on one comparison. Returns one MPCTensor per spec."""
    x = shares.check_mpc(x, "x")
    frac = shares.frac_bits(x.encoder.scale)
    fs = shares.flat_share(x)
    N = fs.numel()
    if N == 0:
        return [x.clone() for _ in specs]
    tables = []
    for spec in specs:
        kind, shift = spec[:2]
        T_, A_, B_, F_ = [t.to(fs.device) for t in _table(kind, shift, frac, floor)]
        if len(spec) > 2 and spec[2] is not None:
            # 0 below 4^zero_below: those buckets' lines are 0 (the cached table is not touched)
            low = T_ < 2 ** (2 * spec[2] + frac)
            # F = 0: those rows are not divided, so they are exactly 0
            A_, B_, F_ = A_.masked_fill(low, 0), B_.masked_fill(low, 0), F_.masked_fill(low, 0)
        tables.append([T_, A_, B_, F_])
    # (the thresholds depend on frac and floor only)
    T = tables[0][0]
    K, S = T.numel(), len(specs)
    rank0 = _comm.rank() == 0
    # step 1: every bucket's line at X (garbage outside its bucket, cancelled below)
    d = fs.view(1, N) - (T.view(K, 1) if rank0 else torch.zeros_like(T).view(K, 1))
    B = torch.cat([t[2] for t in tables])
    F = torch.cat([t[3] for t in tables])
    rows = d.repeat(S, 1) * B.view(S * K, 1)  # wraps mod 2^64 outside the bucket: harmless
    from .truncation import div_shares

    groups = [torch.nonzero(F == v).view(-1) for v in torch.unique(F).tolist()]
    divs = [2 ** int(F[g[0]]) for g in groups]
    prefetch = (K * N, 64, LT, S) if _compare.PREFETCH else None
    parts = div_shares([rows[g].reshape(-1).contiguous() for g in groups], divs, prefetch=prefetch)
    P = torch.empty_like(rows)
    for g, part in zip(groups, parts):
        P[g] = part.view(-1, N)
    P = P.view(S, K, N)
    if rank0:
        P += torch.stack([t[1] for t in tables]).view(S, K, 1)
    # step 2: b_j = [X >= T_j] times w_j = P_j - P_{j-1}; the sum telescopes to P_{j*}
    w = P.clone()
    w[:, 1:] -= P[:, :-1]
    out = compare_shares(d.reshape(-1), LT, 64, negate=False, payloads=w.reshape(S, -1))
    out = out.view(S, K, N).sum(1)
    return [shares.like_shape(o.reshape(x.size()), x.encoder.scale) for o in out]


def table(x, specs, floor=-8):
    """Several functions of the same shared x in the rounds of one table
    evaluation (the "table" method of the module docstring: 8 rounds; bytes
    grow with the number of specs by a payload and a division row each).

    ``specs``: ``(kind, shift)`` or ``(kind, shift, zero_below)`` with kind
    "sqrt" (``sqrt(x)``), "inv" (``2^shift / sqrt(x)``) or "recip"
    (``2^shift / x``); ``zero_below`` (an int in [floor, 15]) makes that
    output 0 where ``x < 4^zero_below`` (as ``floor`` does for all), e.g. to
    treat squared norms that are only truncation noise as zero rows in one
    output but not in another. Returns one MPCTensor per spec. Reveals nothing.
    """
    _check_floor(floor)
    if not isinstance(specs, (list, tuple)) or not specs:
        raise ValueError("specs must be a non-empty list of (kind, shift[, zero_below])")
    for spec in specs:
        if not isinstance(spec, tuple) or len(spec) not in (2, 3) or spec[0] not in ("sqrt", "inv", "recip"):
            raise ValueError(f"each spec must be (kind, shift[, zero_below]) with kind sqrt/inv/recip, got {spec!r}")
        shift = spec[1]
        if isinstance(shift, bool) or not isinstance(shift, int) or not 0 <= shift <= 16:
            raise ValueError(f"shift must be an int in [0, 16], got {shift!r}")
        if len(spec) == 3 and spec[2] is not None and (
                isinstance(spec[2], bool) or not isinstance(spec[2], int) or not floor <= spec[2] <= J[-1]):
            raise ValueError(f"zero_below must be an int in [{floor}, {J[-1]}], got {spec[2]!r}")
    return _table_eval(list(specs), x, floor)


def _pick(method, n):
    if method is None:
        return "table" if n * len(_table("inv", 0, 16, -8)[0]) <= TABLE_MAX else "newton"
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS} or None, got {method!r}")
    return method


# --- "newton": power-of-four buckets and CrypTen's inv_sqrt ---------------------------


def _bucket_bits(x_flat, frac):
    """Shared one-hot h (len(J), N) of x's power-of-four bucket (scale 1)."""
    N = x_flat.numel()
    K = len(J)
    thr = torch.tensor([2 ** (2 * j + frac) for j in J], dtype=torch.long, device=x_flat.device).view(K, 1)
    diff = x_flat.view(1, N).expand(K, N) - (thr if _comm.rank() == 0 else torch.zeros_like(thr))
    b = compare_shares(diff.reshape(-1), LT, 64, negate=False).view(K, N)  # [x >= 4^j]
    h = b.clone()
    h[:-1] -= b[1:]
    return h


def _scaled_copies(x, powers, frac):
    """Stack of x * 2^p for the public integer exponents p (MPCTensor, x's scale)."""
    K = len(powers)
    rows = shares.like_shape(shares.raw_share(x).reshape(1, -1).expand(K, -1).contiguous(), x.encoder.scale)
    return _scaled_rows(rows, powers, frac)


def _scaled_rows(t, powers, frac):
    """Row k of the (K, N) MPCTensor t times 2^powers[k] (truncation for negative powers)."""
    mpc = shares.mpc_module()
    ts = shares.raw_share(t)
    up = torch.tensor([2 ** p if p >= 0 else 1 for p in powers], dtype=torch.long, device=ts.device).view(-1, 1)
    down = torch.tensor([2 ** -p if p < 0 else 1 for p in powers], dtype=torch.long, device=ts.device).view(-1, 1)
    out = mpc.MPCTensor.from_shares((ts * up).contiguous(), precision=frac)
    if any(p < 0 for p in powers):
        # x itself (a squared norm, up to 2^62 in the ring) is divided here: exactly
        from .truncation import div_

        div_(out._tensor, down.expand(shares.raw_share(out).shape).contiguous())
    return out


def _select(h, values):
    """sum_j h_j * values_j for one-hot bit shares h (K, N) and an MPCTensor (K, N)."""
    K, N = h.shape
    prod = mux_shares(h.reshape(-1), shares.raw_share(values).reshape(1, -1)).view(K, N)
    return shares.like_shape(prod.sum(0), values.encoder.scale)


def _inv_sqrt_near_one(m):
    """1/sqrt(m) for m in [1, 200]: CrypTen's approximation plus one Newton step."""
    y = m.inv_sqrt()
    return y * (3 - m * y.square()) * 0.5


def _normalized(x, floor=-8):
    x = shares.check_mpc(x, "x")
    _check_floor(floor)
    frac = shares.frac_bits(x.encoder.scale)
    flat = x.flatten()
    fs = shares.flat_share(flat)
    h = _bucket_bits(fs, frac)
    h[: floor - J[0]] = 0  # inputs below 4^floor count as 0 (a local change of a one-hot)
    K, N = h.shape
    # Select first (h_j * x: x in its own bucket, 0 elsewhere), then scale each
    # row by 4^-j: only the selected copy of x is ever truncated, so CrypTen's
    # truncation (which fails with probability ~|x| 2^-63) runs once per element.
    picked = mux_shares(h.reshape(-1), fs.view(1, N).expand(K, N).reshape(1, -1)).view(K, N)
    rows = shares.like_shape(picked.contiguous(), x.encoder.scale)
    m = _scaled_rows(rows, [-2 * j for j in J], frac).sum(0)  # in [1, 4)
    return x, flat, h, m, frac


def _check_floor(floor):
    if isinstance(floor, bool) or not isinstance(floor, int) or not J[0] <= floor <= J[-1]:
        raise ValueError(f"floor must be an int in [{J[0]}, {J[-1]}], got {floor!r}")


def inv_sqrt(x, shift=0, floor=-8, method=None):
    """``2^shift / sqrt(x)`` for shared x in [2^-16, 2^37); 0 below. See the module docstring.

    ``shift`` (an int in [0, 16]) keeps more significant bits of small results
    (1/sqrt of large x) in the 16-bit fixed point; divide by 2^shift later.
    ``floor`` (int in [-8, 15]): inputs below ``4^floor`` return 0, e.g. to
    treat squared norms that are only truncation noise as zero.
    ``method``: "table" (8 rounds), "newton" (about 75 rounds, any size) or
    None (the table up to ``TABLE_MAX`` comparisons, i.e. about 1800 values).
    """
    if isinstance(shift, bool) or not isinstance(shift, int) or not 0 <= shift <= 16:
        raise ValueError(f"shift must be an int in [0, 16], got {shift!r}")
    x = shares.check_mpc(x, "x")
    _check_floor(floor)
    if _pick(method, x.share.numel()) == "table":
        return _table_eval([("inv", shift)], x, floor)[0]
    x, flat, h, m, frac = _normalized(x, floor)
    if flat.numel() == 0:
        return x.clone()
    y = _inv_sqrt_near_one(m)
    out = _select(h, _scaled_copies(y, [shift - j for j in J], frac))
    return out.reshape(x.size())


def sqrt(x, method=None):
    """``sqrt(x)`` for shared x in [2^-16, 2^37); 0 below. See the module docstring
    (``method`` as for :func:`inv_sqrt`)."""
    x = shares.check_mpc(x, "x")
    if _pick(method, x.share.numel()) == "table":
        return _table_eval([("sqrt", 0)], x, J[0])[0]
    x, flat, h, m, frac = _normalized(x)
    if flat.numel() == 0:
        return x.clone()
    r = m * _inv_sqrt_near_one(m)  # sqrt(m) in [1, 2)
    out = _select(h, _scaled_copies(r, list(J), frac))
    return out.reshape(x.size())


def sqrt_and_inv_sqrt(x, shift=0, floor=-8, method=None):
    """``(sqrt(x), 2^shift / sqrt(x))`` together (arguments as for
    :func:`inv_sqrt`; both are 0 below ``4^floor``): with the "table" method
    in the 8 rounds of one of them (2 payload rows on the one comparison, the
    divisions of both in one round); with "newton" they share the
    normalisation. Reveals nothing."""
    if isinstance(shift, bool) or not isinstance(shift, int) or not 0 <= shift <= 16:
        raise ValueError(f"shift must be an int in [0, 16], got {shift!r}")
    x = shares.check_mpc(x, "x")
    _check_floor(floor)
    if _pick(method, x.share.numel()) == "table":
        r, y = _table_eval([("sqrt", 0), ("inv", shift)], x, floor)
        return r, y
    x, flat, h, m, frac = _normalized(x, floor)
    if flat.numel() == 0:
        return x.clone(), x.clone()
    y = _inv_sqrt_near_one(m)
    r = _select(h, _scaled_copies(m * y, list(J), frac))
    inv = _select(h, _scaled_copies(y, [shift - j for j in J], frac))
    return r.reshape(x.size()), inv.reshape(x.size())


def reciprocal(x, shift=0, floor=-8, method=None):
    """``2^shift / x`` for shared x in [2^-16, 2^37); 0 below ``4^floor``
    (arguments as for :func:`inv_sqrt`). "table": the lines of ``1/x`` in the
    8 rounds of :func:`inv_sqrt`, relative error below ``(2^(1/STEPS) -
    1)^2 / 8`` (2.7e-5) plus 2-3 units; "newton": the square of
    ``inv_sqrt(x, ceil(shift / 2))`` (one more multiplication). Reveals nothing."""
    if isinstance(shift, bool) or not isinstance(shift, int) or not 0 <= shift <= 16:
        raise ValueError(f"shift must be an int in [0, 16], got {shift!r}")
    x = shares.check_mpc(x, "x")
    _check_floor(floor)
    if _pick(method, x.share.numel()) == "table":
        return _table_eval([("recip", shift)], x, floor)[0]
    h = (shift + 1) // 2
    y = inv_sqrt(x, shift=h, floor=floor, method="newton").square()
    return y / 2 if 2 * h > shift else y


def norm(X, dim=-1, keepdim=False, method=None):
    """Euclidean norm of a shared tensor along ``dim`` (sum of squares, then :func:`sqrt`)."""
    X = shares.check_mpc(X, "X")
    return sqrt((X * X).sum(dim, keepdim=keepdim), method=method)
