"""The one-round FSS comparison (``method="fss"``) against plaintext, its
rounds and bytes, its method selection, and its refusal with 3 parties.

One 2-party session computes every case; the tests then check them.
"""

import pytest
import torch

import pgkernels
from pgkernels.protocols import cost

from _cases import FRAC, bounded_edges, edge_values, random_values, reveal, share

SHAPES = [(), (0,), (1,), (63,), (64,), (65,), (3, 5, 7), (2, 0, 3)]
BITS = [2, 3, 8, 9, 17, 32, 33, 63, 64]


def _session():
    import crypten

    from pgkernels.runtime import comm
    from pgkernels.runtime.session import dealer_client

    out = {}

    def check(name, got, want):
        out[name] = (reveal(got).clone() if not torch.is_tensor(got) else got, want.long())

    x = torch.cat([edge_values(), random_values(2000, seed=1)])
    y = torch.cat([edge_values().flip(0), random_values(2000, seed=2)])
    xs, ys = x >> 2, y >> 2
    ys[:50] = xs[:50]  # ties
    ex = share(x)
    exs, eys = share(xs), share(ys)
    F = dict(method="fss")
    check("ltz/edges+random", pgkernels.ltz(ex, **F), x < 0)
    check("lt", pgkernels.lt(exs, eys, **F), xs < ys)
    check("gt", pgkernels.gt(exs, eys, **F), xs > ys)
    check("le", pgkernels.le(exs, eys, **F), xs <= ys)
    check("ge", pgkernels.ge(exs, eys, **F), xs >= ys)
    check("relu", pgkernels.relu(ex, **F), torch.where(x >= 0, x, torch.zeros_like(x)))
    check("sign", pgkernels.sign(ex, **F), torch.where(x < 0, -1, 1))
    check("lt/public", pgkernels.lt(exs, 0.5, **F), xs < (1 << (FRAC - 1)))
    c = pgkernels.ltz(exs, **F)
    check("where/shared", pgkernels.where(c, exs, eys), torch.where(xs < 0, xs, ys))
    # every 64-bit value around the extremes, with masks that make c hit 0 and -1
    ext = torch.tensor([-(2**63), -(2**63) + 1, 2**63 - 1, 2**63 - 2, 0, -1, 1], dtype=torch.long)
    check("ltz/extremes", pgkernels.ltz(share(ext.repeat(50)), **F), ext.repeat(50) < 0)

    for k in BITS:
        xb = torch.cat([bounded_edges(k), random_values(500, seed=k, bits=k)])
        eb = share(xb)
        check(f"ltz/bits={k}", pgkernels.ltz(eb, bits=k, **F), xb < 0)
        check(f"relu/bits={k}", pgkernels.relu(eb, bits=k, **F), torch.clamp(xb, min=0))
        check(f"ge/bits={k}", pgkernels.ge(eb, 0, bits=k, **F), xb >= 0)

    for shape in SHAPES:
        xr = random_values(max(1, torch.Size(shape).numel()), seed=7)[: torch.Size(shape).numel()].view(shape)
        e = share(xr)
        check(f"ltz/shape={shape}", pgkernels.ltz(e, **F), xr < 0)
        check(f"relu/shape={shape}", pgkernels.relu(e, **F), torch.clamp(xr, min=0))

    # mixing with CrypTen ops
    xf = torch.linspace(-4, 4, 33)
    ef = crypten.cryptensor(xf)
    mixed = (pgkernels.ltz(ef, **F) * ef + ef.square()).get_plain_text()
    out["mix/crypten-arith"] = (mixed, torch.where(xf < 0, xf, 0.0) + xf * xf)

    # costs: one opening (+ the online dealer round trip), 8 bytes per element
    n = 4096
    xc = crypten.cryptensor(torch.randn(n))
    costs = {}
    for name, f in [("ltz-fss", lambda: pgkernels.ltz(xc, method="fss")),
                    ("ltz-fss-32", lambda: pgkernels.ltz(xc, bits=32, method="fss")),
                    ("relu-fss", lambda: pgkernels.relu(xc, method="fss")),
                    ("ltz-tree", lambda: pgkernels.ltz(xc, method="tree"))]:
        comm.reset_stats()
        f()
        s = comm.STATS.snapshot()
        costs[name] = (s.rounds, s.bytes_sent / n, s.dealer_bytes / n, s.dealer_rounds)
    # prefetched keys: the online phase is the single opening
    client = dealer_client()
    client.prefetch_fss(n, 64)
    comm.reset_stats()
    got = pgkernels.ltz(xc, method="fss")
    s = comm.STATS.snapshot()
    costs["ltz-fss-prefetched"] = (s.rounds, s.bytes_sent / n, s.dealer_bytes / n, s.dealer_rounds)
    out["prefetched"] = (reveal(got), (reveal(xc) < 0).long())
    # the cost model's pick with the default (loopback) constants: FSS for a few elements
    few = share(x[:8])
    comm.reset_stats()
    got = pgkernels.ltz(few)
    costs["auto-few-rounds"] = comm.STATS.rounds
    check("ltz/auto-few", got, x[:8] < 0)
    return out, costs


@pytest.fixture(scope="module")
def session():
    res = pgkernels.launch(_session, world_size=2, timeout=600)
    for k in res[0][0]:
        assert torch.equal(res[0][0][k][0], res[1][0][k][0]), k
    return res[0]


CASES = (["ltz/edges+random", "lt", "gt", "le", "ge", "relu", "sign", "lt/public", "where/shared", "ltz/extremes",
          "prefetched", "ltz/auto-few"]
         + [f"{op}/bits={k}" for k in BITS for op in ("ltz", "relu", "ge")]
         + [f"{op}/shape={s}" for s in SHAPES for op in ("ltz", "relu")])


@pytest.mark.parametrize("case", CASES)
def test_exact(session, case):
    got, want = session[0][case]
    assert got.shape == want.shape, (got.shape, want.shape)
    assert torch.equal(got, want), f"{case}: {int((got != want).sum())} mismatches"


def test_mixing_with_crypten(session):
    got, want = session[0]["mix/crypten-arith"]
    torch.testing.assert_close(got.double(), want.double(), atol=1e-3, rtol=0)


def test_costs(session):
    from pgkernels import ops

    costs = session[1]
    # rounds, bytes sent per element, dealer bytes per element (both parties' keys at this party: its own), dealer rounds
    assert costs["ltz-fss"][:2] == (2, 8.0) and costs["ltz-fss"][3] == 1
    assert costs["ltz-fss"][2] == 8 * ops.dcf_cw_words(63) == 1520
    assert costs["ltz-fss-32"][:3] == (2, 4.0, 8 * ops.dcf_cw_words(31))
    assert costs["ltz-fss-prefetched"][:2] == (1, 8.0) and costs["ltz-fss-prefetched"][3] == 0
    # ReLU: the comparison, then one bit injection whose material was prefetched
    assert costs["relu-fss"][0] == 3 and costs["relu-fss"][1] == 16.125
    assert costs["ltz-tree"][:2] == (7, 13.25)
    assert costs["auto-few-rounds"] == 2
    assert cost.fss_cost(64) == (2, 8, 1520) and cost.fss_cost(64, online=False)[0] == 1


def test_three_parties_refuse_fss_and_auto_uses_the_tree():
    def fn():
        import crypten

        x = crypten.cryptensor(torch.tensor([-1.0, 0.0, 2.0]))
        auto = pgkernels.ltz(x).get_plain_text().tolist()
        try:
            pgkernels.ltz(x, method="fss")
        except ValueError as e:
            return auto, str(e)
        return auto, None

    auto, err = pgkernels.launch(fn, world_size=3, timeout=300)[0]
    assert auto == [1.0, 0.0, 0.0]
    assert err is not None and "2 parties" in err


def test_cost_model_picks_fss_when_latency_dominates():
    model = cost.CostModel(latency=0.05, bandwidth=1.25e8)
    assert cost.choose_ltz(1000, 64, 2, model=model) == "fss"
    assert cost.choose_ltz(1000, 64, 3, model=model) == "tree"
    assert cost.choose_ltz(10**6, 64, 2, model=model) == "tree"  # keys dominate at a million
    loop = cost.CostModel(latency=3e-4, bandwidth=1e9)
    assert cost.choose_ltz(10**5, 64, 2, model=loop) == "tree"
    assert cost.choose_ltz(1, 64, 2, model=loop) == "fss"
    assert cost.ltz_seconds("fss", 1000, model=model) < cost.ltz_seconds("tree", 1000, model=model)
    with pytest.raises(ValueError, match="method must be one of"):
        cost.choose_ltz(10, method="bogus")
    with pytest.raises(ValueError, match="2 parties"):
        cost.choose_ltz(10, parties=3, method="fss")
    with pytest.raises(ValueError, match="fss_gen_s"):
        cost.configure(fss_gen_s=-1)
