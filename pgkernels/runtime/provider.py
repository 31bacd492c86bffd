"""CrypTen tuple provider backed by the pgkernels dealer.

CrypTen's own ops (Beaver multiplication, matmul, convolutions, binary AND,
truncation with wraps for 3+ parties, B2A) draw their triples from here when a
session runs with ``dealer="ttp"``, so every op in the session, CrypTen's and
pgkernels', gets its correlated randomness from the same dealer and AES-CTR
streams. CrypTen's own TTP provider seeds its generators with ``torch.randint``
from the dealer's default torch generator and expands them with a
non-cryptographic generator; this provider does neither.

A request with an empty operand needs no randomness (the product of an empty
tensor is empty or a sum over nothing): it is answered here with zero shares,
and the dealer, which refuses zero dimensions, never sees it.
"""

import torch
from crypten.mpc.primitives import ArithmeticSharedTensor, BinarySharedTensor
from crypten.mpc.provider.provider import TupleProvider

from .dealer import _numel, _result_size

NAME = "PGK"


def _to(t, device):
    """Material words on the device CrypTen asked for (None: the CPU). In a
    CUDA session the dealer's words already sit on the GPU, so a CPU request
    copies them back, a CUDA one only wraps them."""
    if device is None or torch.device(device).type == "cpu":
        return t.cpu()
    from crypten.cuda import CUDALongTensor

    return CUDALongTensor(t.to(device))


class DealerProvider(TupleProvider):
    NAME = NAME

    def __init__(self, client):
        super().__init__()
        self.client = client

    def _draw(self, req):
        # CrypTen opens nothing before it holds the whole triple: the round trip is not overlapped
        mat = self.client.crypten(req, awaited=True).wait()
        return mat

    @staticmethod
    def _zeros(sizes, device, binary=False):
        cls = BinarySharedTensor if binary else ArithmeticSharedTensor
        kw = {} if binary else {"precision": 0}
        return tuple(cls.from_shares(_to(torch.zeros(s, dtype=torch.long), device), **kw) for s in sizes)

    def generate_additive_triple(self, size0, size1, op, device=None, *args, **kwargs):
        if args:
            raise TypeError("DealerProvider: positional op arguments are not supported")
        if _numel(size0) == 0 or _numel(size1) == 0:
            return self._zeros((size0, size1, _result_size(op, size0, size1, kwargs)), device)
        req = {"fn": "additive", "size0": list(size0), "size1": list(size1), "op": op,
               "kwargs": kwargs}
        w = self._draw(req)
        n0, n1 = w.new_empty(size0).numel(), w.new_empty(size1).numel()
        a = w[:n0].view(size0)
        b = w[n0:n0 + n1].view(size1)
        c = w[n0 + n1:].view(_result_size(op, size0, size1, kwargs))
        return tuple(ArithmeticSharedTensor.from_shares(_to(t.clone(), device), precision=0)
                     for t in (a, b, c))

    def square(self, size, device=None):
        if _numel(size) == 0:
            return self._zeros((size, size), device)
        w = self._draw({"fn": "square", "size": list(size)})
        n = w.numel() // 2
        r, r2 = w[:n].view(size), w[n:].view(size)
        return (ArithmeticSharedTensor.from_shares(_to(r.clone(), device), precision=0),
                ArithmeticSharedTensor.from_shares(_to(r2.clone(), device), precision=0))

    def generate_binary_triple(self, size0, size1, device=None):
        if _numel(size0) == 0 or _numel(size1) == 0:
            shape = torch.broadcast_shapes(tuple(size0), tuple(size1))
            return self._zeros((size0, size1, shape), device, binary=True)
        w = self._draw({"fn": "binary", "size0": list(size0), "size1": list(size1)})
        n0, n1 = w.new_empty(size0).numel(), w.new_empty(size1).numel()
        shape = torch.broadcast_shapes(tuple(size0), tuple(size1))
        a, b, c = w[:n0].view(size0), w[n0:n0 + n1].view(size1), w[n0 + n1:].view(shape)
        return tuple(BinarySharedTensor.from_shares(_to(t.clone(), device)) for t in (a, b, c))

    def wrap_rng(self, size, device=None):
        if _numel(size) == 0:
            return self._zeros((size, size), device)
        w = self._draw({"fn": "wraps", "size": list(size)})
        n = w.numel() // 2
        r, theta = w[:n].view(size), w[n:].view(size)
        return (ArithmeticSharedTensor.from_shares(_to(r.clone(), device), precision=0),
                ArithmeticSharedTensor.from_shares(_to(theta.clone(), device), precision=0))

    def B2A_rng(self, size, device=None):
        if _numel(size) == 0:
            rA, = self._zeros((size,), device)
            rB, = self._zeros((size,), device, binary=True)
            return rA, rB
        w = self._draw({"fn": "B2A", "size": list(size)})
        n = w.numel() // 2
        rB, rA = (w[:n] & 1).view(size), w[n:].view(size)
        return (ArithmeticSharedTensor.from_shares(_to(rA.clone(), device), precision=0),
                BinarySharedTensor.from_shares(_to(rB.clone(), device)))


def register(client):
    """Make ``crypten.cfg.mpc.provider = "PGK"`` resolve to this dealer."""
    import crypten.mpc as mpc

    providers = mpc.__dict__["__SUPPORTED_PROVIDERS"]
    providers[NAME] = DealerProvider(client)
    return providers[NAME]
