"""Long-lived aggregation servers: every aggregator through the secret-sharing
coordinator against its plaintext reference, and failures end with errors."""

import os
import signal
import time

import numpy as np
import pytest

from pgkernels.defenses import reference as R
from pgkernels.runtime.launch import PartyError
from pgkernels.runtime.service import AggregationServers, split, encode


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
