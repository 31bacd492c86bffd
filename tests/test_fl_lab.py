"""The federated-learning poisoning lab (pgkernels.fl): the attacks' defining
properties, the metrics, the models, every rule of the registry as the lab
aggregates it (values against the references and independent
implementations), short simulations on the bundled digits, the MPC backend
against the plaintext one, the sweep/table/plot outputs and the command
line's errors."""

import json

import numpy as np
import pytest
import torch
from scipy.stats import norm

from pgkernels import attacks as A
from pgkernels import metrics, models
from pgkernels.attacks import updates
from pgkernels.defenses import registry
from pgkernels.fl import FLConfig, PlaintextAggregator, cli, plot, run, sweep, write_table


def _updates(m=12, d=50, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0.3, 1.0, size=(m, d)) * rng.uniform(0.5, 2.0, size=(m, 1))


def _pairwise_sq(U):
    return ((U[:, None, :] - U[None, :, :]) ** 2).sum(-1)


# ---------------------------------------------------------------- data poisoning

def test_label_flip_maps_every_label():
    y = np.arange(10).repeat(3)
    out = A.label_flip(y, 10)
    assert np.array_equal(out, 9 - y)
    assert np.array_equal(A.label_flip(out, 10), y)
    with pytest.raises(ValueError, match="labels"):
        A.label_flip(np.array([0, 10]), 10)


def test_targeted_mislabel_only_touches_source():
    y = np.array([0, 1, 2, 1, 3, 1])
    out = A.targeted_mislabel(y, source=1, target=7)
    assert np.array_equal(out, [0, 7, 2, 7, 3, 7])
    assert np.array_equal(y, [0, 1, 2, 1, 3, 1])  # input untouched


@pytest.mark.parametrize("name,side,size", [("digits", 8, 2), ("mnist", 28, 3)])
def test_backdoor_trigger_and_labels(name, side, size):
    rng = np.random.default_rng(1)
    X = rng.uniform(0, 0.9, size=(40, side, side)).astype(np.float32)
    y = rng.integers(0, 10, size=40)
    trig = A.make_trigger(name)
    assert len(trig.indices) == size * size and set(trig.values) == {1.0}
    Xp, yp, idx = A.backdoor(X, y, target=7, trigger=trig, fraction=0.5, seed=3, return_indices=True)
    assert len(idx) == 20
    flat = Xp.reshape(40, -1)
    assert np.all(flat[np.ix_(idx, list(trig.indices))] == 1.0)
    assert np.all(yp[idx] == 7)
    rest = np.setdiff1d(np.arange(40), idx)
    assert np.array_equal(Xp[rest], X[rest]) and np.array_equal(yp[rest], y[rest])
    assert trig.present(Xp).sum() == 20
    # the test-time trigger is the same patch, shape preserved
    Xt = A.apply_trigger(X, name)
    assert Xt.shape == X.shape and trig.present(Xt).all() and not trig.present(X).any()
    # deterministic
    assert np.array_equal(A.backdoor(X, y, 7, trig, 0.5, seed=3)[0], Xp)


def test_tabular_trigger_sets_a_few_features():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 12)).astype(np.float32)
    trig = A.tabular_trigger(X, k=4)
    assert len(trig.indices) == 4
    assert np.allclose(trig.values, X[:, list(trig.indices)].max(0))
    assert trig.present(trig.stamp(X)).all()


# ---------------------------------------------------------------- update attacks

def test_sign_flip_and_scale():
    U = _updates()
    assert np.array_equal(A.sign_flip(U), -U)
    assert np.allclose(A.scale(U[0], 5.0), 5.0 * U[0])


def test_gaussian_is_seeded_and_has_the_std():
    U = np.zeros((4, 20000))
    G = A.gaussian(U, std=0.5, rng=np.random.default_rng(0))
    assert G.shape == U.shape
    assert abs(G.std() - 0.5) < 0.01 and abs(G.mean()) < 0.01
    assert np.array_equal(G, A.gaussian(U, std=0.5, rng=np.random.default_rng(0)))


def test_alie_within_z_std_of_the_mean():
    U = _updates(16)
    n, f = 20, 4
    s = np.floor(n / 2 + 1) - f
    z = norm.ppf((n - s) / n)
    assert A.alie_z(n, f) == pytest.approx(z)
    m = A.alie(U, n, f)
    mu, sd = U.mean(0), U.std(0, ddof=1)
    assert np.allclose(m, mu - z * sd)
    assert np.all(np.abs(m - mu) <= z * sd + 1e-12)


def test_ipm_is_minus_epsilon_mean():
    U = _updates()
    for eps in (0.1, 10.0):
        assert np.allclose(A.ipm(U, eps), -eps * U.mean(0))


@pytest.mark.parametrize("dev_type", ["std", "unit_vec", "sign"])
def test_min_max_stays_within_benign_diameter(dev_type):
    U = _updates()
    m, gamma = A.min_max(U, dev_type=dev_type, return_gamma=True)
    bound = _pairwise_sq(U).max()
    assert ((U - m) ** 2).sum(1).max() <= bound * (1 + 1e-9)
    assert gamma > 0
    dev = updates._deviation(U, U.mean(0), dev_type)
    # gamma is (nearly) the largest feasible one
    assert ((U - (U.mean(0) - 1.01 * gamma * dev)) ** 2).sum(1).max() > bound


@pytest.mark.parametrize("dev_type", ["std", "unit_vec", "sign"])
def test_min_sum_within_benign_sum(dev_type):
    U = _updates()
    scores = _pairwise_sq(U).sum(1)
    m, gamma = A.min_sum(U, dev_type=dev_type, return_gamma=True)
    assert ((U - m) ** 2).sum() <= scores.max() * (1 + 1e-9) and gamma > 0
    m2, gamma2 = A.min_sum(U, dev_type=dev_type, bound="min", return_gamma=True)
    assert ((U - m2) ** 2).sum() <= scores.min() * (1 + 1e-9) and gamma2 <= gamma


def test_min_max_search_is_scale_free():
    """The released search from gamma=10 can reach at most 20; ours restarts higher."""
    U = _updates() * 100.0
    m, gamma = A.min_max(U, dev_type="unit_vec", return_gamma=True)
    assert gamma > 20
    assert ((U - m) ** 2).sum(1).max() <= _pairwise_sq(U).max() * (1 + 1e-9)


# ---------------------------------------------------------------- metrics

def test_detection_rates_hand_example():
    det = metrics.detection_rates([1, 3, 4, 5, 6, 7], malicious_indices=[0, 1, 2], n=10)
    assert det["tpr"] == pytest.approx(2 / 3)   # 0 and 2 excluded
    assert det["fpr"] == pytest.approx(2 / 7)   # 8 and 9 excluded
    assert det["excluded_malicious"] == 2 and det["excluded_benign"] == 2 and det["kept"] == 6
    none = metrics.detection_rates(range(5), [], 5)
    assert none["tpr"] is None and none["fpr"] == 0.0


def test_accuracy_asr_and_drop():
    class Const(torch.nn.Module):
        def forward(self, x):
            out = torch.zeros(x.shape[0], 10)
            out[:, 7] = 1.0
            return out

    X = np.random.default_rng(0).uniform(size=(50, 64)).astype(np.float32)
    y = np.arange(50) % 10
    model = Const()
    trigger = A.make_trigger("digits")
    assert metrics.accuracy(model, X, y) == pytest.approx(0.1)
    assert metrics.attack_success_rate(model, X, y, "backdoor", target=7, trigger=trigger) == 1.0
    assert metrics.attack_success_rate(model, X, y, "targeted", source=1, target=7) == 1.0
    assert metrics.attack_success_rate(model, X, y, "label_flip", num_classes=10) == pytest.approx(0.1)  # y=2 -> 7
    assert metrics.attack_success_rate(model, X, y, "alie") is None
    assert metrics.accuracy_drop(0.9, 0.7) == pytest.approx(0.2)


# ---------------------------------------------------------------- models

def test_models_flat_roundtrip_and_shapes():
    class DS:
        name, num_classes = "digits", 10
        X_train = np.zeros((5, 8, 8), np.float32)

    for name in ("logreg", "mlp", "cnn"):
        m = models.make_model(name, DS, seed=0)
        v = models.get_flat(m)
        assert v.dtype == torch.float32 and v.ndim == 1
        models.set_flat(m, v + 1.0)
        assert torch.allclose(models.get_flat(m), v + 1.0)
        assert m(torch.zeros(3, 64)).shape == (3, 10)
        assert m(torch.zeros(3, 8, 8)).shape == (3, 10)
        assert torch.equal(models.get_flat(models.make_model(name, DS, seed=0)), v)  # seeded

    class Tab(DS):
        X_train = np.zeros((5, 10), np.float32)

    with pytest.raises(ValueError, match="square"):
        models.make_model("cnn", Tab)


# ---------------------------------------------------------------- defenses registry

def _independent(name, U, kw):
    """Each rule computed without pgkernels.defenses (Flower, scipy, numpy, or
    the paper's formula written out), or None where the rule has no outside
    implementation (FLAME and AUROR are checked against the reference only)."""
    from scipy.stats import trim_mean

    from flwr.server.strategy import aggregate as fl

    res = [([u], 1) for u in U]
    f = kw["num_malicious"]
    if name == "fedavg":
        return U.mean(0)
    if name == "median":
        return np.median(U, axis=0)
    if name == "trimmed_mean":
        return trim_mean(U, kw["proportiontocut"], axis=0)
    if name == "krum":
        return fl.aggregate_krum(res, f, 0)[0]
    if name == "multi_krum":
        return fl.aggregate_krum(res, f, kw["to_keep"])[0]
    if name == "bulyan":
        return fl.aggregate_bulyan(res, f, fl.aggregate_krum, to_keep=0)[0]
    if name == "norm_clip":
        norms = np.linalg.norm(U, axis=1)
        return (U * np.minimum(1.0, kw["max_norm"] / norms)[:, None]).mean(0)
    if name == "fltrust":
        g = kw["server_update"]
        cos = U @ g / (np.linalg.norm(U, axis=1) * np.linalg.norm(g))
        trust = np.maximum(cos, 0)
        scaled = U * (np.linalg.norm(g) / np.linalg.norm(U, axis=1))[:, None]
        return (trust[:, None] * scaled).sum(0) / trust.sum()
    return None


def test_every_defense_aggregates():
    """The lab's aggregator gives, for every rule of the registry, the rule's
    value on the updates: the reference's, and where one exists an independent
    implementation's; the selected clients are those the reference selects."""
    U = _updates(20, 30, seed=2)
    agg = PlaintextAggregator()
    kw = dict(num_malicious=4, proportiontocut=0.2, to_keep=16, max_norm=1.0, server_update=U[5] + 0.1,
              noise_lambda=0.0, alpha=2.0, iters=3)
    assert set(registry.NAMES) == {"fedavg", "median", "trimmed_mean", "krum", "multi_krum", "bulyan", "norm_clip",
                                   "fltrust", "flame", "auror"}
    for name in registry.NAMES:
        out, kept = agg.aggregate(name, U, **kw)
        assert agg.last_invalid == [], name
        assert out.shape == (30,) and np.all(np.isfinite(out)), name
        rule = registry.get(name)
        ref, ref_kept = rule.aggregate_plain(U, **kw)
        np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12, err_msg=name)
        other = _independent(name, U, kw)
        if other is not None:
            np.testing.assert_allclose(out, other, rtol=1e-10, atol=1e-12, err_msg=name)
        if rule.selection is None:
            assert kept is None, name
        else:
            assert kept.tolist() == ref_kept.tolist(), name
            assert np.all(np.diff(kept) > 0) and kept.min() >= 0 and kept.max() < 20
            if name in ("multi_krum", "flame", "auror"):  # these rules average exactly the kept clients
                scale = 1.0
                if name == "flame":  # ... after clipping to the median norm, over n - f' admitted
                    norms = np.linalg.norm(U, axis=1)
                    scale = np.minimum(1.0, np.median(norms) / norms)[kept, None]
                np.testing.assert_allclose(out, (U[kept] * scale).mean(0), rtol=1e-10, err_msg=name)
    # the selections on these updates are not trivial
    assert len(agg.aggregate("multi_krum", U, **kw)[1]) == 16 and len(agg.aggregate("krum", U, **kw)[1]) == 1
    with pytest.raises(ValueError, match="unknown defense"):
        agg.aggregate("nope", U)


# ---------------------------------------------------------------- simulation

@pytest.mark.parametrize("defense", ["fedavg", "krum"])
def test_short_digits_run_learns(defense):
    res = run(FLConfig(dataset="digits", defense=defense, rounds=3, local_epochs=5), progress=False)
    assert len(res["accuracy"]) == 4 and len(res["rounds"]) == 3
    assert res["final"]["accuracy"] > 0.5
    json.dumps(res, allow_nan=False)
    if defense == "krum":
        assert all(len(r["kept"]) == 1 for r in res["rounds"])


def test_run_is_deterministic_and_attacks_are_applied():
    cfg = FLConfig(dataset="digits", attack="backdoor", defense="multi_krum", rounds=2, boost=2.0)
    a, b = run(cfg, progress=False), run(cfg, progress=False)
    assert a["accuracy"] == b["accuracy"] and a["asr"] == b["asr"]
    assert a["malicious_clients"] == [0, 1, 2, 3]
    assert all(r["tpr"] is not None and r["fpr"] is not None for r in a["rounds"])
    assert all(0.0 <= v <= 1.0 for v in a["asr"])
    # update attacks: the malicious rows really are replaced (IPM with a huge epsilon wrecks FedAvg)
    ipm = run(FLConfig(dataset="digits", attack="ipm", ipm_epsilon=50.0, rounds=3, local_epochs=2), progress=False)
    clean = run(FLConfig(dataset="digits", rounds=3, local_epochs=2), progress=False)
    assert ipm["final"]["accuracy"] < clean["final"]["accuracy"] - 0.2


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="malicious"):
        FLConfig(clients=5, malicious=6)
    with pytest.raises(ValueError, match="rounds"):
        FLConfig(rounds=-1)
    with pytest.raises(ValueError, match="attack"):
        FLConfig(attack="poison-everything")
    with pytest.raises(ValueError, match="defense"):
        FLConfig(defense="magic")
    with pytest.raises(ValueError, match="Bulyan"):
        FLConfig(clients=10, malicious=3, defense="bulyan")


def test_krum_needs_2f_plus_3_on_both_backends():
    """Issue 14's bug: FLConfig accepted Krum with n >= f + 3 while the rule needs
    n >= 2f + 3, so n=10, f=4 passed the lab and the plaintext backend and only
    failed on the MPC servers. The lab now reads the bound from the registry and
    refuses it up front, the same way for both backends."""
    msg = r"FLConfig.clients: Krum needs clients >= 2f \+ 3 \(num_malicious f=4\), got 10"
    for backend in ("plaintext", "mpc"):
        with pytest.raises(ValueError, match=msg):
            FLConfig(clients=10, malicious=4, defense="krum", backend=backend)
        with pytest.raises(ValueError, match=msg):  # run() refuses before any server starts
            run(dict(clients=10, malicious=4, defense="krum", backend=backend, rounds=1), progress=False)
        FLConfig(clients=11, malicious=4, defense="krum", backend=backend)  # the bound itself is fine
    with pytest.raises(ValueError, match="Multi-Krum needs clients >= 2f"):
        FLConfig(clients=10, malicious=1, num_malicious=4, defense="multi_krum")  # f: num_malicious
    # the plaintext backend refuses it too, like the servers, for callers that bypass FLConfig
    with pytest.raises(ValueError, match="Krum with num_malicious=4 needs at least 11 clients, got 10"):
        PlaintextAggregator().aggregate("krum", _updates(10, 5), num_malicious=4)


def test_sweep_table_and_plot(tmp_path):
    base = FLConfig(dataset="digits", rounds=2)
    res = sweep(base, ["alie"], ["fedavg", "median"], progress=False)
    assert res["attacks"] == ["none", "alie"] and len(res["rows"]) == 4
    row = next(r for r in res["rows"] if r["attack"] == "alie" and r["defense"] == "median")
    assert row["accuracy_drop"] == pytest.approx(row["clean_accuracy"] - row["accuracy"])
    md = write_table(res, tmp_path / "t")
    assert "| alie |" in md and (tmp_path / "t.md").read_text() == md
    assert json.loads((tmp_path / "t.json").read_text())["rows"] == res["rows"]
    plot(res, tmp_path / "sweep.png")
    plot(res["runs"][0], tmp_path / "one.png")
    assert (tmp_path / "sweep.png").stat().st_size > 1000 and (tmp_path / "one.png").stat().st_size > 1000


# ---------------------------------------------------------------- command line

@pytest.mark.parametrize("argv,flag,bad", [
    (["fl", "--attack", "bogus"], "--attack", "bogus"),
    (["fl", "--defense", "bogus"], "--defense", "bogus"),
    (["fl-sweep", "--attacks", "alie,bogus"], "--attacks", "bogus"),
    (["fl-sweep", "--defenses", "krum,bogus"], "--defenses", "bogus"),
])
def test_cli_rejects_unknown_names(argv, flag, bad, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and bad in err


def test_cli_bad_config_and_single_run(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["fl", "--rounds", "-1"])
    assert "rounds" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["fl", "--clients", "3", "--malicious", "4"])
    assert "malicious" in capsys.readouterr().err
    assert cli.main(["fl", "--rounds", "2", "--attack", "alie", "--defense", "median", "--no-progress",
                     "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "wall time" in out
    assert len(list(tmp_path.glob("*.json"))) == 1 and len(list(tmp_path.glob("*.png"))) == 1


def test_cli_sweep_writes_tables(tmp_path, capsys):
    assert cli.main(["fl-sweep", "--rounds", "1", "--attacks", "backdoor", "--defenses", "fedavg,krum",
                     "--no-progress", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| backdoor |" in out and "| attack | fedavg | krum |" in out
    assert {p.suffix for p in tmp_path.iterdir()} == {".md", ".json", ".png"}


def test_alie_z_override_reaches_the_updates():
    with pytest.raises(ValueError, match="alie_z"):
        FLConfig(attack="alie", alie_z=-1.0)
    a = run(FLConfig(attack="alie", rounds=1), progress=False)
    b = run(FLConfig(attack="alie", rounds=1, alie_z=3.0), progress=False)
    assert a["accuracy"][1] != b["accuracy"][1]


# ---------------------------------------------------------------- the MPC backend

class _Recording:
    """Wraps an aggregator and keeps each call's updates, arguments and result."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []
        self.backend = inner.backend

    def supports(self, name):
        return self.inner.supports(name)

    def aggregate(self, name, U, **kw):
        out = self.inner.aggregate(name, U, **kw)
        self.calls.append((name, np.array(U), dict(kw), out))
        return out


def test_mpc_backend_run_matches_plaintext():
    """``backend="mpc"``: the lab's rounds aggregated on secret shares by two
    servers (pgkernels.fl.mpc.MPCAggregator). Every aggregate equals the rule's
    reference on the same updates up to fixed-point error and selects the same
    clients, and the run's metrics equal the plaintext backend's."""
    from pgkernels.fl.mpc import MPCAggregator

    world_size = 2  # the servers start once (the slow part) for both rules
    base = dict(dataset="digits", clients=5, malicious=1, attack="sign_flip", rounds=2, local_epochs=1,
                hidden=(8,), eval_every=1)
    with MPCAggregator(world_size=world_size, timeout=300) as mpc:
        for defense in ("krum", "median"):
            cfg = FLConfig(defense=defense, backend="mpc", world_size=world_size, **base)
            rec = _Recording(mpc)
            res = run(cfg, aggregator=rec, progress=False)
            plain = run(FLConfig(defense=defense, **base), progress=False)
            assert res["backend"] == "mpc" and len(rec.calls) == 2
            for name, U, kw, (agg, kept) in rec.calls:
                ref, ref_kept = registry.get(name).aggregate_plain(U, **kw)
                np.testing.assert_allclose(agg, ref, atol=2e-3, rtol=0, err_msg=defense)
                assert (kept is None) == (ref_kept is None) and (kept is None or kept.tolist() == ref_kept.tolist())
            assert [r.get("kept") for r in res["rounds"]] == [r.get("kept") for r in plain["rounds"]]
            assert res["accuracy"] == pytest.approx(plain["accuracy"], abs=0.02)
        assert mpc.summary()["aggregations"] == 4 and mpc.summary()["MB_sent_per_aggregation"] > 0
