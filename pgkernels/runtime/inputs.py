"""Private inputs of an MPC job: one share per compute party, delivered to that party only.

The caller of a job (:func:`pgkernels.train.train_mpc`,
:func:`pgkernels.train.safenet_mpc.safenet_mpc`) plays the data owners. For every
private array it

1. encodes it in CrypTen's fixed point (``frac_bits`` fractional bits, 16 by
   default), refusing NaN/inf and magnitudes that do not fit (:func:`encode`);
2. splits it into additive shares mod 2^64 (:func:`share`): party ``r >= 1``
   gets a fresh 16-byte AES key ``k_r`` and the shape (its share is the AES-CTR
   stream ``PRG(k_r)``), party 0 gets ``enc - sum_r PRG(k_r)``; so each share
   alone is uniformly random, and only party 0's is as large as the data;
3. hands party ``r`` its shares through :func:`pgkernels.launch`'s
   ``party_inputs``: a file that only party ``r``'s command line names and that
   the party deletes once read. No process of a compute party ever holds
   another party's share or the plaintext. In a deployment each owner sends
   the same shares (a key or a masked array) over an authenticated channel to
   each party; nothing else changes.

Inside a party, :meth:`Share.tensor` expands a share to its int64 tensor and
:func:`to_mpc` wraps it as a ``crypten.mpc.MPCTensor``.
"""

import secrets

import numpy as np
import torch

FRAC_BITS = 16
MAX_ABS = 2.0 ** 30  # |value| bound: products of two encoded values stay far from 2^63


def encode(values, name, frac_bits=FRAC_BITS):
    """float (or int) array -> int64 fixed point with ``frac_bits`` fractional bits.

    Raises ValueError naming ``name`` for NaN/inf or magnitudes >= 2^30, which
    the encoding cannot represent without wrapping around.
    """
    t = torch.as_tensor(np.asarray(values), dtype=torch.float64)
    if t.numel():
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or inf")
        big = t.abs().max().item()
        if big >= MAX_ABS:
            raise ValueError(f"{name} has values of magnitude >= 2^30 ({big:.3g}); the fixed-point "
                             "encoding cannot represent them")
    return torch.round(t * 2.0 ** frac_bits).to(torch.int64)


class Share:
    """One party's additive share of an int64 tensor: a masked tensor (party 0)
    or an AES-CTR key and a shape (the others)."""

    __slots__ = ("data", "key", "shape", "frac_bits")

    def __init__(self, data=None, key=None, shape=None, frac_bits=FRAC_BITS):
        self.data, self.key, self.shape, self.frac_bits = data, key, shape, frac_bits

    def __getstate__(self):
        return (None if self.data is None else self.data.numpy(), self.key, self.shape, self.frac_bits)

    def __setstate__(self, state):
        data, self.key, self.shape, self.frac_bits = state
        self.data = None if data is None else torch.from_numpy(data)

    def tensor(self):
        """This party's share as an int64 tensor."""
        if self.data is not None:
            return self.data
        from .dealer import stream

        n = int(np.prod(self.shape, dtype=np.int64))
        return stream(torch.frombuffer(bytearray(self.key), dtype=torch.uint8), 0, n).view(self.shape)


def split(enc, world_size, frac_bits=FRAC_BITS):
    """Additive shares mod 2^64 of an int64 tensor: a list of ``world_size``
    :class:`Share`s (party ``r >= 1``: a fresh AES-CTR key; party 0: ``enc`` minus
    those streams)."""
    from .dealer import stream

    enc = enc.contiguous()
    shape = tuple(enc.shape)
    out = [None] * world_size
    masked = enc.clone().reshape(-1)
    for r in range(1, world_size):
        key = secrets.token_bytes(16)
        masked -= stream(torch.frombuffer(bytearray(key), dtype=torch.uint8), 0, enc.numel())
        out[r] = Share(key=key, shape=shape, frac_bits=frac_bits)
    out[0] = Share(data=masked.view(shape), frac_bits=frac_bits)
    return out


def share(values, world_size, name, frac_bits=FRAC_BITS):
    """Encode ``values`` (:func:`encode`, errors name ``name``) and :func:`split` them."""
    return split(encode(values, name, frac_bits), world_size, frac_bits)


def share_all(arrays, world_size, frac_bits=None):
    """``{name: array}`` -> per-party ``[{name: Share}]`` (``frac_bits``: ``{name: bits}``, default 16)."""
    frac_bits = frac_bits or {}
    per_party = [dict() for _ in range(world_size)]
    for name, a in arrays.items():
        for r, s in enumerate(share(a, world_size, name, frac_bits.get(name, FRAC_BITS))):
            per_party[r][name] = s
    return per_party


def to_mpc(s, device=None):
    """Inside a compute party: its :class:`Share` as an MPCTensor (scale
    ``2^frac_bits``) on ``device`` (default: the session's, see
    :mod:`pgkernels.runtime.device`)."""
    from .._compat import import_crypten
    from .device import session_device

    dev = session_device() if device is None else torch.device(device)
    return import_crypten().mpc.MPCTensor.from_shares(s.tensor().to(dev), precision=s.frac_bits)
