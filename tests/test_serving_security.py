"""The aggregation service against its attackers: an active coordinator (it picks
which boxes to open, replays them, drops clients, alters relayed bytes, tells
servers different things, sends pickles), a server that pickles or poses as
another rank, strangers on the coordinator's port, and a Flower server handing
clients bad keys. Each test plays the attacker and checks the attack fails."""

import pickle
import secrets
import socket
import ssl
import struct
import threading
import time

import numpy as np
import pytest

from pgkernels.serving import wire
from pgkernels.serving.client import BOX_BYTES, mask, masked_digest
from pgkernels.serving.credentials import COORDINATOR_NAME, make_credentials, server_context
from pgkernels.serving.service import AggregationServers, MalformedShareError, PolicyError, Refusal, ServerState


def _updates(n, d=12, seed=0):
    return np.round(np.random.default_rng(seed).normal(size=(n, d)) * 2 ** 16) / 2 ** 16


def _clients(s, U, rid=None, nodes=None):
    rid = s.new_round() if rid is None else rid
    nodes = list(range(500, 500 + len(U))) if nodes is None else nodes
    ms = [mask(U[i], s.public_keys, s.session, rid, nodes[i]) for i in range(len(U))]
    return [m for m, _ in ms], [b for _, b in ms], nodes, rid


def _send_open(s, masked, boxes, nodes, rid, rank=None):
    """The attacker's own 'open' (what aggregate_masked would send, but under its control)."""
    M = np.stack(masked)
    n, d = M.shape
    hashes = np.frombuffer(b"".join(masked_digest(m) for m in M), np.uint8).reshape(n, 32)
    for r in range(s.world_size) if rank is None else [rank]:
        bx = np.stack([np.frombuffer(b[r], np.uint8) for b in boxes])
        arrays = {"boxes": bx, "masked": M} if r == 0 else {"boxes": bx, "hashes": hashes}
        wire.send(s.conns[r], "open", {"round": rid, "d": d, "nodes": list(nodes)}, arrays)


class Evil:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def servers():
    with AggregationServers(world_size=2, timeout=120) as s:
        yield s


# -- an active coordinator -------------------------------------------------------------

def test_channel_is_tls13(servers):
    assert all(c.version() == "TLSv1.3" for c in servers.conns)
    assert len(servers.session) == 16 and len(set(servers.public_keys)) == 2


def test_single_client_aggregate_refused(servers):
    U = _updates(4)
    # through the API: one client, two clients
    for n in (1, 2):
        with pytest.raises(PolicyError, match="no fewer than 3"):
            servers.aggregate_masked("fedavg", *_clients(servers, U[:n]))
    # the coordinator opens four clients, then asks for an aggregate over one of them
    masked, boxes, nodes, rid = _clients(servers, U)
    _send_open(servers, masked, boxes, nodes, rid)
    assert all(rep["bad"] == [] for rep in servers._collect({"checked"}))
    for r in range(2):
        wire.send(servers.conns[r], "run", {"round": rid, "rule": "fedavg", "kwargs": {}, "keep": [2]})
    with pytest.raises(PolicyError, match="fedavg over 1 clients") as e:
        servers._collect({"result"})
    assert e.value.kind == "policy"
    # the rule's own minimum holds too: Krum with f=1 needs 5 clients, whatever min_keep says
    with pytest.raises(PolicyError, match="no fewer than 5"):
        servers.aggregate_masked("krum", *_clients(servers, U), num_malicious=1, min_keep=1)
    # and an honest request still works
    agg, _, _ = servers.aggregate_masked("fedavg", *_clients(servers, U))
    np.testing.assert_allclose(agg, U.mean(0), atol=1e-3)


def test_replayed_round_and_boxes_refused(servers):
    U = _updates(4, seed=1)
    masked, boxes, nodes, rid = _clients(servers, U)
    agg, _, _ = servers.aggregate_masked("fedavg", masked, boxes, nodes, rid)
    np.testing.assert_allclose(agg, U.mean(0), atol=1e-3)
    # n vs n-1 differencing: the same round again without client 3
    with pytest.raises(PolicyError, match="replayed or out-of-order round"):
        servers.aggregate_masked("fedavg", masked[:3], boxes[:3], nodes[:3], rid)
    # an older round
    with pytest.raises(PolicyError, match="replayed or out-of-order"):
        servers.aggregate_masked("fedavg", masked[:3], boxes[:3], nodes[:3], rid - 1 if rid > 1 else rid)
    # the same boxes relabelled as a new round do not open
    with pytest.raises(MalformedShareError) as e:
        servers.aggregate_masked("fedavg", masked[:3], boxes[:3], nodes[:3], servers.new_round())
    assert e.value.clients == [0, 1, 2]
    # nor do they open mixed into a fresh round of honest clients
    fresh = _clients(servers, _updates(3, seed=2), nodes=[600, 601, 602])
    rid2 = fresh[3]
    with pytest.raises(MalformedShareError) as e:
        servers.aggregate_masked("fedavg", fresh[0] + masked[:1], fresh[1] + boxes[:1], fresh[2] + [nodes[0]], rid2)
    assert e.value.clients == [3]


def test_each_box_opens_at_most_once():
    """ServerState on its own (no MPC): a round opens once, and even if the round
    check were gone, a box that opened once never opens again."""
    from pgkernels.serving.sealing import new_keypair

    keys = [new_keypair() for _ in range(2)]
    session = secrets.token_bytes(16)
    U = _updates(4, seed=3)
    nodes = [7, 8, 9, 10]
    ms = [mask(U[i], [k[1] for k in keys], session, 5, nodes[i]) for i in range(4)]
    M = np.stack([m for m, _ in ms])
    hashes = np.frombuffer(b"".join(masked_digest(m) for m in M), np.uint8).reshape(4, 32)

    def msg(rank, **over):
        bx = np.stack([np.frombuffer(b[rank], np.uint8) for _, b in ms])
        arrays = {"boxes": bx, "masked": M} if rank == 0 else {"boxes": bx, "hashes": hashes}
        arrays.update(over)
        return wire.Message("open", {"round": 5, "d": M.shape[1], "nodes": nodes}, arrays)

    st = ServerState(1, 2, keys[1][0], session)
    assert st.open(msg(1)) == []
    with pytest.raises(Refusal, match="replayed"):
        st.open(msg(1))
    st.last_round = 0  # as if the round check were gone
    assert st.open(msg(1)) == [0, 1, 2, 3]
    # server 0 hashes the masked vectors itself: an altered one fails there
    st0 = ServerState(0, 2, keys[0][0], session)
    M2 = M.copy()
    M2[1, 0] += 1
    assert st0.open(msg(0, masked=M2)) == [1]
    # wrong session (another run of the servers): nothing opens
    assert ServerState(1, 2, keys[1][0], secrets.token_bytes(16)).open(msg(1)) == [0, 1, 2, 3]
    # too few clients, or a repeated node id, is refused before any box is opened
    st = ServerState(1, 2, keys[1][0], session, min_clients=5)
    with pytest.raises(Refusal, match="no fewer than 5"):
        st.open(msg(1))
    dup = msg(1)
    dup.fields = dict(dup.fields, round=6, nodes=[7, 7, 9, 10])
    with pytest.raises(Refusal, match="repeated node ids"):
        ServerState(1, 2, keys[1][0], session).open(dup)


def test_altered_masked_vector_detected(servers):
    U = _updates(5, seed=4)
    masked, boxes, nodes, rid = _clients(servers, U)
    masked[2] = masked[2] + np.int64(12345 << 16)  # the relay adds a delta to client 2's update
    with pytest.raises(MalformedShareError) as e:
        servers.aggregate_masked("fedavg", masked, boxes, nodes, rid)
    assert e.value.clients == [2]
    # altered only towards server 0, the true hash to server 1: server 0 notices
    masked, boxes, nodes, rid = _clients(servers, U)
    _send_open(servers, masked, boxes, nodes, rid, rank=1)
    masked[4] = masked[4].copy()
    masked[4][0] += 1
    _send_open(servers, masked, boxes, nodes, rid, rank=0)
    bad = [rep["bad"] for rep in servers._collect({"checked"})]
    assert bad == [[4], []]
    # if the coordinator keeps client 4 anyway, the servers notice they hold different hashes
    # (and server 0 refuses a client whose box did not open): nothing is computed
    for r in range(2):
        wire.send(servers.conns[r], "run", {"round": rid, "rule": "fedavg", "kwargs": {}, "keep": [0, 1, 2, 3, 4]})
    with pytest.raises(PolicyError, match="different requests|did not open"):
        servers._collect({"result"})
    # a client cannot swap in another client's box either (bound to the node id)
    masked, boxes, nodes, rid = _clients(servers, U)
    boxes[0], boxes[1] = boxes[1], boxes[0]
    masked[0], masked[1] = masked[1], masked[0]
    with pytest.raises(MalformedShareError) as e:
        servers.aggregate_masked("fedavg", masked, boxes, nodes, rid)
    assert e.value.clients == [0, 1]


def test_different_requests_to_different_servers(servers):
    U = _updates(5, seed=5)
    # different keep lists
    masked, boxes, nodes, rid = _clients(servers, U)
    _send_open(servers, masked, boxes, nodes, rid)
    servers._collect({"checked"})
    wire.send(servers.conns[0], "run", {"round": rid, "rule": "fedavg", "kwargs": {}, "keep": [0, 1, 2]})
    wire.send(servers.conns[1], "run", {"round": rid, "rule": "fedavg", "kwargs": {}, "keep": [1, 2, 3]})
    with pytest.raises(PolicyError, match="different requests") as e:
        servers._collect({"result"})
    assert e.value.kind == "disagree"
    # different clients opened at each server, the same keep list
    masked, boxes, nodes, rid = _clients(servers, U)
    _send_open(servers, masked, boxes, nodes, rid, rank=0)
    _send_open(servers, masked[1:], boxes[1:], nodes[1:], rid, rank=1)
    servers._collect({"checked"})
    for r in range(2):
        wire.send(servers.conns[r], "run", {"round": rid, "rule": "fedavg", "kwargs": {}, "keep": [0, 1, 2, 3]})
    with pytest.raises(PolicyError, match="different requests"):
        servers._collect({"result"})
    # different rules / kwargs
    masked, boxes, nodes, rid = _clients(servers, U)
    _send_open(servers, masked, boxes, nodes, rid)
    servers._collect({"checked"})
    wire.send(servers.conns[0], "run", {"round": rid, "rule": "trimmed_mean", "kwargs": {"proportiontocut": 0.2},
                                        "keep": [0, 1, 2, 3, 4]})
    wire.send(servers.conns[1], "run", {"round": rid, "rule": "trimmed_mean", "kwargs": {"proportiontocut": 0.4},
                                        "keep": [0, 1, 2, 3, 4]})
    with pytest.raises(PolicyError, match="different requests"):
        servers._collect({"result"})
    # the servers stay in step and serve honest requests
    agg, _, _ = servers.aggregate_masked("median", *_clients(servers, U))
    np.testing.assert_allclose(agg, np.median(U, 0), atol=1e-3)


@pytest.mark.parametrize("framing", ["multiprocessing", "header"])
def test_pickle_from_coordinator_rejected(tmp_path, framing):
    """The coordinator sends a pickle to server 0: refused unparsed, no code runs."""
    marker = tmp_path / "pwned-by-coordinator"
    payload = pickle.dumps(Evil(marker))
    if framing == "multiprocessing":  # what multiprocessing.connection used to send
        data = struct.pack(">i", len(payload)) + payload
    else:  # a valid frame whose header is a pickle
        data = wire.MAGIC + struct.pack(">I", len(payload)) + payload
    with AggregationServers(world_size=2, timeout=300) as s:
        s.conns[0].sendall(data)
        with pytest.raises(RuntimeError, match="malformed message"):
            s._collect({"result"})
        time.sleep(0.5)
    assert not marker.exists()


# -- servers that misbehave, strangers on the port ---------------------------------------

def _listening(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("the coordinator never listened")


def _tls(folder, port, timeout=10):
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return server_context(folder).wrap_socket(raw, server_hostname=COORDINATOR_NAME)


def _hello(folder, port, session, pub):
    """Connect as the server whose credential is in ``folder``; the coordinator's answer."""
    t = _tls(folder, port)
    wire.send(t, "hello", {"version": wire.VERSION, "session": session, "public_key": pub.hex()}, timeout=10)
    return t, wire.recv(t, {"welcome", "refused"}, first_timeout=10, timeout=10)


def _refused_at_tls(sock):
    try:
        sock.settimeout(5)
        return sock.recv(1) == b""
    except (ssl.SSLError, OSError):
        return True


@pytest.fixture
def coordinator(tmp_path):
    """A coordinator waiting for 2 external servers (start() on a thread) and the
    credentials of this deployment; the tests connect its servers by hand."""
    from pgkernels.runtime.launch import free_port

    pubs = make_credentials(tmp_path / "cred", 2)
    port = free_port()
    s = AggregationServers(world_size=2, external=("127.0.0.1", port), credentials=tmp_path / "cred" / "coordinator",
                           timeout=60, handshake_timeout=1.5)
    errors = []

    def start():
        try:
            s.start()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    th = threading.Thread(target=start)
    th.start()
    _listening(port)
    yield s, port, tmp_path / "cred", pubs, th, errors
    s.close()
    th.join(timeout=10)


def test_impostors_and_strangers_do_not_stop_start(coordinator, tmp_path):
    s, port, cred, pubs, th, errors = coordinator
    session = secrets.token_hex(16)
    held = []
    # a connection that closes at once, a silent one, plain garbage
    socket.create_connection(("127.0.0.1", port)).close()
    held.append(socket.create_connection(("127.0.0.1", port)))
    g = socket.create_connection(("127.0.0.1", port))
    g.sendall(b"\x00" * 5000)
    held.append(g)
    # TLS without a client certificate
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    t = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname=COORDINATOR_NAME)
    assert _refused_at_tls(t)
    # a rank-0 certificate from another deployment's CA
    make_credentials(tmp_path / "other", 2, x25519_keys=False)
    try:
        t = _tls(tmp_path / "other" / "server0", port)
        assert _refused_at_tls(t)
    except ssl.SSLError:
        pass  # or the client already sees that the coordinator is not its CA's
    # the coordinator's own certificate presented as a server: names no rank
    try:
        t = _tls(cred / "coordinator", port)
        assert _refused_at_tls(t)
    except ssl.SSLError:
        pass
    # the real server 0
    t0, rep = _hello(cred / "server0", port, session, pubs[0])
    assert rep.op == "welcome" and rep["rank"] == 0
    # a second connection with rank 0's certificate (server 0 trying to be two servers)
    t0b, rep = _hello(cred / "server0", port, session, secrets.token_bytes(32))
    assert rep.op == "refused" and "already connected" in rep["message"]
    # the real server 1 completes start()
    t1, rep = _hello(cred / "server1", port, session, pubs[1])
    assert rep.op == "welcome" and rep["rank"] == 1
    th.join(timeout=30)
    assert not errors and s.conns is not None
    assert s.public_keys == pubs and s.session.hex() == session
    assert len(s.rejected) >= 5, s.rejected
    for c in held + [t0, t0b, t1]:
        c.close()


def test_pickle_from_server_rejected(coordinator):
    """A server that answers with pickles: in its hello (the connection is dropped, the
    real hello is taken) and in a reply (the request fails); no code runs."""
    s, port, cred, pubs, th, errors = coordinator
    marker = cred.parent / "pwned-by-server"
    payload = pickle.dumps(Evil(marker))
    framed = struct.pack(">i", len(payload)) + payload
    session = secrets.token_hex(16)
    t = _tls(cred / "server0", port)
    t.sendall(framed)
    assert _refused_at_tls(t)
    t0, rep0 = _hello(cred / "server0", port, session, pubs[0])
    t1, rep1 = _hello(cred / "server1", port, session, pubs[1])
    th.join(timeout=30)
    assert not errors and (rep0.op, rep1.op) == ("welcome", "welcome")
    assert any("bad magic" in r for r in s.rejected), s.rejected

    def answer(sock, data):
        wire.recv(sock, {"aggregate"}, first_timeout=30, timeout=30)
        sock.sendall(data)

    ok = b"".join(bytes(p) for p in wire.encode("result", {"stats": {}}, {"out": np.zeros(3, np.int64)}))
    threads = [threading.Thread(target=answer, args=(t0, framed)), threading.Thread(target=answer, args=(t1, ok))]
    for x in threads:
        x.start()
    with pytest.raises(RuntimeError, match="server 0 sent a malformed message"):
        s.aggregate("fedavg", np.ones((3, 3)))
    for x in threads:
        x.join(timeout=10)
    assert not marker.exists()
    with pytest.raises(RuntimeError, match="stopped serving"):  # nothing more is read from it
        s.aggregate("fedavg", np.ones((3, 3)))
    for c in (t0, t1):
        c.close()


def test_silent_server_times_out_with_a_clear_error(tmp_path):
    from pgkernels.runtime.launch import free_port

    make_credentials(tmp_path / "cred", 2, x25519_keys=False)
    port = free_port()
    s = AggregationServers(world_size=2, external=("127.0.0.1", port), credentials=tmp_path / "cred" / "coordinator",
                           timeout=3, handshake_timeout=1)
    held = []

    def silent():  # connects and never says anything
        _listening(port)
        held.append(socket.create_connection(("127.0.0.1", port)))

    th = threading.Thread(target=silent)
    th.start()
    t = time.monotonic()
    with pytest.raises(TimeoutError, match="did not connect within"):
        s.start()
    assert time.monotonic() - t < 10
    th.join()
    for c in held:
        c.close()


def test_server_refuses_an_untrusted_coordinator(tmp_path):
    """A server only talks to the coordinator of its own deployment's CA."""
    from pgkernels.runtime.launch import free_port
    from pgkernels.serving.credentials import coordinator_context
    from pgkernels.serving.service import _connect

    make_credentials(tmp_path / "a", 2, x25519_keys=False)
    make_credentials(tmp_path / "b", 2, x25519_keys=False)
    for fake in (tmp_path / "b" / "coordinator", tmp_path / "a" / "server1"):  # other CA; a server's certificate
        port = free_port()
        lst = socket.create_server(("127.0.0.1", port))
        try:
            ctx = coordinator_context(fake)
        except ssl.SSLError:
            lst.close()
            continue

        def serve_once():
            c, _ = lst.accept()
            try:
                ctx.wrap_socket(c, server_side=True)
            except (ssl.SSLError, OSError):
                pass

        th = threading.Thread(target=serve_once, daemon=True)
        th.start()
        with pytest.raises(ConnectionError, match="does not trust"):
            _connect(("127.0.0.1", port), server_context(tmp_path / "a" / "server0"), wait=5)
        th.join(timeout=5)
        lst.close()


# -- the wire format on its own ----------------------------------------------------------

def test_wire_schema_rejects_out_of_schema_messages():
    a, b = socket.socketpair()
    try:
        def roundtrip(op, fields, arrays=None, expect=None):
            a.sendall(b"".join(bytes(p) for p in wire.encode(op, fields, arrays)))
            return wire.recv(b, expect or {op}, first_timeout=5, timeout=5)

        m = roundtrip("checked", {"round": 3, "bad": [1]})
        assert m.op == "checked" and m["bad"] == [1]
        with pytest.raises(wire.WireError, match="unexpected message"):
            roundtrip("checked", {"round": 3, "bad": []}, expect={"result"})

        def raw(header, body=b""):
            h = __import__("json").dumps(header).encode()
            a.sendall(wire.MAGIC + struct.pack(">I", len(h)) + h + body)
            return wire.recv(b, {"open", "checked", "run"}, first_timeout=5, timeout=5, max_bytes=1 << 20)

        bad = [
            ({"op": "checked", "round": 1, "bad": [], "evil": 1, "arrays": []}, "unexpected fields"),
            ({"op": "checked", "round": True, "bad": [], "arrays": []}, "expected an int"),
            ({"op": "run", "round": 1, "rule": "fedavg", "kwargs": {"x": [1]}, "keep": [], "arrays": []}, "scalar"),
            ({"op": "open", "round": 1, "d": 2, "nodes": [1],
              "arrays": [{"name": "boxes", "dtype": "object", "shape": [1, 64]}]}, "must be"),
            ({"op": "open", "round": 1, "d": 2, "nodes": [1],
              "arrays": [{"name": "boxes", "dtype": "uint8", "shape": [1 << 30, 64]}]}, "more than"),
            ({"op": "open", "round": 1, "d": 2, "nodes": [1],
              "arrays": [{"name": "__reduce__", "dtype": "uint8", "shape": [1]}]}, "unexpected array"),
        ]
        for header, match in bad:
            with pytest.raises(wire.WireError, match=match):
                raw(header)
            a.close(), b.close()
            a, b = socket.socketpair()
        a.sendall(wire.MAGIC + struct.pack(">I", 5) + b'{"a":')
        with pytest.raises(wire.WireError, match="not JSON"):
            wire.recv(b, {"open"}, first_timeout=5, timeout=5)
    finally:
        a.close(), b.close()


def test_no_pickle_on_the_channel():
    import inspect

    from pgkernels.serving import service

    for mod in (wire, service):
        src = inspect.getsource(mod)
        assert "import pickle" not in src and "multiprocessing.connection" not in src and "cloudpickle" not in src


# -- the Flower mod's keys ---------------------------------------------------------------

def _train_msg(cfg):
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 7, 1, 1
    init = ArrayRecord([np.zeros(4, np.float32)])
    msg = Message(RecordDict({"arrays": init, "config": ConfigRecord(cfg)}), 101, "train")
    msg.metadata.__dict__["_message_id"] = "m1"
    ctx = Context(run_id=7, node_id=101, node_config={}, state=RecordDict(), run_config={})
    return msg, ctx


def _trained(msg, ctx):
    from flwr.app import ArrayRecord, Message, RecordDict

    return Message(RecordDict({"arrays": ArrayRecord([np.ones(4, np.float32)])}), reply_to=msg)


def test_flower_mod_refuses_bad_server_keys(monkeypatch):
    from pgkernels.integrations.flower import KEYS, ROUND, SESSION, SHARE, make_secret_share_mod, secret_share_mod
    from pgkernels.serving.sealing import new_keypair

    k0, k1, k2 = (new_keypair()[1] for _ in range(3))
    base = {"server-round": 1, SESSION: secrets.token_bytes(16), ROUND: 4}
    trained = []

    def call_next(m, c):
        trained.append(1)
        return _trained(m, c)

    # pinned: one key, duplicate keys, fewer keys than servers
    for keys, kw in (([k0], {}), ([k0, k0], {}), ([k0, k1], {"world_size": 3})):
        with pytest.raises(ValueError, match="refusing"):
            make_secret_share_mod(server_keys=keys, **kw)
    # the default mod reads PGKERNELS_SERVER_KEYS: one key or a repeated key is refused before training
    for env in (k0.hex(), f"{k0.hex()},{k0.hex()}"):
        monkeypatch.setenv("PGKERNELS_SERVER_KEYS", env)
        with pytest.raises(ValueError, match="refusing"):
            secret_share_mod(*_train_msg(dict(base)), call_next)
    # pinned keys, and the Flower server offers others (one of its own): refused
    monkeypatch.setenv("PGKERNELS_SERVER_KEYS", f"{k0.hex()},{k1.hex()}")
    with pytest.raises(ValueError, match="differ from the pinned"):
        secret_share_mod(*_train_msg(dict(base, **{KEYS: [k0, k2]})), call_next)
    # opting in to the config's keys still refuses one key, a repeated key, or fewer than world_size
    trusting = make_secret_share_mod(trust_config_keys=True)
    for keys in ([k0], [k1, k1]):
        with pytest.raises(ValueError, match="refusing"):
            trusting(*_train_msg(dict(base, **{KEYS: keys})), call_next)
    with pytest.raises(ValueError, match="refusing"):
        make_secret_share_mod(trust_config_keys=True, world_size=3)(*_train_msg(dict(base, **{KEYS: [k0, k1]})),
                                                                    call_next)
    # no session / round: refused too
    with pytest.raises(ValueError, match="refusing"):
        secret_share_mod(*_train_msg({"server-round": 1}), call_next)
    assert not trained  # the client never trained on any of these
    # and with two distinct pinned keys it shares: one box per server, no weights in the clear
    reply = secret_share_mod(*_train_msg(dict(base, **{KEYS: [k0, k1]})), call_next)
    boxes = list(reply.content[SHARE]["boxes"])
    assert len(boxes) == 2 and all(len(b) == BOX_BYTES for b in boxes)
    assert reply.content["arrays"]["masked"].numpy().dtype == np.int64


def _settings_party(_):
    from pgkernels.runtime import comm
    from pgkernels.serving import service

    out = {}
    service._agree_settings("drop", None, 8.0)  # equal everywhere: passes
    # one server's own minimum is larger: every server refuses by the largest
    _, out["need"] = service._agree(b"\0" * 32, False, 5 if comm.rank() == 1 else 3)
    try:
        service._agree_settings("drop", None, 8.0 if comm.rank() == 0 else 4.0)
        out["differ"] = "no error"
    except RuntimeError as e:
        out["differ"] = str(e)
    return out


def test_servers_with_different_settings_refuse_at_start():
    """A server started with another bound (or validity policy, or max_norm)
    would run another computation than its peers: every server stops with an
    error naming the settings instead; and the minimum of valid clients is
    the largest server's, so all refuse alike after a validity drop."""
    import pgkernels

    for out in pgkernels.launch(_settings_party, world_size=2, args=(None,), timeout=120):
        assert out["need"] == 5
        assert "different settings" in out["differ"] and "bound" in out["differ"], out["differ"]
