"""Long-lived MPC aggregation servers driven from a coordinator process.

``AggregationServers`` starts the compute parties (and the dealer) once, with
:func:`pgkernels.launch`, and then serves any number of aggregation requests:

1. The coordinator (standing in for the clients) encodes the (n, d) updates in
   CrypTen's fixed point and splits them into additive shares mod 2^64 with a
   fresh AES-CTR key per request (``secrets``); server i receives only share
   i, over its own authenticated local connection.
2. The servers run the aggregator from :mod:`pgkernels.defenses` on the shares
   and send back only their shares of the result (the aggregate, and the
   selection vector when the caller asks for it).
3. The coordinator adds the shares and decodes.

No server ever sees an update or the aggregate in the clear. The result goes
to the coordinator, which plays the model owner. Revealing the selected
clients (``reveal_selection=True``) is the caller's choice: the federated lab
uses it for detection metrics.

Clients that share their own updates (``aggregate_masked``, used by the Flower
integration): client i draws one 16-byte seed per server, seals seed j to server
j's X25519 key (:mod:`.sealing`) and sends ``masked_i = enc(u_i) - sum_j
PRG(seed_j)`` (AES-CTR) with the sealed seeds through any relay (the
coordinator). Server j's share of u_i is ``PRG(seed_j)``, plus ``masked_i`` for
server 0. The coordinator only ever holds uniformly random ``masked_i`` and boxes
it cannot open; any ``world_size - 1`` servers together with it learn nothing.
A box that does not open, or a masked vector of the wrong shape, marks that
client malformed: ``on_malformed="raise"`` (default) ends the call with
:class:`MalformedShareError` naming the clients, ``"drop"`` aggregates the others
(all servers agree on the set before any MPC starts).

Servers on several hosts: start each with ``python -m pgkernels.party --rank R
--world-size K --rendezvous tcp://H:P --run pgkernels.serving.service:serve``
(and the dealer with ``--role dealer``), with ``PGKERNELS_COORDINATOR=HOST:PORT``
and ``PGKERNELS_AUTHKEY=<hex>`` in their environment, and connect the
coordinator with ``AggregationServers(world_size=K, external=(HOST, PORT),
authkey=bytes.fromhex(...))``.

Failures: a server that raises, dies or hangs makes ``aggregate`` raise
``PartyError``/``TimeoutError`` within ``timeout`` seconds; the other
processes are killed, nothing hangs.
"""

import inspect
import os
import secrets
import threading
import time
from multiprocessing.connection import Client, Listener

import numpy as np
import torch

from ..runtime.inputs import FRAC_BITS, MAX_ABS  # noqa: F401  (MAX_ABS: the |update| bound, re-exported)
from .client import mask, seal_context  # noqa: F401  (the client side, re-exported)

# aggregator name -> (function name in pgkernels.defenses, how to read its selection)
AGGREGATORS = {
    "fedavg": ("fedavg", None),
    "median": ("median", None),
    "trimmed_mean": ("trimmed_mean", None),
    "norm_clip": ("norm_clip", None),
    "krum": ("krum", "onehot"),
    "multi_krum": ("multi_krum", "bits"),
    "bulyan": ("bulyan", "rows"),
    "fltrust": ("fltrust", None),
    "flame": ("flame", "bits"),
    "auror": ("auror", "bits"),
}


def encode(U, name="updates"):
    """float array -> int64 fixed point, refusing NaN/inf and out-of-range values."""
    from ..runtime.inputs import encode as _encode

    return _encode(U, name, FRAC_BITS)


def split(enc, parties):
    """Additive shares mod 2^64 of an int64 tensor, as full tensors (fresh AES-CTR keys)."""
    from ..runtime.inputs import split as _split

    return [s.tensor() for s in _split(enc, parties)]


class MalformedShareError(ValueError):
    """Some clients' shares do not open or have the wrong shape; ``.clients`` lists them."""

    def __init__(self, clients, detail=""):
        self.clients = list(clients)
        super().__init__(f"malformed shares from clients {self.clients}{': ' + detail if detail else ''}")


def _open_shares(priv, rank, boxes, aads, d, masked):
    """This server's (n, d) shares from sealed seeds; indices of boxes that do not open."""
    from ..runtime.dealer import stream

    from .sealing import SealError, open_sealed

    n = len(boxes)
    out = torch.zeros(n, d, dtype=torch.long)
    bad = []
    for i in range(n):
        try:
            seed = open_sealed(priv, boxes[i], seal_context(aads[i], rank))
            if len(seed) != 16:
                raise SealError("seed of the wrong length")
        except SealError:
            bad.append(i)
            continue
        out[i] = stream(torch.frombuffer(bytearray(seed), dtype=torch.uint8), 0, d)
    if masked is not None:
        out += torch.from_numpy(masked)
    return out, bad


def _connect(address, authkey, wait=None):
    """Connect to the coordinator, retrying while it is not listening yet: servers
    on other hosts may start before it (``PGKERNELS_CONNECT_TIMEOUT`` s, default 300)."""
    wait = float(os.environ.get("PGKERNELS_CONNECT_TIMEOUT", 300)) if wait is None else wait
    deadline = time.monotonic() + wait
    while True:
        try:
            return Client(tuple(address), authkey=authkey)
        except (ConnectionRefusedError, FileNotFoundError):
            if time.monotonic() > deadline:
                raise ConnectionError(f"no coordinator listening at {address[0]}:{address[1]} "
                                      f"after {wait:.0f} s") from None
            time.sleep(0.5)


def _server(address, authkey):
    """Runs in every compute party: serve requests until the coordinator says stop."""
    import pgkernels
    from pgkernels import defenses
    from pgkernels.protocols import _shares
    from pgkernels.runtime import comm

    from .sealing import new_keypair

    priv, pub = new_keypair()
    conn = _connect(address, authkey)
    conn.send((comm.rank(), pub))
    served = 0
    pending = None
    while True:
        msg = conn.recv()
        if msg is None:
            conn.close()
            return served
        # tensors travel as numpy arrays: torch's pickling would pass shared-memory fds
        op = msg[0]
        if op == "open":  # phase 1 of aggregate_masked: open the seeds, report bad boxes
            _, boxes, aads, d, masked = msg
            pending, bad = _open_shares(priv, comm.rank(), boxes, aads, d, masked)
            conn.send(("checked", bad))
            continue
        if op == "discard":
            pending = None
            continue
        if op == "run":  # phase 2: aggregate the rows every server could open
            _, name, kwargs, keep, extra = msg
            if pending is None:
                raise RuntimeError("'run' without a preceding 'open'")
            share, pending = pending[torch.as_tensor(keep, dtype=torch.long)].contiguous(), None
        else:
            _, name, kwargs, share, extra = msg
            share = torch.from_numpy(share)
        try:
            fn_name, sel_kind = AGGREGATORS[name]
            fn = getattr(defenses, fn_name)
            U = _shares.like_shape(share, 2 ** FRAC_BITS)
            kw = dict(kwargs)
            for k, v in extra.items():  # shared extra inputs (e.g. FLTrust's server update)
                kw[k] = _shares.like_shape(torch.from_numpy(v), 2 ** FRAC_BITS)
            pgkernels.reset_stats()
            t0 = time.perf_counter()
            if sel_kind is not None:
                out, sel = fn(U, return_selection=True, **kw)
                sel_share = sel.share.numpy()
            else:
                out, sel_share = fn(U, **kw), None
            stats = pgkernels.comm_stats().as_dict()
            stats["seconds"] = time.perf_counter() - t0
            conn.send(("ok", out.share.numpy(), sel_share, stats))
        except Exception as e:  # noqa: BLE001 -- reported to the coordinator, then re-raised
            import traceback

            conn.send(("error", traceback.format_exc(), None, None))
            raise e
        served += 1


def serve():
    """Aggregation-server entry for separately started parties (several hosts).

    Run as ``python -m pgkernels.party --rank R --world-size K --rendezvous
    tcp://H:P --run pgkernels.serving.service:serve`` with
    ``PGKERNELS_COORDINATOR=HOST:PORT`` and ``PGKERNELS_AUTHKEY=<hex>`` set; the
    coordinator is ``AggregationServers(external=(HOST, PORT), authkey=...)``.
    """
    addr = os.environ.get("PGKERNELS_COORDINATOR")
    key = os.environ.get("PGKERNELS_AUTHKEY")
    if not addr or not key:
        raise RuntimeError("serve() needs PGKERNELS_COORDINATOR=HOST:PORT and PGKERNELS_AUTHKEY=<hex>")
    host, _, port = addr.rpartition(":")
    return _server((host, int(port)), bytes.fromhex(key))


class AggregationServers:
    """``with AggregationServers(world_size=2) as servers: agg, kept = servers.aggregate("krum", U, num_malicious=4)``.

    By default the servers and the dealer are started here, on this host. With
    ``external=(host, port)`` nothing is started: the coordinator listens there
    (authenticated with ``authkey``) for ``world_size`` servers started
    elsewhere with :func:`serve`.
    """

    def __init__(self, world_size=2, dealer="ttp", timeout=600.0, session_timeout=24 * 3600.0,
                 external=None, authkey=None):
        if not isinstance(world_size, int) or world_size < 2:
            raise ValueError(f"world_size must be an int >= 2, got {world_size!r}")
        if external is not None and not (isinstance(authkey, bytes) and len(authkey) >= 16):
            raise ValueError("external servers need authkey: bytes of length >= 16")
        self.world_size = world_size
        self.dealer = dealer
        self.timeout = float(timeout)
        self.session_timeout = float(session_timeout)
        self.external = external
        self.authkey = authkey
        self.conns = None
        self.public_keys = None
        self.last_stats = None
        self._error = None
        self._thread = None

    # -- lifecycle ---------------------------------------------------------------
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self):
        from ..runtime.launch import launch

        if self.external is not None:
            self._listener = Listener(tuple(self.external), authkey=self.authkey)
        else:
            authkey = secrets.token_bytes(32)
            self._listener = Listener(("127.0.0.1", 0), authkey=authkey)
            address = self._listener.address

            def run():
                try:
                    launch(_server, world_size=self.world_size, dealer=self.dealer,
                           timeout=self.session_timeout, args=(address, authkey))
                except BaseException as e:  # noqa: BLE001 -- surfaced by aggregate()
                    self._error = e

            self._thread = threading.Thread(target=run, daemon=True, name="pgkernels-servers")
            self._thread.start()
        conns, keys = {}, {}
        deadline = time.monotonic() + self.timeout
        self._listener._listener._socket.settimeout(1.0)
        while len(conns) < self.world_size:
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {self.world_size} aggregation servers did not connect "
                                   f"within {self.timeout} s")
            try:
                c = self._listener.accept()
            except OSError:  # socket timeout (or a failed handshake): look at the servers again
                continue
            if not c.poll(self.timeout):
                c.close()
                continue
            rank, pub = c.recv()
            if not (isinstance(rank, int) and 0 <= rank < self.world_size) or rank in conns:
                c.close()
                raise RuntimeError(f"aggregation server announced an invalid or duplicate rank {rank!r}")
            conns[rank], keys[rank] = c, pub
        self.conns = [conns[r] for r in range(self.world_size)]
        self.public_keys = [keys[r] for r in range(self.world_size)]

    def close(self):
        if self.conns is not None:
            for c in self.conns:
                try:
                    c.send(None)
                    c.close()
                except OSError:
                    pass
            self.conns = None
        if getattr(self, "_thread", None) is not None:
            self._thread.join(timeout=30)
        if getattr(self, "_listener", None) is not None:
            self._listener.close()

    @property
    def address(self):
        """Where the coordinator listens (for servers started with :func:`serve`)."""
        return self._listener.address

    def _check_alive(self):
        if self._error is not None:
            raise self._error
        if self._thread is not None and not self._thread.is_alive() and self.conns is None:
            raise RuntimeError("the aggregation servers stopped before connecting")

    # -- requests ----------------------------------------------------------------
    def aggregate(self, name, U, reveal_selection=True, **kwargs):
        """Aggregate the (n, d) updates U with ``pgkernels.defenses.<name>`` in MPC.

        Returns ``(aggregate (d,) float64, kept client indices or None)``; the
        indices only for rules that select clients and with
        ``reveal_selection=True``. kwargs go to the aggregator (those it does
        not take are ignored, so one config can serve every rule); array-valued
        ones (FLTrust's ``server_update``) are secret-shared like the updates.
        """
        kw, extra = self._prepare(name, kwargs)
        U = np.asarray(U, dtype=np.float64)
        if U.ndim != 2:
            raise ValueError(f"updates must be 2-D (clients x parameters), got shape {U.shape}")
        shares = split(encode(U), self.world_size)
        for r, c in enumerate(self.conns):
            c.send(("aggregate", name, kw, shares[r].numpy(), {k: v[r].numpy() for k, v in extra.items()}))
        return self._finish(name, reveal_selection)

    def aggregate_masked(self, name, masked, boxes, aads, on_malformed="raise", reveal_selection=True,
                         d=None, min_keep=1, **kwargs):
        """Aggregate updates the clients secret-shared themselves (see :func:`mask`).

        ``masked``: n masked vectors (int64, length d each); ``boxes[i][r]``:
        client i's sealed seed for server r; ``aads[i]``: the context bytes
        client i sealed under; ``d``: the expected length (default: the first
        well-formed vector's). Returns ``(aggregate, kept, malformed)``: kept
        as in :meth:`aggregate` but indexing the original n clients, malformed
        the clients dropped (only with ``on_malformed="drop"``). If fewer than
        ``min_keep`` clients remain, raises ``RuntimeError`` (nothing is
        computed). A callable keyword value is called with the number of
        clients kept (e.g. ``to_keep=lambda n: n - f``).
        """
        if on_malformed not in ("raise", "drop"):
            raise ValueError(f"on_malformed must be 'raise' or 'drop', got {on_malformed!r}")
        n = len(masked)
        if n == 0 or len(boxes) != n or len(aads) != n:
            raise ValueError(f"masked, boxes and aads need one entry per client (got {n}, "
                             f"{len(boxes)}, {len(aads)}; n >= 1)")
        bad = set()
        rows = []
        for i, m in enumerate(masked):
            m = np.asarray(m)
            if d is None and m.dtype == np.int64 and m.ndim == 1:
                d = m.shape[0]
            ok = (m.dtype == np.int64 and m.ndim == 1 and m.shape[0] == d
                  and isinstance(boxes[i], (list, tuple)) and len(boxes[i]) == self.world_size)
            if not ok:
                bad.add(i)
            rows.append(m if ok else None)
        if d is None:
            raise MalformedShareError(range(n), "no client sent a 1-D int64 masked vector")
        if self.conns is None:
            raise RuntimeError("the aggregation servers are not running (use `with AggregationServers() as s:`)")
        M = np.stack([r if r is not None else np.zeros(d, np.int64) for r in rows])
        for r, c in enumerate(self.conns):
            bx = [boxes[i][r] if i not in bad else b"" for i in range(n)]
            c.send(("open", bx, [bytes(a) for a in aads], d, M if r == 0 else None))
        for r, c in enumerate(self.conns):
            bad.update(self._recv(c, r)[1])
        keep = [i for i in range(n) if i not in bad]
        error = None
        if bad and on_malformed == "raise":
            error = MalformedShareError(sorted(bad), "sealed seeds that do not open or masked vectors "
                                        f"that are not int64 of length {d}")
        elif len(keep) < max(min_keep, 1):
            error = RuntimeError(f"{len(keep)} of {n} clients left after dropping {len(bad)} malformed "
                                 f"shares; {name} needs at least {max(min_keep, 1)}")
        try:
            if error is None:
                kw, extra = self._prepare(name, {k: (v(len(keep)) if callable(v) else v)
                                                 for k, v in kwargs.items()})
        except Exception as e:
            error = e
        if error is not None:
            for c in self.conns:
                c.send(("discard",))
            raise error
        for r, c in enumerate(self.conns):
            c.send(("run", name, kw, keep, {k: v[r].numpy() for k, v in extra.items()}))
        agg, kept = self._finish(name, reveal_selection)
        if kept is not None:
            kept = np.asarray(keep)[kept]
        return agg, kept, sorted(bad)

    def _prepare(self, name, kwargs):
        if self.conns is None:
            raise RuntimeError("the aggregation servers are not running (use `with AggregationServers() as s:`)")
        if name not in AGGREGATORS:
            raise ValueError(f"unknown aggregator {name!r}; choose from {sorted(AGGREGATORS)}")
        from .. import defenses

        fn = getattr(defenses, AGGREGATORS[name][0])
        params = inspect.signature(fn).parameters
        kw, extra = {}, {}
        for k, v in kwargs.items():
            if k not in params or k == "return_selection":
                continue
            if isinstance(v, (np.ndarray, torch.Tensor, list)):
                extra[k] = split(encode(np.asarray(v), k), self.world_size)
            else:
                kw[k] = v
        return kw, extra

    def _finish(self, name, reveal_selection):
        replies = []
        for r, c in enumerate(self.conns):
            replies.append(self._recv(c, r))
        out = sum(torch.from_numpy(rep[1]) for rep in replies)  # int64: wraps mod 2^64
        agg = out.double().numpy() / 2.0 ** FRAC_BITS
        self.last_stats = [rep[3] for rep in replies]
        kept = None
        sel_kind = AGGREGATORS[name][1]
        if sel_kind is not None and reveal_selection:
            sel = sum(torch.from_numpy(rep[2]) for rep in replies)
            if sel_kind == "rows":
                sel = sel.sum(0)
            kept = np.flatnonzero(sel.numpy() != 0)
        return agg, kept

    def _recv(self, conn, rank):
        deadline = time.monotonic() + self.timeout
        while not conn.poll(0.2):
            if self._error is not None:
                raise self._error
            if self._thread is not None and not self._thread.is_alive():
                raise RuntimeError(f"aggregation server {rank} stopped without answering")
            if time.monotonic() > deadline:
                raise TimeoutError(f"aggregation server {rank} did not answer within {self.timeout} s")
        try:
            rep = conn.recv()
        except (EOFError, OSError):
            if self._thread is not None:
                self._thread.join(timeout=10)
            raise (self._error or RuntimeError(f"aggregation server {rank} closed its connection"))
        if rep[0] == "error":
            raise RuntimeError(f"aggregation server {rank} failed:\n{rep[1]}")
        return rep
