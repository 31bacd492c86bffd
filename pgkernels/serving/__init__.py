"""Aggregation serving: long-lived MPC servers, the coordinator that drives
them, and the client side (masking and sealing an update).

An application of :mod:`pgkernels.protocols` and :mod:`pgkernels.defenses`;
:mod:`pgkernels.runtime` (processes, dealer, communication) does not import it.
"""

from .client import mask
from .service import AGGREGATORS, AggregationServers, MalformedShareError, serve

__all__ = ["AGGREGATORS", "AggregationServers", "MalformedShareError", "mask", "serve"]
