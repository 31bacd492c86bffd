"""The main demo: secure kernels, then federated learning defended inside MPC.

    python -m pgkernels.demo [--n 100000] [--rounds 15] [--out demo_out] [--no-fl]

Part 1 -- kernels.
Two compute parties and a dealer run as separate processes on this host. The
parties secret-share a vector, compute ``x < 0``, ReLU, an oblivious select, a
coordinate-wise median and an argmax over 10 rows with pgkernels and (where it
has one) with CrypTen's builtins, check both against plaintext, and print time,
rounds and bytes per party per element.

Part 2 -- a federated scenario on scikit-learn's bundled digits (no data
directory needed): 10 clients, 2 of them malicious (a boosted pixel-trigger
backdoor, or IPM), each client's update secret-shared to two aggregation
servers plus a dealer, which aggregate in MPC with FedAvg and robust rules
and return only the aggregate. Prints the accuracy / attack-success table and
saves it (Markdown, JSON) with a plot under ``--out``.
"""

import argparse
import sys

import pgkernels


def _party(n):
    import time

    import crypten
    import torch

    from pgkernels.runtime import comm

    g = torch.Generator().manual_seed(0)
    # values on the fixed-point grid, so plaintext and MPC agree exactly
    x_plain = torch.round(torch.randn(n, generator=g, dtype=torch.float64) * 4 * 2**16) / 2**16
    y_plain = torch.round(torch.randn(n, generator=g, dtype=torch.float64) * 4 * 2**16) / 2**16
    x, y = crypten.cryptensor(x_plain), crypten.cryptensor(y_plain)

    def run(fn):
        fn()  # warm-up
        comm.reset_stats()
        t = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t
        s = comm.STATS.snapshot()
        return out, dt, s

    rows = []
    want = {
        "x < 0": (x_plain < 0).double(),
        "relu(x)": x_plain.clamp(min=0),
        "where(x < y, x, y)": torch.minimum(x_plain, y_plain),
    }
    cases = [
        ("x < 0", lambda: pgkernels.ltz(x), lambda: x < 0),
        ("relu(x)", lambda: pgkernels.relu(x), lambda: x.relu()),
        ("where(x < y, x, y)", lambda: pgkernels.where(pgkernels.lt(x, y), x, y),
         lambda: x.where(x < y, y)),
    ]
    # order statistics: a coordinate-wise median over 10 "clients", and argmax
    clients = x_plain[: (n // 10) * 10].view(10, -1)
    ec = crypten.cryptensor(clients)
    want["median over 10 (dim 0)"] = torch.median(clients, dim=0).values
    want["argmax over 10 (dim 0)"] = torch.nn.functional.one_hot(clients.argmax(0), 10).T.double()
    cases += [
        ("median over 10 (dim 0)", lambda: pgkernels.median(ec, dim=0, lower=True), None),
        ("argmax over 10 (dim 0)", lambda: pgkernels.argmax(ec, dim=0), lambda: ec.argmax(dim=0)),
    ]
    for name, ours, theirs in cases:
        for impl, fn in (("pgkernels", ours), ("CrypTen", theirs)):
            if fn is None:
                continue  # CrypTen has no median
            out, dt, s = run(fn)
            err = float((pgkernels.decode(out) - want[name].double()).abs().max())
            rows.append((name, impl, dt * 1e3, s.rounds, s.bytes_sent / n, err))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="elements per vector")
    ap.add_argument("--world-size", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15, help="federated rounds per run")
    ap.add_argument("--out", default="demo_out", help="where the federated table and plot go")
    ap.add_argument("--no-fl", action="store_true", help="only the kernel part")
    a = ap.parse_args(argv)
    print(f"pgkernels demo: {a.world_size} compute parties + dealer, n = {a.n}", flush=True)
    rows = pgkernels.launch(_party, world_size=a.world_size, args=(a.n,), timeout=600)[0]
    print(f"{'operation':<24} {'impl':<10} {'ms':>9} {'rounds':>7} {'B/elem sent':>12} {'max err':>9}")
    for name, impl, ms, rounds, bpe, err in rows:
        print(f"{name:<24} {impl:<10} {ms:>9.1f} {rounds:>7} {bpe:>12.2f} {err:>9.1e}")
    ok = all(r[5] == 0 for r in rows)
    print("all results match plaintext" if ok else "MISMATCH against plaintext")
    if not a.no_fl:
        _federated(a)
    return 0 if ok else 1


def _federated(a):
    import pathlib
    import time

    from .fl import simulation as sim
    from .fl.mpc import MPCAggregator

    defenses = ["fedavg", "median", "trimmed_mean", "krum", "fltrust", "flame"]
    cfg = sim.FLConfig(dataset="digits", model="mlp", clients=10, malicious=2, rounds=a.rounds,
                       boost=5.0, ipm_epsilon=10.0, seed=0, backend="mpc", world_size=a.world_size)
    print(f"\nfederated learning on digits in MPC: {cfg.clients} clients ({cfg.malicious} malicious), "
          f"{cfg.rounds} rounds, {a.world_size} aggregation servers + dealer; defenses: {', '.join(defenses)}",
          flush=True)
    t = time.perf_counter()
    with MPCAggregator(world_size=a.world_size) as agg:
        res = sim.sweep(cfg, ["backdoor", "ipm"], defenses, aggregator=agg, progress=True)
        summary = agg.summary()
    out = pathlib.Path(a.out)
    md = sim.write_table(res, out / "fl_digits_mpc")
    sim.plot(res, out / "fl_digits_mpc.png")
    print(md)
    print(f"MPC aggregation: {summary.get('aggregations')} rounds, "
          f"{summary.get('seconds_per_aggregation', 0):.3f} s and "
          f"{summary.get('MB_sent_per_aggregation', 0):.2f} MB sent per server per aggregation")
    print(f"federated part: {time.perf_counter() - t:.0f} s; table and plot in {out}/fl_digits_mpc.{{md,json,png}}")


if __name__ == "__main__":
    sys.exit(main())
