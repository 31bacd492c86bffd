"""pgkernels comparison kernels vs CrypTen's builtins, measured in one run.

    python -m bench.bench_compare [--sizes 1e3 1e4 1e5 1e6] [--out bench/results/compare.json]

Two compute parties plus a dealer on this host. For each size n:

* pgkernels ``ltz``, ``relu``, ``where`` with the pgkernels dealer;
* CrypTen ``x < 0``, ``x.relu()`` and its select at its best, one
  multiplication ``y + c * (x - y)`` (CrypTen's own ``x.where(c, y)`` takes
  two), under CrypTen's TFP provider (no dealer traffic, but party 0 sees
  every triple -- insecure) and under CrypTen's own TTP dealer, and the same
  CrypTen ops drawing triples from the pgkernels dealer.

Every case: one warm call checked against plaintext, then at least 3 timed
calls; the median at party 0 is reported. Speedups are against CrypTen's
faster provider for that op and size in the same run, min(TFP, TTP).
Reported per case: rounds (including the online round trips to the dealer),
bytes sent per compute party per element, and bytes per element the dealer
sent to the parties (all together).
"""

import argparse
import sys

import pgkernels

from .common import add_link_args, apply_link, close, measure, start_run, write_results
from .tables import compare_table

def _reps(n):
    return 5 if n <= 10_000 else 3


def _data(n):
    import torch

    g = torch.Generator().manual_seed(n)
    # on CrypTen's 16-bit fixed-point grid, so that plaintext is exact
    x = torch.round(torch.randn(n, generator=g, dtype=torch.float64) * 10 * 2**16) / 2**16
    y = torch.round(torch.randn(n, generator=g, dtype=torch.float64) * 10 * 2**16) / 2**16
    return x, y


def _checks(xp, yp):
    import torch

    def opened(r):
        return pgkernels.decode(r) if hasattr(r, "share") else r.get_plain_text()

    lt = (xp < 0).double()
    return {"ltz": lambda r: close(opened(r), lt, 0, "ltz"),
            "relu": lambda r: close(opened(r), xp.clamp(min=0), 1e-3, "relu"),
            "where": lambda r: close(opened(r), torch.where(xp < 0, xp, yp), 1e-3, "where")}


def _pgk_session(sizes):
    import crypten

    rows = []
    for n in sizes:
        xp, yp = _data(n)
        x, y = crypten.cryptensor(xp), crypten.cryptensor(yp)
        c = pgkernels.ltz(x)
        checks = _checks(xp, yp)
        cases = {"ltz": lambda: pgkernels.ltz(x), "relu": lambda: pgkernels.relu(x),
                 "where": lambda: pgkernels.where(c, x, y)}
        for op, fn in cases.items():
            rows.append(dict(impl="pgkernels", provider="pgk-dealer", op=op, n=n,
                             **measure(fn, _reps(n), check=checks[op])))
        # CrypTen's ops with the pgkernels dealer as their provider
        rows += _crypten_rows(x, y, xp, yp, n, "pgk-dealer")
    return rows


def _crypten_rows(x, y, xp, yp, n, provider):
    c = x < 0
    checks = _checks(xp, yp)
    cases = {"ltz": lambda: x < 0, "relu": lambda: x.relu(), "where": lambda: y + c * (x - y)}
    return [dict(impl="crypten", provider=provider, op=op, n=n, **measure(fn, _reps(n), check=checks[op]))
            for op, fn in cases.items()]


def _crypten_session(sizes, provider):
    import crypten

    rows = []
    for n in sizes:
        xp, yp = _data(n)
        rows += _crypten_rows(crypten.cryptensor(xp), crypten.cryptensor(yp), xp, yp, n, provider)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", type=float, default=[1e3, 1e4, 1e5, 1e6])
    ap.add_argument("--out", default="bench/results/compare.json")
    add_link_args(ap)
    a = ap.parse_args(argv)
    link = apply_link(a.latency, a.bandwidth)
    start_run()
    sizes = [int(s) for s in a.sizes]
    timeout = 3600
    print(f"[bench] pgkernels + CrypTen with the pgkernels dealer, n = {sizes}", file=sys.stderr)
    rows = pgkernels.launch(_pgk_session, args=(sizes,), timeout=timeout)[0]
    print("[bench] CrypTen with its TFP provider (insecure baseline)", file=sys.stderr)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows += pgkernels.launch(_crypten_session, args=(sizes, "TFP"), dealer="tfp", insecure=True,
                                 timeout=timeout)[0]
    print("[bench] CrypTen with its TTP provider", file=sys.stderr)
    rows += pgkernels.launch(_crypten_session, args=(sizes, "TTP"), dealer="crypten-ttp", timeout=timeout)[0]

    for r in rows:
        r["bytes_per_elem"] = round(r["bytes_sent"] / r["n"], 2)
        r["dealer_bytes_per_elem"] = round(r["dealer_bytes"] / r["n"], 2)
        r["ms"] = round(r["seconds"] * 1e3, 2)
    table = compare_table(rows)
    meta = {"parties": 2, "note": "seconds: median at party 0 of the timed calls after one warm call checked "
            "against plaintext; rounds include online round trips to the dealer; bytes: sent per compute party; "
            "dealer bytes: received from the dealer by all parties together; speedup: against min(TFP, TTP)"}
    if link:
        meta.update(link)
    print(write_results(a.out, meta, rows, table))
    print(f"[bench] wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
