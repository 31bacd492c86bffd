"""Plaintext references of the robust aggregators (numpy, float64).

Each function takes an (n, d) array of client updates and returns the
aggregate (d,), with exactly the semantics of its MPC counterpart in
:mod:`pgkernels.defenses`; selection rules also return the selected clients. The poisoned-record
detectors at the end (spectral signatures, activation clustering, STRIP) take
per-record representations and labels instead and return per-record flags,
with the schedules of :mod:`pgkernels.defenses.detection`.
"""

import math

import numpy as np

# AUROR's client clustering puts a client in cluster 1 only when its margin
# exceeds this (squared-update units): MPC truncation noise is a few LSBs, so
# an exact tie must not be decided by it. clustering.auror uses the same value.
AUROR_TIE = 2.0 ** -11


def fedavg(U):
    return np.asarray(U, dtype=np.float64).mean(axis=0)


def median(U):
    return np.median(np.asarray(U, dtype=np.float64), axis=0)


def trimmed_mean(U, proportiontocut):
    from scipy.stats import trim_mean

    return trim_mean(np.asarray(U, dtype=np.float64), proportiontocut, axis=0)


def krum_scores(U, num_malicious):
    """Krum score of each client: sum of squared distances to its n - f - 2 nearest others."""
    U = np.asarray(U, dtype=np.float64)
    n = U.shape[0]
    m = n - num_malicious - 2
    D = ((U[:, None, :] - U[None, :, :]) ** 2).sum(-1)
    scores = np.empty(n)
    for i in range(n):
        others = np.sort(np.delete(D[i], i))
        scores[i] = others[:m].sum()
    return scores


def krum(U, num_malicious):
    """(update of the client with the lowest score -- lowest index on ties, selected index)."""
    s = krum_scores(U, num_malicious)
    i = int(np.flatnonzero(s == s.min())[0])
    return np.asarray(U, dtype=np.float64)[i], i


def multi_krum(U, num_malicious, to_keep):
    """(mean of the to_keep lowest-score updates, their indices); ties by lower index."""
    s = krum_scores(U, num_malicious)
    order = np.lexsort((np.arange(len(s)), s))
    keep = np.sort(order[:to_keep])
    return np.asarray(U, dtype=np.float64)[keep].mean(axis=0), keep


def norm_clip(U, max_norm):
    U = np.asarray(U, dtype=np.float64)
    norms = np.linalg.norm(U, axis=1)
    factor = np.minimum(1.0, max_norm / np.where(norms > 0, norms, np.inf))
    return (U * factor[:, None]).mean(axis=0)


def fltrust(U, server_update):
    U = np.asarray(U, dtype=np.float64)
    g = np.asarray(server_update, dtype=np.float64)
    norms = np.linalg.norm(U, axis=1)
    gn = np.linalg.norm(g)
    cos = U @ g / (norms * gn)
    trust = np.maximum(cos, 0.0)
    if trust.sum() == 0:
        return np.zeros_like(g)
    return (trust[:, None] * U * (gn / norms)[:, None]).sum(0) / trust.sum()


def bulyan(U, num_malicious):
    """(aggregate, selected indices in selection order) as in El Mhamdi et al. 2018:
    theta = n - 2f Krum selections on the shrinking set, then per coordinate the
    mean of the beta = theta - 2f selected values closest to their median
    (ties in distance: the earlier selection first)."""
    U = np.asarray(U, dtype=np.float64)
    n = U.shape[0]
    f = num_malicious
    theta, beta = n - 2 * f, n - 4 * f
    alive = list(range(n))
    chosen = []
    for _ in range(theta):
        sub = U[alive]
        scores = krum_scores(sub, f) if len(alive) - f - 2 >= 1 else np.zeros(len(alive))
        k = int(np.flatnonzero(scores == scores.min())[0])
        chosen.append(alive.pop(k))
    S = U[chosen]
    med = np.median(S, axis=0)
    dist = np.abs(S - med)
    order = np.argsort(dist, axis=0, kind="stable")[:beta]
    return np.take_along_axis(S, order, axis=0).mean(axis=0), chosen


def cosine_similarity(X, Y=None):
    X = np.asarray(X, dtype=np.float64)
    Y = X if Y is None else np.asarray(Y, dtype=np.float64)
    nx, ny = np.linalg.norm(X, axis=1), np.linalg.norm(Y, axis=1)
    ix = np.where(nx > 0, 1.0 / np.where(nx > 0, nx, 1.0), 0.0)
    iy = np.where(ny > 0, 1.0 / np.where(ny > 0, ny, 1.0), 0.0)
    return (X @ Y.T) * ix[:, None] * iy[None, :]


def flame_admitted(U, num_malicious=None):
    """Indices admitted by FLAME's MPC-friendly clustering (see defenses.clustering)."""
    U = np.asarray(U, dtype=np.float64)
    n = U.shape[0]
    keep = n // 2 + 1 if num_malicious is None else n - num_malicious
    if n == 1:
        return np.array([0]), keep
    k = n // 2
    dist = 1.0 - cosine_similarity(U)
    core = np.array([np.sort(np.delete(dist[i], i))[k - 1] for i in range(n)])
    order = np.lexsort((np.arange(n), core))
    return np.sort(order[:keep]), keep


def flame(U, num_malicious=None, noise_lambda=0.001, rng=None):
    """(aggregate, admitted indices): FLAME with the MPC version's clustering rule,
    median-norm clipping, and N(0, (noise_lambda S)^2) noise."""
    U = np.asarray(U, dtype=np.float64)
    admitted, keep = flame_admitted(U, num_malicious)
    norms = np.linalg.norm(U, axis=1)
    S = np.median(norms)
    factor = np.minimum(1.0, S / np.where(norms > 0, norms, np.inf))
    agg = (U[admitted] * factor[admitted, None]).sum(0) / keep
    if noise_lambda > 0:
        rng = np.random.default_rng() if rng is None else rng
        agg = agg + rng.normal(0.0, noise_lambda * S, size=agg.shape)
    return agg, admitted


def _two_means_1d(X, iters):
    c0, c1 = X.min(0), X.max(0)
    n = X.shape[0]
    for _ in range(iters):
        b = 2 * X > (c0 + c1)[None, :]
        cnt1 = b.sum(0)
        cnt0 = n - cnt1
        s1 = (X * b).sum(0)
        s0 = X.sum(0) - s1
        c0 = np.where(cnt0 > 0, s0 / np.maximum(cnt0, 1), c0)
        c1 = np.where(cnt1 > 0, s1 / np.maximum(cnt1, 1), c1)
    return c0, c1


def cluster_means(V, b, m0, m1):
    """Means of the rows of V (n, d) with ``b`` False (cluster 0) and True
    (cluster 1); an empty cluster keeps its previous center (m0 or m1)."""
    if (~b).any():
        m0 = V[~b].mean(0)
    if b.any():
        m1 = V[b].mean(0)
    return m0, m1


def two_means(V, m0, m1, iters):
    """Lloyd's 2-means on the rows of V (n, d) from the centers (m0, m1), a
    fixed number ``iters`` of steps: assign ``b_i = [||v_i - m0||^2 -
    ||v_i - m1||^2 > AUROR_TIE]`` (exact ties to cluster 0), then
    :func:`cluster_means`. Returns (b, m0, m1). The schedule of AUROR's client
    clustering and of activation clustering (MPC:
    :func:`pgkernels.defenses.clustering.two_means`)."""
    b = np.zeros(V.shape[0], dtype=bool)
    for _ in range(iters):
        b = 2 * V @ (m1 - m0) - (m1 @ m1 - m0 @ m0) > AUROR_TIE
        m0, m1 = cluster_means(V, b, m0, m1)
    return b, m0, m1


def auror(U, alpha=2.0, iters=3):
    """(aggregate, kept indices): AUROR with the MPC version's schedule
    (see defenses.clustering.auror)."""
    U = np.asarray(U, dtype=np.float64)
    n, d = U.shape
    c0, c1 = _two_means_1d(U, iters)
    gap = c1 - c0
    ind = d * gap > alpha * gap.sum()
    V = U * ind[None, :]
    m0, m1 = c0 * ind, c1 * ind
    b, _, _ = two_means(V, m0, m1, iters)
    cnt1 = int(b.sum())
    if 2 * cnt1 < n:
        keep = np.flatnonzero(~b)
    elif 2 * cnt1 > n:
        keep = np.flatnonzero(b)
    else:
        keep = np.arange(n)
    return U[keep].mean(0), keep


# --- input validity (defenses.validity, protocols.validity) ---------------------------

def _encoded(U, frac_bits):
    U = np.asarray(U, dtype=np.float64)
    if U.ndim != 2:
        raise ValueError(f"updates must be 2-D, got shape {U.shape}")
    if not np.isfinite(U).all():
        raise ValueError("updates contain NaN or inf")
    return np.round(U * 2.0 ** frac_bits)


def valid_rows(U, bound, max_norm=None, frac_bits=16):
    """Bool mask of the rows whose encoded coordinates all lie in [-bound, bound)
    and (optionally) whose encoded squared norm is at most max_norm^2, exactly as
    the MPC check decides them on the fixed-point grid."""
    x = _encoded(U, frac_bits)
    B = round(bound * 2.0 ** frac_bits)
    ok = ((x >= -B) & (x < B)).all(1)
    if max_norm is not None:
        N2 = round(float(max_norm) ** 2 * 2.0 ** (2 * frac_bits))
        for i in np.flatnonzero(ok):
            s = sum(int(v) * int(v) for v in x[i]) if np.abs(x[i]).max() >= 2.0 ** 26 else int((x[i] * x[i]).sum())
            ok[i] = s <= N2
    return ok


def clamp_rows(U, bound, max_norm=None, frac_bits=16):
    """Coordinates clamped into [-bound, bound) on the fixed-point grid, then rows
    scaled to norm at most max_norm."""
    x = _encoded(U, frac_bits)
    B = round(bound * 2.0 ** frac_bits)
    C = np.clip(x, -B, B - 1) / 2.0 ** frac_bits
    if max_norm is not None:
        norms = np.linalg.norm(C, axis=1)
        C = C * np.minimum(1.0, max_norm / np.where(norms > 0, norms, np.inf))[:, None]
    return C


# --- poisoned-record detection (defenses.detection) -----------------------------------
#
# Shared conventions with the MPC detectors of pgkernels.defenses.detection:
# representations R (n, d) of the training records, integer labels (n,) in
# [0, classes); every detector works per class and returns a bool flag per
# record (True = flagged as poisoned).

# Power iterations for the top singular vectors (spectral signatures and the
# PCA of activation clustering): fixed and public. Each step multiplies the
# angle to the top singular vector by sigma_2^2 / sigma_1^2, so 12 steps suffice
# whenever the poison's direction dominates (sigma_2 / sigma_1 <= 0.7 gives
# < 2e-4 of its initial tangent); a weak gap leaves v a mix, as in the paper's
# own truncated SVD solvers.
POWER_ITERS = 12
# Lloyd steps of activation clustering's 2-means.
KMEANS_ITERS = 4
# Activation clustering flags a class's smaller cluster when it holds at most
# this fraction of the class (Chen et al. 2018's relative-size criterion; 0.35
# as in the reference implementation, IBM ART's ``size_threshold``), in 1/1000.
AC_SIZE_THRESHOLD = 0.35
# STRIP blends query and clean sample as alpha * query + (1 - alpha) * clean.
STRIP_ALPHA = 0.5
# With a trusted clean set, spectral signatures and activation clustering act
# only on *suspect* classes: those whose records spread at least this factor
# more around their mean (mean squared distance) than the clean records of
# that class (a poisoned sub-population that differs from the class adds
# spread; a clean class has about the same in both sets). Training / clean
# spread: MNIST 0.98-1.01 on the nine clean classes, 1.70 on the backdoored
# one; Fashion-MNIST 0.88-1.05 and 3.85; digits (10-36 clean records per
# class) 0.85-1.42 and 1.75.
SUSPECT_RATIO = 1.5


def removal_count(eps, n):
    """``ceil(1.5 eps n)`` records removed from a class of n (Tran et al.'s
    rule, eps the assumed poison rate), capped at n. Computed on 1.5 eps n
    rounded to 9 decimals, so that float error (1.5 * 0.1 * 40 =
    6.000000000000001) does not add a record; the MPC version reads the same
    table."""
    return min(int(n), math.ceil(round(1.5 * float(eps) * int(n), 9)))


def start_vector(d, seed=0):
    """The power iteration's deterministic start: a standard normal vector from
    ``numpy.random.default_rng(seed)``, normalised (public; component j of a
    PCA starts from seed + j). A random start is almost surely not orthogonal
    to the top singular vector, which a fixed pattern such as all-ones can be."""
    v = np.random.default_rng(seed).standard_normal(int(d))
    return v / np.linalg.norm(v)


# inv_sqrt's floor (pgkernels.protocols.roots): squared norms below 2^-16 count as 0
_NORM_FLOOR = 2.0 ** -16


def top_directions(C, components=1, iters=POWER_ITERS, seed=0):
    """The top ``components`` right-singular vectors (d, r) of C (n, d) by
    power iteration with deflation: component j starts at ``start_vector(d,
    seed + j)`` and repeats ``iters`` times ``w = C^T (C v)``, ``w -= sum_{l<j}
    v_l (v_l . w)``, ``v = w / ||w||`` (0 when ``||w||^2 < 2^-16``, as the MPC
    inverse square root). Signs are arbitrary (scores square them)."""
    C = np.asarray(C, dtype=np.float64)
    d = C.shape[1]
    out = []
    for j in range(components):
        v = start_vector(d, seed + j)
        for _ in range(iters):
            w = C.T @ (C @ v)
            for p in out:
                w = w - p * (p @ w)
            sq = w @ w
            v = w / np.sqrt(sq) if sq >= _NORM_FLOOR else np.zeros(d)
        out.append(v)
    return np.stack(out, axis=1)


def spread(C):
    """The mean squared distance to the mean, ``||C||_F^2 / n``, of the
    (already centred) rows C (n, d); 0 for no rows."""
    C = np.asarray(C, dtype=np.float64)
    return float((C ** 2).sum() / len(C)) if len(C) else 0.0


def suspect_classes(R, labels, clean, K, ratio=SUSPECT_RATIO):
    """Which classes to act on, given trusted clean records ``clean = (R_clean,
    labels_clean)``: class c is suspect when ``S_c >= ratio S'_c``, the
    :func:`spread` of its training rows against that of its clean rows. A
    class without clean records is suspect (``S' = 0``: nothing to compare
    with). Returns (suspect bool (K,), clean class means (K, d), clean class
    sizes (K,))."""
    Rc, yc, _ = _check_detection(clean[0], clean[1], K)
    if Rc.shape[1] != R.shape[1]:
        raise ValueError(f"clean representations must have {R.shape[1]} features, got {Rc.shape[1]}")
    _check_ratio(ratio)
    suspect = np.zeros(K, dtype=bool)
    means = np.zeros((K, R.shape[1]))
    sizes = np.zeros(K, dtype=np.int64)
    for c in range(K):
        idx, jdx = np.flatnonzero(labels == c), np.flatnonzero(yc == c)
        sizes[c] = len(jdx)
        if len(jdx):
            means[c] = Rc[jdx].mean(0)
        if not len(idx):
            continue
        suspect[c] = spread(R[idx] - R[idx].mean(0)) >= ratio * spread(Rc[jdx] - means[c])
    return suspect, means, sizes


def _check_ratio(ratio):
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 1 <= ratio <= 16:
        raise ValueError(f"ratio must be a number in [1, 16], got {ratio!r}")


def _check_detection(R, labels, classes):
    R = np.asarray(R, dtype=np.float64)
    labels = np.asarray(labels)
    if R.ndim != 2:
        raise ValueError(f"R must be 2-D (records x features), got shape {R.shape}")
    if labels.shape != (R.shape[0],):
        raise ValueError(f"labels must have shape ({R.shape[0]},), got {labels.shape}")
    K = int(labels.max()) + 1 if classes is None else int(classes)
    return R, labels.astype(np.int64), K


def spectral_signatures(R, labels, eps, classes=None, iters=POWER_ITERS, seed=0, clean=None,
                        ratio=SUSPECT_RATIO):
    """Spectral signatures (Tran, Li & Madry, NeurIPS 2018), the schedule of
    :func:`pgkernels.defenses.detection.spectral_signatures`.

    Per class c with n_c records: centre its representations, ``v`` = top
    right-singular vector (:func:`top_directions`), score ``((r_i - mu_c) .
    v)^2``, flag the ``removal_count(eps, n_c)`` highest scores (ties: lower
    index first).

    With trusted clean records ``clean = (R_clean, labels_clean)``: only the
    :func:`suspect_classes` lose records, and scores are centred at the clean
    class mean ``mu'_c`` instead of ``mu_c`` (the class's own mean when it has
    no clean records): a poisoned sub-population of a third of a class drags
    mu_c toward itself, so that the clean records on the far side score as
    high as the poison; the clean mean does not move. ``eps`` is then the
    assumed poison rate within a poisoned class. Returns (flags bool (n,),
    scores (n,))."""
    R, labels, K = _check_detection(R, labels, classes)
    n = R.shape[0]
    flags, scores = np.zeros(n, dtype=bool), np.zeros(n)
    if clean is not None:
        suspect, means, sizes = suspect_classes(R, labels, clean, K, ratio)
    for c in range(K):
        idx = np.flatnonzero(labels == c)
        if not len(idx):
            continue
        mu = R[idx].mean(0)
        C = R[idx] - mu
        v = top_directions(C, 1, iters, seed)[:, 0]
        centre = means[c] if clean is not None and sizes[c] else mu
        s = ((R[idx] - centre) @ v) ** 2
        scores[idx] = s
        if clean is not None and not suspect[c]:
            continue
        order = np.lexsort((idx, -s))
        flags[idx[order[:removal_count(eps, len(idx))]]] = True
    return flags, scores


def activation_clustering(R, labels, classes=None, components=2, size_threshold=AC_SIZE_THRESHOLD,
                          iters=POWER_ITERS, kmeans_iters=KMEANS_ITERS, seed=0, clean=None, ratio=SUSPECT_RATIO):
    """Activation clustering (Chen et al. 2018), the schedule of
    :func:`pgkernels.defenses.detection.activation_clustering`.

    Per class: centre, project on the top ``components`` principal directions
    (:func:`top_directions`), split by the sign of the first coordinate, take
    the two groups' means as initial centers (:func:`cluster_means` from 0),
    run :func:`two_means` for ``kmeans_iters`` steps; the cluster with at most
    ``size_threshold`` of the class (in 1/1000: ``1000 cnt <= round(1000
    size_threshold) n_c``) is flagged.

    With trusted clean records ``clean = (R_clean, labels_clean)`` the
    relative-size test is replaced by a separation test against clean data
    (Chen et al.'s other criterion, separation, made relative): in each of the
    :func:`suspect_classes` the strictly smaller cluster (``2 cnt < n_c``) is
    flagged, in the other classes nothing. Returns (flags bool (n,), cluster
    bool (n,): each record's final 2-means cluster)."""
    R, labels, K = _check_detection(R, labels, classes)
    n = R.shape[0]
    T = _size_threshold(size_threshold)
    flags, cluster = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    if clean is not None:
        suspect, _, _ = suspect_classes(R, labels, clean, K, ratio)
    for c in range(K):
        idx = np.flatnonzero(labels == c)
        if not len(idx):
            continue
        C = R[idx] - R[idx].mean(0)
        Z = C @ top_directions(C, components, iters, seed)
        zero = np.zeros(Z.shape[1])
        m0, m1 = cluster_means(Z, Z[:, 0] > 0, zero, zero)
        b, _, _ = two_means(Z, m0, m1, kmeans_iters)
        cnt1 = int(b.sum())
        cnt0 = len(idx) - cnt1
        cluster[idx] = b
        if clean is not None:
            if suspect[c] and 2 * cnt1 < len(idx):
                flags[idx[b]] = True
            elif suspect[c] and 2 * cnt0 < len(idx):
                flags[idx[~b]] = True
        elif 1000 * cnt1 <= T * len(idx):
            flags[idx[b]] = True
        elif 1000 * cnt0 <= T * len(idx):
            flags[idx[~b]] = True
    return flags, cluster


def _size_threshold(size_threshold):
    if isinstance(size_threshold, bool) or not isinstance(size_threshold, (int, float)) \
            or not 0 < size_threshold < 0.5:
        raise ValueError(f"size_threshold must be a number in (0, 0.5), got {size_threshold!r}")
    return int(round(1000 * size_threshold))


def strip_blend(queries, clean, alpha=STRIP_ALPHA):
    """STRIP's perturbed inputs (Gao et al., ACSAC 2019): every query (m, ...)
    blended with every clean sample (N, ...), ``alpha q + (1 - alpha) x``,
    query-major: row ``i N + j`` is query i with clean sample j (m N, ...)."""
    q = np.asarray(queries, dtype=np.float64)
    x = np.asarray(clean, dtype=np.float64)
    return (alpha * q[:, None] + (1 - alpha) * x[None, :]).reshape(len(q) * len(x), *q.shape[1:])


def strip_entropy(logits, blends):
    """Mean prediction entropy (nats) per query from the logits (m N, K) of the
    blended inputs (query-major, N = ``blends`` per query), with the MPC
    version's formula ``H = log S - sum_j p_j (z_j - max z)``, ``S = sum_j
    exp(z_j - max z)`` (the entropy of softmax(z), one logarithm per row)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    S = e.sum(1)
    H = np.log(S) - (e * z).sum(1) / S
    return H.reshape(-1, int(blends)).mean(1)


def strip_threshold(clean_entropy, fpr):
    """The detection threshold calibrated on clean queries' entropies: the
    ``(floor(fpr m) + 1)``-th smallest of the m values, so that at most
    ``fpr m`` clean queries lie strictly below it."""
    h = np.sort(np.asarray(clean_entropy, dtype=np.float64))
    return h[strip_rank(fpr, len(h)) - 1]


def strip_rank(fpr, m):
    """The rank k (1-based) of :func:`strip_threshold` among m clean entropies:
    ``floor(fpr m) + 1`` (fpr m rounded to 9 decimals), at most m."""
    if isinstance(fpr, bool) or not isinstance(fpr, (int, float)) or not 0 <= fpr < 1:
        raise ValueError(f"fpr must be a number in [0, 1), got {fpr!r}")
    if m < 1:
        raise ValueError("strip_threshold needs at least one clean entropy")
    return min(m, math.floor(round(float(fpr) * m, 9)) + 1)


def strip_flags(entropy, threshold):
    """Queries flagged as triggered: mean entropy strictly below the threshold."""
    return np.asarray(entropy, dtype=np.float64) < threshold
