"""CrypTen communicators for pgkernels sessions.

:class:`PgkCommunicator` (every session) is CrypTen's
``DistributedCommunicator`` with pickle-free object messages:
``send_obj``/``recv_obj``/``broadcast_obj`` carry a JSON encoding
(:func:`encode_obj`) of the few types CrypTen sends through them -- None,
bool, int, float, str, lists, tuples, str-keyed dicts, ``torch.Size`` and
``torch.device`` (CrypTen's TTP requests and replies, "terminate", and the
sizes ``cryptensor(..., broadcast_size=True)`` broadcasts). Anything else is
refused with TypeError at the sender; the receiver refuses anything that is
not that encoding (a pickle included) with ValueError, and never runs code.
An object message is two messages: its length (8 bytes, at most
:data:`MAX_OBJ_BYTES`, checked before the body is received) and the body.

:class:`ChannelCommunicator` (``channel="encrypted"``) additionally sends
every tensor point-to-point over the session's
:class:`~pgkernels.runtime.channel.Channel`: ``all_reduce`` is "send to every
peer, combine locally in rank order" (same round count as gloo's all-reduce;
(n - 1) B bytes sent instead of the ring's 2 (n - 1) / n B), ``broadcast``
and ``scatter`` are sends from the root, ``gather``/``reduce`` sends to the
root, ``all_gather`` sends to every peer. Supported reductions: SUM and BXOR
(CrypTen uses no other). ``barrier`` stays gloo's (it carries no data).
pgkernels' meter (:mod:`pgkernels.runtime.comm`) counts both classes alike,
on plaintext sizes and by the same model as before.
"""

import json
import math

import torch
import torch.distributed as dist
from crypten.communicator import DistributedCommunicator
from crypten.communicator.communicator import _logging
from torch.distributed import ReduceOp

MAX_OBJ_BYTES = 1 << 20


# --- pickle-free object encoding ------------------------------------------------------

def _enc(obj, depth=0):
    if depth > 32:
        raise TypeError("send_obj: object nested too deeply")
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise TypeError(f"send_obj: non-finite float {obj!r}")
        return obj
    if isinstance(obj, torch.Size):
        return {"S": [int(s) for s in obj]}
    if isinstance(obj, torch.device):
        return {"D": str(obj)}
    if isinstance(obj, tuple):
        return {"t": [_enc(v, depth + 1) for v in obj]}
    if isinstance(obj, list):
        return {"l": [_enc(v, depth + 1) for v in obj]}
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise TypeError("send_obj: dict keys must be strings")
        return {"d": {k: _enc(v, depth + 1) for k, v in obj.items()}}
    raise TypeError(f"send_obj: cannot send a {type(obj).__module__}.{type(obj).__qualname__} "
                    "(only None, bool, int, float, str, list, tuple, str-keyed dict, torch.Size "
                    "and torch.device travel; pickles are not used)")


def _dec(v, depth=0):
    if depth > 33:
        raise ValueError("nested too deeply")
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, dict) and len(v) == 1:
        (tag, body), = v.items()
        if tag == "S" and isinstance(body, list) and all(
                isinstance(s, int) and not isinstance(s, bool) for s in body):
            return torch.Size(body)
        if tag == "D" and isinstance(body, str):
            return torch.device(body)
        if tag in ("t", "l") and isinstance(body, list):
            items = [_dec(x, depth + 1) for x in body]
            return tuple(items) if tag == "t" else items
        if tag == "d" and isinstance(body, dict):
            return {k: _dec(x, depth + 1) for k, x in body.items()}
    raise ValueError(f"unexpected element {str(v)[:80]!r}")


def _reject_constant(name):
    raise ValueError(f"non-finite number {name}")


def encode_obj(obj):
    """The bytes ``send_obj`` sends for ``obj`` (TypeError for unsupported types)."""
    return json.dumps(_enc(obj), separators=(",", ":"), allow_nan=False).encode()


def decode_obj(data, peer="the peer"):
    """Inverse of :func:`encode_obj`; ValueError naming ``peer`` for anything else."""
    try:
        text = bytes(data).decode("utf-8")
        return _dec(json.loads(text, parse_constant=_reject_constant))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ValueError(f"recv_obj: the message from {peer} is not a pgkernels object encoding "
                         f"(a pickle or garbage; refused, nothing was run): {e}") from None


# --- communicators ------------------------------------------------------------------

def _peer_name(rank, world_size):
    return f"party {rank}" if rank < world_size else f"the dealer (rank {rank})"


class PgkCommunicator(DistributedCommunicator):
    """CrypTen's communicator with JSON object messages (see the module docstring)."""

    pgk_tx = None  # the session's transport (set by session._setup_communicator)

    def _tx(self):
        if self.pgk_tx is None:
            from .channel import PlainTransport

            self.pgk_tx = PlainTransport()
        return self.pgk_tx

    def _send_bytes(self, data, dst, group=None):
        """One object message: its length, then its bytes (used by send_obj)."""
        group = self.main_group if group is None else group
        size = torch.tensor([len(data)], dtype=torch.long)
        body = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)
        tx = self._tx()
        works = [tx.isend(size, dst, group=group)]
        if len(data):
            works.append(tx.isend(body, dst, group=group))
        for w in works:
            w.wait()

    def _recv_bytes(self, src, group=None):
        group = self.main_group if group is None else group
        tx = self._tx()
        size = torch.empty(1, dtype=torch.long)
        tx.recv(size, src, group=group)
        n = int(size[0])
        if not 0 < n <= MAX_OBJ_BYTES:
            raise ValueError(f"recv_obj: {_peer_name(src, self.world_size)} announced an object of "
                             f"{n} bytes (allowed: 1..{MAX_OBJ_BYTES})")
        body = torch.empty(n, dtype=torch.uint8)
        tx.recv(body, src, group=group)
        return bytes(body.numpy())

    @_logging
    def send_obj(self, obj, dst, group=None):
        """Sends ``obj`` (JSON-encodable types only, see :func:`encode_obj`) to ``dst``."""
        self._send_bytes(encode_obj(obj), dst, group)

    @_logging
    def recv_obj(self, src, group=None):
        """Receives an object from ``src``; refuses anything but the JSON encoding."""
        return decode_obj(self._recv_bytes(src, group), _peer_name(src, self.world_size))

    @_logging
    def broadcast_obj(self, obj, src, group=None):
        """``src`` sends ``obj`` to every other member of ``group``; all return it."""
        group = self.main_group if group is None else group
        me = self.get_rank()
        if me == src:
            assert obj is not None, "src party must provide obj for broadcast"
            data = encode_obj(obj)
            for peer in dist.get_process_group_ranks(group):
                if peer != me:
                    self._send_bytes(data, peer, group)
            return obj
        return decode_obj(self._recv_bytes(src, group), _peer_name(src, self.world_size))


def _combine(op):
    if op == ReduceOp.SUM:
        return lambda acc, t: acc.add_(t)
    if op == ReduceOp.BXOR:
        return lambda acc, t: acc.bitwise_xor_(t)
    raise ValueError(f"the encrypted communicator supports SUM and BXOR reductions, got {op}")


class ChannelCommunicator(PgkCommunicator):
    """Every tensor point-to-point over the encrypted channel (see the module docstring)."""

    def _members(self, group=None):
        group = self.main_group if group is None else group
        return dist.get_process_group_ranks(group)

    @_logging
    def send(self, tensor, dst):
        self._tx().send(tensor.data, dst)

    @_logging
    def recv(self, tensor, src=None):
        if src is None:
            raise ValueError("recv: the encrypted communicator needs src")
        result = tensor.clone()
        self._tx().recv(result.data, src)
        return result

    @_logging
    def isend(self, tensor, dst):
        return self._tx().isend(tensor.data, dst)

    @_logging
    def irecv(self, tensor, src=None):
        if src is None:
            raise ValueError("irecv: the encrypted communicator needs src")
        return self._tx().irecv(tensor.data, src)

    def _exchange(self, mine, op):
        """Every party's version of each tensor in ``mine``, combined in rank order."""
        me, n, tx = self.get_rank(), self.get_world_size(), self._tx()
        combine = _combine(op)
        works, got = [], {}
        for i, t in enumerate(mine):
            t = t.data.contiguous()
            for peer in range(n):
                if peer == me:
                    continue
                buf = torch.empty_like(t)
                works.append(tx.isend(t, peer))
                works.append(tx.irecv(buf, peer))
                got[(i, peer)] = buf
        for w in works:
            w.wait()
        out = []
        for i, t in enumerate(mine):
            parts = [t.data if r == me else got[(i, r)] for r in range(n)]
            acc = parts[0].clone()
            for p in parts[1:]:
                combine(acc, p)
            out.append(acc)
        return out

    @_logging
    def all_reduce(self, input, op=ReduceOp.SUM, batched=False):
        if batched:
            assert isinstance(input, list), "batched reduce input must be a list"
            return self._exchange(input, op)
        assert torch.is_tensor(input.data), "unbatched input for reduce must be a torch tensor"
        return self._exchange([input], op)[0]

    @_logging
    def reduce(self, input, dst, op=ReduceOp.SUM, batched=False):
        me, n, tx = self.get_rank(), self.get_world_size(), self._tx()
        combine = _combine(op)
        items = input if batched else [input]
        if batched:
            assert isinstance(input, list), "batched reduce input must be a list"
        if me != dst:
            works = [tx.isend(t.data.contiguous(), dst) for t in items]
            for w in works:
                w.wait()
            return None
        bufs = {(i, r): torch.empty_like(t.data) for i, t in enumerate(items) for r in range(n) if r != me}
        works = [tx.irecv(b, r) for (i, r), b in bufs.items()]
        for w in works:
            w.wait()
        out = []
        for i, t in enumerate(items):
            acc = None
            for r in range(n):
                part = t.data if r == me else bufs[(i, r)]
                if acc is None:
                    acc = part.clone()
                else:
                    combine(acc, part)
            out.append(acc)
        return out if batched else out[0]

    @_logging
    def gather(self, tensor, dst):
        me, n, tx = self.get_rank(), self.get_world_size(), self._tx()
        if me != dst:
            tx.send(tensor.data.contiguous(), dst)
            return [None]
        result = []
        works = []
        for r in range(n):
            buf = torch.empty(size=tensor.size(), dtype=torch.long, device=tensor.data.device)
            if r == me:
                buf.copy_(tensor.data)
            else:
                works.append(tx.irecv(buf, r))
            result.append(buf)
        for w in works:
            w.wait()
        return result

    @_logging
    def all_gather(self, tensor):
        me, n, tx = self.get_rank(), self.get_world_size(), self._tx()
        t = tensor.data.contiguous()
        result, works = [], []
        for r in range(n):
            buf = torch.empty(size=tensor.size(), dtype=torch.long, device=tensor.data.device)
            if r == me:
                buf.copy_(t)
            else:
                works.append(tx.isend(t, r))
                works.append(tx.irecv(buf, r))
            result.append(buf)
        for w in works:
            w.wait()
        return result

    @_logging
    def scatter(self, scatter_list, src, size=None, device=None):
        me, n, tx = self.get_rank(), self.get_world_size(), self._tx()
        if src != me:
            if size is None:
                size = scatter_list[me].size()
            if device is None:
                try:
                    device = scatter_list[me].device
                except Exception:
                    pass
            tensor = torch.empty(size=size, dtype=torch.long, device=device)
            tx.recv(tensor.data, src)
            return tensor
        scatter_list = [s.data for s in scatter_list]
        works = [tx.isend(scatter_list[r].contiguous(), r) for r in range(n) if r != me]
        for w in works:
            w.wait()
        return scatter_list[me]

    @_logging
    def broadcast(self, input, src, group=None, batched=False):
        me, tx = self.get_rank(), self._tx()
        peers = [r for r in self._members(group) if r != me]
        items = input if batched else [input]
        if batched:
            assert isinstance(input, list), "batched reduce input must be a list"
        else:
            assert torch.is_tensor(input.data), "unbatched input for reduce must be a torch tensor"
        works = []
        for t in items:
            if me == src:
                works += [tx.isend(t.data.contiguous(), r) for r in peers]
            else:
                works.append(tx.irecv(t.data, src))
        for w in works:
            w.wait()
        return input


class _TTPDist:
    """``torch.distributed`` as CrypTen's TTP provider sees it over the
    encrypted channel: its generator seeds go through the channel."""

    def __init__(self, tx):
        self._tx = tx

    def isend(self, tensor, dst, group=None, tag=0):
        return self._tx.isend(tensor, dst)

    def irecv(self, tensor, src=None, group=None, tag=0):
        return self._tx.irecv(tensor, src)

    def __getattr__(self, name):
        return getattr(dist, name)


class _HostStagedDist:
    """``torch.distributed`` as CrypTen's communicator sees it in a CUDA
    session: gloo's point-to-point, reduce, gather and scatter are CPU-only,
    so every tensor on a GPU is copied to host memory, sent or reduced there,
    and copied back (all-reduce and broadcast too, for one path)."""

    @staticmethod
    def _h(t):
        return t if t is None or t.device.type == "cpu" else t.detach().contiguous().cpu()

    def _back(self, work, pairs, async_op):
        # pairs: (host, gpu) tensors to copy back once the work is done
        pairs = [(h, g) for h, g in pairs if g is not None and g.device.type != "cpu"]
        if async_op:
            return _CopyBackWork(work, pairs)
        for h, g in pairs:
            g.copy_(h)
        return work

    def send(self, tensor, dst, group=None, tag=0):
        return dist.send(self._h(tensor), dst, group=group, tag=tag)

    def recv(self, tensor, src=None, group=None, tag=0):
        h = self._h(tensor)
        r = dist.recv(h, src, group=group, tag=tag)
        self._back(None, [(h, tensor)], False)
        return r

    def isend(self, tensor, dst, group=None, tag=0):
        h = self._h(tensor)
        return _CopyBackWork(dist.isend(h, dst, group=group, tag=tag), [], keep=h)

    def irecv(self, tensor, src=None, group=None, tag=0):
        h = self._h(tensor)
        return self._back(dist.irecv(h, src, group=group, tag=tag), [(h, tensor)], True)

    def all_reduce(self, tensor, op=ReduceOp.SUM, group=None, async_op=False):
        h = self._h(tensor)
        return self._back(dist.all_reduce(h, op=op, group=group, async_op=async_op), [(h, tensor)], async_op)

    def reduce(self, tensor, dst, op=ReduceOp.SUM, group=None, async_op=False):
        h = self._h(tensor)
        return self._back(dist.reduce(h, dst, op=op, group=group, async_op=async_op), [(h, tensor)], async_op)

    def broadcast(self, tensor, src, group=None, async_op=False):
        h = self._h(tensor)
        return self._back(dist.broadcast(h, src, group=group, async_op=async_op), [(h, tensor)], async_op)

    def gather(self, tensor, gather_list=None, dst=0, group=None, async_op=False):
        hl = [self._h(t) for t in gather_list] if gather_list else gather_list
        w = dist.gather(self._h(tensor), hl, dst, group=group, async_op=async_op)
        return self._back(w, list(zip(hl or [], gather_list or [])), async_op)

    def all_gather(self, tensor_list, tensor, group=None, async_op=False):
        hl = [self._h(t) for t in tensor_list]
        w = dist.all_gather(hl, self._h(tensor), group=group, async_op=async_op)
        return self._back(w, list(zip(hl, tensor_list)), async_op)

    def scatter(self, tensor, scatter_list=None, src=0, group=None, async_op=False):
        h = self._h(tensor)
        sl = [self._h(t) for t in scatter_list] if scatter_list else scatter_list
        return self._back(dist.scatter(h, sl, src, group=group, async_op=async_op), [(h, tensor)], async_op)

    def __getattr__(self, name):
        return getattr(dist, name)


class _CopyBackWork:
    def __init__(self, work, pairs, keep=None):
        self._work, self._pairs, self._keep = work, pairs, keep

    def wait(self, timeout=None):
        if self._work is not None:
            self._work.wait() if timeout is None else self._work.wait(timeout)
            for h, g in self._pairs:
                g.copy_(h)
            self._work = self._pairs = self._keep = None
        return True

    def is_completed(self):
        return self._work is None or self._work.is_completed()


def stage_crypten_through_host(on=True):
    """Route CrypTen's communicator through host memory (CUDA sessions over gloo); off restores it."""
    from crypten.communicator import distributed_communicator

    distributed_communicator.dist = _HostStagedDist() if on else dist


def route_crypten_ttp(tx):
    """Send CrypTen TTP's seed exchange (raw ``dist.isend``/``irecv`` in its
    provider module) through ``tx``; ``tx=None`` restores torch.distributed."""
    from crypten.mpc.provider import ttp_provider

    ttp_provider.dist = dist if tx is None else _TTPDist(tx)
