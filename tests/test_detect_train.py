"""Detection inside private training: representations, detection and retraining in one MPC
session (train.mpc.detect_and_retrain_mpc), STRIP in MPC (train.mpc.strip_mpc), and their
plaintext twins (train.detect)."""

import numpy as np
import pytest
import torch

from pgkernels.train import advtrain, detect
from pgkernels.train.mpc import detect_and_retrain_mpc, strip_mpc

HP = dict(hidden=(6,), epochs=2, batch_size=16, lr=0.1, momentum=0.0)
# Power-iteration steps of the detectors, MPC and plaintext twin alike: the
# flags here have clear margins at 4 steps as at the default 12, at a third of
# the detection rounds.
DET = dict(detector_kwargs=dict(iters=4))


def _poisoned(seed=0, n=48, d=6, owners=4, poison=6):
    """Two classes; owner 0 stamps a strong trigger (feature d-1 = 6) on
    ``poison`` records and relabels them 0."""
    g = np.random.default_rng(seed)
    y = g.integers(0, 2, n)
    X = g.standard_normal((n, d)) * 0.5 + (2 * y[:, None] - 1) * 1.0
    party = np.arange(n) % owners
    bad = np.flatnonzero(party == 0)[:poison]
    X[bad, d - 1] = 6.0
    y[bad] = 0
    return X.astype(np.float32), y, party, bad


def test_record_weights_of_one_change_nothing():
    X, y, party, _ = _poisoned()
    f1, _ = advtrain.train_plaintext(X, y, party, 4, 2, seed=0, progress=False, **HP)
    f2, _ = advtrain.train_plaintext(X, y, party, 4, 2, seed=0, progress=False,
                                     record_weights=np.ones(len(X)), **HP)
    for a, b in zip(f1.parameters(), f2.parameters()):
        assert torch.allclose(a, b)
    with pytest.raises(ValueError, match="record_weights"):
        advtrain.train_plaintext(X, y, party, 4, 2, progress=False, record_weights=np.ones(3), **HP)


def test_plaintext_pipeline_flags_the_trigger():
    X, y, party, bad = _poisoned()
    f, info = detect.detect_and_retrain(X, y, party, 4, 2, detector="spectral", eps=0.15, progress=False, **HP)
    r = detect.rates(info["flags"], bad)
    assert r["tpr"] == 1.0 and r["poisoned"] == len(bad)


@pytest.mark.parametrize("world_size,reveal", [(2, "all"), (3, "own")])
def test_detect_and_retrain_mpc(world_size, reveal):
    X, y, party, bad = _poisoned()
    f, info = detect_and_retrain_mpc(X, y, party, 4, 2, detector="spectral", eps=0.15, reveal=reveal,
                                     progress=False, world_size=world_size, **DET, **HP)
    if reveal == "all":
        flags = info["flags"]
    else:  # each owner's own flags, in its records' order
        flags = np.zeros(len(X), dtype=bool)
        for p, own in info["flags"].items():
            flags[party == p] = own
    assert flags[bad].all()
    k = int(np.ceil(round(1.5 * 0.15 * (y == 0).sum(), 9)))
    assert flags[y == 0].sum() == k
    assert set(info["phases"]) == {"train", "representations", "detect", "retrain"}
    assert info["rounds"] > 0 and all(b > 0 for b in info["bytes"])
    # the retrained model: flagged records did not count, the clean task is learnt
    pred = f(torch.as_tensor(X)).argmax(1).numpy()
    keep = ~flags
    assert (pred[keep] == y[keep]).mean() > 0.8


def test_detect_and_retrain_mpc_with_a_clean_set():
    """A trusted clean set (fresh records of the same task, shared too): only the
    poisoned class loses records, and activation clustering flags exactly the
    poison, in MPC as in the plaintext pipeline."""
    X, y, party, bad = _poisoned(n=96, poison=12)
    Xc, yc, _, _ = _poisoned(seed=100, n=64, poison=0)
    hp = dict(HP, hidden=(8,))
    _, want = detect.detect_and_retrain(X, y, party, 4, 2, detector="activation_clustering", clean=(Xc, yc),
                                        progress=False, **DET, **hp)
    is_bad = np.zeros(len(X), dtype=bool)
    is_bad[bad] = True
    assert (want["flags"] == is_bad).all()
    _, info = detect_and_retrain_mpc(X, y, party, 4, 2, detector="activation_clustering", clean=(Xc, yc),
                                     reveal="all", progress=False, **DET, **hp)
    assert (info["flags"] == is_bad).all()
    with pytest.raises(ValueError, match="clean must be"):
        detect_and_retrain_mpc(X, y, party, 4, 2, clean=(Xc[:, :3], yc), **hp)


def test_detect_and_retrain_errors():
    X, y, party, _ = _poisoned()
    with pytest.raises(ValueError, match="detector must be one of"):
        detect_and_retrain_mpc(X, y, party, 4, 2, detector="strip")
    with pytest.raises(ValueError, match="reveal must be one of"):
        detect_and_retrain_mpc(X, y, party, 4, 2, reveal="owners")


def _strip_case():
    torch.manual_seed(0)
    f = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    with torch.no_grad():
        f[1].weight[:, 5] = 3.0  # feature 5 (the trigger) drives class 0 hard
        f[3].weight[0] += 2.0
    g = np.random.default_rng(1)
    clean = g.standard_normal((4, 6)) * 0.5
    cal = g.standard_normal((12, 6)) * 0.5
    q = g.standard_normal((6, 6)) * 0.5
    q[:3, 5] = 8.0  # triggered queries
    return f, q, clean, cal


def test_strip_mpc_equals_plaintext():
    f, q, clean, cal = _strip_case()
    want, thr = detect.strip(f, q, clean, cal, fpr=0.1)
    H = detect.strip_entropies(f, q, clean)
    assert np.abs(H - thr).min() > 0.05  # clear margins: fixed point cannot flip a decision
    assert want[:3].all()
    out = strip_mpc(f, q, clean, cal, fpr=0.1, world_size=2, progress=False)
    assert (out["flags"] == want).all()
    assert out["rounds"] > 0


def test_cli_detection_defenses(tmp_path):
    import json

    from pgkernels.train.cli import main

    rc = main(["--dataset", "digits", "--attack", "backdoor", "--fraction", "0.5", "--fraction-of", "attacker",
               "--per-party", "30", "--val-size", "200", "--epochs", "3", "--eps", "0.1", "--strip-queries", "20",
               "--strip-blends", "4", "--defense", "none,spectral,activation_clustering,strip", "--no-membership",
               "--no-progress", "--detect-clean", "100", "--out", str(tmp_path), "--name", "det"])
    assert rc == 0
    res = json.loads((tmp_path / "det.json").read_text())["results"]
    for d in ("spectral", "activation_clustering"):
        assert 0 <= res[d]["detect_tpr"] <= 1 and 0 <= res[d]["detect_fpr"] <= 1 and "asr" in res[d]
        assert res[d]["clean_records"] == 100 and res[d]["ratio"] == 1.5
    assert res["strip"]["strip_queries"] == 20 and res["strip"]["strip_blends"] == 4
    assert res["strip"]["asr"] == res["none"]["asr"]  # STRIP inspects the pooled model itself
    md = (tmp_path / "det.md").read_text()
    assert "detected (TPR %)" in md and (tmp_path / "det.png").exists()
    with pytest.raises(SystemExit):
        main(["--defense", "spectral,poison"])
    assert main(["--dataset", "digits", "--eps", "2", "--defense", "spectral", "--out", str(tmp_path)]) == 2
    assert main(["--dataset", "digits", "--detect-clean", "-1", "--defense", "spectral", "--out", str(tmp_path)]) == 2
    assert main(["--dataset", "digits", "--suspect-ratio", "0.5", "--defense", "spectral", "--out", str(tmp_path)]) == 2
