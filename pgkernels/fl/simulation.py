"""A federated-learning poisoning lab: simulated clients, attacks, robust aggregation.

One round of :func:`run`:

1. every client starts from the global model and trains it locally (plain
   torch SGD, ``local_epochs`` passes or ``local_steps`` steps over its data);
   its update is the model delta (local minus global);
2. the malicious clients (the first ``malicious`` client ids, or a seeded
   random choice) either poisoned their data beforehand (label flip, backdoor,
   targeted mislabelling) or replace their update by a crafted one computed
   from the benign updates (sign flip, Gaussian, ALIE, IPM, Min-Max, Min-Sum:
   the usual omniscient attacker);
3. the aggregator combines the (n, d) float64 updates with the chosen rule,
   and the global model moves by the aggregate (server learning rate 1);
4. the global model is evaluated: test accuracy, attack success rate, and for
   rules that select clients the detection rates.

The aggregator is pluggable: any object with ``aggregate(name, U, **kwargs) ->
(aggregate, kept indices or None)``; the default :class:`PlaintextAggregator`
uses the numpy references of :mod:`pgkernels.defenses.reference` through
:data:`DEFENSES`, and ``backend="mpc"`` uses
:class:`pgkernels.fl.mpc.MPCAggregator` (secret-shared updates). Both get the
same keyword arguments (:func:`defense_kwargs`), named as the parameters of
the aggregators in :mod:`pgkernels.defenses`.
"""

import dataclasses
import json
import math
import pathlib
import time
from typing import Optional

import numpy as np
import torch

from . import attacks as A
from . import metrics as M
from .models import MODELS, get_flat, make_model, set_flat

# ----------------------------------------------------------------------------
# defenses
# ----------------------------------------------------------------------------


def _ref(name):
    """``pgkernels.defenses.reference.<name>``, looked up when first used."""
    from ..defenses import reference

    fn = getattr(reference, name, None)
    if fn is None:
        raise NotImplementedError(f"pgkernels.defenses.reference has no {name!r} (yet)")
    return fn


def _indices(kept):
    return np.sort(np.asarray(kept, dtype=np.int64).reshape(-1))


def _fedavg(U, ctx):
    """FedAvg (McMahan et al. 2017): the coordinate-wise mean."""
    return _ref("fedavg")(U), None


def _median(U, ctx):
    """Coordinate-wise median (Yin et al. 2018)."""
    return _ref("median")(U), None


def _trimmed_mean(U, ctx):
    """Coordinate-wise trimmed mean (Yin et al. 2018), ``proportiontocut`` from each end."""
    return _ref("trimmed_mean")(U, ctx["proportiontocut"]), None


def _krum(U, ctx):
    """Krum (Blanchard et al. 2017): the update with the smallest sum of squared
    distances to its n - f - 2 nearest others; kept: that client."""
    agg, i = _ref("krum")(U, ctx["num_malicious"])
    return agg, _indices([i])


def _multi_krum(U, ctx):
    """Multi-Krum: mean of the ``to_keep`` updates with the best Krum scores."""
    agg, keep = _ref("multi_krum")(U, ctx["num_malicious"], ctx["to_keep"])
    return agg, _indices(keep)


def _bulyan(U, ctx):
    """Bulyan (El Mhamdi et al. 2018): n - 2f Krum selections, then a trimmed
    mean around the coordinate-wise median; kept: the selected clients."""
    agg, chosen = _ref("bulyan")(U, ctx["num_malicious"])
    return agg, _indices(chosen)


def _norm_clip(U, ctx):
    """Norm clipping (Sun et al. 2019): every update scaled to norm <= ``max_norm``, then averaged."""
    return _ref("norm_clip")(U, ctx["max_norm"]), None


def _fltrust(U, ctx):
    """FLTrust (Cao et al., NDSS 2021): ReLU'd cosine trust scores against the
    server's own update on its clean root data, updates rescaled to its norm."""
    return _ref("fltrust")(U, ctx["server_update"]), None


def _flame(U, ctx):
    """FLAME (Nguyen et al., USENIX Security 2022), with the MPC version's
    clustering rule: cosine-distance admission, median-norm clipping, noise."""
    agg, kept = _ref("flame")(U, num_malicious=ctx.get("num_malicious"), noise_lambda=ctx["noise_lambda"],
                              rng=ctx.get("rng"))
    return agg, _indices(kept)


def _auror(U, ctx):
    """AUROR (Shen et al., ACSAC 2016): 2-means on the indicative features,
    the majority cluster kept."""
    agg, kept = _ref("auror")(U, alpha=ctx["alpha"], iters=ctx["iters"])
    return agg, _indices(kept)


#: name -> callable(U (n, d) float64, ctx dict) -> (aggregate (d,), kept indices or None)
DEFENSES = {
    "fedavg": _fedavg, "median": _median, "trimmed_mean": _trimmed_mean, "krum": _krum,
    "multi_krum": _multi_krum, "bulyan": _bulyan, "norm_clip": _norm_clip, "fltrust": _fltrust,
    "flame": _flame, "auror": _auror,
}

#: the keyword arguments each rule takes (names of the pgkernels.defenses parameters)
DEFENSE_PARAMS = {
    "fedavg": (), "median": (), "trimmed_mean": ("proportiontocut",), "krum": ("num_malicious",),
    "multi_krum": ("num_malicious", "to_keep"), "bulyan": ("num_malicious",), "norm_clip": ("max_norm",),
    "fltrust": ("server_update",), "flame": ("num_malicious", "noise_lambda", "rng"), "auror": ("alpha", "iters"),
}

#: rules for which the server computes its own update on the root data each round
NEEDS_SERVER_UPDATE = ("fltrust",)


class PlaintextAggregator:
    """Aggregation in the clear with :data:`DEFENSES` (numpy float64).

    Before the rule, the updates go through the same validity check as on the
    MPC servers (:func:`pgkernels.defenses.validity.validate_plain`: every
    coordinate within the rule's input bound, optionally every norm within
    ``max_norm``; ``policy="drop"`` leaves invalid clients out, ``"clamp"``
    clamps them), so both backends aggregate the same clients.
    :attr:`last_invalid` lists the clients the last call dropped.
    """

    backend = "plaintext"

    def __init__(self, validity="drop", max_norm=None):
        from ..defenses.validity import POLICIES

        if validity not in POLICIES:
            raise ValueError(f"validity must be one of {POLICIES}, got {validity!r}")
        self.validity = validity
        self.max_norm = max_norm
        self.last_invalid = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    @staticmethod
    def supports(name):
        return name in DEFENSES

    def aggregate(self, name, U, **kwargs):
        """``(aggregate (d,) float64, sorted kept client indices or None)``."""
        if name not in DEFENSES:
            raise ValueError(f"unknown defense {name!r}; choose one of {sorted(DEFENSES)}")
        from ..defenses.validity import after_drop, min_clients, validate_plain

        U = np.asarray(U, dtype=np.float64)
        if U.ndim != 2:
            raise ValueError(f"updates must be 2-D (clients x parameters), got shape {U.shape}")
        V, valid = validate_plain(U, name, max_norm=self.max_norm, policy=self.validity,
                                  alpha=kwargs.get("alpha", 2.0))
        self.last_invalid = [] if valid is None else np.flatnonzero(~valid).tolist()
        if not self.last_invalid:
            agg, kept = DEFENSES[name](V, kwargs)
            return np.asarray(agg, dtype=np.float64), kept
        need = min_clients(name, kwargs.get("num_malicious") or 0)
        if V.shape[0] < need:
            raise ValueError(f"{len(self.last_invalid)} of {U.shape[0]} clients sent invalid updates; {name} "
                             f"needs at least {need} valid ones, {V.shape[0]} left")
        idx = np.flatnonzero(valid)
        agg, kept = DEFENSES[name](V, after_drop(name, kwargs, len(self.last_invalid)))
        return np.asarray(agg, dtype=np.float64), (None if kept is None else _indices(idx[kept]))

    def summary(self):
        return {}


# ----------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------

BACKENDS = ("plaintext", "mpc")
SPLITS = ("iid", "dirichlet")


@dataclasses.dataclass
class FLConfig:
    """One federated run. Validated on construction (``ValueError`` naming the field)."""

    dataset: str = "digits"
    model: str = "mlp"
    clients: int = 20
    malicious: int = 4
    attack: str = "none"
    defense: str = "fedavg"
    rounds: int = 30
    local_epochs: int = 1
    local_steps: Optional[int] = None   # exactly this many SGD steps per round (overrides local_epochs)
    lr: float = 0.2
    batch_size: int = 16
    momentum: float = 0.0
    hidden: tuple = (64,)               # MLP hidden widths
    split: str = "iid"                  # "iid" or "dirichlet" (label skew)
    alpha: float = 0.5                  # Dirichlet concentration
    seed: int = 0
    backend: str = "plaintext"          # "plaintext" or "mpc"
    world_size: int = 2                 # MPC compute parties
    malicious_ids: str = "first"        # "first" or "random"
    # attack knobs
    source: int = 1                     # targeted: source class
    target: int = 7                     # targeted / backdoor: target class
    poison_fraction: float = 0.5        # backdoor: fraction of a malicious client's samples poisoned
    boost: float = 1.0                  # backdoor: model-replacement factor on the malicious updates
    ipm_epsilon: float = 0.5            # IPM: small (0.1-0.5) slips past Krum, large (>= 5) overwhelms FedAvg
    alie_z: Optional[float] = None      # ALIE: z (default: z_max from Baruch et al.'s formula, 0.385 for 4/20)
    gaussian_std: float = 1.0
    dev_type: str = "std"               # min_max / min_sum perturbation: "std", "unit_vec", "sign"
    # defense knobs
    num_malicious: Optional[int] = None  # f assumed by Krum / Multi-Krum / Bulyan (default: malicious)
    trim: float = 0.2                   # trimmed mean: proportion cut from each end
    to_keep: Optional[int] = None       # Multi-Krum (default: clients - f)
    max_norm: Optional[float] = None    # norm clipping bound (default: norm of the server's root-data update)
    root_size: int = 100                # server's clean root dataset (FLTrust), taken out of the training set
    flame_noise: float = 0.001          # FLAME's noise lambda
    flame_num_malicious: Optional[int] = None  # FLAME keeps n - this (default: the majority n // 2 + 1)
    auror_alpha: float = 2.0
    auror_iters: int = 3
    # data / evaluation
    data_dir: Optional[str] = None
    eval_every: int = 1

    def __post_init__(self):
        self.hidden = tuple(int(h) for h in self.hidden)
        self.validate()

    def _int(self, field, lo, hi=None, optional=False):
        v = getattr(self, field)
        if v is None and optional:
            return
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"FLConfig.{field} must be an int, got {v!r}")
        if v < lo or (hi is not None and v > hi):
            rng = f">= {lo}" if hi is None else f"between {lo} and {hi}"
            raise ValueError(f"FLConfig.{field} must be {rng}, got {v}")

    def _choice(self, field, choices):
        v = getattr(self, field)
        if v not in choices:
            raise ValueError(f"FLConfig.{field}: unknown {field} {v!r}; choose one of {sorted(choices)}")

    def validate(self):
        """Check every field; raise ``ValueError`` naming the first bad one."""
        from ..data.datasets import DATASETS

        self._choice("dataset", DATASETS)
        self._choice("model", MODELS)
        self._choice("attack", A.ATTACKS)
        self._choice("defense", DEFENSES)
        self._choice("backend", BACKENDS)
        self._choice("split", SPLITS)
        self._choice("malicious_ids", ("first", "random"))
        self._choice("dev_type", ("std", "unit_vec", "sign"))
        self._int("clients", 1)
        self._int("malicious", 0, self.clients)
        self._int("rounds", 1)
        self._int("local_epochs", 1)
        self._int("local_steps", 1, optional=True)
        self._int("batch_size", 1)
        self._int("seed", 0)
        self._int("world_size", 2)
        self._int("root_size", 0)
        self._int("eval_every", 1)
        self._int("auror_iters", 1)
        for field in ("lr", "alpha", "auror_alpha"):
            if not getattr(self, field) > 0:
                raise ValueError(f"FLConfig.{field} must be > 0, got {getattr(self, field)}")
        for field in ("momentum", "gaussian_std", "flame_noise", "ipm_epsilon"):
            if not getattr(self, field) >= 0:
                raise ValueError(f"FLConfig.{field} must be >= 0, got {getattr(self, field)}")
        if not 0.0 <= self.trim < 0.5:
            raise ValueError(f"FLConfig.trim must lie in [0, 0.5), got {self.trim}")
        if not 0.0 <= self.poison_fraction <= 1.0:
            raise ValueError(f"FLConfig.poison_fraction must lie in [0, 1], got {self.poison_fraction}")
        if self.max_norm is not None and not self.max_norm > 0:
            raise ValueError(f"FLConfig.max_norm must be > 0, got {self.max_norm}")
        if self.alie_z is not None and not self.alie_z > 0:
            raise ValueError(f"FLConfig.alie_z must be > 0, got {self.alie_z}")
        if not np.isfinite(self.boost) or self.boost == 0:
            raise ValueError(f"FLConfig.boost must be a finite nonzero factor, got {self.boost}")
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"FLConfig.hidden widths must be >= 1, got {self.hidden}")
        self._int("num_malicious", 0, self.clients - 1, optional=True)
        self._int("flame_num_malicious", 0, self.clients - 1, optional=True)
        self._int("to_keep", 1, self.clients, optional=True)
        self._int("source", 0)
        self._int("target", 0)
        if self.attack != "none" and self.malicious == 0:
            raise ValueError(f"FLConfig.malicious must be >= 1 for attack {self.attack!r}")
        if self.attack in A.UPDATE_ATTACKS and self.malicious >= self.clients:
            raise ValueError(f"FLConfig.malicious must be < clients ({self.clients}) for the update attack "
                             f"{self.attack!r}, which is computed from the benign updates")
        if self.attack == "targeted" and self.source == self.target:
            raise ValueError(f"FLConfig.source and FLConfig.target must differ, both are {self.source}")
        f, n = self.f, self.clients
        if self.defense == "krum" and n - f - 2 < 1:
            raise ValueError(f"FLConfig.clients: Krum needs clients >= num_malicious + 3, got {n} with f={f}")
        if self.defense == "multi_krum" and n - f - 2 < 1:
            raise ValueError(f"FLConfig.clients: Multi-Krum needs clients >= num_malicious + 3, got {n} with f={f}")
        if self.defense == "bulyan" and n < 4 * f + 3:
            raise ValueError(f"FLConfig.clients: Bulyan needs clients >= 4 * num_malicious + 3, got {n} with f={f}")
        if self.defense == "fltrust" and self.root_size < 1:
            raise ValueError("FLConfig.root_size must be >= 1 for FLTrust (the server's root dataset)")
        if self.defense == "norm_clip" and self.max_norm is None and self.root_size < 1:
            raise ValueError("FLConfig.max_norm is needed for norm_clip when root_size is 0")

    @property
    def f(self):
        """The number of malicious clients the defenses assume."""
        return self.malicious if self.num_malicious is None else self.num_malicious

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d


def defense_kwargs(config, n, server_update=None, rng=None):
    """The keyword arguments of ``config.defense`` for one aggregation of n updates."""
    f = config.f
    full = {
        "num_malicious": config.flame_num_malicious if config.defense == "flame" else f,
        "proportiontocut": config.trim,
        "to_keep": config.to_keep if config.to_keep is not None else n - f,
        "max_norm": config.max_norm,
        "server_update": server_update,
        "noise_lambda": config.flame_noise,
        "rng": rng,
        "alpha": config.auror_alpha,
        "iters": config.auror_iters,
    }
    kw = {k: full[k] for k in DEFENSE_PARAMS[config.defense]}
    if config.defense == "norm_clip" and kw["max_norm"] is None:
        if server_update is None:
            raise ValueError("norm_clip without max_norm needs the server's root-data update")
        kw["max_norm"] = float(np.linalg.norm(server_update))
    return kw


# ----------------------------------------------------------------------------
# the lab
# ----------------------------------------------------------------------------

_DATA_CACHE = {}


def load_dataset(name, data_dir=None):
    """:func:`pgkernels.data.load`, memoised per (name, data_dir) for sweeps."""
    from ..data import load

    key = (name, str(data_dir) if data_dir else None)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = load(name, data_dir)
    return _DATA_CACHE[key]


def _flat(X):
    return np.ascontiguousarray(np.asarray(X, dtype=np.float32).reshape(len(X), -1))


class _Lab:
    """Data, clients and model of one run (built from an FLConfig)."""

    def __init__(self, cfg, dataset):
        from ..data import dirichlet_split, iid_split

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
        if cfg.split == "iid":
            parts = iid_split(len(pool), cfg.clients, seed=cfg.seed)
        else:
            parts = dirichlet_split(ytr[pool], cfg.clients, alpha=cfg.alpha, seed=cfg.seed)
        parts = [pool[p] for p in parts]
        if cfg.malicious_ids == "first":
            mal = np.arange(cfg.malicious)
        else:
            mal = np.sort(rng.choice(cfg.clients, size=cfg.malicious, replace=False))
        self.malicious = [int(i) for i in mal] if cfg.attack != "none" else []
        self.trigger = A.make_trigger(dataset) if cfg.attack == "backdoor" else None
        self.clients = []
        for i, p in enumerate(parts):
            X, y = Xtr[p], ytr[p]
            if i in self.malicious:
                if cfg.attack == "label_flip":
                    y = A.label_flip(y, C)
                elif cfg.attack == "targeted":
                    y = A.targeted_mislabel(y, cfg.source, cfg.target)
                elif cfg.attack == "backdoor":
                    X, y = A.backdoor(X, y, cfg.target, self.trigger, cfg.poison_fraction, seed=cfg.seed * 1000 + i)
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
        cfg = self.cfg
        set_flat(self.model, self.global_flat)
        acc = M.accuracy(self.model, self.X_test, self.y_test)
        asr = M.attack_success_rate(self.model, self.X_test, self.y_test, self.ds, cfg.attack,
                                    target=cfg.target, source=cfg.source, trigger=self.trigger)
        return acc, asr


def _poison_updates(cfg, U, mal, rng):
    """Replace the malicious rows of U in place according to the update attack."""
    if not mal or cfg.attack not in A.UPDATE_ATTACKS + ("backdoor",):
        return
    benign = np.setdiff1d(np.arange(len(U)), mal)
    Ub = U[benign]
    if cfg.attack == "sign_flip":
        U[mal] = A.sign_flip(U[mal])
    elif cfg.attack == "gaussian":
        U[mal] = A.gaussian(U[mal], cfg.gaussian_std, rng)
    elif cfg.attack == "alie":
        U[mal] = A.alie(Ub, len(U), len(mal), z=cfg.alie_z)
    elif cfg.attack == "ipm":
        U[mal] = A.ipm(Ub, cfg.ipm_epsilon)
    elif cfg.attack == "min_max":
        U[mal] = A.min_max(Ub, cfg.dev_type)
    elif cfg.attack == "min_sum":
        U[mal] = A.min_sum(Ub, cfg.dev_type)
    elif cfg.attack == "backdoor" and cfg.boost != 1.0:
        U[mal] = A.scale(U[mal], cfg.boost)


def _clean(x):
    """JSON-friendly: numpy scalars to Python, NaN/inf to None."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    return x


def _mean(values):
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def run(config, aggregator=None, progress=True, dataset=None):
    """Run one federated simulation; returns a JSON-serialisable dict.

    ``config``: an :class:`FLConfig` (or a dict of its fields).
    ``aggregator``: object with ``aggregate(name, U, **kwargs) -> (agg, kept or
    None)``; default :class:`PlaintextAggregator`, or for ``backend="mpc"`` an
    :class:`pgkernels.fl.mpc.MPCAggregator` started (and stopped) here.
    ``dataset``: a preloaded :class:`pgkernels.data.Dataset` (default: loaded
    by name from ``config.data_dir`` / ``$PGKERNELS_DATA``).

    The result holds the config, the malicious client ids, per-round records
    (accuracy, attack success rate, kept clients, detection rates, seconds),
    the ``accuracy`` / ``asr`` curves (index 0: the initial model), the final
    metrics and the wall time.
    """
    if isinstance(config, dict):
        config = FLConfig(**config)
    config.validate()
    if aggregator is None and config.backend == "mpc":
        from .mpc import MPCAggregator

        with MPCAggregator(world_size=config.world_size) as agg:
            return run(config, aggregator=agg, progress=progress, dataset=dataset)
    aggregator = PlaintextAggregator() if aggregator is None else aggregator
    if hasattr(aggregator, "supports") and not aggregator.supports(config.defense):
        raise ValueError(f"the {type(aggregator).__name__} does not support defense {config.defense!r}")

    t_start = time.perf_counter()
    ds = dataset if dataset is not None else load_dataset(config.dataset, config.data_dir)
    lab = _Lab(config, ds)
    n, mal = config.clients, lab.malicious
    mal_set = set(mal)
    need_server = config.defense in NEEDS_SERVER_UPDATE or (config.defense == "norm_clip" and config.max_norm is None)
    skip_honest = config.attack in ("gaussian", "alie", "ipm", "min_max", "min_sum")
    attack_rng = np.random.default_rng([config.seed, 1])
    defense_rng = np.random.default_rng([config.seed, 2])
    acc0, asr0 = lab.evaluate()
    accs, asrs, records = [acc0], [asr0], []
    t_train = t_agg = 0.0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.rounds, desc=f"{config.attack} vs {config.defense}", unit="round", leave=False)
    try:
        for r in range(1, config.rounds + 1):
            t0 = time.perf_counter()
            d = lab.global_flat.numel()
            U = np.zeros((n, d), dtype=np.float64)
            for i, (X, y) in enumerate(lab.clients):
                if skip_honest and i in mal_set:
                    continue
                U[i] = lab.train(X, y, [config.seed, r, i])
            _poison_updates(config, U, mal, attack_rng)
            server_update = None
            if need_server:
                server_update = lab.train(lab.X_root, lab.y_root, [config.seed, r, n], steps=lab.server_steps)
            t1 = time.perf_counter()
            kw = defense_kwargs(config, n, server_update, defense_rng)
            agg, kept = aggregator.aggregate(config.defense, U, **kw)
            t2 = time.perf_counter()
            agg = np.asarray(agg, dtype=np.float64)
            lab.global_flat = lab.global_flat + torch.from_numpy(agg).to(torch.float32)
            rec = {"round": r}
            if r % config.eval_every == 0 or r == config.rounds:
                acc, asr = lab.evaluate()
                accs.append(acc)
                asrs.append(asr)
                rec.update(accuracy=acc, asr=asr)
            if kept is not None:
                kept = np.sort(np.asarray(kept, dtype=np.int64))
                det = M.detection_rates(kept, mal, n)
                rec.update(kept=kept.tolist(), tpr=det["tpr"], fpr=det["fpr"])
            rec.update(train_seconds=t1 - t0, aggregate_seconds=t2 - t1)
            t_train += t1 - t0
            t_agg += t2 - t1
            records.append(rec)
            if bar is not None:
                bar.update(1)
                post = {"acc": f"{accs[-1]:.3f}"}
                if asrs[-1] is not None:
                    post["asr"] = f"{asrs[-1]:.3f}"
                bar.set_postfix(post)
    finally:
        if bar is not None:
            bar.close()
    final = {"accuracy": accs[-1], "asr": asrs[-1], "best_accuracy": max(accs[1:]),
             "mean_tpr": _mean(rec.get("tpr") for rec in records),
             "mean_fpr": _mean(rec.get("fpr") for rec in records)}
    result = {
        "config": config.to_dict(),
        "backend": getattr(aggregator, "backend", type(aggregator).__name__),
        "malicious_clients": mal,
        "clients_data_sizes": [int(len(y)) for _, y in lab.clients],
        "num_params": int(lab.global_flat.numel()),
        "accuracy": accs, "asr": asrs,
        "eval_rounds": [0] + [rec["round"] for rec in records if "accuracy" in rec],
        "rounds": records,
        "final": final,
        "train_seconds": t_train, "aggregate_seconds": t_agg,
        "wall_time_s": time.perf_counter() - t_start,
    }
    if hasattr(aggregator, "summary"):
        result["aggregator_summary"] = aggregator.summary()
    return _clean(result)


# ----------------------------------------------------------------------------
# sweeps, tables, plots
# ----------------------------------------------------------------------------

def _row(res, base=None):
    cfg, fin = res["config"], res["final"]
    row = {"attack": cfg["attack"], "defense": cfg["defense"], "accuracy": fin["accuracy"], "asr": fin["asr"],
           "mean_tpr": fin["mean_tpr"], "mean_fpr": fin["mean_fpr"], "wall_time_s": res["wall_time_s"]}
    if base is not None:
        row["clean_accuracy"] = base["final"]["accuracy"]
        row["accuracy_drop"] = M.accuracy_drop(base["final"]["accuracy"], fin["accuracy"])
    return row


def sweep(base_config, attacks, defenses, aggregator=None, progress=True, dataset=None, keep_runs=True):
    """Run every (attack, defense) pair on ``base_config``, plus the no-attack
    baseline of each defense (for AUROR's accuracy drop).

    Returns a JSON-serialisable dict: ``base_config``, ``attacks`` (with
    "none" first), ``defenses``, ``rows`` (one per pair: final accuracy, ASR,
    accuracy drop against the same defense without attack, mean detection
    rates, seconds) and, with ``keep_runs``, the full ``runs``.
    """
    if isinstance(base_config, dict):
        base_config = FLConfig(**base_config)
    attacks = ["none"] + [a for a in attacks if a != "none"]
    defenses = list(dict.fromkeys(defenses))
    for a in attacks:
        if a not in A.ATTACKS:
            raise ValueError(f"unknown attack {a!r}; choose from {list(A.ATTACKS)}")
    for dname in defenses:
        if dname not in DEFENSES:
            raise ValueError(f"unknown defense {dname!r}; choose from {list(DEFENSES)}")
    configs = [base_config.replace(attack=a, defense=dname) for dname in defenses for a in attacks]  # validates all
    ds = dataset if dataset is not None else load_dataset(base_config.dataset, base_config.data_dir)
    own = None
    if aggregator is None and base_config.backend == "mpc":
        from .mpc import MPCAggregator

        own = aggregator = MPCAggregator(world_size=base_config.world_size).__enter__()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(configs), desc="sweep", unit="run")
    rows, runs, base = [], [], {}
    t0 = time.perf_counter()
    try:
        for cfg in configs:
            res = run(cfg, aggregator=aggregator, progress=False, dataset=ds)
            if cfg.attack == "none":
                base[cfg.defense] = res
            rows.append(_row(res, base.get(cfg.defense)))
            if keep_runs:
                runs.append(res)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(last=f"{cfg.attack}/{cfg.defense} acc={res['final']['accuracy']:.3f}")
    finally:
        if bar is not None:
            bar.close()
        if own is not None:
            own.__exit__(None, None, None)
    out = {"base_config": base_config.to_dict(), "attacks": attacks, "defenses": defenses, "rows": rows,
           "wall_time_s": time.perf_counter() - t0}
    if keep_runs:
        out["runs"] = runs
    return _clean(out)


def _pct(x):
    return "–" if x is None else f"{100 * x:.1f}"


def markdown(results):
    """Markdown tables (attack x defense) of a :func:`sweep`: "accuracy / ASR"
    in percent, AUROR's accuracy drop, and the detection rates (TPR / FPR)
    of the rules that select clients."""
    attacks, defenses = results["attacks"], results["defenses"]
    cell = {(r["attack"], r["defense"]): r for r in results["rows"]}
    cfg = results["base_config"]
    head = (f"{cfg['dataset']} / {cfg['model']}, {cfg['clients']} clients ({cfg['malicious']} malicious), "
            f"{cfg['rounds']} rounds, {cfg['split']} split, seed {cfg['seed']}")

    def table(title, fmt):
        lines = [f"**{title}**", "", "| attack | " + " | ".join(defenses) + " |",
                 "|---|" + "---|" * len(defenses)]
        for a in attacks:
            vals = [fmt(cell[(a, d)]) if (a, d) in cell else "" for d in defenses]
            lines.append(f"| {a} | " + " | ".join(vals) + " |")
        return "\n".join(lines)

    parts = [head, "", table("test accuracy / attack success rate (%)",
                             lambda r: f"{_pct(r['accuracy'])} / {_pct(r['asr'])}"), "",
             table("accuracy drop vs. the same defense without attack (percentage points)",
                   lambda r: "–" if r.get("accuracy_drop") is None else f"{100 * r['accuracy_drop']:+.1f}")]
    if any(r["mean_fpr"] is not None for r in results["rows"]):
        def det(r):
            return "–" if r["mean_fpr"] is None else f"{_pct(r['mean_tpr'])} / {_pct(r['mean_fpr'])}"

        parts += ["", table("detection: malicious excluded (TPR) / benign excluded (FPR), mean over rounds (%)", det)]
    return "\n".join(parts) + "\n"


def write_table(results, path_prefix):
    """Write ``<path_prefix>.json`` (the whole sweep) and ``<path_prefix>.md``
    (:func:`markdown`); returns the Markdown text."""
    prefix = pathlib.Path(path_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    md = markdown(results)
    prefix.with_name(prefix.name + ".json").write_text(json.dumps(results, indent=1))
    prefix.with_name(prefix.name + ".md").write_text(md)
    return md


def plot(result, path, max_cols=5):
    """Plot accuracy and attack success rate per round (matplotlib, Agg) to ``path``.

    ``result``: one :func:`run` result (two panels), or a :func:`sweep` with
    its runs (per defense an accuracy panel above an ASR panel, up to
    ``max_cols`` defenses per row; one colour per attack throughout).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if "runs" in result:
        groups = [(d, [r for r in result["runs"] if r["config"]["defense"] == d]) for d in result["defenses"]]
        attack_order = result["attacks"]
    elif "rounds" in result:
        groups = [(result["config"]["defense"], [result])]
        attack_order = [result["config"]["attack"]]
    else:
        raise ValueError("plot needs a run() result or a sweep() made with keep_runs=True")
    colors = {a: f"C{i % 10}" for i, a in enumerate(attack_order)}
    ncols = min(max_cols, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    fig = Figure(figsize=(3.4 * ncols + 0.6, 5.2 * nrows + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2 * nrows, ncols, squeeze=False, sharey="row")
    handles = {}
    for j, (dname, runs) in enumerate(groups):
        top, bottom = axes[2 * (j // ncols), j % ncols], axes[2 * (j // ncols) + 1, j % ncols]
        for res in runs:
            attack = res["config"]["attack"]
            x = res["eval_rounds"]
            (line,) = top.plot(x, res["accuracy"], color=colors[attack], label=attack)
            handles.setdefault(attack, line)
            if any(v is not None for v in res["asr"]):
                bottom.plot(x, [np.nan if v is None else v for v in res["asr"]], color=colors[attack])
        if not bottom.lines:
            bottom.text(0.5, 0.5, "untargeted attack(s):\nno success rate", ha="center", va="center",
                        transform=bottom.transAxes, color="gray")
            bottom.set_xlim(top.get_xlim())
        top.set_title(dname)
        bottom.set_xlabel("round")
        top.set_ylabel("test accuracy") if j % ncols == 0 else None
        bottom.set_ylabel("attack success rate") if j % ncols == 0 else None
        for ax in (top, bottom):
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
    for k in range(len(groups), nrows * ncols):  # unused panels
        axes[2 * (k // ncols), k % ncols].set_visible(False)
        axes[2 * (k // ncols) + 1, k % ncols].set_visible(False)
    if len(groups) == 1 and len(groups[0][1]) == 1:
        cfg = groups[0][1][0]["config"]
        fig.suptitle(f"{cfg['dataset']}: {cfg['attack']} vs {cfg['defense']} "
                     f"({cfg['malicious']}/{cfg['clients']} malicious)")
    else:
        cfg = result["base_config"]
        fig.suptitle(f"{cfg['dataset']} / {cfg['model']}: {cfg['malicious']}/{cfg['clients']} malicious, "
                     f"{cfg['split']} split")
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=min(10, len(handles)),
                   fontsize=8)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return str(path)
