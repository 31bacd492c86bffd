"""Private training under poisoning, end to end: data owners, attacks, defenses, metrics.

    from pgkernels.train.experiment import TrainConfig, run, sweep
    res = run(TrainConfig(dataset="adult", attack="contamination", fraction=0.05,
                          defenses=("none", "advtrain", "local")))
    table = sweep(TrainConfig(dataset="adult"), fractions=[0, 0.01, 0.02, 0.05, 0.1])

One run:

1. :func:`pgkernels.data.make_parties` -- ``parties`` owners of ``per_party``
   records plus a validation set (Hayes & Ohrimenko: 10 x 2,000 and 10,000);
2. :func:`pgkernels.attacks.poison_parties` -- the ``attackers`` poison a
   ``fraction`` of the training records (of the whole training set by
   default, the paper's "fraction of contaminated records");
3. each defense in ``defenses``:

   * ``"local"`` -- every owner's model on its own records
     (:func:`pgkernels.train.advtrain.train_local_models`), the baseline;
     its summary is the mean over the honest owners;
   * ``"none"`` -- the pooled model without defense, ``"advtrain"`` -- the
     pooled model trained against the party-identifier adversary
     (:func:`~pgkernels.train.advtrain.train_plaintext`, or
     :func:`~pgkernels.train.mpc.train_mpc` with ``backend="mpc"``);
   * ``"safenet"`` -- the owners' local models filtered on the first
     ``safenet_val`` validation records and majority-voted
     (:func:`pgkernels.defenses.safenet_reference`, or
     :func:`~pgkernels.train.safenet_mpc.safenet_mpc` with ``backend="mpc"``, which
     answers every evaluation query in one MPC session);
   * ``"spectral"``, ``"activation_clustering"`` -- find the poisoned
     records with the detector on the pooled model's penultimate-layer
     activations, per class, and retrain without them
     (:func:`pgkernels.train.detect.detect_and_retrain`, or
     :func:`~pgkernels.train.mpc.detect_and_retrain_mpc`, one MPC session
     whose flags are opened for the detection rates); metrics of the
     retrained model plus ``detect_tpr`` / ``detect_fpr`` (share of the
     poisoned / clean training records flagged);
   * ``"strip"`` -- STRIP at inference on the pooled model without defense:
     ``strip_queries`` attack queries (triggered test records for a
     backdoor; the attack's query set otherwise) and as many clean test
     records, each blended with ``strip_blends`` clean validation records,
     threshold at ``strip_fpr`` on further clean validation records
     (:func:`pgkernels.train.detect.strip` or
     :func:`~pgkernels.train.mpc.strip_mpc`); ``strip_tpr`` / ``strip_fpr``;

4. metrics on clean held-out data: validation and test accuracy, the
   attack's metric (contamination accuracy, Hayes & Ohrimenko's eq. (1), on
   the validation and the test records; attack success rate on the test set
   for backdoor / targeted / label flip), party-membership inference on the
   pooled models' outputs, and the model-release rule (owner ``p`` takes the
   joint model only if it beats its local model on ``p``'s share of the
   validation set).

MPC runs report ``seconds``, ``bytes`` (sent per compute party) and
``rounds`` from the protocols' own counters.
"""

import dataclasses
import math
import pathlib
import time

import numpy as np

from .. import metrics as M
from ..attacks import (ATTACKS, FRACTION_OF, attribute_mask, check_attackers, check_fraction, insert_words,
                       poison_parties)
from ..data import DATASETS, make_parties
from ..reporting import figure, jsonable, markdown_table, pct, save_figure, write_json, write_text

DEFENSES = ("none", "advtrain", "safenet", "local", "spectral", "activation_clustering", "strip")
DETECTION = ("spectral", "activation_clustering")
BACKENDS = ("plaintext", "mpc")
SPLITS = ("iid", "attribute")

# Per dataset: owners' sizes and training hyperparameters (overridable). Adult and
# credit follow Hayes & Ohrimenko (10 x 2,000 records, 10,000 validation; c = 10
# for the onehot variant, what helper A's tuning on Adult settled on); the others
# are sized to the data available.
DATASET_DEFAULTS = {
    "adult": dict(per_party=2000, val_size=10000, hidden=(32,), epochs=5, batch_size=128, lr=0.2, c=10.0),
    "credit_default": dict(per_party=2000, val_size=4000, hidden=(32,), epochs=5, batch_size=128, lr=0.2, c=10.0),
    "mnist": dict(per_party=5000, val_size=10000, hidden=(128,), epochs=10, batch_size=64, lr=0.1, momentum=0.9),
    "fashion_mnist": dict(per_party=5000, val_size=10000, hidden=(128,), epochs=10, batch_size=64, lr=0.1,
                          momentum=0.9),
    "newsgroups": dict(per_party=800, val_size=3000, hidden=(64,), epochs=10, batch_size=64, lr=0.5),
    "digits": dict(per_party=100, val_size=300, hidden=(32,), epochs=30, batch_size=32, lr=0.1, momentum=0.5),
}
HYPERPARAMS = ("hidden", "g_hidden", "epochs", "batch_size", "lr", "g_lr", "momentum", "g_steps", "adversary_label")


@dataclasses.dataclass
class TrainConfig:
    """One private-training experiment (see the module docstring); ``None``
    means the dataset's default from :data:`DATASET_DEFAULTS` (then the
    trainer's own default)."""

    dataset: str = "adult"
    task: str = None                     # Adult: "income" (default) or "education"
    data_dir: str = None
    parties: int = 10
    per_party: int = None
    val_size: int = None
    max_features: int = None             # newsgroups: tf-idf vocabulary size (loader default 5000)
    split: str = "iid"
    split_attribute: str = None          # split="attribute": e.g. "occupation" (or "label")
    attack: str = "contamination"
    attackers: tuple = (0,)
    fraction: float = 0.05
    fraction_of: str = "total"           # "total": of all training records (HO); "attacker": of each attacker's
    attributes: dict = None              # contamination a_1..a_k' (default per dataset)
    label: object = None                 # contamination l_r (class name or index)
    words: tuple = None                  # text contamination words
    target: object = None                # backdoor / targeted target class
    source: object = None                # targeted source class
    defenses: tuple = ("none", "advtrain", "local")
    backend: str = "plaintext"
    c: float = None
    variant: str = "onehot"
    hidden: tuple = None
    g_hidden: tuple = None
    epochs: int = None
    batch_size: int = None
    lr: float = None
    g_lr: float = None
    momentum: float = None
    g_steps: int = None
    adversary_label: bool = None
    threshold: float = 0.5               # SafeNet: minimum validation accuracy of a kept model
    safenet_val: int = 1000              # SafeNet: validation records used for filtering
    world_size: int = 2
    eps: float = 0.05                    # spectral signatures: assumed poison rate (removes 1.5 eps per class)
    ac_size_threshold: float = 0.35      # activation clustering: flag a cluster with at most this share of a class
    detect_clean: int = 0                # detectors: validation records used as the trusted clean set (0: none)
    suspect_ratio: float = 1.5           # detectors with a clean set: the suspect-class test's ratio
    strip_fpr: float = 0.05              # STRIP: false-positive rate on the clean calibration records
    strip_blends: int = 20               # STRIP: clean records blended with each query
    strip_queries: int = 500             # STRIP: attack queries and clean queries evaluated (each)
    membership: bool = True              # party-membership inference on the pooled models
    seed: int = 0
    progress: bool = True

    def check(self):
        """Validate the configuration (before any data is loaded); ValueError/TypeError naming the field."""
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {sorted(DATASETS)}")
        if self.max_features is not None:
            if self.dataset != "newsgroups":
                raise ValueError(f"max_features is only for dataset 'newsgroups', got {self.dataset!r}")
            if isinstance(self.max_features, bool) or not isinstance(self.max_features, int) \
                    or self.max_features < 1:
                raise ValueError(f"max_features must be an int >= 1, got {self.max_features!r}")
        if self.task is not None and self.dataset != "adult":
            raise ValueError(f"task is only for dataset 'adult', got task={self.task!r} for {self.dataset!r}")
        if isinstance(self.parties, bool) or not isinstance(self.parties, int) or self.parties < 1:
            raise ValueError(f"parties must be an int >= 1, got {self.parties!r}")
        if self.attack not in ATTACKS:
            raise ValueError(f"unknown attack {self.attack!r}; choose one of {list(ATTACKS)}")
        self.fraction = check_fraction(self.fraction)
        if self.fraction_of not in FRACTION_OF:
            raise ValueError(f"fraction_of must be one of {list(FRACTION_OF)}, got {self.fraction_of!r}")
        self.attackers = tuple(check_attackers(self.attackers, self.parties))
        if isinstance(self.defenses, str):
            self.defenses = tuple(d.strip() for d in self.defenses.split(",") if d.strip())
        bad = [d for d in self.defenses if d not in DEFENSES]
        if bad or not self.defenses:
            raise ValueError(f"unknown defense(s) {bad}; choose from {list(DEFENSES)}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {list(BACKENDS)}, got {self.backend!r}")
        if isinstance(self.world_size, bool) or not isinstance(self.world_size, int) or self.world_size < 2:
            raise ValueError(f"world_size must be an int >= 2 (MPC compute parties), got {self.world_size!r}")
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {self.split!r}")
        if not 0.0 <= float(self.eps) <= 1.0:
            raise ValueError(f"eps must lie in [0, 1], got {self.eps}")
        if not 0.0 < float(self.ac_size_threshold) < 0.5:
            raise ValueError(f"ac_size_threshold must lie in (0, 0.5), got {self.ac_size_threshold}")
        if isinstance(self.detect_clean, bool) or not isinstance(self.detect_clean, int) or self.detect_clean < 0:
            raise ValueError(f"detect_clean must be an int >= 0, got {self.detect_clean!r}")
        if not 1.0 <= float(self.suspect_ratio) <= 16.0:
            raise ValueError(f"suspect_ratio must lie in [1, 16], got {self.suspect_ratio}")
        if not 0.0 <= float(self.strip_fpr) < 1.0:
            raise ValueError(f"strip_fpr must lie in [0, 1), got {self.strip_fpr}")
        for k in ("strip_blends", "strip_queries"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{k} must be an int >= 1, got {v!r}")
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1], got {self.threshold}")
        if self.c is not None and (not math.isfinite(float(self.c)) or float(self.c) < 0):
            raise ValueError(f"c must be a finite number >= 0, got {self.c}")
        from .advtrain import check_hyperparams

        check_hyperparams(**self.hyperparams(), **self.advtrain_kwargs())
        return self

    def defaults(self):
        return DATASET_DEFAULTS.get(self.dataset, {})

    def hyperparams(self):
        """The training hyperparameters passed to helper A's trainers (Nones left to their defaults)."""
        dd = self.defaults()
        hp = {}
        for k in HYPERPARAMS:
            v = getattr(self, k)
            v = dd.get(k) if v is None else v
            if v is not None:
                hp[k] = tuple(v) if k in ("hidden", "g_hidden") else v
        return hp

    def advtrain_kwargs(self):
        c = self.c if self.c is not None else self.defaults().get("c", 1.0)
        return {"c": float(c), "variant": self.variant}


# ----------------------------------------------------------------------------- data

def load_parties(cfg):
    """The owners' clean data for ``cfg`` (:class:`pgkernels.data.PartyData`)."""
    dd = cfg.defaults()
    kw = {"task": cfg.task} if cfg.task is not None else ({"task": "income"} if cfg.dataset == "adult" else {})
    if cfg.max_features is not None:
        kw["max_features"] = cfg.max_features
    return make_parties(cfg.dataset, num_parties=cfg.parties,
                        per_party=cfg.per_party if cfg.per_party is not None else dd.get("per_party", 2000),
                        val_size=cfg.val_size if cfg.val_size is not None else dd.get("val_size", 10000),
                        split=cfg.split, attribute=cfg.split_attribute, seed=cfg.seed, data_dir=cfg.data_dir, **kw)


def attack_kwargs(cfg):
    """The attack-specific keyword arguments of :func:`poison_parties` set in ``cfg``."""
    if cfg.attack == "contamination":
        kw = {"attributes": cfg.attributes, "label": cfg.label, "words": list(cfg.words) if cfg.words else None}
    elif cfg.attack == "backdoor":
        kw = {"target": cfg.target}
    elif cfg.attack == "targeted":
        kw = {"source": cfg.source, "target": cfg.target}
    else:
        kw = {}
    return {k: v for k, v in kw.items() if v is not None}


def validation_owner(data, cfg):
    """Which owner's validation data each validation record is (for the release
    rule): iid splits deal the validation set out evenly at random; attribute
    splits give a record to the owner holding most training records of its
    attribute value (so each owner's validation data looks like its own)."""
    n = len(data.y_val)
    rng = np.random.default_rng(cfg.seed + 7)
    if cfg.split == "attribute":
        if cfg.split_attribute == "label":
            tr, va = data.y, data.y_val
        else:
            tr = np.asarray(data.attrs[cfg.split_attribute]).astype(str)
            va = np.asarray(data.attrs_val[cfg.split_attribute]).astype(str)
        owner = {}
        for v in np.unique(tr):
            owner[v] = int(np.bincount(data.party[tr == v], minlength=data.num_parties).argmax())
        out = np.array([owner.get(v, -1) for v in va])
        unseen = out < 0
        out[unseen] = rng.integers(0, data.num_parties, int(unseen.sum()))
        return out
    return rng.permutation(np.arange(n) % data.num_parties)


def evaluation_sets(data, info):
    """Named query sets ``{name: X}`` and the functions turning predictions on
    them into metrics. Everything is computed from clean held-out records."""
    sets = {"val": data.X_val, "test": data.X_test}
    attack = info["attack"]
    if attack == "contamination":
        label = info["label"]
        for split, X, y, a in (("val", data.X_val, data.y_val, data.attrs_val),
                               ("test", data.X_test, data.y_test, data.attrs_test)):
            if "words" in info:
                keep = y != label
                if not keep.any():
                    raise ValueError(f"contamination accuracy is undefined on the {SPLIT_NAMES[split]} set: "
                                     f"every record has the label l_r = {label}")
                docs = insert_words(np.asarray(a["text"], dtype=object)[keep], info["words"])
                sets[f"contam_{split}"] = data.vectorizer.transform(list(docs)).toarray().astype(np.float32)
            else:
                mask = attribute_mask(X, a, data.feature_names, info["attributes"]) & (y != label)
                if not mask.any():
                    raise ValueError(_no_contamination_records(data, split, X, a, y, info["attributes"], label))
                sets[f"contam_{split}"] = X[mask]
    elif attack == "backdoor":
        keep = data.y_test != info["target"]
        sets["backdoor_test"] = info["trigger"].stamp(data.X_test[keep])
    elif attack == "targeted":
        sets["targeted_test"] = data.X_test[data.y_test == info["source"]]
    return sets


SPLIT_NAMES = {"val": "validation", "test": "test"}


def _no_contamination_records(data, split, X, attrs, y, attributes, label):
    """The error for an eq. (1) with no records: how many records carry each
    attribute value, so the one that matches nothing is named."""
    counts = ", ".join(f"{a}={v!r}: {int(attribute_mask(X, attrs, data.feature_names, {a: v}).sum())}"
                       for a, v in attributes.items())
    both = int(attribute_mask(X, attrs, data.feature_names, attributes).sum())
    return (f"contamination accuracy is undefined on the {SPLIT_NAMES[split]} set: no record carries "
            f"{attributes} with a true label other than l_r = {label} (records per attribute value: {counts}; "
            f"with all of them: {both})")


def metrics_from_predictions(preds, data, info):
    """The metrics of one model from its predictions on :func:`evaluation_sets`."""
    out = {"val_acc": float((preds["val"] == data.y_val).mean()),
           "test_acc": float((preds["test"] == data.y_test).mean())}
    attack = info["attack"]
    if attack == "contamination":
        # Hayes & Ohrimenko's eq. (1): records with a_1..a_k' and y != l_r classified l_r
        for split in ("val", "test"):
            key = f"contam_{split}"
            out["contamination_acc" + ("" if split == "val" else "_test")] = float(
                (preds[key] == info["label"]).mean())  # evaluation_sets made sure the set is not empty
    elif attack == "backdoor":
        out["asr"] = float((preds["backdoor_test"] == info["target"]).mean())
    elif attack == "targeted":
        out["asr"] = float((preds["targeted_test"] == info["target"]).mean())
    elif attack == "label_flip":
        flipped = data.num_classes - 1 - data.y_test
        keep = flipped != data.y_test
        out["asr"] = float((preds["test"][keep] == flipped[keep]).mean())
    return out


def attack_metric_name(attack):
    return {"contamination": "contamination_acc", "none": None}.get(attack, "asr")


# ----------------------------------------------------------------------------- runs

def _predict_sets(model, sets):
    return {k: M.predict(model, X) for k, X in sets.items()}


def _per_owner_acc(pred_val, data, owner_val):
    """Accuracy on each owner's validation records; None for an owner with none
    (possible with attribute splits, or fewer validation records than owners)."""
    return [float((pred_val[owner_val == p] == data.y_val[owner_val == p]).mean())
            if (owner_val == p).any() else None for p in range(data.num_parties)]


def _mpc_cost(stats):
    return {k: stats[k] for k in ("seconds", "bytes", "rounds", "dealer_bytes", "wall_seconds",
                                  "grad_entries_zeroed", "grad_entries") if k in stats}


def run(cfg, clean=None):
    """One experiment (see the module docstring). ``clean``: the owners' clean
    :class:`PartyData` when already loaded (sweeps reuse it).

    Returns a JSON-ready dict: ``config``, ``data`` (sizes), ``attack``
    (parameters and the number of poisoned records) and ``results``
    ``{defense: {metrics..., seconds[, bytes, rounds], ...}}``.
    """
    from . import advtrain as _adv

    cfg.check()
    t0 = time.perf_counter()
    data = clean if clean is not None else load_parties(cfg)
    if data.num_parties != cfg.parties:
        raise ValueError(f"the data have {data.num_parties} parties but the config says parties={cfg.parties}")
    poisoned, info = poison_parties(data, list(cfg.attackers), cfg.attack, fraction=cfg.fraction,
                                    fraction_of=cfg.fraction_of, seed=cfg.seed, **attack_kwargs(cfg))
    if cfg.attack == "none":
        info["attack"] = "none"
    sets = evaluation_sets(data, info)
    owner_val = validation_owner(data, cfg)
    hp = cfg.hyperparams()
    honest = [p for p in range(data.num_parties) if p not in cfg.attackers]
    results = {}
    local_models = None
    local_acc = None

    def need_local():
        nonlocal local_models, local_acc
        if local_models is None:
            t = time.perf_counter()
            local_models = _adv.train_local_models(poisoned, progress=cfg.progress, seed=cfg.seed, **hp)
            need_local.seconds = time.perf_counter() - t
            local_acc = [M.predict(m, data.X_val) for m in local_models]
        return local_models

    order = [d for d in ("local", "none", "advtrain", "safenet") + DETECTION + ("strip",) if d in cfg.defenses]
    pooled = {}

    def pooled_model():
        """The pooled model without defense (STRIP inspects it): trained once."""
        if "f" not in pooled:
            args = (poisoned.X, poisoned.y, poisoned.party, poisoned.num_parties, poisoned.classes)
            if cfg.backend == "mpc":
                from .mpc import train_mpc

                pooled["f"], _ = train_mpc(*args, defense="none", seed=cfg.seed, progress=cfg.progress,
                                           world_size=cfg.world_size, **hp)
            else:
                pooled["f"], _ = _adv.train_plaintext(*args, defense="none", seed=cfg.seed,
                                                      progress=cfg.progress, **hp)
        return pooled["f"]

    it = order
    if cfg.progress:
        from tqdm.auto import tqdm

        it = tqdm(order, desc=f"{cfg.dataset} {cfg.attack} {cfg.fraction:g}", unit="defense")
    for defense in it:
        if defense == "local":
            models = need_local()
            per = []
            for p, m in enumerate(models):
                r = metrics_from_predictions(_predict_sets(m, sets), data, info)
                r["own_val_acc"] = _per_owner_acc(local_acc[p], data, owner_val)[p]
                per.append(r)
            summary = {}
            for k in per[0]:
                vals = [per[p][k] for p in honest if isinstance(per[p].get(k), (int, float))]
                if vals:
                    summary[k] = float(np.mean(vals))
            summary.update(per_party=per, attackers_local=[per[p] for p in cfg.attackers],
                           seconds=need_local.seconds, backend="plaintext",
                           note="summary = mean over the honest owners' local models")
            results["local"] = summary
        elif defense in ("none", "advtrain"):
            kw = dict(hp)
            if defense == "advtrain":
                kw.update(cfg.advtrain_kwargs())
            args = (poisoned.X, poisoned.y, poisoned.party, poisoned.num_parties, poisoned.classes)
            if cfg.backend == "mpc":
                from .mpc import train_mpc

                f, stats = train_mpc(*args, defense=defense, seed=cfg.seed, progress=cfg.progress,
                                     world_size=cfg.world_size, **kw)
            else:
                f, stats = _adv.train_plaintext(*args, defense=defense, seed=cfg.seed, progress=cfg.progress, **kw)
            if defense == "none":
                pooled["f"] = f
            preds = _predict_sets(f, sets)
            r = metrics_from_predictions(preds, data, info)
            if cfg.membership and data.num_parties > 1:
                r["membership_inference"] = M.party_membership_inference(
                    M.model_outputs(f, poisoned.X), poisoned.party, seed=cfg.seed, return_details=True)
            r["per_owner_val_acc"] = _per_owner_acc(preds["val"], data, owner_val)
            r.update(_mpc_cost(stats) if cfg.backend == "mpc" else {"seconds": stats["seconds"]})
            r["backend"] = cfg.backend
            if defense == "advtrain":
                r.update(cfg.advtrain_kwargs())
                if "epochs" in stats and stats["epochs"] and "g_accuracy" in stats["epochs"][-1]:
                    r["g_accuracy_last_epoch"] = stats["epochs"][-1]["g_accuracy"]
            results[defense] = r
        elif defense == "safenet":
            from ..defenses.safenet import safenet_reference
            from .safenet_mpc import safenet_mpc

            models = need_local()
            nv = min(int(cfg.safenet_val), len(data.X_val))
            names = list(sets)
            Q = np.concatenate([sets[k] for k in names]).astype(np.float32)
            if cfg.backend == "mpc":
                out = safenet_mpc(models, data.X_val[:nv], data.y_val[:nv], Q, threshold=cfg.threshold,
                                  world_size=cfg.world_size, classes=data.classes, on_empty="all",
                                  reveal_selection=True)
            else:
                t = time.perf_counter()
                out = safenet_reference(models, data.X_val[:nv], data.y_val[:nv], Q, threshold=cfg.threshold,
                                        classes=data.classes, on_empty="all")
                out["seconds"] = time.perf_counter() - t
            cuts = np.cumsum([0] + [len(sets[k]) for k in names])
            preds = {k: out["pred"][cuts[i]:cuts[i + 1]] for i, k in enumerate(names)}
            r = metrics_from_predictions(preds, data, info)
            r["per_owner_val_acc"] = _per_owner_acc(preds["val"], data, owner_val)
            # the kept set is revealed for the lab's metrics (safenet_mpc's reveal_selection)
            r.update(kept=out.get("kept"), fallback=bool(out.get("fallback", out.get("kept") == [])),
                     threshold=cfg.threshold, filter_records=nv,
                     queries=int(len(Q)), backend=cfg.backend,
                     local_seconds=need_local.seconds)
            r.update(_mpc_cost(out) if cfg.backend == "mpc" else {"seconds": out["seconds"]})
            results["safenet"] = r
        elif defense in DETECTION:
            results[defense] = _detection_run(defense, cfg, hp, poisoned, info, data, sets, owner_val)
        elif defense == "strip":
            results["strip"] = _strip_run(cfg, pooled_model(), data, sets, info)
    if local_acc is not None:
        local_own = [_per_owner_acc(local_acc[p], data, owner_val)[p] for p in range(data.num_parties)]
        for d in ("none", "advtrain", "safenet"):
            if d in results:
                results[d]["release"] = M.release_decision(results[d]["per_owner_val_acc"], local_own)
    attack_info = {k: v for k, v in info.items() if k != "indices"}
    return jsonable({
        "config": dataclasses.asdict(cfg),
        "data": {"name": data.name, "parties": data.num_parties, "train_records": int(len(data.y)),
                 "per_party": data.party_sizes().tolist(), "val_records": int(len(data.y_val)),
                 "test_records": int(len(data.y_test)), "features": int(data.X.shape[1]),
                 "classes": list(data.classes)},
        "attack": attack_info,
        "hyperparams": hp,
        "results": results,
        "seconds": time.perf_counter() - t0,
    })


def _detection_run(defense, cfg, hp, poisoned, info, data, sets, owner_val):
    """Detect, remove, retrain (see the module docstring): the retrained
    model's metrics, the detection rates and the costs."""
    from . import detect as _det

    args = (poisoned.X, poisoned.y, poisoned.party, poisoned.num_parties, poisoned.classes)
    kw = {"eps": cfg.eps} if defense == "spectral" else {}
    dkw = {"size_threshold": cfg.ac_size_threshold} if defense == "activation_clustering" else {}
    clean = None
    if cfg.detect_clean:
        # the trusted clean set: the first detect_clean validation records
        nc = min(int(cfg.detect_clean), len(data.X_val))
        clean = (data.X_val[:nc], data.y_val[:nc])
        dkw["ratio"] = float(cfg.suspect_ratio)
    t = time.perf_counter()
    if cfg.backend == "mpc":
        from .mpc import detect_and_retrain_mpc

        f, out = detect_and_retrain_mpc(*args, detector=defense, reveal="all", detector_kwargs=dkw, clean=clean,
                                        seed=cfg.seed, progress=cfg.progress, world_size=cfg.world_size,
                                        **kw, **{k: v for k, v in hp.items() if k in _MPC_DETECT_HP})
    else:
        f, out = _det.detect_and_retrain(*args, detector=defense, detector_kwargs=dkw, clean=clean, seed=cfg.seed,
                                         progress=cfg.progress, **kw, **hp)
    wall = time.perf_counter() - t
    r = metrics_from_predictions(_predict_sets(f, sets), data, info)
    rates = _det.rates(out["flags"], info.get("indices", np.zeros(0, np.int64)))
    r.update(detect_tpr=rates["tpr"], detect_fpr=rates["fpr"], flagged=rates["flagged"],
             per_owner_val_acc=_per_owner_acc(_predict_sets(f, {"val": data.X_val})["val"], data, owner_val),
             backend=cfg.backend, phases=out.get("phases"))
    r.update(kw, **dkw)
    if clean is not None:
        r["clean_records"] = len(clean[1])
    r.update(_mpc_cost(out) if cfg.backend == "mpc" else {"seconds": out["seconds"]})
    r["wall_seconds"] = wall
    return r


# the MPC trainer's hyperparameters (no adversary)
_MPC_DETECT_HP = ("hidden", "epochs", "batch_size", "lr", "momentum")


def _strip_queries(cfg, data, sets, info):
    """(attack queries, clean queries, blending samples, calibration queries) for STRIP."""
    m = int(cfg.strip_queries)
    key = {"backdoor": "backdoor_test", "targeted": "targeted_test"}.get(info["attack"])
    if key is None and "contam_test" in sets:
        key = "contam_test"
    attack_q = sets[key][:m] if key is not None else None
    N = int(cfg.strip_blends)
    return attack_q, data.X_test[:m], data.X_val[:N], data.X_val[N:N + max(m, 100)]


def _strip_run(cfg, f, data, sets, info):
    """STRIP on the pooled model: TPR on the attack's queries, FPR on clean test queries."""
    from . import detect as _det

    attack_q, clean_q, blend, cal = _strip_queries(cfg, data, sets, info)
    queries = clean_q if attack_q is None else np.concatenate([attack_q, clean_q])
    t = time.perf_counter()
    if cfg.backend == "mpc":
        from .mpc import strip_mpc

        out = strip_mpc(f, queries, blend, cal, fpr=cfg.strip_fpr, world_size=cfg.world_size,
                        progress=cfg.progress)
        flags = out["flags"]
    else:
        flags, _ = _det.strip(f, queries, blend, cal, fpr=cfg.strip_fpr)
        out = {"seconds": time.perf_counter() - t}
    na = 0 if attack_q is None else len(attack_q)
    r = metrics_from_predictions(_predict_sets(f, sets), data, info)
    r.update(strip_tpr=float(flags[:na].mean()) if na else None, strip_fpr=float(flags[na:].mean()),
             strip_queries=int(na), strip_clean_queries=int(len(queries) - na), strip_blends=int(len(blend)),
             strip_calibration=int(len(cal)), strip_target_fpr=cfg.strip_fpr, backend=cfg.backend,
             note="model: the pooled model without defense; STRIP flags queries at inference")
    r.update(_mpc_cost(out) if cfg.backend == "mpc" else {"seconds": out["seconds"]})
    return r


def sweep(cfg, fractions):
    """:func:`run` for each contamination fraction (the data are loaded once).
    Returns ``{"config", "fractions", "runs": [run results]}``."""
    cfg.check()
    fractions = [check_fraction(f, "fractions") for f in fractions]
    if not fractions:
        raise ValueError("fractions must name at least one fraction")
    clean = load_parties(cfg)
    runs = []
    for f in fractions:
        runs.append(run(dataclasses.replace(cfg, fraction=f), clean=clean))
    return jsonable({"config": dataclasses.asdict(cfg), "fractions": fractions, "runs": runs})


# ----------------------------------------------------------------------------- reporting

def _mb(r):
    b = r.get("bytes")
    return "–" if not b else f"{max(b) / 1e6:,.1f}"


def markdown(result):
    """A Markdown table of a :func:`run` or :func:`sweep` result: one row per
    (fraction, defense) with validation / test accuracy, the attack's metric,
    party-membership inference accuracy, owners who would take the joint
    model, and seconds / MB sent per party (MPC)."""
    runs = result["runs"] if "runs" in result else [result]
    cfg = runs[0]["config"]
    metric = attack_metric_name(cfg["attack"])
    mname = {"contamination_acc": "contamination acc (val)", "asr": "attack success"}.get(metric, "")
    head = (f"**{runs[0]['data']['name']}**, {runs[0]['data']['parties']} owners x "
            f"{runs[0]['data']['per_party'][0]} records, attack {cfg['attack']} by owner(s) "
            f"{cfg['attackers']}, backend {cfg['backend']}, seed {cfg['seed']}")
    cols = ["fraction", "poisoned", "defense", "val acc (%)", "test acc (%)"]
    if metric:
        cols.append(f"{mname} (%)")
    detecting = any(d in r["results"] for r in runs for d in DETECTION + ("strip",))
    if detecting:
        cols += ["detected (TPR %)", "clean flagged (FPR %)"]
    cols += ["party inference (%)", "release", "seconds", "MB sent/party"]
    rows = []
    for r in runs:
        for d, res in r["results"].items():
            mi = res.get("membership_inference")
            rel = res.get("release")
            row = [f"{100 * r['config']['fraction']:g}%", str(r["attack"].get("poisoned", 0)), d,
                   pct(res.get("val_acc")), pct(res.get("test_acc"))]
            if metric:
                row.append(pct(res.get(metric)))
            if detecting:
                row += [pct(res.get("detect_tpr", res.get("strip_tpr"))),
                        pct(res.get("detect_fpr", res.get("strip_fpr")))]
            # owners without validation records (release None) are not counted
            released = f"{sum(1 for v in rel if v)}/{sum(1 for v in rel if v is not None)}" if rel else "–"
            seconds = res.get("seconds")
            row += [f"{pct(mi['accuracy'])} (chance {pct(mi['chance'])})" if mi else "–",
                    released, "–" if seconds is None else f"{seconds:.1f}", _mb(res)]
            rows.append(row)
    return head + "\n\n" + markdown_table(cols, rows) + "\n"


LABELS = {"none": "joint model, no defense", "advtrain": "joint model, adversarial training",
          "safenet": "SafeNet ensemble", "local": "local models (honest mean)",
          "spectral": "spectral signatures, retrained", "activation_clustering": "activation clustering, retrained",
          "strip": "joint model + STRIP"}
STYLES = {"none": ("C3", "-", "o"), "advtrain": ("C0", "-", "s"), "safenet": ("C2", "-", "^"),
          "local": ("0.4", "--", "x"), "spectral": ("C4", "-", "D"), "activation_clustering": ("C5", "-", "v"),
          "strip": ("C6", ":", "P")}


def plot(result, path):
    """Hayes & Ohrimenko-style figure (matplotlib, Agg) to ``path``: for a
    sweep, the attack's metric (contamination accuracy or attack success) and
    validation accuracy against the fraction of poisoned records, one line
    per defense (the local-model baseline dashed); for a single run, bars."""
    runs = result["runs"] if "runs" in result else [result]
    cfg = runs[0]["config"]
    metric = attack_metric_name(cfg["attack"])
    mlabel = {"contamination_acc": "contamination accuracy (%)", "asr": "attack success rate (%)"}.get(metric)
    panels = ([(metric, mlabel)] if metric else []) + [("val_acc", "validation accuracy (%)")]
    fig = figure((5.2 * len(panels), 4.0))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    defenses = [d for d in DEFENSES if d in runs[0]["results"]]
    title = (f"{runs[0]['data']['name']}: {cfg['attack']} by owner(s) {cfg['attackers']} "
             f"of {runs[0]['data']['parties']} ({cfg['backend']})")
    for ax, (key, label) in zip(axes, panels):
        if len(runs) > 1:
            x = [100 * r["config"]["fraction"] for r in runs]
            for d in defenses:
                color, ls, mk = STYLES[d]
                y = [r["results"][d].get(key) for r in runs]
                y = [np.nan if v is None else 100 * v for v in y]
                ax.plot(x, y, color=color, linestyle=ls, marker=mk, label=LABELS[d])
            ax.set_xlabel("poisoned records (% of training data)" if cfg["fraction_of"] == "total"
                          else "poisoned records (% of each attacker's data)")
        else:
            vals = [runs[0]["results"][d].get(key) for d in defenses]
            ax.bar(range(len(defenses)), [0 if v is None else 100 * v for v in vals],
                   color=[STYLES[d][0] for d in defenses])
            ax.set_xticks(range(len(defenses)), [LABELS[d].replace(", ", "\n") for d in defenses], fontsize=8)
            for i, v in enumerate(vals):
                ax.text(i, 0 if v is None else 100 * v, pct(v), ha="center", va="bottom", fontsize=8)
            ax.set_xlabel(f"{100 * cfg['fraction']:g}% poisoned")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if len(runs) > 1:
        axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return pathlib.Path(save_figure(fig, path, dpi=120))


def write_outputs(result, out_dir, name, run_provenance=None):
    """Write ``<name>.json``, ``<name>.md`` and ``<name>.png`` under ``out_dir``; returns the Markdown.
    ``run_provenance``: :func:`pgkernels.reporting.provenance` taken when the
    run started (command, commit, versions, machine), recorded in the JSON."""
    out = pathlib.Path(out_dir)
    md = markdown(result)
    if run_provenance is not None:
        result = dict(result, provenance=run_provenance)
    write_json(result, out / f"{name}.json")
    write_text(md, out / f"{name}.md")
    plot(result, out / f"{name}.png")
    return md
