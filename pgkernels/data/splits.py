"""Splitting a training set among parties or clients (index arrays)."""

import numpy as np


def _check(n, parts):
    if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
        raise ValueError(f"the number of parties must be an int >= 1, got {parts!r}")
    if parts > n:
        raise ValueError(f"cannot split {n} records among {parts} parties")


def iid_split(n, parts, per_part=None, seed=0):
    """A seeded random split of n records into ``parts`` disjoint index arrays.

    ``per_part``: records per party (Hayes & Ohrimenko: 10 parties of 2,000);
    default: all records, as evenly as possible.
    """
    _check(n, parts)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    if per_part is not None:
        if per_part * parts > n:
            raise ValueError(f"{parts} parties x {per_part} records exceed the {n} available")
        return [perm[i * per_part:(i + 1) * per_part] for i in range(parts)]
    return [np.sort(p) for p in np.array_split(perm, parts)]


def group_split(groups, parts, seed=0):
    """Non-iid split by an attribute: each distinct value of ``groups`` (e.g.
    Adult's occupation) goes whole to one party, balancing record counts
    greedily (largest groups first)."""
    groups = np.asarray(groups)
    values, counts = np.unique(groups, return_counts=True)
    _check(len(values), parts)
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(values)), -counts))
    load = np.zeros(parts, dtype=np.int64)
    owner = {}
    for i in order:
        p = int(np.argmin(load))
        owner[values[i]] = p
        load[p] += counts[i]
    assign = np.array([owner[g] for g in groups])
    return [np.flatnonzero(assign == p) for p in range(parts)]


def dirichlet_split(labels, parts, alpha=0.5, seed=0, min_size=1):
    """Label-skewed non-iid split (Hsu et al. 2019): for each class, party shares
    drawn from Dirichlet(alpha); smaller alpha is more skewed. Redraws until every
    party holds at least ``min_size`` records."""
    labels = np.asarray(labels)
    _check(len(labels), parts)
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    rng = np.random.default_rng(seed)
    for _ in range(100):
        idx = [[] for _ in range(parts)]
        for c in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet([alpha] * parts)) * len(members)).astype(int)[:-1]
            for p, chunk in enumerate(np.split(members, cuts)):
                idx[p].extend(chunk.tolist())
        if min(len(i) for i in idx) >= min_size:
            return [np.sort(np.array(i, dtype=np.int64)) for i in idx]
    raise ValueError(f"could not give every party {min_size} records with alpha={alpha}")
