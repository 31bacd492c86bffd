"""``ltz`` on many elements over the simulated link at several latencies:
today's comparison (the tree), the one-round FSS comparison (keys asked for
online, and keys prefetched: the online phase alone), and CrypTen's ``x < 0``
under its TFP and TTP providers.

    python -m bench.wan_ltz [--n 1e6] [--latencies 3e-4 1e-2 5e-2] [--bandwidth B]
                            [--providers TFP TTP] [--out bench/results/wan_ltz.json]

Every latency is its own set of sessions with every message -- between the
parties, to and from the dealer, CrypTen's collectives -- over the simulated
link (:mod:`pgkernels.runtime.link`) with that one-way latency (and no
bandwidth cap unless ``--bandwidth`` is given), the cost model configured to
match. Per case: one warm call checked against plaintext, then ``--reps``
timed calls (median at party 0), the metered rounds (dealer round trips
included) and bytes. Issue 17: FSS is one online round.
"""

import argparse
import sys

import pgkernels

from .bench_fss import _crypten_session, _pgk_session
from .common import apply_link, run_crypten, start_run, write_results


def _name(r):
    return r["method"] if r["impl"] == "pgkernels" else f"CrypTen x < 0 ({r['provider']})"


def table(rows, latencies=None):
    """One row per method: rounds, bytes and dealer bytes per element, and the
    median ms at each latency."""
    if latencies is None:
        latencies = sorted({r["latency_s"] for r in rows})
    out = {}
    for r in rows:
        name = _name(r)
        row = out.setdefault(name, {"method": name, "n": r["n"], "rounds": r["rounds"],
                                    "bytes/elem": round(r["bytes_sent"] / r["n"], 2),
                                    "dealer bytes/elem": round(r["dealer_bytes"] / r["n"], 1)})
        if r["method"] == "fss (keys prefetched)":
            row["dealer bytes/elem"] = "(offline)"
        row[f"ms at {r['latency_s'] * 1e3:g} ms"] = round(r["seconds"] * 1e3, 1)
    cols = [f"ms at {lat * 1e3:g} ms" for lat in latencies]
    return [{k: v for k, v in row.items()} | {c: row.get(c, "") for c in cols} for row in out.values()]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=float, default=1e6)
    ap.add_argument("--latencies", nargs="+", type=float, default=[3e-4, 1e-2, 5e-2])
    ap.add_argument("--bandwidth", type=float, default=None)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--providers", nargs="*", default=["TFP", "TTP"])
    ap.add_argument("--out", default="bench/results/wan_ltz.json")
    a = ap.parse_args(argv)
    if any(not lat > 0 for lat in a.latencies):
        raise ValueError(f"latencies must be positive seconds, got {a.latencies}")
    start_run()
    n = int(a.n)
    rows, links = [], []
    for lat in a.latencies:
        link = apply_link(lat, a.bandwidth)
        links.append(link)
        print(f"[wan_ltz] {n} elements at {lat * 1e3:g} ms: pgkernels (fss, tree)", file=sys.stderr)
        got = pgkernels.launch(_pgk_session, args=(n, a.reps), timeout=3600)[0]
        got += run_crypten(_crypten_session, (n, a.reps), a.providers)
        rows += [dict(r, latency_s=lat) for r in got]
    meta = {"parties": 2, "links": links, "note": "median ms at party 0 after one warm call checked against "
            "plaintext; every process's messages over the simulated link; rounds include online round trips to "
            "the dealer; bytes sent per compute party per element; dealer bytes received by both parties "
            "together (fss keys prefetched: asked for and received before the clock starts)"}
    text = write_results(a.out, meta, rows, table(rows, a.latencies))
    print(text)
    print(f"[wan_ltz] wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
