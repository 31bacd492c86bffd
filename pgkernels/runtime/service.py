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

Failures: a server that raises, dies or hangs makes ``aggregate`` raise
``PartyError``/``TimeoutError`` within ``timeout`` seconds; the other
processes are killed, nothing hangs.
"""

import inspect
import secrets
import threading
import time
from multiprocessing.connection import Client, Listener

import numpy as np
import torch

FRAC_BITS = 16
MAX_ABS = 2.0 ** 30  # |update| bound: products of two encoded values stay far from 2^63

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
    U = np.asarray(U, dtype=np.float64)
    if not np.all(np.isfinite(U)):
        raise ValueError(f"{name} contains NaN or inf")
    if U.size and np.abs(U).max() >= MAX_ABS:
        raise ValueError(f"{name} has values of magnitude >= 2^30 ({np.abs(U).max():.3g}); "
                         "the fixed-point encoding cannot represent them")
    return torch.from_numpy(np.round(U * 2.0 ** FRAC_BITS).astype(np.int64))


def split(enc, parties):
    """Additive shares mod 2^64 of an int64 tensor, from a fresh AES-CTR stream."""
    from .dealer import new_key, stream

    key = new_key()
    shares = [stream(key, i, enc.numel()).view(enc.shape) for i in range(parties - 1)]
    last = enc.clone()
    for s in shares:
        last -= s
    return shares + [last]


def _server(address, authkey):
    """Runs in every compute party: serve requests until the coordinator says stop."""
    import pgkernels
    from pgkernels import defenses
    from pgkernels.protocols import _shares
    from pgkernels.runtime import comm

    conn = Client(address, authkey=authkey)
    conn.send(comm.rank())
    served = 0
    while True:
        msg = conn.recv()
        if msg is None:
            conn.close()
            return served
        # tensors travel as numpy arrays: torch's pickling would pass shared-memory fds
        name, kwargs, share, extra = msg
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


class AggregationServers:
    """``with AggregationServers(world_size=2) as servers: agg, kept = servers.aggregate("krum", U, num_malicious=4)``."""

    def __init__(self, world_size=2, dealer="ttp", timeout=600.0, session_timeout=24 * 3600.0):
        if not isinstance(world_size, int) or world_size < 2:
            raise ValueError(f"world_size must be an int >= 2, got {world_size!r}")
        self.world_size = world_size
        self.dealer = dealer
        self.timeout = float(timeout)
        self.session_timeout = float(session_timeout)
        self.conns = None
        self.last_stats = None
        self._error = None

    # -- lifecycle ---------------------------------------------------------------
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self):
        from .launch import launch

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
        conns = {}
        deadline = time.monotonic() + self.timeout
        self._listener._listener._socket.settimeout(1.0)
        while len(conns) < self.world_size:
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {self.world_size} aggregation servers did not connect "
                                   f"within {self.timeout} s")
            try:
                c = self._listener.accept()
            except OSError:  # socket timeout: look at the servers again
                continue
            conns[c.recv()] = c
        self.conns = [conns[r] for r in range(self.world_size)]

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

    def _check_alive(self):
        if self._error is not None:
            raise self._error
        if not self._thread.is_alive() and self.conns is None:
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
        U = np.asarray(U, dtype=np.float64)
        if U.ndim != 2:
            raise ValueError(f"updates must be 2-D (clients x parameters), got shape {U.shape}")
        shares = split(encode(U), self.world_size)
        for r, c in enumerate(self.conns):
            c.send((name, kw, shares[r].numpy(), {k: v[r].numpy() for k, v in extra.items()}))
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
            if not self._thread.is_alive():
                raise RuntimeError(f"aggregation server {rank} stopped without answering")
            if time.monotonic() > deadline:
                raise TimeoutError(f"aggregation server {rank} did not answer within {self.timeout} s")
        try:
            rep = conn.recv()
        except EOFError:
            self._thread.join(timeout=10)
            raise (self._error or RuntimeError(f"aggregation server {rank} closed its connection"))
        if rep[0] == "error":
            raise RuntimeError(f"aggregation server {rank} failed:\n{rep[1]}")
        return rep
