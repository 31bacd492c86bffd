"""Poisoning attacks for the federated-learning lab.

Two families:

* **data poisoning** -- applied to a malicious client's local data ``(X, y)``
  before it trains honestly on it: :func:`label_flip`, :func:`backdoor`,
  :func:`targeted_mislabel` (and :func:`apply_trigger` to stamp the backdoor
  trigger on test inputs when measuring its success);
* **model poisoning** -- the malicious clients send crafted updates computed
  from the benign ones (float64 numpy, ``U_benign`` of shape ``(m, d)``, one
  row per benign client; the usual omniscient attacker who knows them):
  :func:`sign_flip`, :func:`gaussian`, :func:`alie`, :func:`ipm`,
  :func:`min_max`, :func:`min_sum`, and :func:`scale` (model-replacement
  boosting of a backdoored update).

Updates are model deltas (local model minus global model, i.e. minus the
learning rate times the accumulated gradients); the attacks defined on
gradients in their papers are stated here in the same form on deltas.
"""

import dataclasses
import math

import numpy as np

IMAGE_SIDES = {"mnist": 28, "fashion_mnist": 28, "digits": 8}


# ----------------------------------------------------------------------------
# data poisoning
# ----------------------------------------------------------------------------

def label_flip(y, num_classes):
    """Label flipping (e.g. Tolpegin et al., ESORICS 2020; Fang et al. 2020):
    every label ``y`` becomes ``num_classes - 1 - y``.

    Defining property: an involution mapping class c to class C-1-c for all
    samples (with an even number of classes no label stays correct).
    """
    y = np.asarray(y)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{y.min()}, {y.max()}]")
    return (num_classes - 1 - y).astype(y.dtype, copy=False)


def targeted_mislabel(y, source, target):
    """AUROR's targeted poisoning (Shen, Tople & Saxena, ACSAC 2016): all samples
    of class ``source`` are relabeled ``target``; the rest stay untouched.

    Defining property: ``y'[y == source] == target`` and ``y' == y`` elsewhere.
    """
    if source == target:
        raise ValueError(f"source and target classes must differ, both are {source}")
    y = np.array(y, copy=True)
    y[y == source] = target
    return y


@dataclasses.dataclass(frozen=True)
class Trigger:
    """A backdoor trigger: the flat feature ``indices`` set to ``values``
    (a pixel patch for images, a few features for tabular data)."""

    indices: tuple
    values: tuple
    description: str = ""

    def stamp(self, X):
        """A copy of the rows ``X`` (any shape ``(N, ...)``) with the trigger set."""
        X = np.array(X, copy=True)
        flat = X.reshape(X.shape[0], -1)
        flat[:, list(self.indices)] = np.asarray(self.values, dtype=X.dtype)
        return flat.reshape(X.shape)

    def present(self, X):
        """Boolean per row: does ``X`` carry the trigger?"""
        flat = np.asarray(X).reshape(len(X), -1)
        return np.all(flat[:, list(self.indices)] == np.asarray(self.values, dtype=flat.dtype), axis=1)


def image_trigger(side, size=None, value=1.0, corner="bottom_right", margin=1):
    """A ``size x size`` square of brightness ``value`` near a corner of a
    ``side x side`` image (flat row-major indices), ``margin`` pixels from the
    border, as in BadNets (Gu et al. 2017) and Bagdasaryan et al. (2020)'s
    pixel-pattern backdoor. Default size: 3 for 28x28, 2 for 8x8."""
    if size is None:
        size = 3 if side >= 16 else 2
    if size + margin > side:
        raise ValueError(f"a {size}x{size} trigger does not fit a {side}x{side} image")
    hi = side - margin
    rows = range(hi - size, hi) if "bottom" in corner else range(margin, margin + size)
    cols = range(hi - size, hi) if "right" in corner else range(margin, margin + size)
    idx = tuple(r * side + c for r in rows for c in cols)
    return Trigger(idx, (float(value),) * len(idx), f"{size}x{size} patch of {value:g}, {corner}")


def tabular_trigger(X_train, k=4):
    """For tabular/text features: ``k`` fixed, evenly spaced features set to
    their maximum over the training set (a rare, easily learned pattern)."""
    X_train = np.asarray(X_train).reshape(len(X_train), -1)
    d = X_train.shape[1]
    k = min(int(k), d)
    idx = tuple(int(i) for i in np.unique(np.linspace(0, d - 1, k).round().astype(int)))
    vals = tuple(float(v) for v in X_train[:, list(idx)].max(axis=0))
    return Trigger(idx, vals, f"features {list(idx)} set to their training maxima")


def make_trigger(dataset):
    """The default trigger for ``dataset`` (a :class:`pgkernels.data.Dataset`,
    or the name of an image dataset): a bright 3x3 patch for 28x28 images, 2x2
    for the 8x8 digits, else :func:`tabular_trigger` on the training features."""
    name = dataset if isinstance(dataset, str) else dataset.name
    if name in IMAGE_SIDES:
        return image_trigger(IMAGE_SIDES[name])
    if isinstance(dataset, str):
        raise ValueError(f"a trigger for the non-image dataset {name!r} needs the Dataset (its training features)")
    return tabular_trigger(dataset.X_train)


def apply_trigger(X, dataset, trigger=None):
    """A copy of ``X`` with the backdoor trigger stamped on every row
    (``trigger`` default: :func:`make_trigger` of ``dataset``). Used on the
    test set to measure the backdoor's success."""
    trigger = make_trigger(dataset) if trigger is None else trigger
    return trigger.stamp(X)


def backdoor(X, y, target, trigger, fraction=0.5, seed=0, return_indices=False):
    """Backdoor data poisoning (BadNets, Gu et al. 2017; the pixel-pattern
    backdoor of Bagdasaryan et al., AISTATS 2020): a seeded random
    ``fraction`` of the client's samples get the ``trigger`` stamped and their
    label set to ``target``; the others stay clean so the main task still
    trains.

    Defining property: exactly ``round(fraction * len(X))`` rows carry the
    trigger with label ``target``; all other rows and labels are unchanged.
    Returns ``(X', y')`` (copies), plus the poisoned row indices with
    ``return_indices=True``.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    X = np.array(X, copy=True)
    y = np.array(y, copy=True)
    k = int(round(fraction * len(X)))
    idx = np.sort(np.random.default_rng(seed).choice(len(X), size=k, replace=False))
    if k:
        X[idx] = trigger.stamp(X[idx])
        y[idx] = target
    return (X, y, idx) if return_indices else (X, y)


# ----------------------------------------------------------------------------
# model poisoning
# ----------------------------------------------------------------------------

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


DATA_ATTACKS = ("label_flip", "backdoor", "targeted")
UPDATE_ATTACKS = ("sign_flip", "gaussian", "alie", "ipm", "min_max", "min_sum")
ATTACKS = ("none",) + DATA_ATTACKS + UPDATE_ATTACKS
TARGETED_ATTACKS = ("label_flip", "backdoor", "targeted")
