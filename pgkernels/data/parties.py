"""Several data owners pooling their records: Hayes & Ohrimenko's setting.

Hayes & Ohrimenko (NeurIPS 2018) give each of 10 parties 2,000 training
records (20,000 in all) and hold out 10,000 validation records, with
categorical attributes one-hot and numerical ones normalised (the loaders of
:mod:`pgkernels.data` already do that). :func:`make_parties` draws that
setting from any dataset of :mod:`pgkernels.data` (or a
:class:`~pgkernels.data.Dataset`), iid or non-iid by an attribute, seeded.

Validation records come from the dataset's training file (disjoint from the
parties' records); the dataset's own test file stays the test set.
"""

import dataclasses

import numpy as np

from .datasets import Dataset, load

SPLITS = ("iid", "attribute")


@dataclasses.dataclass
class PartyData:
    """The pooled training records with their owners, plus validation and test sets.

    ``X`` float32 ``(N, d)`` (images flattened; ``input_shape`` keeps the
    original per-record shape), ``y`` int64 labels, ``party`` int64 owner ids
    in ``[0, num_parties)``; ``attrs`` raw per-record attributes aligned with
    ``X`` (e.g. Adult's occupation, or the documents' ``text``); the same for
    the validation (``*_val``) and test (``*_test``) sets. ``vectorizer``: for
    text datasets, the fitted scikit-learn vectorizer that maps documents to
    the rows of ``X`` (used to re-featurise contaminated documents).
    """

    X: np.ndarray
    y: np.ndarray
    party: np.ndarray
    attrs: dict
    X_val: np.ndarray
    y_val: np.ndarray
    attrs_val: dict
    X_test: np.ndarray
    y_test: np.ndarray
    attrs_test: dict
    classes: list
    feature_names: list
    num_parties: int
    name: str = ""
    input_shape: tuple = ()
    vectorizer: object = None

    @property
    def num_classes(self):
        return len(self.classes)

    def indices_of(self, p):
        """Row indices of party ``p``'s records."""
        return np.flatnonzero(self.party == p)

    def party_sizes(self):
        return np.bincount(self.party, minlength=self.num_parties)

    def replace(self, **changes):
        """A copy with some fields replaced (arrays not named are shared, not copied)."""
        return dataclasses.replace(self, **changes)


def _take(attrs, idx):
    return {k: np.asarray(v, dtype=object if isinstance(v, list) else None)[idx] for k, v in attrs.items()}


def _flat(X):
    X = np.asarray(X, dtype=np.float32)
    return X.reshape(len(X), -1)


def _check_count(name, v, minimum):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {v!r}")


def _newsgroups_vectorizer(ds):
    """Refit the loader's vectorizer on the training documents (same settings,
    so the same vocabulary and weights) to featurise contaminated documents.
    The loader's choice (TF-IDF or counts) is recognised by reproducing its rows."""
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

    texts = list(ds.attrs_train["text"])
    d = len(ds.feature_names)
    probe = slice(0, min(50, len(texts)))
    for cls in (TfidfVectorizer, CountVectorizer):
        vec = cls(max_features=d, stop_words="english").fit(texts)
        if list(vec.get_feature_names_out()) != list(ds.feature_names):
            continue
        if np.allclose(vec.transform(texts[probe]).toarray(), ds.X_train[probe], atol=1e-5):
            return vec
    raise RuntimeError("could not reproduce the newsgroups features from the documents")


def make_parties(dataset, num_parties=10, per_party=2000, val_size=10000, split="iid", attribute=None,
                 seed=0, data_dir=None, **load_kwargs):
    """Split ``dataset`` among ``num_parties`` owners, Hayes & Ohrimenko style.

    Args:
        dataset: a name from :data:`pgkernels.data.DATASETS` (loaded with
            ``data_dir`` and ``load_kwargs``, e.g. ``task="education"`` for
            Adult) or a :class:`~pgkernels.data.Dataset`.
        num_parties: number of data owners P.
        per_party: training records per owner (the paper: 2,000); ``None``
            shares all records left after validation evenly (floor).
        val_size: validation records, drawn from the training file before the
            owners' records (the paper: 10,000). For small datasets (digits:
            1,347 training images) pass sizes that fit; too large raises
            ValueError naming the sizes.
        split: ``"iid"`` (a seeded random permutation cut into equal parts) or
            ``"attribute"`` (non-iid: records sorted by the value of
            ``attribute`` -- distinct values in a seeded random order, records
            shuffled within a value -- and cut into consecutive parts, so each
            owner holds one or a few attribute values, e.g. Adult occupations).
            For ``"attribute"`` on datasets without raw attributes (images)
            ``attribute="label"`` groups by class. Unlike
            :func:`pgkernels.data.splits.group_split` (the federated lab's
            split, where a value goes whole to one client and client sizes
            vary), the owners here keep the equal sizes of the paper's setting,
            so a frequent value may be cut between neighbouring owners.
        seed: seeds the validation draw and the split.

    Returns:
        :class:`PartyData` with owner ``p`` holding rows ``p*per_party ...
        (p+1)*per_party - 1`` (ordered by owner).
    """
    if isinstance(dataset, str):
        ds = load(dataset, data_dir=data_dir, **load_kwargs)
    elif isinstance(dataset, Dataset):
        if load_kwargs:
            raise TypeError(f"load arguments {sorted(load_kwargs)} need a dataset name, not a Dataset")
        ds = dataset
    else:
        raise TypeError(f"dataset must be a dataset name or a pgkernels.data.Dataset, got {type(dataset).__name__}")
    _check_count("num_parties", num_parties, 1)
    _check_count("val_size", val_size, 0)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    n = len(ds.X_train)
    if per_party is None:
        if val_size + num_parties > n:
            raise ValueError(f"val_size={val_size} leaves too few of the {n} training records of {ds.name!r} "
                             f"for {num_parties} parties")
        per_party = (n - val_size) // num_parties
    _check_count("per_party", per_party, 1)
    if num_parties * per_party + val_size > n:
        raise ValueError(
            f"{num_parties} parties x per_party={per_party} + val_size={val_size} = "
            f"{num_parties * per_party + val_size} records exceed the {n} training records of {ds.name!r}; "
            "pass smaller per_party / val_size")

    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    val_idx, pool = perm[:val_size], perm[val_size:]
    total = num_parties * per_party
    if split == "iid":
        train_idx = pool[:total]
    else:
        if attribute is None:
            raise ValueError("split='attribute' needs attribute=... (e.g. 'occupation', or 'label')")
        if attribute == "label":
            groups = ds.y_train[pool]
        elif attribute in ds.attrs_train:
            groups = np.asarray(ds.attrs_train[attribute], dtype=object)[pool].astype(str)
        else:
            raise ValueError(f"unknown attribute {attribute!r}; {ds.name!r} has "
                             f"{sorted(ds.attrs_train) + ['label']}")
        values = np.unique(groups)
        value_rank = dict(zip(values, rng.permutation(len(values))))
        # pool is already a random order, so a stable sort by value rank shuffles within a value
        ranks = np.array([value_rank[g] for g in groups])
        ordered = pool[np.argsort(ranks, kind="stable")]
        # spread the leftover records evenly over the value sequence so no value is dropped wholesale
        keep = np.sort(rng.choice(len(ordered), size=total, replace=False))
        train_idx = ordered[keep]
    party = np.repeat(np.arange(num_parties, dtype=np.int64), per_party)

    vectorizer = None
    if ds.name == "newsgroups" and "text" in ds.attrs_train:
        vectorizer = _newsgroups_vectorizer(ds)
    return PartyData(
        X=_flat(ds.X_train[train_idx]), y=ds.y_train[train_idx].astype(np.int64), party=party,
        attrs=_take(ds.attrs_train, train_idx),
        X_val=_flat(ds.X_train[val_idx]), y_val=ds.y_train[val_idx].astype(np.int64),
        attrs_val=_take(ds.attrs_train, val_idx),
        X_test=_flat(ds.X_test), y_test=ds.y_test.astype(np.int64), attrs_test=_take(ds.attrs_test, slice(None)),
        classes=list(ds.classes), feature_names=list(ds.feature_names) or None, num_parties=int(num_parties),
        name=ds.name, input_shape=tuple(ds.X_train.shape[1:]), vectorizer=vectorizer)
