"""The robust aggregation rules, stated once.

Every place that names a rule reads :data:`RULES`: the aggregation servers
(which rules exist, which keyword arguments and secret-shared arrays a
request may carry, the fewest clients, how a selection is read), the input
check (:mod:`pgkernels.defenses.validity`, whose bounds are keyed by these
names), the federated lab (configuration, plaintext backend, command line),
the Flower strategy, and the README's table (:func:`markdown`, checked by a
test). Per rule:

* ``mpc`` -- the MPC function ``pgkernels.defenses.<name>(U, **params)`` on
  a shared (n, d) ``MPCTensor``; ``reference`` -- its numpy reference in
  :mod:`pgkernels.defenses.reference`, same semantics, same parameter names;
* ``params`` -- the MPC function's keyword parameters and defaults (read
  from its signature, so they cannot drift; :data:`REQUIRED` marks those
  without a default); ``reference_params`` likewise for the reference
  (FLAME's reference also takes ``rng``, the MPC version draws its own
  noise; the order statistics also take a protocol ``method``);
* ``min_clients(f)`` -- the fewest clients the rule accepts with
  ``num_malicious = f``: ``a f + b`` for ``min_clients_coeffs = (a, b)``;
* ``selection`` -- what ``return_selection=True`` adds: ``None`` (the rule
  selects nobody), ``"onehot"`` (one client: a shared one-hot (n,)),
  ``"bits"`` (a set: shared 0/1 per client (n,)) or ``"rows"`` (Bulyan's
  picks: one one-hot row (n,) per pick); :meth:`Rule.selected` reads the
  revealed selection as the sorted client indices;
* ``arrays`` -- parameters that are arrays, secret-shared like the updates
  (FLTrust's ``server_update``); ``server_update`` -- the coordinator
  computes its own update on clean root data each round (FLTrust);
  ``counts_clients`` -- parameters that count clients and shrink when
  invalid clients are left out (Multi-Krum's ``to_keep``);
* ``takes_bound`` -- the MPC function takes ``bound``, the coordinate bound
  the updates were checked against on the shares, and compares on fewer bits
  with it (the median and the trimmed mean); the aggregation servers pass the
  bound they checked, so it is no request parameter.
"""

import dataclasses
import inspect
from typing import Callable, Optional

import numpy as np

from . import reference
from .clustering import auror, flame
from .robust import bulyan, fedavg, fltrust, krum, median, multi_krum, norm_clip, trimmed_mean

REQUIRED = inspect.Parameter.empty
SELECTIONS = (None, "onehot", "bits", "rows")
# not a request's parameters: the updates, the selection flag, and the
# coordinate bound the servers checked the updates against (set by the
# servers themselves, see Rule.takes_bound)
_NOT_PARAMS = ("U", "return_selection", "bound")


def _params(fn):
    sig = inspect.signature(fn).parameters
    return {k: p.default for k, p in sig.items() if k not in _NOT_PARAMS}


@dataclasses.dataclass(frozen=True)
class Rule:
    """One robust aggregation rule (see the module docstring for the fields)."""

    name: str
    title: str
    source: str
    mpc: Callable
    reference: Callable
    min_clients_coeffs: tuple = (0, 1)
    selection: Optional[str] = None
    arrays: tuple = ()
    server_update: bool = False
    counts_clients: tuple = ()
    params: dict = dataclasses.field(init=False, compare=False)
    reference_params: dict = dataclasses.field(init=False, compare=False)

    def __post_init__(self):
        if self.selection not in SELECTIONS:
            raise ValueError(f"{self.name}: selection must be one of {SELECTIONS}, got {self.selection!r}")
        object.__setattr__(self, "params", _params(self.mpc))
        object.__setattr__(self, "reference_params", _params(self.reference))
        for k in self.arrays + self.counts_clients:
            if k not in self.params:
                raise ValueError(f"{self.name}: {k!r} is not a parameter of {self.mpc.__name__}")

    @property
    def takes_bound(self):
        """Whether the MPC function takes ``bound`` (see the module docstring)."""
        return "bound" in inspect.signature(self.mpc).parameters

    @property
    def takes_f(self):
        """Whether the rule takes ``num_malicious`` (f)."""
        return "num_malicious" in self.params

    def min_clients(self, num_malicious=0):
        """The fewest clients the rule accepts with ``num_malicious`` = f (None: 0)."""
        a, b = self.min_clients_coeffs
        f = 0 if num_malicious is None else num_malicious
        if isinstance(f, bool) or not isinstance(f, (int, np.integer)) or f < 0:
            raise ValueError(f"num_malicious must be an int >= 0 or None, got {num_malicious!r}")
        return a * int(f) + b

    def min_clients_for(self, kwargs):
        """:meth:`min_clients` for the rule's keyword arguments; an f that is not a
        valid int counts as 0 (the rule's own check reports it)."""
        f = kwargs.get("num_malicious") if self.takes_f else None
        if isinstance(f, bool) or not isinstance(f, (int, np.integer)) or f < 0:
            f = 0
        return self.min_clients(f)

    @property
    def min_clients_text(self):
        """The bound as text: ``"2f + 3"``, ``"1"``."""
        a, b = self.min_clients_coeffs
        return str(b) if a == 0 else f"{'' if a == 1 else a}f + {b}"

    def selected(self, selection):
        """Sorted client indices from a revealed selection (see ``selection``)."""
        if self.selection is None:
            raise ValueError(f"{self.name} selects no clients")
        sel = np.asarray(selection)
        if self.selection == "rows":
            sel = sel.sum(axis=0)
        return np.flatnonzero(sel.reshape(-1) != 0)

    def aggregate_plain(self, U, **kwargs):
        """The reference on float (n, d) updates: ``(aggregate (d,) float64, sorted
        kept client indices or None)``. Keyword arguments the reference does not
        take are ignored (one configuration serves every rule)."""
        kw = {k: v for k, v in kwargs.items() if k in self.reference_params}
        for k, v in self.params.items():  # the MPC function's defaults hold for the reference too
            if k in self.reference_params and k not in kw and v is not REQUIRED:
                kw[k] = v
        missing = [k for k, v in self.reference_params.items() if v is REQUIRED and k not in kw]
        if missing:
            raise TypeError(f"{self.name} needs {', '.join(missing)}")
        out = self.reference(np.asarray(U, dtype=np.float64), **kw)
        if self.selection is None:
            return np.asarray(out, dtype=np.float64), None
        agg, kept = out
        kept = np.unique(np.asarray(kept, dtype=np.int64).reshape(-1))
        return np.asarray(agg, dtype=np.float64), kept


RULES = {r.name: r for r in (
    Rule("fedavg", "FedAvg", "McMahan et al., AISTATS 2017", fedavg, reference.fedavg),
    Rule("median", "coordinate-wise median", "Yin et al., ICML 2018", median, reference.median),
    Rule("trimmed_mean", "coordinate-wise trimmed mean", "Yin et al., ICML 2018", trimmed_mean,
         reference.trimmed_mean),
    Rule("norm_clip", "norm clipping", "Sun et al. 2019", norm_clip, reference.norm_clip),
    Rule("krum", "Krum", "Blanchard et al., NeurIPS 2017", krum, reference.krum, (2, 3), "onehot"),
    Rule("multi_krum", "Multi-Krum", "Blanchard et al., NeurIPS 2017", multi_krum, reference.multi_krum, (2, 3),
         "bits", counts_clients=("to_keep",)),
    Rule("bulyan", "Bulyan", "El Mhamdi et al., ICML 2018", bulyan, reference.bulyan, (4, 3), "rows"),
    Rule("fltrust", "FLTrust", "Cao et al., NDSS 2021", fltrust, reference.fltrust, arrays=("server_update",),
         server_update=True),
    Rule("flame", "FLAME", "Nguyen et al., USENIX Security 2022", flame, reference.flame, (2, 1), "bits"),
    Rule("auror", "AUROR", "Shen et al., ACSAC 2016", auror, reference.auror, selection="bits"),
)}
NAMES = tuple(RULES)


def get(name):
    """The :class:`Rule` called ``name``; ``ValueError`` naming the rules otherwise."""
    rule = RULES.get(name) if isinstance(name, str) else None
    if rule is None:
        raise ValueError(f"unknown rule {name!r}; choose one of {list(NAMES)}")
    return rule


def markdown():
    """The rules as a Markdown table (the README's, which a test keeps equal to this)."""
    what = {None: "–", "onehot": "one client", "bits": "a set of clients", "rows": "n - 2f clients"}

    def sig(params):
        items = [k if v is REQUIRED else f"{k}={v!r}" for k, v in params.items()]
        return ", ".join(items)

    lines = ["| rule | parameters | clients needed | selects | source |", "|---|---|---|---|---|"]
    for r in RULES.values():
        params = f"`{sig(r.params)}`" if r.params else "–"
        if r.server_update:
            params += ": the server's own update on clean root data, each round"
        lines.append(f"| `{r.name}` ({r.title}) | {params} | "
                     f"{'n >= ' + r.min_clients_text} | {what[r.selection]} | {r.source} |")
    return "\n".join(lines) + "\n"


__all__ = ["NAMES", "REQUIRED", "RULES", "Rule", "SELECTIONS", "get", "markdown"]
