"""Aggregation serving: long-lived MPC servers, the coordinator that drives
them, and the client side (masking and sealing an update).

:mod:`.service` (servers, coordinator, the servers' policy and what an active
coordinator can still learn), :mod:`.client` (a client's shares),
:mod:`.sealing` (sealed boxes), :mod:`.wire` (the message schema),
:mod:`.credentials` (mutual-TLS credentials; ``python -m
pgkernels.serving.credentials``).

An application of :mod:`pgkernels.protocols` and :mod:`pgkernels.defenses`
(the rules it serves, their arguments and limits: :mod:`pgkernels.defenses.registry`);
:mod:`pgkernels.runtime` (processes, dealer, communication) does not import it.
"""

from .client import mask
from .service import AggregationServers, MalformedShareError, PolicyError, serve

__all__ = ["AggregationServers", "MalformedShareError", "PolicyError", "mask", "serve"]
