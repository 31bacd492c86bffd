"""The federated lab's plaintext backend: the rules' numpy references, with the servers' checks.

:class:`PlaintextAggregator` has the interface of
:class:`pgkernels.fl.mpc.MPCAggregator` (``aggregate(name, U, **kwargs) ->
(aggregate, kept indices or None)``) and refuses what the MPC servers refuse,
so a configuration behaves alike on both backends: the rule's fewest clients
(:mod:`pgkernels.defenses.registry`) and the same validity check on the
updates.
"""

import numpy as np

from ..defenses import registry
from ..defenses.validity import POLICIES, after_drop, validate_plain


class PlaintextAggregator:
    """Aggregation in the clear with the registry's references (numpy float64).

    Before the rule, the updates go through the same validity check as on the
    MPC servers (:func:`pgkernels.defenses.validity.validate_plain`: every
    coordinate within the rule's input bound, optionally every norm within
    ``max_norm``; ``policy="drop"`` leaves invalid clients out, ``"clamp"``
    clamps them), so both backends aggregate the same clients.
    :attr:`last_invalid` lists the clients the last call dropped.
    """

    backend = "plaintext"

    def __init__(self, validity="drop", max_norm=None):
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
        return name in registry.RULES

    def aggregate(self, name, U, **kwargs):
        """``(aggregate (d,) float64, sorted kept client indices or None)``."""
        if name not in registry.RULES:
            raise ValueError(f"unknown defense {name!r}; choose one of {list(registry.NAMES)}")
        rule = registry.get(name)
        U = np.asarray(U, dtype=np.float64)
        if U.ndim != 2:
            raise ValueError(f"updates must be 2-D (clients x parameters), got shape {U.shape}")
        need = rule.min_clients_for(kwargs)
        if U.shape[0] < need:
            raise ValueError(f"{rule.title} with num_malicious={kwargs.get('num_malicious')} needs at least "
                             f"{need} clients, got {U.shape[0]}")
        V, valid = validate_plain(U, name, max_norm=self.max_norm, policy=self.validity,
                                  alpha=kwargs.get("alpha", 2.0))
        self.last_invalid = [] if valid is None else np.flatnonzero(~valid).tolist()
        if not self.last_invalid:
            return rule.aggregate_plain(V, **kwargs)
        if V.shape[0] < need:
            raise ValueError(f"{len(self.last_invalid)} of {U.shape[0]} clients sent invalid updates; {name} "
                             f"needs at least {need} valid ones, {V.shape[0]} left")
        idx = np.flatnonzero(valid)
        agg, kept = rule.aggregate_plain(V, **after_drop(name, kwargs, len(self.last_invalid)))
        return agg, (None if kept is None else np.sort(idx[kept]))

    def summary(self):
        return {}
