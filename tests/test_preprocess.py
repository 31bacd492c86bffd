"""The dealer's offline phase: record a call's dealer requests, ask for them
all ahead (DealerClient.preprocess), and run the call again without a dealer
round trip online -- from the user's side and from an attacker's."""

import pytest
import torch

import pgkernels


def _preprocessed_party(ws):
    import crypten

    from pgkernels import defenses as D
    from pgkernels.defenses import reference as R
    from pgkernels.runtime import comm, session

    client = session.dealer_client()
    g = torch.Generator().manual_seed(5)
    U = torch.round(torch.randn(7, 5, generator=g, dtype=torch.float64) * 2**16) / 2**16
    U[3] = U[1]  # ties
    U[0, 0] = 0.0
    eu = crypten.cryptensor(U)

    def call():
        med = D.median(eu)
        kr = D.krum(eu, 1)
        prod = (eu * eu).sum(1)  # CrypTen multiplications: their own dealer requests
        return med, kr, prod

    out = {}
    comm.reset_stats()
    with client.recording() as trace:
        first = call()
    online = comm.STATS.snapshot()
    out["kinds"] = sorted({r.kind for r in trace})
    client.preprocess(trace)
    client.wait_preprocessed()
    out["waiting"] = client.preprocessed()
    comm.reset_stats()
    second = call()
    s = comm.STATS.snapshot()
    out["left"] = client.preprocessed()
    out["rounds"] = (online.rounds, online.dealer_rounds, s.rounds, s.dealer_rounds)
    out["bytes"] = (online.bytes_sent, s.bytes_sent, s.dealer_bytes)
    Un = U.numpy()
    want = (R.median(Un), R.krum(Un, 1)[0], (Un * Un).sum(1))
    out["errs"] = [float(abs(torch.as_tensor(a.get_plain_text() if hasattr(a, "get_plain_text") else a).double()
                             - torch.as_tensor(w)).max()) for a, w in zip(second, want)]
    # median and Krum are exact: the same outputs as the online call
    out["same"] = all(torch.equal(a.get_plain_text(), b.get_plain_text()) for a, b in zip(first[:2], second[:2]))
    # a call that differs from the recording: a clear error, the rest discarded
    client.preprocess(trace)
    try:
        D.median(crypten.cryptensor(U[:5]))
        out["mismatch"] = "no error"
    except RuntimeError as e:
        out["mismatch"] = str(e)
    out["after_mismatch"] = client.preprocessed()
    # and the session goes on afterwards
    out["after"] = float(abs(D.median(eu).get_plain_text() - torch.as_tensor(R.median(Un))).max())
    return out


@pytest.mark.parametrize("ws", [2, 3])
def test_preprocessed_call_has_no_online_dealer_round(ws):
    res = pgkernels.launch(_preprocessed_party, world_size=ws, args=(ws,), timeout=240)
    for out in res:
        from pgkernels.runtime import dealer as Dl

        assert Dl.CMP in out["kinds"] and Dl.CRYPTEN in out["kinds"]
        assert out["waiting"] > 0 and out["left"] == 0
        r_on, d_on, r_off, d_off = out["rounds"]
        assert d_on > 0 and d_off == 0
        assert r_on - r_off >= d_on  # each online round trip was counted at least once
        assert out["bytes"][0] == out["bytes"][1] and out["bytes"][2] == 0
        assert max(out["errs"]) <= 1e-3, out["errs"]
        assert out["same"]
        assert "preprocessed dealer material was for" in out["mismatch"], out["mismatch"]
        assert out["after_mismatch"] == 0
        assert out["after"] <= 1e-4


def _diverging_party(record):
    """Party 1 preprocesses a trace that differs from party 0's (it tries to
    make the dealer answer a request only it asked for): the dealer refuses."""
    import crypten

    from pgkernels.runtime import comm, session

    client = session.dealer_client()
    x = crypten.cryptensor(torch.arange(6.0) - 3)
    with client.recording() as trace:
        pgkernels.ltz(x).get_plain_text()
    if comm.rank() == 1:
        with client.recording() as other:
            pgkernels.ltz(crypten.cryptensor(torch.arange(9.0))).get_plain_text()
        trace = other
    client.preprocess(trace)
    client.wait_preprocessed()
    return "answered"


def test_diverging_preprocess_is_refused_at_every_party():
    with pytest.raises(pgkernels.PartyError) as ei:
        pgkernels.launch(_diverging_party, world_size=2, args=(None,), timeout=180)
    assert "refusing request" in str(ei.value) and "asked for different things" in str(ei.value), str(ei.value)


def test_trace_arguments():
    from pgkernels.runtime import dealer as Dl

    req = Dl.DealerRequest(Dl.CMP, (4, 64, 0, 0, 0), 10, 20, (4, 64, 0, 0, 0), None)
    assert Dl.trace_words([req, req]) == 40
    assert "comparison" in req.describe()


def _batched_party(ws):
    """DealerClient.batched: the second call under a key takes the whole call's
    material in one round trip; a call that differs goes on asking."""
    import crypten

    from pgkernels import defenses as D
    from pgkernels.defenses import reference as R
    from pgkernels.runtime import comm, session

    client = session.dealer_client()
    g = torch.Generator().manual_seed(9)
    U = torch.round(torch.randn(9, 4, generator=g, dtype=torch.float64) * 2**16) / 2**16
    U[2] = U[5]  # ties
    eu = crypten.cryptensor(U)
    Un = U.numpy()
    out = {"stats": [], "errs": []}

    def call(x, xn):
        comm.reset_stats()
        with client.batched("fltrust-and-median"):  # a key that omits the sizes, to see a call differ
            med = D.median(x)
            ft = D.fltrust(x, x[0])
        s = comm.STATS.snapshot()
        out["stats"].append((s.rounds, s.dealer_rounds, s.bytes_sent, s.dealer_bytes))
        out["errs"].append(max(float(abs(med.get_plain_text().double() - torch.as_tensor(R.median(xn))).max()),
                               float(abs(ft.get_plain_text().double()
                                         - torch.as_tensor(R.fltrust(xn, xn[0]))).max())))
        return med.get_plain_text()

    first = call(eu, Un)
    second = call(eu, Un)  # batched: one dealer round trip
    out["same"] = torch.equal(first, second)
    out["left"] = client.preprocessed()
    # the same key, other sizes (clients dropped after a reveal): the batch is
    # dropped, the call asks as usual, and its trace is batched next time
    small = eu[:6]
    call(small, Un[:6])
    call(small, Un[:6])
    # an error inside a batched call, its batch not yet used: the batch is
    # received and dropped, nothing is stored, and the session goes on
    with client.batched("fails"):
        D.median(eu)
    try:
        with client.batched("fails"):
            out["queued_at_error"] = client.preprocessed()
            raise KeyError("inside")
    except KeyError:
        pass
    out["after_error"] = (client.preprocessed(), "fails" in client._batches)
    call(eu, Un)
    # a call that differs in its middle (the same first op, then other sizes)
    with client.batched("mid"):
        D.median(eu)
        D.fltrust(eu, eu[0])
    comm.reset_stats()
    with client.batched("mid"):
        med = D.median(eu)
        ft = D.fltrust(small, small[0])
    out["mid_dealer_rounds"] = comm.STATS.snapshot().dealer_rounds
    out["errs"].append(max(float(abs(med.get_plain_text().double() - torch.as_tensor(R.median(Un))).max()),
                           float(abs(ft.get_plain_text().double()
                                     - torch.as_tensor(R.fltrust(Un[:6], Un[0]))).max())))
    out["mid_left"] = client.preprocessed()
    return out


@pytest.mark.parametrize("ws", [2, 3])
def test_batched_call_takes_its_material_in_one_round_trip(ws):
    outs = pgkernels.launch(_batched_party, world_size=ws, args=(ws,), timeout=240)
    # the same dealer bytes, metered online (summed: which party receives a
    # request's corrections depends on its number)
    dealer_bytes = [sum(o["stats"][i][3] for o in outs) for i in range(5)]
    assert dealer_bytes[0] == dealer_bytes[1] > 0
    # a call that differed: the dropped batch's bytes are metered too
    assert dealer_bytes[2] == dealer_bytes[1] + dealer_bytes[3] and dealer_bytes[3] > 0
    for out in outs:
        first, second, small1, small2, last = out["stats"]
        assert first[1] > 1 and second[1] == 1, out["stats"]  # dealer round trips: many, then one
        assert second[0] < first[0], out["stats"]
        assert first[2] == second[2]
        assert small1[1] > 1 and small2[1] == 1, out["stats"]  # fell back, then batched again
        assert last[1] > 1  # the key's trace was the small call's: fell back again
        assert max(out["errs"]) <= 2e-3, out["errs"]
        assert out["same"] and out["left"] == 0
        assert out["queued_at_error"] > 0 and out["after_error"] == (0, False)
        assert out["mid_dealer_rounds"] > 1 and out["mid_left"] == 0  # the batch's, then the fallback's


def _diverging_batch_party(_):
    """Party 1 batches under a key whose trace differs from party 0's (it
    holds another call's trace): the dealer answers nothing and every party
    fails."""
    import crypten

    from pgkernels.runtime import comm, session

    client = session.dealer_client()
    a = crypten.cryptensor(torch.arange(6.0) - 3)
    b = crypten.cryptensor(torch.arange(9.0))
    with client.recording() as t6:
        pgkernels.ltz(a).get_plain_text()
    with client.recording() as t9:
        pgkernels.ltz(b).get_plain_text()
    client._batches["k"] = t6 if comm.rank() == 0 else t9
    with client.batched("k"):
        pgkernels.ltz(a).get_plain_text()
    return "answered"


def test_diverging_batch_is_refused_at_every_party():
    with pytest.raises(pgkernels.PartyError) as ei:
        pgkernels.launch(_diverging_batch_party, world_size=2, args=(None,), timeout=180)
    assert "refusing request" in str(ei.value), str(ei.value)
