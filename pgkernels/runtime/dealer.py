"""Correlated randomness from a dealer that is not a compute party.

Set-up: the dealer draws a fresh 128-bit AES key per compute party
(``secrets``) and sends it to that party alone. Request number ``seq`` of a
session expands, for party ``i``, to the AES-128-CTR stream
``AES_{key_i}(seq || block)``; both the party and the dealer can compute it.

Every request has a layout ``[stream segment | corrected segment]`` of uint64
words. Request ``seq`` has one *corrected party*, ``p = seq mod n`` (rotating,
so that no party carries all the dealer traffic). The other parties take both
segments from their streams; party p takes the stream segment from its stream
and receives the corrected segment from the dealer, which regenerates every
party's stream, computes the true correlated values (Beaver products, bit
decompositions, ...) and sends party p the words that make the shares add up.
Party p thus sees only values one-time-padded by the other parties' streams.
The dealer learns nothing about inputs: it never receives shares.

During a session party 0 sends the dealer one request header per request and
the corrected party receives one correction tensor, so the dealer adds no round
between compute parties; the request goes out before the protocol's first
round and its answer is awaited only when the corrected words are first needed.

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


def udiv(t, divisor):
    """``floor(t / divisor)`` for an int64 tensor read as unsigned 64-bit integers."""
    import numpy as np

    q = t.contiguous().numpy().view(np.uint64) // np.uint64(divisor)
    return torch.from_numpy(q.view(np.int64))


def new_key():
    return torch.frombuffer(bytearray(secrets.token_bytes(16)), dtype=torch.uint8).clone()


# --- layouts shared by the parties and the dealer -------------------------------

def cmp_layout(n, k, mode, payloads, self_sign=0):
    lay = _ops().cmp_layout(n, k, mode, payloads, self_sign)
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


# CrypTen's additive-triple ops (crypten.mpc.provider): the dealer evaluates only these.
ADDITIVE_OPS = ("mul", "matmul", "conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d")
MAX_REQUEST_WORDS = 2 ** 34  # 128 GiB of words: a request past this is malformed


def _check_size(size, name):
    if not isinstance(size, (list, tuple)) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in size):
        raise ValueError(f"dealer request: {name} must be a list of non-negative ints, got {size!r}")
    if _numel(size) > MAX_REQUEST_WORDS:
        raise ValueError(f"dealer request: {name} {size} is too large")


def _check_request(req):
    fn = req.get("fn")
    if fn in ("additive", "binary"):
        _check_size(req.get("size0"), "size0")
        _check_size(req.get("size1"), "size1")
    elif fn in ("square", "wraps", "B2A"):
        _check_size(req.get("size"), "size")
    elif fn == "trunc":
        _check_size(req.get("size"), "size")
        D = req.get("divisor")
        if isinstance(D, bool) or not isinstance(D, int) or not 1 <= D < 2 ** 63:
            raise ValueError(f"dealer request: trunc divisor must be an int in [1, 2^63), got {D!r}")
    elif fn == "gram":
        _check_size(req.get("size"), "size")
        if len(req["size"]) != 2:
            raise ValueError(f"dealer request: gram size must be [m, k], got {req['size']!r}")
    else:
        raise ValueError(f"unknown dealer request {fn!r}")
    if fn == "additive":
        if req.get("op") not in ADDITIVE_OPS:
            raise ValueError(f"dealer request: op {req.get('op')!r} is not one of {ADDITIVE_OPS}")
        kw = req.get("kwargs", {})
        if not isinstance(kw, dict) or not all(
                isinstance(v, (int, list, tuple)) and not isinstance(v, bool) for v in kw.values()):
            raise ValueError(f"dealer request: kwargs must map to ints or int lists, got {kw!r}")


def crypten_layout(req):
    """Stream/corrected word counts of a CrypTen provider request (validated)."""
    _check_request(req)
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
    if fn == "trunc":  # r, then [floor(r / D)] and [msb(r)] (r read as unsigned)
        n = _numel(req["size"])
        return n, 3 * n
    if fn == "gram":  # A (m x k) and A A^T (m x m)
        m, k = req["size"]
        return m * k, m * k + m * m
    raise ValueError(f"unknown dealer request {fn!r}")


def _crypten_corrections(req, mats):
    """The corrected party's words for a CrypTen provider request (its material first)."""
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
    n = _numel(req["size"]) if fn != "gram" else 0
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
    if fn == "trunc":
        r = sum(m[:n] for m in mats)
        words = torch.cat([udiv(r, req["divisor"]), (r < 0).long()])
        return words - sum(m[n:] for m in others)
    if fn == "gram":
        rows, k = req["size"]
        nk = rows * k
        a = sum(m[:nk] for m in mats).view(rows, k)
        return _ops().ring_syr2k(a).reshape(-1) - sum(m[nk:] for m in others)
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


def corrected_party(seq, world_size):
    """The party that receives request ``seq``'s corrections."""
    return seq % world_size


class DealerCore:
    """Computes the corrected party's words from every party's key (dealer side)."""

    def __init__(self, keys):
        self.keys = keys
        self.seq = 0
        self.pool = _Pool()

    def _streams(self, seq, stream_words, total_words):
        """Every party's material, the corrected party's first."""
        mats = []
        p = corrected_party(seq, len(self.keys))
        order = [p] + [i for i in range(len(self.keys)) if i != p]
        for i in order:
            key = self.keys[i]
            # the corrected party's corrected segment is what we compute: skip drawing it
            nwords = stream_words if i == p else total_words
            buf = self.pool.get(("mat", i), nwords)
            if nwords:
                _ops().prg_fill_(buf, key, seq, 0)
            mats.append(buf)
        return mats

    def answer(self, kind, params):
        """The corrected party's words for request number ``self.seq + 1``."""
        self.seq += 1
        if kind == CMP:
            n, k, mode, payloads, self_sign = params
            lay = cmp_layout(n, k, mode, payloads, self_sign)
            mats = self._streams(self.seq, lay["stream"], lay["total"])
            corr = self.pool.get("corr", lay["total"] - lay["stream"])
            _ops().cmp_dealer_(corr, mats, n, k, mode, payloads, self_sign)
            return corr
        if kind == CRYPTEN:
            stream_words, total = crypten_layout(params)
            mats = self._streams(self.seq, stream_words, total)
            return _crypten_corrections(params, mats).contiguous()
        raise ValueError(f"unknown dealer request kind {kind}")


class Material:
    """A party's correlated randomness for one request."""

    def __init__(self, words, stream_words, work=None):
        self.words = words
        self.stream_words = stream_words
        self._work = work

    def wait(self):
        """Block until this request's corrected words have arrived (no-op except at the corrected party)."""
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
        self._ahead = None  # (params, material, layout) requested ahead of use
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
        # Reused buffers, two of them: a request in use and at most one asked
        # for ahead (prefetch); every caller is done with its material before
        # the request after next.
        words = self._pool.get(("mat", self.seq % 2), total_words)
        corrected = corrected_party(self.seq, self.world_size)
        local_corr = None
        if self.mode == "local":
            # insecure test mode: party 0 computes the corrected party's words
            if self.rank == 0:
                local_corr = self.core.answer(kind, params)
                if corrected != 0 and local_corr.numel():
                    dist.send(local_corr, dst=corrected, group=self.group)
        elif self.rank == 0:
            header = torch.zeros(HEADER_WORDS, dtype=torch.long)
            header[0] = kind
            for i, v in enumerate(header_extra):
                header[1 + i] = int(v)
            dist.send(header, dst=self.dealer_rank, group=self.group)
            if payload is not None:
                dist.send(payload, dst=self.dealer_rank, group=self.group)
        # everything but the corrected party's corrected segment comes from the stream
        drawn = total_words if self.rank != corrected else stream_words
        if drawn:
            _ops().prg_fill_(words[:drawn], self.key, self.seq, 0)
        if self.rank != corrected:
            return Material(words, stream_words)
        corr = words[stream_words:]
        if self.mode == "local":
            if local_corr is not None:
                corr.copy_(local_corr)
            elif corr.numel():
                dist.recv(corr, src=0, group=self.group)
            return Material(words, stream_words)
        work = None
        if corr.numel():
            work = dist.irecv(corr, src=self.dealer_rank, group=self.group)
        _comm.record_dealer_bytes(corr.numel() * 8)
        return Material(words, stream_words, work)

    def cmp(self, n, k, mode, payloads, self_sign=0):
        """Material for one comparison of n elements (taken from a prefetch if one is waiting)."""
        params = (n, k, mode, int(payloads), int(self_sign))
        if self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            if ahead[0] != params:
                raise RuntimeError(f"pgkernels: dealer material asked ahead for {ahead[0]} but the "
                                   f"next comparison is {params}")
            return ahead[1], ahead[2]
        lay = cmp_layout(n, k, mode, payloads, self_sign)
        return self._request(CMP, params, lay["stream"], lay["total"], header_extra=params), lay

    def prefetch_cmp(self, n, k, mode, payloads, self_sign=0):
        """Ask now for the material of the next comparison, so that the dealer
        computes it while the parties run the current one's rounds. The next
        call must be ``cmp`` with the same arguments (checked)."""
        if self._ahead is not None:
            raise RuntimeError("pgkernels: only one comparison can be asked for ahead")
        params = (n, k, mode, int(payloads), int(self_sign))
        lay = cmp_layout(n, k, mode, payloads, self_sign)
        mat = self._request(CMP, params, lay["stream"], lay["total"], header_extra=params)
        self._ahead = (params, mat, lay)

    def crypten(self, req):
        if self._ahead is not None:
            raise RuntimeError("pgkernels: a CrypTen op ran while a comparison was asked for ahead")
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
            params = tuple(int(v) for v in header[1:6])
        elif kind == CRYPTEN:
            raw = torch.empty(int(header[1]), dtype=torch.uint8)
            dist.recv(raw, src=0, group=group)
            params = json.loads(bytes(raw.numpy()).decode())
        else:
            raise RuntimeError(f"dealer: unknown request kind {kind}")
        corr = core.answer(kind, params)
        if corr.numel():
            dist.send(corr, dst=corrected_party(core.seq, world_size), group=group)
