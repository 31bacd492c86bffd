"""Federated runs and sweeps: the round loop of the poisoning lab.

One round of :func:`run`:

1. every client starts from the global model and trains it locally (plain
   torch SGD, ``local_epochs`` passes or ``local_steps`` steps over its data);
   its update is the model delta (local minus global);
2. the malicious clients (the first ``malicious`` client ids, or a seeded
   random choice) either poisoned their data beforehand (label flip, backdoor;
   for ``targeted``, AUROR's threat model: they hold only source-class images
   labelled as the target, ``poison_fraction`` of all the clients' records)
   or replace their update by a crafted one computed
   from the benign updates (sign flip, Gaussian, ALIE, IPM, Min-Max, Min-Sum:
   the usual omniscient attacker);
3. the aggregator combines the (n, d) float64 updates with the chosen rule,
   and the global model moves by the aggregate (server learning rate 1);
4. the global model is evaluated: test accuracy, attack success rate, and for
   rules that select clients the detection rates.

The aggregator is pluggable: any object with ``aggregate(name, U, **kwargs) ->
(aggregate, kept indices or None)``; the default
:class:`~pgkernels.fl.plaintext.PlaintextAggregator` runs the rules' numpy
references, and ``backend="mpc"`` uses :class:`pgkernels.fl.mpc.MPCAggregator`
(secret-shared updates). Both get the same keyword arguments
(:func:`~pgkernels.fl.config.defense_kwargs`), named as the rules' parameters
in :mod:`pgkernels.defenses.registry`. :func:`sweep` runs every attack x
defense pair; :mod:`pgkernels.fl.report` writes its tables and plots.
"""

import time

import numpy as np
import torch

from ..defenses import registry
from ..metrics import accuracy_drop, detection_rates
from ..reporting import jsonable
from .config import ATTACKS, UPDATE_ATTACKS, FLConfig, defense_kwargs, needs_server_update
from .lab import Lab, load_dataset
from .plaintext import PlaintextAggregator


def _mean(values):
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def run(config, aggregator=None, progress=True, dataset=None):
    """Run one federated simulation; returns a JSON-serialisable dict.

    ``config``: an :class:`FLConfig` (or a dict of its fields).
    ``aggregator``: object with ``aggregate(name, U, **kwargs) -> (agg, kept or
    None)``; default :class:`PlaintextAggregator`, or for ``backend="mpc"`` an
    :class:`pgkernels.fl.mpc.MPCAggregator` started (and stopped) here.
    ``dataset``: a preloaded :class:`pgkernels.data.Dataset` (default: loaded
    by name from ``config.data_dir`` / ``$PGKERNELS_DATA``).

    The result holds the config, the malicious client ids, per-round records
    (accuracy, attack success rate, kept clients, detection rates, seconds),
    the ``accuracy`` / ``asr`` curves (index 0: the initial model), the final
    metrics and the wall time.
    """
    if isinstance(config, dict):
        config = FLConfig(**config)
    config.validate()
    if aggregator is None and config.backend == "mpc":
        from .mpc import MPCAggregator

        with MPCAggregator(world_size=config.world_size) as agg:
            return run(config, aggregator=agg, progress=progress, dataset=dataset)
    aggregator = PlaintextAggregator() if aggregator is None else aggregator
    if hasattr(aggregator, "supports") and not aggregator.supports(config.defense):
        raise ValueError(f"the {type(aggregator).__name__} does not support defense {config.defense!r}")

    t_start = time.perf_counter()
    ds = dataset if dataset is not None else load_dataset(config.dataset, config.data_dir)
    lab = Lab(config, ds)
    n, mal = config.clients, lab.malicious
    mal_set = set(mal)
    need_server = needs_server_update(config)
    skip_honest = config.attack in UPDATE_ATTACKS and config.attack != "sign_flip"  # replaced without training
    attack_rng = np.random.default_rng([config.seed, 1])
    defense_rng = np.random.default_rng([config.seed, 2])
    acc0, asr0 = lab.evaluate()
    accs, asrs, records = [acc0], [asr0], []
    t_train = t_agg = 0.0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.rounds, desc=f"{config.attack} vs {config.defense}", unit="round", leave=False)
    try:
        for r in range(1, config.rounds + 1):
            t0 = time.perf_counter()
            d = lab.global_flat.numel()
            U = np.zeros((n, d), dtype=np.float64)
            for i, (X, y) in enumerate(lab.clients):
                if skip_honest and i in mal_set:
                    continue
                U[i] = lab.train(X, y, [config.seed, r, i])
            lab.poison_updates(U, attack_rng)
            server_update = None
            if need_server:
                server_update = lab.train(lab.X_root, lab.y_root, [config.seed, r, n], steps=lab.server_steps)
            t1 = time.perf_counter()
            kw = defense_kwargs(config, n, server_update, defense_rng)
            agg, kept = aggregator.aggregate(config.defense, U, **kw)
            t2 = time.perf_counter()
            agg = np.asarray(agg, dtype=np.float64)
            lab.global_flat = lab.global_flat + torch.from_numpy(agg).to(torch.float32)
            rec = {"round": r}
            if r % config.eval_every == 0 or r == config.rounds:
                acc, asr = lab.evaluate()
                accs.append(acc)
                asrs.append(asr)
                rec.update(accuracy=acc, asr=asr)
            if kept is not None:
                kept = np.sort(np.asarray(kept, dtype=np.int64))
                det = detection_rates(kept, mal, n)
                rec.update(kept=kept.tolist(), tpr=det["tpr"], fpr=det["fpr"])
            rec.update(train_seconds=t1 - t0, aggregate_seconds=t2 - t1)
            t_train += t1 - t0
            t_agg += t2 - t1
            records.append(rec)
            if bar is not None:
                bar.update(1)
                post = {"acc": f"{accs[-1]:.3f}"}
                if asrs[-1] is not None:
                    post["asr"] = f"{asrs[-1]:.3f}"
                bar.set_postfix(post)
    finally:
        if bar is not None:
            bar.close()
    final = {"accuracy": accs[-1], "asr": asrs[-1], "best_accuracy": max(accs[1:]),
             "mean_tpr": _mean(rec.get("tpr") for rec in records),
             "mean_fpr": _mean(rec.get("fpr") for rec in records)}
    result = {
        "config": config.to_dict(),
        "backend": getattr(aggregator, "backend", type(aggregator).__name__),
        "malicious_clients": mal,
        "clients_data_sizes": [int(len(y)) for _, y in lab.clients],
        "poisoned_records": lab.poisoned_records,
        "num_params": int(lab.global_flat.numel()),
        "accuracy": accs, "asr": asrs,
        "eval_rounds": [0] + [rec["round"] for rec in records if "accuracy" in rec],
        "rounds": records,
        "final": final,
        "train_seconds": t_train, "aggregate_seconds": t_agg,
        "wall_time_s": time.perf_counter() - t_start,
    }
    if hasattr(aggregator, "summary"):
        result["aggregator_summary"] = aggregator.summary()
    return jsonable(result)


def _row(res, base=None):
    cfg, fin = res["config"], res["final"]
    row = {"attack": cfg["attack"], "defense": cfg["defense"], "accuracy": fin["accuracy"], "asr": fin["asr"],
           "mean_tpr": fin["mean_tpr"], "mean_fpr": fin["mean_fpr"], "wall_time_s": res["wall_time_s"]}
    if base is not None:
        row["clean_accuracy"] = base["final"]["accuracy"]
        row["accuracy_drop"] = accuracy_drop(base["final"]["accuracy"], fin["accuracy"])
    return row


def sweep(base_config, attacks, defenses, aggregator=None, progress=True, dataset=None, keep_runs=True):
    """Run every (attack, defense) pair on ``base_config``, plus the no-attack
    baseline of each defense (for AUROR's accuracy drop).

    Returns a JSON-serialisable dict: ``base_config``, ``attacks`` (with
    "none" first), ``defenses``, ``rows`` (one per pair: final accuracy, ASR,
    accuracy drop against the same defense without attack, mean detection
    rates, seconds) and, with ``keep_runs``, the full ``runs``.
    """
    if isinstance(base_config, dict):
        base_config = FLConfig(**base_config)
    attacks = ["none"] + [a for a in attacks if a != "none"]
    defenses = list(dict.fromkeys(defenses))
    for a in attacks:
        if a not in ATTACKS:
            raise ValueError(f"unknown attack {a!r}; choose from {list(ATTACKS)}")
    for dname in defenses:
        registry.get(dname)  # ValueError naming the rules
    configs = [base_config.replace(attack=a, defense=dname) for dname in defenses for a in attacks]  # validates all
    ds = dataset if dataset is not None else load_dataset(base_config.dataset, base_config.data_dir)
    own = None
    if aggregator is None and base_config.backend == "mpc":
        from .mpc import MPCAggregator

        own = aggregator = MPCAggregator(world_size=base_config.world_size).__enter__()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(configs), desc="sweep", unit="run")
    rows, runs, base = [], [], {}
    t0 = time.perf_counter()
    try:
        for cfg in configs:
            res = run(cfg, aggregator=aggregator, progress=False, dataset=ds)
            if cfg.attack == "none":
                base[cfg.defense] = res
            rows.append(_row(res, base.get(cfg.defense)))
            if keep_runs:
                runs.append(res)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(last=f"{cfg.attack}/{cfg.defense} acc={res['final']['accuracy']:.3f}")
    finally:
        if bar is not None:
            bar.close()
        if own is not None:
            own.__exit__(None, None, None)
    out = {"base_config": base_config.to_dict(), "attacks": attacks, "defenses": defenses, "rows": rows,
           "wall_time_s": time.perf_counter() - t0}
    if keep_runs:
        out["runs"] = runs
    return jsonable(out)


__all__ = ["run", "sweep"]
