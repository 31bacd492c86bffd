"""Flower integration: robust aggregation in MPC, with no server seeing an update.

Flower's robust strategies (Krum, Bulyan, FedMedian, FedTrimmedAvg) need every
client's update in the clear; its SecAgg+ hands the strategy only the sum.
Here a client's update goes to two (or three) pgkernels aggregation servers as
additive shares, and the Flower strategy receives only the aggregate.

Client side -- a Flower ``Mod`` for ``ClientApp(mods=[...])``, made by
:func:`make_secret_share_mod` (or the default :data:`secret_share_mod`):
after the client trains, the mod replaces the reply's weights by

* ``masked = enc(w_trained - w_global) - sum_r PRG(seed_r)`` (int64, fixed point
  with 16 fractional bits; AES-128-CTR streams, :mod:`pgkernels.serving.client`),
* one sealed box per aggregation server holding seed r, encrypted to server r's
  X25519 key (:mod:`pgkernels.serving.sealing`) and bound to (the servers'
  session nonce, the round id the servers will open, the client's node id, d,
  SHA-256 of ``masked``, r).

Which keys the mod seals to decides who can open the shares, so it must not
take them from the Flower server without being told to:

* ``make_secret_share_mod(server_keys=[k0, k1, ...])`` pins the servers' keys
  (``DIR/server-keys.txt`` from ``python -m pgkernels.serving.credentials``);
* the default ``secret_share_mod`` pins the keys in ``PGKERNELS_SERVER_KEYS``
  (hex, comma-separated, rank order), read when it runs;
* ``make_secret_share_mod(trust_config_keys=True, world_size=K)`` takes them
  from the train config (``pgk-server-keys``) -- only against a Flower server
  that follows the protocol (e.g. a simulation whose servers it starts).

Fewer than two keys (or than ``world_size``), repeated keys, or config keys
that differ from the pinned ones are refused, before the client trains; so is
a train message without keys, session or round: the mod fails closed and
never sends weights in the clear. The session nonce and round id come from the
train config (``pgk-session``, ``pgk-round``): a Flower server that lies about
them only makes the boxes fail to open, since each server checks them against
its own state (:mod:`pgkernels.serving.service`).

The Flower server relays ``masked`` (uniformly random on its own) and boxes it
cannot open; server r's share is ``PRG(seed_r)`` (server 0 also adds
``masked``). What any single server, or the Flower server process, sees of a
client is therefore a share that reveals nothing; the guarantee holds as long
as not all aggregation servers collude (the dealer colluding with none). The
reply carries one vector of d int64 (the size of a float64 update) plus
``world_size`` boxes of 64 bytes. What a Flower server that deviates from the
protocol can still learn (it picks the clients of each round, Sybil clients,
rule outputs such as Krum's that are one client's update, ...) is listed in
:mod:`pgkernels.serving.service`; it needs the aggregation servers on hosts it
does not control (``AggregationServers(external=...)``): local servers are
started, and so trusted, by the Flower server process.

Server side -- :class:`SecureRobustAggregation`, a Flower ``Strategy``
(``flwr.serverapp.strategy.FedAvg`` API of flwr 1.42) that sends the servers'
public keys, session nonce and a fresh round id in every train config, hands
the masked vectors, boxes and node ids to
:class:`pgkernels.serving.AggregationServers`, and sets the new global model
to ``w_global + aggregate``. Only the aggregate (and, with
``reveal_selection=True``, the indices of the clients a selecting rule kept,
as Flower's own Krum reveals) leaves MPC. Sampling (``fraction_train``,
``min_train_nodes``, ...), evaluation, ``evaluate_fn`` and metric aggregation
are FedAvg's.

Failure handling:

* a client that drops out mid-round (its reply is an error or missing) is left
  out of the round, and the aggregate is computed over the clients that
  replied; if fewer replies remain than the rule needs (``min_train_nodes``,
  e.g. Krum's n >= 2f + 3, and never fewer than 3, which the servers enforce
  too) the round ends with a ``RuntimeError`` naming the counts;
* a malformed share (a box that does not open, a masked vector of the wrong
  type or length or altered in transit, a reply without pgkernels records --
  e.g. a client without the mod, whose weights are then not used) ends the
  round with :class:`MalformedShareError` naming the node ids
  (``on_malformed="raise"``, the default) or, with ``on_malformed="drop"``,
  leaves those clients out and records them in
  :attr:`SecureRobustAggregation.rounds`;
* a server that raises, dies or hangs makes the round raise within the servers'
  ``timeout`` (see :class:`~pgkernels.serving.AggregationServers`).

Aggregates are unweighted (each client counts once), as in the robust rules'
papers: weighting by self-reported example counts would let a malicious client
inflate its weight. Flower's Krum, FedMedian and FedTrimmedAvg are unweighted
too, so the results agree with theirs up to fixed-point rounding (about 2^-16
per coordinate); Flower's FedAvg and MultiKrum weight by ``num-examples``.
"""

import logging
import os
import time

import numpy as np

from ..serving.client import SESSION_BYTES, check_server_keys
from ..defenses import registry
from ..serving.service import MIN_CLIENTS_FLOOR, MalformedShareError, mask

KEYS = "pgk-server-keys"  # train config: the servers' raw X25519 public keys, rank order
SESSION = "pgk-session"  # train config: the servers' 16-byte session nonce
ROUND = "pgk-round"  # train config: the round id the servers will open (not Flower's round)
SHARE = "pgk-share"  # train reply: ConfigRecord with the sealed boxes
MASKED = "masked"  # key of the masked vector in the reply's ArrayRecord
SERVER_KEYS_ENV = "PGKERNELS_SERVER_KEYS"  # pinned keys for the default mod: hex, comma-separated

log = logging.getLogger("pgkernels.flower")

__all__ = ["KEYS", "ROUND", "SERVER_KEYS_ENV", "SESSION", "MalformedShareError", "SecureRobustAggregation",
           "make_secret_share_mod", "secret_share_mod"]


def _flat(record):
    """Concatenate an ArrayRecord's arrays (float64), with what it takes to undo it."""
    keys = list(record.keys())
    arrays = [record[k].numpy() for k in keys]
    layout = [(k, a.shape, a.dtype) for k, a in zip(keys, arrays)]
    flat = np.concatenate([a.astype(np.float64).ravel() for a in arrays]) if arrays else np.zeros(0)
    return flat, layout


def _unflat(vec, layout):
    from flwr.app import Array, ArrayRecord

    out = ArrayRecord()
    pos = 0
    for k, shape, dtype in layout:
        n = int(np.prod(shape)) if len(shape) else 1
        out[k] = Array(np.asarray(vec[pos:pos + n].reshape(shape)).astype(dtype))
        pos += n
    return out


def _is_train(msg):
    return msg.metadata.message_type.split(".")[0] == "train"


def make_secret_share_mod(server_keys=None, *, world_size=None, trust_config_keys=False, arrayrecord_key=None,
                          configrecord_key="config"):
    """A Flower mod that secret-shares the client's update (see the module docstring).

    ``server_keys``: the aggregation servers' raw X25519 public keys (rank
    order), pinned out of band. ``None``: the keys in the environment variable
    ``PGKERNELS_SERVER_KEYS`` when the mod runs, or -- only with
    ``trust_config_keys=True`` -- those the Flower server puts in the train
    config. ``world_size``: the number of servers (default: as many as keys,
    at least 2); fewer keys, or repeated keys, are refused.
    """
    if server_keys is not None and trust_config_keys:
        raise ValueError("give pinned server_keys or trust_config_keys=True, not both")
    if world_size is not None and (isinstance(world_size, bool) or not isinstance(world_size, int)
                                   or world_size < 2):
        raise ValueError(f"world_size must be an int >= 2, got {world_size!r}")
    pinned = check_server_keys(server_keys, world_size) if server_keys is not None else None

    def server_keys_for(cfg):
        offered = [bytes(k) for k in cfg[KEYS]] if KEYS in cfg else None
        if pinned is not None:
            keys = pinned
        elif trust_config_keys:
            if not offered:
                raise ValueError(f"secret_share_mod: no aggregation-server keys in the train config's {KEYS!r}; "
                                 "refusing to send the update in the clear")
            keys = offered
        else:
            env = os.environ.get(SERVER_KEYS_ENV, "").strip()
            if not env:
                raise ValueError(f"secret_share_mod: no pinned aggregation-server keys (set {SERVER_KEYS_ENV}, "
                                 "pass make_secret_share_mod(server_keys=[...]), or opt in to the Flower "
                                 "server's keys with trust_config_keys=True); refusing to send the update "
                                 "in the clear")
            from ..serving.credentials import parse_server_keys

            keys = parse_server_keys(env)
        try:
            keys = check_server_keys(keys, world_size)
        except ValueError as e:
            raise ValueError(f"secret_share_mod: {e}") from None
        if offered is not None and offered != keys:
            raise ValueError("secret_share_mod: the train config's server keys differ from the pinned ones; "
                             "refusing to share (a substituted key would open a share)")
        return keys

    def secret_share_mod(msg, context, call_next):
        if not _is_train(msg):
            return call_next(msg, context)
        cfg = msg.content.config_records.get(configrecord_key)
        if cfg is None:
            raise ValueError(f"secret_share_mod: the train message has no ConfigRecord {configrecord_key!r}; "
                             "refusing to send the update in the clear")
        keys = server_keys_for(cfg)
        session, round_id = cfg.get(SESSION), cfg.get(ROUND)
        if not isinstance(session, bytes) or len(session) != SESSION_BYTES or isinstance(round_id, bool) \
                or not isinstance(round_id, int) or round_id < 1:
            raise ValueError(f"secret_share_mod: the train config has no valid {SESSION!r} / {ROUND!r} (is the "
                             "strategy SecureRobustAggregation?); refusing to send the update in the clear")
        node = context.node_id
        if msg.metadata.dst_node_id != node:
            raise ValueError(f"secret_share_mod: message for node {msg.metadata.dst_node_id} delivered to node {node}")
        rec_key = arrayrecord_key or next(iter(msg.content.array_records))
        global_flat, layout = _flat(msg.content.array_records[rec_key])
        reply = call_next(msg, context)
        if reply.has_error():
            return reply
        trained = reply.content.array_records.get(rec_key)
        if trained is None:
            raise ValueError(f"secret_share_mod: the client's reply has no ArrayRecord {rec_key!r}")
        flat, layout2 = _flat(trained)
        if [(k, s) for k, s, _ in layout2] != [(k, s) for k, s, _ in layout]:
            raise ValueError("secret_share_mod: the trained arrays do not match the global model's keys/shapes")
        masked, boxes = mask(flat - global_flat, keys, session, round_id, node)
        from flwr.app import Array, ArrayRecord, ConfigRecord

        reply.content[rec_key] = ArrayRecord({MASKED: Array(masked)})
        reply.content[SHARE] = ConfigRecord({"boxes": boxes})
        return reply

    return secret_share_mod


secret_share_mod = make_secret_share_mod()
secret_share_mod.__doc__ = (f"The default mod: server keys pinned in ${SERVER_KEYS_ENV} "
                            "(see :func:`make_secret_share_mod`).")


def _strategy_base():
    from flwr.serverapp.strategy import FedAvg

    return FedAvg


class SecureRobustAggregation(_strategy_base()):
    """Flower strategy: any ``pgkernels.defenses`` rule, computed in MPC on secret shares.

    Args:
        aggregator: a rule of :mod:`pgkernels.defenses.registry` (``"fedavg"``,
            ``"median"``, ``"trimmed_mean"``, ``"norm_clip"``, ``"krum"``,
            ``"multi_krum"``, ``"bulyan"``, ``"fltrust"``, ``"flame"``, ``"auror"``).
        servers: a running :class:`~pgkernels.serving.AggregationServers`
            (e.g. servers on other hosts); ``None`` starts ``world_size``
            local servers and a dealer on first use, stopped by :meth:`close`
            (and at the end of :meth:`start`).
        min_clients: for servers started here, their minimum number of
            clients per round (never below 3; the rule's minimum applies too).
        num_malicious_clients: f for Krum, Multi-Krum, Bulyan, FLAME.
        num_clients_to_keep: Multi-Krum's m (default n - f).
        beta: proportion cut at each end by the trimmed mean (as FedTrimmedAvg).
        max_norm: norm bound for ``norm_clip``.
        server_update_fn: FLTrust's root update, ``fn(server_round, arrays) -> flat vector``.
        aggregator_kwargs: more keyword arguments for the rule.
        on_malformed: ``"raise"`` or ``"drop"`` (see the module docstring).
        reveal_selection: reveal which clients a selecting rule kept (logged
            and kept in :attr:`rounds`); ``False`` reveals only the aggregate.
        **kwargs: FedAvg's (``fraction_train``, ``min_train_nodes``,
            ``min_available_nodes``, ``fraction_evaluate``,
            ``train_metrics_aggr_fn``, ``evaluate_metrics_aggr_fn``, ...).

    :attr:`rounds` holds per round the node ids aggregated, selected, dropped
    out, malformed (shares that did not open) and invalid (updates outside the
    rule's input bound, found on the shares by the servers and left out), the
    seconds and the bytes each server sent.
    """

    def __init__(self, aggregator="krum", *, servers=None, world_size=2, dealer="ttp", timeout=600.0,
                 min_clients=None, num_malicious_clients=0, num_clients_to_keep=None, beta=0.2, max_norm=None,
                 server_update_fn=None, aggregator_kwargs=None, on_malformed="raise",
                 reveal_selection=True, **kwargs):
        if aggregator not in registry.RULES:
            raise ValueError(f"aggregator must be one of {list(registry.NAMES)}, got {aggregator!r}")
        rule = registry.get(aggregator)
        if on_malformed not in ("raise", "drop"):
            raise ValueError(f"on_malformed must be 'raise' or 'drop', got {on_malformed!r}")
        if not isinstance(num_malicious_clients, int) or num_malicious_clients < 0:
            raise ValueError(f"num_malicious_clients must be an int >= 0, got {num_malicious_clients!r}")
        if not 0.0 <= float(beta) < 0.5:
            raise ValueError(f"beta must be in [0, 0.5), got {beta!r}")
        if aggregator == "norm_clip" and max_norm is None:
            raise ValueError("aggregator='norm_clip' needs max_norm")
        if rule.server_update and server_update_fn is None:
            raise ValueError(f"aggregator={aggregator!r} needs server_update_fn(server_round, arrays) -> root update")
        super().__init__(**kwargs)
        self.aggregator = aggregator
        self.servers = servers
        self._own_servers = servers is None
        self.world_size = servers.world_size if servers is not None else world_size
        self.dealer = dealer
        self.timeout = timeout
        self.min_clients = min_clients
        self.num_malicious_clients = num_malicious_clients
        self.num_clients_to_keep = num_clients_to_keep
        self.beta = float(beta)
        self.max_norm = max_norm
        self.server_update_fn = server_update_fn
        self.aggregator_kwargs = dict(aggregator_kwargs or {})
        self.on_malformed = on_malformed
        self.reveal_selection = reveal_selection
        self.rounds = []
        self._global = None

    # -- lifecycle ----------------------------------------------------------------
    def _ensure_servers(self):
        if self.servers is None:
            from ..serving.service import AggregationServers

            self.servers = AggregationServers(world_size=self.world_size, dealer=self.dealer,
                                              timeout=self.timeout, min_clients=self.min_clients)
            self.servers.start()
        return self.servers

    def close(self):
        """Stop the servers this strategy started (servers passed in are left running)."""
        if self._own_servers and self.servers is not None:
            self.servers.close()
            self.servers = None

    def start(self, *args, **kwargs):
        try:
            return super().start(*args, **kwargs)
        finally:
            self.close()

    def summary(self):
        log.info("SecureRobustAggregation: %s in MPC on %d servers (f=%d)", self.aggregator,
                 self.world_size, self.num_malicious_clients)
        super().summary()

    # -- rounds -------------------------------------------------------------------
    def configure_train(self, server_round, arrays, config, grid):
        servers = self._ensure_servers()
        round_id = servers.new_round()  # the servers open each round id once
        self._global = (server_round, arrays, round_id)
        config[KEYS] = list(servers.public_keys)
        config[SESSION] = servers.session
        config[ROUND] = round_id
        return super().configure_train(server_round, arrays, config, grid)

    def _rule_kwargs(self, server_round, global_arrays):
        f = self.num_malicious_clients
        # to_keep is resolved on the number of clients actually aggregated (after any drops)
        kw = {"num_malicious": f, "proportiontocut": self.beta,
              "to_keep": self.num_clients_to_keep if self.num_clients_to_keep is not None else (lambda n: n - f)}
        if self.max_norm is not None:
            kw["max_norm"] = self.max_norm
        if registry.get(self.aggregator).server_update:
            kw["server_update"] = np.asarray(self.server_update_fn(server_round, global_arrays),
                                             dtype=np.float64).ravel()
        kw.update(self.aggregator_kwargs)
        return kw

    def _min_clients(self):
        """The fewest usable replies for a round: the rule's minimum (the registry's,
        as the servers enforce it), ``min_train_nodes``, ``min_clients``, never below 3."""
        kw = {"num_malicious": self.num_malicious_clients, **self.aggregator_kwargs}
        need = registry.get(self.aggregator).min_clients_for(kw)
        return max(need, self.min_train_nodes, MIN_CLIENTS_FLOOR, self.min_clients or 0)

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        if self._global is None or self._global[0] != server_round:
            raise RuntimeError(f"aggregate_train for round {server_round} without configure_train")
        _, global_arrays, round_id = self._global
        global_flat, layout = _flat(global_arrays)
        d = global_flat.size
        valid, errors = self._check_and_log_replies(replies, is_train=True, validate=False)
        dropped = [m.metadata.src_node_id for m in errors]
        nodes, masked, boxes, bad = [], [], [], []
        for m in valid:
            node = m.metadata.src_node_id
            arrs = m.content.array_records
            share = m.content.config_records.get(SHARE)
            rec = next(iter(arrs.values())) if len(arrs) == 1 else None
            if rec is None or share is None or list(rec.keys()) != [MASKED] or "boxes" not in share:
                bad.append(node)  # e.g. a client without the mod: its weights are not used
                continue
            nodes.append(node)
            masked.append(rec[MASKED].numpy())
            boxes.append(list(share["boxes"]))
        if bad and self.on_malformed == "raise":
            raise MalformedShareError(bad, "replies without a pgkernels share (is secret_share_mod installed?)")
        if len(nodes) < self._min_clients():
            raise RuntimeError(
                f"round {server_round}: {len(nodes)} usable replies ({len(dropped)} dropped out, {len(bad)} "
                f"malformed) but {self.aggregator} with f={self.num_malicious_clients} and min_train_nodes="
                f"{self.min_train_nodes} needs at least {self._min_clients()}")
        t0 = time.perf_counter()
        kw = self._rule_kwargs(server_round, global_arrays)
        try:
            agg, kept, bad_idx = self.servers.aggregate_masked(
                self.aggregator, masked, boxes, nodes, round_id, on_malformed=self.on_malformed,
                reveal_selection=self.reveal_selection, d=d, min_keep=self._min_clients(), **kw)
        except MalformedShareError as e:
            raise MalformedShareError([nodes[i] for i in e.clients], "sealed seeds that do not open or "
                                      f"masked vectors that are not int64 of length {d}") from None
        if agg.shape != (d,):
            raise RuntimeError(f"aggregate of length {agg.shape} for a model of {d} parameters")
        bad += [nodes[i] for i in bad_idx]
        used = [nodes[i] for i in range(len(nodes)) if i not in set(bad_idx)]
        invalid = [nodes[i] for i in self.servers.last_invalid]  # outside the rule's bound: left out
        info = {"round": server_round, "nodes": used, "dropped_out": dropped, "malformed": bad,
                "invalid": invalid, "selected": [nodes[i] for i in kept] if kept is not None else None,
                "seconds": time.perf_counter() - t0,
                "bytes_per_server": [s.get("bytes_sent") for s in (self.servers.last_stats or [])]}
        self.rounds.append(info)
        log.info("round %d: %s over %d clients in MPC (%.2f s)%s%s", server_round, self.aggregator, len(used),
                 info["seconds"], f", selected {info['selected']}" if kept is not None else "",
                 f", malformed {bad}" if bad else "")
        arrays = _unflat(global_flat + agg, layout)
        used_set = set(used)
        contents = [m.content for m in valid if m.metadata.src_node_id in used_set]
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key) if contents else None
        return arrays, metrics
