"""``pgkernels train``: private training under poisoning from the command line.

    pgkernels train --dataset adult --attack contamination --fraction 0.05 \\
        --defense none,advtrain,local --backend plaintext --out train_out/
    pgkernels train --dataset adult --fractions 0,0.01,0.02,0.05,0.1 --defense none,advtrain,local
    pgkernels train --dataset mnist --attack backdoor --fraction 0.5 --fraction-of attacker \\
        --defense none,safenet --backend mpc
    pgkernels train --dataset mnist --attack backdoor --fraction 0.5 --fraction-of attacker \\
        --defense none,spectral,activation_clustering,strip --eps 0.05

Writes ``<out>/<name>.json`` (every metric, and seconds / bytes / rounds of
MPC runs), ``<name>.md`` (the Markdown table, also printed) and ``<name>.png``
(with ``--fractions``: contamination accuracy or attack success and validation
accuracy against the fraction of poisoned records, as in Hayes & Ohrimenko's
figures). See :mod:`pgkernels.train.experiment`.
"""

import argparse
import sys

from ..attacks import ATTACKS, FRACTION_OF
from ..data import DATASETS
from .experiment import BACKENDS, DEFENSES, SPLITS, TrainConfig


def _ints(text):
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


def _floats(text):
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")


def _attributes(text):
    out = {}
    for item in text.split(","):
        if not item.strip():
            continue
        if "=" not in item:
            raise argparse.ArgumentTypeError(f"attributes are attribute=value pairs, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _label(text):
    return int(text) if text.lstrip("-").isdigit() else text


def _defenses(text):
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in DEFENSES]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"unknown defense(s) {bad}; choose from {', '.join(DEFENSES)}")
    return tuple(items)


def build_parser():
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="pgkernels train",
                                description="Private training under data poisoning: attacks, defenses, metrics.")
    p.add_argument("--dataset", default=d.dataset,
                   help=f"one of {', '.join(sorted(DATASETS))} (digits needs no data directory)")
    p.add_argument("--max-features", type=int, default=None,
                   help="newsgroups: tf-idf vocabulary size (default 5000)")
    p.add_argument("--task", default=None, choices=["income", "education"], help="Adult's task (default income)")
    p.add_argument("--data-dir", default=None, help="default: $PGKERNELS_DATA")
    p.add_argument("--parties", type=int, default=d.parties, help="number of data owners")
    p.add_argument("--per-party", type=int, default=None, help="training records per owner (dataset default)")
    p.add_argument("--val-size", type=int, default=None, help="validation records (dataset default)")
    p.add_argument("--split", default=d.split, choices=list(SPLITS))
    p.add_argument("--split-attribute", default=None, help="--split attribute: e.g. occupation, or label")
    p.add_argument("--attack", default=d.attack, help=f"one of {', '.join(ATTACKS)}")
    p.add_argument("--attackers", type=_ints, default=d.attackers, help="owner id(s) of the attacker(s): 0 or 0,3")
    p.add_argument("--fraction", type=float, default=d.fraction, help="share of records poisoned, in [0, 1]")
    p.add_argument("--fractions", type=_floats, default=None,
                   help="sweep over these fractions (e.g. 0,0.01,0.02,0.05,0.1) and plot the metrics against them")
    p.add_argument("--fraction-of", default=d.fraction_of, choices=list(FRACTION_OF),
                   help="total: of all training records (Hayes & Ohrimenko); attacker: of each attacker's records")
    p.add_argument("--attributes", type=_attributes, default=None,
                   help="contamination attribute values a_1..a_k': occupation=Sales,race=Black (dataset default)")
    p.add_argument("--label", type=_label, default=None, help="contamination label l_r (class name or index)")
    p.add_argument("--words", default=None, help="text contamination words, comma-separated")
    p.add_argument("--target", type=_label, default=None, help="backdoor / targeted: target class")
    p.add_argument("--source", type=_label, default=None, help="targeted: source class")
    p.add_argument("--defense", type=_defenses, default=d.defenses,
                   help=f"comma-separated list of {', '.join(DEFENSES)}")
    p.add_argument("--backend", default=d.backend, choices=list(BACKENDS))
    p.add_argument("--world-size", type=int, default=d.world_size, help="MPC compute parties")
    p.add_argument("--c", type=float, default=None, help="advtrain: weight of the adversary's loss")
    p.add_argument("--variant", default=d.variant, choices=["onehot", "uniform"],
                   help="advtrain: f' (onehot) or f'' (uniform)")
    p.add_argument("--hidden", type=_ints, default=None, help="hidden widths of f, e.g. 32 or 64,32")
    p.add_argument("--g-hidden", type=_ints, default=None, help="hidden widths of the adversary g")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--momentum", type=float, default=None)
    p.add_argument("--g-steps", type=int, default=None)
    p.add_argument("--threshold", type=float, default=d.threshold, help="SafeNet: minimum validation accuracy")
    p.add_argument("--safenet-val", type=int, default=d.safenet_val, help="SafeNet: validation records for filtering")
    p.add_argument("--eps", type=float, default=d.eps,
                   help="spectral signatures: assumed poison rate (removes ceil(1.5 eps n_c) records per class)")
    p.add_argument("--ac-size-threshold", type=float, default=d.ac_size_threshold,
                   help="activation clustering: flag a cluster holding at most this share of its class")
    p.add_argument("--detect-clean", type=int, default=d.detect_clean,
                   help="spectral/activation clustering: use the first N validation records as a trusted clean "
                        "set (only classes that cluster more than on it lose records; 0: the papers' rules)")
    p.add_argument("--suspect-ratio", type=float, default=d.suspect_ratio,
                   help="with --detect-clean: a class is suspect when its records spread this factor more "
                        "around their mean than its clean records")
    p.add_argument("--strip-fpr", type=float, default=d.strip_fpr, help="STRIP: calibrated false-positive rate")
    p.add_argument("--strip-blends", type=int, default=d.strip_blends, help="STRIP: clean records per query")
    p.add_argument("--strip-queries", type=int, default=d.strip_queries,
                   help="STRIP: attack queries and clean queries evaluated (each)")
    p.add_argument("--no-membership", action="store_true", help="skip party-membership inference")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", default="train_out", help="folder for the JSON / Markdown / PNG outputs")
    p.add_argument("--name", default=None, help="output file name (default from dataset, attack, backend, split, "
                   "fraction and defenses, so runs that differ do not overwrite each other)")
    p.add_argument("--no-progress", action="store_true")
    return p


def config_from_args(a):
    return TrainConfig(
        dataset=a.dataset, task=a.task, data_dir=a.data_dir, max_features=a.max_features, parties=a.parties,
        per_party=a.per_party,
        val_size=a.val_size, split=a.split, split_attribute=a.split_attribute, attack=a.attack,
        attackers=a.attackers, fraction=a.fraction, fraction_of=a.fraction_of, attributes=a.attributes,
        label=a.label, words=tuple(w.strip() for w in a.words.split(",") if w.strip()) if a.words else None,
        target=a.target, source=a.source, defenses=a.defense, backend=a.backend, world_size=a.world_size,
        c=a.c, variant=a.variant, hidden=a.hidden, g_hidden=a.g_hidden, epochs=a.epochs, batch_size=a.batch_size,
        lr=a.lr, momentum=a.momentum, g_steps=a.g_steps, threshold=a.threshold, safenet_val=a.safenet_val,
        eps=a.eps, ac_size_threshold=a.ac_size_threshold, detect_clean=a.detect_clean,
        suspect_ratio=a.suspect_ratio, strip_fpr=a.strip_fpr, strip_blends=a.strip_blends,
        strip_queries=a.strip_queries, membership=not a.no_membership, seed=a.seed, progress=not a.no_progress)


def main(argv=None):
    args = build_parser().parse_args(argv)
    from ..reporting import provenance
    from . import experiment

    # taken before the run: the commit and tree state the results came from
    started = provenance(" ".join(["pgkernels train"] + list(sys.argv[2:] if argv is None else argv)))
    try:
        cfg = config_from_args(args).check()
        if args.fractions is not None:
            result = experiment.sweep(cfg, args.fractions)
        else:
            result = experiment.run(cfg)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"pgkernels train: error: {e}", file=sys.stderr)
        return 2
    name = args.name or "_".join(
        ["train", cfg.dataset + (f"-{cfg.task}" if cfg.task else ""), cfg.attack, cfg.backend]
        + ([f"{cfg.split}-{cfg.split_attribute}"] if cfg.split != "iid" else [])
        + (["sweep"] if args.fractions is not None else [f"f{cfg.fraction:g}"])
        + ["+".join(cfg.defenses)])
    md = experiment.write_outputs(result, args.out, name, run_provenance=started)
    print(md)
    print(f"wrote {args.out}/{name}.json, .md and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
