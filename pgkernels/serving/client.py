"""Client side of :meth:`pgkernels.serving.AggregationServers.aggregate_masked`:
a client secret-shares its own update to the aggregation servers.

Client i draws one 16-byte seed per server, seals seed r to server r's X25519
key (:mod:`.sealing`) and sends ``masked_i = enc(u_i) - sum_r PRG(seed_r)``
(AES-128-CTR) with the sealed seeds through any relay. Server r's share of
``u_i`` is ``PRG(seed_r)`` (server 0 also adds ``masked_i``).
"""

import secrets

import numpy as np
import torch

from ..runtime.dealer import stream
from ..runtime.inputs import FRAC_BITS, encode
from .sealing import seal


def seal_context(aad, rank):
    return bytes(aad) + b"|server=" + str(rank).encode()


def mask(update, public_keys, aad):
    """Client side of ``aggregate_masked``: ``(masked int64 (d,), [sealed seed per server])``.

    ``update`` is a float vector (NaN/inf and |x| >= 2^30 refused), ``public_keys``
    the servers' raw X25519 keys in rank order, ``aad`` bytes naming the context
    (the servers must be given the same bytes).
    """
    enc = encode(np.asarray(update, dtype=np.float64).ravel(), "update", FRAC_BITS)
    masked = enc.clone()
    boxes = []
    for r, pk in enumerate(public_keys):
        seed = secrets.token_bytes(16)
        masked -= stream(torch.frombuffer(bytearray(seed), dtype=torch.uint8), 0, enc.numel())
        boxes.append(seal(pk, seed, seal_context(aad, r)))
    return masked.numpy(), boxes
