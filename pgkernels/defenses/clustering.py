"""Clustering defenses on secret-shared client updates: FLAME and AUROR.

Both replace data-dependent control flow (HDBSCAN, Lloyd's stopping rule) by
a fixed, public schedule of comparisons, so that nothing but the aggregate is
revealed. The plaintext references in :mod:`pgkernels.defenses.reference`
follow the same schedule step by step.
"""

import torch

from ..protocols import blocks, order
from ..protocols.blocks import (EQ, LT, MUX, compare_shares, mux_shares, public_share, rank_bits,
                                select_rows, weighted_sum)
from ..protocols.compare import ltz_shares, relu
from ..protocols.linalg import cosine_similarity, gram, row_sq_norms
from ..protocols.roots import sqrt_and_inv_sqrt
from ..protocols.truncation import div, exact
from ..runtime import comm as _comm
from ..runtime import rng
from .reference import AUROR_TIE
from .robust import check_updates


# compare_shares(t, LT, negate=True) is [t < 0]; negate=False gives [t >= 0].


def count_table(cnt, n, table):
    """``table[cnt]`` for shared integer counts cnt in [0, n] (int64 shares,
    scale 1), elementwise, and the one-hot bits ``[cnt == c]`` (n + 1, ...).

    One batched equality test of cnt against every c in 0..n (on
    ``bit_length(n) + 1`` bits, 2-4 rounds, 13.25 bytes or less per test);
    the lookup is then a public linear combination of the one-hot bits
    (local). ``table``: n + 1 public int64 values. Reveals nothing.
    """
    N = cnt.numel()
    cs = torch.arange(n + 1, dtype=torch.long).view(n + 1, 1)
    t = cnt.reshape(1, N) - public_share(cs.expand(n + 1, N).contiguous())
    bits = compare_shares(t.reshape(-1), EQ, rank_bits(n), negate=False).view(n + 1, N)
    table = torch.as_tensor(table, dtype=torch.long).view(n + 1, 1)
    return (bits * table).sum(0).view(cnt.shape), bits.view(n + 1, *cnt.shape)


def _inverse_count(cnt, n, scale):
    """Shared ``1 / cnt`` (0 when cnt = 0) at ``scale`` and ``[cnt == 0]`` (scale
    1) for shared integer counts cnt in [0, n]: :func:`count_table`."""
    inv = torch.zeros(n + 1, dtype=torch.long)
    inv[1:] = torch.round(scale / torch.arange(1, n + 1, dtype=torch.float64)).long()
    val, bits = count_table(cnt, n, inv)
    return val, bits[0]


# --- FLAME --------------------------------------------------------------------------

def flame_admitted(U, num_malicious=None):
    """Shared 0/1 admission vector (n,) of FLAME's clustering step, MPC-friendly.

    FLAME (Nguyen et al., USENIX Security 2022) clusters the cosine distances
    ``1 - cos(u_i, u_j)`` with HDBSCAN (min_cluster_size = n/2 + 1) and admits
    the majority cluster. Here, with no data-dependent control flow: every
    client's HDBSCAN *core distance* (its ``k = floor(n/2)``-th smallest cosine
    distance to the others, min_samples = n/2) is computed, and the ``keep``
    clients with the smallest core distances are admitted (``keep = n - f``
    when ``num_malicious = f`` is given, else ``floor(n/2) + 1``, the smallest
    majority; ties go to the lower index). Differences from HDBSCAN: the
    admitted set has a public size instead of a density-determined one, and it
    is the densest points rather than a connected component of the
    mutual-reachability graph. While fewer than half the clients are malicious,
    an attacker's core distance involves benign clients, so colluding
    attackers that sit apart from the benign majority are the first excluded,
    as with HDBSCAN.

    Cost: :func:`pgkernels.cosine_similarity` (1 + 7 + 2 rounds), a k-th value
    per row (selection network on n - 1 values), stable ranks of the n core
    distances (6 rounds) and one small comparison. Reveals nothing.
    """
    U = check_updates(U)
    n = U.size(0)
    keep = _flame_keep(n, num_malicious)
    if n == 1:
        return public_share(torch.ones(1, dtype=torch.long)), keep
    k = n // 2
    C = cosine_similarity(U)
    idx = torch.tensor([[j for j in range(n) if j != i] for i in range(n)], dtype=torch.long)
    # distance 1 - cos: the public 1 only shifts every value; rank by -cos directly
    negcos = blocks.like_shape(-blocks.raw_share(C).gather(1, idx.to(C.device)), C.encoder.scale)
    core = order.kthvalue(negcos, k, dim=1)[0]  # k-th smallest distance, minus 1
    rank = blocks.ranks(blocks.flat_share(core).view(n, 1)).view(n)
    t = rank - public_share(torch.full((n,), keep, dtype=torch.long))
    return compare_shares(t, LT, rank_bits(n), negate=True), keep  # [rank < keep]


def _flame_keep(n, num_malicious):
    if num_malicious is None:
        return n // 2 + 1
    if isinstance(num_malicious, bool) or not isinstance(num_malicious, int) or not 0 <= num_malicious < (n + 1) // 2:
        raise ValueError(f"num_malicious must be an int in [0, n/2) for FLAME (n = {n}), got {num_malicious!r}")
    return n - num_malicious


def flame(U, num_malicious=None, noise_lambda=0.001, return_selection=False):
    """FLAME (Nguyen et al., USENIX Security 2022) on secret-shared updates.

    1. Admission: :func:`flame_admitted` (cosine-distance core distances, see
       there for how it differs from HDBSCAN).
    2. Adaptive clipping: ``S = median_i ||u_i||`` over all clients; each
       admitted update is scaled by ``min(1, S / ||u_i||)``.
    3. Aggregate: the mean of the clipped admitted updates (their number is
       public: ``keep``).
    4. Noise: ``N(0, (noise_lambda * S)^2)`` per coordinate. Each server draws
       its own ``N(0, 1 / p)`` part (p servers; Box-Muller on AES-CTR output
       under a fresh ``secrets`` key, :mod:`pgkernels.runtime.rng`) and shares it, the sum is
       scaled by the secret ``noise_lambda * S``; a single server thus knows
       ``1/p`` of the noise variance (documented loss against one curious
       server). ``noise_lambda=0`` adds none (tests).

    Updates are the model deltas ``w_i - G``, so FLAME's distances to the
    global model are the update norms. Norms in [2^-8, 2^18). Cost: steps 1
    and 2 share their rounds (:func:`_flame_core`: one Gram matrix, one root
    table, one rank batch, two comparison batches; about 40 rounds), then
    the weighted sum and its division. Reveals nothing; with
    ``return_selection=True`` also returns the shared admission vector.
    """
    U = check_updates(U)
    n, d = U.size()
    if isinstance(noise_lambda, bool) or not isinstance(noise_lambda, (int, float)) or not noise_lambda >= 0:
        raise ValueError(f"noise_lambda must be a number >= 0, got {noise_lambda!r}")
    if n < 2:
        admit, keep = flame_admitted(U, num_malicious)
        norms, inv = sqrt_and_inv_sqrt(row_sq_norms(U), shift=8)
        S = norms.view(())
        with exact():
            a = div(inv * S, 256)
        factor = a - relu(a - 1)
        w = mux_shares(admit, blocks.flat_share(factor).view(1, n)).view(n)
    else:
        admit, w, S, keep = _flame_core(U, num_malicious)
    agg = div(weighted_sum(blocks.like_shape(w, U.encoder.scale), U), keep)
    if noise_lambda > 0:
        p = _comm.world_size()
        # this server's part of N(0, 1), from AES-CTR under a fresh secrets key: torch's
        # generator could be recomputed by another server from its seed and the noise stripped
        z = rng.normal(d) / p ** 0.5
        zs = blocks.like_shape(torch.round(z * agg.encoder.scale).long(), agg.encoder.scale)
        with exact():
            agg = agg + zs * (S * float(noise_lambda))
    return (agg, blocks.like_shape(admit, 1)) if return_selection else agg


def _flame_core(U, num_malicious):
    """FLAME's admission, clipping median and clipped weights, with the two
    independent chains (admission: cosines, core distances, their ranks;
    clipping: norms, their median, min(1, S / ||u_i||)) sharing their
    rounds. Returns (admit, w = admit * factor, S, keep); the same values as
    :func:`flame_admitted` and the clipping of :func:`flame` compute one
    after the other.

    1. One Gram matrix (1 round + an exact division): squared norms on its
       diagonal.
    2. One table evaluation (8 rounds): ``||u_i||`` and ``2^8 / ||u_i||``
       for the clipping, and ``2^8 / ||u_i||`` with squared norms below
       2^-12 as zero rows for the cosines (as :func:`cosine_similarity`).
    3. Cosines (two product rounds), then one batch of stable ranks over n
       + 1 or n + 2 columns (6 rounds): each client's negated cosines to the
       others (its own entry replaced by a public value above every cosine,
       so it ranks last) and the norms; one equality batch (3..4 rounds)
       selects each client's k-th smallest distance and the middle norm(s);
       the median of an even count halves their sum (1 round).
    4. ``a = S / ||u_i||`` (1 product round and a division), then one
       comparison batch (6 rounds, or 1 with FSS where the cost model picks
       it: :func:`pgkernels.protocols.compare.ltz_shares`) with the core distances' pairwise
       comparisons and ``[a < 1]``; ``factor = min(1, a) = 1 + [a < 1] (a -
       1)`` (1 round of bit injection).
    5. ``[rank < keep]`` of the core distances carrying ``factor`` (3..4
       rounds): the admission bits and ``w = admit * factor`` at once.
    Reveals nothing.
    """
    from ..protocols.roots import table

    n, d = U.size()
    keep = _flame_keep(n, num_malicious)
    k = n // 2
    scale = U.encoder.scale
    frac = blocks.frac_bits(scale)
    G = blocks.raw_share(gram(U))
    sq = blocks.like_shape(torch.diagonal(G).contiguous(), scale)
    norms, inv, ax = table(sq, [("sqrt", 0), ("inv", 8), ("inv", 8, -6)])
    outer = ax.unsqueeze(1) * ax.unsqueeze(0)              # 2^16 / (||u_i|| ||u_j||)
    C = (blocks.like_shape(G, scale) * outer).div(65536)   # cosines, as cosine_similarity
    # column i: client i's negated cosines to every client, its own entry above them all
    negcos = -blocks.raw_share(C)
    big = public_share(torch.full((n,), 4 << frac, dtype=torch.long, device=negcos.device))
    negcos = negcos.clone()
    negcos[torch.arange(n), torch.arange(n)] = big
    even = n % 2 == 0
    mids = [n // 2 - 1, n // 2] if even else [(n - 1) // 2]
    nf = blocks.flat_share(norms).view(n, 1)
    X = torch.cat([negcos.t().contiguous()] + [nf] * len(mids), dim=1)   # (n, n + len(mids))
    rank = blocks.ranks(X, prefetch=(X.numel(), rank_bits(n), EQ, 1))
    pos = torch.tensor([k - 1] * n + mids, dtype=torch.long, device=X.device).view(1, -1).expand(n, -1)
    t = rank - public_share(pos.contiguous())
    picked = compare_shares(t.reshape(-1), EQ, rank_bits(n), negate=False,
                            payloads=X.reshape(1, -1)).view(n, -1).sum(0)
    core = picked[:n]
    S = blocks.like_shape(picked[n:].sum().view(()), scale)
    if even:
        S = div(S, 2)                                       # numpy's median: the mean of the middle two
    with exact():  # S and the aggregate can be large: no truncation may fail
        a = div(inv * S, 256)                               # S / ||u_i||
    # the core distances' pairwise comparisons and [a >= 1] in one batch
    iu, ju = torch.triu_indices(n, n, 1, device=core.device)
    one = public_share(torch.full((n,), 1 << frac, dtype=torch.long, device=core.device))
    a_sh = blocks.flat_share(a).view(n)
    bits = ltz_shares(torch.cat([core[ju] - core[iu], a_sh - one]), 64, prefetch=(n, 64, MUX, 1))
    c, lt1 = bits[:-n], bits[-n:]                           # [core_j < core_i], [a < 1]
    crank = public_share(torch.arange(n, dtype=torch.long, device=core.device))
    crank = crank.index_add(0, iu, c).index_add(0, ju, -c)  # stable ranks of the core distances
    factor = one + mux_shares(lt1, (a_sh - one).view(1, n)).view(n)   # min(1, a) = 1 + [a < 1] (a - 1)
    tk = crank - public_share(torch.full((n,), keep, dtype=torch.long, device=core.device))
    out = compare_shares(tk, LT, rank_bits(n), negate=True,
                         payloads=torch.stack([public_share(torch.ones(n, dtype=torch.long,
                                                                       device=core.device)), factor]))
    return out[0], out[1], S, keep


# --- AUROR --------------------------------------------------------------------------

def _two_means_1d(X, iters, scale):
    """Per column of X (n, d) shares (scale s): 1-D 2-means, centers initialised at
    the column's min and max; ``iters`` Lloyd steps: ``b = [2 x > c0 + c1]``
    (ties to the low center), each center the mean of its points (an empty
    cluster keeps its center). Returns (c0, c1) shares (d,) and b (n, d)."""
    n, d = X.shape
    Xm = blocks.like_shape(X, scale)
    c0 = blocks.flat_share(order.min(Xm, dim=0)).clone()
    c1 = blocks.flat_share(order.max(Xm, dim=0)).clone()
    b = None
    for _ in range(iters):
        diff = (c0 + c1).view(1, d) - 2 * X                        # < 0  <=>  2x > c0 + c1
        b = compare_shares(diff.reshape(-1), LT, 64, negate=True).view(n, d)
        bx = mux_shares(b.reshape(-1), X.reshape(1, -1)).view(n, d)
        s1 = bx.sum(0)
        s0 = X.sum(0) - s1
        cnt1 = b.sum(0)
        cnt0 = public_share(torch.full((d,), n, dtype=torch.long)) - cnt1
        inv, zero = _inverse_count(torch.stack([cnt0, cnt1]), n, scale)
        sums = blocks.like_shape(torch.stack([s0, s1]), scale) * blocks.like_shape(inv, scale)   # mean when nonempty
        kept = mux_shares(zero.reshape(-1), torch.stack([c0, c1]).reshape(1, -1)).view(2, d)
        c = blocks.flat_share(sums).view(2, d) + kept
        c0, c1 = c[0].clone(), c[1].clone()
    return c0, c1, b


def cluster_means(V, b, m0, m1, scale, members=None):
    """Shares of the two cluster means (m0, m1) (d,) of the rows of V (n, d)
    (int64 shares at ``scale``) split by the bit shares b (n,) (1: cluster 1);
    an empty cluster keeps its previous center m0 or m1 (shares (d,)).

    ``members`` (bit shares (n,), optional): only those rows count (the caller
    zeroes the other rows of V and of b; cluster 0's count is then
    ``sum(members) - sum(b)``). Cost: one bit injection round (n d values),
    one :func:`count_table` of both counts, one multiplication by the shared
    inverses (exact division) and one bit injection (2 d values). Reveals
    nothing. Call inside ``exact()`` when sums can be large.
    """
    n, d = V.shape
    cnt1 = b.sum()
    total = members.sum() if members is not None else public_share(torch.tensor(n, dtype=torch.long))
    cnt0 = total - cnt1
    s1 = mux_shares(b.repeat_interleave(d), V.reshape(1, -1)).view(n, d).sum(0)
    s0 = V.sum(0) - s1
    inv, zero = _inverse_count(torch.stack([cnt0, cnt1]), n, scale)
    means = blocks.like_shape(torch.stack([s0, s1]), scale) * blocks.like_shape(inv, scale).view(2, 1)
    kept = mux_shares(zero.repeat_interleave(d), torch.stack([m0, m1]).reshape(1, -1)).view(2, d)
    c = blocks.flat_share(means).view(2, d) + kept
    return c[0].clone(), c[1].clone()


def two_means(V, m0, m1, iters, scale, members=None):
    """Lloyd's 2-means on the rows of V (n, d) (int64 shares at ``scale``) from
    the centers (m0, m1) (shares (d,)), ``iters`` public steps, as
    :func:`pgkernels.defenses.reference.two_means`: assign ``b_i = [2 v_i (m1 -
    m0) - (||m1||^2 - ||m0||^2) > AUROR_TIE]`` (exact ties to cluster 0, so
    truncation noise never decides them), then :func:`cluster_means`.
    ``members``: see :func:`cluster_means` (b is 0 outside them). Returns (b
    bit shares (n,), m0, m1). AUROR's client clustering and activation
    clustering (:mod:`pgkernels.defenses.detection`) run this.

    Cost per step: two Beaver products (the scores and the center norms), one
    64-bit comparison per row (6 rounds), one bit injection when members are
    given, and :func:`cluster_means`. Reveals nothing.
    """
    n, d = V.shape
    Vm = blocks.like_shape(V, scale)
    tie = public_share(torch.tensor(max(1, int(AUROR_TIE * scale))))
    b = None
    for _ in range(iters):
        C0, C1 = blocks.like_shape(m0, scale), blocks.like_shape(m1, scale)
        lhs = (Vm @ (C1 - C0)) * 2                              # (n,)
        # one truncation per norm (matmul), not d: keeps fixed-point noise a few LSBs
        rhs = (C1.view(1, d) @ C1.view(d, 1)).view(1) - (C0.view(1, d) @ C0.view(d, 1)).view(1)
        # [2 v (c1 - c0) - (|c1|^2 - |c0|^2) > TIE]: exact ties (e.g. no indicative
        # feature, so v = c0 = c1 = 0) must not be decided by truncation noise
        b = compare_shares(blocks.flat_share(rhs - lhs).reshape(-1) + tie, LT, 64, negate=True)
        if members is not None:
            b = mux_shares(members, b.view(1, n)).view(n)
        m0, m1 = cluster_means(V, b, m0, m1, scale, members)
    return b, m0, m1


def auror(U, alpha=2.0, iters=3, return_selection=False):
    """AUROR (Shen et al., ACSAC 2016) on secret-shared updates.

    1. Indicative features: per coordinate, 1-D 2-means over the n clients'
       values (centers start at the min and the max, ``iters`` Lloyd steps);
       coordinate j is indicative when its centers are far apart relative to
       the others: ``d * gap_j > alpha * sum_l gap_l`` (AUROR's threshold on
       the cluster distance, made scale-free so it needs no public statistic).
    2. 2-means over clients on the indicative coordinates (the others masked
       to 0), starting from the two per-coordinate center vectors, ``iters``
       Lloyd steps (``b_i = [||v_i - c0||^2 - ||v_i - c1||^2 > 2^-11]``, one
       comparison of ``2 v_i (c1 - c0)`` with ``||c1||^2 - ||c0||^2``; the
       small margin keeps exact ties, such as no indicative feature at all, in
       cluster 0 whatever the truncation noise).
    3. The strictly smaller cluster is dropped (none on a tie); the aggregate
       is the mean of the remaining updates.

    Cluster means divide by secret counts: an equality test of the count
    against 0..n and a public table of inverses. Cost per Lloyd step of step
    1: n d comparisons, one bit injection round, (n + 1) d small equality
    tests, one multiplication; step 2 is the same over n clients.
    Reveals nothing; ``return_selection=True`` also returns the shared 0/1
    vector of kept clients.
    """
    U = check_updates(U)
    n, d = U.size()
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be an int >= 1, got {iters!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(f"alpha must be a positive number, got {alpha!r}")
    # every product here is of (sums of) client values, which can be large
    with exact():
        return _auror(U, n, d, alpha, iters, return_selection)


def _auror(U, n, d, alpha, iters, return_selection):
    scale = U.encoder.scale
    X = blocks.flat_share(U).view(n, d)
    c0, c1, _ = _two_means_1d(X, iters, scale)
    gap = c1 - c0                                               # >= 0
    # [d gap_j > alpha sum gap]: alpha is public, so scale it into the ring
    a_num = int(round(alpha * 256))
    diff = a_num * gap.sum() - (256 * d) * gap                  # < 0 <=> indicative
    ind = compare_shares(diff, LT, 64, negate=True)             # (d,) shared 0/1
    V = mux_shares(ind.repeat(n), X.reshape(1, -1)).view(n, d)  # masked updates
    m0 = mux_shares(ind, c0.view(1, d)).view(d)
    m1 = mux_shares(ind, c1.view(1, d)).view(d)
    b, _, _ = two_means(V, m0, m1, iters, scale)
    cnt1 = b.sum()
    # drop cluster 1 if 2 cnt1 < n, cluster 0 if 2 cnt1 > n
    small1 = compare_shares((2 * cnt1 - public_share(torch.tensor(n))).view(1), LT, rank_bits(2 * n),
                            negate=True)
    small0 = compare_shares((public_share(torch.tensor(n)) - 2 * cnt1).view(1), LT, rank_bits(2 * n),
                            negate=True)
    # keep_i = 1 - b_i small1 - (1 - b_i) small0
    drop = mux_shares(b, torch.stack([small1.expand(n) - small0.expand(n)]).contiguous()).view(n)
    keep = public_share(torch.ones(n, dtype=torch.long)) - drop - small0.expand(n)
    total = select_rows(keep, U)
    inv, _ = _inverse_count(keep.sum().view(1), n, scale)
    agg = total * blocks.like_shape(inv, scale)
    return (agg, blocks.like_shape(keep, 1)) if return_selection else agg
