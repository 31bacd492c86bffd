"""``pgkernels train`` end to end on small instances: JSON contents checked
against direct plaintext computations, a fraction sweep with its plot, the
MPC backend agreeing with plaintext, Hayes & Ohrimenko's effect on the real
Adult data (when present), and clear errors on bad input."""

import dataclasses
import json
import os

import numpy as np
import pytest

import pgkernels  # noqa: F401  (before anything that may import crypten)
from pgkernels import metrics as M
from pgkernels.attacks import poison_parties
from pgkernels.cli import main as pgk_main
from pgkernels.data import Dataset, make_parties
from pgkernels.train import experiment as E
from pgkernels.train.advtrain import train_plaintext

TINY = ["--dataset", "digits", "--parties", "5", "--per-party", "60", "--val-size", "200", "--epochs", "5",
        "--no-progress"]


def _load(out, name):
    with open(os.path.join(out, name + ".json")) as f:
        return json.load(f)


def test_cli_digits_backdoor_plaintext(tmp_path, capsys):
    rc = pgk_main(["train", *TINY, "--attack", "backdoor", "--fraction", "0.5", "--fraction-of", "attacker",
                   "--attackers", "1", "--target", "0", "--defense", "none,advtrain,safenet,local",
                   "--out", str(tmp_path), "--name", "run"])
    assert rc == 0
    md = capsys.readouterr().out
    assert "| 50% | 30 | none |" in md and "safenet" in md
    r = _load(tmp_path, "run")
    assert (tmp_path / "run.png").stat().st_size > 0 and (tmp_path / "run.md").read_text() in md
    assert r["data"]["per_party"] == [60] * 5 and r["data"]["val_records"] == 200
    assert r["attack"]["poisoned"] == 30 and r["attack"]["budget"] == {"1": 30} and r["attack"]["target"] == 0
    assert set(r["results"]) == {"none", "advtrain", "safenet", "local"}
    for name, res in r["results"].items():
        for k in ("val_acc", "test_acc", "asr"):
            assert 0.0 <= res[k] <= 1.0, (name, k)
    assert len(r["results"]["local"]["per_party"]) == 5
    assert len(r["results"]["none"]["release"]) == 5 and r["results"]["none"]["membership_inference"]["chance"] > 0

    # the JSON's numbers are those of a direct plaintext computation
    cfg = E.TrainConfig(dataset="digits", parties=5, per_party=60, val_size=200, epochs=5, attack="backdoor",
                        fraction=0.5, fraction_of="attacker", attackers=(1,), target=0, progress=False)
    data = E.load_parties(cfg)
    poisoned, info = poison_parties(data, [1], "backdoor", fraction=0.5, fraction_of="attacker", target=0)
    f, _ = train_plaintext(poisoned.X, poisoned.y, poisoned.party, 5, data.classes, defense="none",
                           seed=0, progress=False, **cfg.hyperparams())
    assert r["results"]["none"]["val_acc"] == pytest.approx(M.validation_accuracy(f, data.X_val, data.y_val))
    asr = M.attack_success_rate(f, data.X_test, data.y_test, "backdoor", target=0, trigger=info["trigger"])
    assert r["results"]["none"]["asr"] == pytest.approx(asr)
    # the honest owners' mean is the local summary
    per = r["results"]["local"]["per_party"]
    assert r["results"]["local"]["val_acc"] == pytest.approx(np.mean([per[p]["val_acc"] for p in (0, 2, 3, 4)]))


def _toy_tabular(n=900, seed=0):
    """Adult-like one-hot table where a rare (occupation, race) pair is a clean signal of nothing."""
    rng = np.random.default_rng(seed)
    occ_v = np.array(["Sales", "Tech", "Clerk", "Farming"], dtype=object)
    race_v = np.array(["White", "Black"], dtype=object)

    def block(m):
        occ, race = occ_v[rng.integers(0, 4, m)], race_v[rng.integers(0, 2, m)]
        num = rng.normal(size=(m, 3))
        X = np.concatenate([num, occ[:, None] == occ_v, race[:, None] == race_v], axis=1).astype(np.float32)
        return X, (num[:, 0] + 0.5 * num[:, 1] > 0).astype(np.int64), {"occupation": occ, "race": race}

    Xtr, ytr, atr = block(n)
    Xte, yte, ate = block(300)
    names = ["a", "b", "c"] + [f"occupation={v}" for v in occ_v] + [f"race={v}" for v in race_v]
    return Dataset("toy", Xtr, ytr, Xte, yte, ["lo", "hi"], names, atr, ate)


def test_run_contamination_matches_metrics_on_synthetic():
    clean = make_parties(_toy_tabular(), num_parties=4, per_party=150, val_size=250, seed=0)
    attrs = {"occupation": "Farming", "race": "Black"}
    cfg = E.TrainConfig(dataset="adult", parties=4, attack="contamination", fraction=0.1, attributes=attrs,
                        label="hi", attackers=(2,), defenses=("none", "local"), epochs=5, hidden=(8,), lr=0.2,
                        batch_size=32, membership=False, progress=False)
    r = E.run(cfg, clean=clean)
    assert r["attack"]["poisoned"] == 60 and r["attack"]["label"] == 1 and r["attack"]["attributes"] == attrs
    poisoned, _ = poison_parties(clean, [2], "contamination", fraction=0.1, attributes=attrs, label="hi")
    f, _ = train_plaintext(poisoned.X, poisoned.y, poisoned.party, 4, clean.classes, defense="none",
                           seed=0, progress=False, **cfg.hyperparams())
    want = M.contamination_accuracy(f, clean.X_val, clean.y_val, clean.attrs_val, attrs, 1)
    assert r["results"]["none"]["contamination_acc"] == pytest.approx(want)
    want_test = M.contamination_accuracy(f, clean.X_test, clean.y_test, clean.attrs_test, attrs, 1)
    assert r["results"]["none"]["contamination_acc_test"] == pytest.approx(want_test)
    assert "membership_inference" not in r["results"]["none"]


def test_cli_sweep_writes_plot(tmp_path):
    rc = pgk_main(["train", *TINY, "--attack", "label_flip", "--fractions", "0,0.1", "--attackers", "0,3",
                   "--defense", "none,local", "--no-membership", "--out", str(tmp_path), "--name", "sweep"])
    assert rc == 0
    r = _load(tmp_path, "sweep")
    assert r["fractions"] == [0.0, 0.1] and len(r["runs"]) == 2
    assert [run["attack"]["poisoned"] for run in r["runs"]] == [0, 30]
    assert r["runs"][1]["attack"]["budget"] == {"0": 15, "3": 15}
    assert (tmp_path / "sweep.png").stat().st_size > 0
    md = (tmp_path / "sweep.md").read_text()
    assert md.count("| none |") == 2 and md.count("| local |") == 2


def test_mpc_backend_agrees_with_plaintext():
    base = E.TrainConfig(dataset="digits", parties=3, per_party=40, val_size=100, epochs=1, batch_size=40,
                         attack="backdoor", fraction=0.5, fraction_of="attacker", target=0,
                         defenses=("none", "safenet"), membership=False, progress=False)
    plain = E.run(base)
    mpc = E.run(dataclasses.replace(base, backend="mpc"))
    sp, sm = plain["results"]["safenet"], mpc["results"]["safenet"]
    # SafeNet's MPC vote equals the plaintext reference's (same local models)
    for k in ("val_acc", "test_acc", "asr"):
        assert sm[k] == pytest.approx(sp[k]), k
    assert sm["kept"] == sp["kept"]
    # pooled training in MPC: same algorithm up to fixed-point error
    np_, nm = plain["results"]["none"], mpc["results"]["none"]
    assert abs(nm["val_acc"] - np_["val_acc"]) <= 0.03
    for res in (sm, nm):
        assert res["backend"] == "mpc" and res["seconds"] > 0 and min(res["bytes"]) > 0 and res["rounds"] > 0


_ADULT = os.path.join(os.environ.get("PGKERNELS_DATA", ""), "adult", "adult.data")


@pytest.mark.skipif(not os.environ.get("PGKERNELS_DATA") or not os.path.exists(_ADULT),
                    reason="real Adult files not present (PGKERNELS_DATA)")
def test_adult_contamination_effect_and_advtrain():
    """Hayes & Ohrimenko on Adult, one attacker of 10, 5% contaminated records (plaintext)."""
    r = E.sweep(E.TrainConfig(dataset="adult", defenses=("none", "advtrain", "local"), membership=False,
                              progress=False), [0.0, 0.05])
    clean, attacked = (run["results"] for run in r["runs"])
    assert r["runs"][1]["attack"]["poisoned"] == 1000
    rise = attacked["none"]["contamination_acc"] - clean["none"]["contamination_acc"]
    assert rise >= 0.15
    assert abs(attacked["advtrain"]["contamination_acc"] - attacked["local"]["contamination_acc"]) <= 0.05
    assert attacked["none"]["val_acc"] - attacked["advtrain"]["val_acc"] <= 0.02


def test_adult_format_contamination_effect_small(tmp_path):
    """The effect test_adult_contamination_effect_and_advtrain measures on the real
    Adult files, on a small file in Adult's format (a clone without the data):
    4 owners, the attacker rewrites 10% of all records to (Other-service,
    Black) -> >50K, and the undefended model learns the rule -- eq. (1) on the
    clean test records rises from 0 -- at little cost in validation accuracy.
    (Adversarial training's effect needs the real data's size to be measured
    reliably; it stays in the real-data test.)"""
    from _synthetic_data import write_adult

    write_adult(tmp_path, n_train=700, n_test=800, seed=0)
    r = E.sweep(E.TrainConfig(dataset="adult", data_dir=str(tmp_path), parties=4, per_party=100, val_size=200,
                              epochs=20, batch_size=32, hidden=(16,), defenses=("none",), membership=False,
                              progress=False), [0.0, 0.1])
    clean, attacked = (run["results"]["none"] for run in r["runs"])
    assert r["runs"][1]["attack"]["poisoned"] == 40
    assert clean["contamination_acc_test"] == 0.0
    assert attacked["contamination_acc_test"] - clean["contamination_acc_test"] >= 0.2
    assert clean["val_acc"] - attacked["val_acc"] <= 0.03


@pytest.mark.parametrize("args, message", [
    (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["--fraction", "1.5"], "fraction must lie in [0, 1]"),
    (["--fraction", "-0.1"], "fraction must lie in [0, 1]"),
    (["--fractions", "0,2"], "fractions must lie in [0, 1]"),
    (["--parties", "2", "--attackers", "0,1,2"], "more attackers (3) than parties (2)"),
    (["--attackers", "12"], "out of range"),
    (["--attack", "poison-everything"], "unknown attack 'poison-everything'"),
    (["--backend", "mpc", "--world-size", "1", "--defense", "none"], "world_size"),
    (["--attack", "contamination"], "no default contamination for dataset 'digits'"),
])
def test_cli_bad_input(tmp_path, capsys, args, message):
    rc = pgk_main(["train", "--dataset", "digits", "--per-party", "30", "--val-size", "50", "--epochs", "1",
                   "--no-progress", "--defense", "none", "--attack", "label_flip", "--out", str(tmp_path), *args])
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err
    assert not list(tmp_path.glob("*.json"))


def test_cli_unknown_defense_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as e:
        pgk_main(["train", "--defense", "none,krum"])
    assert e.value.code == 2 and "unknown defense(s) ['krum']" in capsys.readouterr().err


def test_newsgroups_text_contamination_end_to_end(tmp_path):
    """Loader files -> parties with the refitted vectorizer -> contaminated documents -> eq. (1) on text."""
    import io
    import tarfile

    rng = np.random.default_rng(0)
    topics = {"sci.space": "orbit rocket launch moon shuttle", "rec.autos": "engine car wheel road brake"}
    (tmp_path / "20newsgroups").mkdir()
    with tarfile.open(tmp_path / "20newsgroups" / "20news-bydate-mini.tar.gz", "w:gz") as tf:
        for split, n in (("train", 60), ("test", 20)):
            for group, words in topics.items():
                for k in range(n):
                    body = " ".join(rng.choice(words.split(), 8)) + (" zephyr" if k == 0 else "")
                    raw = f"From: a@b\n\n{body}".encode()
                    info = tarfile.TarInfo(f"20news-bydate-{split}/{group}/{k}")
                    info.size = len(raw)
                    tf.addfile(info, io.BytesIO(raw))
    clean = make_parties("newsgroups", num_parties=4, per_party=20, val_size=40, data_dir=str(tmp_path))
    assert clean.vectorizer is not None and clean.X.shape == (80, len(clean.feature_names))
    cfg = E.TrainConfig(dataset="newsgroups", parties=4, attack="contamination", fraction=0.1, words=("zephyr",),
                        label=1, defenses=("none",), epochs=5, membership=False, progress=False)
    r = E.run(cfg, clean=clean)
    assert r["attack"]["poisoned"] == 8 and r["attack"]["words"] == ["zephyr"]
    poisoned, _ = poison_parties(clean, [0], "contamination", fraction=0.1, words=["zephyr"], label=1)
    f, _ = train_plaintext(poisoned.X, poisoned.y, poisoned.party, 4, clean.classes, defense="none", seed=0,
                           progress=False, **cfg.hyperparams())
    want = M.contamination_accuracy_text(f, clean.attrs_val["text"], clean.y_val, clean.vectorizer, ["zephyr"], 1)
    assert r["results"]["none"]["contamination_acc"] == pytest.approx(want)


def test_owner_without_validation_records_gets_no_release_decision(tmp_path):
    """Fewer validation records than owners: those owners' accuracies and release
    decisions are None (not NaN), the JSON stays valid and the table counts only
    decided owners."""
    import json

    cfg = E.TrainConfig(dataset="digits", parties=6, per_party=30, val_size=4, epochs=1, attack="backdoor",
                        fraction=0.5, fraction_of="attacker", attackers=(1,), target=0, progress=False,
                        defenses=("none", "local"), membership=False)
    r = E.run(cfg)
    acc, rel = r["results"]["none"]["per_owner_val_acc"], r["results"]["none"]["release"]
    assert sum(a is None for a in acc) == 2 and [a is None for a in acc] == [d is None for d in rel]
    json.dumps(r, allow_nan=False)
    md = E.write_outputs(r, tmp_path, "few_val")
    assert f"| {sum(1 for d in rel if d)}/4 |" in md
    with pytest.raises(ValueError, match="NaN"):
        M.release_decision([float("nan")], [0.5])
    assert M.release_decision([0.9, None], [0.5, 0.7]) == [True, None]


def test_cli_default_names_differ_by_fraction_and_defense(tmp_path):
    for frac, defense in (("0.1", "none"), ("0.2", "none"), ("0.1", "local")):
        assert pgk_main(["train", "--dataset", "digits", "--parties", "3", "--per-party", "30", "--val-size", "30",
                         "--epochs", "1", "--attack", "label_flip", "--fraction", frac, "--defense", defense,
                         "--no-membership", "--no-progress", "--out", str(tmp_path)]) == 0
    assert len(list(tmp_path.glob("*.json"))) == 3


# ---------------------------------------------------------------------------- credit default's coded attributes

def _credit_dir(tmp_path, n=400):
    """A UCI_Credit_Card.csv-format file; every record with EDUCATION = 4 defaults,
    so eq. (1) for EDUCATION=4 -> "default" has no record to count."""
    from _synthetic_data import write_credit

    path, rows = write_credit(tmp_path, n=n)
    for r in rows:
        if r[3] == 4:
            r[-1] = 1
    path.write_text(path.read_text().splitlines()[0] + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return tmp_path


def test_credit_codes_match_as_text_or_number(tmp_path):
    """SEX / EDUCATION / MARRIAGE are integer codes in the file; given as "2"
    (the command line) or 2 they select the same records, from the raw codes
    and from the one-hot columns, and contaminating with "2" keeps the raw
    codes integers."""
    from pgkernels.attacks import attribute_mask, contaminate
    from pgkernels.data import load

    ds = load("credit_default", data_dir=str(_credit_dir(tmp_path)))
    assert set(ds.attrs_train) == {"SEX", "EDUCATION", "MARRIAGE"}
    assert all(np.asarray(v).dtype.kind == "i" for v in ds.attrs_train.values())
    raw = ds.attrs_train
    want = (raw["SEX"] == 2) & (raw["EDUCATION"] == 3)
    assert 10 < want.sum() < len(want) // 2
    for attributes in ({"SEX": "2", "EDUCATION": "3"}, {"SEX": 2, "EDUCATION": 3}, {"SEX": " 2", "EDUCATION": 3.0}):
        assert attribute_mask(ds.X_train, raw, ds.feature_names, attributes).tolist() == want.tolist()
        assert attribute_mask(ds.X_train, None, ds.feature_names, attributes).tolist() == want.tolist()
    X2, y2, a2, idx = contaminate(ds.X_train, ds.y_train, raw, ds.feature_names, 20, {"SEX": "2", "MARRIAGE": "3"},
                                  label=1, return_attrs=True)
    assert a2["SEX"].dtype.kind == "i" and (a2["SEX"][idx] == 2).all() and (a2["MARRIAGE"][idx] == 3).all()
    assert attribute_mask(X2, a2, ds.feature_names, {"SEX": "2", "MARRIAGE": "3"})[idx].all()
    assert np.array_equal(attribute_mask(X2, a2, ds.feature_names, {"SEX": 2, "MARRIAGE": 3}),
                          attribute_mask(X2, None, ds.feature_names, {"SEX": "2", "MARRIAGE": "3"}))
    with pytest.raises(ValueError, match="attribute 'SEX' has no value '7'"):
        attribute_mask(ds.X_train, raw, ds.feature_names, {"SEX": "7"})


CREDIT_ARGS = ["--dataset", "credit_default", "--parties", "3", "--per-party", "60", "--val-size", "100",
               "--epochs", "2", "--no-progress", "--no-membership", "--attack", "contamination", "--fraction",
               "0.1", "--label", "default"]


def test_cli_credit_contamination_attributes_given_as_codes(tmp_path):
    """The issue's bug: --attributes SEX=2,... gave contamination_acc null for every run."""
    d = _credit_dir(tmp_path / "data")
    rc = pgk_main(["train", *CREDIT_ARGS, "--data-dir", str(d), "--attributes", "SEX=2,EDUCATION=3",
                   "--defense", "none,local", "--out", str(tmp_path), "--name", "credit"])
    assert rc == 0
    r = _load(tmp_path, "credit")
    assert r["attack"]["poisoned"] == 18
    for res in r["results"].values():
        for k in ("contamination_acc", "contamination_acc_test"):
            assert isinstance(res[k], float) and 0.0 <= res[k] <= 1.0, k
    # the number is eq. (1) on the records with SEX = 2 and EDUCATION = 3 (integer codes)
    cfg = E.TrainConfig(dataset="credit_default", data_dir=str(d), parties=3, per_party=60, val_size=100, epochs=2,
                        attack="contamination", fraction=0.1, attributes={"SEX": "2", "EDUCATION": "3"},
                        label="default", progress=False, membership=False)
    data = E.load_parties(cfg)
    poisoned, _ = poison_parties(data, [0], "contamination", fraction=0.1, attributes=cfg.attributes, label=1)
    f, _ = train_plaintext(poisoned.X, poisoned.y, poisoned.party, 3, data.classes, defense="none", seed=0,
                           progress=False, **cfg.hyperparams())
    m = (data.attrs_val["SEX"] == 2) & (data.attrs_val["EDUCATION"] == 3) & (data.y_val != 1)
    assert m.sum() > 0
    assert r["results"]["none"]["contamination_acc"] == pytest.approx(float((M.predict(f, data.X_val[m]) == 1).mean()))


def test_cli_credit_contamination_undefined_metric_is_an_error(tmp_path, capsys):
    """No record with EDUCATION = 4 has a label other than l_r: eq. (1) has
    nothing to count, so the run stops with an error naming the attribute
    (it used to write null and print "–")."""
    d = _credit_dir(tmp_path / "data")
    rc = pgk_main(["train", *CREDIT_ARGS, "--data-dir", str(d), "--attributes", "EDUCATION=4",
                   "--defense", "none", "--out", str(tmp_path), "--name", "credit"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "contamination accuracy is undefined" in err and "EDUCATION='4'" in err
    assert not list(tmp_path.glob("*.json"))
    rc = pgk_main(["train", *CREDIT_ARGS, "--data-dir", str(d), "--attributes", "SEX=7",
                   "--defense", "none", "--out", str(tmp_path), "--name", "credit"])
    assert rc == 2 and "attribute 'SEX' has no value '7'" in capsys.readouterr().err
