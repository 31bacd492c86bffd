"""Poisoned-record detection experiments (issue 16): writes docs/results/detection/.

    PGKERNELS_DATA=/path/to/datasets python -m bench.detection mnist     # MNIST backdoor, plaintext
    python -m bench.detection mnist-eps   # spectral signatures with eps = the target class's poison rate
    python -m bench.detection mnist-clean # both detectors with a trusted clean set (5,000 validation records)
    python -m bench.detection mnist-none  # the clean pooled model (no attack), the accuracy to stay within 1 point of
    python -m bench.detection adult                                      # Adult 5% contamination, plaintext
    python -m bench.detection adult-clean # the same with a trusted clean set
    python -m bench.detection mpc                                        # digits, one MPC run per detector
    python -m bench.detection mpc-clean   # digits, spectral and activation clustering with a clean set, in MPC

Each run is :func:`pgkernels.train.experiment.run` (what ``pgkernels train``
does) and writes ``<name>.json`` (the result plus ``provenance``: command,
commit, versions, machine), ``<name>.md`` and ``<name>.png``. The ``mpc``
runs also run the plaintext twin of the same configuration and record the
MPC / plaintext time ratio.
"""

import os
import sys

from bench.common import provenance

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "results", "detection")

MNIST = dict(dataset="mnist", attack="backdoor", fraction=0.5, fraction_of="attacker", target=0,
             defenses=("none", "spectral", "activation_clustering", "strip"), eps=0.05, membership=False)
ADULT = dict(dataset="adult", attack="contamination", fraction=0.05,
             defenses=("none", "advtrain", "spectral", "activation_clustering"), eps=0.05, membership=False)
# the detectors with a trusted clean set: only classes whose records spread >= 1.5x more around their mean
# than the clean records of the class lose records; eps = the assumed poison rate within a poisoned class
MNIST_CLEAN = dict(MNIST, defenses=("none", "spectral", "activation_clustering"), eps=0.35, detect_clean=5000)
# digits, a small subset (10 owners x 30 records) so that one MPC run per detector fits a CPU
MPC = dict(dataset="digits", attack="backdoor", fraction=0.5, fraction_of="attacker", target=0, per_party=30,
           val_size=300, epochs=10, eps=0.05, strip_queries=40, strip_blends=8, membership=False)
ADULT_CLEAN = dict(ADULT, defenses=("none", "advtrain", "spectral", "activation_clustering"), detect_clean=5000)
# 15 of the ~45 records labelled 0 are poisoned: eps = 0.35, with the 300 validation records as the clean set
MPC_CLEAN = dict(MPC, eps=0.35, detect_clean=300)


def _save(result, name):
    from pgkernels.train import experiment

    result["provenance"] = provenance()
    md = experiment.write_outputs(result, OUT, name)
    prov = result["provenance"]
    with open(os.path.join(OUT, f"{name}.md"), "a") as f:
        f.write(f"\ncommand: `{prov['command']}`; commit {prov['commit'][:10]}"
                f"{' (dirty)' if prov['dirty'] else ''}; versions {prov['versions']}; {prov['cpu']} "
                f"({prov['cpus']} cpus)\n")
    print(md, flush=True)


def main(which):
    from pgkernels.train.experiment import TrainConfig, run

    progress = sys.stderr.isatty()
    if which == "mnist":
        _save(run(TrainConfig(**MNIST, progress=progress)), "mnist_backdoor_plaintext")
    elif which == "mnist-eps":
        # spectral signatures with eps at the target class's own poison rate (2,500 of ~7,400)
        cfg = dict(MNIST, defenses=("spectral",), eps=0.35)
        _save(run(TrainConfig(**cfg, progress=progress)), "mnist_backdoor_plaintext_spectral_eps0.35")
    elif which == "mnist-clean":
        _save(run(TrainConfig(**MNIST_CLEAN, progress=progress)), "mnist_backdoor_plaintext_clean_set")
    elif which == "mnist-none":
        cfg = dict(MNIST, attack="none", defenses=("none",))
        _save(run(TrainConfig(**cfg, progress=progress)), "mnist_no_attack_plaintext")
    elif which == "adult":
        _save(run(TrainConfig(**ADULT, progress=progress)), "adult_contamination_plaintext")
    elif which == "adult-clean":
        _save(run(TrainConfig(**ADULT_CLEAN, progress=progress)), "adult_contamination_plaintext_clean_set")
    elif which in ("mpc", "mpc-clean"):
        base, dets, suffix = (MPC, ("spectral", "activation_clustering", "strip"), "") if which == "mpc" else \
            (MPC_CLEAN, ("spectral", "activation_clustering"), "_clean_set")
        for det in dets:
            res = {}
            for backend in ("plaintext", "mpc"):
                res[backend] = run(TrainConfig(**base, defenses=(det,), backend=backend, progress=progress))
            r_mpc, r_pt = res["mpc"]["results"][det], res["plaintext"]["results"][det]
            r_mpc["plaintext_twin"] = {k: r_pt.get(k) for k in ("detect_tpr", "detect_fpr", "strip_tpr", "strip_fpr",
                                                                 "test_acc", "asr", "seconds")}
            r_mpc["mpc_over_plaintext_seconds"] = r_mpc["seconds"] / max(r_pt["seconds"], 1e-9)
            _save(res["mpc"], f"digits_{det}_mpc{suffix}")
    else:
        raise SystemExit(f"unknown experiment {which!r}: mnist, mnist-eps, mnist-clean, mnist-none, adult, adult-clean, mpc or "
                         "mpc-clean")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "mnist")
