"""Party-to-party communication for pgkernels protocols, and a meter.

Protocols open values with :func:`exchange`: one call is one communication
round in which every compute party sends its words to every other party and
combines what it receives (SUM for arithmetic shares mod 2^64, XOR for bit
shares): (n - 1) * B bytes sent per party for B bytes of shares. The meter
counts rounds and the bytes *sent* by this party, using the same model for
pgkernels' exchanges and for CrypTen's own communicator calls (wrapped by
:func:`install_meter`), so the two can be compared in one run:

* all-reduce of B bytes among n parties: 2 (n - 1) / n * B sent (ring);
* broadcast: the source sends (n - 1) * B; send/isend: B; gather/reduce: B
  from every non-root; all_gather: (n - 1) * B; recv/irecv: nothing;
* one call = one round, whatever the number of tensors it batches.

Bytes from the dealer to a party are counted apart (``dealer_bytes``).

Rounds include the online dealer round trip: a request for correlated
randomness made when an op needs it (every party's header to the pgkernels
dealer, or party 0's request to CrypTen's TTP, and the dealer's answer) is
counted apart in ``dealer_rounds`` and in the rounds as what it costs on the
clock: two rounds (out and back) when the op awaits the answer before it
sends anything else -- CrypTen's ops, under the pgkernels dealer or CrypTen's
TTP, take a whole triple before their opening -- and one when the answer is
awaited only after the op's next opening, which runs meanwhile (pgkernels'
comparisons, truncation, Gram matrix and square sums). A pgkernels comparison asked
for ahead (``prefetch``, while the previous comparison's rounds run) adds no
round; CrypTen's TFP and pgkernels' insecure local dealer make no request.
(On a network where the dealer is as close as the peer, that overlapped round
trip adds one latency to the opening's.)
Checked against the clock over the simulated link
(:mod:`pgkernels.runtime.link`, ``bench/cost_check.py``): at 10 and 50 ms
one-way latency a comparison, a sorting network, ranks, a tournament and
Krum each take their metered rounds x the latency (+ bytes / bandwidth),
within 20%; CrypTen's ``x < 0`` (8 triples, each awaited, and 8 openings:
24 rounds) takes 22 to 26 latencies, a multiplication 3 (under CrypTen's TTP and
under the pgkernels dealer alike).

Sizes are plaintext sizes and the model is the same whatever carries the
messages: with ``channel="encrypted"`` (:mod:`pgkernels.runtime.channel`)
each message is one AES-GCM record, 16 bytes longer on the wire, and
CrypTen's all-reduce runs point-to-point ((n - 1) B actually sent instead of
the ring's 2 (n - 1) / n B, the same for 2 parties); the meter still counts
by the model above, so plain and encrypted runs report the same numbers.
"""

import dataclasses
import sys

import torch


@dataclasses.dataclass
class CommStats:
    rounds: int = 0
    bytes_sent: float = 0.0
    dealer_bytes: float = 0.0
    dealer_requests: int = 0
    dealer_rounds: int = 0

    def snapshot(self):
        return dataclasses.replace(self)

    def since(self, before):
        return CommStats(
            self.rounds - before.rounds,
            self.bytes_sent - before.bytes_sent,
            self.dealer_bytes - before.dealer_bytes,
            self.dealer_requests - before.dealer_requests,
            self.dealer_rounds - before.dealer_rounds,
        )

    def as_dict(self):
        return dataclasses.asdict(self)


STATS = CommStats()


def reset_stats():
    global STATS
    STATS.rounds = 0
    STATS.bytes_sent = 0.0
    STATS.dealer_bytes = 0.0
    STATS.dealer_requests = 0
    STATS.dealer_rounds = 0


def _comm():
    import crypten.communicator as cc

    return cc.get()


def transport():
    """The session's point-to-point transport: the encrypted
    :class:`~pgkernels.runtime.channel.Channel`, or gloo in the clear."""
    tx = getattr(_comm(), "pgk_tx", None)
    if tx is None:
        from .channel import PlainTransport

        tx = PlainTransport()
    return tx


def world_size():
    return _comm().get_world_size()


def rank():
    return _comm().get_rank()


def _nbytes(t):
    return t.numel() * t.element_size()


_INBOX = {}


def _inbox_buffer(slot, like):
    """Receive buffers reused between rounds (multi-MB allocations fault pages)."""
    buf = _INBOX.get(slot)
    n = like.numel()
    if buf is None or buf.numel() < n or buf.dtype != like.dtype:
        buf = torch.empty(max(n, 1), dtype=like.dtype)
        _INBOX[slot] = buf
    return buf[:n].view(like.shape)


def _as_list(t):
    if t is None:
        return []
    return list(t) if isinstance(t, (list, tuple)) else [t]


def exchange(sum_tensor=None, xor_tensor=None):
    """One round: every party contributes its words; all get SUM / XOR of them.

    ``sum_tensor`` / ``xor_tensor``: a tensor or a list of tensors (any integer
    dtype: narrow dtypes carry k-bit values mod 2^k). Each party sends its
    words straight to every other party (point-to-point; gloo's all-reduce
    costs about 1.3 ms per call on loopback against 0.2 ms for a send/receive
    pair), then adds or XORs what it received. Returns the arguments, which are
    overwritten in place. Over the encrypted channel each message is one
    AES-GCM record (16 bytes more on the wire; the meter counts plaintext).
    """
    c = _comm()
    tx = transport()
    n = c.get_world_size()
    me = c.get_rank()
    group = c.main_group
    jobs = [(t, False) for t in _as_list(sum_tensor) if t.numel()]
    jobs += [(t, True) for t in _as_list(xor_tensor) if t.numel()]
    works, inbox = [], []
    total = 0
    for t, is_xor in jobs:
        total += _nbytes(t)
        # GPU shares travel through host memory (gloo); one host copy serves every peer
        src = t if t.device.type == "cpu" else t.detach().contiguous().cpu()
        for peer in range(n):
            if peer == me:
                continue
            buf = _inbox_buffer(len(inbox), src)
            works.append(tx.isend(src, peer, group=group))
            works.append(tx.irecv(buf, peer, group=group))
            inbox.append((t, buf, is_xor))
    for w in works:
        w.wait()
    for t, buf, is_xor in inbox:
        if t.device.type != "cpu":
            buf = buf.to(t.device)
        if is_xor:
            t.bitwise_xor_(buf)
        else:
            t.add_(buf)
    STATS.rounds += 1
    STATS.bytes_sent += total * (n - 1)
    return sum_tensor, xor_tensor


def record_dealer_bytes(nbytes):
    STATS.dealer_requests += 1
    STATS.dealer_bytes += nbytes


def record_dealer_round(awaited=False):
    """One online round trip to the dealer (request out, answer back): one
    round when the caller awaits the answer only after its next opening (which
    runs meanwhile: pgkernels' protocols), two when ``awaited`` before it
    (CrypTen's ops take a whole triple before they open anything)."""
    STATS.rounds += 2 if awaited else 1
    STATS.dealer_rounds += 1


# --- meter for CrypTen's own communicator -----------------------------------

_METERED = ("all_reduce", "broadcast", "send", "isend", "recv", "irecv", "gather",
            "all_gather", "scatter", "reduce", "send_obj", "recv_obj", "broadcast_obj")


def _tensor_bytes(x):
    if isinstance(x, (list, tuple)):
        return sum(_tensor_bytes(t) for t in x)
    if torch.is_tensor(x):
        return _nbytes(x)
    if hasattr(x, "_tensor") and torch.is_tensor(getattr(x, "_tensor")):  # CUDALongTensor
        return _nbytes(x._tensor)
    return 0


def _account(self, name, args, kwargs, result):
    n = self.get_world_size()
    me = self.get_rank()
    group = kwargs.get("group")
    if group is None:
        # positional group: recv_obj(src, group); broadcast/send_obj/broadcast_obj(x, peer, group)
        pos = 1 if name == "recv_obj" else 2 if name in ("broadcast", "send_obj", "broadcast_obj") else None
        if pos is not None and len(args) > pos:
            group = args[pos]
    dealer_group = group is not None and group is not self.main_group
    if dealer_group:
        # Dealer traffic: what a compute party receives from the dealer; a
        # request sent to CrypTen's TTP (party 0's send_obj) is a round trip.
        if me < n and name == "send_obj":
            record_dealer_round(awaited=True)
        if me < n and name in ("broadcast", "recv", "irecv", "recv_obj"):
            b = _tensor_bytes(args[0]) if name != "recv_obj" else sys.getsizeof(result)
            record_dealer_bytes(b)
        return
    if name in ("recv", "irecv", "recv_obj"):
        return
    STATS.rounds += 1
    if name == "all_reduce":
        STATS.bytes_sent += _tensor_bytes(args[0]) * 2 * (n - 1) / n
    elif name in ("broadcast", "broadcast_obj"):
        src = args[1]
        if src == me:
            b = _tensor_bytes(args[0]) if name == "broadcast" else sys.getsizeof(args[0])
            STATS.bytes_sent += b * (n - 1)
    elif name in ("send", "isend"):
        STATS.bytes_sent += _tensor_bytes(args[0])
    elif name == "send_obj":
        STATS.bytes_sent += sys.getsizeof(args[0])
    elif name in ("gather", "reduce"):
        if args[1] != me:
            STATS.bytes_sent += _tensor_bytes(args[0])
    elif name == "all_gather":
        STATS.bytes_sent += _tensor_bytes(args[0]) * (n - 1)
    elif name == "scatter":
        if args[1] == me:
            STATS.bytes_sent += sum(_tensor_bytes(t) for i, t in enumerate(args[0]) if i != me)


def install_meter(cls=None):
    """Wrap the communicator class in use (``type(crypten.communicator.get())``
    unless given) so that its traffic lands in STATS. Every method is wrapped
    once: a class that inherits wrapped methods gets wrappers of the originals."""
    if cls is None:
        cls = type(_comm())
    if cls.__dict__.get("_pgk_metered", False):
        return
    for name in _METERED:
        orig = getattr(cls, name)
        while hasattr(orig, "_pgk_orig"):
            orig = orig._pgk_orig

        def wrapper(self, *args, _orig=orig, _name=name, **kwargs):
            result = _orig(self, *args, **kwargs)
            _account(self, _name, args, kwargs, result)
            return result

        wrapper.__name__ = name
        wrapper._pgk_orig = orig
        setattr(cls, name, wrapper)
    cls._pgk_metered = True
