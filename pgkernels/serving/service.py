"""Long-lived MPC aggregation servers driven by a coordinator process.

``AggregationServers`` starts the compute parties ("aggregation servers") and
the dealer once with :func:`pgkernels.launch` (or connects to servers started
elsewhere with ``external=``) and then serves any number of aggregation
requests. The coordinator (the Flower strategy, or the federated lab) talks to
each server over its own mutually authenticated TLS 1.3 connection
(:mod:`.credentials`) carrying schema-checked messages (:mod:`.wire`; no
pickle in either direction).

Two kinds of request
--------------------

``aggregate(name, U)`` -- the coordinator holds the updates (the lab, where it
plays every client): it encodes U in CrypTen's fixed point, splits it into
additive shares mod 2^64 with fresh AES-CTR keys (``secrets``) and sends share
r to server r only. The servers run the rule from :mod:`pgkernels.defenses`
and return only their shares of the result. A server sees one share (uniformly
random); the network sees TLS.

``aggregate_masked(name, masked, boxes, nodes, round_id)`` -- the clients
shared their updates themselves (:func:`.client.mask`): client ``node`` sends
``masked = enc(u) - sum_r PRG(seed_r)`` and one sealed box per server holding
``seed_r``, bound to the context ``(session, round, node, d, SHA-256(masked),
r)``. The coordinator only relays:

1. ``open`` -> every server: the round id, d, the node ids and the boxes;
   server 0 also gets the masked vectors and hashes them itself, the others
   get the hashes. Each server checks, from its *own* state: the round is
   later than every round it opened before (so each round is opened once and
   rounds strictly increase), the node ids are distinct, there are at least
   ``min_clients`` of them; then it rebuilds each box's context from its
   session nonce, that round, the node id, d and the hash, and opens it. A box
   that does not open (wrong key/context, a replay, a masked vector altered in
   transit) or that it opened before (it remembers every opened box's
   ephemeral key) marks that client bad. Reply ``checked`` with the bad list.
2. The coordinator drops the bad clients (``on_malformed="drop"``) or gives up
   (``"raise"``: :class:`MalformedShareError`, then ``discard``).
3. ``run`` -> every server: the kept clients, the rule and its kwargs. Each
   server checks the kept clients opened at this server and that there are at
   least ``max(3, min_clients, the rule's minimum)`` of them (Krum and
   Multi-Krum: n >= 2f + 3, Bulyan: n >= 4f + 3), then the servers **agree**:
   over their MPC communicator each sends the others a SHA-256 digest of
   (session, round, the opened node ids and hashes, kept clients, rule,
   kwargs, extra inputs' shapes) and its verdict. Different digests end the
   request with an error at every server (kind ``disagree``), a refusal at any
   server ends it at all of them (kind ``policy``, :class:`PolicyError`);
   only when all agree does the rule run (:func:`run_rule`).
4. Each server replies ``result`` with its shares of the aggregate (and of the
   selection, for rules that select); the coordinator adds them and decodes.

What each party learns
----------------------

* A server: its shares (uniformly random), the node ids, d, the hashes of the
  masked vectors (server 0: the masked vectors, uniformly random), the rule
  and kwargs, and the bad lists. Nothing about any update while at least one
  other server does not collude with it (and the dealer colludes with none).
* The network: TLS 1.3 records between the coordinator and the servers; the
  parties' MPC traffic is that of :mod:`pgkernels.runtime`.
* The coordinator: the masked vectors (uniformly random), boxes it cannot open,
  which boxes failed at which server, and the output -- the aggregate, the
  selection for selecting rules (the servers always return its shares;
  ``reveal_selection`` is only the coordinator's choice to decode them), and
  the servers' statistics.

What an ACTIVE coordinator can still learn or do (servers semi-honest and not
colluding, clients pinning the servers' keys, servers on hosts the coordinator
does not control -- with local servers the coordinator process starts the
servers and holds their TLS keys, so it is trusted):

* It chooses which clients are aggregated each round: any subset of at least
  ``max(3, min_clients, rule minimum)`` of the clients that replied, so the
  output reveals a function of as few as that many updates.
* Sybil clients it controls count towards that minimum: with the minimum at m
  and m - 1 Sybils, a FedAvg over the Sybils and one victim reveals the
  victim's update exactly. The servers cannot tell Sybils from honest clients;
  client admission is outside this module.
* Rule outputs that are individual updates by definition: Krum's output is
  one client's update, Multi-Krum with ``to_keep=1`` too, the median takes
  each coordinate from one client (odd n) and a heavy trimmed mean is close
  to it; the selection says which clients a rule kept.
* It chooses the rule and its parameters (f, to_keep, the norm bound,
  FLTrust's root update) within the rules' own limits.
* Differencing across rounds: a box opens only in its round, session and
  server, once, with its exact masked vector, so one submitted update is used
  in at most one aggregate. But the coordinator also picks the model each
  client trains on; if a client's update is a deterministic function of that
  model (e.g. full-batch training), sending the same model in several rounds
  and aggregating different subsets gives linear equations that can solve for
  individual updates. Defending against that needs client-side measures
  (noise, refusing to train twice on one model), not this module.
* It sees d, timing, sizes, and which clients' boxes failed where, and it can
  deny service (drop clients, refuse, send servers different requests, which
  ends in an error, never in a silent wrong result).

Servers on several hosts
------------------------

1. Make credentials once: ``python -m pgkernels.serving.credentials --out
   DIR --world-size K``; copy ``DIR/server<R>`` to server R's host,
   ``DIR/coordinator`` to the coordinator's, and give ``DIR/server-keys.txt``
   to the clients (``PGKERNELS_SERVER_KEYS``).
2. On each server host: ``PGKERNELS_COORDINATOR=HOST:PORT
   PGKERNELS_CREDENTIALS=/path/server<R> python -m pgkernels.party --rank R
   --world-size K --rendezvous tcp://H:P --identity KEY --roster ROSTER.json
   --run pgkernels.serving.service:serve`` (the servers' own MPC traffic goes
   over :mod:`pgkernels.runtime.channel`; ``keygen``/``roster`` set it up)
   (optional: ``PGKERNELS_MIN_CLIENTS``, ``PGKERNELS_CONNECT_TIMEOUT`` (s,
   default 300), ``PGKERNELS_IDLE_TIMEOUT`` (s between requests, default
   86400), ``PGKERNELS_MESSAGE_TIMEOUT`` (s, default 600),
   ``PGKERNELS_VALIDITY``, ``PGKERNELS_MAX_NORM``); the dealer with
   ``python -m pgkernels.party --role dealer --world-size K --rendezvous
   tcp://H:P --identity KEY --roster ROSTER.json``.
3. The coordinator: ``AggregationServers(world_size=K, external=(HOST, PORT),
   credentials="/path/coordinator")``.

Failures: a server that raises, dies or hangs makes a request raise
``PartyError``/``RuntimeError``/``TimeoutError`` within ``timeout`` seconds.
While waiting for the servers to connect, the coordinator handles every
connection on its own thread with a ``handshake_timeout``: connections that
close at once, stay silent, fail TLS, present a certificate that names no
rank or a rank already taken, or send anything but a valid ``hello`` are
dropped, and it keeps accepting until the real servers are in or ``timeout``
has passed.
"""

import dataclasses
import hashlib
import json
import logging
import math
import os
import pathlib
import queue
import secrets
import shutil
import socket
import ssl
import tempfile
import threading
import time

import numpy as np
import torch

from ..defenses import registry
from ..runtime import comm
from ..runtime.session import dealer_batched
from ..runtime.inputs import FRAC_BITS, MAX_ABS  # noqa: F401  (MAX_ABS: the |update| bound, re-exported)
from . import wire
from .client import BOX_BYTES, SEED_BYTES, SESSION_BYTES, mask, masked_digest, seal_context, share_context  # noqa: F401

log = logging.getLogger("pgkernels.serving")

# The rules the servers run, their keyword arguments, the secret-shared arrays
# they take, their fewest clients and how their selection is read: all from
# pgkernels.defenses.registry.
MIN_CLIENTS_FLOOR = 3  # never aggregate fewer clients than this in aggregate_masked


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


class PolicyError(RuntimeError):
    """The servers refused a request (``kind="policy"``) or were sent different
    requests (``kind="disagree"``); nothing was computed and they go on serving."""

    def __init__(self, message, kind="policy", server=None):
        super().__init__(message)
        self.kind = kind
        self.server = server


def required_clients(name, kwargs, min_clients=None):
    """What a server requires of an ``aggregate_masked`` request: the rule's minimum
    (:meth:`pgkernels.defenses.registry.Rule.min_clients_for`), ``min_clients``, never fewer than 3."""
    return max(MIN_CLIENTS_FLOOR, int(min_clients or 0), registry.get(name).min_clients_for(kwargs))


# -- server side ----------------------------------------------------------------------

class Refusal(Exception):
    """A request this server refuses (its policy, or a malformed request); it goes on serving."""


@dataclasses.dataclass
class _Pending:
    round: int
    d: int
    nodes: list
    hashes: list  # hex SHA-256 of each client's masked vector
    ok: set  # indices whose box opened here
    shares: torch.Tensor  # (n, d) this server's shares


def _digest(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).digest()


class ServerState:
    """The policy state of one aggregation server for one session (no MPC here).

    ``session``: the servers' joint nonce; ``min_clients``: this server's
    minimum for ``aggregate_masked`` (never below 3). Remembers the last round
    opened and the ephemeral key of every box opened, so neither a round nor a
    box is ever opened twice in the session.
    """

    def __init__(self, rank, world_size, private_key, session, min_clients=None):
        if min_clients is not None and (isinstance(min_clients, bool) or not isinstance(min_clients, int)):
            raise ValueError(f"min_clients must be an int, got {min_clients!r}")
        self.rank, self.world_size = rank, world_size
        self.private_key = private_key
        self.session = bytes(session)
        self.min_clients = max(MIN_CLIENTS_FLOOR, min_clients or 0)
        self.last_round = 0
        self.opened = set()
        self.pending = None

    def open(self, msg):
        """``open``: this server's shares of the clients' updates; returns the bad indices."""
        from ..runtime.dealer import stream
        from .sealing import SealError, open_sealed

        self.pending = None
        rnd, d, nodes = msg["round"], msg["d"], msg["nodes"]
        if rnd <= self.last_round:
            raise Refusal(f"round {rnd} is not after the last round opened ({self.last_round}): "
                          "a replayed or out-of-order round")
        self.last_round = rnd  # consumed now, whatever happens next
        n = len(nodes)
        if len(set(nodes)) != n:
            raise Refusal("repeated node ids in one round")
        if n < self.min_clients:
            raise Refusal(f"{n} clients in round {rnd}; this server aggregates no fewer than {self.min_clients}")
        if n * d * 8 > wire.default_max_bytes():
            raise Refusal(f"{n} x {d} shares exceed this server's message limit")
        boxes = msg.arrays["boxes"]
        if boxes.shape != (n, BOX_BYTES):
            raise Refusal(f"boxes of shape {boxes.shape}, expected ({n}, {BOX_BYTES})")
        if self.rank == 0:
            masked = msg.arrays.get("masked")
            if masked is None or masked.shape != (n, d) or "hashes" in msg.arrays:
                raise Refusal(f"server 0 needs the masked vectors, shape ({n}, {d}), and no hashes")
            hashes = [masked_digest(masked[i]) for i in range(n)]  # computed here, not taken from the relay
        else:
            h = msg.arrays.get("hashes")
            if h is None or h.shape != (n, 32) or "masked" in msg.arrays:
                raise Refusal(f"server {self.rank} needs the masked vectors' hashes, shape ({n}, 32), only")
            hashes = [h[i].tobytes() for i in range(n)]
        shares = torch.zeros(n, d, dtype=torch.long)
        ok, opened = set(), []
        for i in range(n):
            box = boxes[i].tobytes()
            ctx = seal_context(share_context(self.session, rnd, nodes[i], d, hashes[i]), self.rank)
            try:
                seed = open_sealed(self.private_key, box, ctx)
            except SealError:
                continue
            eph = box[:32]
            if eph in self.opened or eph in opened or len(seed) != SEED_BYTES:
                continue  # opened before: a replay (cannot happen with a fresh round; defence in depth)
            opened.append(eph)
            ok.add(i)
            shares[i] = stream(torch.frombuffer(bytearray(seed), dtype=torch.uint8), 0, d)
        self.opened.update(opened)
        if self.rank == 0:
            shares += torch.from_numpy(masked)
        self.pending = _Pending(rnd, d, list(nodes), [h.hex() for h in hashes], ok, shares)
        return [i for i in range(n) if i not in ok]

    def _kwargs(self, name, kwargs, extras):
        if name not in registry.RULES:
            raise Refusal(f"unknown aggregator {name!r}")
        rule = registry.get(name)
        bad = sorted(set(kwargs) - set(rule.params)) + sorted(set(extras) - set(rule.arrays))
        if bad:
            raise Refusal(f"{name} takes no arguments {bad}")

    def check_run(self, msg):
        """``run``: (digest to agree on, refusal or None, (shares, rule, kwargs, extras))."""
        p, self.pending = self.pending, None
        keep, name, kwargs = msg["keep"], msg["rule"], msg["kwargs"]
        extras = {k.split(":", 1)[1]: torch.from_numpy(v) for k, v in msg.arrays.items()}
        digest = _digest({"op": "run", "session": self.session.hex(), "round": msg["round"],
                          "opened": None if p is None else [p.round, p.d, p.nodes, p.hashes],
                          "keep": keep, "rule": name, "kwargs": kwargs,
                          "extras": {k: list(v.shape) for k, v in extras.items()}})
        try:
            if p is None or p.round != msg["round"]:
                raise Refusal(f"'run' for round {msg['round']} without an 'open' of that round just before")
            if keep != sorted(set(keep)) or (keep and keep[-1] >= len(p.nodes)):
                raise Refusal("the kept clients must be distinct, increasing indices of the opened ones")
            missing = [i for i in keep if i not in p.ok]
            if missing:
                raise Refusal(f"clients {missing} are kept but their boxes did not open at server {self.rank}")
            self._kwargs(name, kwargs, extras)
            need = required_clients(name, kwargs, self.min_clients)
            if len(keep) < need:
                raise Refusal(f"{name} over {len(keep)} clients; server {self.rank} aggregates no fewer than "
                              f"{need} (min_clients={self.min_clients}, the rule's minimum "
                              f"{registry.get(name).min_clients_for(kwargs)}, never below {MIN_CLIENTS_FLOOR})")
        except Refusal as e:
            return digest, str(e), None
        share = p.shares[torch.as_tensor(keep, dtype=torch.long)].contiguous()
        return digest, None, (share, name, kwargs, extras)

    def check_aggregate(self, msg):
        """``aggregate`` (shares made by the coordinator, which knows the inputs): no client policy."""
        self.pending = None
        name, kwargs = msg["rule"], msg["kwargs"]
        share = torch.from_numpy(msg.arrays["updates"])
        extras = {k.split(":", 1)[1]: torch.from_numpy(v) for k, v in msg.arrays.items() if k != "updates"}
        digest = _digest({"op": "aggregate", "session": self.session.hex(), "rule": name, "kwargs": kwargs,
                          "shape": list(share.shape), "extras": {k: list(v.shape) for k, v in extras.items()}})
        try:
            self._kwargs(name, kwargs, extras)
            if share.dim() != 2:
                raise Refusal(f"updates of shape {tuple(share.shape)}, expected (clients, parameters)")
        except Refusal as e:
            return digest, str(e), None
        return digest, None, (share, name, kwargs, extras)


def _agree(digest, refused, need=0):
    """Every server sends the others its request digest, verdict and minimum
    number of valid clients over the MPC communicator (one round); returns
    the (world_size, 33) table of digests and verdicts and the largest
    minimum (so that every server refuses alike after the validity check)."""
    rows = torch.zeros(comm.world_size(), 41, dtype=torch.uint8)
    rows[comm.rank(), :32] = torch.frombuffer(bytearray(digest), dtype=torch.uint8)
    rows[comm.rank(), 32] = 1 if refused else 0
    rows[comm.rank(), 33:] = torch.frombuffer(bytearray(int(need).to_bytes(8, "little")), dtype=torch.uint8)
    comm.exchange(sum_tensor=rows)  # the other rows are zero here, so the sum is each row
    needs = [int.from_bytes(bytes(rows[r, 33:].tolist()), "little") for r in range(comm.world_size())]
    return rows[:, :33], max(needs)


def _agree_settings(validity, max_norm, bound):
    """The servers' own settings that shape the MPC computation (the validity
    policy, ``max_norm``, ``bound``) must be equal at every server: one round
    at start-up; RuntimeError at every server, naming them, if they differ."""
    mine = json.dumps({"validity": validity, "max_norm": max_norm, "bound": bound}, sort_keys=True)
    table, _ = _agree(hashlib.sha256(mine.encode()).digest(), False)
    if any(bytes(table[r, :32].tolist()) != bytes(table[comm.rank(), :32].tolist())
           for r in range(comm.world_size())):
        raise RuntimeError(f"server {comm.rank()}: the servers were started with different settings (this one: "
                           f"{mine}); validity, max_norm and bound must be equal at every server")


def _session_nonce():
    """A nonce no single server chooses: SHA-256 of every server's 16 random bytes."""
    rows = torch.zeros(comm.world_size(), SESSION_BYTES, dtype=torch.uint8)
    rows[comm.rank()] = torch.frombuffer(bytearray(secrets.token_bytes(SESSION_BYTES)), dtype=torch.uint8)
    comm.exchange(sum_tensor=rows)
    return hashlib.sha256(b"pgkernels-session|" + rows.numpy().tobytes()).digest()[:SESSION_BYTES]


def _shared(share):
    """This server's int64 share tensor as an MPCTensor (16 fractional bits)."""
    from ..runtime.inputs import Share, to_mpc

    return to_mpc(Share(data=share, frac_bits=FRAC_BITS))


@dataclasses.dataclass
class RuleResult:
    """This server's shares of a rule's output."""
    out: torch.Tensor
    selection: torch.Tensor = None  # selecting rules: one-hot / bits / (rows, n) one-hots
    per_client: torch.Tensor = None  # (n,) int64 shares of the validity vector (1: the update was valid)


VALIDITY = ("drop", "clamp")


def _check_server_bound(bound):
    """The servers' coordinate bound: None or a positive finite number
    (TypeError/ValueError naming ``bound``)."""
    if bound is None:
        return
    if isinstance(bound, bool) or not isinstance(bound, (int, float)):
        raise TypeError(f"bound must be a positive finite number or None, got {type(bound).__name__}")
    if not (bound > 0 and math.isfinite(bound)):
        raise ValueError(f"bound must be a positive finite number or None, got {bound!r}")


def run_rule(share, name, kwargs, extras, validity="drop", max_norm=None, need=1, bound=None):
    """THE place where a rule runs: this server's (n, d) int64 shares of the agreed
    clients' updates, the rule name, its scalar kwargs and its shared extra inputs
    (name -> int64 shares) -> :class:`RuleResult`.

    First the updates are checked on the shares (:func:`pgkernels.defenses.validity.validate`):
    every coordinate within the rule's input bound -- derived from its arithmetic
    so that nothing can wrap around mod 2^64 -- and, with ``max_norm``, every
    norm within it. ``validity="drop"`` (default) reveals one validity bit per
    client and leaves the invalid ones out (the selection still indexes all n);
    if fewer than ``need`` valid clients remain, the request is refused.
    ``"clamp"`` clamps into the bound and reveals nothing. An extra input
    (FLTrust's root update) must be within the same bound. ``bound``: the
    servers' own coordinate bound (None: each rule's input bound; a larger one
    is capped at it). Rules that take ``bound``
    (:attr:`pgkernels.defenses.registry.Rule.takes_bound`: the median and the
    trimmed mean) get the bound checked here and compare on fewer bits
    (:func:`pgkernels.defenses.validity.compare_bits`). Every server calls
    it with agreed arguments (see :func:`_server`), and the validity vector is
    public to all of them, so they decide alike.
    """
    from ..defenses.validity import after_drop, input_bound, validate
    from ..protocols.validity import check_rows

    rule = registry.get(name)
    U = _shared(share)
    n, d = U.size()
    kw = dict(kwargs)
    alpha = kw.get("alpha", 2.0)
    for k, v in extras.items():  # shared extra inputs (e.g. FLTrust's server update)
        x = _shared(v)
        if x.dim() != 1 or x.size(0) != d:
            raise Refusal(f"{k} must have shape ({d},), got {tuple(x.size())}")
        _, ok = check_rows(x.view(1, d), input_bound(name, n, d, alpha=alpha))  # as before: the rule's own
        if not bool(ok.all()):
            raise Refusal(f"{k} has coordinates outside {name}'s input bound")
        kw[k] = x
    limit = input_bound(name, n, d, alpha=alpha)  # validate's default, named: the rule may use it
    bound = limit if bound is None else min(float(bound), limit)
    U, valid = validate(U, name, bound=bound, max_norm=max_norm, policy=validity, alpha=alpha)
    if rule.takes_bound:  # every update is now within it: fewer bits per comparison
        kw["bound"] = bound
    rows = None
    if valid is not None and not bool(valid.all()):
        rows = torch.nonzero(valid).view(-1)
        if rows.numel() < need:
            raise Refusal(f"{n - rows.numel()} of {n} clients sent invalid updates (outside the bound of "
                          f"{name}, or over max_norm); {rows.numel()} valid left, {name} here needs {need}")
        kw = after_drop(name, kw, n - rows.numel())
    per_client = None
    if valid is not None:  # public and equal at every server: party 0 holds it, the others 0
        per_client = valid.long() if comm.rank() == 0 else torch.zeros(n, dtype=torch.long)
    if rule.selection is None:
        return RuleResult(rule.mpc(U, **kw).share, None, per_client)
    out, sel = rule.mpc(U, return_selection=True, **kw)
    sel = sel.share
    if rows is not None:  # back to the n clients of the request (dropped ones: 0)
        full = torch.zeros(sel.shape[:-1] + (n,), dtype=torch.long)
        full[..., rows] = sel
        sel = full
    return RuleResult(out.share, sel, per_client)


def _connect(address, ctx, wait):
    """TLS connection to the coordinator, retrying while it is not listening yet
    (servers on other hosts may start first); a certificate it does not trust is final."""
    from .credentials import COORDINATOR_NAME

    deadline = time.monotonic() + wait
    while True:
        raw = None
        try:
            raw = socket.create_connection(tuple(address), timeout=min(30.0, max(wait, 1.0)))
            return ctx.wrap_socket(raw, server_hostname=COORDINATOR_NAME)
        except ssl.SSLCertVerificationError as e:
            raw.close()
            raise ConnectionError(f"the coordinator at {address[0]}:{address[1]} presented a certificate this "
                                  f"server does not trust ({e.verify_message}); refusing to connect") from None
        except OSError as e:  # refused, reset, TLS failure while it starts up: try again
            if raw is not None:
                raw.close()
            if time.monotonic() > deadline:
                raise ConnectionError(f"no coordinator reachable at {address[0]}:{address[1]} after {wait:.0f} s "
                                      f"({type(e).__name__}: {e})") from None
            time.sleep(0.5)


def _error(sock, kind, message, timeout):
    try:
        wire.send(sock, "error", {"kind": kind, "message": message[-60000:]}, timeout=timeout)
    except (OSError, wire.WireError):
        pass


def _server(address, config, party_input=None):
    """Runs in every compute party: serve the coordinator's requests until it says stop.

    ``config``: ``credentials`` (folder; for local servers it comes as
    ``party_input``, each party getting only its own), ``x25519`` (key file or
    None: a fresh key), ``min_clients``, ``connect_timeout``, ``idle_timeout``,
    ``message_timeout``.
    """
    from .credentials import load_x25519, own_rank, server_context
    from .sealing import new_keypair

    rank, ws = comm.rank(), comm.world_size()
    validity = config.get("validity") or "drop"
    max_norm = config.get("max_norm")
    bound = config.get("bound")
    if validity not in VALIDITY:
        raise ValueError(f"validity must be one of {VALIDITY}, got {validity!r}")
    _check_server_bound(bound)
    cred = party_input or config["credentials"]
    if own_rank(cred) != rank:
        raise RuntimeError(f"{cred}/cert.pem is server {own_rank(cred)}'s credential, but this is MPC party {rank}")
    priv, pub = load_x25519(config["x25519"]) if config.get("x25519") else new_keypair()
    session = _session_nonce()
    _agree_settings(validity, max_norm, bound)
    state = ServerState(rank, ws, priv, session, config.get("min_clients"))
    msg_timeout, idle = float(config["message_timeout"]), float(config["idle_timeout"])
    sock = _connect(address, server_context(cred), float(config["connect_timeout"]))
    try:
        wire.send(sock, "hello", {"version": wire.VERSION, "session": session.hex(), "public_key": pub.hex()},
                  timeout=msg_timeout)
        w = wire.recv(sock, {"welcome", "refused"}, first_timeout=float(config["connect_timeout"]),
                      timeout=msg_timeout, max_bytes=0)
    except ssl.SSLError as e:
        raise ConnectionError(f"server {rank}: the coordinator rejected the TLS connection ({e})") from None
    except (wire.ConnectionClosed, OSError) as e:
        raise ConnectionError(f"server {rank}: the coordinator closed the connection during the handshake "
                              f"({type(e).__name__}: {e})") from None
    if w.op == "refused":
        raise RuntimeError(f"server {rank}: the coordinator refused this server: {w['message']}")
    if (w["rank"], w["world_size"]) != (rank, ws):
        raise RuntimeError(f"server {rank}: the coordinator takes this server as rank {w['rank']} of "
                           f"{w['world_size']}, but it is party {rank} of {ws}")
    served = 0
    ops = {"open", "run", "aggregate", "discard", "stop"}
    while True:
        try:
            msg = wire.recv(sock, ops, first_timeout=idle, timeout=msg_timeout)
        except wire.WireError as e:  # garbage, a pickle, a field out of schema: never parsed further
            _error(sock, "protocol", f"server {rank}: malformed message: {e}", msg_timeout)
            sock.close()
            raise RuntimeError(f"server {rank}: the coordinator sent a malformed message ({e}); "
                               "closing the session") from None
        except wire.ConnectionClosed:
            raise RuntimeError(f"server {rank}: the coordinator closed the connection without 'stop'") from None
        except TimeoutError:
            raise RuntimeError(f"server {rank}: no complete request from the coordinator within the idle "
                               f"timeout ({idle:.0f} s) or the message timeout ({msg_timeout:.0f} s)") from None
        op = msg.op
        if op == "stop":
            sock.close()
            return served
        if op == "discard":
            state.pending = None
            continue
        if op == "open":
            try:
                bad = state.open(msg)
            except Refusal as e:
                _error(sock, "policy", f"server {rank}: {e}", msg_timeout)
                continue
            wire.send(sock, "checked", {"round": msg["round"], "bad": bad}, timeout=msg_timeout)
            continue
        digest, refusal, job = state.check_run(msg) if op == "run" else state.check_aggregate(msg)
        if job is not None:  # clients left after the validity check: the rule's minimum, and the
            # server's own (never below 3) when clients shared their updates themselves
            need = (required_clients(job[1], job[2], state.min_clients) if op == "run"
                    else registry.get(job[1]).min_clients_for(job[2]))
        table, need = _agree(digest, refusal is not None, need if job is not None else 0)
        if any(bytes(table[r, :32].tolist()) != digest for r in range(ws)):
            _error(sock, "disagree", f"server {rank}: the servers were sent different requests "
                   f"(digests differ); nothing computed", msg_timeout)
            continue
        refusers = [r for r in range(ws) if table[r, 32]]
        if refusers:
            _error(sock, "policy", f"server {rank}: {refusal}" if refusal else
                   f"server {rank}: refused because server(s) {refusers} refused", msg_timeout)
            continue
        try:
            comm.reset_stats()
            t0 = time.perf_counter()
            share, name, kwargs, extras = job
            # the same rule on the same sizes as an earlier aggregation: the dealer's
            # material for the whole call in one round trip (DealerClient.batched)
            key = (name, tuple(share.shape), json.dumps(kwargs, sort_keys=True, default=repr),
                   tuple(sorted((k, tuple(v.shape)) for k, v in extras.items())), validity, max_norm, need, bound)
            with dealer_batched(key):
                res = run_rule(*job, validity=validity, max_norm=max_norm, need=need, bound=bound)
            stats = comm.STATS.snapshot().as_dict()
            stats["seconds"] = time.perf_counter() - t0
        except Refusal as e:  # decided alike at every server (public validity bits): go on serving
            _error(sock, "policy", f"server {rank}: {e}", msg_timeout)
            continue
        except Exception as e:  # reported to the coordinator, then re-raised: the MPC state is unknown
            import traceback

            _error(sock, "internal", traceback.format_exc(), msg_timeout)
            raise e
        arrays = {"out": res.out.numpy()}
        if res.selection is not None:
            arrays["selection"] = res.selection.numpy()
        if res.per_client is not None:
            arrays["per_client"] = res.per_client.numpy()
        wire.send(sock, "result", {"stats": stats}, arrays, timeout=msg_timeout)
        served += 1


def _env_float(name, default):
    v = os.environ.get(name)
    return float(v) if v else float(default)


def serve():
    """Aggregation-server entry for separately started parties (several hosts).

    Run as ``python -m pgkernels.party --rank R --world-size K --rendezvous
    tcp://H:P --run pgkernels.serving.service:serve`` with
    ``PGKERNELS_COORDINATOR=HOST:PORT`` and ``PGKERNELS_CREDENTIALS=DIR`` (this
    server's folder from :mod:`.credentials`: ``ca.pem``, ``cert.pem``,
    ``key.pem``, ``x25519.key``), optionally ``PGKERNELS_MIN_CLIENTS``,
    ``PGKERNELS_VALIDITY`` (``drop``, the default, or ``clamp``),
    ``PGKERNELS_MAX_NORM`` (a per-client L2 bound),
    ``PGKERNELS_CONNECT_TIMEOUT`` (default 300 s), ``PGKERNELS_IDLE_TIMEOUT``
    (default 86400 s) and ``PGKERNELS_MESSAGE_TIMEOUT`` (default 600 s). The
    coordinator is ``AggregationServers(external=(HOST, PORT), credentials=...)``.
    """
    addr = os.environ.get("PGKERNELS_COORDINATOR")
    cred = os.environ.get("PGKERNELS_CREDENTIALS")
    if not addr or not cred:
        raise RuntimeError("serve() needs PGKERNELS_COORDINATOR=HOST:PORT and PGKERNELS_CREDENTIALS=DIR "
                           "(make DIR with python -m pgkernels.serving.credentials)")
    if os.environ.get("PGKERNELS_AUTHKEY"):
        raise RuntimeError("PGKERNELS_AUTHKEY is no longer used: the coordinator channel is mutual TLS "
                           "(PGKERNELS_CREDENTIALS)")
    key = pathlib.Path(cred) / "x25519.key"
    if not key.is_file():
        raise RuntimeError(f"{key} is missing: a server on its own host keeps a persistent X25519 key "
                           "that clients pin (python -m pgkernels.serving.credentials makes it)")
    host, _, port = addr.rpartition(":")
    mc = os.environ.get("PGKERNELS_MIN_CLIENTS")
    mn = os.environ.get("PGKERNELS_MAX_NORM")
    cb = os.environ.get("PGKERNELS_BOUND")
    config = {"credentials": cred, "x25519": str(key), "min_clients": int(mc) if mc else None,
              "validity": os.environ.get("PGKERNELS_VALIDITY", "drop"), "max_norm": float(mn) if mn else None,
              "bound": float(cb) if cb else None,
              "connect_timeout": _env_float("PGKERNELS_CONNECT_TIMEOUT", 300),
              "idle_timeout": _env_float("PGKERNELS_IDLE_TIMEOUT", 86400),
              "message_timeout": _env_float("PGKERNELS_MESSAGE_TIMEOUT", 600)}
    return _server((host.strip("[]"), int(port)), config)


# -- coordinator side ---------------------------------------------------------------------

class AggregationServers:
    """``with AggregationServers(world_size=2) as servers: agg, kept = servers.aggregate("krum", U, num_malicious=4)``.

    By default the servers and the dealer are started here, on this host, with
    fresh credentials in a 0700 temporary folder (removed by :meth:`close`)
    and fresh X25519 keys. With ``external=(host, port)`` nothing is started:
    the coordinator listens there for ``world_size`` servers started elsewhere
    with :func:`serve`, authenticating with the coordinator credential folder
    ``credentials`` (from :mod:`.credentials`).

    Args:
        timeout: seconds for the servers to connect, and for any one reply.
        session_timeout: lifetime of locally started servers.
        min_clients: for local servers, their minimum number of clients in an
            ``aggregate_masked`` request (never below 3; the rule's minimum
            applies too). External servers take ``PGKERNELS_MIN_CLIENTS``.
        handshake_timeout: seconds a connecting server has to complete TLS
            and say hello.
        validity: what local servers do with updates outside the rule's input
            bound (:mod:`pgkernels.defenses.validity`) or over ``max_norm``:
            ``"drop"`` them (one validity bit per client is revealed, and
            :attr:`last_invalid` lists them) or ``"clamp"`` them (nothing
            revealed). Checked on the shares before any product, in every
            request. External servers take ``PGKERNELS_VALIDITY``.
        max_norm: optional L2 bound per client update (external servers:
            ``PGKERNELS_MAX_NORM``).
        bound: optional coordinate bound the servers check every update
            against (capped at each rule's input bound; None: the rule's
            input bound), with ``validity``; the median and the trimmed mean
            then compare on fewer bits (22 for bound 8 instead of 64: fewer
            rounds and bytes). External servers: ``PGKERNELS_BOUND``.

    After :meth:`start`: ``public_keys`` (the servers' X25519 keys, rank
    order), ``session`` (their 16-byte session nonce); :meth:`new_round` gives
    a fresh round id for clients to bind their boxes to.
    """

    def __init__(self, world_size=2, dealer="ttp", timeout=600.0, session_timeout=24 * 3600.0,
                 external=None, credentials=None, min_clients=None, handshake_timeout=10.0, authkey=None,
                 validity="drop", max_norm=None, bound=None):
        if not isinstance(world_size, int) or world_size < 2:
            raise ValueError(f"world_size must be an int >= 2, got {world_size!r}")
        if authkey is not None:
            raise ValueError("authkey is no longer used: the coordinator channel is mutual TLS; pass "
                             "credentials=DIR (python -m pgkernels.serving.credentials)")
        if external is not None and credentials is None:
            raise ValueError("external servers need credentials: the coordinator's credential folder "
                             "(python -m pgkernels.serving.credentials --out DIR --world-size K)")
        if external is not None and min_clients is not None:
            raise ValueError("min_clients is the servers' own setting: set PGKERNELS_MIN_CLIENTS where they run")
        if min_clients is not None and (isinstance(min_clients, bool) or not isinstance(min_clients, int)):
            raise ValueError(f"min_clients must be an int, got {min_clients!r}")
        if validity not in VALIDITY:
            raise ValueError(f"validity must be one of {VALIDITY}, got {validity!r}")
        if max_norm is not None:
            from ..defenses.validity import max_norm_limit

            if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)) or not (
                    0 < max_norm <= max_norm_limit()):
                raise ValueError(f"max_norm must be in (0, {max_norm_limit():.6g}], got {max_norm!r}")
        _check_server_bound(bound)
        if external is not None and (validity != "drop" or max_norm is not None or bound is not None):
            raise ValueError("validity, max_norm and bound are the servers' own settings: set PGKERNELS_VALIDITY, "
                             "PGKERNELS_MAX_NORM and PGKERNELS_BOUND where they run")
        self.world_size = world_size
        self.dealer = dealer
        self.timeout = float(timeout)
        self.session_timeout = float(session_timeout)
        self.handshake_timeout = float(handshake_timeout)
        self.external = external
        self.credentials = credentials
        self.min_clients = min_clients
        self.validity = validity
        self.max_norm = max_norm
        self.bound = bound
        self.conns = None
        self.public_keys = None
        self.session = None
        self.last_stats = None
        self.last_per_client = None
        self.last_invalid = []  # clients the servers found invalid in the last request (indices into it)
        self.rejected = []  # why connections were refused while starting
        self._round = 0
        self._broken = None
        self._error = None
        self._thread = None
        self._listener = None
        self._address = None
        self._tmp = None

    # -- lifecycle ---------------------------------------------------------------
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self):
        from ..runtime.launch import launch
        from .credentials import coordinator_context, make_credentials

        try:
            if self.external is not None:
                ctx = coordinator_context(self.credentials)
                bind = (self.external[0], int(self.external[1]))
            else:
                self._tmp = tempfile.mkdtemp(prefix="pgkernels-cred-")  # 0700
                make_credentials(self._tmp, self.world_size, days=2, x25519_keys=False)
                ctx = coordinator_context(os.path.join(self._tmp, "coordinator"))
                bind = ("127.0.0.1", 0)
            self._listener = socket.create_server(bind, backlog=64)
            self._listener.settimeout(0.2)
            self._address = self._listener.getsockname()[:2]
            if self.external is None:
                config = {"min_clients": self.min_clients, "x25519": None, "connect_timeout": self.timeout,
                          "validity": self.validity, "max_norm": self.max_norm, "bound": self.bound,
                          "idle_timeout": self.session_timeout, "message_timeout": self.timeout}
                creds = [os.path.join(self._tmp, f"server{r}") for r in range(self.world_size)]
                address = self._address

                def run():
                    try:
                        launch(_server, world_size=self.world_size, dealer=self.dealer,
                               timeout=self.session_timeout, args=(address, config), party_inputs=creds)
                    except BaseException as e:  # noqa: BLE001 -- surfaced by the requests
                        self._error = e

                self._thread = threading.Thread(target=run, daemon=True, name="pgkernels-servers")
                self._thread.start()
            self._accept(ctx)
        except BaseException:
            self.close()
            raise
        finally:
            if self._listener is not None:  # every server is in: nobody else may connect
                self._listener.close()
                self._listener = None

    def _handshake(self, ctx, raw, peer, results, slots, gate):
        tls = None
        try:
            from .credentials import rank_of

            raw.settimeout(self.handshake_timeout)
            tls = ctx.wrap_socket(raw, server_side=True)
            rank = rank_of(tls.getpeercert())
            if rank is None:
                raise ValueError("its certificate names no aggregation-server rank")
            hello = wire.recv(tls, {"hello"}, first_timeout=self.handshake_timeout,
                              timeout=self.handshake_timeout, max_bytes=0)
            if hello["version"] != wire.VERSION:
                raise ValueError(f"protocol version {hello['version']}, expected {wire.VERSION}")
            with gate["lock"]:
                if gate["open"]:
                    results.put(("ok", rank, tls, hello, peer))
                else:  # start() is over: nobody will read this connection
                    tls.close()
        except Exception as e:  # noqa: BLE001 -- EOF, TLS errors, bad certificates, garbage, silence
            (tls or raw).close()
            results.put(("bad", f"{peer[0]}:{peer[1]}: {type(e).__name__}: {e}", None, None, peer))
        finally:
            slots.release()

    def _accept(self, ctx):
        """Accept until every rank has one verified connection; each handshake runs on
        its own thread with a timeout, so no connection can hold up the others."""
        results, slots = queue.Queue(), threading.BoundedSemaphore(64)
        gate = {"lock": threading.Lock(), "open": True}
        conns, hellos = {}, {}
        deadline = time.monotonic() + self.timeout
        try:
            while len(conns) < self.world_size:
                self._check_alive()
                if time.monotonic() > deadline:
                    why = "; ".join(self.rejected[-5:])
                    raise TimeoutError(f"the {self.world_size} aggregation servers did not connect within "
                                       f"{self.timeout} s ({sorted(conns)} did)"
                                       + (f"; refused connections: {why}" if why else ""))
                try:
                    raw, peer = self._listener.accept()
                except OSError:  # timeout (look at the servers again) or an aborted connection
                    raw = None
                if raw is not None:
                    if slots.acquire(blocking=False):
                        threading.Thread(target=self._handshake, args=(ctx, raw, peer, results, slots, gate),
                                         daemon=True, name="pgkernels-handshake").start()
                    else:
                        raw.close()
                        self.rejected.append(f"{peer[0]}:{peer[1]}: too many pending handshakes")
                while True:
                    try:
                        status, rank, tls, hello, peer = results.get_nowait()
                    except queue.Empty:
                        break
                    if status == "bad":
                        self.rejected.append(rank)
                        log.warning("refused a connection: %s", rank)
                        continue
                    if rank >= self.world_size or rank in conns:
                        why = "rank already connected" if rank in conns else f"rank {rank} >= {self.world_size}"
                        self.rejected.append(f"{peer[0]}:{peer[1]}: server {rank}'s certificate: {why}")
                        log.warning("refused server %d from %s:%d: %s", rank, peer[0], peer[1], why)
                        try:
                            wire.send(tls, "refused", {"message": why}, timeout=self.handshake_timeout)
                        except OSError:
                            pass
                        tls.close()
                        continue
                    try:
                        wire.send(tls, "welcome", {"world_size": self.world_size, "rank": rank},
                                  timeout=self.handshake_timeout)
                    except OSError as e:
                        self.rejected.append(f"{peer[0]}:{peer[1]}: server {rank} left: {e}")
                        tls.close()
                        continue
                    conns[rank], hellos[rank] = tls, hello
        except BaseException:
            for c in conns.values():
                c.close()
            raise
        finally:
            with gate["lock"]:
                gate["open"] = False
                while not results.empty():
                    item = results.get_nowait()
                    if item[0] == "ok":
                        item[2].close()
        sessions = {hellos[r]["session"] for r in range(self.world_size)}
        keys = [bytes.fromhex(hellos[r]["public_key"]) for r in range(self.world_size)]
        self.conns = [conns[r] for r in range(self.world_size)]
        if len(sessions) != 1:
            raise RuntimeError(f"the aggregation servers report different session nonces {sorted(sessions)}: "
                               "they are not one MPC session")
        if len(set(keys)) != len(keys):
            raise RuntimeError("two aggregation servers have the same X25519 key: refusing (clients would "
                               "seal several shares to one key)")
        self.session = bytes.fromhex(sessions.pop())
        self.public_keys = keys

    def close(self):
        if self.conns is not None:
            for c in self.conns:
                try:
                    wire.send(c, "stop", timeout=5)
                except OSError:
                    pass
                try:
                    c.close()
                except OSError:
                    pass
            self.conns = None
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    @property
    def address(self):
        """Where the coordinator listens (for servers started with :func:`serve`)."""
        return self._address

    def new_round(self):
        """A round id later than every one used so far (the servers open each round once)."""
        self._round += 1
        return self._round

    def _check_alive(self):
        if self._error is not None:
            raise self._error
        if self._thread is not None and not self._thread.is_alive() and self.conns is None:
            raise RuntimeError("the aggregation servers stopped before connecting")

    def _ready(self):
        if self.conns is None:
            raise RuntimeError("the aggregation servers are not running (use `with AggregationServers() as s:`)")
        if self._broken is not None:
            raise RuntimeError(f"the aggregation servers stopped serving after an error: {self._broken}")

    # -- requests ----------------------------------------------------------------
    def aggregate(self, name, U, reveal_selection=True, **kwargs):
        """Aggregate the (n, d) updates U with ``pgkernels.defenses.<name>`` in MPC.

        Returns ``(aggregate (d,) float64, kept client indices or None)``; the
        indices only for rules that select clients and with
        ``reveal_selection=True``. kwargs go to the aggregator (those it does
        not take are ignored, so one config can serve every rule); array-valued
        ones (FLTrust's ``server_update``) are secret-shared like the updates.
        The coordinator made the shares, so the servers apply no client policy.
        """
        kw, extra = self._prepare(name, kwargs)
        U = np.asarray(U, dtype=np.float64)
        if U.ndim != 2:
            raise ValueError(f"updates must be 2-D (clients x parameters), got shape {U.shape}")
        shares = split(encode(U), self.world_size)
        for r in range(self.world_size):
            arrays = {"updates": shares[r].numpy()}
            arrays.update({f"extra:{k}": v[r].numpy() for k, v in extra.items()})
            self._send(r, "aggregate", {"rule": name, "kwargs": kw}, arrays)
        return self._finish(name, reveal_selection)

    def aggregate_masked(self, name, masked, boxes, nodes, round_id, on_malformed="raise",
                         reveal_selection=True, d=None, min_keep=1, **kwargs):
        """Aggregate updates the clients secret-shared themselves (see :func:`mask`).

        ``masked``: n masked vectors (int64, length d each); ``boxes[i][r]``:
        client i's sealed seed for server r; ``nodes[i]``: client i's node id
        (distinct ints in [0, 2^64)); ``round_id``: the round the clients
        bound their boxes to (later than every round used before, e.g.
        :meth:`new_round`); ``d``: the expected length (default: the first
        well-formed vector's). Returns ``(aggregate, kept, malformed)``: kept
        as in :meth:`aggregate` but indexing the original n clients, malformed
        the clients dropped (only with ``on_malformed="drop"``). Fewer than
        ``min_keep`` clients left: ``RuntimeError``; a request the servers
        refuse (a replayed round, fewer clients than their minimum, servers
        told different things): :class:`PolicyError`. A callable keyword
        value is called with the number of clients kept (e.g.
        ``to_keep=lambda n: n - f``).
        """
        if on_malformed not in ("raise", "drop"):
            raise ValueError(f"on_malformed must be 'raise' or 'drop', got {on_malformed!r}")
        n = len(masked)
        if n == 0 or len(boxes) != n or len(nodes) != n:
            raise ValueError(f"masked, boxes and nodes need one entry per client (got {n}, "
                             f"{len(boxes)}, {len(nodes)}; n >= 1)")
        nodes = [int(x) for x in nodes]
        if len(set(nodes)) != n or not all(0 <= x < 2 ** 64 for x in nodes):
            raise ValueError("node ids must be distinct ints in [0, 2^64)")
        if isinstance(round_id, bool) or not isinstance(round_id, (int, np.integer)) or round_id < 1:
            raise ValueError(f"round_id must be an int >= 1, got {round_id!r}")
        round_id = int(round_id)
        bad = set()
        rows = []
        for i, m in enumerate(masked):
            m = np.asarray(m)
            if d is None and m.dtype == np.int64 and m.ndim == 1 and m.shape[0] > 0:
                d = m.shape[0]
            ok = (m.dtype == np.int64 and m.ndim == 1 and m.shape[0] == d
                  and isinstance(boxes[i], (list, tuple)) and len(boxes[i]) == self.world_size
                  and all(isinstance(b, (bytes, bytearray)) and len(b) == BOX_BYTES for b in boxes[i]))
            if not ok:
                bad.add(i)
            rows.append(m if ok else None)
        if d is None:
            raise MalformedShareError(range(n), "no client sent a 1-D int64 masked vector")
        self._ready()
        self._round = max(self._round, round_id)
        M = np.stack([r if r is not None else np.zeros(d, np.int64) for r in rows])
        hashes = np.frombuffer(b"".join(masked_digest(M[i]) for i in range(n)), np.uint8).reshape(n, 32)
        for r in range(self.world_size):
            bx = np.zeros((n, BOX_BYTES), np.uint8)
            for i in range(n):
                if i not in bad:
                    bx[i] = np.frombuffer(bytes(boxes[i][r]), np.uint8)
            arrays = {"boxes": bx, "masked": M} if r == 0 else {"boxes": bx, "hashes": hashes}
            self._send(r, "open", {"round": round_id, "d": int(d), "nodes": nodes}, arrays)
        for rep in self._collect({"checked"}):
            bad.update(rep["bad"])
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
            for r in range(self.world_size):
                self._send(r, "discard")
            raise error
        for r in range(self.world_size):
            self._send(r, "run", {"round": round_id, "rule": name, "kwargs": kw, "keep": keep},
                       {f"extra:{k}": v[r].numpy() for k, v in extra.items()})
        agg, kept = self._finish(name, reveal_selection)
        if kept is not None:
            kept = np.asarray(keep)[kept]
        self.last_invalid = [keep[i] for i in self.last_invalid]
        return agg, kept, sorted(bad)

    def _prepare(self, name, kwargs):
        self._ready()
        rule = registry.get(name)
        kw, extra = {}, {}
        for k, v in kwargs.items():
            if k not in rule.params:
                continue
            if isinstance(v, (np.ndarray, torch.Tensor, list)):
                if k not in rule.arrays:
                    raise TypeError(f"{name}: argument {k} must be a scalar")
                extra[k] = split(encode(np.asarray(v), k), self.world_size)
            elif isinstance(v, np.generic):
                kw[k] = v.item()
            elif v is None or isinstance(v, (bool, int, float, str)):
                kw[k] = v
            else:
                raise TypeError(f"{name}: argument {k}={v!r} is neither a scalar nor an array")
        return kw, extra

    def _finish(self, name, reveal_selection):
        replies = self._collect({"result"})
        out = sum(torch.from_numpy(rep.arrays["out"]) for rep in replies)  # int64: wraps mod 2^64
        agg = out.double().numpy() / 2.0 ** FRAC_BITS
        self.last_stats = [rep["stats"] for rep in replies]
        self.last_per_client = None
        self.last_invalid = []
        if all("per_client" in rep.arrays for rep in replies):
            self.last_per_client = sum(torch.from_numpy(rep.arrays["per_client"]) for rep in replies).numpy()
            self.last_invalid = np.flatnonzero(self.last_per_client == 0).tolist()
        kept = None
        rule = registry.get(name)
        if rule.selection is not None and reveal_selection:
            if not all("selection" in rep.arrays for rep in replies):
                raise RuntimeError(f"a server returned no selection for {name}")
            kept = rule.selected(sum(torch.from_numpy(rep.arrays["selection"]) for rep in replies).numpy())
        return agg, kept

    # -- the channel -------------------------------------------------------------
    def _send(self, rank, op, fields=None, arrays=None):
        self._ready()
        try:
            wire.send(self.conns[rank], op, fields, arrays, timeout=self.timeout)
        except OSError as e:  # includes timeouts and TLS errors
            self._broken = f"sending {op!r} to server {rank} failed ({type(e).__name__}: {e})"
            if self._error is not None:
                raise self._error from None
            raise RuntimeError(f"aggregation server {rank}: {self._broken}") from None

    def _recv(self, rank, expect):
        """One message from server ``rank`` (or its ``error``), within ``timeout`` s."""
        sock = self.conns[rank]
        deadline = time.monotonic() + self.timeout
        while not wire.readable(sock, 0.2):
            if self._error is not None:
                raise self._error
            if self._thread is not None and not self._thread.is_alive():
                raise RuntimeError(f"aggregation server {rank} stopped without answering")
            if time.monotonic() > deadline:
                self._broken = f"server {rank} did not answer within {self.timeout} s"
                raise TimeoutError(f"aggregation server {rank} did not answer within {self.timeout} s")
        try:
            return wire.recv(sock, set(expect) | {"error"}, first_timeout=self.timeout, timeout=self.timeout)
        except wire.WireError as e:  # never parsed further: nothing from a server is executed
            self._broken = f"server {rank} sent a malformed message ({e})"
            raise RuntimeError(f"aggregation server {rank} sent a malformed message ({e}); "
                               "refusing to read more from it") from None
        except OSError as e:  # closed, reset, timed out, TLS error
            self._broken = f"server {rank}'s connection failed ({type(e).__name__}: {e})"
            if self._thread is not None:
                self._thread.join(timeout=10)
            raise (self._error or RuntimeError(f"aggregation server {rank} closed its connection "
                                               f"({type(e).__name__}: {e})")) from None

    def _collect(self, expect):
        """Every server's reply; refusals are raised once all have answered (they all
        answer a refusal), other errors at once (the others may never answer)."""
        replies, refusal = [], None
        for r in range(self.world_size):
            rep = self._recv(r, expect)
            if rep.op == "error":
                kind, text = rep["kind"], rep["message"]
                if kind in ("policy", "disagree"):
                    refusal = refusal or PolicyError(f"aggregation server {r} refused: {text}", kind, r)
                    continue
                self._broken = f"server {r} reported a {kind} error"
                raise RuntimeError(f"aggregation server {r} failed ({kind}):\n{text}")
            replies.append(rep)
        if refusal is not None:
            raise refusal
        return replies
