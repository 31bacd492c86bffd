"""The simulated network link (pgkernels.runtime.link): delays, bandwidth, dealer traffic, results.

Timing checks assert lower bounds (a message cannot arrive before its
simulated due time); the upper bounds are only sanity checks, generous
because the test machine is shared.
"""

import pytest
import torch

import pgkernels
from pgkernels.runtime.link import BANDWIDTH_ENV, LATENCY_ENV, Link

L = 0.02  # one-way latency of the sessions below
BW = 1e7  # bytes/s per direction


def test_link_config():
    assert not Link().active
    assert Link(latency=0.01).active and Link(bandwidth=1e6).active
    assert Link.from_env({}) == Link()
    assert Link.from_env({LATENCY_ENV: "0.05", BANDWIDTH_ENV: "1.25e8"}) == Link(0.05, 1.25e8)
    assert Link.from_env({LATENCY_ENV: " ", BANDWIDTH_ENV: ""}) == Link()
    assert Link.from_env(Link(0.01, 2e6).env()) == Link(0.01, 2e6)
    assert Link.from_env(Link(0.01).env()) == Link(0.01)
    for bad in (-1, float("nan"), float("inf"), "0.1", True):
        with pytest.raises(ValueError, match="latency"):
            Link(latency=bad)
    for bad in (0, -5, float("inf"), "1e9"):
        with pytest.raises(ValueError, match="bandwidth"):
            Link(bandwidth=bad)
    with pytest.raises(ValueError, match=LATENCY_ENV):
        Link.from_env({LATENCY_ENV: "fast"})
    with pytest.raises(TypeError, match="link"):
        pgkernels.launch(lambda: 0, link={"latency": 0.1})


def _session(x_plain, big_words):
    """Runs in every party under Link(L, BW); returns timings (s) and results."""
    import time

    import crypten
    import torch.distributed as dist

    from pgkernels.protocols.compare import LT
    from pgkernels.runtime import comm
    from pgkernels.runtime.dealer import corrected_party
    from pgkernels.runtime.session import dealer_client

    g = crypten.communicator.get().main_group
    me = comm.rank()

    def timed(f):
        dist.barrier(group=g)  # barriers are not delayed: both parties start together
        t0 = time.perf_counter()
        f()
        return time.perf_counter() - t0

    small = torch.zeros(4, dtype=torch.long)
    out = {}
    comm.exchange(small)  # warm up the connections
    out["one"] = [timed(lambda: comm.exchange(small)) for _ in range(2)]

    def rounds(k):
        for _ in range(k):
            comm.exchange(small)

    out["five"] = timed(lambda: rounds(5))
    big = torch.zeros(big_words, dtype=torch.long)
    out["big"] = timed(lambda: comm.exchange(big))
    # two messages to one peer share its direction's bandwidth
    halves = [torch.zeros(big_words // 2, dtype=torch.long) for _ in range(2)]
    out["two_halves"] = timed(lambda: comm.exchange(halves))
    # a dealer round trip: request out, correction back to the corrected party
    client = dealer_client()

    def ask():
        mat, _ = client.cmp(8, 64, LT, 0)
        mat.wait()
        return corrected_party(mat.seq, comm.world_size()) == me

    ask()  # warm up
    waits = []
    for _ in range(4):  # the corrected party rotates: each party is it twice
        dist.barrier(group=g)
        t0 = time.perf_counter()
        if ask():
            waits.append(time.perf_counter() - t0)
    out["dealer"] = min(waits)
    x = crypten.cryptensor(x_plain)
    pgkernels.ltz(x)  # warm up
    before = comm.STATS.snapshot()
    res = {}
    out["ltz"] = timed(lambda: res.update(y=pgkernels.ltz(x)))
    out["ltz_rounds"] = comm.STATS.since(before).rounds
    out["ltz_value"] = res["y"].get_plain_text().tolist()
    out["rank"] = me
    return out


def _edge_values():
    return torch.tensor([-1.0, 0.0, 2.0, -3.5, 1 / 65536, -1 / 65536, 1e4, -1e4, 0.0, 7.25])


@pytest.mark.parametrize("channel", ["plain", "encrypted"])
def test_link_delays_every_message(channel):
    x = _edge_values()
    big_words = 125_000  # 1 MB: 0.1 s at BW
    res = pgkernels.launch(_session, args=(x, big_words), link=Link(latency=L, bandwidth=BW),
                           channel=channel, timeout=240)
    expected = (x < 0).float().tolist()
    tx = big_words * 8 / BW
    for r in res:
        assert r["ltz_value"] == expected  # the link changes timing, never results
        # the corrected party waits for the dealer's answer: a round trip, 2 L
        assert 2 * L <= r["dealer"] < 2 * L + 1.0

    def slowest(key):
        # A party that leaves the barrier late (the machine is shared) sees its
        # peer's messages early; the one that left first waits the whole time.
        return max(r[key] for r in res)

    # per repetition the party that left the barrier first; the better repetition
    # (a per-party minimum could take each party's from the repetition it left late)
    assert L <= min(max(r["one"][i] for r in res) for i in range(2)) < L + 0.5
    assert 5 * L <= slowest("five") < 5 * L + 1.0
    assert L + tx <= slowest("big") < L + tx + 1.0
    assert L + tx <= slowest("two_halves") < L + tx + 1.0
    # ltz: every counted round (the dealer's round trip among them) costs about L
    assert 0.8 * res[0]["ltz_rounds"] * L <= slowest("ltz") < res[0]["ltz_rounds"] * L + 1.5


def test_cost_model_for_a_link():
    """configure_link: a round costs the one-way latency plus a loopback round;
    the plans count the online dealer corrections, and at 50 ms the
    constant-round rank method wins where loopback picks the network."""
    from pgkernels.protocols import cost, order
    from pgkernels.protocols.compare import LT

    saved = cost.dataclasses.replace(cost.MODEL)
    try:
        lat, bw = cost.link_constants(0.05, 1.25e8)
        assert lat == pytest.approx(0.05 + cost.LOOPBACK_LATENCY)
        assert 1 / bw == pytest.approx(1 / 1.25e8 + 1 / cost.LOOPBACK_BANDWIDTH)
        assert cost.dealer_bytes(64, LT, 0) == pytest.approx(40.375)
        rank = order.plan("median", 100, 1000, method="rank")
        assert rank.dealer_bytes_per_column == pytest.approx(100 * 99 // 2 * 40.375 + cost.DIV_DEALER_BYTES)
        cost.configure_link(0.0)
        assert order.plan("median", 100, 1000).method == "network"
        cost.configure_link(0.05, 1.25e8)
        assert order.plan("median", 100, 1000).method == "rank"
        assert order.plan("trimmed_mean", 100, 1000).method == "rank"
        assert order.plan("topk", 99, 100, k=74).method == "rank"
        # 12 rounds, 67 MB each way and 200 MB of corrections, split over 2 links, at 1 Gbit/s
        assert 2.0 < rank.seconds(1000) < 3.0
    finally:
        for field in cost.dataclasses.fields(saved):
            setattr(cost.MODEL, field.name, getattr(saved, field.name))


def _split_session():
    """Every comparison kind with its dealer request split per party (forced
    by a small threshold and a slow model link) and not: same results."""
    import crypten

    from pgkernels.protocols import compare, cost
    from pgkernels.runtime import comm

    g = torch.Generator().manual_seed(7)
    x = torch.round(torch.randn(1001, generator=g, dtype=torch.float64) * 2**16) / 2**16
    x[:6] = torch.tensor([0.0, -1 / 65536, 1 / 65536, 2.0**14, -(2.0**14), 0.0])
    U = torch.round(torch.randn(9, 13, generator=g, dtype=torch.float64) * 2**16) / 2**16
    U[3] = U[5]  # ties
    ex, eu = crypten.cryptensor(x), crypten.cryptensor(U)
    cost.configure(latency=0.01, bandwidth=1e4)  # a slow link: splitting pays
    compare.SPLIT_MIN = 8
    out = {}
    for split in (False, True):
        compare.SPLIT = split
        before = comm.STATS.snapshot()
        r = {"ltz": pgkernels.ltz(ex).get_plain_text(), "relu": pgkernels.relu(ex).get_plain_text(),
             "eq": pgkernels.eq(ex, 0.0).get_plain_text(), "gt": pgkernels.gt(ex, 0.5).get_plain_text()}
        for m in ("network", "rank"):
            r[f"median {m}"] = pgkernels.median(eu, dim=0, method=m).get_plain_text()
            r[f"topk {m}"] = pgkernels.topk(eu, 3, dim=0, method=m)[0].get_plain_text()
        r["argmax"] = pgkernels.argmax(eu, dim=0, method="tournament").get_plain_text()
        s = comm.STATS.since(before)
        out[split] = ({k: v.tolist() for k, v in r.items()}, s.rounds, s.dealer_requests)
    return out, x, U


def test_split_dealer_requests_change_nothing_but_the_links(world_size):
    res = pgkernels.launch(_split_session, world_size=world_size, timeout=300)
    # more requests (one per party for the big comparisons), each party corrected in more of them
    assert sum(out[True][2] for out, _, _ in res) > sum(out[False][2] for out, _, _ in res)
    for out, x, U in res:
        plain, split = out[False], out[True]
        assert split[0] == plain[0]  # same results
        assert split[1] == plain[1]  # same rounds
        assert split[2] >= plain[2]
        assert plain[0]["ltz"] == (x < 0).double().tolist()
        assert plain[0]["eq"] == (x == 0).double().tolist()
        assert plain[0]["median network"] == pytest.approx(U.median(0).values.tolist(), abs=1e-4)
