"""Command line of the federated-learning lab.

    pgkernels fl --dataset digits --attack alie --defense krum --rounds 20 --out out/
    pgkernels fl-sweep --dataset mnist --attacks alie,ipm,backdoor \\
        --defenses fedavg,median,krum --rounds 20 --out out/

``fl`` runs one simulation (writes the result JSON and a PNG plot with
``--out``); ``fl-sweep`` runs every attack x defense pair plus the
no-attack baselines (writes a Markdown and a JSON table, and a plot, with
``--out``) and prints the Markdown. ``--backend mpc`` aggregates on
secret-shared updates (:class:`pgkernels.fl.mpc.MPCAggregator`).
"""

import argparse
import contextlib
import json
import pathlib
import sys

from ..data import DATASETS
from ..defenses import registry
from ..models import AUROR_HIDDEN, MODELS
from ..reporting import write_json
from .config import ATTACKS, BACKENDS, DEV_TYPES, SPLITS, FLConfig


def _list_of(kind, choices):
    def parse(text):
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"empty list of {kind}s")
        bad = [t for t in items if t not in choices]
        if bad:
            raise argparse.ArgumentTypeError(
                f"unknown {kind}{'s' if len(bad) > 1 else ''} {', '.join(map(repr, bad))}; "
                f"choose from {', '.join(choices)}")
        return items
    return parse


def _common(p):
    d = FLConfig()
    p.add_argument("--dataset", default=d.dataset, choices=list(DATASETS))
    p.add_argument("--model", default=None, choices=list(MODELS),
                   help="default: mlp (one ReLU hidden layer); auror_mlp: AUROR's two tanh hidden layers")
    p.add_argument("--clients", type=int, default=d.clients)
    p.add_argument("--malicious", type=int, default=d.malicious)
    p.add_argument("--rounds", type=int, default=d.rounds)
    p.add_argument("--local-epochs", type=int, default=d.local_epochs)
    p.add_argument("--local-steps", type=int, default=None, help="SGD steps per round (overrides --local-epochs)")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--split", default=d.split, choices=list(SPLITS))
    p.add_argument("--alpha", type=float, default=d.alpha, help="Dirichlet concentration (--split dirichlet)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--backend", default=d.backend, choices=list(BACKENDS))
    p.add_argument("--world-size", type=int, default=d.world_size, help="MPC compute parties")
    p.add_argument("--num-malicious", type=int, default=None, help="f assumed by the defenses (default: --malicious)")
    p.add_argument("--trim", type=float, default=d.trim, help="trimmed mean: proportion cut at each end")
    p.add_argument("--to-keep", type=int, default=None, help="Multi-Krum: updates kept (default: clients - f)")
    p.add_argument("--max-norm", type=float, default=None,
                   help="norm clipping bound (default: norm of the server's root-data update)")
    p.add_argument("--flame-noise", type=float, default=d.flame_noise)
    p.add_argument("--poison-fraction", type=float, default=None,
                   help="targeted: share of ALL the clients' records poisoned (source-class images labelled "
                        "target, held by the malicious clients; default 0.1, AUROR's setting); backdoor: share of "
                        "each malicious client's records (default 0.5)")
    p.add_argument("--hidden", default=None,
                   help="hidden widths, comma-separated (mlp default 64; auror_mlp default 128,64)")
    p.add_argument("--boost", type=float, default=d.boost, help="backdoor: model-replacement factor")
    p.add_argument("--ipm-epsilon", type=float, default=d.ipm_epsilon)
    p.add_argument("--alie-z", type=float, default=None, help="ALIE's z (default: Baruch et al.'s z_max)")
    p.add_argument("--gaussian-std", type=float, default=d.gaussian_std)
    p.add_argument("--dev-type", default=d.dev_type, choices=list(DEV_TYPES),
                   help="min_max / min_sum perturbation direction")
    p.add_argument("--source", type=int, default=d.source, help="targeted attack: source class")
    p.add_argument("--target", type=int, default=d.target, help="targeted / backdoor: target class")
    p.add_argument("--data-dir", default=None, help="default: $PGKERNELS_DATA")
    p.add_argument("--out", default=None, help="folder for the JSON / Markdown / PNG outputs")
    p.add_argument("--no-progress", action="store_true")


def build_parser():
    parser = argparse.ArgumentParser(prog="pgkernels",
                                     description="Federated-learning poisoning lab (plaintext or MPC aggregation).")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fl", help="one federated run")
    _common(p)
    p.add_argument("--attack", default="none", choices=list(ATTACKS))
    p.add_argument("--defense", default="fedavg", choices=list(registry.NAMES))
    p = sub.add_parser("fl-sweep", help="every attack x defense pair, plus the no-attack baselines")
    _common(p)
    p.add_argument("--attacks", type=_list_of("attack", list(ATTACKS)), default=["alie", "ipm", "backdoor"],
                   help="comma-separated, from: " + ", ".join(ATTACKS))
    p.add_argument("--defenses", type=_list_of("defense", list(registry.NAMES)),
                   default=["fedavg", "median", "krum"], help="comma-separated, from: " + ", ".join(registry.NAMES))
    return parser


def _config(args, parser, **extra):
    fields = dict(dataset=args.dataset, model=args.model or "mlp", clients=args.clients, malicious=args.malicious,
                  rounds=args.rounds, local_epochs=args.local_epochs, local_steps=args.local_steps, lr=args.lr,
                  batch_size=args.batch_size, split=args.split, alpha=args.alpha, seed=args.seed,
                  backend=args.backend, world_size=args.world_size, num_malicious=args.num_malicious,
                  trim=args.trim, to_keep=args.to_keep, max_norm=args.max_norm, flame_noise=args.flame_noise,
                  boost=args.boost, ipm_epsilon=args.ipm_epsilon, alie_z=args.alie_z, gaussian_std=args.gaussian_std,
                  dev_type=args.dev_type, source=args.source, target=args.target, data_dir=args.data_dir,
                  poison_fraction=args.poison_fraction)
    if args.hidden is not None:
        try:
            fields["hidden"] = tuple(int(h) for h in args.hidden.split(",") if h.strip())
        except ValueError:
            parser.error(f"argument --hidden: expected comma-separated integers, got {args.hidden!r}")
    elif fields["model"] == "auror_mlp":
        fields["hidden"] = AUROR_HIDDEN
    fields.update(extra)
    try:
        return FLConfig(**fields)
    except ValueError as e:
        parser.error(str(e))


@contextlib.contextmanager
def _aggregator(cfg):
    if cfg.backend == "mpc":
        from .mpc import MPCAggregator

        with MPCAggregator(world_size=cfg.world_size) as agg:
            yield agg
    else:
        yield None


def _pct(x):
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _cmd_fl(args, parser):
    from .experiment import run
    from .report import plot

    cfg = _config(args, parser, attack=args.attack, defense=args.defense)
    with _aggregator(cfg) as agg:
        res = run(cfg, aggregator=agg, progress=not args.no_progress)
    fin = res["final"]
    print(f"{cfg.dataset}/{cfg.model}: attack={cfg.attack} defense={cfg.defense} backend={res['backend']} "
          f"clients={cfg.clients} malicious={res['malicious_clients']} rounds={cfg.rounds}")
    if res.get("poisoned_records"):
        print(f"  poisoned records {res['poisoned_records']} of {sum(res['clients_data_sizes'])} "
              f"({_pct(res['poisoned_records'] / sum(res['clients_data_sizes']))}), all on the malicious clients")
    print(f"  accuracy {_pct(res['accuracy'][0])} -> {_pct(fin['accuracy'])} (best {_pct(fin['best_accuracy'])}), "
          f"attack success rate {_pct(fin['asr'])}")
    if fin["mean_fpr"] is not None:
        print(f"  detection (mean over rounds): malicious excluded {_pct(fin['mean_tpr'])}, "
              f"benign excluded {_pct(fin['mean_fpr'])}")
    print(f"  wall time {res['wall_time_s']:.1f} s (training {res['train_seconds']:.1f} s, "
          f"aggregation {res['aggregate_seconds']:.1f} s)")
    if res.get("aggregator_summary"):
        print("  aggregator:", json.dumps(res["aggregator_summary"]))
    if args.out:
        out = pathlib.Path(args.out)
        stem = f"fl_{cfg.dataset}_{cfg.attack}_{cfg.defense}_{res['backend']}_s{cfg.seed}"
        write_json(res, out / f"{stem}.json")
        plot(res, out / f"{stem}.png")
        print(f"  wrote {out / stem}.json and .png")
    return 0


def _cmd_sweep(args, parser):
    from .experiment import sweep
    from .report import markdown, plot, write_table

    base = _config(args, parser, attack="none", defense=args.defenses[0])
    for a in args.attacks:  # check every pair's constraints before running anything
        for d in args.defenses:
            _config(args, parser, attack=a, defense=d)
    with _aggregator(base) as agg:
        res = sweep(base, args.attacks, args.defenses, aggregator=agg, progress=not args.no_progress)
    if args.out:
        stem = pathlib.Path(args.out) / f"sweep_{base.dataset}_{base.backend}_s{base.seed}"
        md = write_table(res, stem)
        plot(res, stem.with_name(stem.name + ".png"))
        print(md)
        print(f"wrote {stem}.md, .json and .png; {res['wall_time_s']:.1f} s")
    else:
        print(markdown(res))
        print(f"{res['wall_time_s']:.1f} s")
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "fl":
        return _cmd_fl(args, parser)
    return _cmd_sweep(args, parser)


if __name__ == "__main__":
    sys.exit(main())
