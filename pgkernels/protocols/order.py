"""Order statistics on secret shares: sort, top-k, k-th value, median, trimmed
mean, max/min and argmax/argmin.

Every function works along one dimension ``dim`` of an arithmetic-shared
``MPCTensor`` and treats every other position as an independent problem, all
done as one batch per round: a coordinate-wise median over n clients x d
parameters is d problems of size n, each round touching all of them.

Methods (``method=None`` asks :mod:`pgkernels.protocols.cost` to pick):

``"network"`` -- Batcher's odd-even merge sort, pruned to the outputs the call
    needs (a selection network for the median or top-k). Each layer is one
    batched compare-exchange: the swap bit ``s = [a > b]`` from one comparison
    is multiplied, in the comparison's own last round, into ``a - b`` and into
    the index payloads, so a layer costs the 6 rounds of one comparison.
    Rounds: 6 per layer (depth ``t (t + 1) / 2``, ``t = ceil(log2 n)``); bytes:
    per comparator 13.25 + 8 per payload (value, and index when returned).
``"rank"`` -- all ``n (n - 1) / 2`` pairwise comparisons in one batch (6
    rounds) give every element its stable rank; an equality test of each rank
    with each wanted position, on ``bits = bit_length(n) + 1`` (2 rounds for
    ``n < 8``, 3 below 128, 4 from 128), multiplies the value (and a 1, for the index)
    into the one-hot match, and a local sum selects. Constant rounds, more
    bytes: good for small n or high latency.
``"tournament"`` -- max/min only: a knockout tree, ``ceil(log2 n)`` levels of
    6 rounds; each match's bit is multiplied into the value difference and
    into the one-hot vectors of both subtrees, so argmax comes with the max.
``"pairwise"`` -- argmax/max only: the pairwise comparisons count, per
    element, the others it beats (lowest index wins ties); an equality test
    with ``n - 1`` picks the winner. 6 + 2..4 rounds (as for "rank").

Reveals nothing: every output is a sharing, and the protocols open only
dealer-masked values (see :mod:`pgkernels.protocols.compare`).

Ties: ``argmax``/``argmin`` return the lowest index among equal extremes, and
``kthvalue`` and the rank method's indices follow a stable order (equal values
keep their input order, as ``torch.sort(stable=True)``). The network method's
index outputs for tied values may come in another order (values are always
exact); pass ``method="rank"`` when the tie order of indices matters.

Arithmetic: comparisons take differences in the ring, as CrypTen's ``x < y``:
exact whenever the differences of the inputs do not overflow 2^63 (values of
magnitude below 2^46 at 16 fractional bits). ``median`` of an even count and
``trimmed_mean`` divide by a public integer with CrypTen's truncation (error of
about one unit in the last fractional bit).

Reduced width (``bits=k``, every function; default 64): the comparisons of
input values -- the pairwise differences of the rank method, a network's or a
tournament's compare-exchanges -- look at the low k bits of the difference
only. The caller guarantees that every difference of two inputs lies in
``[-2^(k-1), 2^(k-1))`` in ring units, e.g. every input within ``[-B, B]``
(ring units ``X = B 2^16``) and ``k = bit_length(2 X) + 1``
(:func:`pgkernels.defenses.validity.compare_bits`); the outputs (values,
indices, sums) stay exact 64-bit shares. Cost at k bits: ``2 + ceil(log2
ceil((k-1)/4))`` rounds per comparison (5 at k = 32 instead of 6), c sent in
the narrowest 8/16/32/64-bit word and a smaller tree, e.g. 6.4 bytes per pair
at k = 32 instead of 13.25, and 23.5 dealer bytes per pair instead of 40.4; the plans
(:func:`plan`) cost the comparisons at k bits, so the cost model sees the
saving. Below 64 bits a compare-exchange sends its value row's opening (8
bytes per comparator) instead of deriving it from c. The rank-selection
equality tests and rank thresholds keep their own ``rank_bits(n)``. An input
outside the guarantee makes the result meaningless (wrong order, not an error,
and nothing more revealed), so the guarantee must come from a check on the
shares (:func:`pgkernels.defenses.validity.validate`), never from trusting
the inputs' owners.
"""

import builtins
import dataclasses
import math

import torch

from ..runtime import comm as _comm
from . import shares, truncation
from .blocks import compare_exchange, network_rows, public_share, rank_bits, ranks
from .compare import EQ, LT, _check_bits, compare_shares
from .cost import DEALER_ROUNDS, DIV_DEALER_BYTES, Plan, choose, compare_cost, dealer_bytes


# --- plumbing -------------------------------------------------------------------

class _Columns:
    """x moved to (n, d): dim first, every other position a column."""

    def __init__(self, x, dim, name="x"):
        x = shares.check_mpc(x, name)
        if x.dim() == 0:
            x = x.unsqueeze(0)
            self.scalar = True
        else:
            self.scalar = False
        nd = x.dim()
        if dim is None:
            raise TypeError("dim must be an int")
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"dim must be an int, got {type(dim).__name__}")
        if not -nd <= dim < nd:
            raise IndexError(f"dim {dim} out of range for a {nd}-d tensor")
        self.dim = dim % nd
        self.x = x
        self.shape = tuple(x.size())
        self.n = self.shape[self.dim]
        self.rest = self.shape[:self.dim] + self.shape[self.dim + 1:]
        share = shares.raw_share(x).reshape(self.shape).movedim(self.dim, 0)
        self.X = share.reshape(self.n, -1).contiguous() if self.n else share.reshape(0, builtins.max(1, math.prod(self.rest)))
        self.d = self.X.shape[1] if self.n else math.prod(self.rest)
        self.scale = x.encoder.scale

    def out(self, rows, scale=None, keepdim=False, squeeze=False):
        """(m, d) shares back to an MPCTensor with dim of size m."""
        m = rows.shape[0]
        t = rows.reshape((m,) + self.rest).movedim(0, self.dim)
        if squeeze and not keepdim:
            t = t.squeeze(self.dim)
        if self.scalar and not keepdim:
            t = t.reshape(()) if t.numel() == 1 else t.squeeze(0)
        return shares.like_shape(t.contiguous(), scale if scale is not None else self.scale)


def _parties():
    return _comm.world_size()


# --- cost plans -------------------------------------------------------------------

def _self_sign(bits, sign):
    """A compare-exchange's free opening of its value row holds at 64 bits only
    (see :func:`pgkernels.protocols.compare.compare_shares`)."""
    return sign if bits == 64 else 0


def _plan_network(n, outputs, payloads, bits=64):
    rows = network_rows(n, outputs)
    depth = int(rows[:, 0].max()) + 1 if rows.numel() else 0
    ss = _self_sign(bits, -1)
    # layers after the first are prefetched: one dealer round trip in all
    r, b = compare_cost(bits, LT, payloads, ss, online=False)
    C = rows.shape[0]
    per_layer = torch.bincount(rows[:, 0]) if C else None
    widest = int(per_layer.max()) * (1 + payloads) if C else 0
    # the first layer's material is awaited; each later layer's travels during the one before
    first = int(per_layer[0]) * dealer_bytes(bits, LT, payloads, ss) if C else 0.0
    return Plan("network", r * depth + (DEALER_ROUNDS if depth else 0), b * C, C, C * payloads, widest, first)


def _plan_rank(n, npos, payloads, bits=64):
    pairs = n * (n - 1) // 2
    r1, b1 = compare_cost(bits, LT, 0)  # online
    r2, b2 = compare_cost(rank_bits(n), EQ, payloads, online=False)  # prefetched during the ranks
    return Plan("rank", r1 + r2, pairs * b1 + n * npos * b2, pairs + n * npos, n * npos * payloads,
                builtins.max(pairs, n * npos * (1 + payloads)), pairs * dealer_bytes(bits, LT, 0))


def _plan_tournament(n, onehot, bits=64):
    rounds, nbytes, comps, pays, widest, dealer = 0, 0.0, 0, 0, 0, 0.0
    ss = _self_sign(bits, -1)
    m, s = n, 1
    while m > 1:
        P = m // 2
        p = 1 + (2 * s if onehot else 0)
        r, b = compare_cost(bits, LT, p, ss, online=rounds == 0)  # later levels are prefetched
        if rounds == 0:
            dealer = P * dealer_bytes(bits, LT, p, ss)
        rounds += r
        nbytes += P * b
        comps += P
        pays += P * p
        widest = builtins.max(widest, P * (1 + p))
        m, s = (m + 1) // 2, 2 * s
    return Plan("tournament", rounds, nbytes, comps, pays, widest, dealer)


def _with_div(plans):
    """Plans followed by one division by a public integer (truncation.div: a
    dealer request whose round trip overlaps its one opening, 8 bytes per
    value): 1 + DEALER_ROUNDS rounds, counted as the meter counts them."""
    return [dataclasses.replace(p, rounds=p.rounds + 1 + DEALER_ROUNDS,
                                bytes_per_column=p.bytes_per_column + 8,
                                dealer_bytes_per_column=p.dealer_bytes_per_column + DIV_DEALER_BYTES)
            for p in plans]


def _trimmed_plans(n, bits=64):
    """The trimmed mean's plans, its final division included."""
    plans = [_plan_network(n, None, 1, bits)]
    r1, b1 = compare_cost(bits, LT, 0)
    r2, b2 = compare_cost(rank_bits(n), LT, 1, online=False)  # prefetched during the ranks
    pairs = n * (n - 1) // 2
    plans.append(Plan("rank", r1 + r2, pairs * b1 + 2 * n * b2, pairs + 2 * n, 2 * n,
                      builtins.max(pairs, 4 * n), pairs * dealer_bytes(bits, LT, 0)))
    return _with_div(plans)


def _plan_pairwise(n, payloads, bits=64):
    # the rank method's cost with a single wanted position (rank n - 1)
    return dataclasses.replace(_plan_rank(n, 1, payloads, bits), method="pairwise")


# --- selection by rank ------------------------------------------------------------

def _select(X, rank, positions, want_index):
    """Values (and indices) at the given rank positions: (len(positions), d)."""
    n, d = X.shape
    S = len(positions)
    pos = torch.tensor(positions, dtype=torch.long).view(S, 1, 1)
    t = rank.unsqueeze(0) - public_share(pos.expand(S, n, d).contiguous())
    pay = [X.unsqueeze(0).expand(S, n, d)]
    if want_index:
        pay.append(public_share(torch.ones(S, n, d, dtype=torch.long)))
    out = compare_shares(t.reshape(-1), EQ, rank_bits(n), negate=False,
                         payloads=torch.stack(pay).reshape(len(pay), -1))
    out = out.view(len(pay), S, n, d)
    vals = out[0].sum(1)
    idx = None
    if want_index:
        idx = (out[1] * torch.arange(n, dtype=torch.long, device=out.device).view(1, n, 1)).sum(1)
    return vals, idx


def _positions(cols, positions, descending, want_index, method, bits=64):
    """Values/indices (S, d) at sorted positions, by the chosen method."""
    n, d = cols.n, cols.d
    payloads = 1 + int(want_index)
    plans = [_plan_network(n, positions, payloads, bits), _plan_rank(n, len(positions), payloads, bits)]
    plan = choose(plans, d, _parties(), method)
    if plan.method == "network":
        X = cols.X.clone()
        extra = [public_share(torch.arange(n, dtype=torch.long).view(n, 1).expand(n, d).contiguous())] \
            if want_index else []
        compare_exchange(X, extra, network_rows(n, positions), descending, bits=bits)
        p = torch.tensor(positions, dtype=torch.long, device=X.device)
        return X[p], (extra[0][p] if want_index else None)
    P = 1 + int(want_index)
    rank = ranks(cols.X, descending, prefetch=(len(positions) * n * d, rank_bits(n), EQ, P), bits=bits)
    return _select(cols.X, rank, positions, want_index)


def plan(op, n, columns, parties=2, method=None, k=1, bits=64):
    """The method the cost model picks for ``op`` on n elements x ``columns``.

    ``op``: "sort", "topk", "topk_sum", "median", "trimmed_mean", "max", "argmax". For benchmarks and
    curious users; returns the :class:`~pgkernels.protocols.cost.Plan`.
    ``bits``: the width of the value comparisons (see the module docstring,
    "Reduced width"); the plans cost them at that width.
    """
    _check_bits(bits)
    if op == "sort":
        plans = [_plan_network(n, list(range(n)), 2, bits), _plan_rank(n, n, 2, bits)]
    elif op == "topk":
        plans = [_plan_network(n, list(range(k)), 2, bits), _plan_rank(n, k, 2, bits)]
    elif op == "topk_sum":
        plans = _topk_sum_plans(n, k, bits)
    elif op == "median":
        pos = [(n - 1) // 2] if n % 2 else [n // 2 - 1, n // 2]
        plans = [_plan_network(n, pos, 1, bits), _plan_rank(n, len(pos), 1, bits)]
        if len(pos) == 2:  # the mean of the two middle values
            plans = _with_div(plans)
    elif op == "trimmed_mean":
        plans = _trimmed_plans(n, bits)
    elif op in ("max", "argmax"):
        onehot = op == "argmax"
        plans = [_plan_tournament(n, onehot, bits), _plan_pairwise(n, 1 + int(onehot), bits)]
    else:
        raise ValueError(f"unknown op {op!r}")
    return choose(plans, columns, parties, method)


def _check_k(k, n, name="k", low=1):
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"{name} must be an int, got {type(k).__name__}")
    if not low <= k <= n:
        raise ValueError(f"{name}={k} out of range [{low}, {n}] for a dimension of size {n}")


def _leading(cols, k, descending, method, bits):
    """The first k sorted positions: (values, indices) MPCTensors."""
    if k == 0 or cols.d == 0:
        empty = cols.X.new_zeros(k, cols.d)
        return cols.out(empty), cols.out(empty, scale=1)
    vals, idx = _positions(cols, list(range(k)), descending, True, method, bits)
    return cols.out(vals), cols.out(idx, scale=1)


# --- public API ---------------------------------------------------------------------

def sort(x, dim=-1, descending=False, method=None, bits=64):
    """Sorted values and indices along ``dim`` (like ``torch.sort``).

    Returns ``(values, indices)``: values with x's encoding, indices as shared
    integers (scale 1). Methods "network" (depth-t(t+1)/2 Batcher network,
    about n t^2 / 4 comparators) and "rank" (6 + 3..4 rounds, n(n-1)/2
    comparisons plus n^2 small equality tests); see the module docstring for
    costs and tie order. ``bits``: the comparison width for inputs within
    the module docstring's "Reduced width" guarantee. Reveals nothing.
    """
    _check_bits(bits)
    cols = _Columns(x, dim)
    return _leading(cols, cols.n, descending, method, bits)


def topk(x, k, dim=-1, largest=True, method=None, bits=64):
    """The k largest (or smallest) values along ``dim`` and their indices, sorted.

    Like ``torch.topk(..., sorted=True)``; returns ``(values, indices)``. The
    network method keeps only the comparators that reach the first k outputs.
    ``bits``: see the module docstring, "Reduced width". Reveals nothing.
    """
    _check_bits(bits)
    cols = _Columns(x, dim)
    _check_k(k, cols.n, "k", low=0)
    return _leading(cols, k, largest, method, bits)


def kthvalue(x, k, dim=-1, keepdim=False, method=None, bits=64):
    """The k-th smallest value (1-based) along ``dim`` and its index (stable).

    Like ``torch.kthvalue``; returns ``(values, indices)``. ``bits``: see the
    module docstring, "Reduced width". Reveals nothing.
    """
    _check_bits(bits)
    cols = _Columns(x, dim)
    if cols.n == 0:
        raise ValueError("kthvalue of an empty dimension")
    _check_k(k, cols.n)
    if cols.d == 0:
        empty = cols.X.new_zeros(1, 0)
        return cols.out(empty, keepdim=keepdim, squeeze=True), cols.out(empty, 1, keepdim, True)
    vals, idx = _positions(cols, [k - 1], False, True, method, bits)
    return cols.out(vals, keepdim=keepdim, squeeze=True), cols.out(idx, scale=1, keepdim=keepdim, squeeze=True)


def median(x, dim=-1, keepdim=False, lower=False, method=None, bits=64):
    """Median along ``dim``: numpy semantics by default, the lower median with ``lower=True``.

    numpy: the mean of the two middle values for an even count (computed as
    their sum times 1/2 with CrypTen's truncation). ``lower=True`` gives torch's
    ``median`` (the lower of the two), exactly. The network method uses a
    selection network pruned to the one or two middle outputs. ``bits``: the
    comparison width for inputs within the module docstring's "Reduced width"
    guarantee. Reveals nothing.
    """
    _check_bits(bits)
    cols = _Columns(x, dim)
    n = cols.n
    if n == 0:
        raise ValueError("median of an empty dimension")
    if cols.d == 0:
        return cols.out(cols.X.new_zeros(1, 0), keepdim=keepdim, squeeze=True)
    if n % 2 == 1 or lower:
        vals, _ = _positions(cols, [(n - 1) // 2], False, False, method, bits)
        return cols.out(vals, keepdim=keepdim, squeeze=True)
    vals, _ = _positions(cols, [n // 2 - 1, n // 2], False, False, method, bits)
    two = cols.out(vals.sum(0, keepdim=True), keepdim=keepdim, squeeze=True)
    return truncation.div(two, 2)  # the two middle values may be anywhere up to 2^62


def trimmed_mean(x, dim=-1, proportiontocut=0.1, keepdim=False, method=None, bits=64):
    """Mean after cutting ``int(proportiontocut * n)`` values from each end (scipy's ``trim_mean``).

    Rank method: the stable ranks, then ``[rank >= c] - [rank >= n - c]``
    multiplied into x by two comparisons on small integers (one batch, bits =
    bit_length(n) + 1), a local sum, and a division by the public ``n - 2c``
    (:func:`pgkernels.protocols.truncation.div`, 1 round). Network method: a
    full sort, then the middle sum. ``bits``: the width of the value
    comparisons (the rank thresholds keep ``rank_bits(n)``), for inputs within
    the module docstring's "Reduced width" guarantee.
    Reveals nothing.
    """
    _check_bits(bits)
    cols = _Columns(x, dim)
    n = cols.n
    if isinstance(proportiontocut, bool) or not isinstance(proportiontocut, (int, float)):
        raise TypeError("proportiontocut must be a number")
    if not 0 <= proportiontocut < 0.5 or not math.isfinite(proportiontocut):
        raise ValueError(f"proportiontocut must be in [0, 0.5), got {proportiontocut}")
    if n == 0:
        raise ValueError("trimmed_mean of an empty dimension")
    c = int(proportiontocut * n)
    if 2 * c >= n:
        raise ValueError(f"proportiontocut={proportiontocut} cuts every one of the {n} values")
    keep = n - 2 * c
    if cols.d == 0 or c == 0:
        total = cols.X.sum(0, keepdim=True)
        return truncation.div(cols.out(total, keepdim=keepdim, squeeze=True), keep)
    plan = choose(_trimmed_plans(n, bits), cols.d, _parties(), method)
    if plan.method == "network":
        X = cols.X.clone()
        compare_exchange(X, [], network_rows(n, None), False, bits=bits)
        total = X[c:n - c].sum(0, keepdim=True)
    else:
        d = cols.d
        rank = ranks(cols.X, prefetch=(2 * n * d, rank_bits(n), LT, 1), bits=bits)
        thr = torch.tensor([c, n - c], dtype=torch.long).view(2, 1, 1).expand(2, n, d).contiguous()
        t = rank.unsqueeze(0) - public_share(thr)
        pay = cols.X.unsqueeze(0).expand(2, n, d).reshape(1, -1)
        out = compare_shares(t.reshape(-1), LT, rank_bits(n), negate=False, payloads=pay).view(2, n, d)
        total = (out[0] - out[1]).sum(0, keepdim=True)
    return truncation.div(cols.out(total, keepdim=keepdim, squeeze=True), keep)


def _topk_sum_plans(n, k, bits=64):
    """Plans of :func:`topk_sum`: the pruned network (values only), or the
    ranks and one small comparison ``[rank < k]`` carrying the value."""
    r1, b1 = compare_cost(bits, LT, 0)
    r2, b2 = compare_cost(rank_bits(n), LT, 1, online=False)  # prefetched during the ranks
    pairs = n * (n - 1) // 2
    rank = Plan("rank", r1 + r2, pairs * b1 + n * b2, pairs + n, n, builtins.max(pairs, 2 * n),
                pairs * dealer_bytes(bits, LT, 0))
    return [_plan_network(n, list(range(k)), 1, bits), rank]


def topk_sum(x, k, dim=-1, largest=True, keepdim=False, method=None, bits=64):
    """The sum of the k largest (or smallest) values along ``dim``: exactly
    ``topk(x, k, dim, largest)[0].sum(dim)``, without selecting the values.

    Rank method: the stable ranks (6 rounds, ``n (n - 1) / 2`` comparisons per
    column), then one comparison ``[rank < k]`` on ``bit_length(n) + 1`` bits
    that multiplies the bit into the value (3..4 rounds, its material
    prefetched during the ranks; n per column), and a local sum -- where
    :func:`topk` tests every rank against each of the k positions (``n k``
    equality tests). Network method: the pruned selection network carrying
    no index, then the sum. Ties: stable ranks select exactly k values, so the
    sum is the same whichever of equal values count. Krum's scores are
    this sum. ``bits``: the width of the value comparisons (module docstring,
    "Reduced width"). Reveals nothing.
    """
    _check_bits(bits)
    cols = _Columns(x, dim)
    n = cols.n
    _check_k(k, n, "k", low=0)
    if k == 0 or cols.d == 0:
        return cols.out(cols.X.new_zeros(1, cols.d), keepdim=keepdim, squeeze=True)
    plan = choose(_topk_sum_plans(n, k, bits), cols.d, _parties(), method)
    if plan.method == "network":
        X = cols.X.clone()
        compare_exchange(X, [], network_rows(n, list(range(k))), largest, bits=bits)
        total = X[:k].sum(0, keepdim=True)
    else:
        d = cols.d
        rank = ranks(cols.X, descending=largest, prefetch=(n * d, rank_bits(n), LT, 1), bits=bits)
        t = rank - public_share(torch.full((n, d), k, dtype=torch.long))
        out = compare_shares(t.reshape(-1), LT, rank_bits(n), negate=True,
                             payloads=cols.X.reshape(1, -1)).view(n, d)  # [rank < k] * x
        total = out.sum(0, keepdim=True)
    return cols.out(total, keepdim=keepdim, squeeze=True)


def _flatten_for_none(x, dim):
    if dim is None:
        x = shares.check_mpc(x, "x")
        return x.flatten(), 0
    return x, dim


def _extreme(x, dim, largest, want_onehot, method, bits):
    _check_bits(bits)
    cols = _Columns(x, dim)
    n, d = cols.n, cols.d
    if n == 0:
        raise ValueError("max/min/argmax/argmin of an empty dimension")
    payloads = 1 + int(want_onehot)
    plans = [_plan_tournament(n, want_onehot, bits), _plan_pairwise(n, payloads, bits)]
    plan = choose(plans, d, _parties(), method)
    if d == 0:
        return cols, cols.X.new_zeros(1, 0), cols.X.new_zeros(n, 0)
    if plan.method == "pairwise":
        return (cols,) + _extreme_pairwise(cols.X, largest, want_onehot, bits)
    return (cols,) + _extreme_tournament(cols.X, largest, want_onehot, bits)


def _extreme_tournament(X, largest, want_onehot, bits=64):
    n, d = X.shape
    V = X
    H = public_share(torch.ones(n, 1, d, dtype=torch.long)) if want_onehot else None
    s = 1
    while V.shape[0] > 1:
        m = V.shape[0]
        P = m // 2
        A, B = V[0:2 * P:2], V[1:2 * P:2]
        diff = (A - B) if largest else (B - A)  # b = [B beats A], strictly: ties keep A
        pay = [(B - A).unsqueeze(1)]
        if want_onehot:
            pay += [H[0:2 * P:2], H[1:2 * P:2]]
        pay = torch.cat(pay, dim=1)  # (P, 1 + 2s, d)
        m2 = (m + 1) // 2
        sign = _self_sign(bits, -1 if largest else 1)  # payload row 0, B - A, is -diff or diff
        nxt = ((m2 // 2) * d, bits, LT, 1 + (4 * s if want_onehot else 0), sign) if m2 > 1 else None
        out = compare_shares(diff.reshape(-1), LT, bits, negate=True,
                             payloads=pay.permute(1, 0, 2).reshape(pay.shape[1], -1), prefetch=nxt,
                             self_sign=sign)
        out = out.view(-1, P, d)
        newV = A + out[0]
        if want_onehot:
            HA = H[0:2 * P:2]
            newH = torch.cat([HA - out[1:1 + s].permute(1, 0, 2), out[1 + s:].permute(1, 0, 2)], dim=1)
        if m % 2:
            newV = torch.cat([newV, V[m - 1:]], dim=0)
            if want_onehot:
                last = torch.cat([H[m - 1:], torch.zeros_like(H[m - 1:])], dim=1)
                newH = torch.cat([newH, last], dim=0)
        V = newV
        if want_onehot:
            H = newH
            s *= 2
    onehot = H[0, :n] if want_onehot else None
    return V, onehot


def _extreme_pairwise(X, largest, want_onehot, bits=64):
    """The stable rank-0 element (lowest index among equal extremes), with the
    rank method's comparisons and one equality test per element."""
    n, d = X.shape
    rank = ranks(X, descending=largest, prefetch=(n * d, rank_bits(n), EQ, 1 + int(want_onehot)), bits=bits)
    pay = [X]
    if want_onehot:
        pay.append(public_share(torch.ones(n, d, dtype=torch.long)))
    out = compare_shares(rank.reshape(-1), EQ, rank_bits(n), negate=False,
                         payloads=torch.stack(pay).reshape(len(pay), -1)).view(len(pay), n, d)
    V = out[0].sum(0, keepdim=True)
    return V, (out[1] if want_onehot else None)


def max(x, dim=None, keepdim=False, method=None, bits=64):  # noqa: A001 -- mirrors torch/CrypTen
    """Maximum along ``dim`` (all elements when None). Methods "tournament"
    (ceil(log2 n) x 6 rounds, n - 1 comparisons) and "pairwise" (8-10 rounds,
    n(n-1)/2 comparisons). ``bits``: see the module docstring, "Reduced
    width". Reveals nothing."""
    x, dim = _flatten_for_none(x, dim)
    cols, V, _ = _extreme(x, dim, True, False, method, bits)
    return cols.out(V, keepdim=keepdim, squeeze=True)


def min(x, dim=None, keepdim=False, method=None, bits=64):  # noqa: A001
    """Minimum along ``dim``; see :func:`max`. Reveals nothing."""
    x, dim = _flatten_for_none(x, dim)
    cols, V, _ = _extreme(x, dim, False, False, method, bits)
    return cols.out(V, keepdim=keepdim, squeeze=True)


def _arg(x, dim, keepdim, one_hot, largest, method, bits):
    shape = tuple(shares.check_mpc(x, "x").size())
    flat = dim is None
    x, dim = _flatten_for_none(x, dim)
    cols, _, H = _extreme(x, dim, largest, True, method, bits)
    if one_hot:
        out = cols.out(H, scale=1)
        return out.reshape(shape) if flat else out
    idx = (H * torch.arange(cols.n, dtype=torch.long, device=H.device).view(-1, 1)).sum(0, keepdim=True)
    return cols.out(idx, scale=1, keepdim=keepdim, squeeze=True)


def argmax(x, dim=None, keepdim=False, one_hot=True, method=None, bits=64):
    """Shared position of the maximum along ``dim``; ties go to the lowest index.

    ``one_hot=True`` (default): a 0/1 tensor of x's shape with a single 1 per
    column (scale 1), as CrypTen's ``argmax``; otherwise the shared index.
    The tournament carries each subtree's one-hot vector as payload of its
    matches (n values per level), so it costs no round beyond the max.
    ``bits``: see the module docstring, "Reduced width". Reveals nothing.
    """
    return _arg(x, dim, keepdim, one_hot, True, method, bits)


def argmin(x, dim=None, keepdim=False, one_hot=True, method=None, bits=64):
    """Shared position of the minimum along ``dim``; ties go to the lowest index."""
    return _arg(x, dim, keepdim, one_hot, False, method, bits)


__all__ = ["argmax", "argmin", "kthvalue", "max", "median", "min", "plan", "sort", "topk", "topk_sum", "trimmed_mean"]
