"""AUROR's targeted-poisoning threat model (Shen, Tople & Saxena, ACSAC 2016)
in the federated lab: the poisoned records are a fraction of ALL the training
data, source-class images labelled as the target, held only by the malicious
clients; AUROR's two-tanh-layer MLP. Synthetic labels and the bundled digits:
seconds, no data directory."""

import numpy as np
import pytest
import torch

from pgkernels import attacks as A
from pgkernels import models
from pgkernels.fl import FLConfig, Lab, cli, load_dataset, run


def _labels(n=1000, classes=10, seed=0):
    """n labels, n / classes of each class, shuffled."""
    return np.random.default_rng(seed).permutation(np.arange(n) % classes)


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.05, 0.09])
@pytest.mark.parametrize("num_malicious", [1, 3])
def test_concentrated_targeted_budget_is_exact(fraction, num_malicious):
    y = _labels()
    poisoned = A.concentrated_targeted(y, num_malicious, fraction, source=1, target=7, seed=4)
    budget = int(round(fraction * len(y) / (1 - fraction)))
    assert len(poisoned) == num_malicious
    assert sum(len(p) for p in poisoned) == budget
    assert abs(budget / (len(y) + budget) - fraction) <= 1 / (len(y) + budget)  # the asked share of ALL records
    assert max(len(p) for p in poisoned) - min(len(p) for p in poisoned) <= 1  # evenly split
    allp = np.concatenate(poisoned)
    assert np.all(y[allp] == 1)  # only source-class images are poisoned
    assert len(np.unique(allp)) == budget  # distinct while the source class suffices
    again = A.concentrated_targeted(y, num_malicious, fraction, source=1, target=7, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(poisoned, again))  # seeded


def test_concentrated_targeted_beyond_the_source_class():
    y = _labels()
    S = int((y == 1).sum())  # 100 of 1000
    poisoned = A.concentrated_targeted(y, 2, 0.2, source=1, target=7, seed=0)
    allp = np.concatenate(poisoned)
    assert len(allp) == 250  # 250 / (1000 + 250) = 20%
    assert np.all(y[allp] == 1) and len(np.unique(allp)) == S  # every source image, some twice


@pytest.mark.parametrize("kw,match", [
    (dict(num_malicious=0), "num_malicious"),
    (dict(fraction=1.0), "fraction"),
    (dict(fraction=-0.1), "fraction"),
    (dict(fraction=True), "fraction"),
    (dict(source=7), "differ"),
])
def test_concentrated_targeted_bad_input(kw, match):
    args = dict(y=_labels(), num_malicious=2, fraction=0.1, source=1, target=7)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        A.concentrated_targeted(**args)
    with pytest.raises(ValueError, match="source class 3"):
        A.concentrated_targeted(np.zeros(10, int), 1, 0.1, source=3, target=0)


@pytest.mark.parametrize("malicious,fraction", [(2, 0.1), (4, 0.05), (1, 0.2)])
def test_lab_clients_hold_the_asked_share(malicious, fraction):
    cfg = FLConfig(dataset="digits", attack="targeted", clients=10, malicious=malicious, poison_fraction=fraction)
    ds = load_dataset("digits")
    lab = Lab(cfg, ds)
    clean = len(ds.y_train) - cfg.root_size
    total = sum(len(y) for _, y in lab.clients)
    assert total == clean + lab.poisoned_records  # the benign clients keep every clean record
    assert abs(lab.poisoned_records / total - fraction) <= 1 / total
    flat = ds.X_train.reshape(len(ds.X_train), -1)
    ones = flat[ds.y_train == 1]
    benign_rows = 0
    for i, (X, y) in enumerate(lab.clients):
        if i in lab.malicious:
            # only poisoned records: source-class training images, labelled as the target
            assert len(y) and torch.all(y == 7)
            assert all((np.abs(ones - x).sum(1) == 0).any() for x in X.numpy())
        else:
            # benign clients: clean records with their true labels
            for x, lbl in zip(X.numpy(), y.numpy()):
                assert lbl in ds.y_train[(np.abs(flat - x).sum(1) == 0)]
            benign_rows += len(y)
    assert benign_rows == clean
    assert sum(len(lab.clients[i][1]) for i in lab.malicious) == lab.poisoned_records
    assert lab.malicious == list(range(malicious))


def test_lab_targeted_defaults_and_errors():
    assert FLConfig(attack="targeted").effective_poison_fraction == 0.1
    assert FLConfig(attack="backdoor").effective_poison_fraction == 0.5
    with pytest.raises(ValueError, match="poison_fraction"):
        FLConfig(attack="targeted", poison_fraction=1.0)
    with pytest.raises(ValueError, match="poison_fraction"):
        FLConfig(attack="targeted", poison_fraction=0.0)
    with pytest.raises(ValueError, match="poison_fraction"):
        FLConfig(attack="backdoor", poison_fraction=1.5)
    with pytest.raises(ValueError, match="malicious"):
        FLConfig(attack="targeted", clients=4, malicious=4)
    with pytest.raises(ValueError, match="without a poisoned record"):
        Lab(FLConfig(dataset="digits", attack="targeted", malicious=4, poison_fraction=0.001), load_dataset("digits"))


def test_targeted_attack_beats_fedavg_and_auror_detects_it():
    cfg = dict(dataset="digits", attack="targeted", clients=10, malicious=3, poison_fraction=0.2, rounds=6,
               local_epochs=3, lr=0.1)
    fedavg = run(FLConfig(defense="fedavg", **cfg), progress=False)
    auror = run(FLConfig(defense="auror", **cfg), progress=False)
    assert fedavg["poisoned_records"] == round(0.2 * 1247 / 0.8)  # 20% of all the clients' records
    assert fedavg["final"]["asr"] > 0.4
    assert auror["final"]["asr"] < fedavg["final"]["asr"] - 0.3
    assert auror["final"]["mean_tpr"] > 0.5  # AUROR excludes the malicious clients


def test_auror_mlp_has_two_tanh_layers():
    class DS:
        name, num_classes = "mnist", 10
        X_train = np.zeros((5, 28, 28), np.float32)

    m = models.make_model("auror_mlp", DS, seed=0)
    assert [type(x).__name__ for x in m] == ["Flatten", "Linear", "Tanh", "Linear", "Tanh", "Linear"]
    assert m[1].out_features == models.AUROR_HIDDEN[0] and m[3].out_features == models.AUROR_HIDDEN[1]
    assert m(torch.zeros(2, 28, 28)).shape == (2, 10)
    assert models.make_model("auror_mlp", DS, hidden=(16, 8))[3].out_features == 8
    with pytest.raises(ValueError, match="two hidden layers"):
        models.auror_mlp(784, 10, hidden=(16,))


def test_cli_poison_fraction(capsys):
    assert cli.main(["fl", "--attack", "targeted", "--poison-fraction", "0.05", "--model", "auror_mlp",
                     "--rounds", "1", "--clients", "10", "--malicious", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "digits/auror_mlp" in out and "poisoned records 66 of 1313 (5.0%)" in out
    with pytest.raises(SystemExit):
        cli.main(["fl", "--attack", "targeted", "--poison-fraction", "1.0"])
    assert "poison_fraction" in capsys.readouterr().err
