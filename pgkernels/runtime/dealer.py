"""Correlated randomness from a dealer that is not a compute party.

Set-up: the dealer draws a fresh 128-bit AES key per compute party
(``secrets``) and sends it to that party alone. Request number ``seq`` of a
session expands, for party ``i``, to the AES-128-CTR stream
``AES_{key_i}(seq || block)``; both the party and the dealer can compute it.

Every request has a layout ``[stream segment | corrected segment]`` of uint64
words. Parties 1..n-1 take both segments from their stream; party 0 takes the
stream segment from its stream and receives the corrected segment from the
dealer, which regenerates every party's stream, computes the true correlated
values (Beaver products, bit decompositions, ...) and sends party 0 the words
that make the shares add up. Party 0 thus sees only values one-time-padded by
the other parties' streams, and no other party hears from the dealer after
set-up. The dealer learns nothing about inputs: it never receives shares.

Only party 0 talks to the dealer during a session (one request header out, one
correction tensor back), so the dealer adds no round between compute parties;
the request is sent before the protocol's first round and its answer is
awaited only when the corrected words are first needed.

``DealerClient(mode="local")`` is the insecure test mode (CrypTen's TFP
trust model): party 0 generates every key and computes the corrections itself,
so it can unmask every input.
"""

import json
import secrets

import torch
import torch.distributed as dist

from . import comm as _comm

# request kinds (header word 0)
STOP = 0
CMP = 1
CRYPTEN = 2

HEADER_WORDS = 8


def _ops():
    import pgkernels._C  # noqa: F401  (registers torch.ops.pgkernels)

    return torch.ops.pgkernels


def stream(key, seq, nwords):
    out = torch.empty(nwords, dtype=torch.long)
    if nwords:
        _ops().prg_fill_(out, key, seq, 0)
    return out


def new_key():
    return torch.frombuffer(bytearray(secrets.token_bytes(16)), dtype=torch.uint8).clone()


# --- layouts shared by the parties and the dealer -------------------------------

def cmp_layout(n, k, mode, payloads):
    lay = _ops().cmp_layout(n, k, mode, payloads)
    return {"stream": lay[0], "total": lay[1], "levels": lay[2], "W": lay[3],
            "open1": lay[4], "state": lay[5], "open": lay[6:]}


def _numel(size):
    n = 1
    for s in size:
        n *= int(s)
    return n


def _result_size(op, size0, size1, kwargs):
    a = torch.empty(size0, dtype=torch.long, device="meta")
    b = torch.empty(size1, dtype=torch.long, device="meta")
    try:
        return tuple(getattr(torch, op)(a, b, **kwargs).shape)
    except Exception:  # meta kernels missing for some int64 ops
        a = torch.zeros(size0, dtype=torch.long)
        b = torch.zeros(size1, dtype=torch.long)
        return tuple(getattr(torch, op)(a, b, **kwargs).shape)


def crypten_layout(req):
    """Stream/corrected word counts of a CrypTen provider request."""
    fn = req["fn"]
    if fn == "additive":
        n0, n1 = _numel(req["size0"]), _numel(req["size1"])
        nc = _numel(_result_size(req["op"], req["size0"], req["size1"], req["kwargs"]))
        return n0 + n1, n0 + n1 + nc
    if fn == "binary":
        n0, n1 = _numel(req["size0"]), _numel(req["size1"])
        nc = _numel(torch.broadcast_shapes(tuple(req["size0"]), tuple(req["size1"])))
        return n0 + n1, n0 + n1 + nc
    if fn in ("square", "wraps", "B2A"):
        n = _numel(req["size"])
        return n, 2 * n
    raise ValueError(f"unknown dealer request {fn!r}")


def _crypten_corrections(req, mats):
    """Party 0's corrected words for a CrypTen provider request."""
    fn = req["fn"]
    others = mats[1:]
    if fn == "additive":
        s0, s1 = req["size0"], req["size1"]
        n0, n1 = _numel(s0), _numel(s1)
        a = sum(m[:n0] for m in mats).view(s0)
        b = sum(m[n0:n0 + n1] for m in mats).view(s1)
        c = getattr(torch, req["op"])(a, b, **req["kwargs"]).reshape(-1)
        return c - sum(m[n0 + n1:] for m in others)
    if fn == "binary":
        s0, s1 = req["size0"], req["size1"]
        n0, n1 = _numel(s0), _numel(s1)
        a = _xor_all([m[:n0] for m in mats]).view(s0)
        b = _xor_all([m[n0:n0 + n1] for m in mats]).view(s1)
        c = (a & b).reshape(-1)
        return c ^ _xor_all([m[n0 + n1:] for m in others])
    n = _numel(req["size"])
    if fn == "square":
        r = sum(m[:n] for m in mats)
        return r * r - sum(m[n:] for m in others)
    if fn == "wraps":
        from crypten.common.util import count_wraps

        theta = count_wraps([m[:n] for m in mats])
        return theta - sum(m[n:] for m in others)
    if fn == "B2A":
        bit = _xor_all([m[:n] & 1 for m in mats])
        return bit - sum(m[n:] for m in others)
    raise ValueError(f"unknown dealer request {fn!r}")


def _xor_all(ts):
    out = ts[0].clone()
    for t in ts[1:]:
        out ^= t
    return out


class _Pool:
    """Reused word buffers: fresh 50 MB allocations per request cost more in
    page faults than the AES and the arithmetic together."""

    def __init__(self):
        self._bufs = {}

    def get(self, slot, nwords):
        buf = self._bufs.get(slot)
        if buf is None or buf.numel() < nwords:
            buf = torch.empty(nwords, dtype=torch.long)
            self._bufs[slot] = buf
        return buf[:nwords]


class DealerCore:
    """Computes party 0's corrections from every party's key (dealer side)."""

    def __init__(self, keys):
        self.keys = keys
        self.seq = 0
        self.pool = _Pool()

    def _streams(self, seq, stream_words, total_words):
        mats = []
        for i, key in enumerate(self.keys):
            # party 0's corrected segment is what we compute: skip drawing it
            nwords = stream_words if i == 0 else total_words
            buf = self.pool.get(("mat", i), nwords)
            if nwords:
                _ops().prg_fill_(buf, key, seq, 0)
            mats.append(buf)
        return mats

    def answer(self, kind, params):
        """Party 0's corrected words for request number ``self.seq + 1``."""
        self.seq += 1
        if kind == CMP:
            n, k, mode, payloads = params
            lay = cmp_layout(n, k, mode, payloads)
            mats = self._streams(self.seq, lay["stream"], lay["total"])
            corr = self.pool.get("corr", lay["total"] - lay["stream"])
            _ops().cmp_dealer_(corr, mats, n, k, mode, payloads)
            return corr
        if kind == CRYPTEN:
            stream_words, total = crypten_layout(params)
            mats = [stream(key, self.seq, total) for key in self.keys]
            return _crypten_corrections(params, mats).contiguous()
        raise ValueError(f"unknown dealer request kind {kind}")


class Material:
    """A party's correlated randomness for one request."""

    def __init__(self, words, stream_words, work=None):
        self.words = words
        self.stream_words = stream_words
        self._work = work

    def wait(self):
        """Block until party 0's corrected words have arrived (no-op elsewhere)."""
        if self._work is not None:
            self._work.wait()
            self._work = None
        return self.words


class DealerClient:
    """Party-side handle on the dealer.

    ``mode="process"``: a dealer process at rank ``world_size`` (secure).
    ``mode="local"``: party 0 deals (insecure test mode, like CrypTen's TFP).
    """

    def __init__(self, mode="process"):
        c = _comm._comm()
        self.mode = mode
        self.rank = c.get_rank()
        self.world_size = c.get_world_size()
        self.dealer_rank = self.world_size
        self.group = c.ttp_group if mode == "process" else c.main_group
        self.seq = 0
        self._pool = _Pool()
        if mode == "process":
            key = torch.empty(16, dtype=torch.uint8)
            dist.recv(key, src=self.dealer_rank, group=self.group)
            self.key = key
            self.core = None
        elif mode == "local":
            if self.rank == 0:
                keys = [new_key() for _ in range(self.world_size)]
                for r in range(1, self.world_size):
                    dist.send(keys[r], dst=r, group=self.group)
                self.key = keys[0]
                self.core = DealerCore(keys)
            else:
                key = torch.empty(16, dtype=torch.uint8)
                dist.recv(key, src=0, group=self.group)
                self.key = key
                self.core = None
        else:
            raise ValueError(f"unknown dealer mode {mode!r}")

    def _request(self, kind, params, stream_words, total_words, header_extra=(), payload=None):
        self.seq += 1
        # One reused buffer: requests are strictly sequential within a party and
        # every caller is done with its material before the next request.
        words = self._pool.get("mat", total_words)
        if self.rank != 0:
            if total_words:
                _ops().prg_fill_(words, self.key, self.seq, 0)
            return Material(words, stream_words)
        if stream_words:
            _ops().prg_fill_(words[:stream_words], self.key, self.seq, 0)
        corr = words[stream_words:]
        if self.mode == "local":
            corr.copy_(self.core.answer(kind, params))
            return Material(words, stream_words)
        header = torch.zeros(HEADER_WORDS, dtype=torch.long)
        header[0] = kind
        for i, v in enumerate(header_extra):
            header[1 + i] = int(v)
        dist.send(header, dst=self.dealer_rank, group=self.group)
        if payload is not None:
            dist.send(payload, dst=self.dealer_rank, group=self.group)
        work = None
        if corr.numel():
            work = dist.irecv(corr, src=self.dealer_rank, group=self.group)
        _comm.record_dealer_bytes(corr.numel() * 8)
        return Material(words, stream_words, work)

    def cmp(self, n, k, mode, payloads):
        lay = cmp_layout(n, k, mode, payloads)
        params = (n, k, mode, int(payloads))
        return self._request(CMP, params, lay["stream"], lay["total"], header_extra=params), lay

    def crypten(self, req):
        stream_words, total_words = crypten_layout(req)
        payload = None
        if self.rank == 0 and self.mode == "process":
            raw = json.dumps(req).encode()
            payload = torch.frombuffer(bytearray(raw), dtype=torch.uint8).clone()
            extra = (len(raw),)
        else:
            extra = ()
        return self._request(CRYPTEN, req, stream_words, total_words, header_extra=extra,
                             payload=payload)

    def stop(self):
        if self.mode == "process" and self.rank == 0:
            header = torch.zeros(HEADER_WORDS, dtype=torch.long)
            header[0] = STOP
            dist.send(header, dst=self.dealer_rank, group=self.group)


def serve(world_size):
    """Dealer process main loop (rank ``world_size``); returns on STOP."""
    import crypten.communicator as cc

    group = cc.get().ttp_group
    keys = [new_key() for _ in range(world_size)]
    for r in range(world_size):
        dist.send(keys[r], dst=r, group=group)
    core = DealerCore(keys)
    header = torch.empty(HEADER_WORDS, dtype=torch.long)
    while True:
        dist.recv(header, src=0, group=group)
        kind = int(header[0])
        if kind == STOP:
            return
        if kind == CMP:
            params = tuple(int(v) for v in header[1:5])
        elif kind == CRYPTEN:
            raw = torch.empty(int(header[1]), dtype=torch.uint8)
            dist.recv(raw, src=0, group=group)
            params = json.loads(bytes(raw.numpy()).decode())
        else:
            raise RuntimeError(f"dealer: unknown request kind {kind}")
        corr = core.answer(kind, params)
        if corr.numel():
            dist.send(corr, dst=0, group=group)
