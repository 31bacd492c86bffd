"""Loaders for the standard files; see :mod:`pgkernels.data`."""

import dataclasses
import gzip
import os
import pathlib
import struct
import tarfile

import numpy as np


@dataclasses.dataclass
class Dataset:
    """A train/test split, features as float32 and labels as int64."""

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    classes: list
    feature_names: list = dataclasses.field(default_factory=list)
    # per-row attributes kept for non-iid splits and attacks (e.g. Adult's occupation)
    attrs_train: dict = dataclasses.field(default_factory=dict)
    attrs_test: dict = dataclasses.field(default_factory=dict)

    @property
    def num_classes(self):
        return len(self.classes)


def data_dir(path=None):
    """The data directory: ``path``, else ``$PGKERNELS_DATA``, else None."""
    p = path or os.environ.get("PGKERNELS_DATA")
    return pathlib.Path(p) if p else None


def _find(root, sub, names):
    """First existing file among names under root/sub or root; clear error otherwise."""
    if root is None:
        raise FileNotFoundError(
            f"{names[0]} is needed but no data directory is set: pass data_dir=... or set "
            "PGKERNELS_DATA (the 'digits' dataset needs none)")
    tried = []
    for base in (root / sub, root):
        for name in names:
            cand = base / name
            tried.append(str(cand))
            if cand.exists():
                return cand
    raise FileNotFoundError(f"{names[0]} not found; looked for: {', '.join(tried)}")


def _standardize(train, test):
    mu = train.mean(axis=0)
    sd = train.std(axis=0)
    sd[sd == 0] = 1.0
    return (train - mu) / sd, (test - mu) / sd


def _one_hot_frame(train, test, categorical, numerical):
    """One-hot the categorical columns (categories from train), standardize the numerical ones."""
    cats = {c: sorted(train[c].astype(str).unique()) for c in categorical}
    def encode(df):
        parts = [df[numerical].to_numpy(dtype=np.float64)]
        names = list(numerical)
        for c in categorical:
            vals = df[c].astype(str).to_numpy()
            onehot = (vals[:, None] == np.array(cats[c])[None, :]).astype(np.float64)
            parts.append(onehot)
            names += [f"{c}={v}" for v in cats[c]]
        return np.concatenate(parts, axis=1), names
    Xtr, names = encode(train)
    Xte, _ = encode(test)
    k = len(numerical)
    Xtr[:, :k], Xte[:, :k] = _standardize(Xtr[:, :k], Xte[:, :k])
    return Xtr.astype(np.float32), Xte.astype(np.float32), names


ADULT_COLUMNS = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
                 "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
                 "hours-per-week", "native-country", "income"]
# Hayes & Ohrimenko's 4-class education-level task (our grouping of the 16 levels).
EDUCATION_LEVELS = {
    "Low": ["Preschool", "1st-4th", "5th-6th", "7th-8th", "9th", "10th", "11th", "12th"],
    "Medium-Low": ["HS-grad", "Some-college"],
    "Medium-High": ["Assoc-voc", "Assoc-acdm", "Bachelors"],
    "High": ["Masters", "Prof-school", "Doctorate"],
}


def adult(root=None, task="income"):
    """UCI Adult, rows with missing values dropped (30,162 train / 15,060 test).

    ``task="income"``: >50K (1) vs <=50K (0). ``task="education"``: the four
    levels of :data:`EDUCATION_LEVELS` (education columns removed from the
    features). Categorical attributes are one-hot, numerical ones standardized
    with train statistics; ``attrs_*`` keep the raw attributes (occupation, sex,
    race, ...) for non-iid splits and contamination attacks.
    """
    import pandas as pd

    if task not in ("income", "education"):
        raise ValueError(f"task must be 'income' or 'education', got {task!r}")
    root = data_dir(root)
    kw = dict(header=None, names=ADULT_COLUMNS, skipinitialspace=True, na_values="?")
    tr = pd.read_csv(_find(root, "adult", ["adult.data"]), **kw).dropna()
    te = pd.read_csv(_find(root, "adult", ["adult.test"]), skiprows=1, **kw).dropna()
    te["income"] = te["income"].str.rstrip(".")
    categorical = ["workclass", "education", "marital-status", "occupation", "relationship", "race",
                   "sex", "native-country"]
    numerical = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
    if task == "income":
        classes = ["<=50K", ">50K"]
        ytr = (tr["income"] == ">50K").to_numpy().astype(np.int64)
        yte = (te["income"] == ">50K").to_numpy().astype(np.int64)
    else:
        classes = list(EDUCATION_LEVELS)
        level = {e: i for i, (_, es) in enumerate(EDUCATION_LEVELS.items()) for e in es}
        ytr = tr["education"].map(level).to_numpy().astype(np.int64)
        yte = te["education"].map(level).to_numpy().astype(np.int64)
        categorical = [c for c in categorical if c != "education"] + ["income"]
        numerical = [c for c in numerical if c != "education-num"]
    Xtr, Xte, names = _one_hot_frame(tr, te, categorical, numerical)
    keep = ["occupation", "sex", "race", "relationship", "marital-status", "workclass", "education"]
    return Dataset(f"adult-{task}", Xtr, ytr, Xte, yte, classes, names,
                   {c: tr[c].to_numpy() for c in keep}, {c: te[c].to_numpy() for c in keep})


def credit_default(root=None, test_fraction=0.2, seed=0):
    """UCI default of credit card clients (``UCI_Credit_Card.csv``, 30,000 rows).

    No official split exists: a seeded stratified ``test_fraction`` split.
    SEX, EDUCATION, MARRIAGE one-hot (columns ``"SEX=2"``, ...) and kept raw
    as their integer codes in ``attrs_*``; the other 20 attributes standardized.
    """
    import pandas as pd
    from sklearn.model_selection import train_test_split

    df = pd.read_csv(_find(data_dir(root), "credit_default", ["UCI_Credit_Card.csv"]))
    label = "default.payment.next.month"
    if label not in df.columns:
        raise ValueError(f"UCI_Credit_Card.csv has no {label!r} column")
    y = df[label].to_numpy().astype(np.int64)
    X = df.drop(columns=["ID", label])
    tr, te, ytr, yte = train_test_split(X, y, test_size=test_fraction, random_state=seed, stratify=y)
    categorical = ["SEX", "EDUCATION", "MARRIAGE"]
    numerical = [c for c in X.columns if c not in categorical]
    Xtr, Xte, names = _one_hot_frame(tr, te, categorical, numerical)
    # the raw codes of every categorical attribute, for attribute splits and contamination
    return Dataset("credit_default", Xtr, ytr, Xte, yte, ["no default", "default"], names,
                   {c: tr[c].to_numpy() for c in categorical}, {c: te[c].to_numpy() for c in categorical})


def _read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    if magic >> 8 != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte idx file (magic {magic:#x})")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path}: expected {int(np.prod(dims))} values, found {arr.size}")
    return arr.reshape(dims)


def _idx_images(name, sub, root, classes):
    root = data_dir(root)
    files = {k: _find(root, sub, [f"{k}-ubyte.gz"]) for k in
             ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1")}
    Xtr = _read_idx(files["train-images-idx3"]).astype(np.float32) / 255.0
    ytr = _read_idx(files["train-labels-idx1"]).astype(np.int64)
    Xte = _read_idx(files["t10k-images-idx3"]).astype(np.float32) / 255.0
    yte = _read_idx(files["t10k-labels-idx1"]).astype(np.int64)
    if len(Xtr) != len(ytr) or len(Xte) != len(yte):
        raise ValueError(f"{name}: image and label counts differ")
    return Dataset(name, Xtr, ytr, Xte, yte, classes)


def mnist(root=None):
    """MNIST: (60000, 28, 28) / (10000, 28, 28) float32 in [0, 1]."""
    return _idx_images("mnist", "mnist", root, [str(i) for i in range(10)])


def fashion_mnist(root=None):
    """Fashion-MNIST, same format as MNIST."""
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
               "Bag", "Ankle boot"]
    return _idx_images("fashion_mnist", "fashion_mnist", root, classes)


def _newsgroup_texts(root):
    """{split: (texts, labels)} and the sorted class names, from a tarball or folders."""
    sub = root / "20newsgroups" if (root / "20newsgroups").is_dir() else root
    splits = {"train": "20news-bydate-train", "test": "20news-bydate-test"}
    docs = {s: [] for s in splits}
    if all((sub / d).is_dir() for d in splits.values()):
        for s, d in splits.items():
            for p in sorted((sub / d).glob("*/*")):
                docs[s].append((p.parent.name, p.read_bytes()))
    else:
        tars = sorted(sub.glob("20news-bydate*.tar.gz")) if sub.is_dir() else []
        if not tars:
            raise FileNotFoundError(
                f"20 Newsgroups not found: looked for {sub}/20news-bydate*.tar.gz and the folders "
                f"{sub}/20news-bydate-train and {sub}/20news-bydate-test")
        with tarfile.open(tars[0], "r:gz") as tf:
            for m in tf.getmembers():
                parts = pathlib.PurePosixPath(m.name).parts
                if m.isfile() and len(parts) >= 3 and parts[-3] in splits.values():
                    s = "train" if parts[-3] == splits["train"] else "test"
                    docs[s].append((parts[-2], tf.extractfile(m).read()))
    classes = sorted({c for s in docs for c, _ in docs[s]})
    index = {c: i for i, c in enumerate(classes)}
    out = {}
    for s in splits:
        texts = [b.decode("latin-1") for _, b in docs[s]]
        out[s] = (texts, np.array([index[c] for c, _ in docs[s]], dtype=np.int64))
    return out, classes


def newsgroups(root=None, features="tfidf", max_features=5000):
    """20 Newsgroups "bydate" (11,314 train / 7,532 test posts, 20 classes).

    ``features``: "tfidf" or "counts" (bag of words), fitted on train with the
    ``max_features`` most frequent terms and English stop words removed.
    """
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

    if features not in ("tfidf", "counts"):
        raise ValueError(f"features must be 'tfidf' or 'counts', got {features!r}")
    root = data_dir(root)
    if root is None:
        raise FileNotFoundError("20 Newsgroups needs a data directory: pass data_dir=... or set PGKERNELS_DATA")
    texts, classes = _newsgroup_texts(root)
    vec = (TfidfVectorizer if features == "tfidf" else CountVectorizer)(
        max_features=max_features, stop_words="english")
    Xtr = vec.fit_transform(texts["train"][0]).astype(np.float32).toarray()
    Xte = vec.transform(texts["test"][0]).astype(np.float32).toarray()
    return Dataset("newsgroups", Xtr, texts["train"][1], Xte, texts["test"][1], classes,
                   list(vec.get_feature_names_out()), {"text": texts["train"][0]}, {"text": texts["test"][0]})


def digits(test_fraction=0.25, seed=0):
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes), pixels in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    X = (d.images / 16.0).astype(np.float32)
    Xtr, Xte, ytr, yte = train_test_split(X, d.target.astype(np.int64), test_size=test_fraction,
                                          random_state=seed, stratify=d.target)
    return Dataset("digits", Xtr, ytr, Xte, yte, [str(i) for i in range(10)])


DATASETS = {"adult": adult, "credit_default": credit_default, "mnist": mnist,
            "fashion_mnist": fashion_mnist, "newsgroups": newsgroups, "digits": digits}


def load(name, data_dir=None, **kwargs):
    """Load a dataset by name (see :data:`DATASETS`)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    if name == "digits":
        return digits(**kwargs)
    return DATASETS[name](data_dir, **kwargs)
