"""Krum on large updates over loopback: pgkernels vs Krum composed from CrypTen builtins.

    python -m bench.krum_large [--n 50] [--d 1e5] [--f 10] [--reps 3] [--providers TFP TTP]
                               [--out bench/results/krum_large.json]

Two compute parties plus a dealer, in one run: ``pgkernels.defenses.krum``
with the cost model's choice of top-k method (its scores are
:func:`pgkernels.protocols.order.topk_sum`) and with the same pruned
selection network as the baseline; the Gram matrix alone; and
:func:`bench.bench_aggregate.crypten_krum` (CrypTen's matmul, indexing, the
same network from CrypTen's ``a > b`` and select, CrypTen's argmin) and
CrypTen's ``X X^T`` under its TFP and TTP providers. Issue 17's goal: Krum at
n = 50, d = 1e5 at least 10x the CrypTen composition. Seconds are medians at
party 0 after one warm call checked against plaintext.
"""

import argparse
import sys

import pgkernels

from .bench_aggregate import _checker, _data, crypten_krum, plan_topk
from .common import measure, run_crypten, start_run, write_results


def _pgk_session(n, d, f, reps):
    import crypten

    from pgkernels import defenses as D
    from pgkernels.defenses import reference as R

    U = _data(n, d, f)
    Un = U.numpy()
    eu = crypten.cryptensor(U)
    want = R.krum(Un, f)[0]
    rows = []
    for method, op in ((None, f"krum (cost model: {plan_topk(n, f)})"), ("network", "krum (same network)")):
        rows.append(dict(op=op, impl="pgkernels", **measure(lambda: D.krum(eu, f, method=method), reps,
                                                            check=_checker(want, op, 0, 1e-4))))
    rows.append(dict(op="X X^T", impl="pgkernels", **measure(lambda: pgkernels.gram(eu), reps,
                                                             check=_checker(Un @ Un.T, "gram"))))
    return rows


def _crypten_session(n, d, f, reps):
    import crypten

    import pgkernels._C  # noqa: F401  (the sorting network's op)
    from pgkernels.defenses import reference as R

    U = _data(n, d, f)
    Un = U.numpy()
    eu = crypten.cryptensor(U)
    return [dict(op="krum", impl="crypten", **measure(lambda: crypten_krum(eu, f), reps,
                                                      check=_checker(R.krum(Un, f)[0], "CrypTen krum", 0, 1e-2))),
            dict(op="X X^T", impl="crypten", **measure(lambda: eu.matmul(eu.t()), reps,
                                                       check=_checker(Un @ Un.T, "CrypTen gram")))]


def results_table(rows):
    """pgkernels' rows against the faster CrypTen provider per op."""
    table = []
    for op in ("krum", "X X^T"):
        base = min((r for r in rows if r["impl"] == "crypten" and r["op"] == op), key=lambda r: r["seconds"])
        for r in rows:
            if r["impl"] == "pgkernels" and r["op"].startswith(op):
                table.append({"op": r["op"], "n": r["n"], "d": f"{r['d']:.0e}", "pgk s": round(r["seconds"], 3),
                              "pgk rounds": r["rounds"], "pgk MB": round(r["bytes_sent"] / 1e6, 2),
                              "CrypTen": base["provider"], "CrypTen s": round(base["seconds"], 3),
                              "CrypTen rounds": base["rounds"], "CrypTen MB": round(base["bytes_sent"] / 1e6, 2),
                              "speedup": f"{base['seconds'] / r['seconds']:.1f}x"})
    return table


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--d", type=float, default=1e5)
    ap.add_argument("--f", type=int, default=10)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--providers", nargs="+", default=["TFP", "TTP"])
    ap.add_argument("--out", default="bench/results/krum_large.json")
    a = ap.parse_args(argv)
    start_run()
    d = int(a.d)
    rows = pgkernels.launch(_pgk_session, args=(a.n, d, a.f, a.reps), timeout=3600)[0]
    rows += run_crypten(_crypten_session, (a.n, d, a.f, a.reps), a.providers)
    for r in rows:
        r.update(n=a.n, d=d)
    table = results_table(rows)
    meta = {"parties": 2, "f": a.f, "baseline_providers": a.providers,
            "note": "loopback; seconds: median at party 0 of the timed calls after one warm call checked against "
                    "plaintext; rounds include online round trips to the dealer; MB sent per compute party; "
                    "CrypTen: the faster provider per op"}
    print(write_results(a.out, meta, rows, table))
    print(f"[krum_large] wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
