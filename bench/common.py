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


def provenance():
    """What a results file must record: the command, the commit, the versions, the machine."""
    import os
    import platform
    import subprocess
    import sys

    import torch

    def git(*args):
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                                  cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    try:
        import crypten  # noqa: F401  (after pgkernels' compat step)
        crypten_version = getattr(crypten, "__version__", "0.4.1")
    except Exception:  # noqa: BLE001
        crypten_version = "unavailable"
    import pgkernels

    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    return {"command": "python -m " + " ".join([os.path.splitext(os.path.relpath(sys.argv[0]))[0].replace(os.sep, ".")]
                                                 + sys.argv[1:]),
            "commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "crypten": crypten_version, "pgkernels": pgkernels.__version__},
            "machine": platform.platform(), "cpu": cpu, "cpus": os.cpu_count()}


def write_results(path, meta, rows, table):
    """JSON with every row, and the table as Markdown next to it."""
    import json
    import os
    import platform

    meta = dict(provenance(), **meta)
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
