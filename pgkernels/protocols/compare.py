"""Secure comparison, sign, ReLU and oblivious select on CrypTen MPCTensors.

All functions take and return ``crypten.mpc.MPCTensor`` (arithmetic shares mod
2^64, CrypTen fixed-point encoding). Comparison results are shared 0/1 values
with scale 1, exactly as CrypTen's ``x < 0`` returns them, so they mix freely
with CrypTen ops.

Protocol of ``ltz`` (n parties, dealer-assisted; ``k`` = ``bits``, default 64)
-------------------------------------------------------------------------------
Dealer material: a random r (additive shares), the XOR shares of r's k low
bits, the XOR shares of the products of r's bits within each 4-bit group (11
per group), Beaver AND triples, and a random bit s shared both ways.

1. Open ``c = x + r + 2^(k-1) mod 2^k`` (SUM of k-bit words; 1 round).
2. Locally, for each 4-bit group: ``lt = [c_g < r_g]`` and ``eq = [c_g == r_g]``
   as XOR shares -- both are polynomials in r's bits whose coefficients depend
   only on public c, so they need the dealer's monomials but no communication.
3. Combine the ``G = ceil((k-1)/4)`` groups up a binary tree,
   ``lt = lt_H ^ (eq_H & lt_L)``, ``eq = eq_H & eq_L``: one round of packed
   Beaver ANDs per level, ``ceil(log2 G)`` rounds (4 for k = 64). The two ANDs
   of a node share their left operand's mask, so a node opens 3 bits, and the
   lowest node 2 (its eq is never needed).
4. ``msb(x + 2^(k-1)) = c_{k-1} ^ r_{k-1} ^ lt_root``; ``x < 0`` is its negation.
   Open ``z = bit ^ s`` (1 bit per element, XOR; 1 round) and output
   ``z + (1 - 2z) * [s]`` as arithmetic shares.

Cost for k = 64: 6 rounds between the parties (CrypTen's ``x < 0``: 8), plus
the round trip to the dealer for the material when it was not asked for ahead
(metered as a round: 7 in all; CrypTen's ``x < 0`` under a dealer waits for a
triple before each of its 8 rounds: 16), and per party per element
``8 (n-1)`` bytes for step 1 plus ``(41 + 1) / 8 * (n-1)`` bytes of packed
bits (each party sends its share to every other party): 13.25 bytes sent per
element for 2 parties (CrypTen: 104). From the dealer, the request's corrected
party (``seq mod n``, rotating between requests) receives about 42 bytes per
element; the other parties draw everything from their PRG streams. Reveals nothing: every opened value is one-time
padded by dealer randomness (c by r, AND inputs by triple masks, z by s).

``bits=k`` (2 <= k <= 64) is for inputs the caller guarantees to lie in
``[-2^(k-1), 2^(k-1))`` as ring integers (fixed-point encoded values, i.e.
``|value| < 2^(k-1-16)`` at CrypTen's 16 fractional bits). Step 1 then sends c
in the narrowest of 8/16/32/64-bit words that holds k bits, and the tree has
``ceil((k-1)/4)`` leaves. Outside the bound the result is the sign of
``x`` reduced mod 2^k, i.e. meaningless; nothing reveals more than with k = 64.
"""

import os

import torch

from .. import ops
from ..runtime import comm as _comm
from ..runtime.session import dealer_client
from . import shares

# comparison modes (csrc/core/compare.h): [x >= 0], [x == 0], and bit * payload
LT, EQ, MUX = ops.CMP_LT, ops.CMP_EQ, ops.CMP_MUX

# Ask the dealer for the next comparison's material early (see compare_shares).
PREFETCH = os.environ.get("PGKERNELS_PREFETCH", "1") != "0"


def _check_bits(bits):
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise TypeError(f"bits must be an int in [2, 64], got {type(bits).__name__}")
    if not 2 <= bits <= 64:
        raise ValueError(f"bits must be in [2, 64], got {bits}")


def _narrow_dtype(bits):
    for dtype, width in ((torch.int8, 8), (torch.int16, 16), (torch.int32, 32)):
        if bits <= width:
            return dtype
    return None


def compare_shares(share, mode, bits=64, negate=False, payloads=None, prefetch=None, self_sign=0):
    """Run the comparison on this party's flat int64 share (n elements).

    ``mode`` LT gives ``[t >= 0]`` (``negate=True``: ``[t < 0]``), EQ gives
    ``[t == 0]`` (``negate=True``: ``[t != 0]``), on the low ``bits`` bits of t
    (see the module docstring for the protocol and the input bound).
    Rounds: ``2 + ceil(log2 ceil((bits - 1) / 4))`` (6 at 64 bits); bytes
    sent per element to every other party: ``compare_cost(bits, mode, P,
    self_sign)[1]`` of :mod:`.cost` (13.25 at 64 bits without payloads, 8 more
    per payload row). Reveals nothing.

    Returns the shares of the output bit (n words, scale 1), or, with
    ``payloads`` (a (P, n) int64 share tensor), the shares of bit * payload for
    every payload row (P, n): one comparison multiplies into many values at
    the cost of 8 more bytes per value and no extra round.

    ``prefetch``: ``(n, bits, mode, payloads[, self_sign])`` of the caller's
    next comparison; its dealer material is asked for as soon as this one's is,
    so the dealer works while the parties run this comparison's rounds.

    ``self_sign`` (+1/-1, bits = 64 only): the caller promises that payload
    row 0 is ``self_sign * share`` (ReLU: x itself; a compare-exchange: the
    negated difference). Its opening then follows from c, saving 8 bytes per
    element of round 1.
    """
    n = share.numel()
    P = 0 if payloads is None else payloads.shape[0]
    if n == 0:
        return share.new_zeros((P, 0) if P else (0,))
    client = dealer_client()
    rank0 = _comm.rank() == 0
    mat, lay = client.cmp(n, bits, mode, P, self_sign)
    if prefetch is not None and prefetch[0] > 0 and PREFETCH:
        client.prefetch_cmp(*prefetch)
    words = mat.words
    v = payloads.reshape(-1).contiguous() if P else share.new_empty(0)
    open1, _ = ops.cmp_open1(share, v, words, bits, mode, P, rank0, self_sign)
    # Only the low `bits` bits of c matter: send them in the narrowest dtype.
    c = open1[:n]
    e = open1[n:] if P else share.new_empty(0)
    narrow = _narrow_dtype(bits)
    if narrow is not None:
        c = c.to(narrow)
        _comm.exchange(sum_tensor=[c, e])
        c = c.long()
    else:
        _comm.exchange(sum_tensor=open1)
    if self_sign:
        # row 0's mask is self_sign * r, so its opening is self_sign * (c - offset)
        off = -(2**63) if mode == LT else 0
        e = torch.cat([(c - off) * self_sign, e])
    mat.wait()
    state, buf = ops.cmp_start(c, words, bits, mode, P, rank0, negate, self_sign)
    for level in range(lay.levels):
        _comm.exchange(xor_tensor=buf)
        buf = ops.cmp_step(buf, words, state, n, bits, mode, P, rank0, level, self_sign)
    _comm.exchange(xor_tensor=buf)
    out = ops.cmp_finish(buf, words, v, e, n, bits, mode, P, rank0, self_sign)
    return out.view(P, n) if P else out


def mux_shares(bit_share, values):
    """bit * values for a 0/1 arithmetic sharing (n,) and (P, n) value shares:
    shares (P, n) with the values' scale.

    Bit injection (see :func:`where`): one round, opening ``bit ^ s`` (1 bit per
    element, XOR) and ``values + m`` (8 bytes per value, SUM), both padded by
    the dealer's s and m. Reveals nothing.
    """
    n = bit_share.numel()
    P = values.shape[0]
    if n == 0:
        return values.clone()
    client = dealer_client()
    rank0 = _comm.rank() == 0
    mat, _ = client.cmp(n, 64, MUX, P)
    v = values.reshape(-1).contiguous()
    sum_open, xor_open = ops.cmp_open1(bit_share.contiguous(), v, mat.words, 64, MUX, P, rank0)
    _comm.exchange(sum_tensor=sum_open, xor_tensor=xor_open)
    mat.wait()
    return ops.cmp_finish(xor_open, mat.words, v, sum_open, n, 64, MUX, P, rank0).view(P, n)


def _compare(x, mode, bits, negate, inject=None):
    _check_bits(bits)
    flat = shares.flat_share(x)
    if inject is not None:
        # ReLU multiplies the bit into x itself: at 64 bits its opening is free
        self_sign = 1 if (inject is x and bits == 64) else 0
        out = compare_shares(flat, mode, bits, negate, shares.flat_share(inject).view(1, -1),
                             self_sign=self_sign)
        return shares.like(inject, out.view(-1), scale=inject.encoder.scale)
    out = compare_shares(flat, mode, bits, negate)
    return shares.like(x, out, scale=1)


def ltz(x, bits=64):
    """Shared ``[x < 0]`` (0/1, scale 1), as CrypTen's ``x < 0``.

    Protocol and cost: see the module docstring (6 rounds and 13.25 bytes sent
    per element per party for 2 parties at bits=64). Reveals nothing.
    """
    x = shares.check_mpc(x, "x")
    return _compare(x, LT, bits, negate=True)


def _diff(x, y, name_x="x", name_y="y"):
    x = shares.check_mpc(x, name_x)
    y = shares.check_operand(y, name_y, x)
    return x - y


def lt(x, y, bits=64):
    """Shared ``[x < y]``; y shared or public. ``ltz(x - y)``: same cost, reveals nothing.

    As in CrypTen, x - y is computed in the ring: with bits=64 it is exact for any
    encodable x, y whose difference does not overflow 2^63.
    """
    return _compare(_diff(x, y), LT, bits, negate=True)


def gt(x, y, bits=64):
    """Shared ``[x > y]`` = ``ltz(y - x)``; reveals nothing."""
    x = shares.check_mpc(x, "x")
    return _compare(-_diff(x, y), LT, bits, negate=True)


def le(x, y, bits=64):
    """Shared ``[x <= y]`` = ``1 - [x > y]``, computed as ``msb(y - x) == 0``; reveals nothing."""
    x = shares.check_mpc(x, "x")
    return _compare(-_diff(x, y), LT, bits, negate=False)


def ge(x, y, bits=64):
    """Shared ``[x >= y]`` = ``1 - [x < y]``; reveals nothing."""
    return _compare(_diff(x, y), LT, bits, negate=False)


def eq(x, y, bits=64):
    """Shared ``[x == y]`` (exact equality of the encoded ring values).

    Protocol: open ``c = (x - y) + r mod 2^k``; locally per 4-bit group
    ``eq_g = prod_j (c_j ^ r_j ^ 1)`` from the dealer's monomials; an AND tree of
    ``ceil(log2(k/4))`` rounds (4 for k = 64, one opened pair of bits per node);
    B2A as in ``ltz``. 6 rounds, 8 + 31/8 bytes per element (2 parties).
    Reveals nothing.
    """
    return _compare(_diff(x, y), EQ, bits, negate=False)


def ne(x, y, bits=64):
    """Shared ``[x != y]``; same protocol as :func:`eq`, output negated locally."""
    return _compare(_diff(x, y), EQ, bits, negate=True)


def relu(x, bits=64):
    """Shared ``max(x, 0)`` with x's encoding.

    Fused: the bit ``b = [x >= 0]`` from the comparison is multiplied into x in
    the comparison's own last round (output ``z x + (1 - 2z)(e [s] - [s m])``
    with ``e = x + m`` public). At bits = 64 the dealer takes m = r, the
    comparison's own mask, so e follows from the opened c and ReLU costs
    exactly what ``ltz`` costs: 6 rounds and 13.25 bytes per element (2
    parties), where CrypTen's ``x.relu()`` needs a comparison plus a Beaver
    multiplication (9 rounds, 232 bytes). With bits < 64, e = x + m is opened in
    round 1 (8 more bytes). Reveals nothing.
    """
    x = shares.check_mpc(x, "x")
    return _compare(x, LT, bits, negate=False, inject=x)


def sign(x, bits=64):
    """Shared sign with CrypTen's convention: ``1 - 2 [x < 0]`` (so sign(0) = +1).

    Scale 1, like CrypTen's ``x.sign()``. Cost of :func:`ltz`; reveals nothing.
    """
    return 1 - 2 * ltz(x, bits=bits)


def where(condition, a, b):
    """Oblivious select ``a if condition else b`` (torch.where semantics).

    ``condition``: a shared 0/1 with scale 1, as returned by the comparisons here
    or by CrypTen's ``x < y`` (a public bool/0-1 tensor is also accepted).
    ``a``, ``b``: MPCTensors or public tensors/scalars; broadcast together.

    Protocol (bit injection): a 0/1 arithmetic sharing's least significant bits
    are an XOR sharing of the bit, so with a dealer bit s and mask m the parties
    open, in one round, ``z = bit ^ s`` (1 bit per element, XOR) and
    ``e = (a - b) + m`` (8 bytes per element, SUM), and output
    ``b + z (a - b) + (1 - 2z)(e [s] - [s m])``. 1 round and 8.125 bytes sent per
    element (2 parties), where CrypTen's ``c * a + (1 - c) * b`` takes two Beaver
    multiplications (32 bytes). If both a and b are public the select is local.
    Reveals nothing.
    """
    condition = shares.check_mpc(condition, "condition", allow_public=True)
    crypten_mpc = shares.mpc_module()
    if not isinstance(condition, crypten_mpc.MPCTensor):
        cond = torch.as_tensor(condition)
        if cond.dtype == torch.bool:
            cond = cond.long()
        return _public_select(cond, a, b)
    if condition.encoder.scale != 1:
        raise ValueError("condition must be a 0/1 share with scale 1 (a comparison result), "
                         f"got scale {condition.encoder.scale}")
    if not any(isinstance(t, crypten_mpc.MPCTensor) for t in (a, b)):
        # public branches: c * encode(a - b) is exact locally (c is an integer 0/1)
        a = shares.check_public(a, "a")
        b = shares.check_public(b, "b")
        d = torch.as_tensor(a, dtype=torch.float64) - torch.as_tensor(b, dtype=torch.float64)
        cs = shares.raw_share(condition)
        enc = crypten_mpc.MPCTensor.from_shares(cs.clone(), precision=16)
        dq = enc.encoder.encode(d).to(cs.device)
        shape = torch.broadcast_shapes(condition.size(), dq.shape)
        share = (cs.expand(shape) * dq.expand(shape)).contiguous()
        return crypten_mpc.MPCTensor.from_shares(share, precision=16) + b
    ref = a if isinstance(a, crypten_mpc.MPCTensor) else b
    a = shares.check_operand(a, "a", ref)
    b = shares.check_operand(b, "b", ref)
    d = a - b
    if not isinstance(d, crypten_mpc.MPCTensor):
        d = shares.to_mpc(d, ref)
    shape = torch.broadcast_shapes(condition.size(), d.size())
    c = condition.expand(shape) if condition.size() != shape else condition
    d = d.expand(shape) if d.size() != shape else d
    out = mux_shares(shares.flat_share(c), shares.flat_share(d).view(1, -1)).view(-1)
    prod = shares.like(d, out, scale=d.encoder.scale)
    return prod + b


def _public_select(cond, a, b):
    if not set(torch.unique(cond).tolist()) <= {0, 1}:
        raise ValueError("a public condition must be boolean or 0/1")
    return a * cond + b * (1 - cond)


__all__ = ["EQ", "LT", "MUX", "compare_shares", "eq", "ge", "gt", "le", "lt", "ltz", "mux_shares", "ne", "relu",
           "sign", "where"]
