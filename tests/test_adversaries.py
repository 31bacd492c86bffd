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

    out = {"installed": truncation.installed()}
    if True:  # the rules as they are, with no global exact truncation: they must divide exactly themselves
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
    (the rules divide every value that can be large with the dealer-assisted
    truncation; CrypTen's local one would fail often at these magnitudes)."""
    assert edge_results["installed"] is False
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


# --- the wraparound attack through every entry point ---------------------------------

def _honest(n=9, d=12, seed=5):
    rng = np.random.default_rng(seed)
    return np.round(rng.normal(size=(n, d)) * 0.3 * 2 ** 16) / 2 ** 16


@pytest.fixture(scope="module", params=[2, 3], ids=lambda n: f"{n}servers")
def agg_servers(request):
    from pgkernels.serving.service import AggregationServers

    with AggregationServers(world_size=request.param, timeout=300) as s:
        yield s


def test_wraparound_through_aggregate(agg_servers):
    """Before: one coordinate of 65536.0 (2^32 in the ring, whose square is 0 mod
    2^64) passed the coordinator's |x| < 2^30 check; norm_clip(max_norm=1) returned
    13107.2 in that coordinate where the reference gives 0.2, and Krum(f=1)
    selected the attacker. Now the servers find the update invalid on the shares,
    drop it (one bit revealed) and aggregate the others."""
    U = _honest()
    U[4, 3] = 65536.0
    honest = np.delete(U, 4, 0)
    s = agg_servers
    agg, _ = s.aggregate("norm_clip", U, max_norm=1.0)
    assert s.last_invalid == [4]
    np.testing.assert_allclose(agg, R.norm_clip(honest, 1.0), atol=2e-3)
    assert abs(agg[3]) < 1.0
    agg, kept = s.aggregate("krum", U, num_malicious=1)
    assert s.last_invalid == [4] and 4 not in kept.tolist()
    ref, i = R.krum(honest, 1)
    assert kept.tolist() == [i if i < 4 else i + 1]
    np.testing.assert_allclose(agg, ref, atol=1e-3)
    # a selection rule's kept indices and a non-selecting rule both index the n clients sent
    agg, kept = s.aggregate("multi_krum", U, num_malicious=1, to_keep=7)
    assert 4 not in kept.tolist() and len(kept) == 6
    # the median has no products: 65536 is within its bound (2^44), and the median ignores it
    agg, _ = s.aggregate("median", U)
    assert s.last_invalid == []
    np.testing.assert_allclose(agg, np.median(U, 0), atol=1e-3)
    # too few valid clients left for the rule: refused, and the servers go on
    from pgkernels.serving.service import PolicyError

    bad = U.copy()
    bad[:5, 0] = 65536.0
    with pytest.raises(PolicyError, match="sent invalid updates"):
        s.aggregate("krum", bad, num_malicious=1)
    agg, _ = s.aggregate("fedavg", honest)
    assert s.last_invalid == []
    np.testing.assert_allclose(agg, honest.mean(0), atol=1e-3)


def _crafted_masked(s, update, rid, node, ring_value, coord=0):
    """A client that skips the honest encoder: its update holds ``ring_value`` (any
    element of Z_2^64) in one coordinate, and it seals boxes for exactly that."""
    import torch

    from pgkernels.runtime.dealer import stream
    from pgkernels.serving.client import seal_context, share_context
    from pgkernels.serving.sealing import seal
    import hashlib  # noqa: F401
    import secrets

    from pgkernels.serving.client import masked_digest

    enc = torch.from_numpy(np.round(np.asarray(update) * 2 ** 16).astype(np.int64))
    enc[coord] = ring_value
    seeds = [secrets.token_bytes(16) for _ in range(s.world_size)]
    masked = enc.clone()
    for seed in seeds:
        masked -= stream(torch.frombuffer(bytearray(seed), dtype=torch.uint8), 0, enc.numel())
    masked = masked.numpy()
    h = masked_digest(masked)
    boxes = [seal(pk, seed, seal_context(share_context(s.session, rid, node, enc.numel(), h), r))
             for r, (pk, seed) in enumerate(zip(s.public_keys, seeds))]
    return masked, boxes


@pytest.mark.parametrize("ring_value", [2 ** 32, 2 ** 63 - 1, -(2 ** 63), 2 ** 62 + 5])
def test_wraparound_through_aggregate_masked(agg_servers, ring_value):
    """The Flower path: the range check ran only in the client's mod, so a client
    that skips it could put any ring element into its share. Now the servers drop it."""
    from pgkernels.serving.client import mask

    s = agg_servers
    U = _honest(n=7)
    rid = s.new_round()
    nodes = list(range(100, 107))
    masked, boxes = [], []
    for i in range(7):
        if i == 2:
            m, b = _crafted_masked(s, U[i], rid, nodes[i], ring_value, coord=5)
        else:
            m, b = mask(U[i], s.public_keys, s.session, rid, nodes[i])
        masked.append(m)
        boxes.append(b)
    agg, kept, bad = s.aggregate_masked("krum", masked, boxes, nodes, rid, num_malicious=1)
    assert bad == [] and s.last_invalid == [2]
    ref, i = R.krum(np.delete(U, 2, 0), 1)
    assert kept.tolist() == [i if i < 2 else i + 1]
    np.testing.assert_allclose(agg, ref, atol=1e-3)


def test_wraparound_through_the_lab_mpc_backend():
    """The lab's MPC backend goes through the same servers; both backends drop the
    same client and agree."""
    from pgkernels.fl.mpc import MPCAggregator
    from pgkernels.fl import PlaintextAggregator

    U = _honest()
    U[6, 0] = -65536.0
    plain = PlaintextAggregator()
    ref, ref_kept = plain.aggregate("krum", U, num_malicious=1)
    with MPCAggregator(world_size=2, timeout=300) as mpc:
        agg, kept = mpc.aggregate("krum", U, num_malicious=1)
        assert mpc.last_invalid == plain.last_invalid == [6]
    assert kept.tolist() == ref_kept.tolist()
    np.testing.assert_allclose(agg, ref, atol=1e-3)
