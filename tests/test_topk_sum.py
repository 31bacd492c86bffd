"""topk_sum (the sum of the k largest/smallest values; Krum's scores) against
torch.topk, both methods, 2 and 3 parties, on random, tied, equal and extreme
inputs, odd sizes, k = 0, 1 and n, several dims."""

import pytest
import torch

import pgkernels

from _cases import order_inputs, reveal, share

NS = [1, 2, 5, 9, 17]


_inputs = order_inputs


def _session():
    out = {}
    for n in NS:
        for kind in ("random", "ties", "equal", "extremes"):
            x = _inputs(n, 3, kind, n * 11 + len(kind))
            ex = share(x)
            for k in sorted({0, 1, (n + 1) // 2, n}):
                for m in ("network", "rank"):
                    for largest in (True, False):
                        got = reveal(pgkernels.topk_sum(ex, k, dim=0, largest=largest, method=m))
                        want = torch.topk(x, k, dim=0, largest=largest).values.sum(0)
                        out[f"n={n}/{kind}/k={k}/{m}/{largest}"] = (got, want)
    x3 = _inputs(24, 1, "ties", 3).view(2, 3, 4)
    e3 = share(x3)
    for dim in (0, 1, -1):
        got = reveal(pgkernels.topk_sum(e3, 2, dim=dim, largest=False, keepdim=True))
        out[f"3d/dim={dim}"] = (got, torch.topk(x3, 2, dim=dim, largest=False).values.sum(dim, keepdim=True))
    out["auto"] = (reveal(pgkernels.topk_sum(share(x3.view(4, 6)), 3, dim=1)),
                   torch.topk(x3.view(4, 6), 3, dim=1).values.sum(1))
    errs = {}
    for name, fn in {"k-too-big": lambda: pgkernels.topk_sum(e3, 5, dim=0),
                     "k-negative": lambda: pgkernels.topk_sum(e3, -1, dim=0),
                     "k-float": lambda: pgkernels.topk_sum(e3, 1.0, dim=0),
                     "method": lambda: pgkernels.topk_sum(e3, 1, dim=0, method="tournament")}.items():
        try:
            fn()
            errs[name] = "no error"
        except (ValueError, TypeError) as e:
            errs[name] = f"{type(e).__name__}: {e}"
    return out, errs


@pytest.mark.parametrize("ws", [2, 3])
def test_topk_sum_matches_torch(ws):
    out, errs = pgkernels.launch(_session, world_size=ws, timeout=400)[0]
    bad = [k for k, (got, want) in out.items() if not torch.equal(got.long(), want.long())]
    assert not bad, bad[:5]
    assert errs["k-too-big"].startswith("ValueError") and "k=5" in errs["k-too-big"]
    assert errs["k-negative"].startswith("ValueError")
    assert errs["k-float"].startswith("TypeError") and "k must be an int" in errs["k-float"]
    assert errs["method"].startswith("ValueError") and "method must be one of" in errs["method"]


def test_plan_counts_fewer_selection_tests_than_topk():
    from pgkernels.protocols import order

    r = order.plan("topk_sum", 99, 100, method="rank", k=73)
    t = order.plan("topk", 99, 100, method="rank", k=73)
    assert r.compares_per_column < t.compares_per_column and r.bytes_per_column < t.bytes_per_column
