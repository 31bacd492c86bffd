"""The benchmarks' tables, built from their result rows (pure Python, no torch).

The benchmark scripts call these to print and save their tables, and
``python -m bench.readme_tables`` calls them on the committed JSON files, so
the README's tables are always what the rows say.
"""

AGG_CHECKS = ("krum (same reps)", "validity check (carry)", "validity check (2 comparisons)",
              "krum, checked (as the servers run it)")


def _sorted_unique(values):
    return sorted(set(values))


def fmt_table(rows, cols=None):
    """A Markdown table of dicts (columns: ``cols``, or every key in order of appearance)."""
    if cols is None:
        cols = []
        for r in rows:
            cols += [c for c in r if c not in cols]
    widths = [max(len(str(c)), *(len(str(r.get(c, ""))) for r in rows)) for c in cols]
    line = lambda vals: "| " + " | ".join(str(v).ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    out = [line(cols), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line([r.get(c, "") for c in cols]) for r in rows]
    return "\n".join(out)


def _ms(r, digits):
    return round(r["seconds"] * 1e3, digits)


def _mb(r):
    return round(r["bytes_sent"] / 1e6, 2)


def compare_table(rows):
    """bench_compare: per size and op, pgkernels against CrypTen's faster
    provider (min of TFP and TTP) in the same run."""
    table = []
    for n in _sorted_unique(r["n"] for r in rows):
        for op in ("ltz", "relu", "where"):
            def pick(impl, prov):
                return next(r for r in rows if r["impl"] == impl and r["provider"] == prov
                            and r["op"] == op and r["n"] == n)
            pg, tfp, ttp = pick("pgkernels", "pgk-dealer"), pick("crypten", "TFP"), pick("crypten", "TTP")
            best = min((tfp, ttp), key=lambda r: r["seconds"])
            per_elem = lambda r, key: round(r[key] / r["n"], 2)  # noqa: E731
            table.append({
                "op": op, "n": f"{n:.0e}",
                "pgk ms": _ms(pg, 2), "CrypTen TFP ms": _ms(tfp, 2), "CrypTen TTP ms": _ms(ttp, 2),
                "fastest CrypTen": best["provider"],
                "speedup vs fastest": f"{best['seconds'] / pg['seconds']:.1f}x",
                "rounds pgk/TFP/TTP": f"{pg['rounds']}/{tfp['rounds']}/{ttp['rounds']}",
                "B/elem pgk": per_elem(pg, "bytes_sent"), "B/elem CrypTen": per_elem(tfp, "bytes_sent"),
                "bytes ratio": f"{per_elem(tfp, 'bytes_sent') / per_elem(pg, 'bytes_sent'):.1f}x",
                "dealer B/elem pgk": per_elem(pg, "dealer_bytes"),
                "dealer B/elem CrypTen TTP": per_elem(ttp, "dealer_bytes"),
            })
    return table


def order_table(rows):
    """bench_order: the cost model's method (and each method) against the
    fastest CrypTen (provider, method) for that case in the same run."""
    table = []
    for op in ("median", "argmax"):
        sel_op = [r for r in rows if r["op"] == op]
        for n in _sorted_unique(r["n"] for r in sel_op):
            for d in _sorted_unique(r["d"] for r in sel_op):
                sel = [r for r in sel_op if r["n"] == n and r["d"] == d]
                ours = [r for r in sel if r["impl"] == "pgkernels"]
                if not ours:
                    continue
                base = [r for r in sel if r["impl"] == "crypten"]
                auto = next(r for r in ours if r["method"].startswith("auto"))
                row = {"op": op, "n": n, "d": f"{d:.0e}", "pgk method": auto["method"][5:],
                       "pgk ms": _ms(auto, 1), "pgk rounds": auto["rounds"], "pgk MB": _mb(auto)}
                for r in ours:
                    if not r["method"].startswith("auto"):
                        row[f"{r['method']} ms"] = _ms(r, 1)
                if base:
                    best = min(base, key=lambda r: r["seconds"])
                    row.update({"CrypTen method": f"{best['method']} ({best['provider']})",
                                "CrypTen ms": _ms(best, 1), "CrypTen rounds": best["rounds"],
                                "CrypTen MB": _mb(best), "speedup": f"{best['seconds'] / auto['seconds']:.1f}x"})
                row["MPC/plain"] = f"{auto['seconds'] / auto['plain_s']:.0f}x"
                table.append(row)
    cols = []
    for r in table:
        cols += [c for c in r if c not in cols]
    return [{c: r.get(c, "") for c in cols} for r in table]


def aggregate_tables(rows):
    """bench_aggregate: (the comparison table, the validity-overhead table)."""
    big = next(r for r in rows if r["op"] == "krum (cost model's top-k)")
    n, d = big["n"], big["d"]
    small = next(r for r in rows if r["op"] == "fedavg")
    sn, sd = small["n"], small["d"]
    table = []
    for op in ("matmul X X^T", "median", "krum"):
        ours = next(r for r in rows if r["op"] == op and r["impl"] == "pgkernels" and r["d"] == d)
        base = min((r for r in rows if r["op"] == op and r["impl"] == "crypten"), key=lambda r: r["seconds"])
        cases = [(op + (" (same network)" if op != "matmul X X^T" else ""), ours)]
        if op == "krum":
            cases.append((f"krum (cost model's top-k: {big['topk'].split(':')[-1]})", big))
        for label, r in cases:
            table.append({"op": label, "n": n, "d": f"{d:.0e}", "pgk ms": _ms(r, 1), "pgk rounds": r["rounds"],
                          "pgk MB": _mb(r), "CrypTen provider": base["provider"], "CrypTen ms": _ms(base, 1),
                          "CrypTen rounds": base["rounds"], "CrypTen MB": _mb(base),
                          "speedup": f"{base['seconds'] / r['seconds']:.1f}x"})
    for r in rows:
        if r["d"] == sd and r["n"] == sn and r["impl"] == "pgkernels" and r["op"] not in AGG_CHECKS:
            table.append({"op": r["op"], "n": sn, "d": f"{sd:.0e}", "pgk ms": _ms(r, 1),
                          "pgk rounds": r["rounds"], "pgk MB": _mb(r), "CrypTen provider": "",
                          "CrypTen ms": "", "CrypTen rounds": "", "CrypTen MB": "",
                          "speedup": "EIFFeL: 2400 ms"})
    # the validity check's overhead on Krum, both sizes, same run
    overhead = []
    for n_, d_ in ((n, d), (sn, sd)):
        base = next(r for r in rows if r["op"] == AGG_CHECKS[0] and r["d"] == d_)
        for op in AGG_CHECKS:
            r = next(x for x in rows if x["op"] == op and x["d"] == d_)
            extra = r["seconds"] if op in AGG_CHECKS[1:3] else r["seconds"] - base["seconds"]
            overhead.append({"op": op.replace(" (same reps)", ""), "n": n_, "d": f"{d_:.0e}", "ms": _ms(r, 1),
                             "rounds": r["rounds"], "MB": _mb(r),
                             "overhead on krum": "" if op == AGG_CHECKS[0]
                             else f"{100 * extra / base['seconds']:+.0f}%"})
    return table, overhead
