"""Timing and metering helpers shared by the benchmarks (run inside parties)."""

import statistics
import time

from .tables import fmt_table


MIN_REPS = 3


def measure(fn, reps, check=None, before=None):
    """One warm call of fn() checked against plaintext, then ``reps`` (>= 3)
    timed calls: the median wall time at party 0, every time, and the
    rounds/bytes of one call (bytes sent by party 0; dealer bytes received by
    all parties together).

    ``check(result)``: run on the warm call's result at every party (it may
    open shares); it must raise if the result disagrees with plaintext.
    Parties are aligned with a barrier before each call so the clock measures
    the protocol, not a late start. ``before()``: run untimed ahead of every
    call (e.g. a dealer prefetch).
    """
    import torch
    import torch.distributed as dist

    import crypten.communicator as cc

    from pgkernels.runtime import comm

    if reps < MIN_REPS:
        raise ValueError(f"reps must be at least {MIN_REPS}, got {reps}")
    group = cc.get().main_group
    if before is not None:
        before()
    out = fn()
    if check is not None:
        check(out)
    del out
    times = []
    stats = None
    for _ in range(reps):
        if before is not None:
            before()
        dist.barrier(group=group)
        comm.reset_stats()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if stats is None:
            stats = comm.STATS.snapshot()
    # The dealer's corrections rotate between parties: report their total.
    total = torch.tensor([stats.dealer_bytes], dtype=torch.float64)
    dist.all_reduce(total, group=group)
    return {"seconds": statistics.median(times), "times": times, "reps": reps, "checked": check is not None,
            "rounds": stats.rounds, "dealer_rounds": stats.dealer_rounds,
            "bytes_sent": stats.bytes_sent, "dealer_bytes": float(total)}


def close(got, want, tol, what):
    """Raise unless the opened result ``got`` is within ``tol`` of plaintext ``want``."""
    import torch

    got = torch.as_tensor(got, dtype=torch.float64)
    want = torch.as_tensor(want, dtype=torch.float64)
    if got.shape != want.shape:
        raise AssertionError(f"{what}: shape {tuple(got.shape)} != plaintext {tuple(want.shape)}")
    err = float((got - want).abs().max()) if got.numel() else 0.0
    if not err <= tol:
        raise AssertionError(f"{what}: max error {err} against plaintext (tolerance {tol})")


_RUN = {}


def load_average():
    """The 1/5/15-minute load averages (other processes share the machine)."""
    import os

    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _command():
    import os
    import sys

    module = os.path.splitext(os.path.relpath(sys.argv[0]))[0].replace(os.sep, ".")
    return " ".join(["python -m " + module] + sys.argv[1:])


def start_run():
    """Record, when the benchmark starts, the provenance of the run (the
    commit it runs: the tree may change while it runs) and the machine's load."""
    from pgkernels.reporting import provenance as run_provenance

    _RUN.clear()
    _RUN.update(run_provenance(_command()), load_average_start=load_average())


def provenance():
    """What a results file must record (:func:`pgkernels.reporting.provenance`:
    the exact command, the commit, the library versions, the date, the machine)
    taken at :func:`start_run`, plus when the run finished and the machine's
    load at its start and end."""
    import datetime

    from pgkernels.reporting import provenance as run_provenance

    meta = dict(_RUN) if _RUN else run_provenance(_command())
    meta.pop("load_average", None)
    meta.update(finished=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                load_average_start=meta.get("load_average_start"), load_average_end=load_average())
    return meta


def write_results(path, meta, rows, table):
    """JSON with every row, and the table as Markdown next to it."""
    import json
    import os

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


PROVIDERS = {"TFP": dict(dealer="tfp", insecure=True), "TTP": dict(dealer="crypten-ttp")}


def run_crypten(session, args, providers, timeout=3600):
    """Run ``session(*args)`` under each of CrypTen's providers (TFP: party 0
    generates every triple, insecure; TTP: CrypTen's own dealer); every row is
    tagged with its provider, so a table can take the fastest per case."""
    import sys
    import warnings

    import pgkernels

    rows = []
    for name in providers:
        if name not in PROVIDERS:
            raise ValueError(f"providers must be among {sorted(PROVIDERS)}, got {name!r}")
        print(f"[bench] CrypTen builtins ({name})", file=sys.stderr)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = pgkernels.launch(session, args=args, timeout=timeout, **PROVIDERS[name])[0]
        rows += [dict(r, provider=name) for r in got]
    return rows


# --- simulated WAN link (pgkernels.runtime.link) ---------------------------------------

def add_link_args(ap):
    """``--latency`` / ``--bandwidth``: run every session over a simulated link."""
    ap.add_argument("--latency", type=float, default=None,
                    help="one-way latency of a simulated link between all processes, seconds "
                         "(e.g. 0.05); also sets the cost model's round cost")
    ap.add_argument("--bandwidth", type=float, default=None,
                    help="bandwidth of the simulated link, bytes/s per direction (e.g. 1.25e8 "
                         "for 1 Gbit/s); also sets the cost model's bandwidth")


def apply_link(latency=None, bandwidth=None):
    """Turn on the simulated link for every session this process launches
    from now on (the environment the parties and the dealer inherit), and
    give the cost model the same numbers, in this process and in the parties
    (``PGKERNELS_LATENCY_S``/``PGKERNELS_BANDWIDTH_BPS``). A round over the
    link costs its one-way latency plus what it costs over loopback
    (:func:`pgkernels.protocols.cost.link_constants`). Returns the link's description for the
    results' meta, or None when neither is given."""
    import os

    from pgkernels.protocols import cost
    from pgkernels.runtime.link import Link

    if latency is None and bandwidth is None:
        return None
    link = Link(latency=latency or 0.0, bandwidth=bandwidth)
    os.environ.update(link.env())
    model_latency, model_bw = cost.link_constants(link.latency, bandwidth)
    os.environ["PGKERNELS_LATENCY_S"] = repr(model_latency)
    os.environ["PGKERNELS_BANDWIDTH_BPS"] = repr(model_bw)
    cost.configure(latency=model_latency, bandwidth=model_bw)
    return {"simulated_link": {"latency_s": link.latency, "bandwidth_Bps": link.bandwidth},
            "cost_model": {"latency_s": model_latency, "bandwidth_Bps": model_bw}}
