"""Square roots and inverse square roots over the whole fixed-point range.

CrypTen's ``inv_sqrt`` is accurate only for inputs of roughly [0.05, 200]
(CrypTen issues #284, #367, #400), while squared norms of model updates span
many orders of magnitude. Here the input is first normalised by a secret
power of four:

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

Range and accuracy: x in [2^-16, 2^37). Relative error about 1e-5 from the
Newton steps (up to about 3e-4 with 3 parties for x >= 2^32, where m reaches
up to 200), plus the fixed-point resolution 2^-16 of input and output (so
x near 2^-16 is only known to a few percent, and ``inv_sqrt`` of x >= 2^32 is
below the output resolution and returns 0). x is divided once, by the
dealer-assisted division of :mod:`pgkernels.protocols.truncation` (exact to 2
units; CrypTen's truncation would fail with probability about ``x * 2^-47``,
e.g. 2^-17 at x = 2^30); the Newton steps on [1, 4) use CrypTen's. Inputs
below 2^-16 (0 included, and negative values) fall in no bucket: both
functions return 0 there. Reveals nothing.
"""

import torch

from ..runtime import comm as _comm
from . import shares
from .compare import LT, compare_shares, mux_shares

J = list(range(-8, 16))  # thresholds 4^j; the top bucket is open-ended


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
    if isinstance(floor, bool) or not isinstance(floor, int) or not J[0] <= floor <= J[-1]:
        raise ValueError(f"floor must be an int in [{J[0]}, {J[-1]}], got {floor!r}")
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


def inv_sqrt(x, shift=0, floor=-8):
    """``2^shift / sqrt(x)`` for shared x in [2^-16, 2^37); 0 below. See the module docstring.

    ``shift`` (an int in [0, 16]) keeps more significant bits of small results
    (1/sqrt of large x) in the 16-bit fixed point; divide by 2^shift later.
    ``floor`` (int in [-8, 15]): inputs below ``4^floor`` return 0, e.g. to
    treat squared norms that are only truncation noise as zero.
    """
    if isinstance(shift, bool) or not isinstance(shift, int) or not 0 <= shift <= 16:
        raise ValueError(f"shift must be an int in [0, 16], got {shift!r}")
    x, flat, h, m, frac = _normalized(x, floor)
    if flat.numel() == 0:
        return x.clone()
    y = _inv_sqrt_near_one(m)
    out = _select(h, _scaled_copies(y, [shift - j for j in J], frac))
    return out.reshape(x.size())


def sqrt(x):
    """``sqrt(x)`` for shared x in [2^-16, 2^37); 0 below. See the module docstring."""
    x, flat, h, m, frac = _normalized(x)
    if flat.numel() == 0:
        return x.clone()
    r = m * _inv_sqrt_near_one(m)  # sqrt(m) in [1, 2)
    out = _select(h, _scaled_copies(r, list(J), frac))
    return out.reshape(x.size())


def norm(X, dim=-1, keepdim=False):
    """Euclidean norm of a shared tensor along ``dim`` (sum of squares, then :func:`sqrt`)."""
    X = shares.check_mpc(X, "X")
    return sqrt((X * X).sum(dim, keepdim=keepdim))
