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
