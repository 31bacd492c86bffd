"""Hayes & Ohrimenko's party-membership inference (NeurIPS 2018, Sec. 5) on
splits where the owners' data differ, with and without adversarial training.

    PGKERNELS_DATA=/path/to/datasets OMP_NUM_THREADS=1 python -m bench.membership --out docs/results/membership

For each setting (dataset, split): the owners' data from
:func:`pgkernels.data.make_parties` (10 owners; ``iid``, or ``attribute:NAME``:
records sorted by the value of the attribute NAME and cut into equal parts, so
each owner holds one or a few values -- the same split as ``pgkernels train
--split attribute --split-attribute NAME``), the undefended pooled model
(``none``) and adversarial training (``advtrain``, onehot variant f') for
each ``c``; the attack (:func:`pgkernels.metrics.party_membership_inference`:
multinomial logistic regression on ``f``'s output vectors, fitted on 70% of
the owners' records and scored on the other 30%), the label-only baseline
(the same attack on the one-hot true label alone: what the owners' label mix
gives away whatever ``f`` does) and the validation accuracy. Writes
``<name>.json`` (rows, settings, provenance), ``<name>.md``.
"""

import argparse
import datetime
import pathlib
import sys
import time

import numpy as np

from bench.common import provenance
from pgkernels import metrics as M
from pgkernels.data import make_parties
from pgkernels.reporting import markdown_table, pct, write_json, write_text
from pgkernels.train import advtrain
from pgkernels.train.experiment import DATASET_DEFAULTS


def build_parser():
    p = argparse.ArgumentParser(prog="python -m bench.membership", description=__doc__.split("\n\n")[0])
    p.add_argument("--settings", default="adult:iid,adult:attribute:occupation,adult:attribute:relationship,"
                   "adult:attribute:marital-status,mnist:attribute:label",
                   help="comma-separated DATASET:iid or DATASET:attribute:NAME")
    p.add_argument("--cs", default="1,3,10", help="advtrain weights c")
    p.add_argument("--parties", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="docs/results/membership")
    p.add_argument("--name", default="membership")
    return p


def _one(dataset, split, attribute, cs, a):
    dd = DATASET_DEFAULTS[dataset]
    data = make_parties(dataset, num_parties=a.parties, per_party=dd["per_party"], val_size=dd["val_size"],
                        split=split, attribute=attribute, seed=a.seed, data_dir=a.data_dir)
    hp = {k: dd[k] for k in ("hidden", "epochs", "batch_size", "lr", "momentum") if k in dd}
    label_only = M.party_membership_inference(np.zeros((len(data.y), 1)), data.party, seed=a.seed, labels=data.y,
                                              num_classes=data.num_classes)
    rows = []
    for defense, c in [("none", None)] + [("advtrain", c) for c in cs]:
        t = time.perf_counter()
        kw = dict(hp) if defense == "none" else dict(hp, c=c, variant="onehot")
        f, _ = advtrain.train_plaintext(data.X, data.y, data.party, data.num_parties, data.classes, defense=defense,
                                        seed=a.seed, progress=False, **kw)
        mem = M.party_membership_inference(M.model_outputs(f, data.X), data.party, seed=a.seed, return_details=True)
        rows.append({"dataset": dataset, "split": split if split == "iid" else f"attribute:{attribute}",
                     "defense": defense, "c": c, "membership": mem["accuracy"], "chance": mem["chance"],
                     "label_only_membership": label_only, "val_acc": M.accuracy(f, data.X_val, data.y_val),
                     "test_acc": M.accuracy(f, data.X_test, data.y_test), "hyperparams": hp,
                     "seconds": time.perf_counter() - t})
        r = rows[-1]
        print(f"{dataset} {r['split']} {defense} c={c}: membership {pct(r['membership'])}% "
              f"(label only {pct(label_only)}%), val {pct(r['val_acc'])}%", flush=True)
    return rows


def markdown(res):
    rows = res["rows"]
    settings = list(dict.fromkeys((r["dataset"], r["split"]) for r in rows))
    cs = res["settings"]["cs"]
    header = ["dataset", "split", "none: membership / val"] + [f"advtrain c={c:g}: membership / val (cost)"
                                                               for c in cs] + ["label-only membership"]
    table = []
    for ds, split in settings:
        rs = [r for r in rows if (r["dataset"], r["split"]) == (ds, split)]
        none = next(r for r in rs if r["defense"] == "none")
        cells = [ds, split, f"{pct(none['membership'])} / {pct(none['val_acc'])}"]
        for c in cs:
            r = next(r for r in rs if r["defense"] == "advtrain" and r["c"] == c)
            cells.append(f"{pct(r['membership'])} / {pct(r['val_acc'])} "
                         f"({100 * (none['val_acc'] - r['val_acc']):+.1f})")
        cells.append(pct(none["label_only_membership"]))
        table.append(cells)
    pv = res["provenance"]
    return (f"Party-membership inference (Hayes & Ohrimenko), {res['settings']['parties']} owners (chance "
            f"{pct(rows[0]['chance'])}%), attack on f's outputs scored on held-out owners' records; % "
            "membership accuracy / % validation accuracy (cost: validation points lost against none).\n\n"
            + markdown_table(header, table)
            + f"\n\nCommand: `{pv['command']}`; commit {pv['commit'][:12]}{' (dirty)' if pv['dirty'] else ''}; "
              f"{res['date']}; torch {pv['versions']['torch']}; {pv['cpus']} CPUs ({pv['cpu']}); "
              f"{res['wall_time_s']:.0f} s.\n")


def main(argv=None):
    a = build_parser().parse_args(argv)
    cs = [float(c) for c in a.cs.split(",") if c.strip()]
    prov = provenance()  # before the run: the commit and tree it ran from
    t0 = time.perf_counter()
    rows = []
    for item in a.settings.split(","):
        parts = item.strip().split(":")
        if parts[1:] == ["iid"]:
            rows += _one(parts[0], "iid", None, cs, a)
        elif len(parts) == 3 and parts[1] == "attribute":
            rows += _one(parts[0], "attribute", parts[2], cs, a)
        else:
            raise SystemExit(f"bad setting {item!r}: DATASET:iid or DATASET:attribute:NAME")
    res = {"settings": {**vars(a), "cs": cs}, "rows": rows, "provenance": prov,
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "wall_time_s": time.perf_counter() - t0}
    out = pathlib.Path(a.out)
    write_json(res, out / f"{a.name}.json")
    md = markdown(res)
    write_text(md, out / f"{a.name}.md")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
