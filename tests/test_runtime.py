"""The multi-party runtime: launch, failures, dealers, multi-host CLI, metering."""

import os
import pathlib
import subprocess
import sys
import time
import warnings

import pytest
import torch

import pgkernels
from pgkernels.runtime.launch import free_port

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_launch_closure_after_thread_pool_use():
    # The parent uses torch's thread pool on a large tensor first: a forking
    # launcher deadlocks here; pgkernels starts fresh interpreters.
    big = torch.randn(2_000_000)
    total = float(big.abs().sum())
    scale = 3.0

    def fn(offset):
        import crypten

        x = crypten.cryptensor(torch.tensor([1.0, -2.0]) * scale + offset)
        return (pgkernels.relu(x).get_plain_text().tolist(), total > 0)

    res = pgkernels.launch(fn, world_size=2, args=(0.5,), timeout=120)
    assert res == [([3.5, 0.0], True)] * 2
    assert pgkernels.launch(lambda: 42, world_size=3, timeout=120) == [42, 42, 42]


def test_exception_names_rank():
    def fn():
        import crypten.communicator as cc

        if cc.get().get_rank() == 1:
            raise KeyError("boom in party one")
        return 1

    with pytest.raises(pgkernels.PartyError, match=r"party 1 raised[\s\S]*boom in party one") as ei:
        pgkernels.launch(fn, world_size=2, timeout=120)
    assert ei.value.rank == 1


def test_killed_party_fails_fast():
    def fn():
        import crypten
        import crypten.communicator as cc

        if cc.get().get_rank() == 1:
            os._exit(9)  # dies without a word
        x = crypten.cryptensor(torch.ones(4))
        return pgkernels.ltz(x).get_plain_text().tolist()  # blocks on the dead peer

    t = time.monotonic()
    with pytest.raises(pgkernels.PartyError, match="party 1 exited with code 9"):
        pgkernels.launch(fn, world_size=2, timeout=120)
    assert time.monotonic() - t < 60


def test_hung_party_times_out():
    def fn():
        import crypten.communicator as cc

        if cc.get().get_rank() == 0:
            time.sleep(3600)
        return 0

    t = time.monotonic()
    with pytest.raises(pgkernels.PartyError, match=r"did not finish within 8 s"):
        pgkernels.launch(fn, world_size=2, timeout=8)
    assert time.monotonic() - t < 40


def test_insecure_provider_guard():
    with pytest.raises(pgkernels.ConfigError, match="insecure=True"):
        pgkernels.launch(lambda: 0, dealer="tfp")
    with pytest.raises(pgkernels.ConfigError, match="dealer must be one of"):
        pgkernels.launch(lambda: 0, dealer="nobody")
    with pytest.raises(pgkernels.ConfigError, match="world_size"):
        pgkernels.launch(lambda: 0, world_size=1)

    def fn():
        import crypten

        x = crypten.cryptensor(torch.tensor([-1.0, 1.0]))
        return pgkernels.ltz(x).get_plain_text().tolist(), crypten.cfg.mpc.provider

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        res = pgkernels.launch(fn, dealer="tfp", insecure=True, timeout=120)
    assert any("INSECURE" in str(x.message) for x in w)
    assert res[0] == ([1, 0], "TFP")


def test_crypten_ttp_dealer_runs_crypten_ops_and_refuses_kernels():
    def fn():
        import crypten

        x = crypten.cryptensor(torch.tensor([-1.0, 2.0]))
        y = (x * x).get_plain_text().tolist()
        try:
            pgkernels.ltz(x)
        except RuntimeError as e:
            return y, str(e)
        return y, None

    res = pgkernels.launch(fn, dealer="crypten-ttp", timeout=120)
    assert res[0][0] == [1.0, 4.0]
    assert "need the pgkernels dealer" in res[0][1]


@pytest.mark.parametrize("ws", [2, 3])
def test_dealer_serves_crypten_ops(ws):
    """CrypTen's own ops draw triples from the pgkernels dealer (mul, matmul,
    conv2d, binary AND, B2A, and wraps-based truncation with 3 parties)."""

    def fn():
        import crypten

        g = torch.Generator().manual_seed(0)
        a = torch.randn(4, 5, generator=g)
        b = torch.randn(5, 3, generator=g)
        img = torch.randn(1, 2, 6, 6, generator=g)
        ker = torch.randn(3, 2, 3, 3, generator=g)
        ea, eb = crypten.cryptensor(a), crypten.cryptensor(b)
        out = {
            "mul": ((ea * ea).get_plain_text(), a * a),
            "matmul": ((ea @ eb).get_plain_text(), a @ b),
            "conv2d": (crypten.cryptensor(img).conv2d(crypten.cryptensor(ker), padding=1).get_plain_text(),
                       torch.nn.functional.conv2d(img, ker, padding=1)),
            "square": (ea.square().get_plain_text(), a * a),
            "lt": ((ea < 0).get_plain_text(), (a < 0).float()),
            "max": (ea.max().get_plain_text(), a.max()),
        }
        return {k: (float((v[0] - v[1]).abs().max())) for k, v in out.items()}, crypten.cfg.mpc.provider

    res = pgkernels.launch(fn, world_size=ws, timeout=300)
    errs, provider = res[0]
    assert provider == "PGK"
    for k, err in errs.items():
        assert err < 0.05, (k, err)


def test_multihost_cli_over_loopback_tcp():
    port = free_port()
    rdv = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + sys.path))
    base = [sys.executable, "-m", "pgkernels.party", "--world-size", "2", "--rendezvous", rdv,
            "--timeout", "120"]
    procs = [subprocess.Popen(base + ["--rank", str(r), "--run", str(ROOT / "tests/party_target.py") + ":main"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(2)]
    procs.append(subprocess.Popen(base + ["--role", "dealer"], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True))
    outs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=180)
            outs.append((p.returncode, out))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for code, out in outs:
        assert code == 0, out
    assert "[party 0] ok: [1, 0, 0]" in outs[0][1]
    assert "[party 1] ok: [1, 0, 0]" in outs[1][1]


def test_protocol_costs_are_metered():
    """Rounds and bytes of the protocols (deterministic costs, not timings)."""

    def fn():
        import crypten

        from pgkernels.runtime import comm

        n = 4096
        x = crypten.cryptensor(torch.randn(n))
        rows = {}
        for name, f in [("ltz", lambda: pgkernels.ltz(x)), ("crypten_lt", lambda: x < 0),
                        ("relu", lambda: pgkernels.relu(x)), ("eq", lambda: pgkernels.eq(x, 0)),
                        ("where", lambda: pgkernels.where(x < 0, x, 0.0 * x))]:
            comm.reset_stats()
            f()
            s = comm.STATS.snapshot()
            rows[name] = (s.rounds, s.bytes_sent / n)
        return rows

    rows = pgkernels.launch(fn, world_size=2, timeout=120)[0]
    # 6 rounds between the parties + the online round trip to the dealer
    assert rows["ltz"] == (7, 13.25)
    assert rows["relu"] == (7, 13.25)  # the payload x is the compared value: its opening is free
    # CrypTen's 8 rounds, each waiting for a triple asked of the dealer online (out and back)
    assert rows["crypten_lt"][0] == 24
    assert rows["ltz"][1] * 4 <= rows["crypten_lt"][1]
    assert rows["eq"][0] == 7


def _metered_plans():
    import crypten

    from pgkernels.protocols.order import plan
    from pgkernels.runtime import comm

    out = {}
    x = crypten.cryptensor(torch.randn(7, 10))
    for method in ("network", "rank"):
        comm.reset_stats()
        pgkernels.median(x, dim=0, method=method)
        s = comm.STATS.snapshot()
        out[f"median {method}"] = (s.rounds, s.dealer_rounds, plan("median", 7, 10, method=method).rounds)
    comm.reset_stats()
    pgkernels.argmax(x, dim=0, method="tournament")
    s = comm.STATS.snapshot()
    out["argmax tournament"] = (s.rounds, s.dealer_rounds, plan("argmax", 7, 10, method="tournament").rounds)
    # an even n's median and the trimmed mean end with a division (its own dealer request)
    y = crypten.cryptensor(torch.randn(8, 10))
    for op, kw in (("median", {}), ("trimmed_mean", {"proportiontocut": 0.25})):
        for method in ("network", "rank"):
            comm.reset_stats()
            getattr(pgkernels, op)(y, dim=0, method=method, **kw)
            s = comm.STATS.snapshot()
            out[f"{op} even {method}"] = (s.rounds, s.dealer_rounds - 1, plan(op, 8, 10, method=method).rounds)
    return out


def test_rounds_count_the_online_dealer_round_trip_as_the_cost_model_does():
    """A chain of comparisons (network layers, tournament levels, ranks then an
    equality test) pays one dealer round trip: the rest is prefetched. The
    metered rounds equal the cost model's."""
    res = pgkernels.launch(_metered_plans, world_size=2, timeout=180)[0]
    for name, (metered, dealer_rounds, planned) in res.items():
        assert dealer_rounds == 1, (name, res)
        assert metered == planned, (name, res)


def test_crypten_ttp_request_is_a_round():
    """CrypTen's TTP: party 0's request and the answer are two rounds per triple
    (CrypTen opens nothing before it holds the triple)."""

    def fn():
        import crypten

        from pgkernels.runtime import comm

        x = crypten.cryptensor(torch.randn(100))
        comm.reset_stats()
        x * x
        s = comm.STATS.snapshot()
        return comm.rank(), s.rounds, s.dealer_rounds

    res = pgkernels.launch(fn, world_size=2, dealer="crypten-ttp", timeout=180)
    assert res[0] == (0, 3, 1)  # one opening round + the triple's round trip


def test_dealer_rejects_malformed_crypten_requests():
    """The dealer evaluates only CrypTen's triple ops, on well-formed sizes."""
    from pgkernels.runtime.dealer import crypten_layout

    ok = {"fn": "additive", "op": "matmul", "size0": [2, 3], "size1": [3, 4], "kwargs": {}}
    assert crypten_layout(ok) == (6 + 12, 6 + 12 + 8)
    bad = [
        dict(ok, op="__import__"),
        dict(ok, op="eval"),
        dict(ok, size0=[2, -3]),
        dict(ok, size0="2,3"),
        dict(ok, kwargs={"padding": "x"}),
        {"fn": "gram", "size": [2, 3, 4]},
        {"fn": "square", "size": [2 ** 20, 2 ** 20]},
        {"fn": "nope", "size": [1]},
    ]
    for req in bad:
        with pytest.raises(ValueError):
            crypten_layout(req)


def _own_input(party_input):
    import sys

    from pgkernels.runtime import comm
    from pgkernels.runtime.inputs import to_mpc

    given = [sys.argv[i + 1] for i, a in enumerate(sys.argv) if a == "--input"]
    return {"rank": comm.rank(), "given": given, "left": [os.path.exists(p) for p in given],
            "kinds": {k: ("data" if s.data is not None else "key") for k, s in party_input.items()},
            "opened": {k: pgkernels.decode(to_mpc(s)).numpy() for k, s in party_input.items()}}


@pytest.mark.parametrize("ws", [2, 3])
def test_party_inputs_reach_only_their_party(ws):
    """launch(party_inputs=...): party r's process is handed only its own share file (and
    deletes it once read); parties r >= 1 hold AES keys, party 0 a masked array; the
    shares open to the encoded values, integers exactly at frac_bits=0."""
    import numpy as np

    from pgkernels.runtime.inputs import encode, share_all

    rng = np.random.default_rng(0)
    X = rng.normal(size=(7, 5)) * 100
    X[0, :3] = [0.0, -(2.0 ** 29), 2.0 ** 29]
    Y = np.eye(3)[rng.integers(0, 3, 7)]
    per = share_all({"X": X, "Y": Y}, ws, frac_bits={"Y": 0})
    enc = encode(X, "X")
    assert not torch.equal(per[0]["X"].tensor(), enc)
    total = sum(p["X"].tensor() for p in per)
    assert torch.equal(total, enc)  # mod 2^64 (int64 wrap-around)
    out = pgkernels.launch(_own_input, world_size=ws, party_inputs=per, timeout=120)
    for r, o in enumerate(out):
        assert o["rank"] == r and len(o["given"]) == 1 and o["given"][0].endswith(f"input{r}.pkl")
        assert o["left"] == [False]
        assert o["kinds"] == ({"X": "data", "Y": "data"} if r == 0 else {"X": "key", "Y": "key"})
        np.testing.assert_allclose(o["opened"]["X"], X, atol=2.0 ** -16)
        np.testing.assert_array_equal(o["opened"]["Y"], Y)


def test_party_inputs_bad_values():
    import numpy as np

    from pgkernels.runtime.inputs import share

    with pytest.raises(ValueError, match="X contains NaN"):
        share(np.array([1.0, np.nan]), 2, "X")
    with pytest.raises(ValueError, match="weights has values of magnitude"):
        share(np.array([2.0 ** 30]), 2, "weights")
    with pytest.raises(pgkernels.ConfigError, match="party_inputs"):
        pgkernels.launch(_own_input, world_size=2, party_inputs=[{}])
