"""The lab of one federated run: the data split among clients, the poisoning, local training, evaluation.

:class:`Lab` builds, from an :class:`~pgkernels.fl.config.FLConfig` and a
dataset, the server's root data, the clients' local data (the malicious
clients' poisoned for a data attack: :mod:`pgkernels.attacks.records`), the
model (:mod:`pgkernels.models`) and the global parameters; it trains a
client locally (plain torch SGD), replaces malicious updates
(:mod:`pgkernels.attacks.updates`) and evaluates the global model
(:mod:`pgkernels.metrics`). :func:`load_dataset` memoises the dataset for
sweeps.
"""

import math

import numpy as np
import torch

from ..attacks import backdoor, concentrated_targeted, label_flip, make_trigger, updates
from ..attacks.updates import UPDATE_ATTACKS
from ..data import dirichlet_split, iid_split, load
from ..metrics import accuracy, attack_success_rate
from ..models import get_flat, make_model, set_flat

_DATA_CACHE = {}


def load_dataset(name, data_dir=None):
    """:func:`pgkernels.data.load`, memoised per (name, data_dir) for sweeps (one entry)."""
    key = (name, str(data_dir) if data_dir else None)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = load(name, data_dir)
    return _DATA_CACHE[key]


def _flat(X):
    return np.ascontiguousarray(np.asarray(X, dtype=np.float32).reshape(len(X), -1))


class Lab:
    """Data, clients and model of one run, built from an :class:`FLConfig` and a
    :class:`pgkernels.data.Dataset`.

    Holds the server's root data (``X_root``, ``y_root``: ``root_size`` records
    taken out of the training set), the clients' local data (``clients``: a
    list of ``(X, y)`` tensors; the malicious ones already poisoned for a data
    attack; for ``targeted``, AUROR's threat model: ``poisoned_records``
    source-class images labelled as the target, a ``poison_fraction`` share
    of all the clients' records, are all the malicious clients hold; the
    benign clients share the whole clean training pool), the ``malicious`` client ids, the backdoor ``trigger``, the model
    and the global parameters as one flat vector (``global_flat``).
    :meth:`train` is one client's local training, :meth:`evaluate` the global
    model's test accuracy and attack success, :meth:`poison_updates` the
    update attacks. The Flower example drives the same lab from Flower's
    simulation engine.
    """

    def __init__(self, cfg, dataset):
        self.cfg, self.ds = cfg, dataset
        C = dataset.num_classes
        for field in ("source", "target"):
            if cfg.attack in ("targeted", "backdoor") and getattr(cfg, field) >= C:
                raise ValueError(f"FLConfig.{field} must be a class of {dataset.name} (< {C}), got "
                                 f"{getattr(cfg, field)}")
        Xtr, ytr = _flat(dataset.X_train), np.asarray(dataset.y_train, dtype=np.int64)
        self.X_test, self.y_test = _flat(dataset.X_test), np.asarray(dataset.y_test, dtype=np.int64)
        rng = np.random.default_rng(cfg.seed)
        perm = rng.permutation(len(Xtr))
        root, pool = perm[:cfg.root_size], np.sort(perm[cfg.root_size:])
        self.X_root, self.y_root = torch.from_numpy(Xtr[root]), torch.from_numpy(ytr[root])
        poisoned = []
        self.poisoned_records = 0
        if cfg.attack == "targeted":
            # AUROR's threat model: a poison_fraction share of all the records, held by the malicious clients only
            chosen = concentrated_targeted(ytr[pool], cfg.malicious, cfg.effective_poison_fraction, cfg.source,
                                           cfg.target, seed=cfg.seed)
            if any(len(c) == 0 for c in chosen):
                raise ValueError(f"FLConfig.poison_fraction={cfg.effective_poison_fraction} of {len(pool)} records "
                                 f"leaves some of the {cfg.malicious} malicious clients without a poisoned record")
            poisoned = [pool[c] for c in chosen]
            self.poisoned_records = int(sum(len(c) for c in chosen))
        if cfg.malicious_ids == "first":
            mal = np.arange(cfg.malicious)
        else:
            mal = np.sort(rng.choice(cfg.clients, size=cfg.malicious, replace=False))
        self.malicious = [int(i) for i in mal] if cfg.attack != "none" else []
        # targeted: the malicious clients hold only their poisoned records, the benign ones share the rest
        holders = [i for i in range(cfg.clients) if not (cfg.attack == "targeted" and i in self.malicious)]
        if cfg.split == "iid":
            parts = iid_split(len(pool), len(holders), seed=cfg.seed)
        else:
            parts = dirichlet_split(ytr[pool], len(holders), alpha=cfg.alpha, seed=cfg.seed)
        owned = {i: pool[p] for i, p in zip(holders, parts)}
        self.trigger = make_trigger(dataset) if cfg.attack == "backdoor" else None
        self.clients = []
        for i in range(cfg.clients):
            if i not in owned:  # a targeted attacker: source-class records labelled as the target
                extra = poisoned[self.malicious.index(i)]
                X, y = Xtr[extra], np.full(len(extra), cfg.target, dtype=ytr.dtype)
            else:
                X, y = Xtr[owned[i]], ytr[owned[i]]
            if i in self.malicious:
                if cfg.attack == "label_flip":
                    y = label_flip(y, C)
                elif cfg.attack == "backdoor":
                    X, y = backdoor(X, y, cfg.target, self.trigger, cfg.effective_poison_fraction,
                                    seed=cfg.seed * 1000 + i)
            self.clients.append((torch.from_numpy(np.ascontiguousarray(X)), torch.from_numpy(y)))
        self.model = make_model(cfg.model, dataset, seed=cfg.seed, hidden=cfg.hidden)
        self.global_flat = get_flat(self.model)
        sizes = [len(y) for _, y in self.clients]
        self.server_steps = int(np.median([self._steps(s) for s in sizes]))
        self.loss = torch.nn.CrossEntropyLoss()

    def _steps(self, n):
        cfg = self.cfg
        return cfg.local_steps if cfg.local_steps is not None else cfg.local_epochs * math.ceil(n / cfg.batch_size)

    def train(self, X, y, seed_seq, steps=None):
        """Local SGD from the global model; returns the update (delta) as float64 numpy."""
        cfg = self.cfg
        n = len(y)
        steps = self._steps(n) if steps is None else steps
        rng = np.random.default_rng(seed_seq)
        bs = min(cfg.batch_size, n)
        batches = []
        while len(batches) < steps:
            perm = rng.permutation(n)
            batches += [perm[i:i + bs] for i in range(0, n, bs)] if cfg.local_steps is None else \
                [perm[i:i + bs] for i in range(0, n - bs + 1, bs)]
        model = self.model
        set_flat(model, self.global_flat)
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
        for b in batches[:steps]:
            b = torch.from_numpy(b)
            opt.zero_grad(set_to_none=True)
            self.loss(model(X[b]), y[b]).backward()
            opt.step()
        return (get_flat(model) - self.global_flat).double().numpy()

    def evaluate(self):
        """``(test accuracy, attack success rate or None)`` of the global model."""
        cfg = self.cfg
        set_flat(self.model, self.global_flat)
        acc = accuracy(self.model, self.X_test, self.y_test)
        asr = attack_success_rate(self.model, self.X_test, self.y_test, cfg.attack, target=cfg.target,
                                  source=cfg.source, trigger=self.trigger, num_classes=self.ds.num_classes)
        return acc, asr

    def poison_updates(self, U, rng):
        """Replace the malicious rows of the (n, d) updates U in place by the
        configured update attack (from the benign rows: the omniscient
        attacker), or boost a backdoor's rows by ``boost``."""
        poison_updates(self.cfg, U, self.malicious, rng)


def poison_updates(cfg, U, mal, rng):
    """Replace the malicious rows ``mal`` of U in place according to ``cfg.attack``
    (an update attack, or the boosting of a backdoor)."""
    if not mal or cfg.attack not in UPDATE_ATTACKS + ("backdoor",):
        return
    benign = np.setdiff1d(np.arange(len(U)), mal)
    Ub = U[benign]
    if cfg.attack == "sign_flip":
        U[mal] = updates.sign_flip(U[mal])
    elif cfg.attack == "gaussian":
        U[mal] = updates.gaussian(U[mal], cfg.gaussian_std, rng)
    elif cfg.attack == "alie":
        U[mal] = updates.alie(Ub, len(U), len(mal), z=cfg.alie_z)
    elif cfg.attack == "ipm":
        U[mal] = updates.ipm(Ub, cfg.ipm_epsilon)
    elif cfg.attack == "min_max":
        U[mal] = updates.min_max(Ub, cfg.dev_type)
    elif cfg.attack == "min_sum":
        U[mal] = updates.min_sum(Ub, cfg.dev_type)
    elif cfg.attack == "backdoor" and cfg.boost != 1.0:
        U[mal] = updates.scale(U[mal], cfg.boost)


__all__ = ["Lab", "load_dataset", "poison_updates"]
