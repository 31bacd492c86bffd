"""MPC detectors of pgkernels.defenses.detection against their plaintext references (2 and 3 parties)."""

import numpy as np
import pytest
import torch

import pgkernels
from pgkernels.defenses import reference as R

from test_detection_reference import poisoned_classes

EPS = 0.1


def _grid(a):
    return np.round(np.asarray(a, dtype=np.float64) * 2**16) / 2**16


def _clear_instance():
    """A small instance whose reference decisions have clear margins: the
    spectral scores at each class's removal boundary differ by >= 10%, and
    every clean class's smaller 2-means cluster is >= 1.5 records from the
    size threshold."""
    for seed in range(100):
        Rm, y, bad = poisoned_classes(seed=seed, n_per_class=20, d=6, classes=3, poison=3, shift=3.0)
        Rm = _grid(Rm)
        _, scores = R.spectral_signatures(Rm, y, EPS)
        ok = True
        for c in range(3):
            s = np.sort(scores[y == c])[::-1]
            k = R.removal_count(EPS, len(s))
            ok &= s[k - 1] > 1.1 * s[k]
        flags, cluster = R.activation_clustering(Rm, y)
        for c in range(3):
            b = cluster[y == c]
            ok &= (c == 1) or abs(min(b.sum(), (~b).sum()) - 0.35 * len(b)) >= 1.5
        ok &= (flags == bad).all()
        if ok:
            return Rm, y, bad
    raise AssertionError("no clear instance")


def _strip_case():
    g = np.random.default_rng(7)
    m, N, K = 8, 5, 10
    logits = g.standard_normal((m * N, K)) * 2
    logits[: 3 * N, 4] += 12.0  # three triggered queries: confident, low entropy
    clean = g.standard_normal((20 * N, K)) * 2
    return _grid(logits), _grid(clean), N


def _session(Rm, y, logits, clean, N):
    import crypten

    from pgkernels.defenses import detection as D

    out = {}
    R_sh = crypten.cryptensor(torch.tensor(Rm))
    onehot = crypten.cryptensor(torch.nn.functional.one_hot(torch.tensor(y), 3).double())
    flags, scores = D.spectral_signatures(R_sh, onehot, EPS, return_scores=True)
    out["spectral"] = pgkernels.decode(flags).numpy()
    out["spectral-scores"] = pgkernels.decode(scores).numpy()
    out["spectral-public-labels"] = pgkernels.decode(D.spectral_signatures(R_sh, torch.tensor(y), EPS)).numpy()
    out["ac"] = pgkernels.decode(D.activation_clustering(R_sh, onehot)).numpy()
    H = D.strip_entropy(crypten.cryptensor(torch.tensor(logits)), N)
    Hc = D.strip_entropy(crypten.cryptensor(torch.tensor(clean)), N)
    thr = D.strip_threshold(Hc, 0.1)
    out["strip-entropy"] = pgkernels.decode(H).numpy()
    out["strip-clean-entropy"] = pgkernels.decode(Hc).numpy()
    out["strip-threshold"] = float(pgkernels.decode(thr))
    out["strip-flags"] = pgkernels.decode(D.strip_flags(H, thr)).numpy()
    errs = {}
    for name, fn in {
        "eps": lambda: D.spectral_signatures(R_sh, onehot, 1.5),
        "labels-shape": lambda: D.spectral_signatures(R_sh, torch.zeros(5, dtype=torch.long), EPS),
        "not-2d": lambda: D.activation_clustering(R_sh.view(-1), onehot),
        "threshold": lambda: D.activation_clustering(R_sh, onehot, size_threshold=0.5),
        "blends": lambda: D.strip_entropy(crypten.cryptensor(torch.zeros(7, 3)), 2),
    }.items():
        try:
            fn()
            errs[name] = "no error"
        except Exception as e:  # noqa: BLE001
            errs[name] = f"{type(e).__name__}: {e}"
    out["errors"] = errs
    return out


@pytest.fixture(scope="module")
def case():
    Rm, y, bad = _clear_instance()
    logits, clean, N = _strip_case()
    return Rm, y, bad, logits, clean, N


@pytest.fixture(scope="module", params=[2, 3], ids=lambda n: f"{n}pc")
def results(request, case):
    Rm, y, _, logits, clean, N = case
    return pgkernels.launch(_session, world_size=request.param, timeout=900,
                            args=(Rm, y, logits, clean, N))[0]


def test_spectral_flags_equal_reference(results, case):
    Rm, y, bad = case[:3]
    flags, scores = R.spectral_signatures(Rm, y, EPS)
    np.testing.assert_allclose(results["spectral-scores"], scores, rtol=2e-2, atol=2e-3)
    assert (results["spectral"] == flags).all()
    assert (results["spectral-public-labels"] == flags).all()
    assert results["spectral"][bad].all()


def test_activation_clustering_flags_equal_reference(results, case):
    Rm, y, bad = case[:3]
    flags, _ = R.activation_clustering(Rm, y)
    assert (results["ac"] == flags).all()
    assert (results["ac"] == bad).all()


def test_strip_equals_reference(results, case):
    logits, clean, N = case[3:]
    H = R.strip_entropy(logits, N)
    Hc = R.strip_entropy(clean, N)
    np.testing.assert_allclose(results["strip-entropy"], H, atol=2e-2)
    np.testing.assert_allclose(results["strip-clean-entropy"], Hc, atol=2e-2)
    thr = R.strip_threshold(Hc, 0.1)
    assert abs(results["strip-threshold"] - thr) < 2e-2
    assert (results["strip-flags"] == R.strip_flags(H, thr)).all()
    assert results["strip-flags"][:3].all() and not results["strip-flags"][3:].any()


@pytest.mark.parametrize("name,expected", [
    ("eps", "ValueError: eps must be a number in [0, 1]"),
    ("labels-shape", "ValueError: labels must have shape (60,)"),
    ("not-2d", "ValueError: R must be 2-D"),
    ("threshold", "ValueError: size_threshold must be a number in (0, 0.5)"),
    ("blends", "ValueError: logits must be 2-D with a multiple of blends=2 rows"),
])
def test_errors(results, name, expected):
    assert results["errors"][name].startswith(expected), results["errors"][name]
