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
    with AggregationServers(world_size=2, timeout=60) as s:
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

def _masked(U, keys, tag="t"):
    from pgkernels.serving.service import mask

    aads = [f"{tag}|client={i}".encode() for i in range(len(U))]
    ms = [mask(U[i], keys, aads[i]) for i in range(len(U))]
    return [m for m, _ in ms], [b for _, b in ms], aads


@pytest.mark.parametrize("ws", [2, 3], ids=lambda n: f"{n}pc")
def test_masked_shares_match_reference(ws):
    U = _updates()
    with AggregationServers(world_size=ws, timeout=120) as s:
        masked, boxes, aads = _masked(U, s.public_keys)
        # what the relay holds is no encoding of the update
        assert not np.array_equal(masked[0], encode(U[0], "u").numpy())
        agg, kept, bad = s.aggregate_masked("krum", masked, boxes, aads, num_malicious=2)
        ref, idx = R.krum(U, 2)
        assert bad == [] and list(kept) == [idx]
        np.testing.assert_allclose(agg, ref, atol=1e-3)
        agg, kept, bad = s.aggregate_masked("trimmed_mean", masked, boxes, aads, proportiontocut=0.2)
        np.testing.assert_allclose(agg, R.trimmed_mean(U, 0.2), atol=1e-3)
        assert kept is None


def test_masked_malformed_raise_or_drop():
    from pgkernels.serving.service import MalformedShareError

    U = _updates(n=9)
    with AggregationServers(world_size=2, timeout=120) as s:
        masked, boxes, aads = _masked(U, s.public_keys)
        boxes[3] = [boxes[3][0], b"\0" * 60]          # box for server 1 does not open
        aads[5] = b"another round"                    # sealed under a different context
        masked[7] = masked[7][:-1]                    # wrong length
        with pytest.raises(MalformedShareError) as e:
            s.aggregate_masked("median", masked, boxes, aads, d=U.shape[1])
        assert e.value.clients == [3, 5, 7]
        agg, _, bad = s.aggregate_masked("median", masked, boxes, aads, on_malformed="drop", d=U.shape[1])
        assert bad == [3, 5, 7]
        np.testing.assert_allclose(agg, np.median(np.delete(U, bad, 0), 0), atol=1e-3)
        # multi-krum's to_keep resolved on the clients left; too few left -> clear error, servers reusable
        agg, kept, bad = s.aggregate_masked("multi_krum", masked, boxes, aads, on_malformed="drop",
                                            d=U.shape[1], num_malicious=1, to_keep=lambda n: n - 1)
        assert len(kept) == 5 and not set(kept) & {3, 5, 7}
        with pytest.raises(RuntimeError, match="needs at least 7"):
            s.aggregate_masked("krum", masked, boxes, aads, on_malformed="drop", d=U.shape[1],
                               num_malicious=2, min_keep=7)
        agg, _ = s.aggregate("fedavg", U)
        np.testing.assert_allclose(agg, U.mean(0), atol=1e-3)


def test_servers_as_separate_processes_over_tcp():
    """The multi-host path: dealer and servers started on their own with
    ``python -m pgkernels.party ... --run pgkernels.serving.service:serve``,
    rendezvous over TCP (loopback here), coordinator connects with ``external=``."""
    import secrets
    import subprocess
    import sys

    from pgkernels.runtime.launch import _child_env, free_port

    key = secrets.token_bytes(32)
    port = free_port()
    env = _child_env(1)
    env.update(PGKERNELS_COORDINATOR=f"127.0.0.1:{port}", PGKERNELS_AUTHKEY=key.hex())
    base = [sys.executable, "-m", "pgkernels.party", "--world-size", "2",
            "--rendezvous", f"tcp://127.0.0.1:{free_port()}", "--timeout", "120"]
    procs = [subprocess.Popen(base + ["--rank", str(r), "--run", "pgkernels.serving.service:serve"], env=env)
             for r in range(2)]
    procs.append(subprocess.Popen(base + ["--role", "dealer"], env=env))
    try:
        U = _updates()
        with AggregationServers(world_size=2, external=("127.0.0.1", port), authkey=key, timeout=120) as s:
            agg, kept = s.aggregate("krum", U, num_malicious=2)
            ref, idx = R.krum(U, 2)
            assert list(kept) == [idx]
            np.testing.assert_allclose(agg, ref, atol=1e-3)
            masked, boxes, aads = _masked(U, s.public_keys)
            agg, _, _ = s.aggregate_masked("median", masked, boxes, aads)
            np.testing.assert_allclose(agg, np.median(U, 0), atol=1e-3)
        assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def test_external_servers_need_authkey():
    with pytest.raises(ValueError, match="authkey"):
        AggregationServers(external=("127.0.0.1", 1), authkey=b"short")
