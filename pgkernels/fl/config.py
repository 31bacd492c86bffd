"""Configuration of one federated run (:class:`FLConfig`) and the rule arguments it implies.

Which defenses exist, their parameters and the fewest clients each accepts
come from :mod:`pgkernels.defenses.registry`: a configuration the MPC servers
would refuse (e.g. Krum with n < 2f + 3) is refused here, on construction,
whatever the backend.
"""

import dataclasses
from typing import Optional

import numpy as np

from ..attacks import RECORD_ATTACKS, UPDATE_ATTACKS
from ..data import DATASETS
from ..defenses import registry
from ..models import MODELS

#: the attacks the lab runs: none, poisoned client data, or crafted updates
ATTACKS = ("none",) + RECORD_ATTACKS + UPDATE_ATTACKS
DATA_ATTACKS = RECORD_ATTACKS
BACKENDS = ("plaintext", "mpc")
SPLITS = ("iid", "dirichlet")
MALICIOUS_IDS = ("first", "random")
DEV_TYPES = ("std", "unit_vec", "sign")


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
    # backdoor: share of each malicious client's samples poisoned (default 0.5); targeted: share of ALL the
    # clients' records that are poisoned, all held by the malicious clients (AUROR's threat model; default 0.1)
    poison_fraction: Optional[float] = None
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
        self._choice("dataset", DATASETS)
        self._choice("model", MODELS)
        self._choice("attack", ATTACKS)
        self._choice("defense", registry.NAMES)
        self._choice("backend", BACKENDS)
        self._choice("split", SPLITS)
        self._choice("malicious_ids", MALICIOUS_IDS)
        self._choice("dev_type", DEV_TYPES)
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
        if self.poison_fraction is not None:
            if isinstance(self.poison_fraction, bool) or not isinstance(self.poison_fraction, (int, float)):
                raise ValueError(f"FLConfig.poison_fraction must be a number, got {self.poison_fraction!r}")
            hi = 1.0 if self.attack != "targeted" else np.nextafter(1.0, 0.0)  # targeted keeps some clean data
            if not 0.0 <= self.poison_fraction <= hi:
                rng = "[0, 1)" if self.attack == "targeted" else "[0, 1]"
                raise ValueError(f"FLConfig.poison_fraction must lie in {rng}, got {self.poison_fraction}")
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
        if self.attack in UPDATE_ATTACKS and self.malicious >= self.clients:
            raise ValueError(f"FLConfig.malicious must be < clients ({self.clients}) for the update attack "
                             f"{self.attack!r}, which is computed from the benign updates")
        if self.attack == "targeted" and self.malicious >= self.clients:
            raise ValueError(f"FLConfig.malicious must be < clients ({self.clients}) for the targeted attack: "
                             "the benign clients hold the clean records")
        if self.attack == "targeted" and self.effective_poison_fraction == 0:
            raise ValueError("FLConfig.poison_fraction must be > 0 for the targeted attack (the malicious clients "
                             "hold only poisoned records)")
        if self.attack == "targeted" and self.source == self.target:
            raise ValueError(f"FLConfig.source and FLConfig.target must differ, both are {self.source}")
        rule = registry.get(self.defense)
        f = self.rule_f
        if self.clients < rule.min_clients(f):  # the registry's bound, as the MPC servers enforce it
            raise ValueError(f"FLConfig.clients: {rule.title} needs clients >= {rule.min_clients_text} "
                             f"(num_malicious f={f}), got {self.clients}")
        if rule.server_update and self.root_size < 1:
            raise ValueError(f"FLConfig.root_size must be >= 1 for {rule.title} (the server's root dataset)")
        if self.defense == "norm_clip" and self.max_norm is None and self.root_size < 1:
            raise ValueError("FLConfig.max_norm is needed for norm_clip when root_size is 0")

    @property
    def effective_poison_fraction(self):
        """:attr:`poison_fraction`, or its per-attack default: 0.1 of all records
        (targeted, AUROR's setting), 0.5 of a malicious client's (backdoor)."""
        if self.poison_fraction is not None:
            return float(self.poison_fraction)
        return 0.1 if self.attack == "targeted" else 0.5

    @property
    def f(self):
        """The number of malicious clients the defenses assume."""
        return self.malicious if self.num_malicious is None else self.num_malicious

    @property
    def rule_f(self):
        """The ``num_malicious`` the chosen rule gets: FLAME's own knob (None: keep
        a majority), :attr:`f` for the others, None for rules without one."""
        if not registry.get(self.defense).takes_f:
            return None
        return self.flame_num_malicious if self.defense == "flame" else self.f

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d


def defense_kwargs(config, n, server_update=None, rng=None):
    """The keyword arguments of ``config.defense`` for one aggregation of n updates:
    the rule's parameters in the registry (and its reference's ``rng``), each
    filled from the configuration's knob."""
    f = config.f
    knobs = {
        "num_malicious": config.rule_f,
        "proportiontocut": config.trim,
        "to_keep": config.to_keep if config.to_keep is not None else n - f,
        "max_norm": config.max_norm,
        "server_update": server_update,
        "noise_lambda": config.flame_noise,
        "rng": rng,
        "alpha": config.auror_alpha,
        "iters": config.auror_iters,
    }
    rule = registry.get(config.defense)
    kw = {k: v for k, v in knobs.items() if k in rule.params or k in rule.reference_params}
    if config.defense == "norm_clip" and kw["max_norm"] is None:
        if server_update is None:
            raise ValueError("norm_clip without max_norm needs the server's root-data update")
        kw["max_norm"] = float(np.linalg.norm(server_update))
    return kw


def needs_server_update(config):
    """Whether the server trains on its root data each round: the rule needs its
    update (FLTrust), or norm clipping takes its bound from the update's norm."""
    return registry.get(config.defense).server_update or (config.defense == "norm_clip" and config.max_norm is None)

__all__ = ["ATTACKS", "BACKENDS", "DATA_ATTACKS", "DEV_TYPES", "FLConfig", "MALICIOUS_IDS", "SPLITS",
           "UPDATE_ATTACKS", "defense_kwargs", "needs_server_update"]
