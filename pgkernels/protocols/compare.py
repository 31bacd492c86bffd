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

One-round comparison with function secret sharing (``method="fss"``, 2 parties)
-------------------------------------------------------------------------------
Dealer material (offline): a random r (additive shares drawn from the parties'
PRG streams) and, per element, the keys of a distributed comparison function
(:mod:`csrc/pgkernels/fss.h`; Boyle et al., EUROCRYPT 2021) for
``f(c') = r_{k-1} ^ [c' < r mod 2^(k-1)]``: each party's root seed from its
stream, the correction words (1520 bytes per element at k = 64, 752 at 32)
from the dealer to both parties.

1. Open ``c = x + r mod 2^k`` (SUM; 1 round, 8 bytes per element at k = 64).
2. Locally: evaluate the DCF at ``c mod 2^(k-1)`` and flip by the public
   ``c_{k-1}``: ``msb(x) = c_{k-1} ^ r_{k-1} ^ [c' < r']``, exact for every
   x (borrow argument; -2^63 and 2^63 - 1 included), giving arithmetic shares
   of ``[x < 0]`` directly (the DCF's output group is Z_2^64: no conversion
   round).

Cost: 1 round between the parties, plus the dealer round trip when the keys
are asked for online (2 in all; 1 when prefetched), 8 bytes sent per element
(k = 64; 4 at k <= 32), and the dealer's key generation and 1.5 KB per
element of keys per party, which is why :func:`pgkernels.protocols.cost.choose_ltz`
picks FSS only when latency dominates. Reveals nothing: c is padded by r, and a
party's key alone is pseudorandom. ReLU and the ``>=``/``<=`` forms build on
it: ``[x >= 0] = 1 - [x < 0]`` locally, ReLU = ``x - [x < 0] x`` with one
bit-injection round (:func:`mux_shares`, its material prefetched): 3 rounds.

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
from . import cost, shares

# comparison modes (csrc/core/compare.h): [x >= 0], [x == 0], and bit * payload
LT, EQ, MUX = ops.CMP_LT, ops.CMP_EQ, ops.CMP_MUX

# Ask the dealer for the next comparison's material early (see compare_shares).
PREFETCH = os.environ.get("PGKERNELS_PREFETCH", "1") != "0"

# Split a large comparison's dealer request into one request per party (see
# compare_shares) when the cost model says a round costs at least
# cost.SPLIT_MIN_LATENCY (a WAN, not loopback) and the corrections take longer
# to arrive than SPLIT_ROUNDS rounds.
SPLIT = os.environ.get("PGKERNELS_SPLIT_DEALER", "1") != "0"
SPLIT_MIN = 1 << 16
SPLIT_ROUNDS = 2


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

    On a WAN (the cost model's round >= 1 ms) a large comparison whose
    material was not asked for ahead takes it from one dealer request per
    party (:func:`_dealer_parts`): the dealer's corrections then reach all
    parties at once instead of one, in 1/k of the time at a given bandwidth;
    rounds, bytes between the parties and results are the same.

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
    parts = _dealer_parts(client, n, bits, mode, P, self_sign)
    if parts > 1:
        return _compare_parts(client, parts, share, mode, bits, negate, payloads, prefetch, self_sign)
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


def fss_ltz_shares(share, bits=64, prefetch_mux=0, prefetch=None):
    """``[t < 0]`` (t read as a ``bits``-bit signed value) for this party's
    flat int64 share, by the one-round FSS protocol (module docstring; 2
    parties). Returns n words of arithmetic shares (scale 1).

    ``prefetch_mux``: P > 0 asks the dealer, right after this request, for
    the material of a ``mux_shares`` of n elements and P payloads, so that
    it arrives during this comparison (ReLU). ``prefetch``: instead, the
    ``(n, bits, mode, payloads)`` of the caller's next comparison (as in
    :func:`compare_shares`)."""
    n = share.numel()
    ws = _comm.world_size()
    if ws != 2:
        raise ValueError(f"method='fss' needs exactly 2 parties, the session has {ws}")
    if n == 0:
        return share.new_zeros((0,))
    client = dealer_client()
    mat = client.fss(n, bits)
    if prefetch_mux:
        client.prefetch_cmp(n, 64, MUX, prefetch_mux)
    elif prefetch is not None and prefetch[0] > 0 and PREFETCH:
        client.prefetch_cmp(*prefetch)
    words = mat.words
    c = share + words[:n]
    narrow = _narrow_dtype(bits)
    if narrow is not None:  # only the low `bits` bits of c matter
        c = c.to(narrow)
        _comm.exchange(sum_tensor=c)
        c = c.long()
    else:
        _comm.exchange(sum_tensor=c)
    mat.wait()
    return ops.fss_ltz_eval(c, words[n:3 * n], words[3 * n:], bits, _comm.rank())


def ltz_shares(share, bits=64, prefetch=None):
    """``[t < 0]`` for this party's flat int64 share by the cost model's
    method (:func:`pgkernels.protocols.cost.choose_ltz`): the one-round FSS
    test (2 parties, when latency dominates) or :func:`compare_shares`' tree.
    ``prefetch``: the next comparison's ``(n, bits, mode, payloads)``.
    Reveals nothing."""
    if cost.choose_ltz(share.numel(), bits, _comm.world_size()) == "fss":
        return fss_ltz_shares(share, bits, prefetch=prefetch)
    return compare_shares(share, LT, bits, negate=True, prefetch=prefetch)


def _dealer_parts(client, n, bits, mode, P, self_sign):
    """How many dealer requests to split a comparison of n elements into.

    The dealer sends a request's corrections (about 40 bytes per 64-bit
    element) to one party, which waits for them after the first opening; on a
    WAN link of bandwidth B that is n * 40 / B seconds on one link. One request
    per party (consecutive requests correct different parties) puts them on
    all the dealer's links at once: 1/k of the time, the same bytes, rounds
    and results."""
    from .cost import MODEL, SPLIT_MIN_LATENCY, dealer_bytes

    k = _comm.world_size()
    if (not SPLIT or k < 2 or n < SPLIT_MIN or client.mode != "process" or client.has_prefetched()
            or MODEL.latency < SPLIT_MIN_LATENCY):
        return 1
    if n * dealer_bytes(bits, mode, P, self_sign) / MODEL.bandwidth < SPLIT_ROUNDS * MODEL.latency:
        return 1
    return k


def _compare_parts(client, k, share, mode, bits, negate, payloads, prefetch, self_sign):
    """:func:`compare_shares` with its material from k dealer requests (one
    round trip: asked for together), each part's rounds batched with the
    others' (same rounds and bytes as one request)."""
    n = share.numel()
    P = 0 if payloads is None else payloads.shape[0]
    rank0 = _comm.rank() == 0
    bounds = [n * i // k for i in range(k + 1)]
    spans = [(bounds[i], bounds[i + 1]) for i in range(k)]
    mats = [client.cmp_part(b - a, bits, mode, P, self_sign, online=(i == 0)) for i, (a, b) in enumerate(spans)]
    if prefetch is not None and prefetch[0] > 0 and PREFETCH:
        client.prefetch_cmp(*prefetch)
    narrow = _narrow_dtype(bits)
    flat = share.reshape(-1)
    vs, cs, es, sums = [], [], [], []
    for (a, b), (mat, _) in zip(spans, mats):
        v = payloads[:, a:b].contiguous().reshape(-1) if P else share.new_empty(0)
        open1, _ = ops.cmp_open1(flat[a:b].contiguous(), v, mat.words, bits, mode, P, rank0, self_sign)
        c = open1[:b - a]
        e = open1[b - a:] if P else share.new_empty(0)
        if narrow is not None:
            c = c.to(narrow)
        vs.append(v)
        cs.append(c)
        es.append(e)
        sums += [c, e]
    _comm.exchange(sum_tensor=sums)
    states, bufs = [], []
    for i, ((a, b), (mat, _)) in enumerate(zip(spans, mats)):
        c = cs[i].long() if narrow is not None else cs[i]
        cs[i] = c
        if self_sign:
            off = -(2**63) if mode == LT else 0
            es[i] = torch.cat([(c - off) * self_sign, es[i]])
        mat.wait()
        state, buf = ops.cmp_start(c, mat.words, bits, mode, P, rank0, negate, self_sign)
        states.append(state)
        bufs.append(buf)
    for level in range(mats[0][1].levels):
        _comm.exchange(xor_tensor=bufs)
        bufs = [ops.cmp_step(buf, mat.words, state, b - a, bits, mode, P, rank0, level, self_sign)
                for buf, (mat, _), state, (a, b) in zip(bufs, mats, states, spans)]
    _comm.exchange(xor_tensor=bufs)
    outs = [ops.cmp_finish(buf, mat.words, v, e, b - a, bits, mode, P, rank0, self_sign)
            for buf, (mat, _), v, e, (a, b) in zip(bufs, mats, vs, es, spans)]
    if P:
        return torch.cat([o.view(P, b - a) for o, (a, b) in zip(outs, spans)], dim=1)
    return torch.cat(outs)


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


def _fss_compare(x, bits, negate, inject=None):
    flat = shares.flat_share(x)
    if inject is not None:
        # x [x >= 0] = x - [x < 0] x: one bit injection after the comparison
        v = shares.flat_share(inject)
        b = fss_ltz_shares(flat, bits, prefetch_mux=1)
        out = v - (mux_shares(b, v.view(1, -1)).view(-1) if v.numel() else v)
        return shares.like(inject, out, scale=inject.encoder.scale)
    b = fss_ltz_shares(flat, bits)
    if not negate:  # [t >= 0] = 1 - [t < 0]
        b = (1 if _comm.rank() == 0 else 0) - b
    return shares.like(x, b, scale=1)


def _compare(x, mode, bits, negate, inject=None, method=None):
    _check_bits(bits)
    if mode == LT:
        chosen = cost.choose_ltz(x.share.numel(), bits, _comm.world_size(), method, relu=inject is not None)
        if chosen == "fss":
            return _fss_compare(x, bits, negate, inject)
    elif method is not None:
        raise ValueError(f"method applies to the sign comparisons only, got {method!r}")
    flat = shares.flat_share(x)
    if inject is not None:
        # ReLU multiplies the bit into x itself: at 64 bits its opening is free
        self_sign = 1 if (inject is x and bits == 64) else 0
        out = compare_shares(flat, mode, bits, negate, shares.flat_share(inject).view(1, -1),
                             self_sign=self_sign)
        return shares.like(inject, out.view(-1), scale=inject.encoder.scale)
    out = compare_shares(flat, mode, bits, negate)
    return shares.like(x, out, scale=1)


def ltz(x, bits=64, method=None):
    """Shared ``[x < 0]`` (0/1, scale 1), as CrypTen's ``x < 0``.

    ``method``: "tree" (6 rounds + the dealer round trip, 13.25 bytes sent per
    element per party for 2 parties at bits=64, any number of parties),
    "fss" (2 parties: 1 round + the dealer round trip, 8 bytes, and 1.5 KB of
    dealer keys per element), or None: the cost model's pick
    (:func:`pgkernels.protocols.cost.choose_ltz`). Protocols: see the module
    docstring. Reveals nothing.
    """
    x = shares.check_mpc(x, "x")
    return _compare(x, LT, bits, negate=True, method=method)


def _diff(x, y, name_x="x", name_y="y"):
    x = shares.check_mpc(x, name_x)
    y = shares.check_operand(y, name_y, x)
    return x - y


def lt(x, y, bits=64, method=None):
    """Shared ``[x < y]``; y shared or public. ``ltz(x - y)``: same cost, reveals nothing.

    As in CrypTen, x - y is computed in the ring: with bits=64 it is exact for any
    encodable x, y whose difference does not overflow 2^63.
    """
    return _compare(_diff(x, y), LT, bits, negate=True, method=method)


def gt(x, y, bits=64, method=None):
    """Shared ``[x > y]`` = ``ltz(y - x)``; reveals nothing."""
    x = shares.check_mpc(x, "x")
    return _compare(-_diff(x, y), LT, bits, negate=True, method=method)


def le(x, y, bits=64, method=None):
    """Shared ``[x <= y]`` = ``1 - [x > y]``, computed as ``msb(y - x) == 0``; reveals nothing."""
    x = shares.check_mpc(x, "x")
    return _compare(-_diff(x, y), LT, bits, negate=False, method=method)


def ge(x, y, bits=64, method=None):
    """Shared ``[x >= y]`` = ``1 - [x < y]``; reveals nothing."""
    return _compare(_diff(x, y), LT, bits, negate=False, method=method)


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


def relu(x, bits=64, method=None):
    """Shared ``max(x, 0)`` with x's encoding.

    Fused: the bit ``b = [x >= 0]`` from the comparison is multiplied into x in
    the comparison's own last round (output ``z x + (1 - 2z)(e [s] - [s m])``
    with ``e = x + m`` public). At bits = 64 the dealer takes m = r, the
    comparison's own mask, so e follows from the opened c and ReLU costs
    exactly what ``ltz`` costs: 6 rounds and 13.25 bytes per element (2
    parties), where CrypTen's ``x.relu()`` needs a comparison plus a Beaver
    multiplication (9 rounds, 232 bytes). With bits < 64, e = x + m is opened in
    round 1 (8 more bytes). Reveals nothing.

    ``method="fss"`` (2 parties): the FSS sign test, then one bit-injection
    round: 3 rounds (with the dealer round trip), 16.125 bytes per element.
    ``method=None``: the cost model's pick, as in :func:`ltz`.
    """
    x = shares.check_mpc(x, "x")
    return _compare(x, LT, bits, negate=False, inject=x, method=method)


def sign(x, bits=64, method=None):
    """Shared sign with CrypTen's convention: ``1 - 2 [x < 0]`` (so sign(0) = +1).

    Scale 1, like CrypTen's ``x.sign()``. Cost of :func:`ltz`; reveals nothing.
    """
    return 1 - 2 * ltz(x, bits=bits, method=method)


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


__all__ = ["EQ", "LT", "MUX", "compare_shares", "eq", "fss_ltz_shares", "ge", "gt", "le", "lt", "ltz", "ltz_shares", "mux_shares",
           "ne", "relu", "sign", "where"]
