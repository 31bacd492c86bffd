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

:func:`div` divides one MPCTensor; the robust rules, the Gram matrix, the
norms and the order statistics' averages call it for every value that can be
large, so their results are exact to a few units whatever the (bounded)
inputs. Inside ``with exact():`` (or after :func:`install`) every
``ArithmeticSharedTensor.div_`` by a public integer -- CrypTen's truncation
after each multiplication, matmul and square -- goes through the protocol; the
rules use it around their products of client data. Small internal values
(e.g. the Newton steps of the inverse square root on [1, 4)) keep CrypTen's
local truncation, whose failure probability there is below 2^-50, and no
extra round.
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


def div_shares(shares, divisors, prefetch=None):
    """This party's shares of ``x_k / D_k`` (rounded down, within 2 units) for
    flat int64 share tensors ``shares[k]`` and positive int ``divisors[k]``:
    one dealer request and one round for all of them together.

    ``prefetch``: ``(n, bits, mode, payloads)`` of the comparison that follows
    (:func:`pgkernels.protocols.compare.compare_shares`): its dealer material
    is asked for right after this request, so it travels during this round."""
    for D in divisors:
        _check_divisor(D)
    rank0 = _comm.rank() == 0
    flat = [s.reshape(-1) for s in shares]
    todo = [i for i, (s, D) in enumerate(zip(flat, divisors)) if D != 1 and s.numel()]
    out = [s.clone() for s in flat]
    if not todo:
        return out
    x = torch.cat([flat[i] for i in todo]) if len(todo) > 1 else flat[todo[0]]
    counts = [flat[i].numel() for i in todo]
    n = x.numel()
    if len(todo) == 1:
        req = {"fn": "trunc", "size": [n], "divisor": int(divisors[todo[0]])}
    else:
        req = {"fn": "trunc", "size": [n], "segments": [[int(divisors[i]), c] for i, c in zip(todo, counts)]}
    client = dealer_client()
    mat = client.crypten(req)
    if prefetch is not None and prefetch[0] > 0:
        client.prefetch_cmp(*prefetch)
    c = x + mat.words[:n]
    if rank0:
        c += OFFSET
    _comm.exchange(sum_tensor=c)
    words = mat.wait()
    q_r, msb_r = words[n:2 * n], words[2 * n:3 * n]
    top_c = c < 0  # msb(c), public
    w = torch.where(top_c, torch.zeros_like(msb_r), msb_r)
    start = 0
    for i, count in zip(todo, counts):
        D = divisors[i]
        sl = slice(start, start + count)
        # w * floor(2^64 / D) mod 2^64: the constant may exceed int64
        res = -q_r[sl] + w[sl] * _ring_const(2 ** 64 // D)
        if rank0:
            res += udiv(c[sl], D) - OFFSET // D
        out[i] = res
        start += count
    return out


def _ring_const(v):
    """A Python int as the int64 with the same value mod 2^64."""
    v %= 2 ** 64
    return v - 2 ** 64 if v >= 2 ** 63 else v


def div_(x, divisor):
    """In place: the ArithmeticSharedTensor x divided by a public integer (or
    an integer tensor broadcastable to x), rounded down within 2 units."""
    from .shares import raw_share

    share = raw_share(x)  # a plain tensor also on a GPU (CrypTen wraps it there)
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


def div(x, divisor):
    """A new MPCTensor: x divided by a public integer (or an integer tensor
    broadcastable to x), rounded down within 2 units, with x's encoding.
    Protocols call it wherever the value can be large (sums of client
    products, Gram entries, norms, weighted sums, averages): see the module
    docstring for why CrypTen's local truncation is not enough there."""
    from . import shares

    out = x.clone()
    div_(out._tensor, divisor)
    return shares.like_shape(shares.raw_share(out), x.encoder.scale)


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


__all__ = ["OFFSET", "div", "div_", "div_shares", "exact", "install", "installed", "uninstall"]
