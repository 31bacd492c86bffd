"""Poisoning the updates that malicious federated clients send (model poisoning).

The malicious clients send crafted updates computed from the benign ones
(float64 numpy, ``U_benign`` of shape ``(m, d)``, one row per benign client;
the usual omniscient attacker who knows them): :func:`sign_flip`,
:func:`gaussian`, :func:`alie`, :func:`ipm`, :func:`min_max`,
:func:`min_sum`, and :func:`scale` (model-replacement boosting of a
backdoored update).

Updates are model deltas (local model minus global model, i.e. minus the
learning rate times the accumulated gradients); the attacks defined on
gradients in their papers are stated here in the same form on deltas.
"""

import math

import numpy as np

UPDATE_ATTACKS = ("sign_flip", "gaussian", "alie", "ipm", "min_max", "min_sum")



def _benign(U):
    U = np.asarray(U, dtype=np.float64)
    if U.ndim != 2 or U.shape[0] < 1:
        raise ValueError(f"expected benign updates of shape (m, d) with m >= 1, got {U.shape}")
    return U


def _std(U):
    """Per-coordinate sample standard deviation (torch.std's unbiased estimate, as in the papers' code)."""
    return U.std(axis=0, ddof=1 if U.shape[0] > 1 else 0)


def sign_flip(U):
    """Sign flipping (e.g. Damaskinos et al. 2018; Li et al., RSA, AAAI 2019):
    each malicious client sends the negation of its honest update.

    Defining property: ``sign_flip(u) == -u``.
    """
    return -np.asarray(U, dtype=np.float64)


def gaussian(U, std=1.0, rng=None):
    """Gaussian Byzantine updates (Blanchard et al., Krum, NeurIPS 2017): each
    malicious row is drawn from N(0, std^2 I), independent of the honest ones.

    ``U``: the malicious clients' honest updates (only their shape is used).
    Defining property: i.i.d. zero-mean normal entries with standard deviation ``std``.
    """
    U = np.asarray(U, dtype=np.float64)
    rng = np.random.default_rng() if rng is None else rng
    return rng.normal(0.0, float(std), size=U.shape)


def alie_z(n_total, f):
    """ALIE's z_max (Baruch et al. 2019, Sec. 3): with s = floor(n/2 + 1) - f
    supporters needed, z_max = Phi^{-1}((n - s) / n)."""
    from scipy.stats import norm

    if not 0 <= f < n_total:
        raise ValueError(f"need 0 <= f < n_total, got f={f}, n_total={n_total}")
    s = math.floor(n_total / 2 + 1) - f
    return float(norm.ppf((n_total - s) / n_total))


def alie(U_benign, n_total, f, z=None):
    """"A Little Is Enough" (Baruch, Baruch & Goldberg, NeurIPS 2019): every
    malicious client sends ``mean - z_max * std`` of the benign updates,
    coordinate-wise, with z_max from :func:`alie_z` -- a shift small enough to
    stay within the benign spread (so median/Krum-style rules keep it) but
    consistent across all coordinates and attackers.

    Defining property: each coordinate lies within mean +- z_max * std of the
    benign updates (``z`` overrides z_max). Returns the (d,) malicious update.
    """
    U = _benign(U_benign)
    z = alie_z(n_total, f) if z is None else float(z)
    return U.mean(axis=0) - z * _std(U)


def ipm(U_benign, epsilon=0.1):
    """Inner-product manipulation (Xie, Koyejo & Gupta, "Fall of Empires",
    UAI 2019): every malicious client sends ``-epsilon`` times the benign
    mean, so that the aggregate has a negative inner product with the true
    update when enough gets through (small epsilon, e.g. 0.1, slips past
    Krum; large, e.g. 10, overwhelms the mean).

    Defining property: the malicious update is exactly ``-epsilon * mean(U_benign)``.
    """
    return -float(epsilon) * _benign(U_benign).mean(axis=0)


def _deviation(U, mean, dev_type):
    if dev_type == "unit_vec":
        nrm = np.linalg.norm(mean)
        return mean / nrm if nrm > 0 else mean
    if dev_type == "sign":
        return np.sign(mean)
    if dev_type == "std":
        return _std(U)
    raise ValueError(f"dev_type must be 'unit_vec', 'sign' or 'std', got {dev_type!r}")


def _sq_dists_to(U, v):
    return ((U - v[None, :]) ** 2).sum(axis=1)


def _pairwise_sq_dists(U):
    sq = (U * U).sum(axis=1)
    D = sq[:, None] + sq[None, :] - 2.0 * (U @ U.T)
    np.fill_diagonal(D, 0.0)
    return np.maximum(D, 0.0)


def _gamma_search(ok, gamma_init, tol):
    """The binary search on gamma of Shejwalkar & Houmansadr's released code
    (start at gamma_init, step halving each time, keep the last success);
    restarted from 2 * gamma_init while it ends at the top of its range (it
    can reach at most 2 * gamma_init), so the result does not depend on the
    updates' scale."""
    for _ in range(60):
        gamma, step, succ = gamma_init, gamma_init, 0.0
        while abs(succ - gamma) > tol:
            if ok(gamma):
                succ = gamma
                gamma = gamma + step / 2
            else:
                gamma = gamma - step / 2
            step = step / 2
        if succ < 2 * gamma_init * (1 - 1e-3):
            return succ
        gamma_init *= 2
        tol *= 2
    return succ


def min_max(U_benign, dev_type="std", gamma_init=10.0, tol=1e-5, return_gamma=False):
    """AGR-agnostic Min-Max (Shejwalkar & Houmansadr, NDSS 2021, Eq. 6): the
    malicious update is ``mean + gamma * p`` with perturbation direction
    p = -std (default), -unit vector of the mean ("unit_vec") or -sign of
    the mean ("sign"), and the largest gamma (binary search as in the
    authors' code) such that its largest distance to a benign update does not
    exceed the largest distance between two benign updates.

    Defining property: ``max_i ||m - u_i|| <= max_{i,j} ||u_i - u_j||``.
    Returns the (d,) malicious update (and gamma with ``return_gamma``).
    """
    U = _benign(U_benign)
    mean = U.mean(axis=0)
    dev = _deviation(U, mean, dev_type)
    bound = _pairwise_sq_dists(U).max()
    gamma = _gamma_search(lambda g: _sq_dists_to(U, mean - g * dev).max() <= bound, gamma_init, tol)
    mal = mean - gamma * dev
    return (mal, gamma) if return_gamma else mal


def min_sum(U_benign, dev_type="std", gamma_init=10.0, tol=1e-5, bound="max", return_gamma=False):
    """AGR-agnostic Min-Sum (Shejwalkar & Houmansadr, NDSS 2021, Eq. 7): as
    :func:`min_max` (``mean + gamma * p``), with the largest gamma such that
    the sum of squared distances from the malicious update to the benign
    ones does not exceed the largest such sum of a benign update
    (``bound="max"``, the paper; ``bound="min"``, the smallest, as in the
    authors' released code -- a stealthier, weaker attack).

    Defining property: ``sum_i ||m - u_i||^2 <= max_j sum_i ||u_j - u_i||^2``.
    """
    if bound not in ("max", "min"):
        raise ValueError(f"bound must be 'max' or 'min', got {bound!r}")
    U = _benign(U_benign)
    mean = U.mean(axis=0)
    dev = _deviation(U, mean, dev_type)
    scores = _pairwise_sq_dists(U).sum(axis=1)
    limit = scores.max() if bound == "max" else scores.min()
    gamma = _gamma_search(lambda g: _sq_dists_to(U, mean - g * dev).sum() <= limit, gamma_init, tol)
    mal = mean - gamma * dev
    return (mal, gamma) if return_gamma else mal


def scale(update, factor):
    """Model-replacement boosting (Bagdasaryan et al., "How To Backdoor
    Federated Learning", AISTATS 2020): the backdoored update is multiplied by
    ``factor`` = gamma = n / eta so that it survives averaging; with FedAvg's
    mean of n updates and server learning rate 1, ``factor = n / (number of
    attackers)`` replaces the global model by the attackers' model.

    Defining property: returns ``factor * update``.
    """
    return float(factor) * np.asarray(update, dtype=np.float64)
