"""Range-robust square roots and inverse square roots (pgkernels.protocols.roots)."""

import bisect
import math

import pytest
import torch

import pgkernels
from pgkernels.protocols import roots

UNIT = 2.0 ** -16


def _want(kind, X, shift=0):
    """The exact output for encoded inputs X (integers at 16 fractional bits); 0 below 2^-16."""
    x = X.double() * UNIT
    pos = x.clamp(min=UNIT)
    ref = {"inv": 2.0 ** shift / pos.sqrt(), "sqrt": pos.sqrt(), "recip": 2.0 ** shift / pos}[kind]
    return torch.where(X >= 1, ref, torch.zeros_like(ref))


def _table_plain(kind, shift, X, floor=-8):
    """The "table" method evaluated in the clear with exact integer arithmetic
    (the MPC result differs from it by the division's 2 units at most)."""
    T, A, B, F = (t.tolist() for t in roots._table(kind, shift, 16, floor))
    j = bisect.bisect_right(T, X) - 1
    return 0 if j < 0 else A[j] + (((X - T[j]) * B[j]) >> F[j])


@pytest.mark.parametrize("kind,shift", [("inv", 0), ("inv", 8), ("inv", 16), ("sqrt", 0), ("recip", 8)])
def test_table_error_bound(kind, shift):
    # every bucket edge (T_j - 1, T_j, T_j + 1), the first integers, and a log-uniform sample
    T = roots._table(kind, shift, 16, -8)[0].tolist()
    g = torch.Generator().manual_seed(5)
    xs = set(range(1, 3000)) | {t + d for t in T for d in (-1, 0, 1)}
    xs |= {int(2 ** v) for v in (torch.rand(20000, generator=g, dtype=torch.float64) * 53).tolist()}
    xs = sorted(v for v in xs if 1 <= v < 2 ** 53)
    want = _want(kind, torch.tensor(xs), shift) * 2 ** 16
    got = torch.tensor([_table_plain(kind, shift, v) for v in xs], dtype=torch.float64)
    rel = ((got - want).abs() - 1.0).clamp(min=0) / want  # beyond one unit
    # the lines' bound |p (p - 1)| / 16 (2^(1/48) - 1)^2 for x^p: 9.9e-6 for inv_sqrt, 2.6e-5 for 1/x
    bound = {"inv": 3 / 64, "sqrt": 1 / 64, "recip": 1 / 8}[kind] * (2 ** (1 / roots.STEPS) - 1) ** 2
    assert float(rel.max()) < bound * 1.1  # (lines minimax in absolute terms, slopes rounded)
    small = want < 2 ** 16  # small outputs: within 2 units (and the line error)
    assert float((got - want)[small].abs().max()) < 2.0 + bound * 2 ** 16


def test_table_layout():
    T, A, B, F = roots._table("inv", 8, 16, -8)
    assert T[0] == 1 and T[-1] == 2 ** 53 and bool((T[1:] > T[:-1]).all())
    assert bool((F >= 0).all()) and bool((F <= 62).all())
    # inside its bucket no row reaches the exact division's bound 2^62
    width = torch.cat([T[1:] - T[:-1] - 1, torch.zeros(1, dtype=torch.long)])
    assert all(abs(w * b) < 2 ** 62 for w, b in zip(width.tolist(), B.tolist()))
    # a higher floor drops the thresholds below 4^floor
    assert roots._table("inv", 8, 16, -6)[0][0] == 2 ** 4


def _edges():
    T = roots._table("inv", 0, 16, -8)[0].tolist()
    picks = [T[i] for i in range(0, len(T), 97)] + T[-3:]
    X = [0, -1, -5, -(2 ** 40), 1, 2, 3, 2 ** 16, 2 ** 16 - 1, 2 ** 16 + 1, 2 ** 53 - 1]
    X += [t + d for t in picks for d in (-1, 0, 1)]
    return torch.tensor(sorted(set(X)), dtype=torch.long)


def _session():
    import crypten

    from pgkernels.runtime import comm

    def enc(X):
        return crypten.cryptensor(X.double() * UNIT)

    X = _edges()
    ex = enc(X)
    out = {"X": X}
    comm.reset_stats()
    y = roots.inv_sqrt(ex)
    out["inv0-rounds"] = (comm.STATS.rounds, comm.STATS.dealer_rounds)  # before the reveal's round
    out["inv0"] = y.get_plain_text()
    out["inv8"] = roots.inv_sqrt(ex, shift=8).get_plain_text()
    out["inv16"] = roots.inv_sqrt(ex, shift=16).get_plain_text()
    comm.reset_stats()
    y = roots.sqrt(ex)
    out["sqrt-rounds"] = (comm.STATS.rounds, comm.STATS.dealer_rounds)
    out["sqrt"] = y.get_plain_text()
    comm.reset_stats()
    r, y = roots.sqrt_and_inv_sqrt(ex, shift=8)
    out["both-rounds"] = (comm.STATS.rounds, comm.STATS.dealer_rounds)
    out["both"] = (r.get_plain_text(), y.get_plain_text())
    M = torch.tensor([[2 ** 10, 3 * 2 ** 30], [7, 0]], dtype=torch.long)
    out["both-newton"] = tuple(t.get_plain_text() for t in roots.sqrt_and_inv_sqrt(enc(M), 8, method="newton"))
    out["recip"] = roots.reciprocal(ex, shift=8).get_plain_text()
    out["recip-newton"] = (roots.reciprocal(enc(M), shift=8, method="newton").get_plain_text(),
                           roots.reciprocal(enc(M), shift=3, method="newton").get_plain_text())
    out["floor-6"] = roots.inv_sqrt(enc(torch.tensor([15, 16, 17, 2 ** 20])), shift=8, floor=-6).get_plain_text()
    # 2-D input, the newton method on the same values, empty and 1-element inputs
    M = torch.tensor([[2 ** 10, 3 * 2 ** 30], [7, 2 ** 45]], dtype=torch.long)
    out["2d"] = (roots.inv_sqrt(enc(M), shift=8).get_plain_text(), roots.sqrt(enc(M)).get_plain_text())
    out["newton"] = roots.inv_sqrt(enc(M), shift=8, method="newton").get_plain_text()
    out["empty"] = (tuple(roots.inv_sqrt(enc(torch.zeros(0, dtype=torch.long))).size()),
                    tuple(roots.sqrt(enc(torch.zeros(2, 0, dtype=torch.long))).size()))
    out["one"] = roots.sqrt(enc(torch.tensor([4 * 2 ** 16]))).get_plain_text()
    out["above"] = (roots.inv_sqrt(enc(torch.tensor([2 ** 54, 2 ** 60])), shift=16).get_plain_text(),
                    roots.sqrt(enc(torch.tensor([2 ** 54]))).get_plain_text())
    out["norm"] = roots.norm(crypten.cryptensor(torch.tensor([[3.0, 4.0], [0.0, 0.0]])), dim=1).get_plain_text()
    errs = {}
    for name, fn in {"method": lambda: roots.inv_sqrt(ex, method="exp"),
                     "shift": lambda: roots.inv_sqrt(ex, shift=17),
                     "floor": lambda: roots.inv_sqrt(ex, floor=16),
                     "x": lambda: roots.sqrt(torch.ones(3))}.items():
        try:
            fn()
            errs[name] = "no error"
        except Exception as e:  # noqa: BLE001
            errs[name] = f"{type(e).__name__}: {e}"
    out["errors"] = errs
    return out


@pytest.fixture(scope="module", params=[2, 3], ids=lambda n: f"{n}pc")
def results(request):
    return pgkernels.launch(_session, world_size=request.param, timeout=600)[0]


def _close(got, want, rel=1.2e-5, units=3):
    bad = (got.double() - want).abs() > rel * want.abs() + units * UNIT
    return [(i, float(got[i]), float(want[i])) for i in torch.nonzero(bad).view(-1).tolist()]


def test_edges_and_range(results):
    X = results["X"]
    for key, kind, shift in (("inv0", "inv", 0), ("inv8", "inv", 8), ("inv16", "inv", 16), ("sqrt", "sqrt", 0)):
        assert not _close(results[key], _want(kind, X, shift)), key


def test_rounds(results):
    # 1 division round + its dealer round trip + 6 comparison rounds (material prefetched)
    assert results["inv0-rounds"] == (8, 1)
    assert results["sqrt-rounds"] == (8, 1)


def test_sqrt_and_inv_sqrt_together(results):
    X = results["X"]
    r, y = results["both"]
    assert not _close(r, _want("sqrt", X)) and not _close(y, _want("inv", X, 8))
    assert results["both-rounds"] == (8, 1)  # the rounds of one of them
    M = torch.tensor([[2 ** 10, 3 * 2 ** 30], [7, 0]], dtype=torch.long)
    r, y = results["both-newton"]
    assert not _close(r, _want("sqrt", M), rel=5e-4) and not _close(y, _want("inv", M, 8), rel=5e-4)


def test_reciprocal(results):
    X = results["X"]
    assert not _close(results["recip"], _want("recip", X, 8), rel=2.8e-5)
    M = torch.tensor([[2 ** 10, 3 * 2 ** 30], [7, 0]], dtype=torch.long)
    r8, r3 = results["recip-newton"]
    assert not _close(r8, _want("recip", M, 8), rel=1e-3, units=8)
    assert not _close(r3, _want("recip", M, 3), rel=1e-3, units=8)


def test_floor_and_shapes(results):
    got = results["floor-6"]
    assert float(got[0]) == 0.0
    assert not _close(got[1:], _want("inv", torch.tensor([16, 17, 2 ** 20]), 8))
    M = torch.tensor([[2 ** 10, 3 * 2 ** 30], [7, 2 ** 45]], dtype=torch.long)
    inv, sq = results["2d"]
    assert inv.shape == (2, 2) and sq.shape == (2, 2)
    assert not _close(inv, _want("inv", M, 8)) and not _close(sq, _want("sqrt", M))
    assert not _close(results["newton"], _want("inv", M, 8), rel=5e-4)
    assert results["empty"] == ((0,), (2, 0))
    assert not _close(results["one"], torch.tensor([2.0]))
    # the zero row's square sum may carry a unit of CrypTen's (3-party) truncation per product: sqrt(2 units)
    assert not _close(results["norm"], torch.tensor([5.0, 0.0]), units=2 ** 16 * (3 * UNIT) ** 0.5)


def test_above_range_saturates(results):
    inv, sq = results["above"]
    top = 2.0 ** 37
    assert not _close(inv, torch.full((2,), 2 ** 16 / math.sqrt(top)))
    assert not _close(sq, torch.tensor([math.sqrt(top)]))


@pytest.mark.parametrize("case,expected", [
    ("method", "ValueError: method must be one of ('table', 'newton')"),
    ("shift", "ValueError: shift must be an int in [0, 16]"),
    ("floor", "ValueError: floor must be an int in [-8, 15]"),
    ("x", "TypeError"),
])
def test_errors(results, case, expected):
    assert results["errors"][case].startswith(expected), results["errors"][case]
