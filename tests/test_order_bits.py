"""Order statistics on fewer bits for inputs checked against a coordinate bound
(protocols.order ``bits=``, defenses.robust ``bound=``, the servers'
run_rule), against the plaintext references, with 2 and 3 parties.

One launch per party count runs every check. Inputs are raw ring integers
within [-X, X] (X = BOUND 2^16), so sorts, selections and argmax are checked
exactly; even medians and trimmed means divide with CrypTen's truncation and
are checked to within 4 units of the last fractional bit.
"""

import numpy as np
import pytest
import torch

import pgkernels
from pgkernels.defenses import reference as R
from pgkernels.defenses.validity import compare_bits
from pgkernels.protocols import order

from _cases import reveal, share

FRAC = 16
BOUND = 8.0
X = int(BOUND * 2 ** FRAC)  # the bound in ring units
BITS = compare_bits(BOUND)  # 22
NS = [1, 2, 5, 8]
NS_3PC = [1, 4, 5]
KINDS = ("random", "ties", "zeros", "edges", "negative")


def _inputs(n, d, kind, seed):
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        return torch.randint(-X, X + 1, (n, d), generator=g)
    if kind == "ties":
        return torch.randint(-2, 3, (n, d), generator=g) << 16
    if kind == "zeros":
        return torch.zeros(n, d, dtype=torch.long)
    if kind == "edges":  # exactly at +-B, the widest differences
        return torch.where(torch.rand(n, d, generator=g) < 0.5, torch.tensor(X), torch.tensor(-X))
    if kind == "negative":
        return -torch.randint(0, X + 1, (n, d), generator=g)
    raise ValueError(kind)


def _session(ns):
    import crypten

    from pgkernels import defenses as D
    from pgkernels.defenses.validity import validate
    from pgkernels.runtime import comm
    from pgkernels.serving.service import run_rule

    out = {}

    def put(name, got, want, tol=0):
        out[name] = (got, want, tol)

    d = 3
    for n in ns:
        for kind in KINDS:
            x = _inputs(n, d, kind, seed=n * 11 + len(kind))
            ex = share(x)
            tag = f"n={n}/{kind}"
            xf = x.double().numpy() / 2 ** FRAC
            for bits in ((BITS, 32) if kind in ("random", "edges") else (BITS,)):
                for m in ("network", "rank"):
                    t = f"{m}/bits={bits}/{tag}"
                    v, i = pgkernels.sort(ex, dim=0, method=m, bits=bits)
                    v, i = reveal(v), reveal(i)
                    put(f"sort/{t}", v, torch.sort(x, dim=0).values)
                    put(f"sort-gather/{t}", torch.gather(x, 0, i), v)
                    k = min(3, n)
                    tv, ti = pgkernels.topk(ex, k, dim=0, method=m, bits=bits)
                    put(f"topk/{t}", reveal(tv), torch.topk(x, k, dim=0).values)
                    med = reveal(pgkernels.median(ex, dim=0, method=m, bits=bits)).double()
                    put(f"median/{t}", med, torch.tensor(np.median(x.double().numpy(), axis=0)), 4)
                    put(f"median-lower/{t}", reveal(pgkernels.median(ex, dim=0, lower=True, method=m, bits=bits)),
                        torch.median(x, dim=0).values)
                    got = reveal(pgkernels.trimmed_mean(ex, dim=0, proportiontocut=0.2, method=m, bits=bits))
                    want = torch.tensor(R.trimmed_mean(xf, 0.2)) * 2 ** FRAC
                    put(f"trimmed/{t}", got.double(), want, 4)
                for m in ("tournament", "pairwise"):
                    t = f"{m}/bits={bits}/{tag}"
                    first = torch.stack([(x[:, j] == x[:, j].max()).nonzero()[0, 0] for j in range(d)])
                    put(f"argmax/{t}", reveal(pgkernels.argmax(ex, dim=0, method=m, bits=bits)),
                        torch.nn.functional.one_hot(first, n).T)
                    put(f"max/{t}", reveal(pgkernels.max(ex, dim=0, method=m, bits=bits)), x.max(0).values)
                    put(f"min/{t}", reveal(pgkernels.min(ex, dim=0, method=m, bits=bits)), x.min(0).values)
            # the rules with the bound: the reference on the float updates
            U = share(x)
            put(f"rule-median/{tag}", reveal(D.median(U, bound=BOUND)).double(),
                torch.tensor(R.median(xf)) * 2 ** FRAC, 4)
            put(f"rule-trimmed/{tag}", reveal(D.trimmed_mean(U, 0.2, bound=BOUND)).double(),
                torch.tensor(R.trimmed_mean(xf, 0.2)) * 2 ** FRAC, 4)

    # the attacker's side: one client far outside the bound (and one at a
    # value whose 22-bit differences wrap) among honest clients near 0
    g = torch.Generator().manual_seed(5)
    honest = torch.round(torch.randn(6, 4, generator=g, dtype=torch.float64) * 0.1 * 2 ** FRAC).long()
    evil = torch.cat([honest, torch.full((1, 4), 2 ** 40), torch.full((1, 4), 2 ** 21 + 2 ** 16)])
    Ue = share(evil)
    ef = evil.double().numpy() / 2 ** FRAC
    clamped, _ = validate(Ue, "median", bound=BOUND, policy="clamp")
    put("attack/clamp-median", reveal(D.median(clamped, bound=BOUND)).double(),
        torch.tensor(R.median(R.clamp_rows(ef, BOUND))) * 2 ** FRAC, 4)
    clamped, _ = validate(Ue, "trimmed_mean", bound=BOUND, policy="clamp")
    put("attack/clamp-trimmed", reveal(D.trimmed_mean(clamped, 0.25, bound=BOUND)).double(),
        torch.tensor(R.trimmed_mean(R.clamp_rows(ef, BOUND), 0.25)) * 2 ** FRAC, 4)
    kept, valid = validate(Ue, "median", bound=BOUND, policy="drop")
    put("attack/drop-median", reveal(D.median(kept, bound=BOUND)).double(),
        torch.tensor(R.median(ef[valid.numpy()])) * 2 ** FRAC, 4)
    # without the check the reduced width is wrong (the check is needed); 64 bits is not
    out["attack/unchecked-reduced"] = reveal(D.median(Ue, bound=BOUND)).double()
    out["attack/unchecked-64"] = reveal(D.median(Ue)).double()
    out["attack/reference"] = torch.tensor(R.median(ef)) * 2 ** FRAC
    # the servers' run_rule: clamp, then the rule with the bound it checked
    for rule, kw in (("median", {}), ("trimmed_mean", {"proportiontocut": 0.25})):
        res = run_rule(Ue.share, rule, kw, {}, validity="clamp")
        got = crypten.mpc.MPCTensor.from_shares(res.out, precision=FRAC)
        out[f"service/{rule}"] = reveal(got).double()
        # the servers' own, tighter bound: clamped into it, then compared on its bits
        res = run_rule(Ue.share, rule, kw, {}, validity="clamp", bound=BOUND)
        got = crypten.mpc.MPCTensor.from_shares(res.out, precision=FRAC)
        out[f"service-bound/{rule}"] = reveal(got).double()

    # costs measured: the median of 9 x 200 by ranks, at 64 and at BITS
    x = share(_inputs(9, 200, "random", 7))
    for bits in (64, BITS):
        comm.reset_stats()
        pgkernels.median(x, dim=0, method="rank", bits=bits)
        out[f"meter/{bits}"] = (comm.STATS.rounds, comm.STATS.bytes_sent)

    # argument errors
    U = share(_inputs(5, 2, "random", 1))
    errs = {
        "bits-low": lambda: pgkernels.median(U, dim=0, bits=1),
        "bits-high": lambda: pgkernels.sort(U, dim=0, bits=65),
        "bits-type": lambda: pgkernels.topk(U, 2, dim=0, bits=32.0),
        "bits-bool": lambda: pgkernels.argmax(U, dim=0, bits=True),
        "bits-str": lambda: pgkernels.trimmed_mean(U, dim=0, bits="32"),
        "bound-neg": lambda: D.median(U, bound=-1.0),
        "bound-zero": lambda: D.trimmed_mean(U, bound=0),
        "bound-inf": lambda: D.median(U, bound=float("inf")),
        "bound-str": lambda: D.median(U, bound="8"),
        "bound-huge": lambda: D.trimmed_mean(U, bound=2.0 ** 50),
    }
    for name, f in errs.items():
        try:
            f()
            out[f"error/{name}"] = "no error"
        except Exception as e:  # noqa: BLE001
            out[f"error/{name}"] = f"{type(e).__name__}: {e}"
    return out


@pytest.fixture(scope="module", params=[2, 3], ids=lambda n: f"{n}pc")
def results(request):
    ns = NS if request.param == 2 else NS_3PC
    return pgkernels.launch(_session, world_size=request.param, timeout=900, args=(ns,))[0]


def test_reduced_width_matches_reference(results):
    bad, count = [], 0
    for name, val in results.items():
        if not isinstance(val, tuple) or len(val) != 3 or name.startswith("meter/"):
            continue
        got, want, tol = val
        count += 1
        if got.shape != want.shape:
            bad.append(f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}")
            continue
        diff = (got.double() - want.double()).abs().max().item() if got.numel() else 0.0
        if diff > tol:
            bad.append(f"{name}: max diff {diff}")
    assert count > 200
    assert not bad, "\n".join(bad[:40])


def test_unchecked_values_break_the_reduced_width(results):
    ref = results["attack/reference"]
    assert (results["attack/unchecked-64"] - ref).abs().max() <= 4
    # the client at 2^21 + 2^16 ring units looks negative on 22 bits: the median moves
    assert (results["attack/unchecked-reduced"] - ref).abs().max() > 2 ** 12


def test_service_passes_its_bound(results):
    # run_rule clamps into the rule's input bound and runs the rule with it:
    # the reference of the same clamp
    from pgkernels.defenses.validity import input_bound

    g = torch.Generator().manual_seed(5)
    honest = torch.round(torch.randn(6, 4, generator=g, dtype=torch.float64) * 0.1 * 2 ** FRAC).long()
    evil = torch.cat([honest, torch.full((1, 4), 2 ** 40), torch.full((1, 4), 2 ** 21 + 2 ** 16)])
    ef = evil.double().numpy() / 2 ** FRAC
    for rule, ref in (("median", lambda C: R.median(C)), ("trimmed_mean", lambda C: R.trimmed_mean(C, 0.25))):
        B = input_bound(rule, 8, 4)
        want = torch.tensor(ref(R.clamp_rows(ef, B))) * 2 ** FRAC
        assert (results[f"service/{rule}"] - want).abs().max() <= 4, rule
        want = torch.tensor(ref(R.clamp_rows(ef, BOUND))) * 2 ** FRAC
        assert (results[f"service-bound/{rule}"] - want).abs().max() <= 4, rule


@pytest.mark.parametrize("bound,exc", [(0, ValueError), (-8.0, ValueError), (float("nan"), ValueError),
                                       (float("inf"), ValueError), ("8", TypeError), (True, TypeError)])
def test_servers_bound_argument(bound, exc):
    from pgkernels.serving.service import AggregationServers

    with pytest.raises(exc, match="bound must be a positive finite number"):
        AggregationServers(world_size=2, bound=bound)
    with pytest.raises(ValueError, match="bound are the servers' own settings"):
        AggregationServers(world_size=2, bound=8.0, external=("127.0.0.1", 7000), credentials="x")
    assert AggregationServers(world_size=2, bound=8.0).bound == 8.0


def test_meter_saves_rounds_and_bytes(results):
    r64, b64 = results["meter/64"]
    r, b = results[f"meter/{BITS}"]
    assert r < r64 and b < 0.7 * b64


@pytest.mark.parametrize("op", ["median", "trimmed_mean", "sort", "topk", "argmax"])
def test_plan_costs_fewer_rounds_and_bytes(op):
    for method in ({"median": ("network", "rank"), "trimmed_mean": ("network", "rank"), "sort": ("network", "rank"),
                    "topk": ("network", "rank"), "argmax": ("tournament", "pairwise")}[op]):
        p64 = order.plan(op, 100, 1000, method=method, k=5)
        p32 = order.plan(op, 100, 1000, method=method, k=5, bits=32)
        assert p32.rounds < p64.rounds, (op, method)
        assert p32.dealer_bytes_per_column < p64.dealer_bytes_per_column, (op, method)
        if method in ("rank", "pairwise"):  # the network's value rows now open (8 bytes) but c shrinks
            assert p32.bytes_per_column < p64.bytes_per_column, (op, method)
    # at a WAN the rank median's time drops
    from pgkernels.protocols import cost

    saved = cost.MODEL.latency, cost.MODEL.bandwidth
    try:
        cost.configure_link(0.05, 1.25e8)
        assert order.plan("median", 100, 1000, bits=22).seconds(1000) < order.plan("median", 100, 1000).seconds(1000)
    finally:
        cost.configure(latency=saved[0], bandwidth=saved[1])


def test_compare_bits():
    assert compare_bits(8.0) == 22 and compare_bits(256) == 27
    assert compare_bits(2.0 ** 44, "median", 10, 10) == 63
    for bad, exc in ((True, TypeError), ("8", TypeError), (0, ValueError), (-1.0, ValueError),
                     (float("nan"), ValueError), (float("inf"), ValueError)):
        with pytest.raises(exc, match="bound"):
            compare_bits(bad)
    with pytest.raises(ValueError, match="bound must be at most median's input bound"):
        compare_bits(2.0 ** 45, "median", 10, 10)
    with pytest.raises(ValueError, match="bits"):
        order.plan("median", 10, 10, bits=1)


def test_registry_takes_bound():
    from pgkernels.defenses import registry

    assert {n for n, r in registry.RULES.items() if r.takes_bound} == {"median", "trimmed_mean"}
    assert all("bound" not in r.params for r in registry.RULES.values())  # set by the servers, not a request


@pytest.mark.parametrize("case,expected", [
    ("bits-low", "ValueError: bits must be in [2, 64]"),
    ("bits-high", "ValueError: bits must be in [2, 64]"),
    ("bits-type", "TypeError: bits must be an int"),
    ("bits-bool", "TypeError: bits must be an int"),
    ("bits-str", "TypeError: bits must be an int"),
    ("bound-neg", "ValueError: bound must be a positive finite number"),
    ("bound-zero", "ValueError: bound must be a positive finite number"),
    ("bound-inf", "ValueError: bound must be a positive finite number"),
    ("bound-str", "TypeError: bound must be a positive finite number"),
    ("bound-huge", "ValueError: bound must be at most trimmed_mean's input bound"),
])
def test_errors(results, case, expected):
    assert results[f"error/{case}"].startswith(expected), results[f"error/{case}"]
