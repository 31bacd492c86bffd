"""Target for the encrypted multi-host CLI test (tests/test_runtime_security.py).

``python -m pgkernels.party ... --run tests/security_target.py:main`` imports
this file *before* the session starts, so the hooks below see every byte this
party hands to / receives from torch.distributed: the handshake, the dealer's
key delivery, requests, corrections and openings. ``main`` then runs a
comparison and CrypTen ops and writes what crossed gloo and this party's
secrets (its dealer key, its shares, its exchange contributions and the
opened values) to ``$PGK_CAPTURE_DIR`` for the test to compare.
"""

import json
import os

import torch
import torch.distributed as dist

SENT, RECEIVED, COLLECTIVES = [], [], []


def _bytes(t):
    return bytes(t.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy())


class _Captured:
    def __init__(self, work, tensor):
        self._work, self._tensor = work, tensor

    def wait(self, *a, **k):
        out = self._work.wait(*a, **k)
        RECEIVED.append(_bytes(self._tensor))
        return out

    def is_completed(self):
        return self._work.is_completed()


_orig = {name: getattr(dist, name) for name in ("isend", "irecv", "send", "recv", "all_reduce", "broadcast",
                                                 "reduce", "gather", "all_gather", "scatter")}


def _isend(tensor, *a, **k):
    SENT.append(_bytes(tensor))
    return _orig["isend"](tensor, *a, **k)


def _send(tensor, *a, **k):
    SENT.append(_bytes(tensor))
    return _orig["send"](tensor, *a, **k)


def _irecv(tensor, *a, **k):
    return _Captured(_orig["irecv"](tensor, *a, **k), tensor)


def _recv(tensor, *a, **k):
    out = _orig["recv"](tensor, *a, **k)
    RECEIVED.append(_bytes(tensor))
    return out


def _collective(name):
    def f(tensor, *a, **k):
        COLLECTIVES.append(name)
        ts = tensor if isinstance(tensor, (list, tuple)) else [tensor]
        for t in ts:
            if torch.is_tensor(t):
                SENT.append(_bytes(t))
        out = _orig[name](tensor, *a, **k)
        for t in ts:
            if torch.is_tensor(t):
                RECEIVED.append(_bytes(t))
        return out
    return f


dist.isend, dist.irecv, dist.send, dist.recv = _isend, _irecv, _send, _recv
for _name in ("all_reduce", "broadcast", "reduce", "gather", "all_gather", "scatter"):
    setattr(dist, _name, _collective(_name))


def main():
    import crypten

    import pgkernels
    from pgkernels.runtime import comm, session

    secrets = {"key": [], "share": [], "contribution": [], "opened": []}
    orig_exchange = comm.exchange

    def exchange(sum_tensor=None, xor_tensor=None):
        ts = comm._as_list(sum_tensor) + comm._as_list(xor_tensor)
        secrets["contribution"] += [_bytes(t).hex() for t in ts]
        out = orig_exchange(sum_tensor, xor_tensor)
        secrets["opened"] += [_bytes(t).hex() for t in ts]
        return out

    comm.exchange = exchange
    rank = comm.rank()
    secrets["key"].append(_bytes(session.dealer_client().key).hex())
    g = torch.Generator().manual_seed(1)
    x = crypten.cryptensor(torch.randn(64, generator=g) * 10)
    secrets["share"].append(_bytes(x._tensor.share).hex())
    bits = pgkernels.ltz(x).get_plain_text()
    prod = (x * x).get_plain_text()  # CrypTen's Beaver multiplication (dealer triples + all_reduce)
    want = (torch.randn(64, generator=torch.Generator().manual_seed(1)) * 10)
    ok = bool(((want < 0).float() == bits).all()) and bool(((prod - want * want).abs() < 0.1).all())
    out = os.environ["PGK_CAPTURE_DIR"]
    with open(os.path.join(out, f"sent{rank}.bin"), "wb") as f:
        f.write(b"".join(SENT))
    with open(os.path.join(out, f"received{rank}.bin"), "wb") as f:
        f.write(b"".join(RECEIVED))
    with open(os.path.join(out, f"secrets{rank}.json"), "w") as f:
        json.dump(dict(secrets, collectives=COLLECTIVES,
                       communicator=type(crypten.communicator.get()).__name__), f)
    return ["correct" if ok else "WRONG", type(crypten.communicator.get()).__name__]
