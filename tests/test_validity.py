"""Validity checks on secret-shared updates (protocols.validity, defenses.validity)
against the plaintext reference, with 2 and 3 parties, including shares that no
honest encoder produces (the attacker controls every bit of its share)."""

import math

import numpy as np
import pytest
import torch

import pgkernels
from pgkernels.defenses import reference as R
from pgkernels.defenses.validity import RULES, input_bound, max_norm_limit, min_clients
from pgkernels.protocols.validity import METHODS

FRAC = 16
BOUND = 4.0  # real units, ring 2^18
RING_B = int(BOUND * 2 ** FRAC)
EDGE_ROWS = {  # ring values an attacker can put in one coordinate of its share
    "2^32 (65536.0)": 2 ** 32,
    "2^63-1": 2 ** 63 - 1,
    "-2^63": -(2 ** 63),
    "2^62": 2 ** 62,
    "-2^63+B": -(2 ** 63) + RING_B,       # x - B wraps to a positive value
    "2^63-B": 2 ** 63 - RING_B,           # x + B wraps to a negative value
    "B": RING_B,                          # just outside [-B, B)
    "-B-1": -RING_B - 1,
}


def _plain_rows(seed=0):
    g = torch.Generator().manual_seed(seed)
    U = torch.round(torch.randn(9, 13, generator=g, dtype=torch.float64) * 2 ** FRAC) / 2 ** FRAC
    U[1, 3] = BOUND - 2 ** -FRAC      # largest valid
    U[2, 0] = -BOUND                  # smallest valid
    U[3, 5] = BOUND                   # invalid: the interval is half-open
    U[4, 7] = -BOUND - 2 ** -FRAC     # invalid
    U[5] = 0.0                        # zero row
    U[6] = 3.875                      # valid coordinates, norm 3.875 * sqrt(13) = 13.97
    return U


def _attacker_share(ring_rows, d):
    """Shares of rows holding arbitrary ring integers (party 0 holds them, the others 0)."""
    import crypten

    from pgkernels.runtime import comm

    X = torch.zeros(len(ring_rows), d, dtype=torch.long)
    for i, v in enumerate(ring_rows):
        X[i, i % d] = v
        X[i, (i + 1) % d] = 2 ** 16  # and an honest-looking 1.0
    share = X if comm.rank() == 0 else torch.zeros_like(X)
    return crypten.mpc.MPCTensor.from_shares(share, precision=FRAC), X


def _session():
    import crypten

    from pgkernels.protocols.validity import METHODS, check_rows

    out = {}
    U = _plain_rows()
    eu = crypten.cryptensor(U)
    for method in METHODS:
        kept, valid = check_rows(eu, BOUND, method=method)
        out[f"drop/{method}/valid"] = valid
        out[f"drop/{method}/kept"] = pgkernels.decode(kept)
        kept, valid = check_rows(eu, BOUND, max_norm=13.9, method=method)
        out[f"drop+norm/{method}/valid"] = valid
        kept, valid = check_rows(eu, BOUND, max_norm=14.0, method=method)
        out[f"drop+norm14/{method}/valid"] = valid
    # a bound that is not a power of two (the comparison method)
    out["drop/odd-bound"] = check_rows(eu, 3.0)[1]
    clamped, none = check_rows(eu, BOUND, policy="clamp")
    out["clamp"] = (pgkernels.decode(clamped), none)
    clamped, _ = check_rows(eu, BOUND, max_norm=2.0, policy="clamp")
    out["clamp+norm"] = pgkernels.decode(clamped)

    ea, X = _attacker_share(list(EDGE_ROWS.values()), 5)
    for method in METHODS:
        out[f"attacker/{method}/valid"] = check_rows(ea, BOUND, method=method)[1]
        # the norm of a wrapped row must not rescue it
        out[f"attacker+norm/{method}/valid"] = check_rows(ea, BOUND, max_norm=3.0, method=method)[1]
    # random ring garbage in whole rows, and honest rows shared with random masks
    g = torch.Generator().manual_seed(3)
    garbage = torch.randint(-2 ** 63, 2 ** 63 - 1, (4, 6), generator=g)
    garbage[0] = torch.randint(-RING_B, RING_B, (6,), generator=g)  # a valid row
    garbage[1, :5] = 0
    garbage[1, 5] = 2 ** 63 - 2 ** 40                              # one bad coordinate of high valuation
    from _cases import share as rand_share
    for method in METHODS:
        out[f"garbage/{method}/valid"] = check_rows(rand_share(garbage), BOUND, method=method)[1]
    clamped, _ = check_rows(ea, BOUND, policy="clamp")
    out["attacker/clamp"] = clamped._tensor.reveal()
    out["attacker/X"] = X

    # shapes: one row, no coordinates, one coordinate
    for shape in [(1, 4), (3, 0), (4, 1)]:
        t = torch.full(shape, 0.5, dtype=torch.float64)
        kept, valid = check_rows(crypten.cryptensor(t), BOUND)
        out[f"shape={shape}"] = (valid, tuple(kept.size()))
    # argument checks
    for name, call in {
        "policy": lambda: check_rows(eu, BOUND, policy="ignore"),
        "bound": lambda: check_rows(eu, -1.0),
        "bound-huge": lambda: check_rows(eu, 2.0 ** 50),
        "max_norm": lambda: check_rows(eu, BOUND, max_norm=0),
        "method": lambda: check_rows(eu, BOUND, method="guess"),
        "carry-odd": lambda: check_rows(eu, 3.0, method="carry"),
        "shape": lambda: check_rows(crypten.cryptensor(torch.ones(3)), BOUND),
    }.items():
        try:
            call()
            out[f"err/{name}"] = None
        except (ValueError, TypeError) as e:
            out[f"err/{name}"] = f"{type(e).__name__}: {e}"
    return out


@pytest.fixture(scope="module", params=[2, 3], ids=lambda n: f"{n}pc")
def results(request):
    res = pgkernels.launch(_session, world_size=request.param, timeout=600)
    for other in res[1:]:
        assert torch.equal(other["drop/carry/valid"], res[0]["drop/carry/valid"])
    return res[0]


@pytest.mark.parametrize("method", METHODS)
def test_drop_matches_reference(results, method):
    U = _plain_rows().numpy()
    want = R.valid_rows(U, BOUND)
    assert results[f"drop/{method}/valid"].tolist() == want.tolist()
    assert want.tolist() == [True, True, True, False, False, True, True, True, True]
    np.testing.assert_array_equal(results[f"drop/{method}/kept"].numpy(), U[want])
    assert results["drop/odd-bound"].tolist() == R.valid_rows(U, 3.0).tolist()


@pytest.mark.parametrize("method", METHODS)
def test_norm_bound(results, method):
    U = _plain_rows().numpy()
    for key, N in ((f"drop+norm/{method}/valid", 13.9), (f"drop+norm14/{method}/valid", 14.0)):
        want = R.valid_rows(U, BOUND, max_norm=N)
        assert results[key].tolist() == want.tolist(), key
        # an independent check: numpy's norm on the valid rows
        box = ((U >= -BOUND) & (U < BOUND)).all(1)
        assert want.tolist() == (box & (np.linalg.norm(U, axis=1) <= N)).tolist()
    assert not results[f"drop+norm/{method}/valid"][6] and results[f"drop+norm14/{method}/valid"][6]


def test_clamp_matches_reference(results):
    U = _plain_rows().numpy()
    got, none = results["clamp"]
    assert none is None
    np.testing.assert_array_equal(got.numpy(), R.clamp_rows(U, BOUND))
    assert got.max() < BOUND and got.min() >= -BOUND
    np.testing.assert_allclose(results["clamp+norm"].numpy(), R.clamp_rows(U, BOUND, max_norm=2.0), atol=2e-3)
    assert np.linalg.norm(results["clamp+norm"].numpy(), axis=1).max() <= 2.0 + 2e-3


@pytest.mark.parametrize("method", METHODS)
def test_attacker_ring_values_are_invalid(results, method):
    """Every row holds one coordinate an honest encoder never produces (or that is
    just outside the range); all are invalid, and the norm check cannot be
    satisfied by a wrapped square (2^32 squares to 0 mod 2^64). Random ring
    garbage is invalid, a valid row shared with random masks is valid."""
    assert results[f"attacker/{method}/valid"].tolist() == [False] * len(EDGE_ROWS)
    assert results[f"attacker+norm/{method}/valid"].tolist() == [False] * len(EDGE_ROWS)
    assert results[f"garbage/{method}/valid"].tolist() == [True, False, False, False]


def test_attacker_ring_values_are_clamped_into_range(results):
    got = results["attacker/clamp"]
    X = results["attacker/X"]
    assert int(got.max()) <= RING_B - 1 and int(got.min()) >= -RING_B
    honest = (X >= -RING_B) & (X < RING_B)
    assert torch.equal(got[honest], X[honest])
    # out-of-range values go to the nearer end when no wrap is involved
    assert got[0, 0] == RING_B - 1 and got[7, 2] == -RING_B and got[6, 1] == RING_B - 1


def test_shapes(results):
    assert results["shape=(1, 4)"] == (torch.tensor([True]), (1, 4))
    valid, size = results["shape=(3, 0)"]
    assert valid.tolist() == [True] * 3 and size == (3, 0)
    assert results["shape=(4, 1)"][0].tolist() == [True] * 4


def test_argument_errors(results):
    assert "policy must be one of" in results["err/policy"]
    assert "bound must be a positive number" in results["err/bound"]
    assert "bound must be in [1, 2^62] ring units" in results["err/bound-huge"]
    assert "max_norm must be a positive number" in results["err/max_norm"]
    assert "method must be one of" in results["err/method"]
    assert "needs a power-of-two bound" in results["err/carry-odd"]
    assert "U must be 2-D" in results["err/shape"]


# --- bounds per rule (plaintext) --------------------------------------------------

@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("n,d", [(1, 1), (11, 30), (50, 100_000), (100, 1000), (7, 0)])
def test_input_bound_keeps_every_intermediate_in_range(rule, n, d):
    """Recompute the worst intermediates independently (Python ints) at the bound."""
    B = input_bound(rule, n, d)
    assert B > 0 and math.log2(B) == int(math.log2(B))
    X = int(B * 2 ** FRAC)
    L = 2 ** 62
    assert n * X < L or rule == "median"
    assert 2 * X < L
    if rule not in ("fedavg", "median", "trimmed_mean"):
        assert max(d, 1) * X * X < L                      # Gram entry / squared norm / dot at scale 2^32
    if rule in ("krum", "multi_krum", "bulyan"):
        dist = 4 * max(d, 1) * X * X // 2 ** 16           # a squared distance at scale 2^16
        assert 2 * n * dist < L                           # score differences
        assert dist < 2 ** 61 // n                        # Bulyan's removal offset stays above live distances
    # and it is the largest power of two: doubling it breaks one constraint
    X2 = 2 * X
    broken = (n * X2 >= L and rule != "median") or 2 * X2 >= L
    if rule not in ("fedavg", "median", "trimmed_mean"):
        broken |= max(d, 1) * X2 * X2 >= L or (rule in ("krum", "multi_krum", "bulyan")
                                                and 8 * n * max(d, 1) * X2 * X2 > (L - 1) << 16)
        broken |= rule in ("norm_clip", "fltrust", "flame", "auror") and n * X2 * 2 ** 16 > L - 1
        broken |= rule == "auror" and (2 * max(d, 1) * X2 * X2 > L - 1 or 512 * 2 * max(d, 1) * X2 > L - 1)
    assert broken


def test_bound_examples_and_limits():
    assert input_bound("krum", 50, 100_000) == 64.0
    assert input_bound("krum", 100, 1000) == 1024.0
    assert input_bound("median", 10, 10) == 2.0 ** 44
    assert max_norm_limit() == pytest.approx(2 ** 15)
    assert min_clients("krum", 2) == 7 and min_clients("bulyan", 2) == 11 and min_clients("median") == 1
    with pytest.raises(ValueError, match="unknown rule"):
        input_bound("mean", 3, 3)
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        input_bound("krum", 0, 3)


def test_lab_plaintext_backend_drops_the_same_clients():
    """The lab's plaintext backend applies the servers' check, so both backends
    aggregate the same clients: here the 65536.0 coordinate that wraps in MPC."""
    from pgkernels.defenses.validity import after_drop, validate_plain
    from pgkernels.fl import PlaintextAggregator

    rng = np.random.default_rng(1)
    U = rng.normal(size=(9, 20)) * 0.1
    U[4, 3] = 65536.0
    agg = PlaintextAggregator()
    out, kept = agg.aggregate("krum", U, num_malicious=1)
    assert agg.last_invalid == [4]
    ref, i = R.krum(np.delete(U, 4, 0), 1)
    np.testing.assert_array_equal(out, ref)
    assert kept.tolist() == [i if i < 4 else i + 1]
    out, kept = agg.aggregate("multi_krum", U, num_malicious=1, to_keep=8)
    assert len(kept) == 7 and 4 not in kept.tolist()
    assert after_drop("multi_krum", {"to_keep": 8}, 1) == {"to_keep": 7}
    # clamp keeps every client, with the coordinate clamped to the bound
    C, none = validate_plain(U, "krum", policy="clamp")
    assert none is None and C[4, 3] == input_bound("krum", 9, 20) - 2 ** -16
    with pytest.raises(ValueError, match="needs at least 5 valid ones"):
        U2 = U.copy()
        U2[:5, 0] = 1e6
        agg.aggregate("krum", U2, num_malicious=1)
    with pytest.raises(ValueError, match="bound must be in"):
        validate_plain(U, "krum", bound=1e9)
