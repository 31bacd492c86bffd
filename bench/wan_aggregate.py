"""Robust aggregation over a simulated WAN link: Krum, the median and the trimmed mean.

    python -m bench.wan_aggregate [--n 100] [--d 1e3] [--latency 0.05] [--bandwidth 1.25e8]
                                  [--methods auto] [--out bench/results/wan_aggregate.json]

Two compute parties and the pgkernels dealer, every message over the
simulated link (:mod:`pgkernels.runtime.link`), the cost model configured to
the same latency and bandwidth. For each rule and each order-statistics
method asked for (``auto``: the cost model's pick at this latency;
``network``/``rank``: forced), one warm call checked against plaintext, then
``--reps`` timed calls (median and fastest at party 0), with the metered
rounds (dealer round trips included) and bytes. The goal at 50 ms and
1 Gbit/s (issue 17): at most 2.4 s per aggregation at n = 100, d = 1e3
(EIFFeL's figure).
"""

import argparse
import sys

import pgkernels

from .common import add_link_args, apply_link, close, measure, start_run, write_results


def _data(n, d, f, seed=1):
    import torch

    g = torch.Generator().manual_seed(seed)
    U = torch.randn(n, d, generator=g, dtype=torch.float64) * 0.1
    U[n - f:] += 1.0  # f poisoned updates, far from the honest ones
    return torch.round(U * 2**16) / 2**16


def _session(n, d, f, methods, reps):
    import crypten

    from pgkernels.defenses import reference as R
    from pgkernels.defenses import robust as D
    from pgkernels.protocols import order

    U = _data(n, d, f)
    Un = U.numpy()
    eu = crypten.cryptensor(U)
    rules = {
        "median": (lambda m: D.median(eu, method=m), R.median(Un), 1e-4,
                   lambda: order.plan("median", n, d).method),
        "trimmed_mean": (lambda m: D.trimmed_mean(eu, 0.2, method=m), R.trimmed_mean(Un, 0.2), 1e-3,
                         lambda: order.plan("trimmed_mean", n, d).method),
        "krum": (lambda m: D.krum(eu, f, method=m), R.krum(Un, f)[0], 1e-3,
                 lambda: order.plan("topk", n - 1, n, k=n - f - 2).method),
    }
    rows = []
    for rule, (fn, want, tol, auto) in rules.items():
        for m in methods:
            method = None if m == "auto" else m
            print(f"[wan_aggregate] {rule} {m}", file=sys.stderr, flush=True)

            def check(r, want=want, tol=tol, rule=rule):
                close(r.get_plain_text(), want, tol, rule)

            row = measure(lambda: fn(method), reps, check=check)
            rows.append(dict(rule=rule, method=m, used=auto() if m == "auto" else m, n=n, d=d, f=f,
                             best_seconds=min(row["times"]), **row))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--d", type=float, default=1e3)
    ap.add_argument("--f", type=int, default=None, help="Krum's f (default (n - 3) // 4)")
    ap.add_argument("--methods", nargs="+", default=["auto"], choices=["auto", "network", "rank"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default="bench/results/wan_aggregate.json")
    add_link_args(ap)
    a = ap.parse_args(argv)
    link = apply_link(a.latency, a.bandwidth)
    start_run()
    d = int(a.d)
    f = (a.n - 3) // 4 if a.f is None else a.f
    rows = pgkernels.launch(_session, args=(a.n, d, f, a.methods, a.reps), timeout=7200)[0]
    table = [{"rule": r["rule"], "method": r["method"], "used": r["used"], "n": r["n"], "d": r["d"],
              "rounds": r["rounds"], "dealer rounds": r["dealer_rounds"],
              "MB sent": round(r["bytes_sent"] / 1e6, 2), "median s": round(r["seconds"], 3),
              "fastest s": round(r["best_seconds"], 3)} for r in rows]
    meta = {"parties": 2, "f": f, "note": "simulated link (pgkernels.runtime.link) between all processes, the "
            "dealer's too; seconds at party 0 after a warm call checked against plaintext; rounds include the "
            "online round trips to the dealer; MB: sent per compute party"}
    if link:
        meta.update(link)
    print(write_results(a.out, meta, rows, table))
    print(f"[wan_aggregate] wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
