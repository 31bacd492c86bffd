"""Order statistics against torch/numpy/scipy references, with 2 and 3 parties.

Inputs are raw ring integers (fixed-point encoded), so sorts, selections and
argmax are checked exactly; even medians and trimmed means divide with CrypTen's
truncation and are checked to within 4 units of the last fractional bit (with 3
parties CrypTen truncates through its wraps protocol, about one unit per party).
"""

import numpy as np
import pytest
import torch

import pgkernels

from _cases import order_inputs, reveal, share

NS = [1, 2, 3, 4, 5, 7, 8, 9, 10, 16, 17, 31, 33, 64, 65]
# 3 parties: every code path that differs with the party count (sums of three
# shares, CrypTen's 3-party truncation) on a subset of the sizes, odd and even,
# around powers of two -- the full grid with 2 parties
NS_3PC = [1, 2, 3, 8, 9, 17, 64]


_inputs = order_inputs


def _session(ns=NS):
    out = {}

    def put(name, got, want, tol=0):
        out[name] = (got, want, tol)

    kinds = ("random", "ties", "equal", "extremes")
    d = 3
    for n in ns:
        # The ops work column by column along dim 0, so the four kinds travel as
        # column blocks of one tensor (a quarter of the rounds); each block is
        # checked on its own against the reference on that kind alone.
        xs = {kind: _inputs(n, d, kind, seed=n * 7 + len(kind)) for kind in kinds}
        cols = {kind: slice(d * i, d * (i + 1)) for i, kind in enumerate(kinds)}
        ex = share(torch.cat([xs[kind] for kind in kinds], 1))
        # the even median halves a sum and trimmed means add values: CrypTen's
        # truncation needs values far from the ring's edge, so those run on the
        # blocks without extremes only (the extremes block checks the odd median)
        ex_mild = ex[:, : d * 3]

        def put_each(name, got, want, tol=0, only=kinds):
            for kind in only:
                put(f"{name}/n={n}/{kind}", got[..., cols[kind]], want(xs[kind]), tol)

        for m in ("network", "rank"):
            v, i = pgkernels.sort(ex, dim=0, method=m)
            v, i = reveal(v), reveal(i)
            put_each(f"sort-values/{m}", v, lambda x: torch.sort(x, dim=0, stable=True).values)
            for kind in kinds:
                x, ik = xs[kind], i[:, cols[kind]]
                tag = f"n={n}/{kind}"
                put(f"sort-gather/{m}/{tag}", torch.gather(x, 0, ik), torch.sort(x, dim=0, stable=True).values)
                put(f"sort-perm/{m}/{tag}", torch.sort(ik, dim=0).values, torch.arange(n).view(n, 1).expand(n, d))
                if m == "rank":
                    put(f"sort-stable-idx/{m}/{tag}", ik, torch.sort(x, dim=0, stable=True).indices)
            dv, _ = pgkernels.sort(ex, dim=0, descending=True, method=m)
            put_each(f"sort-desc/{m}", reveal(dv), lambda x: torch.sort(x, dim=0, descending=True).values)
            k = min(3, n)
            tv, ti = pgkernels.topk(ex, k, dim=0, method=m)
            tv, ti = reveal(tv), reveal(ti)
            put_each(f"topk/{m}", tv, lambda x: torch.topk(x, k, dim=0).values)
            for kind in kinds:
                put(f"topk-gather/{m}/n={n}/{kind}", torch.gather(xs[kind], 0, ti[:, cols[kind]]), tv[:, cols[kind]])
            sv_small, _ = pgkernels.topk(ex, k, dim=0, largest=False, method=m)
            put_each(f"topk-smallest/{m}", reveal(sv_small), lambda x: torch.topk(x, k, dim=0, largest=False).values)
            kk = (n + 1) // 2
            kv, ki = pgkernels.kthvalue(ex, kk, dim=0, method=m)
            kv, ki = reveal(kv), reveal(ki)
            put_each(f"kthvalue/{m}", kv, lambda x: torch.kthvalue(x, kk, dim=0).values)
            for kind in kinds:
                put(f"kthvalue-gather/{m}/n={n}/{kind}", xs[kind].gather(0, ki[cols[kind]].view(1, d)).view(d),
                    kv[cols[kind]])
            put_each(f"median-lower/{m}", reveal(pgkernels.median(ex, dim=0, lower=True, method=m)),
                     lambda x: torch.median(x, dim=0).values)
            if n % 2:
                put_each(f"median/{m}", reveal(pgkernels.median(ex, dim=0, method=m)).double(),
                         lambda x: torch.sort(x, 0).values[n // 2].double(), 4)
            else:
                put_each(f"median/{m}", reveal(pgkernels.median(ex_mild, dim=0, method=m)).double(),
                         lambda x: torch.tensor(np.median(x.double().numpy(), axis=0)), 4, only=kinds[:3])
            for p in (0.0, 0.1, 0.25, 0.4):
                c = int(p * n)
                if 2 * c >= n:
                    continue
                # the sum of extremes overflows the ring, as in any fixed-point mean
                got = reveal(pgkernels.trimmed_mean(ex_mild, dim=0, proportiontocut=p, method=m)).double()
                put_each(f"trimmed-mean-{p}/{m}", got,
                         lambda x: torch.sort(x, 0).values[c:n - c].double().sum(0) / (n - 2 * c), 4, only=kinds[:3])
        for m in ("tournament", "pairwise"):
            put_each(f"max/{m}", reveal(pgkernels.max(ex, dim=0, method=m)), lambda x: x.max(0).values)
            put_each(f"min/{m}", reveal(pgkernels.min(ex, dim=0, method=m)), lambda x: x.min(0).values)

            def first(x, v):
                return torch.stack([(x[:, j] == v[j]).nonzero()[0, 0] for j in range(d)])

            put_each(f"argmax-onehot/{m}", reveal(pgkernels.argmax(ex, dim=0, method=m)),
                     lambda x: torch.nn.functional.one_hot(first(x, x.max(0).values), n).T)
            put_each(f"argmin-index/{m}", reveal(pgkernels.argmin(ex, dim=0, one_hot=False, method=m)),
                     lambda x: first(x, x.min(0).values))

    # several dims, dim=None, keepdim, default method choice
    x3 = _inputs(4 * 5 * 6, 1, "ties", 3).view(4, 5, 6)
    e3 = share(x3)
    for dim in (0, 1, 2, -1):
        put(f"3d/sort/dim={dim}", reveal(pgkernels.sort(e3, dim=dim)[0]), torch.sort(x3, dim=dim).values)
        put(f"3d/median-lower/dim={dim}", reveal(pgkernels.median(e3, dim=dim, lower=True)),
            torch.median(x3, dim=dim).values)
        put(f"3d/max-keepdim/dim={dim}", reveal(pgkernels.max(e3, dim=dim, keepdim=True)),
            x3.max(dim=dim, keepdim=True).values)
    put("3d/max-all", reveal(pgkernels.max(e3)).view(1), x3.max().view(1))
    put("3d/argmax-all", reveal(pgkernels.argmax(e3, one_hot=False)).view(1), torch.tensor([int(x3.flatten().argmax())]))
    put("3d/argmax-all-onehot", reveal(pgkernels.argmax(e3)),
        torch.nn.functional.one_hot(x3.flatten().argmax(), x3.numel()).view(4, 5, 6))
    put("scalar/sort", reveal(pgkernels.sort(share(torch.tensor(5)), dim=0)[0]).view(1), torch.tensor([5]))

    # large batch: coordinate-wise median of 10 clients x 1e5 parameters, and argmax of 50 x 2000
    xb = _inputs(10, 100_000, "random", 11)
    put("big/median-10x1e5", reveal(pgkernels.median(share(xb), dim=0, lower=True)), torch.median(xb, dim=0).values)
    xa = _inputs(50, 2000, "ties", 12)
    first = torch.stack([(xa[:, j] == xa[:, j].max()).nonzero()[0, 0] for j in range(2000)])
    put("big/argmax-50x2000", reveal(pgkernels.argmax(share(xa), dim=0, one_hot=False)), first)

    # errors
    ex = share(_inputs(5, 2, "random", 1))
    errs = {
        "k-too-big": lambda: pgkernels.topk(ex, 6, dim=0),
        "kth-zero": lambda: pgkernels.kthvalue(ex, 0, dim=0),
        "empty-median": lambda: pgkernels.median(share(torch.zeros(0, 3, dtype=torch.long)), dim=0),
        "cut-too-much": lambda: pgkernels.trimmed_mean(ex, dim=0, proportiontocut=0.5),
        "bad-method": lambda: pgkernels.median(ex, dim=0, method="bubble"),
        "bad-dim": lambda: pgkernels.sort(ex, dim=2),
        "not-mpc": lambda: pgkernels.sort(torch.ones(3)),
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


def test_all_cases(results):
    bad = []
    count = 0
    for name, val in results.items():
        if name.startswith("error/"):
            continue
        got, want, tol = val
        count += 1
        if got.shape != want.shape:
            bad.append(f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}")
            continue
        diff = (got.double() - want.double()).abs().max().item() if got.numel() else 0.0
        if diff > tol:
            bad.append(f"{name}: max diff {diff}")
    assert count > 1000
    assert not bad, "\n".join(bad[:40])


@pytest.mark.parametrize("case,expected", [
    ("k-too-big", "ValueError: k=6 out of range [0, 5]"),
    ("kth-zero", "ValueError: k=0 out of range [1, 5]"),
    ("empty-median", "ValueError: median of an empty dimension"),
    ("cut-too-much", "ValueError: proportiontocut must be in [0, 0.5)"),
    ("bad-method", "ValueError: method must be one of"),
    ("bad-dim", "IndexError: dim 2 out of range"),
    ("not-mpc", "TypeError: x must be a crypten MPCTensor"),
])
def test_errors(results, case, expected):
    assert results[f"error/{case}"].startswith(expected), results[f"error/{case}"]
