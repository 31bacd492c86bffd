"""Division of shared values by public integers without CrypTen's failure mode.

CrypTen truncates a fixed-point product (and divides by any public integer)
locally with 2 parties: each party divides its own share. That is off by one
unit in the last place with probability about ``1 - |x| / 2^63``, and off by
about ``2^64 / D`` -- for a product at scale 2^32 divided by 2^16, 2^48 in
real terms -- with probability about ``|x| / 2^63``. Its 3-party protocol
(wraps) drops a wrap term and fails the same way. For honest inputs of small
magnitude the failure is rare, but a malicious client that sends values at the
edge of the admissible range can push an intermediate towards 2^62 and make a
failure likely: e.g. a Krum distance that comes out as -2^48, so that the
attacker is selected.

Protocol (any number of parties, dealer-assisted; x in ``[-2^62, 2^62)``):

1. The dealer draws r uniform in ``Z_2^64`` and gives the parties additive
   shares of r, of ``floor(r / D)`` and of ``msb(r)`` (r read as unsigned).
2. The parties open ``c = x + 2^62 + r mod 2^64`` (1 round, 8 bytes sent per
   element to every other party; c is one-time padded by r).
3. With ``y = x + 2^62`` in ``[0, 2^63)``: ``y = c - r + 2^64 w``, where the
   wrap ``w = [c < r]`` equals ``msb(r) AND NOT msb(c)`` (y has no top bit), a
   local function of the shares of ``msb(r)`` since c is public. So
   ``floor(y / D) = floor(c / D) - floor(r / D) + w floor(2^64 / D) + e`` with
   ``e`` in {-1, 0, 1}, all terms known or shared; subtract ``floor(2^62 / D)``.

The result is within 2 units of ``floor(x / D)`` for every x in
``[-2^62, 2^62)``, with probability 1 -- there is no large error. Outside that
range the result is meaningless (callers bound their inputs; see
:mod:`pgkernels.defenses.validity`). Cost: 1 round and 8 (n-1) bytes sent per
element, against 0 rounds for CrypTen's local 2-party truncation; the dealer
sends 16 bytes per element to the request's corrected party. Reveals nothing.

:func:`install` routes every ``ArithmeticSharedTensor.div_`` by a public
integer (CrypTen's truncation after each multiplication, matmul, square and
its divisions) through this protocol in the calling process; the aggregation
servers (:mod:`pgkernels.serving`) install it at start-up. Other sessions keep
CrypTen's local truncation (no extra round per multiplication).
"""

import contextlib

import torch

from ..runtime import comm as _comm
from ..runtime.dealer import udiv
from ..runtime.session import dealer_client

OFFSET = 2 ** 62
MAX_DIVISOR = 2 ** 62


def _check_divisor(D):
    if isinstance(D, bool) or not isinstance(D, int):
        raise TypeError(f"divisor must be an int, got {type(D).__name__}")
    if not 1 <= D <= MAX_DIVISOR:
        raise ValueError(f"divisor must be in [1, 2^62], got {D}")


def div_shares(shares, divisors):
    """This party's shares of ``x_k / D_k`` (rounded down, within 2 units) for
    flat int64 share tensors ``shares[k]`` and positive int ``divisors[k]``:
    one round for all of them together."""
    for D in divisors:
        _check_divisor(D)
    client = dealer_client()
    rank0 = _comm.rank() == 0
    todo = [i for i, (s, D) in enumerate(zip(shares, divisors)) if D != 1 and s.numel()]
    jobs = []
    for i, (share, D) in enumerate(zip(shares, divisors)):
        share = share.reshape(-1)
        n = share.numel()
        if i not in todo:
            jobs.append((share.clone(), D, None, None))
            continue
        mat = client.crypten({"fn": "trunc", "size": [n], "divisor": int(D)})
        c = share + mat.words[:n]
        if rank0:
            c += OFFSET
        if i != todo[-1]:
            # the dealer client reuses its word buffers two requests later: keep these
            mat = mat.wait().clone()
        jobs.append((c, D, mat, n))
    opened = [c for c, _, mat, _ in jobs if mat is not None]
    if opened:
        _comm.exchange(sum_tensor=opened)
    out = []
    for c, D, mat, n in jobs:
        if mat is None:
            out.append(c)
            continue
        words = mat if torch.is_tensor(mat) else mat.wait()
        q_r, msb_r = words[n:2 * n], words[2 * n:3 * n]
        top_c = c < 0  # msb(c), public
        w = torch.where(top_c, torch.zeros_like(msb_r), msb_r)
        wrap_q = 2 ** 64 // D
        # w * floor(2^64 / D) mod 2^64: the constant may exceed int64 (D = 1 is handled above)
        res = -q_r + w * _ring_const(wrap_q)
        if rank0:
            res += udiv(c, D) - OFFSET // D
        out.append(res)
    return out


def _ring_const(v):
    """A Python int as the int64 with the same value mod 2^64."""
    v %= 2 ** 64
    return v - 2 ** 64 if v >= 2 ** 63 else v


def div_(x, divisor):
    """In place: the ArithmeticSharedTensor x divided by a public integer (or
    an integer tensor broadcastable to x), rounded down within 2 units."""
    share = x.share
    if torch.is_tensor(divisor) and divisor.numel() > 1:
        D = torch.broadcast_to(divisor.long(), share.shape).reshape(-1)
        flat = share.reshape(-1)
        values = [int(v) for v in torch.unique(D).tolist()]
        signs = {v: (1 if v > 0 else -1) for v in values}
        idx = [torch.nonzero(D == v).view(-1) for v in values]
        parts = div_shares([flat[i] for i in idx], [abs(v) for v in values])
        out = torch.empty_like(flat)
        for i, v, part in zip(idx, values, parts):
            out[i] = part * signs[v]
        x.share = out.view(share.shape)
        return x
    D = int(divisor.item()) if torch.is_tensor(divisor) else int(divisor)
    if D == 0:
        raise ZeroDivisionError("division of a shared value by zero")
    (res,) = div_shares([share.reshape(-1).contiguous()], [abs(D)])
    x.share = (res if D > 0 else -res).view(share.shape)
    return x


_ORIGINAL = {}


def _patched_div_(self, y):
    from crypten.common.tensor_types import is_float_tensor, is_int_tensor

    if isinstance(y, float) and int(y) == y:
        y = int(y)
    if is_float_tensor(y) and y.frac().eq(0).all():
        y = y.long()
    if (isinstance(y, int) or is_int_tensor(y)) and not self.share.is_cuda:
        return div_(self, y)
    return _ORIGINAL["div_"](self, y)


def install():
    """Route CrypTen's integer divisions (its truncations) in this process
    through :func:`div_`. Idempotent."""
    from crypten.mpc.primitives.arithmetic import ArithmeticSharedTensor as AST

    if "div_" not in _ORIGINAL:
        _ORIGINAL["div_"] = AST.div_
        AST.div_ = _patched_div_


def uninstall():
    from crypten.mpc.primitives.arithmetic import ArithmeticSharedTensor as AST

    if "div_" in _ORIGINAL:
        AST.div_ = _ORIGINAL.pop("div_")


def installed():
    return "div_" in _ORIGINAL


@contextlib.contextmanager
def exact():
    """``with truncation.exact(): ...``: CrypTen's truncations inside use :func:`div_`."""
    was = installed()
    install()
    try:
        yield
    finally:
        if not was:
            uninstall()


__all__ = ["OFFSET", "div_", "div_shares", "exact", "install", "installed", "uninstall"]
