"""The plaintext references (:mod:`pgkernels.defenses.reference`) against
implementations written by others: Flower's ``flwr.server.strategy.aggregate``
(Krum, Multi-Krum, Bulyan, median, trimmed mean), scipy and numpy.

The MPC rules are tested against the references elsewhere (test_defenses,
test_registry); a mistake made in both (say Krum's n - f - 2 neighbours read
as n - f - 1, or Bulyan's beta = theta - 2f = n - 4f read as n - 3f) is
caught here, because Flower states the rules independently.

Where the semantics legitimately differ the instances avoid the difference:

* ties (Krum scores, Multi-Krum ranks, distances to the median): ours break
  them by the lower index, Flower's by ``argsort``/``argpartition`` order --
  every instance is random continuous data, so ties have probability 0;
* Krum with fewer than one neighbour (n - f - 2 < 1) is undefined: Flower
  uses one neighbour, we score every client 0 (the lowest index wins). In
  Bulyan the last of its theta = n - 2f Krum rounds has n - (theta - 1) - f
  - 2 = f - 1 neighbours, so the Bulyan instances have f >= 2;
* Flower weights Multi-Krum's mean by the clients' example counts: all
  counts are 1 here.
"""

import numpy as np
import pytest
import scipy.stats
from flwr.server.strategy import aggregate as flower  # a pinned requirement: no skip

from pgkernels.defenses import reference as R


def _results(U):
    """Flower's input: one (weights list, example count) per client, one layer each."""
    return [([np.array(u, dtype=np.float64)], 1) for u in U]


def _flower_krum_index(U, f):
    """The client Flower's Krum selects (it returns the weights, not the index)."""
    w = flower.aggregate_krum(_results(U), num_malicious=f, to_keep=0)[0]
    hits = [i for i, u in enumerate(U) if np.array_equal(u, w)]
    assert len(hits) == 1
    return hits[0]


def _instance(rng, n, d):
    """Honest updates around a common direction, a few shifted by random
    amounts: Krum's neighbourhoods are then neither trivial nor all alike."""
    U = rng.normal(size=(n, d))
    bad = rng.choice(n, size=max(1, n // 4), replace=False)
    U[bad] += rng.normal(scale=rng.uniform(0.5, 3.0), size=(len(bad), d))
    return U


# (n, f) with n >= 2f + 3 (Krum's and Multi-Krum's bound)
KRUM_SIZES = [(5, 1), (6, 1), (7, 2), (9, 2), (10, 3), (12, 4)]


@pytest.mark.parametrize("n, f", KRUM_SIZES)
def test_krum_matches_flower(n, f):
    rng = np.random.default_rng(100 * n + f)
    discriminating = 0
    for _ in range(40):
        U = _instance(rng, n, int(rng.integers(1, 6)))
        agg, idx = R.krum(U, f)
        want = _flower_krum_index(U, f)
        assert idx == want
        np.testing.assert_array_equal(agg, U[want])
        # Flower with f - 1 malicious counts n - f - 1 neighbours: on these
        # instances the selection depends on the neighbour count
        if _flower_krum_index(U, f - 1) != want:
            discriminating += 1
    # the test must be able to tell n - f - 2 from n - f - 1 neighbours
    assert discriminating >= 3, discriminating


def test_krum_constructed_neighbour_count_instance():
    """n = 7, f = 2 on a line: with n - f - 2 = 3 neighbours the tight
    cluster {0, 0.1, 0.2, 0.3} wins (client 1: its three others are close);
    with 4 neighbours every cluster point must also reach the spread-out
    points, and client 4 at 3.0, in the middle of the rest, wins."""
    U = np.array([[0.0], [0.1], [0.2], [0.3], [3.0], [4.5], [1.5]])
    f = 2
    assert R.krum(U, f)[1] == _flower_krum_index(U, f) == 1
    assert _flower_krum_index(U, f - 1) != 1   # n - f - 1 neighbours would pick another client
    np.testing.assert_allclose(R.krum_scores(U, f)[1], 0.1 ** 2 * 2 + 0.2 ** 2)


@pytest.mark.parametrize("n, f", KRUM_SIZES)
def test_multi_krum_matches_flower(n, f):
    rng = np.random.default_rng(7 + 100 * n + f)
    for _ in range(20):
        U = _instance(rng, n, int(rng.integers(1, 6)))
        for keep in range(1, n + 1):
            agg, idx = R.multi_krum(U, f, keep)
            want = flower.aggregate_krum(_results(U), num_malicious=f, to_keep=keep)[0]
            np.testing.assert_allclose(agg, want, rtol=1e-12, atol=1e-12)
            assert len(idx) == keep
            np.testing.assert_allclose(U[idx].mean(0), want, rtol=1e-12, atol=1e-12)


# (n, f) with n >= 4f + 3 and f >= 2 (see the module docstring)
BULYAN_SIZES = [(11, 2), (12, 2), (13, 2), (15, 3), (17, 3)]


@pytest.mark.parametrize("n, f", BULYAN_SIZES)
def test_bulyan_matches_flower(n, f):
    rng = np.random.default_rng(11 + 100 * n + f)
    for _ in range(10):
        U = _instance(rng, n, int(rng.integers(1, 8)))
        agg, chosen = R.bulyan(U, f)
        # theta = n - 2f Krum picks, distinct clients
        assert len(chosen) == n - 2 * f == len(set(chosen))
        want = flower.aggregate_bulyan(_results(U), num_malicious=f, aggregation_rule=flower.aggregate_krum,
                                       to_keep=0)[0]
        np.testing.assert_allclose(agg, want, rtol=1e-12, atol=1e-12)


def test_bulyan_beta_is_theta_minus_2f():
    """El Mhamdi et al. 2018: theta = n - 2f selected, then per coordinate the
    beta = theta - 2f = n - 4f values closest to the median are averaged.
    With n = 11, f = 2: theta = 7, beta = 3 (not n - 3f = 5)."""
    n, f = 11, 2
    rng = np.random.default_rng(3)
    U = rng.normal(size=(n, 4))
    agg, chosen = R.bulyan(U, f)
    S = U[chosen]
    med = np.median(S, axis=0)
    beta = n - 4 * f
    closest = np.argsort(np.abs(S - med), axis=0)[:beta]
    np.testing.assert_allclose(agg, np.take_along_axis(S, closest, axis=0).mean(0), rtol=1e-12)
    wrong = np.argsort(np.abs(S - med), axis=0)[:n - 3 * f]
    assert not np.allclose(agg, np.take_along_axis(S, wrong, axis=0).mean(0))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 10])
def test_median_matches_flower_and_numpy(n):
    rng = np.random.default_rng(n)
    U = rng.normal(size=(n, 6))
    want = flower.aggregate_median(_results(U))[0]
    np.testing.assert_allclose(R.median(U), want, rtol=0, atol=0)
    np.testing.assert_allclose(R.median(U), np.median(U, axis=0), rtol=0, atol=0)
    if n % 2 == 0:  # the mean of the two middle values, not one of them
        s = np.sort(U, axis=0)
        np.testing.assert_allclose(R.median(U), (s[n // 2 - 1] + s[n // 2]) / 2)


@pytest.mark.parametrize("n", [4, 5, 9, 10, 11])
@pytest.mark.parametrize("p", [0.0, 0.1, 0.2, 0.25, 0.3, 0.45])
def test_trimmed_mean_matches_flower_and_scipy(n, p):
    """Flower's proportiontocut (also the Flower strategy's ``beta``) and
    scipy's are ours: int(p n) values cut from each end."""
    rng = np.random.default_rng(int(1000 * p) + n)
    U = rng.normal(size=(n, 5))
    got = R.trimmed_mean(U, p)
    np.testing.assert_allclose(got, flower.aggregate_trimmed_avg(_results(U), p)[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got, scipy.stats.trim_mean(U, p, axis=0), rtol=1e-12, atol=1e-12)
    k = int(p * n)
    np.testing.assert_allclose(got, np.sort(U, axis=0)[k:n - k].mean(0), rtol=1e-12, atol=1e-12)


def test_fedavg_matches_flower():
    rng = np.random.default_rng(0)
    U = rng.normal(size=(6, 5))
    np.testing.assert_allclose(R.fedavg(U), flower.aggregate(_results(U))[0], rtol=1e-12)
