"""Timing and metering helpers shared by the benchmarks (run inside parties)."""

import statistics
import time


def measure(fn, reps, warmup=1):
    """Median wall time of fn() at party 0, with rounds/bytes of one call
    (bytes sent by party 0; dealer bytes received by all parties together).

    Parties are aligned with a barrier before each call so the clock measures
    the protocol, not a late start.
    """
    import torch.distributed as dist

    import crypten.communicator as cc

    from pgkernels.runtime import comm

    group = cc.get().main_group
    for _ in range(warmup):
        fn()
    times = []
    stats = None
    for _ in range(reps):
        dist.barrier(group=group)
        comm.reset_stats()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if stats is None:
            stats = comm.STATS.snapshot()
    # The dealer's corrections rotate between parties: report their total.
    import torch

    total = torch.tensor([stats.dealer_bytes], dtype=torch.float64)
    dist.all_reduce(total, group=group)
    return {"seconds": statistics.median(times), "rounds": stats.rounds,
            "bytes_sent": stats.bytes_sent, "dealer_bytes": float(total)}


def fmt_table(rows, cols):
    widths = [max(len(str(c)), *(len(str(r.get(c, ""))) for r in rows)) for c in cols]
    line = lambda vals: "| " + " | ".join(str(v).ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    out = [line(cols), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line([r.get(c, "") for c in cols]) for r in rows]
    return "\n".join(out)


def write_results(path, meta, rows, table):
    """JSON with every row, and the table as Markdown next to it."""
    import json
    import os
    import platform

    meta = dict({"machine": platform.platform(), "cpus": os.cpu_count()}, **meta)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump({"meta": meta, "rows": rows, "table": table}, f, indent=1)
    cols = []
    for r in table:
        cols += [c for c in r if c not in cols]
    text = fmt_table(table, cols)
    with open(os.path.splitext(path)[0] + ".md", "w") as f:
        f.write(text + "\n")
    return text
