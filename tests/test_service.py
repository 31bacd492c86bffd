"""Long-lived aggregation servers: every aggregator through the secret-sharing
coordinator against its plaintext reference, and failures end with errors."""

import os
import signal
import time

import numpy as np
import pytest

from pgkernels.defenses import reference as R
from pgkernels.runtime.launch import PartyError
from pgkernels.serving.service import AggregationServers, split, encode


def _updates(n=11, d=30, f=2, seed=0):
    rng = np.random.default_rng(seed)
    spread = (0.2 + 0.15 * np.arange(n)).reshape(n, 1)
    U = rng.normal(size=(n, d)) * spread
    U[n - f:] = -2 * U[:n - f].mean(0) + 3.0
    return np.round(U * 2**16) / 2**16


CASES = [
    ("fedavg", {}), ("median", {}), ("trimmed_mean", {"proportiontocut": 0.2}), ("norm_clip", {"max_norm": 2.0}),
    ("krum", {"num_malicious": 2}), ("multi_krum", {"num_malicious": 2, "to_keep": 7}),
    ("bulyan", {"num_malicious": 2}), ("flame", {"noise_lambda": 0}), ("auror", {}),
]


@pytest.mark.parametrize("ws", [2, 3], ids=lambda n: f"{n}pc")
def test_every_aggregator_matches_reference(ws):
    U = _updates()
    g = U[:9].mean(0)
    with AggregationServers(world_size=ws, timeout=300) as s:
        for name, kw in CASES + [("fltrust", {"server_update": g})]:
            agg, kept = s.aggregate(name, U, **kw)
            ref = getattr(R, name)(U, **kw)
            rk = None
            if isinstance(ref, tuple):
                ref, rk = ref
            tol = 2e-2 * np.abs(ref).max() + 1e-3 if name == "fltrust" else 5e-3 * np.abs(ref).max() + 1e-3
            assert np.abs(agg - ref).max() < tol, (name, np.abs(agg - ref).max())
            if rk is not None:
                assert sorted(kept.tolist()) == sorted(np.atleast_1d(rk).tolist()), (name, kept, rk)
            assert s.last_stats[0]["seconds"] > 0
        # the same rule on the same sizes again: the servers batch its dealer
        # material (DealerClient.batched): one dealer round trip, the same result
        for name, kw in [("median", {}), ("fltrust", {"server_update": g})]:
            again, _ = s.aggregate(name, U, **kw)
            ref = getattr(R, name)(U, **kw)
            tol = 2e-2 * np.abs(ref).max() + 1e-3 if name == "fltrust" else 5e-3 * np.abs(ref).max() + 1e-3
            assert np.abs(again - ref).max() < tol, (name, np.abs(again - ref).max())
            assert s.last_stats[0]["dealer_rounds"] == 1, (name, s.last_stats[0])
        # a rule's own argument check reaches the coordinator as an error, and the servers go on
        with pytest.raises(RuntimeError, match="Krum with num_malicious=5 needs at least 13 clients"):
            s.aggregate("krum", U, num_malicious=5)


def test_bad_inputs_rejected_before_sharing():
    with pytest.raises(ValueError, match="NaN or inf"):
        encode(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="magnitude"):
        encode(np.array([[2.0 ** 31]]))
    enc = encode(np.array([[1.5, -2.25]]))
    shares = split(enc, 3)
    assert (sum(shares) == enc).all() and not (shares[0] == enc).all()
    s = AggregationServers(world_size=2)
    with pytest.raises(RuntimeError, match="not running"):
        s.aggregate("fedavg", np.zeros((2, 2)))
    with pytest.raises(ValueError, match="world_size"):
        AggregationServers(world_size=1)


def _party_pids():
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().split(")")[1].split()[1])
        except OSError:
            continue
        if ppid == os.getpid() and b"pgkernels.party" in cmd and b"--rank" in cmd:
            out.append(int(pid))
    return out


def test_dead_server_fails_fast():
    with AggregationServers(world_size=2, timeout=300) as s:
        U = _updates()
        s.aggregate("fedavg", U)
        pids = _party_pids()
        assert len(pids) == 2
        os.kill(pids[1], signal.SIGKILL)
        t = time.monotonic()
        with pytest.raises((PartyError, RuntimeError, TimeoutError)):
            s.aggregate("median", U)
        assert time.monotonic() - t < 30


# -- clients that secret-share their own updates (aggregate_masked) -------------------

def _masked(U, s, round_id=None, nodes=None):
    """What the clients send for one round: (masked, boxes, nodes, round_id)."""
    from pgkernels.serving.service import mask

    rid = s.new_round() if round_id is None else round_id
    nodes = list(range(1000, 1000 + len(U))) if nodes is None else nodes
    ms = [mask(U[i], s.public_keys, s.session, rid, nodes[i]) for i in range(len(U))]
    return [m for m, _ in ms], [b for _, b in ms], nodes, rid


@pytest.mark.parametrize("ws", [2, 3], ids=lambda n: f"{n}pc")
def test_masked_shares_match_reference(ws):
    U = _updates()
    with AggregationServers(world_size=ws, timeout=120) as s:
        masked, boxes, nodes, rid = _masked(U, s)
        # what the relay holds is no encoding of the update
        assert not np.array_equal(masked[0], encode(U[0], "u").numpy())
        agg, kept, bad = s.aggregate_masked("krum", masked, boxes, nodes, rid, num_malicious=2)
        ref, idx = R.krum(U, 2)
        assert bad == [] and list(kept) == [idx]
        np.testing.assert_allclose(agg, ref, atol=1e-3)
        agg, kept, bad = s.aggregate_masked("trimmed_mean", *_masked(U, s), proportiontocut=0.2)
        np.testing.assert_allclose(agg, R.trimmed_mean(U, 0.2), atol=1e-3)
        assert kept is None


def test_masked_malformed_raise_or_drop():
    from pgkernels.serving.service import MalformedShareError, mask

    U = _updates(n=9)
    d = U.shape[1]
    with AggregationServers(world_size=2, timeout=120) as s:
        def round_with_bad_clients():
            masked, boxes, nodes, rid = _masked(U, s)
            boxes[3] = [boxes[3][0], b"\0" * 64]                        # box for server 1 does not open
            masked[5], boxes[5] = mask(U[5], s.public_keys, s.session, rid, 99999)  # sealed for another node
            masked[7] = masked[7][:-1]                                  # wrong length
            return masked, boxes, nodes, rid

        with pytest.raises(MalformedShareError) as e:
            s.aggregate_masked("median", *round_with_bad_clients(), d=d)
        assert e.value.clients == [3, 5, 7]
        agg, _, bad = s.aggregate_masked("median", *round_with_bad_clients(), on_malformed="drop", d=d)
        assert bad == [3, 5, 7]
        np.testing.assert_allclose(agg, np.median(np.delete(U, bad, 0), 0), atol=1e-3)
        # multi-krum's to_keep resolved on the clients left; too few left -> clear error, servers reusable
        agg, kept, bad = s.aggregate_masked("multi_krum", *round_with_bad_clients(), on_malformed="drop",
                                            d=d, num_malicious=1, to_keep=lambda n: n - 1)
        assert len(kept) == 5 and not set(kept) & {3, 5, 7}
        with pytest.raises(RuntimeError, match="needs at least 7"):
            s.aggregate_masked("krum", *round_with_bad_clients(), on_malformed="drop", d=d,
                               num_malicious=2, min_keep=7)
        agg, _ = s.aggregate("fedavg", U)
        np.testing.assert_allclose(agg, U.mean(0), atol=1e-3)


def _poke(port, how):
    """Connections that are not aggregation servers: closing at once, silent, not TLS,
    TLS without a client certificate. Returns the sockets left open."""
    import socket
    import ssl

    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    if how == "close":
        c.close()
        return None
    if how == "garbage":
        c.sendall(b"GET / HTTP/1.0\r\n\r\n" * 10)
        return c
    if how == "no-cert":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        try:
            t = ctx.wrap_socket(c, server_hostname="pgkernels-coordinator")
            t.settimeout(5)
            t.recv(1)  # TLS 1.3: the refusal arrives after the client's side of the handshake
        except (ssl.SSLError, OSError):
            pass
        return c
    return c  # "silent"


def test_servers_as_separate_processes_over_tcp(tmp_path):
    """The multi-host path: credentials from the CLI, dealer and servers started on their
    own with ``python -m pgkernels.party ... --run pgkernels.serving.service:serve``,
    rendezvous over TCP (loopback here), coordinator listening with ``external=``.
    Connections that close at once, stay silent, send garbage or have no certificate
    do not keep the real servers out."""
    import subprocess
    import sys
    import threading

    from pgkernels.runtime.launch import _child_env, free_port
    from pgkernels.serving.credentials import parse_server_keys

    cred = tmp_path / "cred"
    out = subprocess.run([sys.executable, "-m", "pgkernels.serving.credentials", "--out", str(cred),
                          "--world-size", "2"], capture_output=True, text=True, check=True).stdout
    assert "PGKERNELS_SERVER_KEYS=" in out
    assert oct(os.stat(cred / "server0" / "key.pem").st_mode & 0o777) == "0o600"
    assert oct(os.stat(cred / "server1").st_mode & 0o777) == "0o700"
    pinned = parse_server_keys((cred / "server-keys.txt").read_text())
    port = free_port()
    s = AggregationServers(world_size=2, external=("127.0.0.1", port), credentials=cred / "coordinator",
                           timeout=120, handshake_timeout=3)
    starter = threading.Thread(target=s.start)
    starter.start()
    import socket
    import time as _t

    for _ in range(100):  # wait until it listens (each try is itself a connection that closes at once)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            _t.sleep(0.1)
    held = [_poke(port, how) for how in ("close", "silent", "garbage", "no-cert", "silent")]
    env = _child_env(1)
    base = [sys.executable, "-m", "pgkernels.party", "--world-size", "2",
            "--rendezvous", f"tcp://127.0.0.1:{free_port()}", "--timeout", "120"]
    procs = []
    for r in range(2):
        e = dict(env, PGKERNELS_COORDINATOR=f"127.0.0.1:{port}", PGKERNELS_CREDENTIALS=str(cred / f"server{r}"),
                 PGKERNELS_MIN_CLIENTS="5")
        procs.append(subprocess.Popen(base + ["--rank", str(r), "--run", "pgkernels.serving.service:serve"], env=e))
    procs.append(subprocess.Popen(base + ["--role", "dealer"], env=env))
    try:
        starter.join(timeout=150)
        assert s.conns is not None, s.rejected
        assert s.public_keys == pinned  # the persistent keys clients pin
        assert len(s.rejected) >= 3
        U = _updates()
        agg, kept = s.aggregate("krum", U, num_malicious=2)
        ref, idx = R.krum(U, 2)
        assert list(kept) == [idx]
        np.testing.assert_allclose(agg, ref, atol=1e-3)
        agg, _, _ = s.aggregate_masked("median", *_masked(U, s))
        np.testing.assert_allclose(agg, np.median(U, 0), atol=1e-3)
        from pgkernels.serving.service import PolicyError

        with pytest.raises(PolicyError, match="no fewer than 5"):  # the servers' own PGKERNELS_MIN_CLIENTS
            s.aggregate_masked("median", *_masked(U[:4], s))
        s.close()
        assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    finally:
        s.close()
        for c in held:
            if c is not None:
                c.close()
        for p in procs:
            if p.poll() is None:
                p.kill()


def test_external_servers_need_credentials():
    with pytest.raises(ValueError, match="credentials"):
        AggregationServers(external=("127.0.0.1", 1))
    with pytest.raises(ValueError, match="no longer used"):
        AggregationServers(external=("127.0.0.1", 1), authkey=b"k" * 32)
