"""pgkernels comparison kernels against plaintext, with 2 and 3 parties.

One session per party count computes every case; the tests then check them, so
the suite stays fast while each case reports on its own.
"""

import pytest
import torch

import pgkernels

from _cases import FRAC, bounded_edges, edge_values, random_values, reveal, share

SHAPES = [(), (0,), (1,), (63,), (64,), (65,), (1001,), (3, 5, 7), (2, 0, 3)]
BITS = [2, 3, 5, 8, 17, 32, 40, 63]


def _session():
    """Runs in every party; returns {case: (result, expected)} as int64 tensors."""
    import crypten

    out = {}

    def check(name, got, want):
        out[name] = (reveal(got).clone() if not torch.is_tensor(got) else got, want.long())

    x = torch.cat([edge_values(), random_values(2000, seed=1)])
    y = torch.cat([edge_values().flip(0), random_values(2000, seed=2)])
    # differences must not overflow for lt/gt with CrypTen's x - y semantics
    xs, ys = x >> 2, y >> 2
    ys[:50] = xs[:50]  # ties
    ex, ey = share(x), share(y)
    exs, eys = share(xs), share(ys)

    check("ltz/edges+random", pgkernels.ltz(ex), x < 0)
    check("lt", pgkernels.lt(exs, eys), xs < ys)
    check("gt", pgkernels.gt(exs, eys), xs > ys)
    check("le", pgkernels.le(exs, eys), xs <= ys)
    check("ge", pgkernels.ge(exs, eys), xs >= ys)
    check("eq", pgkernels.eq(exs, eys), xs == ys)
    check("ne", pgkernels.ne(exs, eys), xs != ys)
    check("eq/zero-vs-edges", pgkernels.eq(ex, 0), x == 0)
    check("relu", pgkernels.relu(ex), torch.where(x >= 0, x, torch.zeros_like(x)))
    check("sign", pgkernels.sign(ex), torch.where(x < 0, -1, 1))
    # public second operand (encoded with x's encoder)
    check("lt/public", pgkernels.lt(exs, 0.5), xs < (1 << (FRAC - 1)))
    check("ge/public-tensor", pgkernels.ge(exs, torch.full((xs.numel(),), -2.0)), xs >= -(2 << FRAC))
    # where with shared and public branches, and with CrypTen's own comparison
    c = pgkernels.ltz(exs)
    check("where/shared", pgkernels.where(c, exs, eys), torch.where(xs < 0, xs, ys))
    check("where/public-b", pgkernels.where(c, exs, 3.0), torch.where(xs < 0, xs, torch.full_like(xs, 3 << FRAC)))
    check("where/public-both", pgkernels.where(c, 1.5, -2.0),
          torch.where(xs < 0, torch.full_like(xs, 3 << (FRAC - 1)), torch.full_like(xs, -2 << FRAC)))
    check("where/crypten-cond", pgkernels.where(exs < eys, exs, eys), torch.minimum(xs, ys))
    check("where/broadcast", pgkernels.where(pgkernels.ltz(share(xs[:5].view(5, 1))), share(ys[:3].view(1, 3)), 0.0),
          torch.where(xs[:5].view(5, 1) < 0, ys[:3].view(1, 3), torch.zeros(1, dtype=torch.long)))

    # bounded inputs
    for k in BITS:
        xb = torch.cat([bounded_edges(k), random_values(500, seed=k, bits=k)])
        eb = share(xb)
        check(f"ltz/bits={k}", pgkernels.ltz(eb, bits=k), xb < 0)
        check(f"relu/bits={k}", pgkernels.relu(eb, bits=k), torch.clamp(xb, min=0))
        check(f"eq/bits={k}", pgkernels.eq(eb, share(xb.roll(1)), bits=k) if k > 2 else pgkernels.eq(eb, eb, bits=k),
              (xb == xb.roll(1)) if k > 2 else torch.ones_like(xb, dtype=torch.bool))

    # shapes, including scalar and empty
    for shape in SHAPES:
        xr = random_values(max(1, torch.Size(shape).numel()), seed=7)[: torch.Size(shape).numel()].view(shape)
        e = share(xr)
        check(f"ltz/shape={shape}", pgkernels.ltz(e), xr < 0)
        check(f"relu/shape={shape}", pgkernels.relu(e), torch.clamp(xr, min=0))
        check(f"eq/shape={shape}", pgkernels.eq(e, e), torch.ones_like(xr, dtype=torch.bool))

    # mixing with CrypTen ops: results feed CrypTen arithmetic and vice versa
    xf = torch.linspace(-4, 4, 33)
    ef = crypten.cryptensor(xf)
    mixed = (pgkernels.ltz(ef) * ef + ef.square()).get_plain_text()
    out["mix/crypten-arith"] = (mixed, torch.where(xf < 0, xf, 0.0) + xf * xf)
    out["mix/relu-vs-crypten"] = ((pgkernels.relu(ef) - ef.relu()).get_plain_text().abs().max().reshape(1),
                                  torch.zeros(1))
    out["mix/ltz-vs-crypten"] = (reveal(pgkernels.ltz(ef)), reveal(ef < 0))
    out["mix/sum-of-bits"] = (pgkernels.ltz(ef).sum().get_plain_text().reshape(1), (xf < 0).sum().float().reshape(1))
    return out


@pytest.fixture(scope="module", params=[2, 3], ids=lambda n: f"{n}pc")
def results(request):
    res = pgkernels.launch(_session, world_size=request.param, timeout=600)
    # every party must hold the same revealed results
    for other in res[1:]:
        for k in res[0]:
            assert torch.equal(res[0][k][0], other[k][0]), k
    return res[0]


CASES = (["ltz/edges+random", "lt", "gt", "le", "ge", "eq", "ne", "eq/zero-vs-edges", "relu", "sign",
          "lt/public", "ge/public-tensor", "where/shared", "where/public-b", "where/public-both",
          "where/crypten-cond", "where/broadcast"]
         + [f"{op}/bits={k}" for k in BITS for op in ("ltz", "relu", "eq")]
         + [f"{op}/shape={s}" for s in SHAPES for op in ("ltz", "relu", "eq")])


@pytest.mark.parametrize("case", CASES)
def test_exact(results, case):
    got, want = results[case]
    assert got.shape == want.shape, (got.shape, want.shape)
    assert torch.equal(got, want), f"{case}: {int((got != want).sum())} mismatches"


@pytest.mark.parametrize("case", ["mix/crypten-arith", "mix/relu-vs-crypten", "mix/ltz-vs-crypten", "mix/sum-of-bits"])
def test_mixing_with_crypten(results, case):
    got, want = results[case]
    torch.testing.assert_close(got.double(), want.double(), atol=1e-3, rtol=0)
