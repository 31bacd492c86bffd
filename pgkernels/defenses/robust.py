"""Byzantine-robust aggregation of secret-shared client updates.

Input: a shared (n, d) MPCTensor ``U`` of client updates (n clients, d
parameters). Output: the shared aggregate (d,). Nothing is revealed unless a
function says so; the plaintext references with identical semantics are in
:mod:`pgkernels.defenses.reference`.
"""

import torch

from ..protocols import blocks, order
from ..protocols.blocks import LT, compare_shares, mux_shares, select_rows, weighted_sum
from ..protocols.compare import relu
from ..protocols.linalg import gram, pairwise_sq_dist, row_sq_norms
from ..protocols.roots import inv_sqrt, reciprocal, sqrt_and_inv_sqrt
from ..protocols.truncation import div, exact


def check_updates(U):
    """U must be a shared 2-D (clients x parameters) MPCTensor with at least one
    client: TypeError/ValueError naming ``updates`` otherwise. Returns U."""
    U = blocks.check_mpc(U, "updates")
    if U.dim() != 2:
        raise ValueError(f"updates must be 2-D (clients x parameters), got shape {tuple(U.size())}")
    if U.size(0) == 0:
        raise ValueError("updates has no clients")
    return U


def _check_f(num_malicious, n, need, rule):
    if isinstance(num_malicious, bool) or not isinstance(num_malicious, int) or num_malicious < 0:
        raise ValueError(f"num_malicious must be an int >= 0, got {num_malicious!r}")
    if n < need(num_malicious):
        raise ValueError(f"{rule} with num_malicious={num_malicious} needs at least "
                         f"{need(num_malicious)} clients, got {n}")


def fedavg(U):
    """Plain mean of the updates (FedAvg with equal weights). Cost: local sum and
    one truncation. Reveals nothing."""
    U = check_updates(U)
    return div(U.sum(0), U.size(0))


def _order_bits(U, rule, bound):
    """The comparison width for ``rule`` on U checked against ``bound``
    (:func:`pgkernels.defenses.validity.compare_bits`; None: 64)."""
    from .validity import compare_bits  # validity -> registry -> robust: imported on use

    if bound is None:
        return 64
    n, d = U.size()
    return compare_bits(bound, rule, n, d, frac_bits=blocks.frac_bits(U.encoder.scale))


def median(U, method=None, bound=None):
    """Coordinate-wise median (Yin et al. 2018; numpy's median: the mean of the two
    middle values for even n). Cost: see :func:`pgkernels.median`. Reveals nothing.

    ``bound``: the coordinate bound U was checked against on the shares
    (:func:`pgkernels.defenses.validity.validate`, "drop" or "clamp"); the
    comparisons then run on :func:`~pgkernels.defenses.validity.compare_bits`
    bits (22 for bound 8: 5 rounds instead of 6 per comparison and about
    half the bytes; see :mod:`pgkernels.protocols.order`, "Reduced width").
    An unchecked value outside it makes the result meaningless. None: 64 bits."""
    U = check_updates(U)
    bits = _order_bits(U, "median", bound)
    return order.median(U, dim=0, method=method, bits=bits)


def trimmed_mean(U, proportiontocut=0.1, method=None, bound=None):
    """Coordinate-wise trimmed mean (Yin et al. 2018; scipy's ``trim_mean``: cut
    ``int(p n)`` values from each end). ``bound``: as for :func:`median`.
    Reveals nothing."""
    U = check_updates(U)
    bits = _order_bits(U, "trimmed_mean", bound)
    return order.trimmed_mean(U, dim=0, proportiontocut=proportiontocut, method=method, bits=bits)


def krum_scores(U, num_malicious, method=None):
    """Shared Krum scores (n,): each client's sum of squared distances to its
    ``n - f - 2`` nearest other clients (Blanchard et al. 2017).

    Protocol: the Gram-matrix distances (1 round), then the sum of the
    ``n - f - 2`` smallest of each row's n - 1 off-diagonal distances by a
    selection network or by ranks and one ``[rank < m]`` comparison carrying
    the distance (:func:`pgkernels.protocols.order.topk_sum`; ``method``
    "network" or "rank", default the cost model's choice). Reveals nothing.
    """
    U = check_updates(U)
    n = U.size(0)
    _check_f(num_malicious, n, lambda f: 2 * f + 3, "Krum")
    m = n - num_malicious - 2
    D = pairwise_sq_dist(U)
    idx = torch.tensor([[j for j in range(n) if j != i] for i in range(n)], dtype=torch.long)
    off = blocks.like_shape(blocks.raw_share(D).gather(1, idx.to(D.device)), D.encoder.scale)
    return order.topk_sum(off, m, dim=1, largest=False, method=method)


def krum(U, num_malicious, return_selection=False, method=None):
    """Krum: the update of the client with the lowest Krum score (ties: lowest index).

    Needs ``n >= 2 f + 3``. Cost: :func:`krum_scores`, a tournament argmin over
    n scores, and one round selecting the row (n d bit injections). Reveals
    nothing; with ``return_selection=True`` also returns the shared one-hot of
    the selected client (revealing it is the caller's choice). ``method``:
    the top-k method of :func:`krum_scores`.
    """
    scores = krum_scores(U, num_malicious, method)
    onehot = order.argmin(scores, dim=0)
    out = select_rows(blocks.raw_share(onehot), U)
    return (out, onehot) if return_selection else out


def multi_krum(U, num_malicious, to_keep, return_selection=False):
    """Multi-Krum: the mean of the ``to_keep`` updates with the lowest Krum scores
    (ties: lower index first). Needs ``n >= 2 f + 3`` and ``1 <= to_keep <= n``.

    Cost: :func:`krum_scores`, stable ranks of the n scores (n(n-1)/2
    comparisons, 6 rounds), one small comparison ``rank < to_keep``, one
    round of bit injection, a truncation. Reveals nothing; the shared 0/1
    selection vector with ``return_selection=True``.
    """
    U = check_updates(U)
    n = U.size(0)
    if isinstance(to_keep, bool) or not isinstance(to_keep, int) or not 1 <= to_keep <= n:
        raise ValueError(f"to_keep must be an int in [1, {n}], got {to_keep!r}")
    scores = krum_scores(U, num_malicious)
    rank = blocks.ranks(blocks.flat_share(scores).view(n, 1)).view(n)
    t = rank - blocks.public_share(torch.full((n,), to_keep, dtype=torch.long))
    keep = compare_shares(t, LT, blocks.rank_bits(n), negate=True)  # [rank < to_keep]
    out = div(select_rows(keep, U), to_keep)
    if return_selection:
        return out, blocks.like_shape(keep, 1)
    return out


def norm_clip(U, max_norm):
    """Mean of the updates after scaling each to norm at most ``max_norm``
    (``u_i * min(1, max_norm / ||u_i||)``; Sun et al. 2019's norm bounding).

    Cost: exact squared norms (1 round, one truncation per row), the
    range-robust inverse square root (times 2^8, for precision), ``min(1, .)``
    as ``a - relu(a - 1)`` (one comparison), one Beaver matmul ``factor U`` (d
    truncations) and a division by 2^8 n. Squared
    norms in [2^-16, 2^37) (see :mod:`pgkernels.defenses.validity` for the
    input bound). Reveals nothing.
    """
    U = check_updates(U)
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)) or not max_norm > 0:
        raise ValueError(f"max_norm must be a positive number, got {max_norm!r}")
    # 256 min(1, N / ||u||): 8 more significant bits for the small factors of
    # long updates (1/24576 is 2.7 units at 16 fractional bits, 680 here)
    a = inv_sqrt(row_sq_norms(U), shift=8) * float(max_norm)
    factor = a - relu(a - 256)
    # a zero row has inv norm 0 -> factor 0; its contribution is 0 either way
    return div(weighted_sum(factor, U), 256 * U.size(0))


def fltrust(U, server_update):
    """FLTrust (Cao et al., NDSS 2021).

    ``trust_i = relu(cos(u_i, g))``; each update is rescaled to the server
    update's norm, ``u_i ||g|| / ||u_i||``; the aggregate is
    ``sum_i trust_i u_i ||g|| / ||u_i|| / sum_i trust_i`` (0 when every trust
    score is 0). ``server_update``: the server's own update g (shared or public,
    shape (d,)).

    Protocol: the Gram matrix of ``[U; g]`` (1 round and an exact division)
    gives the squared norms and ``u_i . g``; ``r_i = relu(u_i . g)`` (one
    comparison), so ``relu(cos_i) = r_i / (|u_i| |g|)``; the norms and
    inverse norms of the n updates and g from one
    :func:`~pgkernels.protocols.roots.sqrt_and_inv_sqrt` (8 rounds); three
    product rounds give the trust scores and the weights ``trust_i |g| /
    |u_i|``, one Beaver matrix product their weighted sum,
    :func:`~pgkernels.protocols.roots.reciprocal` (8 rounds) the final 1 /
    sum, and one product the result (every product followed by an exact
    division). Reveals nothing.
    """
    U = check_updates(U)
    n, d = U.size()
    mpc = blocks.mpc_module()
    if not isinstance(server_update, mpc.MPCTensor):
        g_plain = blocks.check_public(torch.as_tensor(server_update, dtype=torch.float64), "server_update")
        server_update = blocks.to_mpc(g_plain, U)
    g = blocks.check_mpc(server_update, "server_update")
    if tuple(g.size()) != (d,):
        raise ValueError(f"server_update must have shape ({d},), got {tuple(g.size())}")
    if g.encoder.scale != U.encoder.scale:
        return _fltrust_separate(U, g)
    # One Gram matrix of [U; g] (1 round) gives every squared norm (its
    # diagonal) and every u_i . g (its last column); one table the norms and
    # inverse norms of all n + 1. relu(cos_i) = relu(u_i . g) / (|u_i| |g|).
    Ug = blocks.like_shape(torch.cat([blocks.raw_share(U), blocks.raw_share(g).view(1, d)]), U.encoder.scale)
    G = blocks.raw_share(gram(Ug))
    scale = U.encoder.scale
    sq = blocks.like_shape(torch.diagonal(G).contiguous(), scale)  # |u_i|^2 and |g|^2
    r = relu(blocks.like_shape(G[:n, n].contiguous(), scale))      # relu(u_i . g)
    # 2^8 / norm keeps 8 more significant bits of the small inverse norms
    roots_, inv = sqrt_and_inv_sqrt(sq, shift=8)                   # |x|, 256 / |x|: one table
    inv_u, inv_g, g_norm = inv[:n], inv[n], roots_[n]
    mpc = blocks.mpc_module()
    # Every product below stays within the old protocol's magnitudes (for inputs
    # within validity.input_bound): no intermediate exceeds 2^62 at scale 2^32.
    with exact():  # products of client data can be large: no truncation may fail
        # r_i 256 / |u_i| and |g| 256 / |u_i| in one product round
        pr = mpc.MPCTensor.stack([r, g_norm.expand(n)]) * inv_u.unsqueeze(0).expand(2, n)
        trust = div(pr[0] * inv_g, 65536)                           # relu(cos_i)
        ratio = div(pr[1], 256)                                     # |g| / |u_i|
        total = weighted_sum(trust * ratio, U)
        t = trust.sum()
    inv_t = reciprocal(t, shift=8)                                  # 256 / sum trust
    with exact():
        return div(total * inv_t, 256)


def _fltrust_separate(U, g):
    """FLTrust with g in another encoding than U: the norms separately."""
    n, d = U.size()
    g_sq = row_sq_norms(g.view(1, d))
    A, B = inv_sqrt(row_sq_norms(U), shift=8), inv_sqrt(g_sq.view(()), shift=8)
    with exact():
        g_norm = div(g_sq.view(()) * B, 256)
    with exact():  # products of client data can be large: no truncation may fail
        cos = div((U @ g) * A * B, 65536)                # (n,)
        trust = relu(cos)
        ratio = div(A * g_norm, 256)                     # ||g|| / ||u_i||
        total = weighted_sum(trust * ratio, U)
        t = trust.sum()
    inv_t = reciprocal(t, shift=8)                       # 256 / sum trust
    with exact():
        return div(total * inv_t, 256)


SELECT_BATCH = 1 << 23  # Bulyan: elements of bit injection per round when selecting the picked rows


def _removed_offset(n):
    """Ring offset added to the distances (and n times to the scores) of removed
    clients. A live score sums at most n distances below the offset, a removed
    one is at least n offsets, and every value stays below 3 n offsets < 2^63."""
    return 2 ** 61 // n


def bulyan(U, num_malicious, return_selection=False):
    """Bulyan (El Mhamdi et al., ICML 2018); needs ``n >= 4 f + 3``.

    1. theta = n - 2f rounds of Krum on the clients not yet selected (the
       removed ones get a large public offset on their distances and scores,
       so they are never near and never chosen). After the last round, bit
       injection selects the theta picked rows into S (theta x d): as many
       picks per round as keep it within ``SELECT_BATCH`` elements (all of
       them in one round at n = 100, d = 1e3).
    2. Per coordinate, the beta = theta - 2f values of S closest to S's
       coordinate-wise median are averaged: |S - median| by one comparison,
       then a selection network on those distances that carries the values as
       payload, pruned to its beta smallest outputs.

    Rounds: the theta selections are sequential by the rule's definition
    (each depends on the clients removed before it); each is a
    :func:`pgkernels.protocols.order.topk_sum` of the live distances and an
    argmin of the n scores -- at WAN latency the cost model's rank and
    pairwise methods, about 19 rounds per selection, so about ``19 theta``
    rounds in all (988 at n = 100, f = 24), whatever the bandwidth.

    Reveals nothing; ``return_selection=True`` also returns the shared (theta,
    n) one-hot rows of the Krum selections. Live squared distances must stay
    below the removal offset ``2^61 / n`` (ring units) and the Gram entries
    below 2^62 at scale 2^32: inputs within
    :func:`pgkernels.defenses.validity.input_bound` ensure both.
    """
    U = check_updates(U)
    n, d = U.size()
    _check_f(num_malicious, n, lambda f: 4 * f + 3, "Bulyan")
    f = num_malicious
    theta, beta = n - 2 * f, n - 4 * f
    D = pairwise_sq_dist(U)
    scale = D.encoder.scale
    big = _removed_offset(n)
    idx = torch.tensor([[j for j in range(n) if j != i] for i in range(n)], dtype=torch.long)
    alive = blocks.public_share(torch.ones(n, dtype=torch.long))  # shared 0/1, scale 1
    picks = []
    for t in range(theta):
        m = (n - t) - f - 2
        dead = blocks.public_share(torch.ones(n, dtype=torch.long)) - alive
        off = blocks.raw_share(D).gather(1, idx.to(D.device)) + dead[idx.to(D.device)] * big
        off_t = blocks.like_shape(off, scale)
        if m >= 1:
            score = order.topk_sum(off_t, m, dim=1, largest=False)
        else:
            score = blocks.like_shape(torch.zeros(n, dtype=torch.long, device=D.device), scale)
        score = score + blocks.like_shape(dead * (big * n), scale)
        onehot = order.argmin(score, dim=0)
        picks.append(onehot)
        alive = alive - blocks.raw_share(onehot)
    mpc = blocks.mpc_module()
    # the selected rows after the loop, many picks per round of bit injection
    # (theta n d elements in all; at most SELECT_BATCH per round, for memory)
    H = torch.stack([blocks.raw_share(p) for p in picks])  # (theta, n) one-hot rows
    Uf = blocks.flat_share(U).view(1, n, d)
    per = max(1, SELECT_BATCH // max(1, n * d))
    parts = []
    for a in range(0, theta, per):
        c = min(per, theta - a)
        prod = mux_shares(H[a:a + c].view(c, n, 1).expand(c, n, d).reshape(-1),
                          Uf.expand(c, n, d).reshape(1, -1)).view(c, n, d)
        parts.append(prod.sum(1))
    S = blocks.like_shape(torch.cat(parts), U.encoder.scale)  # (theta, d)
    med = order.median(S, dim=0)
    dist = S - med.unsqueeze(0)
    absd = relu(dist) * 2 - dist
    X = blocks.flat_share(absd).view(theta, d).clone()
    vals = [blocks.flat_share(S).view(theta, d).clone()]
    rows_net = blocks.network_rows(theta, list(range(beta)))
    blocks.compare_exchange(X, vals, rows_net, descending=False)
    out = div(blocks.like_shape(vals[0][:beta].sum(0), S.encoder.scale), beta)
    if return_selection:
        return out, mpc.MPCTensor.stack(picks)
    return out
