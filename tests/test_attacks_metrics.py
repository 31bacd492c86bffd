"""Party splits, the attacks' defining properties (contamination, text
contamination, label flip, backdoor, targeted) on any attacker subset, the
metrics on hand-made predictions with known answers, and clear errors."""

import os

import numpy as np
import pytest
import torch

import pgkernels  # noqa: F401  (before anything that may import crypten)
from pgkernels import metrics
from pgkernels.attacks import (attribute_mask, contaminate, contaminate_text, default_contamination, insert_words,
                               poison_parties)
from pgkernels.data import Dataset, PartyData, load, make_parties

OCCUPATIONS = np.array(["Sales", "Tech", "Clerk", "Farming"], dtype=object)
RACES = np.array(["White", "Black", "Asian"], dtype=object)


def _tabular_dataset(n=600, seed=0, name="toy"):
    """A small one-hot table like Adult's: 2 numerical columns, occupation and race one-hot."""
    rng = np.random.default_rng(seed)

    def block(m):
        occ = OCCUPATIONS[rng.integers(0, len(OCCUPATIONS), m)]
        race = RACES[rng.integers(0, len(RACES), m)]
        num = rng.normal(size=(m, 2))
        onehot_o = (occ[:, None] == OCCUPATIONS[None, :]).astype(np.float32)
        onehot_r = (race[:, None] == RACES[None, :]).astype(np.float32)
        X = np.concatenate([num, onehot_o, onehot_r], axis=1).astype(np.float32)
        y = (num[:, 0] > 0).astype(np.int64)
        return X, y, {"occupation": occ, "race": race}

    Xtr, ytr, atr = block(n)
    Xte, yte, ate = block(n // 3)
    names = ["age", "hours"] + [f"occupation={o}" for o in OCCUPATIONS] + [f"race={r}" for r in RACES]
    return Dataset(name, Xtr, ytr, Xte, yte, ["<=50K", ">50K"], names, atr, ate)


@pytest.fixture
def toy():
    return make_parties(_tabular_dataset(), num_parties=5, per_party=80, val_size=150, seed=1)


# ---------------------------------------------------------------------------- parties

def test_iid_parties_sizes_disjoint_and_seeded():
    ds = _tabular_dataset()
    d = make_parties(ds, num_parties=5, per_party=80, val_size=150, seed=3)
    assert d.X.shape == (400, ds.X_train.shape[1]) and d.X.dtype == np.float32
    assert d.party_sizes().tolist() == [80] * 5
    assert d.X_val.shape[0] == 150 and len(d.y_test) == len(ds.y_test)
    # rows are distinct records of the training file: match them back and check disjointness
    key = {tuple(r): i for i, r in enumerate(ds.X_train)}
    tr = [key[tuple(r)] for r in d.X]
    va = [key[tuple(r)] for r in d.X_val]
    assert len(set(tr)) == 400 and len(set(va)) == 150 and not set(tr) & set(va)
    assert np.array_equal(ds.y_train[tr], d.y) and np.array_equal(ds.attrs_train["race"][tr], d.attrs["race"])
    again = make_parties(ds, num_parties=5, per_party=80, val_size=150, seed=3)
    assert np.array_equal(again.X, d.X) and np.array_equal(again.X_val, d.X_val)
    other = make_parties(ds, num_parties=5, per_party=80, val_size=150, seed=4)
    assert not np.array_equal(other.X, d.X)


def test_attribute_split_groups_values():
    ds = _tabular_dataset(n=800)
    d = make_parties(ds, num_parties=4, per_party=150, val_size=100, split="attribute", attribute="occupation")
    assert d.party_sizes().tolist() == [150] * 4
    # consecutive owners along the value order: each value spans at most 2 owners, each owner at most 2 values
    for v in OCCUPATIONS:
        assert len(np.unique(d.party[d.attrs["occupation"] == v])) <= 2
    per_owner = [len(np.unique(d.attrs["occupation"][d.party == p])) for p in range(4)]
    assert max(per_owner) <= 2
    # iid owners each hold (almost surely) all four values
    iid = make_parties(ds, num_parties=4, per_party=150, val_size=100)
    assert all(len(np.unique(iid.attrs["occupation"][iid.party == p])) == 4 for p in range(4))
    by_label = make_parties(ds, num_parties=2, per_party=200, val_size=100, split="attribute", attribute="label")
    # each owner holds (mostly) one class; the boundary record may fall inside an owner
    assert all(np.bincount(by_label.y[by_label.party == p]).max() >= 180 for p in range(2))


def test_digits_parties_and_size_errors():
    d = make_parties("digits", num_parties=10, per_party=100, val_size=300)
    assert d.X.shape == (1000, 64) and d.input_shape == (8, 8) and d.num_classes == 10
    with pytest.raises(ValueError, match="per_party=2000.*exceed"):
        make_parties("digits")
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        make_parties("nope")
    with pytest.raises(ValueError, match="split"):
        make_parties("digits", per_party=10, val_size=10, split="weird")
    with pytest.raises(ValueError, match="unknown attribute 'occupation'"):
        make_parties("digits", per_party=10, val_size=10, split="attribute", attribute="occupation")
    with pytest.raises(ValueError, match="num_parties"):
        make_parties("digits", num_parties=0, per_party=10, val_size=10)


@pytest.mark.skipif(not os.environ.get("PGKERNELS_DATA") or
                    not os.path.exists(os.path.join(os.environ.get("PGKERNELS_DATA", ""), "adult", "adult.data")),
                    reason="real Adult files not present (PGKERNELS_DATA)")
def test_adult_hayes_ohrimenko_setting():
    d = make_parties("adult")
    assert d.X.shape[0] == 20000 and d.X_val.shape[0] == 10000
    assert d.party_sizes().tolist() == [2000] * 10
    spec = default_contamination(d)
    assert spec["attributes"] == {"occupation": "Other-service", "race": "Black"} and spec["label"] == 1
    # the default pattern is rare and almost never >50K in clean data
    m = attribute_mask(d.X_val, d.attrs_val, d.feature_names, spec["attributes"])
    assert 50 < m.sum() < 500 and d.y_val[m].mean() < 0.1


def test_adult_format_default_contamination_small(tmp_path):
    """test_adult_hayes_ohrimenko_setting's checks that do not depend on the real
    data, on a small file in Adult's format: owners of the requested sizes, the
    default pattern (Other-service, Black) -> >50K with l_r = 1, and the records
    carrying it found alike from the raw attributes, the one-hot columns and the
    file's own lines."""
    from _synthetic_data import write_adult

    write_adult(tmp_path, n_train=200, n_test=80, seed=4)
    d = make_parties("adult", num_parties=4, per_party=30, val_size=50, data_dir=str(tmp_path))
    assert d.X.shape[0] == 120 and d.X_val.shape[0] == 50 and d.party_sizes().tolist() == [30] * 4
    spec = default_contamination(d)
    assert spec["attributes"] == {"occupation": "Other-service", "race": "Black"} and spec["label"] == 1
    assert d.classes[spec["label"]] == ">50K"
    m = attribute_mask(d.X_val, d.attrs_val, d.feature_names, spec["attributes"])
    assert np.array_equal(m, attribute_mask(d.X_val, None, d.feature_names, spec["attributes"]))
    want = (d.attrs_val["occupation"] == "Other-service") & (d.attrs_val["race"] == "Black")
    assert 0 < m.sum() < len(m) and np.array_equal(m, want)
    ds = load("adult", data_dir=str(tmp_path))
    lines = [r.split(", ") for r in (tmp_path / "adult" / "adult.test").read_text().splitlines()[1:] if "?" not in r]
    rows = [r[6] == "Other-service" and r[8] == "Black" for r in lines]
    assert attribute_mask(ds.X_test, None, ds.feature_names, spec["attributes"]).tolist() == rows


# ---------------------------------------------------------------------------- contamination

def test_contaminate_defining_property(toy):
    attributes = {"occupation": "Farming", "race": "Asian"}
    cand = toy.indices_of(2)
    X2, y2, a2, idx = contaminate(toy.X, toy.y, toy.attrs, toy.feature_names, 30, attributes, label=1, seed=5,
                                  candidates=cand, return_attrs=True)
    assert len(idx) == 30 == len(np.unique(idx)) and set(idx) <= set(cand)
    names = toy.feature_names
    occ_cols = [i for i, n in enumerate(names) if n.startswith("occupation=")]
    race_cols = [i for i, n in enumerate(names) if n.startswith("race=")]
    # the b records carry a_1..a_k' (exactly one category per attribute) and l_r, raw attrs agree
    assert (X2[idx, names.index("occupation=Farming")] == 1).all() and (X2[np.ix_(idx, occ_cols)].sum(1) == 1).all()
    assert (X2[idx, names.index("race=Asian")] == 1).all() and (X2[np.ix_(idx, race_cols)].sum(1) == 1).all()
    assert (y2[idx] == 1).all() and (a2["occupation"][idx] == "Farming").all() and (a2["race"][idx] == "Asian").all()
    # numerical columns of contaminated records and every other record are untouched
    assert np.array_equal(X2[idx, :2], toy.X[idx, :2])
    rest = np.setdiff1d(np.arange(len(toy.y)), idx)
    assert np.array_equal(X2[rest], toy.X[rest]) and np.array_equal(y2[rest], toy.y[rest])
    assert np.array_equal(a2["race"][rest], toy.attrs["race"][rest])
    # inputs not modified in place; the 3-tuple form gives the same result
    X3, y3, idx3 = contaminate(toy.X, toy.y, toy.attrs, names, 30, attributes, 1, seed=5, candidates=cand)
    assert np.array_equal(X3, X2) and np.array_equal(idx3, idx) and not np.array_equal(toy.X, X2)
    # the mask computed from raw attrs and from one-hot columns agree
    assert np.array_equal(attribute_mask(X2, a2, names, attributes), attribute_mask(X2, None, names, attributes))


def test_contaminate_errors(toy):
    with pytest.raises(ValueError, match="no value 'Pilot'"):
        contaminate(toy.X, toy.y, toy.attrs, toy.feature_names, 3, {"occupation": "Pilot"}, 1)
    with pytest.raises(ValueError, match="unknown attribute 'color'"):
        contaminate(toy.X, toy.y, toy.attrs, toy.feature_names, 3, {"color": "red"}, 1)
    with pytest.raises(ValueError, match="budget=500 exceeds"):
        contaminate(toy.X, toy.y, toy.attrs, toy.feature_names, 500, {"race": "Black"}, 1)
    with pytest.raises(ValueError, match="budget"):
        contaminate(toy.X, toy.y, toy.attrs, toy.feature_names, -1, {"race": "Black"}, 1)
    with pytest.raises(ValueError, match="label 99 is not a class index"):
        contaminate(toy.X, toy.y, toy.attrs, toy.feature_names, 3, {"race": "Black"}, 99, num_classes=2)
    with pytest.raises(ValueError, match="label -1"):
        contaminate(toy.X, toy.y, toy.attrs, toy.feature_names, 3, {"race": "Black"}, -1)
    with pytest.raises(TypeError, match="label must be an integer"):
        contaminate(toy.X, toy.y, toy.attrs, toy.feature_names, 3, {"race": "Black"}, 0.5)
    with pytest.raises(ValueError, match="repeat must be an int >= 1"):
        insert_words(["a b"], ["zephyr"], repeat=0)


def test_small_argument_errors():
    from pgkernels.attacks.poisoning import check_attackers
    from pgkernels.train import experiment as E

    with pytest.raises(ValueError, match="unknown attack 'backdor'"):
        metrics.attack_success_rate(lambda X: np.zeros(len(X)), np.zeros((2, 3)), np.zeros(2), "backdor")
    assert metrics.attack_success_rate(lambda X: np.zeros(len(X)), np.zeros((2, 3)), np.zeros(2),
                                       "contamination") is None
    with pytest.raises(TypeError, match="not text"):
        check_attackers("12", 20)
    assert check_attackers([3, 1], 5) == [1, 3]
    with pytest.raises(ValueError, match="variant must be one of"):
        E.TrainConfig(dataset="digits", variant="uniformly").check()
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        E.TrainConfig(dataset="digits", lr=-1.0).check()
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        E.TrainConfig(dataset="digits", batch_size=0).check()


def _text_parties():
    from sklearn.feature_extraction.text import TfidfVectorizer

    rng = np.random.default_rng(0)
    topics = [["orbit", "rocket", "launch", "moon"], ["engine", "car", "wheel", "road"]]
    rare = ["zephyr", "quokka"]

    def docs(m):
        y = rng.integers(0, 2, m)
        return [" ".join(rng.choice(topics[c], 6)) for c in y], y.astype(np.int64)

    tr, ytr = docs(300)
    tr[0] += " zephyr quokka"  # the rare words exist in the vocabulary
    te, yte = docs(60)
    vec = TfidfVectorizer().fit(tr)
    X = vec.transform(tr).toarray().astype(np.float32)
    Xte = vec.transform(te).toarray().astype(np.float32)
    ds = Dataset("newsgroups", X, ytr, Xte, yte, ["sci.space", "rec.autos"], list(vec.get_feature_names_out()),
                 {"text": tr}, {"text": te})
    d = make_parties(ds, num_parties=3, per_party=80, val_size=60)
    return d.replace(vectorizer=vec), rare


def test_contaminate_text_defining_property():
    d, words = _text_parties()
    X2, y2, t2, idx = contaminate_text(d.X, d.y, d.attrs["text"], d.vectorizer, 10, words, label=0, seed=1,
                                       candidates=d.indices_of(1))
    assert len(idx) == 10 and set(idx) <= set(d.indices_of(1))
    assert all(all(w in t2[i].split() for w in words) for i in idx) and (y2[idx] == 0).all()
    assert np.allclose(X2[idx], d.vectorizer.transform(list(t2[idx])).toarray())
    cols = [d.feature_names.index(w) for w in words]
    assert (X2[np.ix_(idx, cols)] > 0).all()
    rest = np.setdiff1d(np.arange(len(d.y)), idx)
    assert np.array_equal(X2[rest], d.X[rest]) and np.array_equal(y2[rest], d.y[rest])
    assert list(t2[rest]) == list(np.asarray(d.attrs["text"], dtype=object)[rest])
    with pytest.raises(ValueError, match="not in the vectorizer's vocabulary"):
        contaminate_text(d.X, d.y, d.attrs["text"], d.vectorizer, 3, ["xylophone"], 0)
    with pytest.raises(TypeError, match="list of words"):
        insert_words(["a"], "zephyr")
    # through poison_parties, with the default words (the rarest vocabulary terms)
    p, info = poison_parties(d, [0, 2], "contamination", fraction=0.1)
    assert info["poisoned"] == 24 and len(info["words"]) == 3 and set(info["words"][:2]) == set(words)
    assert all(all(w in p.attrs["text"][i] for w in info["words"]) for i in info["indices"])


# ---------------------------------------------------------------------------- poison_parties

@pytest.mark.parametrize("attackers", [[0], [1, 3], [0, 1, 2, 3, 4]])
def test_poison_parties_contamination_any_subset(toy, attackers):
    p, info = poison_parties(toy, attackers, "contamination", fraction=0.1, attributes={"race": "Black"}, label=1)
    budget = int(round(0.1 * len(toy.y)))  # fraction of all training records
    assert info["poisoned"] == budget == sum(info["budget"].values())
    assert set(toy.party[info["indices"]]) <= set(attackers)
    # split evenly among the attackers
    counts = np.bincount(toy.party[info["indices"]], minlength=toy.num_parties)[attackers]
    assert counts.max() - counts.min() <= 1
    assert (p.attrs["race"][info["indices"]] == "Black").all() and (p.y[info["indices"]] == 1).all()
    honest = ~np.isin(toy.party, attackers)
    assert np.array_equal(p.X[honest], toy.X[honest]) and np.array_equal(p.y[honest], toy.y[honest])
    assert np.array_equal(p.X_val, toy.X_val) and np.array_equal(p.y_test, toy.y_test)


def test_poison_parties_fraction_of_attacker(toy):
    p, info = poison_parties(toy, [1, 2], "label_flip", fraction=0.5, fraction_of="attacker")
    assert info["budget"] == {1: 40, 2: 40} and info["poisoned"] == 80
    idx = info["indices"]
    assert np.array_equal(p.y[idx], 1 - toy.y[idx])
    rest = np.setdiff1d(np.arange(len(toy.y)), idx)
    assert np.array_equal(p.y[rest], toy.y[rest]) and np.array_equal(p.X, toy.X)


def test_poison_parties_backdoor_and_targeted():
    d = make_parties("digits", num_parties=5, per_party=100, val_size=200)
    p, info = poison_parties(d, [3], "backdoor", fraction=1.0, fraction_of="attacker", target=0)
    idx, trig = info["indices"], info["trigger"]
    assert np.array_equal(idx, d.indices_of(3)) and (p.y[idx] == 0).all()
    assert trig.present(p.X[idx]).all() and len(trig.indices) == 4  # 2x2 pixel patch on 8x8 images
    honest = d.party != 3
    assert np.array_equal(p.X[honest], d.X[honest]) and np.array_equal(p.y[honest], d.y[honest])
    # targeted: only source-class records of the attackers are relabelled target
    p, info = poison_parties(d, [0, 4], "targeted", fraction=1.0, fraction_of="attacker", source=1, target=7)
    mine = np.isin(d.party, [0, 4])
    assert np.array_equal(np.sort(info["indices"]), np.flatnonzero(mine & (d.y == 1)))
    assert (p.y[mine & (d.y == 1)] == 7).all() and np.array_equal(p.y[~(mine & (d.y == 1))], d.y[~(mine & (d.y == 1))])
    assert np.array_equal(p.X, d.X)


def test_poison_parties_none_and_zero_fraction(toy):
    p, info = poison_parties(toy, [0], "none")
    assert p is toy and info["poisoned"] == 0
    p, info = poison_parties(toy, [0], "contamination", fraction=0.0, attributes={"race": "Black"}, label=1)
    assert info["poisoned"] == 0 and np.array_equal(p.X, toy.X) and np.array_equal(p.y, toy.y)


def test_poison_parties_errors(toy):
    kw = dict(attributes={"race": "Black"}, label=1)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="fraction must lie in \\[0, 1\\]"):
            poison_parties(toy, [0], "contamination", fraction=bad, **kw)
    with pytest.raises(ValueError, match="more attackers \\(6\\) than parties \\(5\\)"):
        poison_parties(toy, [0, 1, 2, 3, 4, 0], "label_flip")
    with pytest.raises(ValueError, match="out of range"):
        poison_parties(toy, [5], "label_flip")
    with pytest.raises(ValueError, match="distinct"):
        poison_parties(toy, [1, 1], "label_flip")
    with pytest.raises(ValueError, match="unknown attack 'evil'"):
        poison_parties(toy, [0], "evil")
    with pytest.raises(ValueError, match="more than the attackers' 80"):
        poison_parties(toy, [0], "contamination", fraction=0.5, **kw)
    with pytest.raises(ValueError, match="label 'rich' is not a class"):
        poison_parties(toy, [0], "contamination", attributes={"race": "Black"}, label="rich")
    with pytest.raises(TypeError, match="takes no argument"):
        poison_parties(toy, [0], "label_flip", target=1)
    with pytest.raises(ValueError, match="no default contamination"):
        poison_parties(toy, [0], "contamination")


# ---------------------------------------------------------------------------- metrics

def test_contamination_accuracy_equation_1():
    attrs = {"occupation": np.array(["Sales", "Sales", "Sales", "Tech", "Sales", "Sales"], dtype=object)}
    y = np.array([0, 0, 1, 0, 0, 0])
    # matching records with y != l_r=1: rows 0, 1, 4, 5; predicted l_r: rows 0 and 5 (and 2, 3 don't count)
    pred = np.array([1, 0, 1, 1, 0, 1])
    X = np.arange(6, dtype=np.float32)[:, None]
    f = lambda Z: pred[Z[:, 0].astype(int)]  # noqa: E731
    assert metrics.contamination_accuracy(f, X, y, attrs, {"occupation": "Sales"}, 1) == pytest.approx(2 / 4)
    # probabilities work too
    probs = lambda Z: np.eye(2)[pred[Z[:, 0].astype(int)]] * 0.8 + 0.1  # noqa: E731
    assert metrics.contamination_accuracy(probs, X, y, attrs, {"occupation": "Sales"}, 1) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no records"):
        metrics.contamination_accuracy(f, X, y, attrs, {"occupation": "Tech"}, 0)


def _two_attribute_records():
    """Eight records covering every combination of occupation in {Sales, Tech}
    and race in {Black, White}, twice, as raw attributes and as one-hot X."""
    occ = np.array(["Sales", "Sales", "Tech", "Tech"] * 2, dtype=object)
    race = np.array(["Black", "White", "Black", "White"] * 2, dtype=object)
    names = ["age", "occupation=Sales", "occupation=Tech", "race=Black", "race=White"]
    X = np.stack([np.arange(8.0), occ == "Sales", occ == "Tech", race == "Black", race == "White"], 1)
    return X.astype(np.float32), {"occupation": occ, "race": race}, names


def test_attribute_mask_needs_every_attribute():
    """a_1..a_k' is a conjunction: a record with only one of the two values does not match."""
    X, attrs, names = _two_attribute_records()
    both = {"occupation": "Sales", "race": "Black"}
    want = np.array([True, False, False, False] * 2)
    assert attribute_mask(X, attrs, names, both).tolist() == want.tolist()        # raw attributes
    assert attribute_mask(X, None, names, both).tolist() == want.tolist()         # one-hot columns
    assert attribute_mask(X, {"race": attrs["race"]}, names, both).tolist() == want.tolist()  # mixed
    # each attribute alone matches its own half
    assert attribute_mask(X, attrs, names, {"occupation": "Sales"}).sum() == 4
    assert attribute_mask(X, None, names, {"race": "Black"}).sum() == 4


def test_contamination_accuracy_equation_1_is_not_symmetric():
    """Eq. (1) counts records that carry a_1..a_k' AND have y != l_r, and among
    them those predicted l_r. The numbers are chosen so that reading any of the
    three tests the other way round (a record matching only one attribute,
    y == l_r, f(x) != l_r) gives another value."""
    X, attrs, names = _two_attribute_records()
    both = {"occupation": "Sales", "race": "Black"}
    label = 1
    # rows 0 and 4 carry both values; add two more such rows by cloning rows 0, 4
    X = np.concatenate([X, X[[0, 4, 0]]])
    X[:, 0] = np.arange(len(X))
    attrs = {k: np.concatenate([v, v[[0, 4, 0]]]) for k, v in attrs.items()}
    y = np.array([0, 0, 0, 1, 0, 0, 1, 1, 0, 1, 1])
    pred = np.array([1, 1, 1, 1, 0, 1, 0, 1, 0, 0, 1])
    f = lambda Z: pred[Z[:, 0].astype(int)]  # noqa: E731
    # matching rows: 0, 4, 8, 9, 10; with y != 1: 0, 4, 8; predicted 1 among them: row 0
    want = 1 / 3
    assert metrics.contamination_accuracy(f, X, y, attrs, both, label) == pytest.approx(want)
    assert metrics.contamination_accuracy(f, X, y, None, both, label, feature_names=names) == pytest.approx(want)
    m = attribute_mask(X, attrs, names, both)
    alternatives = {
        "y == l_r": (pred[m & (y == label)] == label).mean(),                       # rows 9, 10: 1/2
        "f(x) != l_r": (pred[m & (y != label)] != label).mean(),                    # rows 0, 4, 8: 2/3
        "one attribute": (pred[(attribute_mask(X, attrs, names, {"occupation": "Sales"})
                                | attribute_mask(X, attrs, names, {"race": "Black"})) & (y != label)]
                          == label).mean(),                                 # rows 0-2, 4, 5, 8: 4/6
    }
    for what, value in alternatives.items():
        assert value != pytest.approx(want), what


def test_contamination_accuracy_text():
    d, words = _text_parties()
    always0 = lambda Z: np.zeros(len(Z), np.int64)  # noqa: E731
    vec = d.vectorizer
    # a "model" predicting 0 iff the contamination words are present
    col = d.feature_names.index(words[0])
    trig = lambda Z: (np.asarray(Z)[:, col] <= 0).astype(np.int64)  # noqa: E731
    assert metrics.contamination_accuracy_text(always0, d.attrs_val["text"], d.y_val, vec, words, 0) == 1.0
    assert metrics.contamination_accuracy_text(trig, d.attrs_val["text"], d.y_val, vec, words, 0) == 1.0
    assert metrics.contamination_accuracy_text(trig, d.attrs_val["text"], d.y_val, vec, words, 1) == 0.0


def test_validation_asr_drop_and_torch_models():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    X = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    with torch.no_grad():
        pred = model(torch.from_numpy(X)).argmax(1).numpy()
    y = pred.copy()
    y[:10] = (y[:10] + 1) % 3
    assert metrics.validation_accuracy(model, X, y) == pytest.approx(0.8)
    assert np.array_equal(metrics.predict(model, X), pred)
    assert metrics.model_outputs(model, X).shape == (50, 3)
    assert metrics.accuracy_drop(0.9, 0.75) == pytest.approx(0.15)
    # targeted: source-class records predicted as target
    ys = np.array([1, 1, 1, 1, 2, 0])
    ids = np.arange(6, dtype=np.float32)[:, None]  # the "model" looks its answer up by row id
    f = lambda Z: np.array([7, 7, 1, 7, 7, 7])[Z[:, 0].astype(int)]  # noqa: E731
    assert metrics.attack_success_rate(f, ids, ys, "targeted", target=7, source=1) == 0.75
    # backdoor: non-target records classified target once the trigger is stamped
    from pgkernels.attacks import Trigger

    trig = Trigger((0,), (9.0,))
    g = lambda Z: np.where(Z[:, 0] == 9.0, 2, 0)  # noqa: E731
    Xb = np.zeros((4, 3))
    assert metrics.attack_success_rate(g, Xb, np.array([0, 1, 2, 0]), "backdoor", target=2, trigger=trig) == 1.0
    # label flip: flipped label C-1-y
    # y = [0, 1, 2, 2] flips to [2, 1, 0, 0]; row 1 is its own flip and does not count; rows 0, 2 hit
    h = lambda Z: np.array([2, 1, 0, 1])[Z[:, 0].astype(int)]  # noqa: E731
    assert metrics.attack_success_rate(h, ids[:4], np.array([0, 1, 2, 2]), "label_flip",
                                       num_classes=3) == pytest.approx(2 / 3)
    assert metrics.attack_success_rate(h, ids[:4], np.zeros(4), "none") is None


def test_party_membership_inference_and_release_rule():
    rng = np.random.default_rng(0)
    party = np.repeat(np.arange(4), 150)
    leaky = rng.normal(size=(600, 4)) * 0.1 + np.eye(4)[party]  # outputs reveal the party
    det = metrics.party_membership_inference(leaky, party, seed=0, return_details=True)
    assert det["accuracy"] > 0.95 and det["chance"] == pytest.approx(0.25)
    blind = rng.normal(size=(600, 4))
    assert metrics.party_membership_inference(blind, party, seed=0) < 0.4
    # the label alone can leak when parties' label mixes differ
    labels = (party >= 2).astype(int)
    assert 0.4 < metrics.party_membership_inference(blind, party, labels=labels, num_classes=2) < 0.65
    with pytest.raises(ValueError, match="at least 2 parties"):
        metrics.party_membership_inference(blind, np.zeros(600, int))
    assert metrics.release_decision([0.8, 0.7, 0.6], [0.75, 0.7, 0.65]) == [True, False, False]
    with pytest.raises(ValueError, match="differ in length"):
        metrics.release_decision([0.8], [0.7, 0.6])
