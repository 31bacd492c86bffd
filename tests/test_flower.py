"""Flower integration: SecureRobustAggregation against Flower's own strategies on
the same updates, and the failure paths (dropout, malformed shares, missing mod,
dead server). Strategies run through Flower's ``Strategy.start`` with an
in-process Grid (tests/_flower_grid.py); one small run goes through Flower's
simulation engine (Ray) end to end."""

import os
import signal

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import FedMedian, FedTrimmedAvg, Krum
from flwr.serverapp.strategy.multikrum import select_multikrum

from _flower_grid import InProcessGrid
from pgkernels.integrations.flower import (
    SHARE, MalformedShareError, SecureRobustAggregation, make_secret_share_mod, secret_share_mod)
from pgkernels.serving.service import AggregationServers

N = 9  # clients
F = 2  # malicious: partitions 0 and 1 send large, shifted updates
_rng = np.random.default_rng(3)
DELTA = {i: [_rng.normal(size=(4, 6)) * (0.2 + 0.05 * i), _rng.normal(size=6) * 0.1] for i in range(N)}
for _i in range(F):
    DELTA[_i] = [d * 8 + 2.5 for d in DELTA[_i]]
INIT = ArrayRecord([np.zeros((4, 6), np.float32), np.full(6, 0.5, np.float32)])
COMMON = dict(fraction_evaluate=0.0, min_train_nodes=N, min_available_nodes=N)


def client_app(mods=(), rounds_scale=True):
    app = ClientApp(mods=list(mods))

    @app.train()
    def train(msg, context):
        arrs = msg.content["arrays"].to_numpy_ndarrays()
        pid = int(context.node_config["partition-id"])
        rnd = int(msg.content["config"]["server-round"])
        new = [a + (d / rnd if rounds_scale else d) for a, d in zip(arrs, DELTA[pid])]
        return Message(RecordDict({"arrays": ArrayRecord([x.astype(np.float32) for x in new]),
                                   "metrics": MetricRecord({"num-examples": 10 + pid, "pid": pid})}),
                       reply_to=msg)

    return app


@pytest.fixture(scope="module")
def servers():
    with AggregationServers(world_size=2, timeout=120) as s:
        yield s


def pinned(servers):
    """The sharing mod with the servers' keys pinned (as a deployment distributes them)."""
    return make_secret_share_mod(server_keys=servers.public_keys)


def _flat(result):
    return np.concatenate([a.ravel() for a in result.arrays.to_numpy_ndarrays()])


class _KrumRecording(Krum):
    """Flower's Krum, recording which node it chose each round."""

    def aggregate_train(self, server_round, replies):
        replies = [m for m in replies if not m.has_error()]
        chosen = select_multikrum([m.content for m in replies], self.num_malicious_nodes, self.num_nodes_to_select)
        self.chosen.append([next(m.metadata.src_node_id for m in replies if m.content is c) for c in chosen])
        return super().aggregate_train(server_round, replies)


@pytest.mark.parametrize("rule", ["krum", "median", "trimmed_mean"])
def test_same_result_as_flowers_own_strategy(servers, rule):
    if rule == "krum":
        theirs = _KrumRecording(num_malicious_nodes=F, **COMMON)
        theirs.chosen = []
        ours = SecureRobustAggregation("krum", servers=servers, num_malicious_clients=F, **COMMON)
    elif rule == "median":
        theirs = FedMedian(**COMMON)
        ours = SecureRobustAggregation("median", servers=servers, **COMMON)
    else:
        theirs = FedTrimmedAvg(beta=0.25, **COMMON)
        ours = SecureRobustAggregation("trimmed_mean", servers=servers, beta=0.25, **COMMON)
    a = ours.start(grid=InProcessGrid(client_app([pinned(servers)]), N), initial_arrays=INIT, num_rounds=2)
    b = theirs.start(grid=InProcessGrid(client_app(), N), initial_arrays=INIT, num_rounds=2)
    np.testing.assert_allclose(_flat(a), _flat(b), atol=1e-4)
    assert [sorted(r["nodes"]) for r in ours.rounds] == [list(range(101, 101 + N))] * 2
    if rule == "krum":
        assert [r["selected"] for r in ours.rounds] == theirs.chosen
        assert all(s[0] >= 101 + F for s in theirs.chosen)  # a benign client, not an attacker
    # the train metrics are still aggregated (FedAvg's weighted mean)
    assert "pid" in a.train_metrics_clientapp[2]
    assert servers.conns is not None  # servers passed in are left running


def test_three_servers_and_3pc_krum():
    ours = SecureRobustAggregation("multi_krum", world_size=3, num_malicious_clients=F, num_clients_to_keep=4,
                                   **COMMON)
    # the strategy starts its servers itself: the clients opt in to the keys in the train config
    mod = make_secret_share_mod(trust_config_keys=True, world_size=3)
    a = ours.start(grid=InProcessGrid(client_app([mod]), N), initial_arrays=INIT, num_rounds=1)
    sel = ours.rounds[0]["selected"]
    assert len(sel) == 4 and not {101, 102} & set(sel)
    mean = [np.mean([DELTA[n - 101][k] for n in sel], 0) for k in range(2)]
    want = np.concatenate([(i + m).ravel() for i, m in zip(INIT.to_numpy_ndarrays(), mean)])
    np.testing.assert_allclose(_flat(a), want, atol=1e-4)
    assert ours.servers is None  # its own servers are stopped at the end of start()


def _median_of(nodes):
    return np.concatenate([(i + np.median([DELTA[n - 101][k] for n in nodes], 0)).ravel()
                           for k, i in enumerate(INIT.to_numpy_ndarrays())])


@pytest.mark.parametrize("mode", ["drop", "vanish"])
def test_client_dropping_out_is_left_out(servers, mode):
    grid = InProcessGrid(client_app([pinned(servers)]), N)
    grid.fail = {104: mode, 107: mode}
    ours = SecureRobustAggregation("median", servers=servers, fraction_evaluate=0.0, min_train_nodes=5,
                                   min_available_nodes=N)
    a = ours.start(grid=grid, initial_arrays=INIT, num_rounds=1)
    rest = [n for n in grid.nodes if n not in (104, 107)]
    assert sorted(ours.rounds[0]["nodes"]) == rest
    assert sorted(ours.rounds[0]["dropped_out"]) == ([104, 107] if mode == "drop" else [])
    np.testing.assert_allclose(_flat(a), _median_of(rest), atol=1e-4)


def test_too_few_clients_left_is_an_error(servers):
    grid = InProcessGrid(client_app([pinned(servers)]), N)
    grid.fail = {103: "drop", 105: "drop", 106: "vanish"}
    ours = SecureRobustAggregation("krum", servers=servers, num_malicious_clients=F, fraction_evaluate=0.0,
                                   min_train_nodes=5, min_available_nodes=N)
    with pytest.raises(RuntimeError, match=r"6 usable replies \(2 dropped out.*needs at least 7"):
        ours.start(grid=grid, initial_arrays=INIT, num_rounds=1)


def _corrupt_box(msg, context, call_next):
    """A client whose share for server 1 is garbage (placed outside the sharing mod)."""
    reply = call_next(msg, context)
    if int(context.node_config["partition-id"]) == 5 and msg.metadata.message_type.startswith("train"):
        boxes = list(reply.content[SHARE]["boxes"])
        boxes[1] = bytes(b ^ 1 for b in boxes[1])
        reply.content[SHARE] = ConfigRecord({"boxes": boxes})
    return reply


def test_malformed_share_raises_naming_the_node(servers):
    ours = SecureRobustAggregation("median", servers=servers, **COMMON)
    with pytest.raises(MalformedShareError) as e:
        ours.start(grid=InProcessGrid(client_app([_corrupt_box, pinned(servers)]), N), initial_arrays=INIT,
                   num_rounds=1)
    assert e.value.clients == [106]
    # the servers discarded that round and go on
    agg, _ = servers.aggregate("fedavg", np.ones((3, 4)))
    np.testing.assert_allclose(agg, 1.0, atol=1e-4)


def test_malformed_share_dropped_when_asked(servers):
    ours = SecureRobustAggregation("median", servers=servers, on_malformed="drop", fraction_evaluate=0.0,
                                   min_train_nodes=5, min_available_nodes=N)
    a = ours.start(grid=InProcessGrid(client_app([_corrupt_box, pinned(servers)]), N), initial_arrays=INIT,
                   num_rounds=1)
    assert ours.rounds[0]["malformed"] == [106]
    rest = [n for n in range(101, 101 + N) if n != 106]
    assert sorted(ours.rounds[0]["nodes"]) == rest
    np.testing.assert_allclose(_flat(a), _median_of(rest), atol=1e-4)


def test_client_without_the_mod_is_malformed_not_used(servers):
    mixed = client_app([pinned(servers)])
    plain = client_app()
    grid = InProcessGrid(mixed, N)
    orig = grid.send_and_receive

    def send_and_receive(messages, *, timeout=None):  # node 102 runs a ClientApp without the mod
        messages = list(messages)
        grid.client_app = mixed
        out = [r for r in orig([m for m in messages if m.metadata.dst_node_id != 102])]
        grid.client_app = plain
        out += orig([m for m in messages if m.metadata.dst_node_id == 102])
        return out

    grid.send_and_receive = send_and_receive
    ours = SecureRobustAggregation("median", servers=servers, **COMMON)
    with pytest.raises(MalformedShareError, match="secret_share_mod") as e:
        ours.start(grid=grid, initial_arrays=INIT, num_rounds=1)
    assert e.value.clients == [102]


def test_mod_fails_closed_without_server_keys(monkeypatch):
    from flwr.app import Context

    monkeypatch.delenv("PGKERNELS_SERVER_KEYS", raising=False)
    InProcessGrid(client_app(), 1)  # sets Flower's task identity for Message()
    msg = Message(RecordDict({"arrays": INIT, "config": ConfigRecord({"server-round": 1})}), 101, "train")
    ctx = Context(run_id=7, node_id=101, node_config={"partition-id": 0}, state=RecordDict(), run_config={})
    called = []
    with pytest.raises(ValueError, match="refusing to send the update in the clear"):
        secret_share_mod(msg, ctx, lambda m, c: called.append(1))
    assert not called  # the client did not even train
    with pytest.raises(ValueError, match="aggregator must be one of"):
        SecureRobustAggregation("mean")
    with pytest.raises(ValueError, match="beta"):
        SecureRobustAggregation("trimmed_mean", beta=0.5)
    # pinned keys are used instead of the config's
    mod = make_secret_share_mod(server_keys=[b"\0" * 32, b"\1" * 32])
    assert callable(mod)


def test_server_death_ends_the_round_with_an_error():
    from test_service import _party_pids

    before = set(_party_pids())  # the module's servers are running too
    s = AggregationServers(world_size=2, timeout=300)  # the start may be slow on a loaded machine; the death is seen at once
    s.start()
    try:
        pids = sorted(set(_party_pids()) - before)
        assert len(pids) == 2
        os.kill(pids[0], signal.SIGKILL)
        ours = SecureRobustAggregation("median", servers=s, **COMMON)
        with pytest.raises((RuntimeError, TimeoutError, OSError)):
            ours.start(grid=InProcessGrid(client_app([pinned(s)]), N), initial_arrays=INIT, num_rounds=1)
    finally:
        s.close()


def test_flower_simulation_end_to_end(tmp_path):
    """Flower's simulation engine (Ray), 5 digits clients, 1 backdoor attacker:
    Flower's Krum in the clear and pgkernels' Krum in MPC pick the same clients
    and reach the same accuracy."""
    from pgkernels.integrations import flower_example as ex

    rc = ex.main(["--dataset", "digits", "--clients", "5", "--malicious", "1", "--rounds", "2",
                  "--local-steps", "10", "--runs", "flower-krum,pgkernels-krum", "--out", str(tmp_path)])
    assert rc == 0
    import json

    res = json.loads((tmp_path / "flower_comparison.json").read_text())
    by = {r["run"]: r for r in res["results"]}
    assert res["krum_selection_agreement"] == 2
    assert by["pgkernels-krum"]["selected"] == by["flower-krum"]["selected"]
    assert all(0 not in s for s in by["pgkernels-krum"]["selected"])  # the attacker is never chosen
    assert abs(by["pgkernels-krum"]["final_accuracy"] - by["flower-krum"]["final_accuracy"]) <= 0.01
    assert by["pgkernels-krum"]["mpc"]["mb_per_server_per_round"] > 0
    assert (tmp_path / "flower_comparison.png").exists()
