"""Client side of :meth:`pgkernels.serving.AggregationServers.aggregate_masked`:
a client secret-shares its own update to the aggregation servers.

Client ``node`` draws one 16-byte seed per server (``secrets``), computes
``masked = enc(u) - sum_r PRG(seed_r)`` (AES-128-CTR, int64 mod 2^64) and
seals seed r to server r's X25519 key (:mod:`.sealing`) under the context

    ``pgkernels-share-v2|session=S|round=R|node=N|d=D|masked=SHA256(masked)|server=r``

S is the servers' session nonce and R the round id, both published by the
coordinator with the servers' keys; every server rebuilds this context from
its *own* state (its session nonce, the round it is opening, the node id, d,
and the hash of the masked vector it or server 0 received), so a box opens
only in that session, that round, for that node, with that exact masked
vector, at that server. Server r's share of ``u`` is ``PRG(seed_r)`` (server 0
also adds ``masked``).

The keys must be the servers' real keys: a client should pin them (see
:mod:`pgkernels.integrations.flower`); :func:`mask` refuses fewer than two or
repeated keys, which would hand one server every share.
"""

import hashlib
import secrets

import numpy as np
import torch

from ..runtime.dealer import stream
from ..runtime.inputs import FRAC_BITS, encode
from .sealing import seal

SEED_BYTES = 16
BOX_BYTES = 32 + SEED_BYTES + 16  # ephemeral key, encrypted seed, GCM tag
SESSION_BYTES = 16


def masked_digest(masked):
    """SHA-256 of a masked vector's int64 little-endian bytes."""
    return hashlib.sha256(np.ascontiguousarray(masked, dtype="<i8").tobytes()).digest()


def share_context(session, round_id, node, d, digest):
    """The context a client's boxes are bound to (the servers rebuild it themselves)."""
    if not isinstance(session, (bytes, bytearray)) or len(session) != SESSION_BYTES:
        raise ValueError(f"session must be {SESSION_BYTES} bytes")
    if len(digest) != 32:
        raise ValueError("digest must be a 32-byte SHA-256")
    return (f"pgkernels-share-v2|session={bytes(session).hex()}|round={int(round_id)}|node={int(node)}"
            f"|d={int(d)}|masked={bytes(digest).hex()}").encode()


def seal_context(context, rank):
    return bytes(context) + b"|server=" + str(int(rank)).encode()


def check_server_keys(public_keys, world_size=None):
    """Refuse key lists that would hand one party every share: < 2 keys, repeats, wrong count."""
    keys = [bytes(k) for k in public_keys]
    if any(len(k) != 32 for k in keys):
        raise ValueError("server keys must be 32-byte raw X25519 public keys")
    if len(keys) < 2 or (world_size is not None and len(keys) != world_size):
        raise ValueError(f"{len(keys)} server keys for {world_size or '>= 2'} servers: refusing to share "
                         "(fewer keys than servers would give one server every share)")
    if len(set(keys)) != len(keys):
        raise ValueError("repeated server keys: refusing to share (one server would receive several shares)")
    return keys


def mask(update, public_keys, session, round_id, node):
    """Client side of ``aggregate_masked``: ``(masked int64 (d,), [sealed seed per server])``.

    ``update`` is a float vector (NaN/inf and |x| >= 2^30 refused),
    ``public_keys`` the servers' raw X25519 keys in rank order (distinct, at
    least two), ``session``/``round_id`` as published by the servers' coordinator,
    ``node`` this client's id (distinct within a round).
    """
    keys = check_server_keys(public_keys)
    enc = encode(np.asarray(update, dtype=np.float64).ravel(), "update", FRAC_BITS)
    masked = enc.clone()
    seeds = []
    for _ in keys:
        seed = secrets.token_bytes(SEED_BYTES)
        masked -= stream(torch.frombuffer(bytearray(seed), dtype=torch.uint8), 0, enc.numel())
        seeds.append(seed)
    masked = masked.numpy()
    ctx = share_context(session, round_id, node, masked.shape[0], masked_digest(masked))
    boxes = [seal(pk, seed, seal_context(ctx, r)) for r, (pk, seed) in enumerate(zip(keys, seeds))]
    return masked, boxes
