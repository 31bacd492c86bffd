"""Plaintext references of the robust aggregators (numpy, float64).

Each function takes an (n, d) array of client updates and returns the
aggregate (d,), with exactly the semantics of its MPC counterpart in
:mod:`pgkernels.defenses`; selection rules also return the selected clients.
"""

import numpy as np


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
