"""Dataset loaders on small files in the standard formats, and on the real
files when a data directory is present (``PGKERNELS_DATA``)."""

import gzip
import io
import os
import pathlib
import struct
import tarfile

import numpy as np
import pytest

from pgkernels import data

ADULT_ROWS = [
    "39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, Male, 2174, 0, 40, United-States, <=50K",
    "50, Self-emp-not-inc, 83311, Bachelors, 13, Married-civ-spouse, Exec-managerial, Husband, White, Male, 0, 0, 13, United-States, >50K",
    "38, Private, 215646, HS-grad, 9, Divorced, Handlers-cleaners, Not-in-family, White, Male, 0, 0, 40, United-States, <=50K",
    "53, Private, 234721, 11th, 7, Married-civ-spouse, Handlers-cleaners, Husband, Black, Male, 0, 0, 40, ?, <=50K",
    "31, Private, 45781, Masters, 14, Never-married, Prof-specialty, Not-in-family, White, Female, 14084, 0, 50, United-States, >50K",
]


def _write_idx(path, arr):
    header = struct.pack(">I", 0x0800 | arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


@pytest.fixture
def fake_root(tmp_path):
    (tmp_path / "adult").mkdir()
    (tmp_path / "adult" / "adult.data").write_text("\n".join(ADULT_ROWS) + "\n")
    (tmp_path / "adult" / "adult.test").write_text("|1x3 Cross validator\n" + "\n".join(
        r.replace("<=50K", "<=50K.").replace(">50K", ">50K.") for r in ADULT_ROWS[::-1]) + "\n")
    (tmp_path / "credit_default").mkdir()
    cols = ["ID", "LIMIT_BAL", "SEX", "EDUCATION", "MARRIAGE", "AGE"] + [f"X{i}" for i in range(18)] + \
        ["default.payment.next.month"]
    rng = np.random.default_rng(0)
    lines = [",".join(f'"{c}"' for c in cols)]
    for i in range(40):
        lines.append(",".join([str(i + 1), "5e+05", str(1 + i % 2), str(1 + i % 3), str(1 + i % 2), str(20 + i)]
                              + [str(int(v)) for v in rng.integers(-2, 9, 18)] + [str(i % 2)]))
    (tmp_path / "credit_default" / "UCI_Credit_Card.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "mnist").mkdir()
    _write_idx(tmp_path / "mnist" / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (6, 28, 28)))
    _write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte.gz", np.arange(6) % 10)
    _write_idx(tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (3, 28, 28)))
    _write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz", np.arange(3))
    (tmp_path / "20newsgroups").mkdir()
    with tarfile.open(tmp_path / "20newsgroups" / "20news-bydate-mini.tar.gz", "w:gz") as tf:
        for split in ("train", "test"):
            for group, words in (("sci.space", "orbit rocket launch"), ("rec.autos", "engine car wheel")):
                for k in range(3):
                    raw = f"From: a@b\n\n{words} {k}".encode()
                    info = tarfile.TarInfo(f"20news-bydate-{split}/{group}/{k}")
                    info.size = len(raw)
                    tf.addfile(info, io.BytesIO(raw))
    return tmp_path


def test_adult_small(fake_root):
    d = data.load("adult", data_dir=fake_root)
    assert d.X_train.shape[0] == 4 and d.X_test.shape[0] == 4  # the '?' row is dropped
    assert list(d.y_train) == [0, 1, 0, 1] and list(d.y_test) == [1, 0, 1, 0]
    assert d.X_train.dtype == np.float32 and np.isfinite(d.X_train).all()
    assert "occupation=Adm-clerical" in d.feature_names
    e = data.load("adult", data_dir=fake_root, task="education")
    assert list(e.y_train) == [2, 2, 1, 3]  # Bachelors, Bachelors, HS-grad, Masters
    assert not any(n.startswith("education") for n in e.feature_names)


def test_other_loaders_small(fake_root):
    c = data.load("credit_default", data_dir=fake_root)
    assert c.X_train.shape == (32, 20 + 2 + 3 + 2)  # 20 numerical, SEX/EDUCATION/MARRIAGE one-hot
    assert set(np.unique(c.y_train)) <= {0, 1} and len(c.y_test) == 8
    m = data.load("mnist", data_dir=fake_root)
    assert m.X_train.shape == (6, 28, 28) and m.X_train.max() <= 1.0 and list(m.y_test) == [0, 1, 2]
    n = data.load("newsgroups", data_dir=fake_root)
    assert n.X_train.shape[0] == 6 and n.classes == ["rec.autos", "sci.space"]


def test_missing_and_unknown(tmp_path, monkeypatch):
    monkeypatch.delenv("PGKERNELS_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="adult.data not found; looked for: .*adult/adult.data"):
        data.load("adult", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="no data directory is set"):
        data.load("mnist")
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        data.load("cifar")
    d = data.load("digits")  # needs no data directory
    assert d.X_train.shape[1:] == (8, 8) and d.num_classes == 10


def test_splits():
    parts = data.iid_split(100, 4, seed=1)
    assert sorted(np.concatenate(parts).tolist()) == list(range(100))
    ho = data.iid_split(30000, 10, per_part=2000)
    assert all(len(p) == 2000 for p in ho) and len(set(np.concatenate(ho).tolist())) == 20000
    groups = np.array(list("aaabbbbccd"))
    g = data.group_split(groups, 2)
    for p in g:  # each group value lives in one party
        assert all(set(groups[p]).isdisjoint(groups[q]) for q in g if q is not p)
    y = np.repeat(np.arange(10), 50)
    ds = data.dirichlet_split(y, 5, alpha=0.3, seed=0)
    assert sorted(np.concatenate(ds).tolist()) == list(range(500)) and min(len(p) for p in ds) >= 1
    with pytest.raises(ValueError, match="cannot split 3 records among 4 parties"):
        data.iid_split(3, 4)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        data.dirichlet_split(y, 2, alpha=0)


def test_every_loader_keeps_every_record_small(tmp_path):
    """What test_real_datasets checks on the real files, on small files in their
    formats: every record of a file is loaded exactly once (Adult less its rows
    with '?'; credit default's stratified split keeps all rows and the label
    count), image labels and counts as in the idx files (MNIST and
    Fashion-MNIST), and 20 Newsgroups' vocabulary capped at max_features."""
    from _synthetic_data import adult_rows, write_adult, write_credit

    write_adult(tmp_path, n_train=120, n_test=60)
    a = data.load("adult", data_dir=tmp_path)
    kept_train = [r for r in adult_rows(120, 0) if "?" not in r]
    kept_test = [r for r in adult_rows(60, 1, test=True) if "?" not in r]
    assert a.X_train.shape[0] == len(kept_train) == 108 and a.X_test.shape[0] == len(kept_test) == 54
    assert a.y_train.tolist() == [int(r.endswith(">50K")) for r in kept_train]
    assert a.y_test.tolist() == [int(r.endswith(">50K.")) for r in kept_test]
    assert a.attrs_train["occupation"].tolist() == [r.split(", ")[6] for r in kept_train]

    _, rows = write_credit(tmp_path, n=250)
    c = data.load("credit_default", data_dir=tmp_path)
    labels = np.array([r[-1] for r in rows])
    assert len(c.y_train) + len(c.y_test) == 250 and int(c.y_train.sum() + c.y_test.sum()) == int(labels.sum())
    assert len(c.y_test) == 50 and abs(c.y_test.mean() - labels.mean()) < 0.03  # stratified
    assert sorted(c.attrs_train["SEX"].tolist() + c.attrs_test["SEX"].tolist()) == sorted(r[2] for r in rows)

    rng = np.random.default_rng(1)
    for name in ("mnist", "fashion_mnist"):
        (tmp_path / name).mkdir()
        y_tr, y_te = rng.integers(0, 10, 50), rng.integers(0, 10, 20)
        _write_idx(tmp_path / name / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (50, 28, 28)))
        _write_idx(tmp_path / name / "train-labels-idx1-ubyte.gz", y_tr)
        _write_idx(tmp_path / name / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (20, 28, 28)))
        _write_idx(tmp_path / name / "t10k-labels-idx1-ubyte.gz", y_te)
        m = data.load(name, data_dir=tmp_path)
        assert m.X_train.shape == (50, 28, 28) and m.X_test.shape == (20, 28, 28) and m.num_classes == 10
        assert np.bincount(m.y_train, minlength=10).tolist() == np.bincount(y_tr, minlength=10).tolist()
        assert m.y_test.tolist() == y_te.tolist()

    (tmp_path / "20newsgroups").mkdir()
    with tarfile.open(tmp_path / "20newsgroups" / "20news-bydate-mini.tar.gz", "w:gz") as tf:
        for split, n in (("train", 4), ("test", 3)):
            for group, words in (("sci.space", "orbit rocket launch moon"), ("rec.autos", "engine car wheel road")):
                for k in range(n):
                    raw = f"From: a@b\n\n{words} {k}".encode()
                    info = tarfile.TarInfo(f"20news-bydate-{split}/{group}/{k}")
                    info.size = len(raw)
                    tf.addfile(info, io.BytesIO(raw))
    n = data.load("newsgroups", data_dir=tmp_path, max_features=5)
    assert n.X_train.shape == (8, 5) and len(n.y_test) == 6 and n.num_classes == 2


REAL = os.environ.get("PGKERNELS_DATA")


@pytest.mark.skipif(not (REAL and pathlib.Path(REAL, "adult").is_dir()),
                    reason="real datasets are optional (set PGKERNELS_DATA)")
def test_real_datasets():
    a = data.load("adult")
    assert a.X_train.shape[0] == 30162 and a.X_test.shape[0] == 15060
    m = data.load("mnist")
    assert m.X_train.shape == (60000, 28, 28)
    assert np.bincount(m.y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    f = data.load("fashion_mnist")
    assert np.bincount(f.y_test).tolist() == [1000] * 10
    c = data.load("credit_default")
    assert len(c.y_train) + len(c.y_test) == 30000 and int(c.y_train.sum() + c.y_test.sum()) == 6636
    n = data.load("newsgroups", max_features=2000)
    assert n.X_train.shape == (11314, 2000) and len(n.y_test) == 7532 and n.num_classes == 20
