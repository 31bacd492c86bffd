"""Attacks on the robust rules themselves, tried as the attacker would: inputs at
the edge of the admissible range, and noise an honest-but-curious server would
like to strip. (Attacks on the serving layer are in test_serving_security.py;
on the runtime in test_runtime_security.py.)"""

import numpy as np
import pytest
import torch

import pgkernels
from pgkernels.defenses import reference as R
from pgkernels.defenses.validity import input_bound

N, D, F = 7, 9, 1
RULE_KW = {
    "fedavg": {}, "median": {}, "trimmed_mean": {"proportiontocut": 0.2}, "norm_clip": {"max_norm": 1.0},
    "krum": {"num_malicious": F}, "multi_krum": {"num_malicious": F, "to_keep": N - F},
    "bulyan": {"num_malicious": F}, "fltrust": {}, "flame": {"num_malicious": F, "noise_lambda": 0},
    "auror": {},
}
EDGE_RULES = list(RULE_KW)


def _edge_updates(rule, seed=0):
    """Honest rows spread over half the range; the attackers' rows at the very edge of
    the rule's bound, with alternating signs (largest norms and distances)."""
    B = input_bound(rule, N, D)
    ulp = 2.0 ** -16
    g = np.random.default_rng(seed)
    U = np.round(g.uniform(-B / 2, B / 2, size=(N, D)) * 2 ** 16) / 2 ** 16
    signs = np.where(np.arange(D) % 2 == 0, 1.0, -1.0)
    U[N - F:] = np.where(signs > 0, B - ulp, -B)
    return U, B


def _edge_session():
    import crypten

    from pgkernels.protocols import truncation

    out = {}
    with truncation.exact():
        for rule in EDGE_RULES:
            U, B = _edge_updates(rule)
            kw = dict(RULE_KW[rule])
            if rule == "fltrust":
                kw["server_update"] = U[: N - F].mean(0)
            fn = getattr(pgkernels.defenses, rule)
            res = fn(crypten.cryptensor(torch.tensor(U)), **kw)
            out[rule] = pgkernels.decode(res).numpy()
    return out


@pytest.fixture(scope="module", params=[2, 3], ids=lambda n: f"{n}pc")
def edge_results(request):
    return pgkernels.launch(_edge_session, world_size=request.param, timeout=900)[0]


@pytest.mark.parametrize("rule", EDGE_RULES)
def test_inputs_at_the_bound_do_not_wrap(edge_results, rule):
    """Every rule on inputs at the edge of its derived bound matches its plaintext
    reference: no intermediate wraps around mod 2^64, and no truncation fails
    (the servers' dealer-assisted truncation)."""
    U, B = _edge_updates(rule)
    kw = dict(RULE_KW[rule])
    if rule == "fltrust":
        kw["server_update"] = U[: N - F].mean(0)
    ref = getattr(R, rule)(U, **kw)
    ref = ref[0] if isinstance(ref, tuple) else ref
    got = edge_results[rule]
    scale = max(np.abs(ref).max(), 1.0)
    # the inverse square roots carry about 1e-4 relative error (more for the tiny
    # clipping factors of norm_clip at norm 24576); everything else is exact to a few ulps
    tol = {"fltrust": 2e-2, "norm_clip": 1e-2, "flame": 1e-3}.get(rule, 1e-4) * scale + 1e-3
    assert np.abs(got - ref).max() < tol, (rule, B, np.abs(got - ref).max())


# --- FLAME's noise ----------------------------------------------------------------

def _flame_noise_session():
    import crypten

    g = torch.Generator().manual_seed(4)
    U = torch.randn(9, 50, generator=g, dtype=torch.float64)
    eu = crypten.cryptensor(U)
    clean = pgkernels.decode(pgkernels.defenses.flame(eu, noise_lambda=0))
    runs = []
    for _ in range(2):
        torch.manual_seed(0)  # the seed a curious server would guess (or set for the others)
        runs.append(pgkernels.decode(pgkernels.defenses.flame(eu, noise_lambda=0.5)) - clean)
    torch.manual_seed(0)
    predicted = torch.randn(50, dtype=torch.float64)  # what torch's generator would have drawn
    return runs, predicted


def test_flame_noise_not_reproducible_from_torch_seed():
    """Before: each server's noise share was torch.randn after whatever seed torch
    had, so a server that knew (or set) the seed could recompute the other's share
    and strip the noise. Now two runs with the same torch seed add different noise,
    unrelated to torch's stream."""
    runs, predicted = pgkernels.launch(_flame_noise_session, world_size=2, timeout=300)[0]
    a, b = runs
    assert a.abs().max() > 1e-2 and b.abs().max() > 1e-2
    assert (a - b).abs().max() > 1e-2
    for noise in (a, b):
        corr = np.corrcoef(noise.numpy(), predicted.numpy())[0, 1]
        assert abs(corr) < 0.6, corr
