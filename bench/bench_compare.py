"""pgkernels comparison kernels vs CrypTen's builtins, measured in one run.

    python -m bench.bench_compare [--sizes 1e3 1e4 1e5 1e6] [--out bench/results/compare.json]

Two compute parties plus a dealer on this host. For each size n:

* pgkernels ``ltz``, ``relu``, ``where`` with the pgkernels dealer (``ttp``);
* CrypTen ``x < 0``, ``x.relu()`` and its multiplexing ``c * a + (1 - c) * b``
  (``a.where(c, b)``) under CrypTen's TFP provider (its fastest: no dealer
  traffic, but party 0 sees every triple -- insecure) and under CrypTen's own
  TTP dealer, and the same CrypTen ops drawing triples from the pgkernels dealer.

Reported per case: median seconds at party 0, rounds, bytes sent per compute
party per element, and bytes per element the dealer sent to a party (party 0).
"""

import argparse
import sys

import pgkernels

from .common import measure, write_results

OPS = ("ltz", "relu", "where")


def _reps(n):
    return 5 if n <= 10_000 else (3 if n <= 100_000 else 2)


def _pgk_session(sizes):
    import crypten
    import torch

    rows = []
    for n in sizes:
        x = crypten.cryptensor(torch.randn(n) * 10)
        y = crypten.cryptensor(torch.randn(n) * 10)
        c = pgkernels.ltz(x)
        cases = {"ltz": lambda: pgkernels.ltz(x), "relu": lambda: pgkernels.relu(x),
                 "where": lambda: pgkernels.where(c, x, y)}
        for op, fn in cases.items():
            rows.append(dict(impl="pgkernels", provider="pgk-dealer", op=op, n=n, **measure(fn, _reps(n))))
        # sanity: results agree with CrypTen before anything is reported
        assert bool((pgkernels.ltz(x).get_plain_text() == (x < 0).get_plain_text()).all())
        # CrypTen's ops with the pgkernels dealer as their provider
        rows += _crypten_rows(x, y, n, "pgk-dealer")
    return rows


def _crypten_rows(x, y, n, provider):
    c = x < 0
    cases = {"ltz": lambda: x < 0, "relu": lambda: x.relu(), "where": lambda: x.where(c, y)}
    return [dict(impl="crypten", provider=provider, op=op, n=n, **measure(fn, _reps(n)))
            for op, fn in cases.items()]


def _crypten_session(sizes, provider):
    import crypten
    import torch

    rows = []
    for n in sizes:
        x = crypten.cryptensor(torch.randn(n) * 10)
        y = crypten.cryptensor(torch.randn(n) * 10)
        rows += _crypten_rows(x, y, n, provider)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", type=float, default=[1e3, 1e4, 1e5, 1e6])
    ap.add_argument("--out", default="bench/results/compare.json")
    a = ap.parse_args(argv)
    sizes = [int(s) for s in a.sizes]
    timeout = 1800
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
    table = []
    for n in sizes:
        for op in OPS:
            def pick(impl, prov):
                return next(r for r in rows if r["impl"] == impl and r["provider"] == prov
                            and r["op"] == op and r["n"] == n)
            pg, tfp, ttp = pick("pgkernels", "pgk-dealer"), pick("crypten", "TFP"), pick("crypten", "TTP")
            table.append({
                "op": op, "n": f"{n:.0e}",
                "pgk ms": pg["ms"], "CrypTen TFP ms": tfp["ms"], "CrypTen TTP ms": ttp["ms"],
                "speedup vs TFP": f"{tfp['seconds'] / pg['seconds']:.1f}x",
                "rounds pgk/CrypTen": f"{pg['rounds']}/{tfp['rounds']}",
                "B/elem pgk": pg["bytes_per_elem"], "B/elem CrypTen": tfp["bytes_per_elem"],
                "bytes ratio": f"{tfp['bytes_per_elem'] / pg['bytes_per_elem']:.1f}x",
                "dealer B/elem pgk": pg["dealer_bytes_per_elem"],
                "dealer B/elem CrypTen TTP": ttp["dealer_bytes_per_elem"],
            })
    meta = {"parties": 2, "note": "seconds: median at party 0; bytes: sent per compute party; "
            "dealer bytes: received from the dealer by all parties together"}
    print(write_results(a.out, meta, rows, table))
    print(f"[bench] wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
