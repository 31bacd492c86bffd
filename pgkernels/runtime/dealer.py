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

Requests. Every compute party sends the dealer the header of every request
(``HEADER_WORDS`` int64 words: kind, request number, parameters) and, for a
CrypTen request, its canonical JSON (at most ``MAX_PAYLOAD_BYTES``, its length
in the header and checked before the JSON is received). The dealer answers
only a request that every party made identically: a single party -- e.g. a
party 0 that asks, at a request where it is the corrected party, for a
zero-sized matmul "triple" whose answer would be minus another party's
stream words -- makes the dealer refuse, raise :class:`DealerError` and stop,
and every party then fails with an error (nothing hangs, nothing is
answered). The dealer then validates the request (no zero dimension, CMP
parameters in range, only CrypTen's triple ops) and refuses one that would
hold more than ``PGKERNELS_DEALER_MAX_BYTES`` (default
:data:`DEFAULT_MAX_BYTES`) of material: ``8 * (n * total + corrected)`` bytes
for ``n`` parties' streams of ``total`` words plus the corrections.

Cost: per request every party sends 64 header bytes (plus the JSON of a
CrypTen request, tens of bytes) with ``isend``, before the protocol's first
round, and the corrected party receives one correction tensor. A request made
when an op needs it is one round trip to the dealer, metered as a round
(:func:`pgkernels.runtime.comm.record_dealer_round`; two when the caller
awaits the answer before its next opening, as CrypTen's ops do); its answer
is awaited only when the corrected words are first needed (in a comparison,
after the first opening). A comparison asked for ahead (:meth:`DealerClient.prefetch_cmp`)
travels while the previous comparison's rounds run and is not counted. The dealer learns the request shapes
(public) and nothing else.

The offline phase. :meth:`DealerClient.recording` records the requests a
call makes (their kinds, headers and JSON: what the dealer sees), and
:meth:`DealerClient.preprocess` asks for all of them at once, in order, before
the next such call -- e.g. while the clients of a federated round train, for
the next aggregation, whose sizes are known. The call then takes each answer
from that queue instead of asking, so its online phase has no dealer round
trip (the meter counts none) and no dealer bytes. Nothing changes for the
dealer: it still answers each request only when every party sent it
identically (a party that preprocesses a different trace makes it refuse),
and each answer is used once. A call that asks for something else than the
next preprocessed request gets a RuntimeError, and the rest of the queue is
received and dropped.

Batched online requests. :meth:`DealerClient.batched` is for a call that
repeats with the same public sizes (one aggregation per federated round): the
first call records its requests; each later one asks for all of them in one
batch at its start (one metered round trip, its bytes online) and takes them
from the queue. If the call differs (sizes changed after a reveal), the rest
of the batch is dropped and the call asks as usual.

FSS requests (kind :data:`FSS`, two parties only) carry the keys of the
one-round comparison (:func:`pgkernels.ops.fss_ltz_gen_`, a distributed
comparison function per element). Both parties draw their mask share r_b and
their DCF root seed from their streams (3 words per element); the dealer
regenerates both, computes r = r_0 + r_1 and the keys, and sends the
correction words, which are common to the two keys, to *both* parties
(``8 * dcf_cw_words(k - 1)`` bytes per element each: 1520 at k = 64, 752 at
k = 32). Each party thus holds exactly its own key (its seed and the
correction words); a key alone is pseudorandom and reveals nothing of r.

All traffic goes through the session's transport
(:func:`pgkernels.runtime.comm.transport`): with ``channel="encrypted"`` the
keys, headers and corrections are AES-GCM records of the authenticated
channel, so nobody on the network sees the keys.

``DealerClient(mode="local")`` is the insecure test mode (CrypTen's TFP
trust model): party 0 generates every key and computes the corrections itself,
so it can unmask every input.
"""

import json
import os
import secrets

import torch

from .. import ops
from . import comm as _comm

# request kinds (header word 0)
STOP = 0
CMP = 1
CRYPTEN = 2
FSS = 3


HEADER_WORDS = 8  # [kind, request number, parameters..., zeros]
MAX_PAYLOAD_BYTES = 64 * 1024  # a CrypTen request's JSON (a few hundred bytes in practice)
# Per-request budget for the dealer's material. The largest request of the
# tests and benchmarks is bench_order's "rank" batch of 3e7 64-bit comparisons
# (n (n - 1) / 2 * d <= 3e7): 4.4 GB for 2 parties, 6.0 GB for 3.
DEFAULT_MAX_BYTES = 8 << 30
MAX_BYTES_ENV = "PGKERNELS_DEALER_MAX_BYTES"
MAX_ELEMENTS = 2 ** 40  # one dimension or one comparison batch
MAX_CMP_PAYLOADS = 2 ** 16
MAX_DIMS = 16
BATCH_KEYS = 32  # DealerClient.batched: traces kept (one per key; a trace is only its requests)
SEND_CAP = 8  # header sends left outstanding before waiting on the oldest (None: no wait)
BATCH_MAX_BYTES = 4 << 30  # DealerClient.batched: larger traces are asked for request by request


class DealerError(RuntimeError):
    """The dealer refused a request, or stopped answering."""


def stream(key, seq, nwords, device=None):
    out = torch.empty(nwords, dtype=torch.long, device=device)
    if nwords:
        ops.prg_fill_(out, key, seq, 0)
    return out


def udiv(t, divisor):
    """``floor(t / divisor)`` for an int64 tensor read as unsigned 64-bit integers."""
    if t.device.type != "cpu":
        return _udiv_int64(t, divisor)
    import numpy as np

    q = t.contiguous().numpy().view(np.uint64) // np.uint64(divisor)
    return torch.from_numpy(q.view(np.int64))


def _udiv_int64(t, divisor):
    """:func:`udiv` in int64 arithmetic (any device: CUDA has no uint64 division).
    With u = 2 h + b (h = u >> 1 >= 0 as an int64): u // D = 2 (h // D) + (2 (h % D) + b) // D,
    where 2 (h % D) + b < 2 D fits an int64 for D <= 2^62."""
    D = int(divisor)
    if not 0 < D <= 2 ** 62:
        raise ValueError(f"udiv: divisor must be in [1, 2^62] off the CPU, got {D}")
    h = (t >> 1) & (2 ** 63 - 1)  # logical shift: u // 2
    q1 = torch.div(h, D, rounding_mode="floor")
    return 2 * q1 + torch.div(2 * (h - q1 * D) + (t & 1), D, rounding_mode="floor")


def new_key():
    return torch.frombuffer(bytearray(secrets.token_bytes(16)), dtype=torch.uint8).clone()


# --- layouts shared by the parties and the dealer -------------------------------

def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def check_cmp_params(n, k, mode, payloads, self_sign=0):
    """Range-check a comparison's parameters in Python (the C++ layer narrows
    k, mode, payloads and self_sign to int): returns them as a tuple of ints."""
    vals = {"n": n, "k": k, "mode": mode, "payloads": payloads, "self_sign": self_sign}
    for name, v in vals.items():
        if not _is_int(v):
            raise TypeError(f"dealer request: comparison {name} must be an int, got {type(v).__name__}")
    if not 1 <= n <= MAX_ELEMENTS:
        raise ValueError(f"dealer request: comparison n must be in [1, 2^40], got {n}")
    if not 2 <= k <= 64:
        raise ValueError(f"dealer request: comparison bits k must be in [2, 64], got {k}")
    if mode not in ops.CMP_MODES:
        raise ValueError(f"dealer request: comparison mode must be 0 (LT), 1 (EQ) or 2 (MUX), got {mode}")
    if not 0 <= payloads <= MAX_CMP_PAYLOADS:
        raise ValueError(f"dealer request: comparison payloads must be in [0, 2^16], got {payloads}")
    if self_sign not in (-1, 0, 1):
        raise ValueError(f"dealer request: comparison self_sign must be -1, 0 or 1, got {self_sign}")
    return (int(n), int(k), int(mode), int(payloads), int(self_sign))


def check_fss_params(n, k, world_size=2):
    """Range-check an FSS comparison request (n elements, k-bit values, 2
    parties only): returns (n, k)."""
    for name, v in (("n", n), ("k", k)):
        if not _is_int(v):
            raise TypeError(f"dealer request: FSS comparison {name} must be an int, got {type(v).__name__}")
    if world_size != 2:
        raise ValueError(f"dealer request: FSS comparison needs exactly 2 parties, the session has {world_size}")
    if not 1 <= n <= MAX_ELEMENTS:
        raise ValueError(f"dealer request: FSS comparison n must be in [1, 2^40], got {n}")
    if not 2 <= k <= 64:
        raise ValueError(f"dealer request: FSS comparison bits k must be in [2, 64], got {k}")
    return int(n), int(k)


def fss_layout(n, k):
    """(stream words, total words) of an FSS request: every party's stream
    segment is [r share (n) | root seeds (2 n)], the corrected segment (the
    same words at both parties) the n keys' correction words."""
    stream = 3 * n
    return stream, stream + n * ops.dcf_cw_words(k - 1)


def max_request_bytes():
    """The dealer's per-request memory budget (``PGKERNELS_DEALER_MAX_BYTES``)."""
    raw = os.environ.get(MAX_BYTES_ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT_MAX_BYTES
    try:
        val = int(raw)
    except ValueError:
        val = 0
    if val <= 0:
        raise ValueError(f"{MAX_BYTES_ENV} must be a positive integer number of bytes, got {raw!r}")
    return val


def request_bytes(stream_words, total_words, world_size):
    """Bytes of material the dealer holds for a request: every party's stream
    (``total_words`` each, at most) plus the corrections."""
    return 8 * (world_size * total_words + (total_words - stream_words))


def check_budget(stream_words, total_words, world_size, what="request"):
    need = request_bytes(stream_words, total_words, world_size)
    limit = max_request_bytes()
    if need > limit:
        raise ValueError(f"dealer request: the {what} needs {need} bytes of dealer memory for "
                         f"{world_size} parties, over the budget of {limit} bytes "
                         f"({MAX_BYTES_ENV})")
    return need


def cmp_layout(n, k, mode, payloads, self_sign=0):
    """The :class:`pgkernels.ops.CmpLayout` of a comparison request, after the
    range checks of :func:`check_cmp_params`."""
    return ops.cmp_layout(*check_cmp_params(n, k, mode, payloads, self_sign))


def _numel(size):
    n = 1
    for s in size:
        n *= int(s)
    return n


def _result_size(op, size0, size1, kwargs):
    """Shape of ``op(a, b, **kwargs)`` for a (size0) and b (size1), on meta tensors."""
    a = torch.empty(size0, dtype=torch.float32, device="meta")
    b = torch.empty(size1, dtype=torch.float32, device="meta")
    try:
        return tuple(getattr(torch, op)(a, b, **kwargs).shape)
    except Exception as e:
        raise ValueError(f"dealer request: {op} of sizes {list(size0)} and {list(size1)} "
                         f"with {kwargs} is not valid: {str(e).splitlines()[0] if str(e) else e}") from None


# CrypTen's additive-triple ops (crypten.mpc.provider): the dealer evaluates only these.
ADDITIVE_OPS = ("mul", "matmul", "conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d")
CONV_KWARGS = ("stride", "padding", "dilation", "groups", "output_padding")
MAX_REQUEST_WORDS = 2 ** 34  # 128 GiB of words: a request past this is malformed
_REQUEST_KEYS = {"additive": {"fn", "size0", "size1", "op", "kwargs"}, "binary": {"fn", "size0", "size1"},
                 "square": {"fn", "size"}, "wraps": {"fn", "size"}, "B2A": {"fn", "size"},
                 "trunc": {"fn", "size", "divisor", "segments"}, "gram": {"fn", "size"}}
MAX_TRUNC_SEGMENTS = 256  # distinct divisors in one truncation request


def _check_size(size, name):
    if not isinstance(size, (list, tuple)) or len(size) > MAX_DIMS or not all(
            _is_int(s) and 1 <= s <= MAX_ELEMENTS for s in size):
        raise ValueError(f"dealer request: {name} must be a list of at most {MAX_DIMS} ints in "
                         f"[1, 2^40] (no zero dimension), got {size!r}")
    if _numel(size) > MAX_REQUEST_WORDS:
        raise ValueError(f"dealer request: {name} {size} is too large")


def _check_kwarg(key, v):
    ok = (_is_int(v) and 0 <= v <= 2 ** 20) or (
        isinstance(v, (list, tuple)) and 1 <= len(v) <= 3 and all(_is_int(x) and 0 <= x <= 2 ** 20 for x in v))
    if key not in CONV_KWARGS or not ok:
        raise ValueError(f"dealer request: kwargs may hold {CONV_KWARGS} as ints or int lists in "
                         f"[0, 2^20], got {key}={v!r}")


def _check_request(req):
    if not isinstance(req, dict):
        raise ValueError(f"dealer request: expected a JSON object, got {type(req).__name__}")
    fn = req.get("fn")
    if not isinstance(fn, str) or fn not in _REQUEST_KEYS:
        raise ValueError(f"unknown dealer request {fn!r}")
    extra = set(req) - _REQUEST_KEYS[fn]
    if extra:
        raise ValueError(f"dealer request: unexpected fields {sorted(extra)} in a {fn!r} request")
    if fn in ("additive", "binary"):
        _check_size(req.get("size0"), "size0")
        _check_size(req.get("size1"), "size1")
    else:
        _check_size(req.get("size"), "size")
    if fn == "trunc":
        # one divisor for all n words, or consecutive segments [[divisor, count], ...]
        segs = req.get("segments")
        if segs is None:
            segs = [[req.get("divisor"), _numel(req["size"])]]
        elif "divisor" in req:
            raise ValueError("dealer request: trunc takes a divisor or segments, not both")
        if not isinstance(segs, list) or not 1 <= len(segs) <= MAX_TRUNC_SEGMENTS or not all(
                isinstance(g, list) and len(g) == 2 and _is_int(g[0]) and 1 <= g[0] < 2 ** 63
                and _is_int(g[1]) and g[1] >= 1 for g in segs):
            raise ValueError(f"dealer request: trunc needs a divisor in [1, 2^63) or 1..{MAX_TRUNC_SEGMENTS} "
                             f"segments [divisor, count], got {segs!r:.200}")
        if len(req["size"]) != 1 or sum(g[1] for g in segs) != req["size"][0]:
            raise ValueError("dealer request: trunc segments must cover the size [n] exactly")
    elif fn == "gram":
        if len(req["size"]) != 2:
            raise ValueError(f"dealer request: gram size must be [m, k], got {req['size']!r}")
    elif fn == "binary":
        try:
            torch.broadcast_shapes(tuple(req["size0"]), tuple(req["size1"]))
        except RuntimeError:
            raise ValueError(f"dealer request: binary sizes {req['size0']} and {req['size1']} "
                             "do not broadcast") from None
    elif fn == "additive":
        if req.get("op") not in ADDITIVE_OPS:
            raise ValueError(f"dealer request: op {req.get('op')!r} is not one of {ADDITIVE_OPS}")
        kw = req.get("kwargs", {})
        if not isinstance(kw, dict):
            raise ValueError(f"dealer request: kwargs must map to ints or int lists, got {kw!r}")
        for key, v in kw.items():
            _check_kwarg(key, v)


def crypten_layout(req, world_size=None):
    """Stream/corrected word counts of a CrypTen provider request (validated;
    with ``world_size``, also checked against the dealer's memory budget)."""
    _check_request(req)
    fn = req["fn"]
    if fn == "additive":
        n0, n1 = _numel(req["size0"]), _numel(req["size1"])
        if world_size is not None:  # inputs alone over budget: refuse before shape inference
            check_budget(n0 + n1, n0 + n1, world_size, f"{fn} request")
        nc = _numel(_result_size(req["op"], req["size0"], req["size1"], req.get("kwargs", {})))
        lay = n0 + n1, n0 + n1 + nc
    elif fn == "binary":
        n0, n1 = _numel(req["size0"]), _numel(req["size1"])
        nc = _numel(torch.broadcast_shapes(tuple(req["size0"]), tuple(req["size1"])))
        lay = n0 + n1, n0 + n1 + nc
    elif fn in ("square", "wraps", "B2A"):
        n = _numel(req["size"])
        lay = n, 2 * n
    elif fn == "trunc":  # r, then [floor(r / D)] and [msb(r)] (r read as unsigned)
        n = _numel(req["size"])
        lay = n, 3 * n
    else:  # gram: A (m x k) and A A^T (m x m)
        m, k = req["size"]
        lay = m * k, m * k + m * m
    if world_size is not None:
        check_budget(lay[0], lay[1], world_size, f"{fn} request")
    return lay


def parse_request(raw):
    """A CrypTen request from its JSON bytes (strict: no NaN/inf, must validate)."""
    def reject(name):
        raise ValueError(f"non-finite number {name}")

    try:
        req = json.loads(bytes(raw).decode("utf-8"), parse_constant=reject)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ValueError(f"dealer request: the payload is not valid JSON: {e}") from None
    _check_request(req)
    return req


def encode_request(req):
    """The canonical JSON every party sends for a CrypTen request."""
    return json.dumps(req, sort_keys=True, separators=(",", ":")).encode()


def _crypten_corrections(req, mats):
    """The corrected party's words for a CrypTen provider request (its material first)."""
    fn = req["fn"]
    others = mats[1:]
    if fn == "additive":
        s0, s1 = req["size0"], req["size1"]
        n0, n1 = _numel(s0), _numel(s1)
        a = sum(m[:n0] for m in mats).view(s0)
        b = sum(m[n0:n0 + n1] for m in mats).view(s1)
        c = getattr(torch, req["op"])(a, b, **req.get("kwargs", {})).reshape(-1)
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
        segs = req.get("segments") or [[req["divisor"], n]]
        q, start = torch.empty_like(r), 0
        for D, count in segs:
            q[start:start + count] = udiv(r[start:start + count], D)
            start += count
        words = torch.cat([q, (r < 0).long()])
        return words - sum(m[n:] for m in others)
    if fn == "gram":
        rows, k = req["size"]
        nk = rows * k
        a = sum(m[:nk] for m in mats).view(rows, k)
        return ops.ring_syr2k(a).reshape(-1) - sum(m[nk:] for m in others)
    raise ValueError(f"unknown dealer request {fn!r}")


def _xor_all(ts):
    out = ts[0].clone()
    for t in ts[1:]:
        out ^= t
    return out


class _Pool:
    """Reused word buffers: fresh 50 MB allocations per request cost more in
    page faults than the AES and the arithmetic together."""

    def __init__(self, device=None):
        self._bufs = {}
        self.device = torch.device("cpu") if device is None else torch.device(device)

    def get(self, slot, nwords, device=None):
        device = self.device if device is None else torch.device(device)
        slot = (slot, str(device))
        buf = self._bufs.get(slot)
        if buf is None or buf.numel() < nwords:
            buf = torch.empty(nwords, dtype=torch.long, device=device)
            self._bufs[slot] = buf
        return buf[:nwords]


def corrected_party(seq, world_size):
    """The party that receives request ``seq``'s corrections."""
    return seq % world_size


class DealerCore:
    """Computes the corrected party's words from every party's key (dealer side).

    ``device``: where comparison material is drawn and corrected (the GPU in a
    CUDA session: the AES stream and ``cmp_dealer_`` run there); CrypTen
    requests' corrections are computed on the CPU (they use numpy)."""

    def __init__(self, keys, device=None):
        self.keys = keys
        self.seq = 0
        self.pool = _Pool(device)

    def _streams(self, seq, stream_words, total_words, device=None):
        """Every party's material, the corrected party's first."""
        mats = []
        p = corrected_party(seq, len(self.keys))
        order = [p] + [i for i in range(len(self.keys)) if i != p]
        for i in order:
            key = self.keys[i]
            # the corrected party's corrected segment is what we compute: skip drawing it
            nwords = stream_words if i == p else total_words
            buf = self.pool.get(("mat", i), nwords, device)
            if nwords:
                ops.prg_fill_(buf, key, seq, 0)
            mats.append(buf)
        return mats

    def answer(self, kind, params):
        """The corrected party's words for request number ``self.seq + 1``
        (validated and checked against the memory budget first: ValueError)."""
        ws = len(self.keys)
        if kind == CMP:
            n, k, mode, payloads, self_sign = check_cmp_params(*params)
            lay = cmp_layout(n, k, mode, payloads, self_sign)
            check_budget(lay.stream, lay.total, ws, "comparison")
        elif kind == CRYPTEN:
            stream_words, total = crypten_layout(params, ws)
        elif kind == FSS:
            n, k = check_fss_params(*params, world_size=ws)
            stream_words, total = fss_layout(n, k)
            check_budget(stream_words, total, ws, "FSS comparison")
        else:
            raise ValueError(f"unknown dealer request kind {kind}")
        self.seq += 1
        if kind == FSS:
            # only the stream segments: the corrected segment is the answer itself
            mats = []
            for i, key in enumerate(self.keys):
                buf = self.pool.get(("mat", i), stream_words)
                ops.prg_fill_(buf, key, self.seq, 0)
                mats.append(buf)
            r = mats[0][:n] + mats[1][:n]
            corr = self.pool.get("corr", total - stream_words)
            ops.fss_ltz_gen_(corr, r, mats[0][n:], mats[1][n:], k)
            return corr
        if kind == CMP:
            mats = self._streams(self.seq, lay.stream, lay.total)
            corr = self.pool.get("corr", lay.corrected)
            ops.cmp_dealer_(corr, mats, n, k, mode, payloads, self_sign)
            return corr
        mats = self._streams(self.seq, stream_words, total, device="cpu")
        return _crypten_corrections(params, mats).contiguous()


class Material:
    """A party's correlated randomness for one request."""

    def __init__(self, words, stream_words, work=None, seq=None):
        self.words = words
        self.stream_words = stream_words
        self._work = work
        self.seq = seq

    def wait(self):
        """Block until this request's corrected words have arrived (no-op except at the corrected party)."""
        if self._work is not None:
            try:
                self._work.wait()
            except Exception as e:
                raise DealerError(
                    f"pgkernels: the dealer did not answer request {self.seq}: it refused a request "
                    "(the parties' requests disagreed or were malformed; see the dealer's error) or "
                    f"stopped: {e}") from e
            self._work = None
        return self.words


def _header(kind, seq, extra=()):
    if len(extra) > HEADER_WORDS - 2:
        raise ValueError("dealer request: too many header words")
    h = torch.zeros(HEADER_WORDS, dtype=torch.long)
    h[0] = kind
    h[1] = seq
    for i, v in enumerate(extra):
        h[2 + i] = int(v)
    return h


def describe_header(h):
    kind = h[0]
    if kind == CMP:
        return (f"request {h[1]}: comparison n={h[2]} k={h[3]} mode={h[4]} payloads={h[5]} "
                f"self_sign={h[6]}")
    if kind == FSS:
        return f"request {h[1]}: FSS comparison n={h[2]} k={h[3]}"
    if kind == CRYPTEN:
        return f"request {h[1]}: CrypTen request of {h[2]} JSON bytes"
    if kind == STOP:
        return f"request {h[1]}: STOP (the party finished or failed)"
    return f"request {h[1]}: unknown kind {kind}"


class DealerRequest:
    """One dealer request as the dealer sees it (kind, header, JSON payload),
    with the words it fills; recorded by :meth:`DealerClient.recording`."""

    __slots__ = ("kind", "params", "stream_words", "total_words", "header_extra", "payload")

    def __init__(self, kind, params, stream_words, total_words, header_extra, payload):
        self.kind = kind
        self.params = params
        self.stream_words = int(stream_words)
        self.total_words = int(total_words)
        self.header_extra = header_extra
        self.payload = payload

    def key(self):
        # a CrypTen request made in the local test mode has no payload: compare its JSON
        body = self.payload
        if body is None and self.kind == CRYPTEN:
            body = encode_request(self.params)
        return (self.kind, self.header_extra, body, self.stream_words, self.total_words)

    def describe(self):
        name = {CMP: "comparison", FSS: "FSS comparison", CRYPTEN: "CrypTen request"}.get(self.kind, "request")
        detail = self.header_extra if self.kind != CRYPTEN else (self.payload or b"")[:120]
        return f"{name} {detail} ({self.total_words} words)"


def trace_words(trace):
    """Words (8 bytes each) a party holds for a preprocessed trace."""
    return sum(r.total_words for r in trace)


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
        self.tx = _comm.transport()
        self.seq = 0
        from .device import session_device

        # material lives where the shares do; corrections arrive through host memory
        self.device = session_device()
        self._pool = _Pool(self.device)
        self._ahead = None  # (params, material, layout) requested ahead of use
        self._trace = None  # requests being recorded (see recording)
        self._queue = []  # (request, Material) answered ahead by preprocess, in order
        self._sending = []  # isend works of headers/payloads (they hold the buffers)
        self._lenient = False  # in batched(): a request off the queue falls back to asking
        self._send_cap = SEND_CAP
        self._batches = {}  # batched(): key -> the trace of the last call under it
        if mode == "process":
            key = torch.empty(16, dtype=torch.uint8)
            self.tx.recv(key, self.dealer_rank, group=self.group)
            self.key = key
            self.core = None
        elif mode == "local":
            if self.rank == 0:
                keys = [new_key() for _ in range(self.world_size)]
                for r in range(1, self.world_size):
                    self.tx.send(keys[r], r, group=self.group)
                self.key = keys[0]
                self.core = DealerCore(keys, self.device)
            else:
                key = torch.empty(16, dtype=torch.uint8)
                self.tx.recv(key, 0, group=self.group)
                self.key = key
                self.core = None
        else:
            raise ValueError(f"unknown dealer mode {mode!r}")

    def _send_request(self, header, payload=None):
        """Send this party's header (and JSON payload) to the dealer, without waiting."""
        # gloo's is_completed() can stay False until wait(): finish the oldest
        # sends instead of scanning them all (the dealer reads requests in order,
        # so any but the last few are long done)
        # (preprocess sends a whole trace without waiting: the dealer computes
        # its answers while the call runs)
        while self._send_cap is not None and len(self._sending) > self._send_cap:
            self._sending.pop(0).wait()
        self._sending.append(self.tx.isend(header, self.dealer_rank, group=self.group))
        if payload is not None:
            self._sending.append(self.tx.isend(payload, self.dealer_rank, group=self.group))

    def _request(self, kind, params, stream_words, total_words, header_extra=(), payload=None, online=True,
                 awaited=False, pooled=True):
        req = DealerRequest(kind, params, stream_words, total_words, tuple(int(v) for v in header_extra),
                            None if payload is None else bytes(payload.numpy()))
        if self._trace is not None:
            self._trace.append(req)
        if self._queue:
            want, mat = self._queue.pop(0)
            if want.key() != req.key():
                self._queue.insert(0, (want, mat))  # its answer is received and dropped too
                self._drain()
                if self._lenient:  # batched(): this call differs from the last; ask as usual
                    # (a round trip of its own even for a part asked with an earlier one,
                    # which came from the batch)
                    return self._issue(req, online=True, awaited=awaited, pooled=pooled, params=params,
                                       payload=payload)
                raise RuntimeError(f"pgkernels: preprocessed dealer material was for {want.describe()} but the "
                                   f"protocol asked for {req.describe()}: the call differs from the recorded one "
                                   "(other sizes, methods or cost-model settings); the rest of the preprocessed "
                                   "material is discarded")
            return mat  # its round trip happened offline: not metered
        return self._issue(req, online=online, awaited=awaited, pooled=pooled, params=params, payload=payload)

    def recording(self):
        """Context manager recording the dealer requests made inside it, in order
        (the requests are answered as usual). The list it yields is the call's
        *trace*, for :meth:`preprocess`."""
        import contextlib

        @contextlib.contextmanager
        def rec():
            if self._trace is not None:
                raise RuntimeError("pgkernels: already recording dealer requests")
            self._trace = trace = []
            try:
                yield trace
            finally:
                self._trace = None
        return rec()

    def preprocess(self, trace):
        """The offline phase: ask the dealer now for the material of every request
        in ``trace`` (from :meth:`recording`), in order, without waiting. A later
        call that makes the same requests (same sizes, methods and cost-model
        settings; all parties run the same code) then takes them from here, and
        its online phase has no dealer round trip; a request that differs from
        the next one here raises RuntimeError and discards the rest. Each
        answer is used once. Every party must call this with the same trace (the
        dealer answers only what all asked for). Memory: every request's words
        are held until used (their sum: :func:`trace_words`)."""
        if self._ahead is not None:
            raise RuntimeError("pgkernels: preprocess while a comparison was asked for ahead")
        for req in trace:
            if not isinstance(req, DealerRequest):
                raise TypeError(f"trace must hold DealerRequest items (from recording()), got {type(req).__name__}")
        self._send_cap = None
        try:
            for req in trace:
                payload = None if req.payload is None else torch.frombuffer(bytearray(req.payload),
                                                                            dtype=torch.uint8).clone()
                mat = self._issue(req, online=False, awaited=False, pooled=False, params=req.params,
                                  payload=payload)
                self._queue.append((req, mat))
        finally:
            self._send_cap = SEND_CAP

    def batched(self, key):
        """Context manager for a call that repeats with the same public sizes
        (an aggregation per federated round): the dealer's material for the
        whole call in one round trip at its start instead of one per request.

        The first call under ``key`` asks as usual and records its requests
        (:meth:`recording`); each later call under the same ``key`` first asks
        for all of the last call's requests at once (:meth:`preprocess`,
        inside the call: its round trip and bytes are metered, as one round
        trip awaited before the first opening), then takes them in order. If
        the call asks for something else (the sizes changed after a reveal,
        e.g. dropped clients), the rest of the batch is received and dropped
        and the call goes on asking as usual; its requests become the new
        trace under ``key``. ``key`` must be public and equal at every party
        (e.g. the rule, its arguments and the sizes): a party that batches
        other requests makes the dealer refuse. Inside :meth:`recording`, a
        preprocessed queue or another ``batched``, it does nothing. Keeps the
        last :data:`BATCH_KEYS` keys' traces; a trace whose material exceeds
        :data:`BATCH_MAX_BYTES` (held at once, unlike the two reused buffers
        of the online path) is asked for request by request.

        The headers of the batch go out without waiting, so the dealer
        computes and sends its answers while the call runs; the call waits for
        each answer when it first needs it."""
        import contextlib

        @contextlib.contextmanager
        def run():
            if self._trace is not None or self._queue or self._ahead is not None:
                yield
                return
            trace = self._batches.pop(key, None)
            self._trace, self._lenient = [], True
            ok = False
            try:
                # the whole trace's material is held at once (the online path reuses
                # two buffers): batch only what fits (the same decision at every
                # party, which holds the same trace)
                if trace and 8 * trace_words(trace) <= BATCH_MAX_BYTES:
                    self.preprocess(trace)
                    if self.mode == "process":
                        _comm.record_dealer_round(awaited=True)
                yield
                ok = True
            finally:
                trace, self._trace, self._lenient = self._trace, None, False
                if not ok:
                    try:
                        # the call's own error is the one to report; a comparison
                        # asked for ahead and never used is received and dropped too
                        ahead, self._ahead = self._ahead, None
                        if ahead is not None:
                            ahead[1].wait()
                        self._drain()
                    except Exception:
                        pass
                else:
                    self._drain()  # a shorter call than the last: the rest is received and dropped
                    self._batches[key] = trace
                    while len(self._batches) > BATCH_KEYS:
                        self._batches.pop(next(iter(self._batches)))
        return run()

    def _drain(self):
        # The dealer sends every answered request's corrections; a receive
        # dropped before they arrive would leave the dealer blocked in its send.
        queue, self._queue = self._queue, []
        for _, mat in queue:
            mat.wait()

    def wait_preprocessed(self):
        """Block until every preprocessed request's corrections have arrived."""
        for _, mat in self._queue:
            mat.wait()

    def preprocessed(self):
        """How many preprocessed requests are still waiting for their call."""
        return len(self._queue)

    def _issue(self, req, online, awaited, pooled, params, payload):
        kind, stream_words, total_words = req.kind, req.stream_words, req.total_words
        header_extra = req.header_extra
        # refuse here what the dealer would refuse: a clearer error, at the party that asked
        check_budget(stream_words, total_words, self.world_size,
                     {CMP: "comparison", FSS: "FSS comparison"}.get(kind) or f"{params.get('fn')} request")
        self.seq += 1
        # Reused buffers, two of them: a request in use and at most one asked
        # for ahead (prefetch); every caller is done with its material before
        # the request after next.
        # (pooled=False: a fresh buffer, for material held beside those two)
        words = self._pool.get(("mat", self.seq % 2), total_words) if pooled else torch.empty(
            max(total_words, 1), dtype=torch.long, device=self.device)[:total_words]
        corrected = corrected_party(self.seq, self.world_size)
        if kind == FSS:
            corrected = self.rank  # every party receives the correction words (the keys' common part)
        local_corr = None
        if self.mode == "local":
            # insecure test mode: party 0 computes the corrected party's words
            if self.rank == 0:
                local_corr = self.core.answer(kind, params).to(self.device)
                targets = range(1, self.world_size) if kind == FSS else [corrected] if corrected != 0 else []
                for r in targets:
                    if local_corr.numel():
                        self.tx.send(local_corr, r, group=self.group)
        else:
            # every party sends its own header: the dealer answers only if all agree
            self._send_request(_header(kind, self.seq, header_extra), payload)
            if online:
                # the corrected party waits for the answer, and the others for it
                _comm.record_dealer_round(awaited)
        # everything but the corrected party's corrected segment comes from the stream
        drawn = total_words if self.rank != corrected else stream_words
        if drawn:
            ops.prg_fill_(words[:drawn], self.key, self.seq, 0)
        if self.rank != corrected:
            return Material(words, stream_words, seq=self.seq)
        corr = words[stream_words:]
        if self.mode == "local":
            if local_corr is not None:
                corr.copy_(local_corr)
            elif corr.numel():
                self.tx.recv(corr, 0, group=self.group)
            return Material(words, stream_words, seq=self.seq)
        work = None
        if corr.numel():
            work = self.tx.irecv(corr, self.dealer_rank, group=self.group)
        _comm.record_dealer_bytes(corr.numel() * 8)
        return Material(words, stream_words, work, seq=self.seq)

    def has_prefetched(self):
        """Whether a comparison's material asked for ahead waits for its ``cmp``."""
        return self._ahead is not None

    def cmp_part(self, n, k, mode, payloads, self_sign=0, online=True):
        """Material for one part of a comparison split over several requests
        (:func:`pgkernels.protocols.compare.compare_shares`: consecutive
        requests correct different parties, so their corrections travel on
        different links). Its own buffer; ``online=False`` for the parts asked
        for together with the first (one round trip for all)."""
        if self._ahead is not None:
            raise RuntimeError("pgkernels: a comparison was asked for ahead; it cannot be split")
        params = check_cmp_params(n, k, mode, int(payloads), int(self_sign))
        lay = cmp_layout(*params)
        return self._request(CMP, params, lay.stream, lay.total, header_extra=params, online=online,
                             pooled=False), lay

    def cmp(self, n, k, mode, payloads, self_sign=0):
        """Material for one comparison of n elements (taken from a prefetch if one is waiting)."""
        params = check_cmp_params(n, k, mode, int(payloads), int(self_sign))
        if self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            if ahead[0] != params:
                raise RuntimeError(f"pgkernels: dealer material asked ahead for {ahead[0]} but the "
                                   f"next comparison is {params}")
            return ahead[1], ahead[2]
        lay = cmp_layout(*params)
        return self._request(CMP, params, lay.stream, lay.total, header_extra=params), lay

    def prefetch_cmp(self, n, k, mode, payloads, self_sign=0):
        """Ask now for the material of the next comparison, so that the dealer
        computes it while the parties run the current one's rounds. The next
        call must be ``cmp`` with the same arguments (checked)."""
        if self._ahead is not None:
            raise RuntimeError("pgkernels: only one comparison can be asked for ahead")
        params = check_cmp_params(n, k, mode, int(payloads), int(self_sign))
        lay = cmp_layout(*params)
        mat = self._request(CMP, params, lay.stream, lay.total, header_extra=params, online=False)
        self._ahead = (params, mat, lay)

    def fss(self, n, k):
        """Keys of one FSS comparison of n k-bit elements (2 parties; taken
        from a prefetch if one is waiting): Material whose words are
        ``[r share (n) | root seeds (2 n) | correction words]``."""
        params = ("fss",) + check_fss_params(n, k, self.world_size)
        if self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            if ahead[0] != params:
                raise RuntimeError(f"pgkernels: dealer material asked ahead for {ahead[0]} but the "
                                   f"next request is {params}")
            return ahead[1]
        return self._fss_request(params, online=True)

    def prefetch_fss(self, n, k):
        """Ask now for the keys of the next FSS comparison (see :meth:`prefetch_cmp`):
        key generation and transfer then leave the online phase."""
        if self._ahead is not None:
            raise RuntimeError("pgkernels: only one comparison can be asked for ahead")
        params = ("fss",) + check_fss_params(n, k, self.world_size)
        self._ahead = (params, self._fss_request(params, online=False), None)

    def _fss_request(self, params, online):
        _, n, k = params
        stream_words, total_words = fss_layout(n, k)
        return self._request(FSS, (n, k), stream_words, total_words, header_extra=(n, k), online=online)

    def crypten(self, req, awaited=False):
        """Material for one CrypTen-style request. ``awaited``: the caller
        waits for it before its next opening (the meter then counts the round
        trip as two rounds, see :func:`pgkernels.runtime.comm.record_dealer_round`)."""
        if self._ahead is not None:
            raise RuntimeError("pgkernels: a CrypTen op ran while a comparison was asked for ahead")
        stream_words, total_words = crypten_layout(req, self.world_size)
        payload, extra = None, ()
        if self.mode == "process":
            raw = encode_request(req)
            if len(raw) > MAX_PAYLOAD_BYTES:
                raise ValueError(f"dealer request: {len(raw)} bytes of JSON, over {MAX_PAYLOAD_BYTES}")
            payload = torch.frombuffer(bytearray(raw), dtype=torch.uint8).clone()
            extra = (len(raw),)
        return self._request(CRYPTEN, req, stream_words, total_words, header_extra=extra,
                             payload=payload, awaited=awaited)

    def stop(self):
        """Tell the dealer this party is done (every party does; the dealer stops when all have)."""
        if self.mode != "process":
            return
        self._drain()  # preprocessed material never used: take it, so the dealer is not left sending
        self._send_request(_header(STOP, self.seq + 1))
        works, self._sending = self._sending, []
        for w in works:
            w.wait()


def _refuse(seq, why):
    raise DealerError(f"pgkernels dealer: refusing request {seq}: {why}")


def _post_headers(tx, group, world_size):
    """Receives of every party's next header, posted ahead so that the headers
    land while the dealer still computes the current answer."""
    bufs = [torch.empty(HEADER_WORDS, dtype=torch.long) for _ in range(world_size)]
    return bufs, [tx.irecv(bufs[r], r, group=group) for r in range(world_size)]


def _receive_request(tx, group, world_size, seq, posted):
    """Every party's header (and payload); returns (kind, params) once all agree."""
    bufs, works = posted
    heads = []
    for r in range(world_size):
        works[r].wait()
        heads.append(tuple(int(v) for v in bufs[r]))
    for r in range(1, world_size):
        if heads[r] != heads[0]:
            _refuse(seq, f"the parties asked for different things (party 0: {describe_header(heads[0])}; "
                         f"party {r}: {describe_header(heads[r])}). A party may be trying to make the "
                         "dealer reveal another party's masks; nothing is answered")
    h = heads[0]
    kind = h[0]
    if h[1] != seq:
        _refuse(seq, f"the parties sent request number {h[1]}")
    try:
        if kind == STOP:
            if any(h[2:]):
                raise ValueError("a STOP header carries no parameters")
            return STOP, None
        if kind == CMP:
            if h[7]:
                raise ValueError("unused header words must be zero")
            return CMP, check_cmp_params(*h[2:7])
        if kind == FSS:
            if any(h[4:]):
                raise ValueError("unused header words must be zero")
            return FSS, check_fss_params(h[2], h[3], world_size)
        if kind == CRYPTEN:
            length = h[2]
            if any(h[3:]):
                raise ValueError("unused header words must be zero")
            if not 1 <= length <= MAX_PAYLOAD_BYTES:
                raise ValueError(f"a CrypTen request's JSON must be 1..{MAX_PAYLOAD_BYTES} bytes, "
                                 f"the parties announced {length}")
            raws = []
            for r in range(world_size):
                buf = torch.empty(length, dtype=torch.uint8)
                tx.recv(buf, r, group=group)
                raws.append(bytes(buf.numpy()))
            for r in range(1, world_size):
                if raws[r] != raws[0]:
                    _refuse(seq, f"the parties sent different CrypTen requests (party 0: "
                                 f"{raws[0][:200]!r}; party {r}: {raws[r][:200]!r}); nothing is answered")
            return CRYPTEN, parse_request(raws[0])
        raise ValueError(f"unknown request kind {kind}")
    except (ValueError, TypeError) as e:
        _refuse(seq, str(e))


def serve(world_size):
    """Dealer process main loop (rank ``world_size``); returns once every party sent STOP.

    Raises :class:`DealerError` (and so stops, which makes every party fail)
    on a request the parties did not all make identically, a malformed
    request, or one over the memory budget."""
    import crypten.communicator as cc

    group = cc.get().ttp_group
    tx = _comm.transport()
    keys = [new_key() for _ in range(world_size)]
    works = [tx.isend(keys[r], r, group=group) for r in range(world_size)]
    for w in works:
        w.wait()
    from .device import session_device

    core = DealerCore(keys, session_device())
    posted = _post_headers(tx, group, world_size)
    while True:
        seq = core.seq + 1
        kind, params = _receive_request(tx, group, world_size, seq, posted)
        if kind == STOP:
            return
        posted = _post_headers(tx, group, world_size)
        try:
            corr = core.answer(kind, params)
        except (ValueError, TypeError, RuntimeError) as e:
            _refuse(seq, str(e))
        if corr.numel():
            targets = range(world_size) if kind == FSS else [corrected_party(core.seq, world_size)]
            for r in targets:
                tx.send(corr, r, group=group)
