"""Plaintext references of the robust aggregators (numpy, float64).

Each function takes an (n, d) array of client updates and returns the
aggregate (d,), with exactly the semantics of its MPC counterpart in
:mod:`pgkernels.defenses`; selection rules also return the selected clients.
"""

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
    b = np.zeros(n, dtype=bool)
    for _ in range(iters):
        b = 2 * V @ (m1 - m0) - (m1 @ m1 - m0 @ m0) > AUROR_TIE
        cnt1 = int(b.sum())
        cnt0 = n - cnt1
        if cnt0:
            m0 = V[~b].mean(0)
        if cnt1:
            m1 = V[b].mean(0)
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
