"""The plaintext detectors of pgkernels.defenses.reference against independent implementations."""

import numpy as np
import pytest

from pgkernels.defenses import reference as R


def poisoned_classes(seed=0, n_per_class=60, d=12, classes=3, poison=6, shift=4.0):
    """Representations of ``classes`` classes; class 1 holds ``poison`` records
    shifted far along one direction (a backdoor's signature). Returns (R,
    labels, poisoned bool)."""
    g = np.random.default_rng(seed)
    scales = np.linspace(1.0, 0.3, d)
    scales[0] = 2.0  # a clear top direction in the clean spread too
    Rs, ys, bad = [], [], []
    for c in range(classes):
        X = g.standard_normal((n_per_class, d)) * scales + 3.0 * g.standard_normal(d)
        p = np.zeros(n_per_class, dtype=bool)
        if c == 1:
            direction = g.standard_normal(d)
            X[:poison] += shift * direction / np.linalg.norm(direction) * np.sqrt(d)
            p[:poison] = True
        Rs.append(X)
        ys.append(np.full(n_per_class, c))
        bad.append(p)
    perm = g.permutation(classes * n_per_class)
    return np.concatenate(Rs)[perm], np.concatenate(ys)[perm], np.concatenate(bad)[perm]


def test_removal_count():
    assert R.removal_count(0.1, 40) == 6  # 1.5 * 0.1 * 40 = 6.000000000000001 in floats
    assert R.removal_count(0.1, 41) == 7
    assert R.removal_count(0.0, 10) == 0
    assert R.removal_count(1.0, 10) == 10


def test_top_direction_matches_svd():
    g = np.random.default_rng(1)
    for _ in range(5):
        n, d = 50, 8
        # singular values 10, 5, 4, ...: a clear gap
        U, _ = np.linalg.qr(g.standard_normal((n, d)))
        V, _ = np.linalg.qr(g.standard_normal((d, d)))
        s = np.array([10.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.2])
        C = U @ np.diag(s) @ V.T
        v = R.top_directions(C, 2)
        _, _, Vt = np.linalg.svd(C)
        assert abs(abs(v[:, 0] @ Vt[0]) - 1) < 1e-6
        assert abs(abs(v[:, 1] @ Vt[1]) - 1) < 1e-2
        assert abs(v[:, 0] @ v[:, 1]) < 1e-6


def test_spectral_scores_and_flags_match_svd():
    Rm, y, bad = poisoned_classes()
    flags, scores = R.spectral_signatures(Rm, y, eps=0.1)
    for c in range(3):
        idx = np.flatnonzero(y == c)
        C = Rm[idx] - Rm[idx].mean(0)
        top = np.linalg.svd(C, full_matrices=False)[2][0]
        np.testing.assert_allclose(scores[idx], (C @ top) ** 2, rtol=1e-4, atol=1e-6)
        k = R.removal_count(0.1, len(idx))
        assert flags[idx].sum() == k
        assert set(idx[np.argsort(-(C @ top) ** 2)[:k]]) == set(idx[flags[idx]])
    assert flags[bad].all()  # every poisoned record is among the flagged


def test_activation_clustering_matches_kmeans():
    from sklearn.cluster import KMeans

    Rm, y, bad = poisoned_classes(seed=3)
    flags, cluster = R.activation_clustering(Rm, y)
    assert (flags == bad).all()
    idx = np.flatnonzero(y == 1)
    C = Rm[idx] - Rm[idx].mean(0)
    Z = C @ R.top_directions(C, 2)
    km = KMeans(2, n_init=10, random_state=0).fit(Z)
    same = km.labels_ == km.labels_[0]
    b = cluster[idx]
    assert (same == (b == b[0])).all()  # the same partition


def test_two_means_is_aurors_schedule():
    from sklearn.cluster import KMeans

    g = np.random.default_rng(2)
    V = np.concatenate([g.standard_normal((20, 3)), g.standard_normal((7, 3)) + 6])
    b, m0, m1 = R.two_means(V, V[0], V[-1], 5)
    km = KMeans(2, init=np.stack([V[0], V[-1]]), n_init=1).fit(V)
    assert (b == (km.labels_ == 1)).all()
    np.testing.assert_allclose(np.stack([m0, m1]), km.cluster_centers_, atol=1e-9)


def test_strip_entropy_matches_scipy():
    from scipy.stats import entropy

    g = np.random.default_rng(4)
    logits = g.standard_normal((6 * 5, 10)) * 3
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    want = entropy(p, axis=1).reshape(6, 5).mean(1)
    np.testing.assert_allclose(R.strip_entropy(logits, 5), want, rtol=1e-12)


def test_strip_blend_threshold_flags():
    q = np.arange(6.0).reshape(2, 3)
    x = np.ones((4, 3))
    blend = R.strip_blend(q, x, alpha=0.5)
    assert blend.shape == (8, 3)
    np.testing.assert_allclose(blend[5], 0.5 * q[1] + 0.5)
    h = np.array([0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 1.0])
    t = R.strip_threshold(h, 0.2)  # the 3rd smallest: 2 clean values below it
    assert t == 0.3 and R.strip_flags(h, t).sum() == 2
    assert R.strip_threshold(h, 0.0) == 0.1


@pytest.mark.parametrize("call,msg", [
    (lambda: R.activation_clustering(np.zeros((4, 2)), np.zeros(4, int), size_threshold=0.6), "size_threshold"),
    (lambda: R.spectral_signatures(np.zeros(4), np.zeros(4, int), 0.1), "R must be 2-D"),
    (lambda: R.spectral_signatures(np.zeros((4, 2)), np.zeros(3, int), 0.1), "labels must have shape"),
    (lambda: R.strip_threshold(np.zeros(3), 1.5), "fpr must be"),
])
def test_errors(call, msg):
    with pytest.raises(ValueError, match=msg):
        call()


def _large_poison(seed=0, n=300, d=10, frac=1 / 3, shift=2.5):
    """Three classes; a third of class 1 is shifted along one direction (a
    poisoned share as large as MNIST's backdoored owner's: 2,500 of ~7,400
    records of its target class). Returns (R, y, bad, clean R, clean y): the
    clean set drawn from the same class distributions without poison."""
    g = np.random.default_rng(seed)
    centres = 3.0 * g.standard_normal((3, d))
    scales = np.linspace(1.0, 0.4, d)
    scales[0] = 2.0  # a clear top direction in the clean spread (the power iteration converges)
    direction = g.standard_normal(d)
    direction /= np.linalg.norm(direction)

    def draw(m, poison):
        X, y, bad = [], [], []
        for c in range(3):
            Xc = centres[c] + g.standard_normal((m, d)) * scales
            b = np.zeros(m, dtype=bool)
            if poison and c == 1:
                b[: int(frac * m)] = True
                Xc[b] += shift * np.sqrt(d) * direction
            X.append(Xc), y.append(np.full(m, c)), bad.append(b)
        return np.concatenate(X), np.concatenate(y), np.concatenate(bad)

    Rm, y, bad = draw(n, True)
    Rc, yc, _ = draw(n // 2, False)
    return Rm, y, bad, Rc, yc


def test_suspect_test_matches_numpy_covariance():
    """The suspect statistic is the trace of the class's (biased) covariance
    matrix (numpy), training over clean; only the poisoned class passes 1.5."""
    Rm, y, bad, Rc, yc = _large_poison()
    suspect, means, sizes = R.suspect_classes(Rm, y, (Rc, yc), 3)
    for c in range(3):
        tr = np.trace(np.cov(Rm[y == c].T, bias=True))
        tr2 = np.trace(np.cov(Rc[yc == c].T, bias=True))
        assert abs(R.spread(Rm[y == c] - Rm[y == c].mean(0)) - tr) < 1e-9 * tr
        assert suspect[c] == (tr >= R.SUSPECT_RATIO * tr2)
        np.testing.assert_allclose(means[c], Rc[yc == c].mean(0))
        assert sizes[c] == (yc == c).sum()
    assert suspect.tolist() == [False, True, False]


def test_clean_set_finds_a_large_poisoned_share():
    """A third of a class poisoned: the papers' rules either miss most of it
    (spectral at eps = 0.05) or flag clean classes (activation clustering's
    size test at 0.35 and spectral at eps = 0.35 remove from every class); with
    the clean set only the poisoned class loses records, and centring at the
    clean mean puts the poison on top."""
    Rm, y, bad, Rc, yc = _large_poison()
    plain, _ = R.spectral_signatures(Rm, y, 0.35)
    assert plain[y != 1].sum() > 0.4 * (y != 1).sum()  # the paper's rule at eps = 0.35: every class
    flags, scores = R.spectral_signatures(Rm, y, 0.35, clean=(Rc, yc))
    assert flags[bad].mean() == 1.0 and not flags[y != 1].any()
    assert flags[~bad].mean() < 0.1
    # the scores are centred at the clean class mean
    idx = np.flatnonzero(y == 1)
    C = Rm[idx] - Rm[idx].mean(0)
    top = np.linalg.svd(C, full_matrices=False)[2][0]
    np.testing.assert_allclose(scores[idx], ((Rm[idx] - Rc[yc == 1].mean(0)) @ top) ** 2, rtol=1e-4)
    ac, cluster = R.activation_clustering(Rm, y, clean=(Rc, yc))
    assert (ac == bad).all()


def test_class_without_clean_records_is_suspect_and_keeps_own_centre():
    Rm, y, bad, Rc, yc = _large_poison()
    keep = yc != 1
    suspect, _, sizes = R.suspect_classes(Rm, y, (Rc[keep], yc[keep]), 3)
    assert suspect[1] and sizes[1] == 0
    flags, scores = R.spectral_signatures(Rm, y, 0.35, clean=(Rc[keep], yc[keep]))
    _, own = R.spectral_signatures(Rm, y, 0.35)
    np.testing.assert_allclose(scores[y == 1], own[y == 1])


def test_clean_set_errors():
    Rm, y, bad, Rc, yc = _large_poison()
    with pytest.raises(ValueError, match="clean representations must have 10 features"):
        R.spectral_signatures(Rm, y, 0.1, clean=(Rc[:, :3], yc))
    assert R.spread(np.zeros((0, 4))) == 0.0
    with pytest.raises(ValueError, match="ratio must be a number in"):
        R.activation_clustering(Rm, y, clean=(Rc, yc), ratio=0.9)
