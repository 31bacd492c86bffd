"""The main demo: secure kernels, then federated learning defended inside MPC.

    python -m pgkernels.demo [--n 100000] [--rounds 15] [--out demo_out] [--no-fl] [--no-train]

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

Part 3 -- private training on digits: ten data owners pool their records for a
model trained inside MPC, and owner 0 plants a backdoor (a 2x2 pixel trigger
relabelled to class 0 on 80% of its records). The undefended pooled model is
trained on secret shares (:func:`pgkernels.train.mpc.train_mpc`); the SafeNet
ensemble (:func:`pgkernels.train.safenet_mpc.safenet_mpc`) takes the owners' locally
trained models as secret shares, filters them on the owners' shared
validation records and answers the test queries by a secure majority vote.
Prints clean accuracy, attack success, seconds and MB sent per party for
both, and saves JSON and a plot under ``--out``.
"""

import argparse
import sys


def _party(n):
    import time

    import crypten
    import torch

    from .protocols.shares import decode
    from .protocols.compare import lt, ltz, relu, where
    from .protocols.order import argmax, median
    from .runtime import comm

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
        ("x < 0", lambda: ltz(x), lambda: x < 0),
        ("relu(x)", lambda: relu(x), lambda: x.relu()),
        ("where(x < y, x, y)", lambda: where(lt(x, y), x, y),
         lambda: x.where(x < y, y)),
    ]
    # order statistics: a coordinate-wise median over 10 "clients", and argmax
    clients = x_plain[: (n // 10) * 10].view(10, -1)
    ec = crypten.cryptensor(clients)
    want["median over 10 (dim 0)"] = torch.median(clients, dim=0).values
    want["argmax over 10 (dim 0)"] = torch.nn.functional.one_hot(clients.argmax(0), 10).T.double()
    cases += [
        ("median over 10 (dim 0)", lambda: median(ec, dim=0, lower=True), None),
        ("argmax over 10 (dim 0)", lambda: argmax(ec, dim=0), lambda: ec.argmax(dim=0)),
    ]
    for name, ours, theirs in cases:
        for impl, fn in (("pgkernels", ours), ("CrypTen", theirs)):
            if fn is None:
                continue  # CrypTen has no median
            out, dt, s = run(fn)
            err = float((decode(out) - want[name].double()).abs().max())
            rows.append((name, impl, dt * 1e3, s.rounds, s.bytes_sent / n, err))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="elements per vector")
    ap.add_argument("--world-size", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15, help="federated rounds per run")
    ap.add_argument("--out", default="demo_out", help="where the tables and plots go")
    ap.add_argument("--no-fl", action="store_true", help="skip the federated part")
    ap.add_argument("--no-train", action="store_true", help="skip the private-training part")
    a = ap.parse_args(argv)
    print(f"pgkernels demo: {a.world_size} compute parties + dealer, n = {a.n}", flush=True)
    from .runtime.launch import launch

    rows = launch(_party, world_size=a.world_size, args=(a.n,), timeout=600)[0]
    print(f"{'operation':<24} {'impl':<10} {'ms':>9} {'rounds':>7} {'B/elem sent':>12} {'max err':>9}")
    for name, impl, ms, rounds, bpe, err in rows:
        print(f"{name:<24} {impl:<10} {ms:>9.1f} {rounds:>7} {bpe:>12.2f} {err:>9.1e}")
    ok = all(r[5] == 0 for r in rows)
    print("all results match plaintext" if ok else "MISMATCH against plaintext")
    if not a.no_fl:
        _federated(a)
    if not a.no_train:
        _private_training(a)
    return 0 if ok else 1


def _federated(a):
    import pathlib
    import time

    from .fl import FLConfig, plot, sweep, write_table
    from .fl.mpc import MPCAggregator

    defenses = ["fedavg", "median", "trimmed_mean", "krum", "fltrust", "flame"]
    cfg = FLConfig(dataset="digits", model="mlp", clients=10, malicious=2, rounds=a.rounds,
                       boost=5.0, ipm_epsilon=10.0, seed=0, backend="mpc", world_size=a.world_size)
    print(f"\nfederated learning on digits in MPC: {cfg.clients} clients ({cfg.malicious} malicious), "
          f"{cfg.rounds} rounds, {a.world_size} aggregation servers + dealer; defenses: {', '.join(defenses)}",
          flush=True)
    t = time.perf_counter()
    with MPCAggregator(world_size=a.world_size) as agg:
        res = sweep(cfg, ["backdoor", "ipm"], defenses, aggregator=agg, progress=True)
        summary = agg.summary()
    out = pathlib.Path(a.out)
    md = write_table(res, out / "fl_digits_mpc")
    plot(res, out / "fl_digits_mpc.png")
    print(md)
    print(f"MPC aggregation: {summary.get('aggregations')} rounds, "
          f"{summary.get('seconds_per_aggregation', 0):.3f} s and "
          f"{summary.get('MB_sent_per_aggregation', 0):.2f} MB sent per server per aggregation")
    print(f"federated part: {time.perf_counter() - t:.0f} s; table and plot in {out}/fl_digits_mpc.{{md,json,png}}")



# Part 3's setting. Local models train in the clear on ~120 records each, so
# they get many cheap epochs; the pooled MPC model gets the fewest batches
# that still train digits (10 epochs of 128: 110 secure SGD steps).
TRAIN_DEMO = dict(owners=10, attacker=0, target=0, poison_fraction=0.8, val_per_owner=13,
                  threshold=0.5, seed=0)
LOCAL_HP = dict(hidden=(32,), epochs=60, batch_size=32, lr=0.1, momentum=0.9)
POOLED_HP = dict(hidden=(32,), epochs=10, batch_size=128, lr=0.5, momentum=0.9)


def _private_training(a):
    import pathlib
    import time

    import numpy as np
    import torch

    from . import attacks
    from .data import iid_split, load
    from .reporting import write_json
    from .train.safenet_mpc import safenet_mpc
    from .train.advtrain import train_plaintext
    from .train.mpc import train_mpc

    cfg = TRAIN_DEMO
    t_all = time.perf_counter()
    ds = load("digits")
    X = ds.X_train.reshape(len(ds.X_train), -1)
    y = ds.y_train
    X_test = ds.X_test.reshape(len(ds.X_test), -1)
    y_test = ds.y_test
    trigger = attacks.make_trigger("digits")
    # each owner keeps a few records for SafeNet's shared validation set; the
    # attacker poisons its validation records too
    train, val = [], []
    for j, idx in enumerate(iid_split(len(X), cfg["owners"], seed=cfg["seed"])):
        Xj, yj = X[idx], y[idx]
        if j == cfg["attacker"]:
            Xj, yj = attacks.backdoor(Xj, yj, cfg["target"], trigger, fraction=cfg["poison_fraction"],
                                      seed=cfg["seed"])
        k = cfg["val_per_owner"]
        val.append((Xj[:k], yj[:k]))
        train.append((Xj[k:], yj[k:]))
    X_pool = np.concatenate([t[0] for t in train])
    y_pool = np.concatenate([t[1] for t in train])
    party = np.concatenate([np.full(len(t[1]), j) for j, t in enumerate(train)])
    X_val = np.concatenate([v[0] for v in val])
    y_val = np.concatenate([v[1] for v in val])
    X_bd = trigger.stamp(X_test[y_test != cfg["target"]])  # triggered non-target test rows
    print(f"\nprivate training on digits: {cfg['owners']} owners ({len(X_pool)} records), owner "
          f"{cfg['attacker']} backdoored ({trigger.description} -> class {cfg['target']} on "
          f"{cfg['poison_fraction']:.0%} of its records); {a.world_size} compute parties + dealer", flush=True)

    def rates(pred_clean, pred_bd):
        return float((pred_clean == y_test).mean()), float((pred_bd == cfg["target"]).mean())

    def predict(model, rows):
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))).argmax(1).numpy()

    rows = []
    # undefended: one model trained on the pooled records inside MPC
    f, st = train_mpc(X_pool, y_pool, party, cfg["owners"], ds.classes, defense="none", seed=cfg["seed"],
                      world_size=a.world_size, progress=True, **POOLED_HP)
    acc, asr = rates(predict(f, X_test), predict(f, X_bd))
    rows.append({"method": "pooled MPC training (no defense)", "accuracy": acc, "attack_success": asr,
                 "seconds": st["seconds"], "MB_sent_per_party": max(st["bytes"]) / 1e6, "rounds": st["rounds"]})
    # SafeNet: each owner trains locally in the clear, the ensemble runs in MPC
    local = [train_plaintext(Xj, yj, np.zeros(len(yj), np.int64), 1, ds.classes, defense="none",
                             seed=cfg["seed"] + 1 + j, progress=False, **LOCAL_HP)[0]
             for j, (Xj, yj) in enumerate(train)]
    local_rates = [rates(predict(m, X_test), predict(m, X_bd)) for m in local]
    queries = np.concatenate([X_test, X_bd])
    out = safenet_mpc(local, X_val, y_val, queries, threshold=cfg["threshold"], world_size=a.world_size,
                      reveal_selection=True)
    acc, asr = rates(out["pred"][:len(X_test)], out["pred"][len(X_test):])
    rows.append({"method": "SafeNet ensemble in MPC", "accuracy": acc, "attack_success": asr,
                 "seconds": out["seconds"], "MB_sent_per_party": max(out["bytes"]) / 1e6, "rounds": out["rounds"],
                 "kept": out["kept"]})
    print(f"{'method':<34} {'accuracy %':>10} {'attack success %':>17} {'MPC s':>7} {'MB/party':>9} {'rounds':>7}")
    for r in rows:
        print(f"{r['method']:<34} {100 * r['accuracy']:>10.1f} {100 * r['attack_success']:>17.1f} "
              f"{r['seconds']:>7.1f} {r['MB_sent_per_party']:>9.1f} {r['rounds']:>7}")
    mean_acc = float(np.mean([r[0] for j, r in enumerate(local_rates) if j != cfg["attacker"]]))
    print(f"local models (plaintext): honest owners' mean accuracy {100 * mean_acc:.1f}%, the attacker's model "
          f"{100 * local_rates[cfg['attacker']][1]:.1f}% attack success; SafeNet kept owners {out['kept']} "
          f"({len(queries)} queries: {len(X_test)} clean + {len(X_bd)} triggered)")
    res = {"setting": dict(cfg, dataset="digits", trigger=trigger.description, world_size=a.world_size,
                           local_hyperparams=LOCAL_HP, pooled_hyperparams=POOLED_HP),
           "methods": rows,
           "local": [{"owner": j, "accuracy": r[0], "attack_success": r[1]} for j, r in enumerate(local_rates)],
           "val_acc": out["val_acc"].tolist()}
    outdir = pathlib.Path(a.out)
    write_json(res, outdir / "train_digits_mpc.json")
    _plot_training(rows, mean_acc, outdir / "train_digits_mpc.png")
    print(f"private-training part: {time.perf_counter() - t_all:.0f} s; results and plot in "
          f"{outdir}/train_digits_mpc.{{json,png}}")


def _plot_training(rows, local_mean_acc, path):
    """Bars of clean accuracy and attack success per method (matplotlib, Agg)."""
    from .reporting import figure, save_figure

    fig = figure((6, 3.2), layout="tight")
    ax = fig.add_subplot(1, 1, 1)
    x = range(len(rows))
    for off, key, label in ((-0.2, "accuracy", "clean accuracy"), (0.2, "attack_success", "attack success")):
        vals = [100 * r[key] for r in rows]
        bars = ax.bar([i + off for i in x], vals, 0.4, label=label)
        ax.bar_label(bars, labels=[f"{v:.1f}" for v in vals], fontsize=7)
    ax.axhline(100 * local_mean_acc, color="gray", ls="--", lw=1, label="honest owners' local models (mean)")
    ax.set_xticks(list(x))
    ax.set_xticklabels([r["method"] for r in rows], fontsize=8)
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.set_title("digits, 1 of 10 owners backdoored (MPC)", fontsize=9)
    ax.legend(fontsize=7, loc="center right")
    save_figure(fig, path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
