"""Flower example: FedAvg vs Flower's Krum (in the clear) vs pgkernels' Krum in MPC.

Runs Flower's simulation engine (``flwr.simulation.run_simulation``, Ray) three
times on the same clients -- some of them malicious -- and prints a table:

* ``flower-fedavg``: Flower's FedAvg, updates in the clear;
* ``flower-krum``: Flower's own Krum, updates in the clear;
* ``pgkernels-krum``: the same clients with the sharing mod
  (:func:`~pgkernels.integrations.flower.make_secret_share_mod`, pinned to the
  keys of the aggregation servers started for the run), and
  :class:`~pgkernels.integrations.flower.SecureRobustAggregation` computing
  Krum in MPC on two aggregation servers plus a dealer: no server sees an
  individual update.

Clients train the federated lab's model (:class:`pgkernels.fl.Lab`) on their split;
the malicious ones run the lab's attack (default: a pixel-trigger backdoor
with model-replacement boosting). Accuracy and attack success are measured
centrally (``evaluate_fn``) after every round; the selected client per round
is recorded for both Krums so they can be compared.

``python -m pgkernels.integrations.flower_example --dataset mnist --clients 10 --malicious 3``
(``bash scripts/flower.sh`` sets up first). Without a data directory the
embedded digits dataset is used.
"""

import argparse
import dataclasses
import json
import os
import pathlib
import sys
import time

import numpy as np

from ..reporting import figure, markdown_table, pct, save_figure, write_json, write_text

RUNS = ("flower-fedavg", "flower-krum", "pgkernels-krum")
_LABS = {}


def _lab(cfg_dict):
    """The lab (data split, model, attack) for this config, built once per process."""
    from ..fl import FLConfig, Lab, load_dataset

    key = json.dumps(cfg_dict, sort_keys=True)
    if key not in _LABS:
        cfg = FLConfig(**cfg_dict)
        _LABS.clear()
        _LABS[key] = Lab(cfg, load_dataset(cfg.dataset, cfg.data_dir))
    return _LABS[key]


def _state_to_flat(lab, arrays):
    import torch

    from ..models import get_flat

    lab.model.load_state_dict({k: torch.from_numpy(np.array(v.numpy())) for k, v in arrays.items()})
    return get_flat(lab.model)


def _cloned_state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def make_client_app(cfg_dict, secure, server_keys=None):
    """A Flower ClientApp training the lab's clients (``secure``: with the sharing mod,
    sealing to the pinned ``server_keys``)."""
    import torch
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    from ..attacks import updates as A
    from ..models import set_flat
    from .flower import make_secret_share_mod

    app = ClientApp(mods=[make_secret_share_mod(server_keys=server_keys)] if secure else [])

    @app.train()
    def train(msg, context):
        torch.set_num_threads(1)
        lab = _lab(cfg_dict)
        pid = int(context.node_config["partition-id"])
        rnd = int(msg.content["config"]["server-round"])
        lab.global_flat = _state_to_flat(lab, msg.content["arrays"])
        X, y = lab.clients[pid]
        upd = lab.train(X, y, (lab.cfg.seed, rnd, pid))
        if pid in lab.malicious:
            if lab.cfg.attack == "backdoor" and lab.cfg.boost != 1.0:
                upd = A.scale(upd[None], lab.cfg.boost)[0]
            elif lab.cfg.attack == "sign_flip":
                upd = A.sign_flip(upd[None])[0]
            elif lab.cfg.attack == "gaussian":
                upd = A.gaussian(upd[None], lab.cfg.gaussian_std, np.random.default_rng((rnd, pid)))[0]
        set_flat(lab.model, lab.global_flat + torch.from_numpy(upd).float())
        content = RecordDict({"arrays": ArrayRecord(_cloned_state(lab.model)),
                              "metrics": MetricRecord({"num-examples": len(y), "partition-id": pid})})
        return Message(content=content, reply_to=msg)

    return app


def _recording(base):
    """Subclass a strategy so it records node id -> partition id (and Flower's Krum choice)."""

    class Recording(base):
        def aggregate_train(self, server_round, replies):
            replies = list(replies)
            valid = [m for m in replies if not m.has_error()]
            self.partition_of.update({m.metadata.src_node_id: int(m.content["metrics"]["partition-id"])
                                      for m in valid})
            if hasattr(self, "num_nodes_to_select") and not hasattr(self, "aggregator"):
                from flwr.serverapp.strategy.multikrum import select_multikrum

                contents = [m.content for m in valid]
                chosen = select_multikrum(contents, self.num_malicious_nodes, self.num_nodes_to_select)
                ids = [id(c) for c in contents]
                self.selected.append([valid[ids.index(id(c))].metadata.src_node_id for c in chosen])
            return super().aggregate_train(server_round, replies)

    Recording.__name__ = base.__name__
    return Recording


def run_one(kind, cfg_dict, world_size=2, progress=True):
    """One Flower simulation; returns per-round accuracy/ASR and the selections."""
    import torch
    from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
    from flwr.serverapp import ServerApp
    from flwr.serverapp.strategy import FedAvg, Krum
    from flwr.simulation import run_simulation

    from ..models import make_model
    from ..serving import AggregationServers
    from .flower import SecureRobustAggregation

    lab = _lab(cfg_dict)
    cfg = lab.cfg
    n, f = cfg.clients, cfg.malicious
    common = dict(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n)
    servers = None
    if kind == "flower-fedavg":
        strategy = _recording(FedAvg)(**common)
    elif kind == "flower-krum":
        strategy = _recording(Krum)(num_malicious_nodes=f, **common)
    else:
        # started before the simulation, so the clients can pin the servers' keys
        servers = AggregationServers(world_size=world_size)
        servers.start()
        strategy = _recording(SecureRobustAggregation)("krum", servers=servers, num_malicious_clients=f, **common)
    strategy.partition_of, strategy.selected = {}, []
    # Every run starts from the same seeded model: the main process's lab model is
    # reused by evaluate_fn, so rebuild it rather than take whatever the last run left.
    lab.model = make_model(cfg.model, lab.ds, seed=cfg.seed, hidden=cfg.hidden)
    initial = ArrayRecord(_cloned_state(lab.model))
    history = []

    def evaluate_fn(server_round, arrays):
        lab.global_flat = _state_to_flat(lab, arrays)
        acc, asr = lab.evaluate()
        history.append({"round": server_round, "accuracy": acc, "asr": asr})
        if progress and server_round:
            print(f"  [{kind}] round {server_round}/{cfg.rounds}: accuracy {100 * acc:.1f}%"
                  + (f", attack success {100 * asr:.1f}%" if asr is not None else ""), flush=True)
        return MetricRecord({"accuracy": acc})

    server = ServerApp()

    @server.main()
    def main(grid, context):
        strategy.start(grid=grid, initial_arrays=initial, num_rounds=cfg.rounds,
                       train_config=ConfigRecord({}), evaluate_fn=evaluate_fn)

    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    try:
        client_app = make_client_app(cfg_dict, servers is not None,
                                     server_keys=servers.public_keys if servers is not None else None)
        run_simulation(server_app=server, client_app=client_app, num_supernodes=n,
                       backend_config={"client_resources": {"num_cpus": 1}}, verbose_logging=False)
    finally:
        if servers is not None:
            servers.close()
    seconds = time.perf_counter() - t0
    if len(history) < cfg.rounds + 1:
        raise RuntimeError(f"{kind}: the simulation ended after {len(history) - 1} of {cfg.rounds} rounds "
                           "(see Flower's log above)")
    part = strategy.partition_of
    if kind == "pgkernels-krum":
        selected = [[part[nid] for nid in (r["selected"] or [])] for r in strategy.rounds]
        mpc = {"seconds_per_round": float(np.mean([r["seconds"] for r in strategy.rounds])),
               "mb_per_server_per_round": float(np.mean([max(r["bytes_per_server"]) for r in strategy.rounds])) / 1e6}
    else:
        selected = [[part[nid] for nid in s] for s in strategy.selected]
        mpc = None
    return {"run": kind, "history": history, "selected": selected, "seconds": seconds, "mpc": mpc,
            "final_accuracy": history[-1]["accuracy"], "final_asr": history[-1]["asr"]}


def table(results, malicious):
    """The comparison as a Markdown table (one row per run)."""
    rows = []
    for r in results:
        sel = r["selected"]
        mal = "–" if not sel else f"{sum(any(p in malicious for p in s) for s in sel)}/{len(sel)}"
        m = r["mpc"] or {}
        rows.append([r["run"], pct(r["final_accuracy"]), pct(r["final_asr"]), mal, f"{r['seconds']:.0f}",
                     f"{m['seconds_per_round']:.3f}" if m else "–", f"{m['mb_per_server_per_round']:.2f}" if m else "–"])
    return markdown_table(["run", "accuracy (%)", "attack success (%)", "malicious selected (rounds)", "wall s",
                           "MPC s/round", "MB/server/round"], rows)


def plot(results, path):
    """Accuracy and attack success per round of every run, side by side."""
    fig = figure((10, 3.6), layout="tight")
    axes = fig.subplots(1, 2)
    for r in results:
        rounds = [h["round"] for h in r["history"]]
        axes[0].plot(rounds, [100 * h["accuracy"] for h in r["history"]], marker="o", ms=3, label=r["run"])
        if r["history"][0]["asr"] is not None:
            axes[1].plot(rounds, [100 * h["asr"] for h in r["history"]], marker="o", ms=3, label=r["run"])
    axes[0].set(xlabel="round", ylabel="test accuracy (%)", title="main task")
    axes[1].set(xlabel="round", ylabel="attack success (%)", title="backdoor")
    axes[0].legend()
    return save_figure(fig, path, dpi=120)


def main(argv=None):
    from ..defenses import registry
    from ..fl import FLConfig

    ap = argparse.ArgumentParser(prog="pgkernels flower", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default=None, help="mnist, fashion_mnist, ... (default: mnist if "
                    "PGKERNELS_DATA has it, else the embedded digits)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--malicious", type=int, default=3)
    ap.add_argument("--attack", default="backdoor", choices=["none", "backdoor", "label_flip", "targeted",
                                                             "sign_flip", "gaussian"])
    ap.add_argument("--boost", type=float, default=None, help="backdoor model-replacement factor "
                    "(default: clients / malicious)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--local-steps", type=int, default=20)
    ap.add_argument("--world-size", type=int, default=2)
    ap.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated subset of {','.join(RUNS)}")
    ap.add_argument("--out", default="flower_out")
    a = ap.parse_args(argv)
    runs = [r for r in a.runs.split(",") if r]
    for r in runs:
        if r not in RUNS:
            ap.error(f"unknown run {r!r}; choose from {RUNS}")
    krum = registry.get("krum")
    if a.malicious < 0 or a.clients < krum.min_clients(a.malicious):
        ap.error(f"Krum needs clients >= {krum.min_clients_text} with f = malicious (got {a.clients} clients, "
                 f"{a.malicious} malicious)")
    data_dir = a.data_dir or os.environ.get("PGKERNELS_DATA")
    dataset = a.dataset
    if dataset is None:
        has_mnist = data_dir and any((pathlib.Path(data_dir) / p / "train-images-idx3-ubyte.gz").exists()
                                     for p in ("mnist", "."))
        dataset = "mnist" if has_mnist else "digits"
    if data_dir:
        os.environ["PGKERNELS_DATA"] = str(pathlib.Path(data_dir).resolve())  # for the Ray workers
    cfg = FLConfig(dataset=dataset, clients=a.clients, malicious=a.malicious, attack=a.attack,
                   rounds=a.rounds, local_steps=a.local_steps,
                   boost=a.boost if a.boost is not None else a.clients / max(a.malicious, 1),
                   data_dir=os.environ.get("PGKERNELS_DATA"))
    cfg_dict = {k: v for k, v in dataclasses.asdict(cfg).items()}
    out = pathlib.Path(a.out)
    print(f"Flower {_flwr_version()} simulation: {dataset}, {a.clients} clients ({a.malicious} malicious, "
          f"{a.attack}), {a.rounds} rounds", flush=True)
    results = []
    for kind in runs:
        print(f"-- {kind}", flush=True)
        results.append(run_one(kind, cfg_dict, world_size=a.world_size))
    malicious = set(_lab(cfg_dict).malicious)
    md = table(results, malicious)
    agree = None
    by = {r["run"]: r for r in results}
    if "flower-krum" in by and "pgkernels-krum" in by:
        a_sel, b_sel = by["flower-krum"]["selected"], by["pgkernels-krum"]["selected"]
        agree = sum(x == y for x, y in zip(a_sel, b_sel))
        md += (f"\n\nKrum's selected client agreed in {agree}/{len(a_sel)} rounds between Flower (clear) and "
               f"pgkernels (MPC); final accuracy {pct(by['flower-krum']['final_accuracy'])}% vs "
               f"{pct(by['pgkernels-krum']['final_accuracy'])}%.")
    print("\n" + md)
    write_text(md + "\n", out / "flower_comparison.md")
    write_json({"config": cfg_dict, "flwr": _flwr_version(), "results": results, "krum_selection_agreement": agree},
               out / "flower_comparison.json")
    plot(results, out / "flower_comparison.png")
    print(f"\nwrote {out}/flower_comparison.{{md,json,png}}")
    return 0


def _flwr_version():
    import flwr

    return flwr.__version__


if __name__ == "__main__":
    sys.exit(main())
