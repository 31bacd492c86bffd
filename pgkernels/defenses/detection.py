"""Finding poisoned records inside MPC: spectral signatures, activation clustering, STRIP.

The data owners do not reveal their records, so the detectors run on the
compute parties' shares of the records' representations (the penultimate-layer
activations of a model trained on the pooled shared data, see
:func:`pgkernels.train.mpc.penultimate`; the whole pipeline, with
retraining, is :func:`pgkernels.train.mpc.detect_and_retrain_mpc`). Each detector follows a
fixed public schedule (no data-dependent control flow), has a numpy twin with
the same semantics in :mod:`pgkernels.defenses.reference`, and returns shared
0/1 flags (an MPCTensor with scale 1, 1 = flagged) that reveal nothing until
the caller opens them.

Inputs. ``R``: shared (n, d) representations (MPCTensor, 16 fractional
bits). ``labels``: the records' classes, either shared one-hot (n, K)
(MPCTensor with any scale: the owners' labels, as private training holds
them) or public integers (n,). With shared labels the class sizes stay
secret: every class is processed over all n rows with the other classes'
rows zeroed (bit injection), which costs K times the work on n rows rather
than the work on each class's own rows.

Ranges. The power iteration normalises ``w = C^T C v`` with
:func:`pgkernels.protocols.roots.inv_sqrt`, valid for ``||w||^2`` in
``[2^-16, 2^37)``: the top eigenvalue of each class's scatter matrix must be
below about 3.7e5 (e.g. 500 records of 32 activations of magnitude up to 5);
scale R down beforehand otherwise. Scores and cluster sums use the exact
division of :mod:`pgkernels.protocols.truncation`.

Costs are per party and per other party, 2 parties (see
:mod:`pgkernels.protocols.blocks`): with n records, d features, K classes,
``t`` power iterations:

* shared labels to bits: n K comparisons (6 rounds); class means and centring:
  2 bit injections of K n d values (2 rounds, 8 bytes each), one
  :func:`count_table` of K counts (n + 1 equality tests each);
* power iteration, per class and step: 2 Beaver matrix-vector products
  (opening C once: 8 n d bytes; 2 rounds), exact squared norm and
  :func:`~pgkernels.protocols.roots.inv_sqrt` (8 rounds), one exact
  division (1 round): about 13 rounds;
* spectral signatures: stable ranks of the n K scores (``K n (n - 1) / 2``
  comparisons in one batch, 6 rounds, 13.25 bytes each), the removal counts
  by table lookup, one comparison of rank with count per entry (2-4 rounds)
  and one bit injection;
* activation clustering: the projections, the sign split (6 rounds), and
  :func:`pgkernels.defenses.clustering.two_means` per class (about 12
  rounds per Lloyd step), the size test (4 rounds);
* with a trusted clean set of m records (``clean=``): its own label bits,
  centring and counts (as above, on m rows); the suspect test batched over
  the classes (exact square sums of the training and clean rows, 1 round
  each, a product by 1/count each, one comparison of K elements: about 10
  rounds in all); one bit injection for the clean-mean shifts (spectral) and
  one for the suspect bits;
* STRIP: a row maximum (6 rounds per level of ``ceil(log2 K)``), CrypTen's
  exp and log, Newton steps for 1/S (2 rounds each), the mean per query.

Trusted clean set. The papers' rules act on every class: spectral
signatures remove ``ceil(1.5 eps n_c)`` records from each class, and
activation clustering's relative-size test flags any class with a small
natural sub-population (on MNIST a style of 7s, 34% of its class). When the
poison is a large share of its target class (MNIST's backdoored owner: a
third of class 0) no single eps or size threshold separates it. Given a
trusted clean set (``clean=(R_clean, labels_clean)``, e.g. the defender's
validation records under the same model), both detectors act only on
*suspect* classes, whose records spread at least ``ratio`` (1.5) times more
around their mean than the clean records of the class (mean squared
distance; :func:`pgkernels.defenses.reference.suspect_classes`), and
spectral signatures centre the scores at the clean class mean, which the
poison cannot drag. On MNIST (docs/results/detection): the nine clean
classes' ratios are 0.98-1.01, the backdoored class's 1.70; spectral signatures at eps
= 0.35 then flag 95.8% of the poison at 2.9% FPR, activation clustering
93.6% at 0.3%. The suspect bits stay shared.

Revealed: nothing; flags, scores, thresholds, clusters and which classes were
suspect are shares.
"""

import math

import torch

from ..protocols import blocks, order
from ..protocols.blocks import LT, compare_shares, mux_shares, public_share, rank_bits
from ..protocols.linalg import row_sq_norms
from ..protocols.roots import inv_sqrt
from ..protocols.truncation import div, exact
from . import reference
from .clustering import _inverse_count, cluster_means, count_table, two_means

POWER_ITERS = reference.POWER_ITERS
KMEANS_ITERS = reference.KMEANS_ITERS
AC_SIZE_THRESHOLD = reference.AC_SIZE_THRESHOLD
STRIP_ALPHA = reference.STRIP_ALPHA

_SHIFT = 16  # inv_sqrt's shift: 2^16 / ||w|| keeps 16 significant bits for ||w|| up to 2^18.5


# --- plumbing -----------------------------------------------------------------------

def _check_representations(R):
    R = blocks.check_mpc(R, "R")
    if R.dim() != 2:
        raise ValueError(f"R must be 2-D (records x features), got shape {tuple(R.size())}")
    return R


def _label_bits(labels, n, classes):
    """Bit shares (n, K) of the records' classes from shared one-hot labels
    (``[y - 1/2 >= 0]``, one comparison per entry) or public integer labels."""
    if not hasattr(labels, "encoder"):  # public integers (an MPCTensor has an encoder)
        y = torch.as_tensor(labels)
        if y.dim() != 1 or y.numel() != n:
            raise ValueError(f"labels must have shape ({n},) or ({n}, classes), got {tuple(y.shape)}")
        if y.dtype.is_floating_point and not torch.equal(y, y.round()):
            raise ValueError("public labels must be integers")
        y = y.long()
        K = int(y.max()) + 1 if classes is None else int(classes)
        if n and (int(y.min()) < 0 or int(y.max()) >= K):
            raise ValueError(f"labels must lie in [0, {K})")
        return public_share(torch.nn.functional.one_hot(y, K).long()), K
    Y = blocks.check_mpc(labels, "labels")
    if Y.dim() != 2 or Y.size(0) != n:
        raise ValueError(f"labels must have shape ({n},) or ({n}, classes), got {tuple(Y.size())}")
    K = Y.size(1)
    if classes is not None and int(classes) != K:
        raise ValueError(f"classes={classes} but the one-hot labels have {K} columns")
    half = public_share(torch.full((n * K,), Y.encoder.scale // 2, dtype=torch.long))
    bits = compare_shares(blocks.flat_share(Y) - half, LT, 64, negate=False)
    return bits.view(n, K), K


def _centred(R, B):
    """Per class c, the rows of class c minus the class mean, other rows 0:
    shares (K, n, d) at R's scale; the class counts (K,) (scale 1); the class
    means (K, d) at R's scale; ``[n_c == 0]`` (K,) bit shares; and ``1 / n_c``
    (K,) at R's scale (0 for an empty class)."""
    n, d = R.size()
    K = B.shape[1]
    scale = R.encoder.scale
    X = blocks.flat_share(R).view(n, d)
    bits = B.t().reshape(K, n, 1).expand(K, n, d).reshape(-1)
    members = mux_shares(bits, X.reshape(1, n * d).repeat(1, K)).view(K, n, d)
    cnt = B.sum(0)
    inv, empty = _inverse_count(cnt, n, scale)
    with exact():  # class sums can be large
        mu = blocks.like_shape(members.sum(1), scale) * blocks.like_shape(inv, scale).view(K, 1)
    diff = X.view(1, n, d) - blocks.flat_share(mu).view(K, 1, d)
    C = mux_shares(bits, diff.reshape(1, -1)).view(K, n, d)
    return C, cnt, blocks.flat_share(mu).view(K, d), empty, inv


def _start(d, seed, scale):
    v = torch.as_tensor(reference.start_vector(d, seed))
    return blocks.like_shape(public_share(torch.round(v * scale).long()), scale)


def top_directions(C, components=1, iters=POWER_ITERS, seed=0):
    """The top ``components`` right-singular vectors of the shared (n, d) C, as
    a list of shared (d,) vectors: the power iteration with deflation of
    :func:`pgkernels.defenses.reference.top_directions` (same public start
    vectors, same ``iters``), ``v = w * (2^16 / ||w||) / 2^16`` with the
    range-robust :func:`~pgkernels.protocols.roots.inv_sqrt` (0 when
    ``||w||^2 < 2^-16``). Per step: 2 Beaver matrix-vector products, 2 more
    per earlier component, an exact squared norm, ``inv_sqrt`` and one exact
    division (about 13 rounds). Reveals nothing."""
    n, d = C.size()
    scale = C.encoder.scale
    out = []
    for j in range(components):
        v = _start(d, seed + j, scale)
        for _ in range(iters):
            with exact():
                w = C.t().matmul(C.matmul(v))
                for p in out:
                    w = w - p * (p * w).sum()
                a = inv_sqrt(row_sq_norms(w.view(1, d)), shift=_SHIFT)
                v = div(w * a, 2 ** _SHIFT)
        out.append(v)
    return out


def _classes(R, labels, classes):
    R = _check_representations(R)
    n, _ = R.size()
    B, K = _label_bits(labels, n, classes)
    C, cnt, mu, _, inv = _centred(R, B)
    return R, B, K, C, cnt, mu, inv


class _Clean:
    """The trusted clean records' per-class statistics, for the suspect test
    (:func:`pgkernels.defenses.reference.suspect_classes`): class means (K, d),
    ``[n'_c > 0]`` bits (K,), and per class the spread ``||C'_c||^2 / n'_c``,
    shared."""

    def __init__(self, clean, K, d, ratio):
        if not isinstance(clean, (tuple, list)) or len(clean) != 2:
            raise TypeError("clean must be a pair (R_clean, labels_clean)")
        reference._check_ratio(ratio)
        Rc = _check_representations(clean[0])
        if Rc.size(1) != d:
            raise ValueError(f"clean representations must have {d} features, got {Rc.size(1)}")
        m = Rc.size(0)
        Bc, Kc = _label_bits(clean[1], m, K)
        if Kc != K:
            raise ValueError(f"the clean labels have {Kc} classes, the records {K}")
        self.ratio = float(ratio)
        self.scale = Rc.encoder.scale
        C, cnt, self.mu, empty, inv = _centred(Rc, Bc)
        self.nonempty = public_share(torch.ones(K, dtype=torch.long)) - empty
        self.spread = _spreads(C, inv, self.scale)

    def suspect(self, spread):
        """Bit shares (K,) of ``[S_c >= ratio S'_c]`` for the classes' own
        spreads S (shared (K,), :func:`_spreads`): one batched comparison."""
        with exact():
            diff = spread - self.spread * self.ratio
        return compare_shares(blocks.flat_share(diff), LT, 64, negate=False)

    def shifts(self, mu, d):
        """``mu_c - mu'_c`` per class, 0 where the clean set has no record of
        c: shares (K, d) (one bit injection for all classes)."""
        K = mu.shape[0]
        return mux_shares(self.nonempty.repeat_interleave(d), (mu - self.mu).reshape(1, -1)).view(K, d)


def _spreads(C, inv, scale):
    """``||C_c||_F^2 / n_c`` for every class: the mean squared distance to the
    class mean, from the centred shares C (K, n, d) (non-members 0) and inv
    = 1 / n_c (K,); a shared (K,) vector. One round for the exact square sums
    of all K n rows, one product."""
    K, n, d = C.shape
    with exact():
        sq = blocks.flat_share(row_sq_norms(blocks.like_shape(C.reshape(K * n, d), scale))).view(K, n).sum(1)
        return blocks.like_shape(sq, scale) * blocks.like_shape(inv, scale)


# --- spectral signatures ------------------------------------------------------------

def spectral_signatures(R, labels, eps, classes=None, iters=POWER_ITERS, seed=0, return_scores=False, clean=None,
                        ratio=reference.SUSPECT_RATIO):
    """Spectral signatures (Tran, Li & Madry, NeurIPS 2018) on shares: shared
    0/1 flags (n,), 1 for the records to remove.

    Per class c (n_c records, secret with shared labels): centre the
    representations, top right-singular vector ``v`` by :func:`top_directions`
    (``iters`` steps from ``reference.start_vector(d, seed)``), outlier score
    ``((r_i - mu_c) . v)^2``, and flag the ``ceil(1.5 eps n_c)`` highest
    scores of the class (:func:`pgkernels.defenses.reference.removal_count`,
    read from a public table by the secret n_c): stable descending ranks of
    every class's scores in one batch (ties to the lower index), then
    ``[rank < k_c]`` times membership. The other classes' rows score exactly 0,
    so they rank below every member with a positive score.

    With trusted clean records ``clean = (R_clean, labels_clean)`` (shared
    (m, d) representations and shared one-hot or public labels, e.g. a clean
    validation set under the same model): only suspect classes lose records
    (per class ``[S >= ratio S']`` on the mean squared distance to the class
    mean of its training and its clean rows: 2 products by 1/count and 1
    comparison), and scores are centred at the clean class mean (the
    class's own mean when the clean set has none of it), as
    :func:`pgkernels.defenses.reference.spectral_signatures`.

    Cost: see the module docstring (dominated by ``K n (n - 1) / 2``
    comparisons for the ranks and K power iterations). Reveals nothing: not
    the scores, the flags, nor which classes were suspect;
    ``return_scores=True`` also returns the shared scores (n,).
    """
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps <= 1:
        raise ValueError(f"eps must be a number in [0, 1], got {eps!r}")
    _check_iters(iters, "iters")
    R, B, K, C, cnt, mu, inv = _classes(R, labels, classes)
    n, d = R.size()
    scale = R.encoder.scale
    ref = None if clean is None else _Clean(clean, K, d, ratio)
    if ref is not None:
        suspect = ref.suspect(_spreads(C, inv, scale))
        shifts = ref.shifts(mu, d)
    scores = []
    for c in range(K):
        Cc = blocks.like_shape(C[c], scale)
        (v,) = top_directions(Cc, 1, iters, seed)
        with exact():
            u = Cc.matmul(v)
        if ref is not None:
            # centre at the clean mean: u_i + (mu_c - mu'_c) . v
            with exact():
                u = u + (blocks.like_shape(shifts[c], scale) * v).sum()
        with exact():
            scores.append(blocks.flat_share(u * u))
    S = torch.stack(scores, 1)  # (n, K), non-members ~0
    # non-members' u is a truncated 0 (a few LSBs): mask to exact zeros
    S = mux_shares(B.reshape(-1), S.reshape(1, -1)).view(n, K)
    rank = blocks.ranks(S, descending=True)
    table = torch.tensor([reference.removal_count(eps, j) for j in range(n + 1)], dtype=torch.long)
    k, _ = count_table(cnt, n, table)
    below = compare_shares((rank - k.view(1, K)).reshape(-1), LT, rank_bits(n), negate=True)  # [rank < k]
    if ref is not None:  # members of suspect classes only
        act = mux_shares(suspect.repeat(n), B.reshape(1, -1)).view(-1)
    else:
        act = B.reshape(-1)
    flags = mux_shares(act, below.view(1, -1)).view(n, K).sum(1)
    flags = blocks.like_shape(flags, 1)
    if return_scores:
        return flags, blocks.like_shape(S.sum(1), scale)
    return flags


# --- activation clustering ------------------------------------------------------------

def activation_clustering(R, labels, classes=None, components=2, size_threshold=AC_SIZE_THRESHOLD,
                          iters=POWER_ITERS, kmeans_iters=KMEANS_ITERS, seed=0, clean=None,
                          ratio=reference.SUSPECT_RATIO):
    """Activation clustering (Chen et al. 2018) on shares: shared 0/1 flags (n,).

    Per class: centre, project on the top ``components`` principal directions
    (:func:`top_directions`, deflated power iteration: the in-MPC PCA), split
    the class by the sign of the first projection, take the two groups' means
    as the initial centers, run ``kmeans_iters`` Lloyd steps of
    :func:`pgkernels.defenses.clustering.two_means` (AUROR's, generalised to
    the class's secret members), and flag the cluster that holds at most
    ``size_threshold`` of the class (Chen et al.'s relative-size criterion;
    0.35 as IBM ART's default): ``[1000 cnt <= round(1000 size_threshold)
    n_c]``, one comparison per cluster. A class whose clusters are both larger
    is kept whole. With trusted clean records ``clean = (R_clean,
    labels_clean)`` (as :func:`spectral_signatures`), the size test is
    replaced by the suspect test against the clean rows (the classes' spread,
    as in :func:`spectral_signatures`) and the
    strictly smaller cluster (``2 cnt < n_c``) of each suspect class is
    flagged (one more round for the product). Semantics of
    :func:`pgkernels.defenses.reference.activation_clustering`.

    Cost: see the module docstring. Reveals nothing: not the clusters, their
    sizes or whether a class was flagged.
    """
    T = reference._size_threshold(size_threshold)
    _check_iters(iters, "iters")
    _check_iters(kmeans_iters, "kmeans_iters")
    if isinstance(components, bool) or not isinstance(components, int) or components < 1:
        raise ValueError(f"components must be an int >= 1, got {components!r}")
    R, B, K, C, cnt, _, inv = _classes(R, labels, classes)
    n, d = R.size()
    scale = R.encoder.scale
    ref = None if clean is None else _Clean(clean, K, d, ratio)
    if ref is not None:
        T = 500  # the strictly smaller cluster: 1000 cnt < 500 n_c
        suspect = ref.suspect(_spreads(C, inv, scale))
    bits = rank_bits(1000 * n)
    flags = torch.zeros(n, dtype=torch.long)
    zero = torch.zeros(components, dtype=torch.long)
    for c in range(K):
        Cc = blocks.like_shape(C[c], scale)
        members = B[:, c].contiguous()
        V = top_directions(Cc, components, iters, seed)
        with exact():
            Z = Cc.matmul(blocks.like_shape(torch.stack([blocks.flat_share(v) for v in V], 1), scale))
        # exact zeros outside the class (the products leave a few LSBs there)
        Z = mux_shares(members.repeat_interleave(components), blocks.flat_share(Z).view(1, -1)).view(n, components)
        with exact():
            b0 = compare_shares(-Z[:, 0].contiguous(), LT, 64, negate=True)  # [z_1 > 0]
            b0 = mux_shares(members, b0.view(1, n)).view(n)
            m0, m1 = cluster_means(Z, b0, zero, zero, scale, members)
            b, _, _ = two_means(Z, m0, m1, kmeans_iters, scale, members)
        cnt1 = b.sum()
        cnt0 = cnt[c] - cnt1
        # [T n_c - 1000 cnt >= 0] for both clusters (> with the clean set: strictly smaller)
        t = T * cnt[c] - 1000 * torch.stack([cnt1, cnt0]) - (0 if ref is None else 1)
        small = compare_shares(t, LT, bits, negate=False)
        if ref is not None:
            small = mux_shares(suspect[c].expand(2).contiguous(), small.view(1, 2)).view(2)
        flags = flags + mux_shares(b, small[0].expand(n).contiguous().view(1, n)).view(n) \
            + mux_shares(members - b, small[1].expand(n).contiguous().view(1, n)).view(n)
    return blocks.like_shape(flags, 1)


def _check_iters(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


# --- STRIP ----------------------------------------------------------------------------

def _reciprocal_steps(k):
    """Newton steps for 1/s on [1, k] from the minimax linear start, to reach 2^-20."""
    err = 1.0 - 8.0 * k / (k * k + 6.0 * k + 1.0)
    steps = 0
    while err > 2.0 ** -20:
        err, steps = err * err, steps + 1
    return steps


def strip_entropy(logits, blends):
    """STRIP's statistic (Gao et al., ACSAC 2019) on shares: the mean prediction
    entropy (nats) per query, shared (m,), from the shared logits (m N, K) of
    the query-major blends (``N = blends`` per query, e.g. the model on
    :func:`pgkernels.defenses.reference.strip_blend`'s rows, blended on
    shares: a public linear combination).

    With ``t = z - max z`` (:func:`pgkernels.protocols.order.max`) and ``S =
    sum exp(t)`` in [1, K], ``H = log S - sum_j p_j t_j``: one CrypTen
    logarithm per row, on [1, K] where it is accurate, instead of K
    logarithms of probabilities near 0. ``exp`` is CrypTen's limit
    approximation (accurate for ``t > -256``; the logit spread must stay
    below that); 1/S by Newton steps from the minimax linear start (2 rounds
    each, 5 for K = 10). Reveals nothing.
    """
    z = blocks.check_mpc(logits, "logits")
    if isinstance(blends, bool) or not isinstance(blends, int) or blends < 1:
        raise ValueError(f"blends must be an int >= 1, got {blends!r}")
    if z.dim() != 2 or z.size(0) % blends:
        raise ValueError(f"logits must be 2-D with a multiple of blends={blends} rows, got {tuple(z.size())}")
    k = z.size(1)
    t = z - order.max(z, dim=1, keepdim=True)
    e = t.exp()
    S = e.sum(1, keepdim=True)
    b = 8.0 / (k * k + 6.0 * k + 1.0)
    inv = (S * -b) + b * (k + 1)
    for _ in range(_reciprocal_steps(k)):
        inv = inv * (2 - S * inv)
    H = S.log().view(-1) - (e * t).sum(1) * inv.view(-1)
    return H.view(-1, blends).sum(1) / blends


def strip_threshold(clean_entropy, fpr):
    """The STRIP threshold calibrated on clean queries' shared entropies (m,):
    the ``(floor(fpr m) + 1)``-th smallest (:func:`pgkernels.protocols.order.kthvalue`),
    so at most ``fpr m`` clean queries fall strictly below it. Shared scalar;
    reveals nothing."""
    H = blocks.check_mpc(clean_entropy, "clean_entropy")
    m = H.numel()
    k = reference.strip_rank(fpr, m)
    return order.kthvalue(H.view(-1), k, dim=0)[0]


def strip_flags(entropy, threshold):
    """Shared 0/1 flags (m,): ``[H < threshold]`` (one comparison each, 6
    rounds) for shared entropies and a shared (:func:`strip_threshold`) or
    public threshold. Reveals nothing."""
    H = blocks.check_mpc(entropy, "entropy")
    diff = H.view(-1) - threshold
    return blocks.like_shape(compare_shares(blocks.flat_share(diff), LT, 64, negate=True), 1)


__all__ = ["AC_SIZE_THRESHOLD", "KMEANS_ITERS", "POWER_ITERS", "STRIP_ALPHA", "activation_clustering",
           "spectral_signatures", "strip_entropy", "strip_flags", "strip_threshold", "top_directions"]
