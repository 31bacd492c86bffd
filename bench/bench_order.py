"""Order statistics: pgkernels vs the same algorithms composed from CrypTen builtins.

    python -m bench.bench_order [--ns 5 10 20 50] [--ds 1e3 1e5] [--argmax-d 1e4]

Two compute parties plus dealer, in one run:

* coordinate-wise median of an n x d tensor along dim 0: pgkernels (the cost
  model's method, and each method) vs the same pruned Batcher selection
  network composed from CrypTen builtins (``a > b`` and the one-multiplication
  select ``a + b * (c - a)``, each layer on whole share matrices), run under
  CrypTen's TFP and TTP providers;
* argmax along dim 0 of an n x d tensor: pgkernels vs CrypTen's ``argmax``
  with ``max_method`` "log_reduction" and "pairwise";
* plaintext torch on the same data, for the MPC / plaintext ratio.

CrypTen's baselines run under its TFP and TTP providers; each row compares
with the fastest (provider, method) in the same run.

Every case: one warm call checked against plaintext, then at least 3 timed
calls. Each row: median seconds at party 0, rounds (with the online dealer
round trip), bytes sent per compute party.
"""

import argparse
import sys
import time

import pgkernels

from .common import add_link_args, apply_link, close, measure, run_crypten, start_run, write_results
from .tables import order_table


def _data(n, d, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.round(torch.randn(n, d, generator=g, dtype=torch.float64) * 2**16) / 2**16


def _plain_seconds(fn, reps=5):
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def _reps(n, d):
    return 5 if n * d <= 1e5 else 3


def _pgk_session(ns, ds, argmax_d):
    import crypten
    import torch

    from pgkernels.protocols.order import plan

    rows = []
    for n in ns:
        for d in ds:
            x = _data(n, d)
            ex = crypten.cryptensor(x)
            want = torch.median(x, dim=0).values
            plain = _plain_seconds(lambda: torch.median(x, dim=0))
            chosen = plan("median", n, d).method
            for method in (None, "network", "rank"):
                if method == "rank" and n * (n - 1) // 2 * d > 3e7:
                    continue  # beyond the batch size the cost model allows
                m = measure(lambda: pgkernels.median(ex, dim=0, lower=True, method=method), _reps(n, d),
                            check=lambda r: close(pgkernels.decode(r), want, 0, f"median n={n} d={d} {method}"))
                rows.append(dict(op="median", impl="pgkernels", method=method or f"auto:{chosen}",
                                 n=n, d=d, plain_s=plain, **m))
    for n in ns:
        d = argmax_d
        x = _data(n, d, seed=1)
        ex = crypten.cryptensor(x)
        plain = _plain_seconds(lambda: torch.argmax(x, dim=0))
        want = torch.nn.functional.one_hot(torch.argmax(x, dim=0), n).t()
        m = measure(lambda: pgkernels.argmax(ex, dim=0), _reps(n, d),
                    check=lambda r: close(pgkernels.decode(r), want, 0, f"argmax n={n}"))
        rows.append(dict(op="argmax", impl="pgkernels", method=f"auto:{plan('argmax', n, d).method}",
                         n=n, d=d, plain_s=plain, **m))
    return rows


def crypten_network(X, rows):
    """The pruned Batcher network ``rows`` with CrypTen's comparison and its
    one-multiplication select, run on the (wires, d) MPCTensor X: each layer is
    one batched ``a > b``, one multiplication and one gather of whole share
    matrices (no per-wire indexing). Returns the permuted X."""
    import crypten
    import torch

    n = X.size(0)
    for layer in range(int(rows[:, 0].max()) + 1 if rows.numel() else 0):
        sel = rows[rows[:, 0] == layer]
        i, j = sel[:, 1], sel[:, 2]
        A, B = X[i], X[j]
        b = A > B
        lo = A + b * (B - A)  # min(A, B)
        hi = A + B - lo
        # wire i <- lo, wire j <- hi, the others stay: one gather from [X; lo; hi]
        src = torch.arange(n)
        src[i] = n + torch.arange(len(i))
        src[j] = n + len(i) + torch.arange(len(i))
        X = crypten.cat([X, lo, hi])[src]
    return X


def _crypten_session(ns, ds, argmax_d, skip_big):
    import crypten
    import torch

    import pgkernels._C  # noqa: F401

    rows = []
    for n in ns:
        for d in ds:
            if skip_big and n >= 20 and d >= 1e5:
                continue
            x = _data(n, d)
            ex = crypten.cryptensor(x)
            pos = (n - 1) // 2
            net = torch.ops.pgkernels.sorting_network(n, [pos])
            want = torch.median(x, dim=0).values
            m = measure(lambda: crypten_network(ex, net)[pos], _reps(n, d),
                        check=lambda r: close(r.get_plain_text(), want, 1e-3, f"CrypTen median n={n} d={d}"))
            rows.append(dict(op="median", impl="crypten", method="network", n=n, d=d, **m))
    for n in ns:
        d = argmax_d
        x = _data(n, d, seed=1)
        ex = crypten.cryptensor(x)
        want = torch.nn.functional.one_hot(torch.argmax(x, dim=0), n).t()
        for method in ("log_reduction", "pairwise"):
            with crypten.cfg.temp_override({"functions.max_method": method}):
                m = measure(lambda: ex.argmax(dim=0), _reps(n, d),
                            check=lambda r: close(r.get_plain_text(), want, 0, f"CrypTen argmax {method}"))
            rows.append(dict(op="argmax", impl="crypten", method=method, n=n, d=d, **m))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ns", nargs="+", type=int, default=[5, 10, 20, 50])
    ap.add_argument("--ds", nargs="+", type=float, default=[1e3, 1e5])
    ap.add_argument("--argmax-d", type=float, default=1e4)
    ap.add_argument("--skip-big-crypten", action="store_true",
                    help="skip CrypTen's median network for n >= 20 at d >= 1e5 (minutes each)")
    ap.add_argument("--providers", nargs="+", default=["TFP", "TTP"],
                    help="CrypTen providers to run the baselines under (the table takes the fastest)")
    ap.add_argument("--out", default="bench/results/order.json")
    add_link_args(ap)
    a = ap.parse_args(argv)
    link = apply_link(a.latency, a.bandwidth)
    start_run()
    ds = [int(d) for d in a.ds]
    ad = int(a.argmax_d)
    print("[bench] pgkernels (pgkernels dealer)", file=sys.stderr)
    rows = pgkernels.launch(_pgk_session, args=(a.ns, ds, ad), timeout=3600)[0]
    for r in rows:
        r["provider"] = "pgk-dealer"
    rows += run_crypten(_crypten_session, (a.ns, ds, ad, a.skip_big_crypten), a.providers)
    for r in rows:
        r["ms"] = round(r["seconds"] * 1e3, 1)
        r["MB_sent"] = round(r["bytes_sent"] / 1e6, 2)
    table = order_table(rows)
    meta = {"parties": 2, "baseline_providers": a.providers,
            "note": "seconds: median at party 0 of the timed calls after one warm call checked against "
                    "plaintext; rounds include the online round trips to the dealer; MB: sent per compute party"}
    if link:
        meta.update(link)
    print(write_results(a.out, meta, rows, table))
    print(f"[bench] wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
