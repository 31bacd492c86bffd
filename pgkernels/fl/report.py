"""Tables and plots of the federated lab's results (built on :mod:`pgkernels.reporting`).

:func:`markdown` -- the attack x defense tables of a sweep; :func:`write_table`
-- the sweep as JSON and Markdown; :func:`plot` -- accuracy and attack
success per round, of one run or of a whole sweep.
"""

import math
import pathlib

import numpy as np

from ..reporting import figure, markdown_table, pct, save_figure, write_json, write_text


def markdown(results):
    """Markdown tables (attack x defense) of a :func:`sweep`: "accuracy / ASR"
    in percent, AUROR's accuracy drop, and the detection rates (TPR / FPR)
    of the rules that select clients."""
    attacks, defenses = results["attacks"], results["defenses"]
    cell = {(r["attack"], r["defense"]): r for r in results["rows"]}
    cfg = results["base_config"]
    head = (f"{cfg['dataset']} / {cfg['model']}, {cfg['clients']} clients ({cfg['malicious']} malicious), "
            f"{cfg['rounds']} rounds, {cfg['split']} split, seed {cfg['seed']}")

    def table(title, fmt):
        rows = [[a] + [fmt(cell[(a, d)]) if (a, d) in cell else "" for d in defenses] for a in attacks]
        return f"**{title}**\n\n" + markdown_table(["attack"] + list(defenses), rows)

    parts = [head, "", table("test accuracy / attack success rate (%)",
                             lambda r: f"{pct(r['accuracy'])} / {pct(r['asr'])}"), "",
             table("accuracy drop vs. the same defense without attack (percentage points)",
                   lambda r: "–" if r.get("accuracy_drop") is None else f"{100 * r['accuracy_drop']:+.1f}")]
    if any(r["mean_fpr"] is not None for r in results["rows"]):
        def det(r):
            return "–" if r["mean_fpr"] is None else f"{pct(r['mean_tpr'])} / {pct(r['mean_fpr'])}"

        parts += ["", table("detection: malicious excluded (TPR) / benign excluded (FPR), mean over rounds (%)", det)]
    return "\n".join(parts) + "\n"


def write_table(results, path_prefix):
    """Write ``<path_prefix>.json`` (the whole sweep) and ``<path_prefix>.md``
    (:func:`markdown`); returns the Markdown text."""
    prefix = pathlib.Path(path_prefix)
    md = markdown(results)
    write_json(results, prefix.with_name(prefix.name + ".json"))
    write_text(md, prefix.with_name(prefix.name + ".md"))
    return md


def plot(result, path, max_cols=5):
    """Plot accuracy and attack success rate per round (matplotlib, Agg) to ``path``.

    ``result``: one :func:`run` result (two panels), or a :func:`sweep` with
    its runs (per defense an accuracy panel above an ASR panel, up to
    ``max_cols`` defenses per row; one colour per attack throughout).
    """
    if "runs" in result:
        groups = [(d, [r for r in result["runs"] if r["config"]["defense"] == d]) for d in result["defenses"]]
        attack_order = result["attacks"]
    elif "rounds" in result:
        groups = [(result["config"]["defense"], [result])]
        attack_order = [result["config"]["attack"]]
    else:
        raise ValueError("plot needs a run() result or a sweep() made with keep_runs=True")
    colors = {a: f"C{i % 10}" for i, a in enumerate(attack_order)}
    ncols = min(max_cols, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    fig = figure((3.4 * ncols + 0.6, 5.2 * nrows + 0.4))
    axes = fig.subplots(2 * nrows, ncols, squeeze=False, sharey="row")
    handles = {}
    for j, (dname, runs) in enumerate(groups):
        top, bottom = axes[2 * (j // ncols), j % ncols], axes[2 * (j // ncols) + 1, j % ncols]
        for res in runs:
            attack = res["config"]["attack"]
            x = res["eval_rounds"]
            (line,) = top.plot(x, res["accuracy"], color=colors[attack], label=attack)
            handles.setdefault(attack, line)
            if any(v is not None for v in res["asr"]):
                bottom.plot(x, [np.nan if v is None else v for v in res["asr"]], color=colors[attack])
        if not bottom.lines:
            bottom.text(0.5, 0.5, "untargeted attack(s):\nno success rate", ha="center", va="center",
                        transform=bottom.transAxes, color="gray")
            bottom.set_xlim(top.get_xlim())
        top.set_title(dname)
        bottom.set_xlabel("round")
        top.set_ylabel("test accuracy") if j % ncols == 0 else None
        bottom.set_ylabel("attack success rate") if j % ncols == 0 else None
        for ax in (top, bottom):
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
    for k in range(len(groups), nrows * ncols):  # unused panels
        axes[2 * (k // ncols), k % ncols].set_visible(False)
        axes[2 * (k // ncols) + 1, k % ncols].set_visible(False)
    if len(groups) == 1 and len(groups[0][1]) == 1:
        cfg = groups[0][1][0]["config"]
        fig.suptitle(f"{cfg['dataset']}: {cfg['attack']} vs {cfg['defense']} "
                     f"({cfg['malicious']}/{cfg['clients']} malicious)")
    else:
        cfg = result["base_config"]
        fig.suptitle(f"{cfg['dataset']} / {cfg['model']}: {cfg['malicious']}/{cfg['clients']} malicious, "
                     f"{cfg['split']} split")
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=min(10, len(handles)),
                   fontsize=8)
    return save_figure(fig, path, dpi=110)


__all__ = ["markdown", "plot", "write_table"]
