"""AUROR's threat setting (Shen, Tople & Saxena, ACSAC 2016) in the federated lab:
targeted poisoning (source-class images labelled as the target, a fraction of
ALL the training data, held only by the malicious clients) against every rule
of the registry, over the poisoned fraction and the share of malicious clients.

    PGKERNELS_DATA=/path/to/datasets OMP_NUM_THREADS=1 \\
        python -m bench.auror_threat --out docs/results/auror --jobs 2
    python -m bench.auror_threat --backend mpc --defenses auror --malicious 3 --fractions 0.1 \\
        --rounds 10 --out docs/results/auror --name auror_mpc

Rows: each (defense, malicious clients, poisoned fraction) run, with final test
accuracy, attack success (share of source-class test images classified as the
target), the accuracy drop against the same rule (same f) without attack, and
AUROR-style detection rates. Writes ``<name>.json`` (rows, every setting, the
provenance: command, commit, versions, machine), ``<name>.md`` and
``<name>.png``. Configurations a rule refuses (Bulyan needs n >= 4f + 3) are
listed as skipped with the reason.
"""

import argparse
import concurrent.futures
import datetime
import pathlib
import sys
import time

from bench.common import provenance
from pgkernels.defenses import registry
from pgkernels.fl import FLConfig, run
from pgkernels.reporting import figure, markdown_table, pct, save_figure, write_json, write_text


def _floats(text):
    return [float(t) for t in text.split(",") if t.strip()]


def _ints(text):
    return [int(t) for t in text.split(",") if t.strip()]


def build_parser():
    p = argparse.ArgumentParser(prog="python -m bench.auror_threat", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--model", default="auror_mlp")
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--malicious", type=_ints, default=[1, 2, 3], help="malicious-client counts, at --base-fraction")
    p.add_argument("--fractions", type=_floats, default=[0.05, 0.1, 0.2],
                   help="poisoned fractions of all training data, at --base-malicious")
    p.add_argument("--base-fraction", type=float, default=0.1)
    p.add_argument("--base-malicious", type=int, default=3)
    p.add_argument("--defenses", default=",".join(registry.NAMES))
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--local-steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="plaintext", choices=["plaintext", "mpc"])
    p.add_argument("--world-size", type=int, default=2)
    p.add_argument("--no-baseline", action="store_true", help="skip the no-attack runs (no accuracy drop)")
    p.add_argument("--jobs", type=int, default=1, help="plaintext runs in parallel processes")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="docs/results/auror")
    p.add_argument("--name", default=None, help="default: auror_<backend>")
    return p


def _settings(a):
    """(defense, malicious, fraction, attack) of every run, and the skipped ones with their reason."""
    defenses = [d.strip() for d in a.defenses.split(",") if d.strip()]
    grid = [(m, a.base_fraction) for m in a.malicious] + [(a.base_malicious, f) for f in a.fractions]
    grid = list(dict.fromkeys(grid))
    runs, skipped = [], []
    for d in defenses:
        for m, f in grid:
            runs.append((d, m, f, "targeted"))
        if not a.no_baseline:  # one no-attack run per rule, with f = --base-malicious for the rules that take f
            runs.append((d, a.base_malicious, 0.0, "none"))
    ok = []
    for d, m, f, attack in runs:
        try:
            _config(a, d, m, f, attack)
            ok.append((d, m, f, attack))
        except ValueError as e:
            skipped.append({"defense": d, "malicious": m, "poison_fraction": f, "attack": attack, "reason": str(e)})
    return ok, skipped


def _config(a, defense, malicious, fraction, attack):
    return FLConfig(dataset=a.dataset, model=a.model, hidden=(128, 64) if a.model == "auror_mlp" else (64,),
                    clients=a.clients, malicious=malicious, attack=attack, defense=defense,
                    poison_fraction=fraction if attack == "targeted" else None, rounds=a.rounds,
                    local_steps=a.local_steps, batch_size=a.batch_size, lr=a.lr, seed=a.seed, backend=a.backend,
                    world_size=a.world_size, data_dir=a.data_dir)


def _one(args):
    a, setting = args
    cfg = _config(a, *setting)
    res = run(cfg, progress=False)
    fin = res["final"]
    return {"defense": cfg.defense, "attack": cfg.attack, "malicious": cfg.malicious,
            "malicious_share": cfg.malicious / cfg.clients,
            "poison_fraction": cfg.effective_poison_fraction if cfg.attack == "targeted" else 0.0,
            "poisoned_records": res["poisoned_records"], "records": sum(res["clients_data_sizes"]),
            "accuracy": fin["accuracy"], "asr": fin["asr"], "best_accuracy": fin["best_accuracy"],
            "mean_tpr": fin["mean_tpr"], "mean_fpr": fin["mean_fpr"], "accuracy_curve": res["accuracy"],
            "asr_curve": res["asr"], "wall_time_s": res["wall_time_s"], "aggregate_seconds": res["aggregate_seconds"],
            "aggregator_summary": res.get("aggregator_summary"), "backend": res["backend"]}


def _with_drops(rows):
    base = {r["defense"]: r for r in rows if r["attack"] == "none"}
    for r in rows:
        if r["attack"] != "targeted":
            continue
        b = base.get(r["defense"])
        r["clean_accuracy"] = b["accuracy"] if b else None
        r["accuracy_drop"] = (b["accuracy"] - r["accuracy"]) if b else None
    return rows


def markdown(res):
    a = res["settings"]
    rows = [r for r in res["rows"] if r["attack"] == "targeted"]
    defenses = list(dict.fromkeys(r["defense"] for r in res["rows"]))
    cell = {(r["defense"], r["malicious"], r["poison_fraction"]): r for r in rows}

    def fmt(r):
        if r is None:
            return "–"
        drop = "" if r.get("accuracy_drop") is None else f" ({100 * r['accuracy_drop']:+.1f})"
        return f"{pct(r['asr'])} / {pct(r['accuracy'])}{drop}"

    out = [f"AUROR's targeted poisoning (digit {a['source']} -> {a['target']}), {a['dataset']}, model "
           f"{a['model']}, {a['clients']} clients, {a['rounds']} rounds x {a['local_steps']} local SGD steps "
           f"(batch {a['batch_size']}, lr {a['lr']}), backend {res['backend']}, seed {a['seed']}. "
           "Cells: attack success % / test accuracy % (accuracy drop against the same rule without attack, "
           f"with f = {a['base_malicious']} for the rules that take f; points, negative = higher accuracy under "
           "attack).", ""]
    ms = sorted({r["malicious"] for r in rows if r["poison_fraction"] == a["base_fraction"]})
    if ms:
        out.append(f"Against the share of malicious clients ({pct(a['base_fraction'], 0)}% of all training data "
                   "poisoned):")
        out.append("")
        header = ["defense"] + [f"{pct(m / a['clients'], 0)}% malicious" for m in ms]
        out.append(markdown_table(header, [[d] + [fmt(cell.get((d, m, a["base_fraction"]))) for m in ms]
                                           for d in defenses]))
        out.append("")
    fs = sorted({r["poison_fraction"] for r in rows if r["malicious"] == a["base_malicious"]})
    if len(fs) > 1:
        out.append(f"Against the poisoned fraction of all training data ({a['base_malicious']}/{a['clients']} "
                   "malicious clients):")
        out.append("")
        header = ["defense"] + [f"{pct(f, 0)}% poisoned" for f in fs]
        out.append(markdown_table(header, [[d] + [fmt(cell.get((d, a["base_malicious"], f))) for f in fs]
                                           for d in defenses]))
        out.append("")
    det = [r for r in rows if r["mean_tpr"] is not None]
    if det:
        out.append("Detection (rules that select clients; mean over rounds): malicious excluded / benign excluded: "
                   + "; ".join(f"{r['defense']} m={r['malicious']} p={r['poison_fraction']:g}: "
                               f"{pct(r['mean_tpr'])}/{pct(r['mean_fpr'])}" for r in det) + ".")
        out.append("")
    for s in res["skipped"]:
        what = f"{s['poison_fraction']:g} poisoned" if s["attack"] == "targeted" else "no attack"
        out.append(f"Skipped: {s['defense']} with {s['malicious']} malicious, {what}: {s['reason']}")
    out.append("")
    out.append(f"Command: `{res['provenance']['command']}`; commit {res['provenance']['commit'][:12]}"
               f"{' (dirty)' if res['provenance']['dirty'] else ''}; {res['date']}; "
               f"torch {res['provenance']['versions']['torch']}; {res['provenance']['cpus']} CPUs "
               f"({res['provenance']['cpu']}); {res['wall_time_s']:.0f} s.")
    return "\n".join(out) + "\n"


def plot(res, path):
    a = res["settings"]
    rows = [r for r in res["rows"] if r["attack"] == "targeted"]
    defenses = list(dict.fromkeys(r["defense"] for r in rows))
    fig = figure((11, 6.5))
    axes = fig.subplots(2, 2)
    for col, (key, fixed, xlabel) in enumerate([
            ("malicious_share", ("poison_fraction", a["base_fraction"]), "share of malicious clients"),
            ("poison_fraction", ("malicious", a["base_malicious"]), "poisoned fraction of all training data")]):
        for d in defenses:
            pts = sorted((r[key], r) for r in rows if r["defense"] == d and r[fixed[0]] == fixed[1])
            if not pts:
                continue
            xs = [100 * x for x, _ in pts]
            axes[0][col].plot(xs, [100 * r["asr"] for _, r in pts], marker="o", label=d)
            axes[1][col].plot(xs, [100 * r["accuracy"] for _, r in pts], marker="o", label=d)
        axes[0][col].set_ylabel("attack success (%)")
        axes[1][col].set_ylabel("test accuracy (%)")
        axes[1][col].set_xlabel(xlabel + " (%)")
        axes[0][col].set_title(f"at {fixed[0].replace('_', ' ')} = {fixed[1]:g}")
    axes[0][0].legend(fontsize=7, ncols=2)
    fig.suptitle(f"AUROR threat model: targeted {a['source']}->{a['target']}, {a['dataset']}/{a['model']}, "
                 f"{a['clients']} clients, {res['backend']}")
    return save_figure(fig, path)


def main(argv=None):
    a = build_parser().parse_args(argv)
    settings, skipped = _settings(a)
    name = a.name or f"auror_{a.backend}"
    prov = provenance()  # before the run: the commit and tree it ran from
    t0 = time.perf_counter()
    jobs = [(a, s) for s in settings]
    rows = []
    if a.jobs > 1 and a.backend == "plaintext":
        with concurrent.futures.ProcessPoolExecutor(a.jobs) as pool:
            for i, r in enumerate(pool.map(_one, jobs)):
                rows.append(r)
                print(f"[{i + 1}/{len(jobs)}] {r['defense']} {r['attack']} m={r['malicious']} "
                      f"p={r['poison_fraction']:g}: asr {pct(r['asr'])} acc {pct(r['accuracy'])}", flush=True)
    else:
        for i, job in enumerate(jobs):
            r = _one(job)
            rows.append(r)
            print(f"[{i + 1}/{len(jobs)}] {r['defense']} {r['attack']} m={r['malicious']} "
                  f"p={r['poison_fraction']:g}: asr {pct(r['asr'])} acc {pct(r['accuracy'])}", flush=True)
    cfg0 = _config(a, settings[0][0], a.base_malicious, a.base_fraction, "targeted")
    res = {"settings": {**vars(a), "source": cfg0.source, "target": cfg0.target, "hidden": list(cfg0.hidden)},
           "backend": a.backend, "rows": _with_drops(rows), "skipped": skipped,
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "provenance": prov, "wall_time_s": time.perf_counter() - t0}
    out = pathlib.Path(a.out)
    write_json(res, out / f"{name}.json")
    md = markdown(res)
    write_text(md, out / f"{name}.md")
    plot(res, out / f"{name}.png")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
