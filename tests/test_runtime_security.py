"""The runtime from the attacker's side.

Dealer: a party that asks alone (a forged request), or all parties asking for
something malformed or too big, get a refusal, never an answer; every process
fails with an error instead of hanging. Channel: what crosses gloo in an
encrypted session carries no key, share or opened value; tampered, replayed
and impostor traffic fails with an error naming the peer; object messages are
never unpickled; a local launch listens on loopback only.
"""

import json
import os
import pathlib
import stat
import subprocess
import sys
import time

import pytest
import torch

import pgkernels
from pgkernels.runtime import dealer as D
from pgkernels.runtime.launch import free_port

ROOT = pathlib.Path(__file__).resolve().parents[1]


# --- Task 1: the dealer answers only what every party asked for ---------------------------

def _forging_party(ws, record):
    """Party 0 replaces its header for request ws (where it is the corrected
    party) by a zero-sized matmul "triple": answered, it would be minus party
    1's stream words, i.e. party 1's comparison mask."""
    import crypten

    from pgkernels.runtime import comm, session

    client = session.dealer_client()
    x = crypten.cryptensor(torch.arange(8.0) - 4)
    if comm.rank() == 0:
        real_send = client._send_request

        def forged(header, payload=None):
            seq = int(header[1])
            if seq % ws != 0:
                return real_send(header, payload)
            raw = D.encode_request({"fn": "additive", "op": "matmul", "size0": [8, 0], "size1": [0, 1],
                                    "kwargs": {}})
            real_send(D._header(D.CRYPTEN, seq, (len(raw),)),
                      torch.frombuffer(bytearray(raw), dtype=torch.uint8))
            answer = torch.zeros(8, dtype=torch.long)
            try:
                client.tx.recv(answer, client.dealer_rank, group=client.group)
                outcome = "ANSWERED " + str(answer.tolist())
            except Exception as e:
                outcome = "no answer: " + str(e).splitlines()[0]
            with open(record, "w") as f:
                f.write(outcome)
            raise RuntimeError("forgery over: " + outcome)

        client._send_request = forged
    for _ in range(ws + 1):
        pgkernels.ltz(x).get_plain_text()
    return "finished"


@pytest.mark.parametrize("ws", [2, 3])
def test_forged_header_from_party0_is_refused(ws, tmp_path):
    record = tmp_path / "party0.txt"
    t = time.monotonic()
    with pytest.raises(pgkernels.PartyError) as ei:
        pgkernels.launch(_forging_party, world_size=ws, args=(ws, str(record)), timeout=180)
    msg = str(ei.value)
    assert time.monotonic() - t < 150
    assert f"refusing request {ws}" in msg and "asked for different things" in msg, msg
    assert "CrypTen request" in msg and "comparison n=8" in msg
    assert record.read_text().startswith("no answer"), record.read_text()


def _raw_request_party(header_words, payload_hex=None):
    """Every party sends the same (malformed) header, bypassing its own checks,
    then waits for an answer that must never come."""
    from pgkernels.runtime import session

    client = session.dealer_client()
    payload = None
    if payload_hex is not None:
        payload = torch.frombuffer(bytearray(bytes.fromhex(payload_hex)), dtype=torch.uint8)
    client._send_request(torch.tensor(header_words, dtype=torch.long), payload)
    answer = torch.zeros(1, dtype=torch.long)
    client.tx.recv(answer, client.dealer_rank, group=client.group)
    return "ANSWERED"


def _json_hex(req):
    return D.encode_request(req).hex()


_ZERO_MATMUL = _json_hex({"fn": "additive", "op": "matmul", "size0": [8, 0], "size1": [0, 1], "kwargs": {}})


@pytest.mark.parametrize("case,header,payload,why", [
    ("zero-dims", [D.CRYPTEN, 1, len(_ZERO_MATMUL) // 2, 0, 0, 0, 0, 0], _ZERO_MATMUL, "no zero dimension"),
    ("huge-cmp", [D.CMP, 1, 2 ** 40, 64, 0, 0, 0, 0], None, "over the budget"),
    ("int-truncation", [D.CMP, 1, 8, 2 ** 32 + 64, 0, 0, 0, 0], None, r"bits k must be in \[2, 64\]"),
    ("long-json", [D.CRYPTEN, 1, 1 << 20, 0, 0, 0, 0, 0], None, "JSON must be 1..65536 bytes"),
    ("wrong-seq", [D.CMP, 7, 8, 64, 0, 0, 0, 0], None, "request number 7"),
])
def test_dealer_refuses_malformed_requests_all_parties_make(case, header, payload, why):
    t = time.monotonic()
    with pytest.raises(pgkernels.PartyError, match=why) as ei:
        pgkernels.launch(_raw_request_party, world_size=2, args=(header, payload), timeout=180)
    assert "refusing request 1" in str(ei.value)
    assert "ANSWERED" not in str(ei.value)
    assert time.monotonic() - t < 150


def test_memory_budget_env_refuses_at_party_and_dealer(monkeypatch):
    monkeypatch.setenv("PGKERNELS_DEALER_MAX_BYTES", str(1 << 20))

    def fn():
        import crypten

        x = crypten.cryptensor(torch.randn(100_000))
        return pgkernels.ltz(x).get_plain_text().sum().item()

    with pytest.raises(pgkernels.PartyError, match="PGKERNELS_DEALER_MAX_BYTES"):
        pgkernels.launch(fn, world_size=2, timeout=180)


def test_request_validation_units(monkeypatch):
    ok = {"fn": "additive", "op": "matmul", "size0": [2, 3], "size1": [3, 4], "kwargs": {}}
    assert D.crypten_layout(ok) == (18, 26)
    assert D.crypten_layout({"fn": "trunc", "size": [5], "divisor": 2 ** 20}) == (5, 15)
    conv = {"fn": "additive", "op": "conv2d", "size0": [1, 2, 6, 6], "size1": [3, 2, 3, 3],
            "kwargs": {"padding": [1, 1], "stride": 1}}
    assert D.crypten_layout(conv) == (72 + 54, 72 + 54 + 108)
    zero = [
        dict(ok, size0=[8, 0], size1=[0, 1]),
        {"fn": "binary", "size0": [0], "size1": [1]},
        {"fn": "square", "size": [3, 0]},
        {"fn": "wraps", "size": [0]},
        {"fn": "B2A", "size": [0, 2]},
        {"fn": "trunc", "size": [0], "divisor": 3},
        {"fn": "gram", "size": [4, 0]},
        {"fn": "gram", "size": [0, 4]},
    ]
    for req in zero:
        with pytest.raises(ValueError, match="no zero dimension"):
            D.crypten_layout(req)
    bad = [
        dict(ok, op="__import__"), dict(ok, size0=[2, True]), dict(ok, size0=[2, 2 ** 41]),
        dict(ok, kwargs={"padding": 2 ** 40}), dict(ok, kwargs={"evil": 1}),
        dict(ok, size1=[4, 4]),  # shapes that do not multiply
        dict(ok, extra=1), {"fn": "trunc", "size": [3], "divisor": 0}, [1, 2], "square",
    ]
    for req in bad:
        with pytest.raises(ValueError):
            D.crypten_layout(req)
    for raw in (b"\x80\x04K\x01.", b'{"fn": "square", "size": [NaN]}', b"[]", b"\xff\xfe"):
        with pytest.raises(ValueError):
            D.parse_request(raw)
    assert D.check_cmp_params(10, 64, 0, 2, 1) == (10, 64, 0, 2, 1)
    for args in [(0, 64, 0, 0, 0), (2 ** 40 + 1, 64, 0, 0, 0), (10, 2 ** 32 + 64, 0, 0, 0), (10, 1, 0, 0, 0),
                 (10, 64, 3, 0, 0), (10, 64, 0, 2 ** 16 + 1, 0), (10, 64, 0, 0, 2), (10, 64, 0, -1, 0)]:
        with pytest.raises(ValueError):
            D.check_cmp_params(*args)
    with pytest.raises(TypeError, match="n must be an int"):
        D.check_cmp_params(True, 64, 0, 0, 0)
    # the budget counts every party's stream plus the corrections
    lay = D.cmp_layout(10 ** 6, 64, 0, 0, 0)
    assert D.request_bytes(lay.stream, lay.total, 3) == 8 * (3 * lay.total + lay.corrected)
    assert D.max_request_bytes() == D.DEFAULT_MAX_BYTES or "PGKERNELS_DEALER_MAX_BYTES" in os.environ
    monkeypatch.setenv("PGKERNELS_DEALER_MAX_BYTES", "1000000")
    with pytest.raises(ValueError, match="over the budget"):
        D.crypten_layout({"fn": "gram", "size": [400, 10]}, world_size=2)  # m^2 counts
    with pytest.raises(ValueError, match="over the budget"):
        D.crypten_layout(dict(ok, size0=[10 ** 5, 1], size1=[1, 10 ** 5]), world_size=2)  # the product counts
    monkeypatch.setenv("PGKERNELS_DEALER_MAX_BYTES", "lots")
    with pytest.raises(ValueError, match="PGKERNELS_DEALER_MAX_BYTES"):
        D.max_request_bytes()


def test_dealer_core_refuses_before_allocating(monkeypatch):
    core = D.DealerCore([D.new_key(), D.new_key()])
    with pytest.raises(ValueError, match="over the budget"):
        core.answer(D.CMP, (2 ** 40, 64, 0, 0, 0))
    with pytest.raises(ValueError, match="no zero dimension"):
        core.answer(D.CRYPTEN, {"fn": "additive", "op": "matmul", "size0": [8, 0], "size1": [0, 1], "kwargs": {}})
    assert core.seq == 0  # nothing was drawn


def _forging_fss_party(record):
    """Party 0 asks for a tree comparison where party 1 asks for FSS keys of
    the same elements: answered, party 0 would get material built on party
    1's stream words for another protocol. The dealer must refuse."""
    import crypten

    from pgkernels.runtime import comm, session

    client = session.dealer_client()
    x = crypten.cryptensor(torch.arange(8.0) - 4)
    if comm.rank() == 0:
        real_send = client._send_request

        def forged(header, payload=None):
            if int(header[0]) != D.FSS:
                return real_send(header, payload)
            real_send(D._header(D.CMP, int(header[1]), (8, 64, 0, 0, 0)))
            answer = torch.zeros(8, dtype=torch.long)
            try:
                client.tx.recv(answer, client.dealer_rank, group=client.group)
                outcome = "ANSWERED " + str(answer.tolist())
            except Exception as e:
                outcome = "no answer: " + str(e).splitlines()[0]
            with open(record, "w") as f:
                f.write(outcome)
            raise RuntimeError("forgery over: " + outcome)

        client._send_request = forged
    pgkernels.ltz(x, method="fss").get_plain_text()
    return "finished"


def test_forged_fss_header_from_party0_is_refused(tmp_path):
    record = tmp_path / "party0.txt"
    with pytest.raises(pgkernels.PartyError) as ei:
        pgkernels.launch(_forging_fss_party, world_size=2, args=(str(record),), timeout=180)
    msg = str(ei.value)
    assert "refusing request 1" in msg and "asked for different things" in msg, msg
    assert "FSS comparison n=8 k=64" in msg and "comparison n=8 k=64 mode=0" in msg
    assert record.read_text().startswith("no answer"), record.read_text()


@pytest.mark.parametrize("case,header,why", [
    ("fss-bits", [D.FSS, 1, 8, 65, 0, 0, 0, 0], r"bits k must be in \[2, 64\]"),
    ("fss-bits-1", [D.FSS, 1, 8, 1, 0, 0, 0, 0], r"bits k must be in \[2, 64\]"),
    ("fss-huge", [D.FSS, 1, 2 ** 40, 64, 0, 0, 0, 0], "over the budget"),
    ("fss-zero", [D.FSS, 1, 0, 64, 0, 0, 0, 0], r"n must be in \[1, 2\^40\]"),
    ("fss-extra-words", [D.FSS, 1, 8, 64, 5, 0, 0, 0], "unused header words must be zero"),
])
def test_dealer_refuses_malformed_fss_requests(case, header, why):
    with pytest.raises(pgkernels.PartyError, match=why) as ei:
        pgkernels.launch(_raw_request_party, world_size=2, args=(header, None), timeout=180)
    assert "refusing request 1" in str(ei.value) and "ANSWERED" not in str(ei.value)


def test_dealer_refuses_fss_with_three_parties():
    header = [D.FSS, 1, 8, 64, 0, 0, 0, 0]
    with pytest.raises(pgkernels.PartyError, match="exactly 2 parties") as ei:
        pgkernels.launch(_raw_request_party, world_size=3, args=(header, None), timeout=180)
    assert "ANSWERED" not in str(ei.value)


def test_fss_request_units(monkeypatch):
    assert D.check_fss_params(10, 64) == (10, 64)
    for args in [(0, 64), (2 ** 40 + 1, 64), (10, 1), (10, 65), (10, 2 ** 32 + 64)]:
        with pytest.raises(ValueError):
            D.check_fss_params(*args)
    with pytest.raises(ValueError, match="exactly 2 parties"):
        D.check_fss_params(10, 64, world_size=3)
    with pytest.raises(TypeError, match="n must be an int"):
        D.check_fss_params(True, 64)
    assert D.fss_layout(10, 64) == (30, 30 + 10 * 190)
    core = D.DealerCore([D.new_key(), D.new_key()])
    with pytest.raises(ValueError, match="over the budget"):
        core.answer(D.FSS, (2 ** 40, 64))
    with pytest.raises(ValueError, match="exactly 2 parties"):
        D.DealerCore([D.new_key() for _ in range(3)]).answer(D.FSS, (8, 64))
    assert core.seq == 0  # nothing was drawn
    # an answer is the keys for r = r_0 + r_1 from the two streams: evaluating them gives [x < 0]
    from pgkernels import ops

    n = 64
    corr = core.answer(D.FSS, (n, 64)).clone()
    mats = [D.stream(k, core.seq, 3 * n) for k in core.keys]
    x = torch.randint(-(2 ** 63), 2 ** 63 - 1, (n,))
    c = x + mats[0][:n] + mats[1][:n]
    got = sum(ops.fss_ltz_eval(c, mats[b][n:], corr, 64, b) for b in (0, 1))
    assert torch.equal(got, (x < 0).long())
    assert D.describe_header(D._header(D.FSS, 3, (8, 64))) == "request 3: FSS comparison n=8 k=64"


def test_insecure_local_dealer_serves_fss():
    """dealer="tfp": party 0 computes the FSS keys and sends the other party its copy."""

    def fn():
        import crypten

        x = crypten.cryptensor(torch.tensor([-1.0, 2.0, -3.0, 0.0]))
        return pgkernels.ltz(x, method="fss").get_plain_text().tolist()

    with pytest.warns(RuntimeWarning, match="INSECURE"):
        res = pgkernels.launch(fn, world_size=2, dealer="tfp", insecure=True, timeout=180)
    assert res[0] == [1, 0, 1, 0]


# --- Task 2: the encrypted channel ------------------------------------------------------

def _cli(args, env, **kw):
    return subprocess.Popen([sys.executable, "-m", "pgkernels.party"] + args, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def _env(**extra):
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + sys.path), **extra)


def _keygen(path, env):
    out = subprocess.run([sys.executable, "-m", "pgkernels.party", "keygen", "--out", str(path)], env=env,
                         capture_output=True, text=True, check=True, timeout=120)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    return out.stdout.strip()


def _run_all(procs, timeout=240):
    outs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=timeout)
            outs.append((p.returncode, out))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return outs


def _identities(tmp, ws, env):
    keys = {r: tmp / f"party{r}.key" for r in range(ws)}
    keys["dealer"] = tmp / "dealer.key"
    pubs = {name: _keygen(path, env) for name, path in keys.items()}
    roster = tmp / "roster.json"
    cmd = [sys.executable, "-m", "pgkernels.party", "roster", "--world-size", str(ws), "--dealer", pubs["dealer"],
           "--out", str(roster)]
    for r in range(ws):
        cmd += ["--party", pubs[r]]
    subprocess.run(cmd, env=env, check=True, timeout=120)
    return keys, pubs, roster


def _needles(secrets_file):
    s = json.loads(secrets_file.read_text())
    out = []
    for kind in ("key", "share", "contribution", "opened"):
        for h in s[kind]:
            b = bytes.fromhex(h)[:64]
            if len(b) >= 8 and any(b):
                out.append((kind, b))
    return s, out


@pytest.mark.parametrize("ws,channel", [(3, "encrypted"), (2, "plain")])
def test_cli_tcp_session_traffic_hides_keys_shares_and_openings(ws, channel, tmp_path):
    """python -m pgkernels.party over a tcp:// loopback rendezvous with explicit
    identities and roster. A hook in each party copies every byte it hands to or
    gets from torch.distributed; nothing secret may appear in it when encrypted
    (and, as a control, the dealer key and openings do appear when plain)."""
    env = _env(PGK_CAPTURE_DIR=str(tmp_path))
    keys, pubs, roster = _identities(tmp_path, ws, env)
    rdv = f"tcp://127.0.0.1:{free_port()}"
    base = ["--world-size", str(ws), "--rendezvous", rdv, "--timeout", "180", "--channel", channel,
            "--roster", str(roster)]
    target = str(ROOT / "tests/security_target.py") + ":main"
    procs = [_cli(base + ["--rank", str(r), "--identity", str(keys[r]), "--run", target], env) for r in range(ws)]
    procs.append(_cli(base + ["--role", "dealer", "--identity", str(keys["dealer"])], env))
    outs = _run_all(procs)
    for code, out in outs:
        assert code == 0, out
    comm_cls = "ChannelCommunicator" if channel == "encrypted" else "PgkCommunicator"
    for r in range(ws):
        assert f"[party {r}] ok: ['correct', '{comm_cls}']" in outs[r][1], outs[r][1]
    leaks = []
    for r in range(ws):
        s, needles = _needles(tmp_path / f"secrets{r}.json")
        traffic = (tmp_path / f"sent{r}.bin").read_bytes() + (tmp_path / f"received{r}.bin").read_bytes()
        assert len(traffic) > 1000
        found = {kind for kind, b in needles if b in traffic}
        if channel == "encrypted":
            assert not found, (r, found)
            assert s["collectives"] == [], s["collectives"]  # CrypTen's collectives went point-to-point
        leaks.append(found)
    if channel == "plain":  # the control: the same hooks see the secrets in the clear
        assert all({"key", "contribution"} <= f for f in leaks), leaks


def _tampering_party(mode):
    """Party 1 corrupts one record it sends to party 0 after the session started."""
    import crypten
    import torch.distributed as dist

    from pgkernels.runtime import comm

    x = crypten.cryptensor(torch.randn(256))
    if comm.rank() == 1:
        real_isend = dist.isend
        state = {"first": None, "done": False}

        def isend(tensor, dst, *a, **k):
            if dst == 0 and not state["done"] and tensor.numel() == 256 * 8 + 16:
                if mode == "flip":
                    tensor[100] ^= 1  # one bit of one ciphertext record, in flight
                    state["done"] = True
                elif state["first"] is None:
                    state["first"] = tensor.clone()  # the first c-opening record of the first ltz
                else:
                    tensor.copy_(state["first"])  # replay it in place of the second ltz's
                    state["done"] = True
            return real_isend(tensor, dst, *a, **k)

        dist.isend = isend
    out = [pgkernels.ltz(x).get_plain_text() for _ in range(2)]
    return [o.sum().item() for o in out]


@pytest.mark.parametrize("mode", ["flip", "replay"])
def test_tampered_or_replayed_record_fails_naming_the_peer(mode):
    t = time.monotonic()
    with pytest.raises(pgkernels.PartyError, match=r"from party 1 did not authenticate") as ei:
        pgkernels.launch(_tampering_party, world_size=2, args=(mode,), channel="encrypted", timeout=180)
    assert ei.value.rank == 0
    assert time.monotonic() - t < 150


def test_impostor_not_in_roster_is_rejected(tmp_path):
    """Party 1's slot is taken by a process whose key is not the pinned one
    (it brings a roster of its own): party 0 and the dealer refuse it."""
    env = _env()
    keys, pubs, roster = _identities(tmp_path, 2, env)
    fake_key = tmp_path / "impostor.key"
    fake_pub = _keygen(fake_key, env)
    fake_roster = tmp_path / "impostor-roster.json"
    d = json.loads(roster.read_text())
    d["parties"][1] = fake_pub
    fake_roster.write_text(json.dumps(d))
    rdv = f"tcp://127.0.0.1:{free_port()}"
    base = ["--world-size", "2", "--rendezvous", rdv, "--timeout", "120", "--channel", "encrypted"]
    target = str(ROOT / "tests/party_target.py") + ":main"
    t = time.monotonic()
    procs = [
        _cli(base + ["--rank", "0", "--identity", str(keys[0]), "--roster", str(roster), "--run", target], env),
        _cli(base + ["--rank", "1", "--identity", str(fake_key), "--roster", str(fake_roster), "--run", target], env),
        _cli(base + ["--role", "dealer", "--identity", str(keys["dealer"]), "--roster", str(roster)], env),
    ]
    outs = _run_all(procs)
    assert time.monotonic() - t < 200
    assert all(code != 0 for code, _ in outs), outs
    assert "party 1 failed the authenticated key exchange" in outs[0][1], outs[0][1]
    assert "party 1 failed the authenticated key exchange" in outs[2][1], outs[2][1]
    assert "ok:" not in outs[0][1]


def test_wrong_identity_for_rank_is_refused_locally(tmp_path):
    env = _env()
    keys, pubs, roster = _identities(tmp_path, 2, env)
    from pgkernels.runtime.channel import ChannelError, Roster, establish, load_identity

    with pytest.raises(ChannelError, match="not the roster's key for party 0"):
        establish(0, 2, 3, Roster.load(roster), load_identity(keys[1]))


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def _pickle_party(path):
    import pickle

    import crypten.communicator as cc

    c = cc.get()
    if c.get_rank() == 0:
        c._send_bytes(pickle.dumps(_Evil(path)), 1)
        c.send_obj({"function": "additive", "args": (torch.Size([2, 3]), torch.Size([3]), "matmul"),
                    "device": None, "kwargs": {"padding": (1, 1)}}, 1)
        try:
            c.send_obj(torch.ones(2), 1)
        except TypeError as e:
            return str(e)
        return "sent a tensor"
    try:
        c.recv_obj(0)
        first = "UNPICKLED"
    except ValueError as e:
        first = str(e)
    return first, c.recv_obj(0)


@pytest.mark.parametrize("channel", ["plain", "encrypted"])
def test_recv_obj_refuses_pickles(channel, tmp_path):
    target = str(tmp_path / "created-by-pickle")
    res = pgkernels.launch(_pickle_party, world_size=2, args=(target,), channel=channel, timeout=180)
    assert not os.path.exists(target)
    assert "not a pgkernels object encoding" in res[1][0]
    assert res[1][1] == {"function": "additive", "args": (torch.Size([2, 3]), torch.Size([3]), "matmul"),
                         "device": None, "kwargs": {"padding": (1, 1)}}
    assert "cannot send a torch.Tensor" in res[0]


def test_object_encoding_units(tmp_path):
    import pickle

    from pgkernels.runtime.communicator import decode_obj, encode_obj

    for obj in ["terminate", torch.Size([2, 3]), None, -1, 2.5, [1, (2, "x")],
                {"function": "B2A_rng", "device": "cpu", "args": (torch.Size([4]),), "kwargs": {}},
                torch.device("cpu")]:
        back = decode_obj(encode_obj(obj))
        assert back == obj and type(back) is type(obj)
    for obj in [torch.ones(1), object(), {1: 2}, float("nan"), b"bytes", {"x": {1, 2}}]:
        with pytest.raises(TypeError):
            encode_obj(obj)
    path = str(tmp_path / "made")
    for raw in [pickle.dumps(_Evil(path)), b'{"x": 1}', b"[1, 2]", b'{"S": [1, true]}', b"NaN", b"\x80"]:
        with pytest.raises(ValueError, match="not a pgkernels object encoding"):
            decode_obj(raw)
    assert not os.path.exists(path)


def test_crypten_ttp_baseline_over_encrypted_channel():
    """CrypTen's own TTP (pickle-free requests, seeds through the channel)."""

    def fn():
        import crypten

        x = crypten.cryptensor(torch.tensor([-1.0, 2.0]))
        return (x * x).get_plain_text().tolist(), (x < 0).get_plain_text().tolist()

    res = pgkernels.launch(fn, dealer="crypten-ttp", channel="encrypted", timeout=180)
    assert res[0] == ([1.0, 4.0], [1, 0])


def _listening():
    """(local address, port) of every listening TCP socket this process owns, and argv."""
    import sys

    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    out = []
    for name in ("tcp", "tcp6"):
        try:
            lines = open(f"/proc/net/{name}").read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # LISTEN
                out.append((name, f[1]))
    modes = {}
    if "--identity" in sys.argv:
        own = sys.argv[sys.argv.index("--identity") + 1]
        modes = {"dir": stat.S_IMODE(os.stat(os.path.dirname(own)).st_mode),
                 "key": stat.S_IMODE(os.stat(own).st_mode)}
    return out, sys.argv, modes


def _is_loopback(proto, local):
    addr_hex = local.split(":")[0]
    if proto == "tcp":
        return bytes.fromhex(addr_hex)[::-1][0] == 127
    raw = bytes.fromhex(addr_hex)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return words == bytes(15) + b"\x01" or (words[:12] == bytes(10) + b"\xff\xff" and words[12] == 127)


@pytest.mark.parametrize("channel", ["plain", "encrypted"])
def test_local_launch_listens_on_loopback_only(channel):
    res = pgkernels.launch(_listening, world_size=2, channel=channel, timeout=180)
    for socks, argv, modes in res:
        rdv = argv[argv.index("--rendezvous") + 1]
        assert rdv.startswith("file://"), rdv
        assert socks, "expected gloo's listening socket"
        assert all(_is_loopback(p, a) for p, a in socks), socks
        if channel == "encrypted":
            assert sum(a == "--identity" for a in argv) == 1 and "--roster" in argv
            assert modes == {"dir": 0o700, "key": 0o600}


def _metered():
    import crypten

    from pgkernels.runtime import comm

    n = 4096
    x = crypten.cryptensor(torch.randn(n))
    rows = {}
    for name, f in [("ltz", lambda: pgkernels.ltz(x)), ("crypten_lt", lambda: x < 0),
                    ("mul", lambda: x * x), ("relu", lambda: pgkernels.relu(x))]:
        comm.reset_stats()
        f()
        s = comm.STATS.snapshot()
        rows[name] = (s.rounds, s.bytes_sent / n, s.dealer_requests)
    return rows, type(crypten.communicator.get()).__name__


def test_meter_counts_the_same_over_the_encrypted_channel():
    plain = pgkernels.launch(_metered, world_size=2, timeout=180)[0]
    enc = pgkernels.launch(_metered, world_size=2, channel="encrypted", timeout=180)[0]
    assert plain[1] == "PgkCommunicator" and enc[1] == "ChannelCommunicator"
    assert plain[0] == enc[0]
    assert enc[0]["ltz"][:2] == (7, 13.25) and enc[0]["crypten_lt"][0] == 24


def test_insecure_local_dealer_over_encrypted_channel():
    """dealer="tfp": party 0 hands out the keys, through the channel too."""

    def fn():
        import crypten

        x = crypten.cryptensor(torch.tensor([-1.0, 2.0, -3.0]))
        return pgkernels.ltz(x).get_plain_text().tolist(), [round(v, 3) for v in (x * x).get_plain_text().tolist()]

    with pytest.warns(RuntimeWarning, match="INSECURE"):
        res = pgkernels.launch(fn, world_size=3, dealer="tfp", insecure=True, channel="encrypted", timeout=180)
    assert res[0] == ([1, 0, 1], [1.0, 4.0, 9.0])


def test_channel_records_units():
    """Records between two Channel objects with matching keys, without gloo."""
    from pgkernels.runtime.channel import Channel, ChannelError

    k01, k10 = os.urandom(32), os.urandom(32)
    names = {0: "party 0", 1: "party 1"}
    a = Channel(0, 2, {1: (k01, k10)}, names)
    b = Channel(1, 2, {0: (k10, k01)}, names)

    def seal(ch, t, dst):
        from pgkernels.runtime.channel import _byte_view

        ct = torch.empty(t.numel() * t.element_size() + 16, dtype=torch.uint8)
        ctr = ch._send_ctr[dst]
        ch._seal(dst, _byte_view(t), ct)  # advances the counter
        return ct, ctr

    x = torch.arange(1000, dtype=torch.long)
    ct0, c0 = seal(a, x, 1)
    ct1, c1 = seal(a, x, 1)
    assert (c0, c1) == (0, 1) and not torch.equal(ct0, ct1)  # fresh nonce per record
    out = torch.empty_like(x)
    b._open(0, 0, ct0, out, 8000)
    assert torch.equal(out, x)
    with pytest.raises(ChannelError, match="record #1 .* from party 0 did not authenticate"):
        b._open(0, 1, ct0, out, 8000)  # replayed at the next position
    assert not out.any()  # nothing unauthenticated is left behind
    with pytest.raises(ChannelError, match="record #0"):
        b._open(0, 0, ct1, out, 8000)  # record 0 dropped: record 1 arrives where 0 is expected
    b._open(0, 1, ct1, out, 8000)
    assert torch.equal(out, x)
    bad = ct1.clone()
    bad[5] ^= 0x80
    with pytest.raises(ChannelError):
        b._open(0, 1, bad, out, 8000)
    with pytest.raises(ChannelError):  # redirected: party 1 -> party 0 direction key differs
        a._open(1, 0, ct0, out, 8000)
    small = torch.tensor([7], dtype=torch.int8)
    ct, _ = seal(a, small, 1)
    got = torch.empty_like(small)
    b._open(0, 2, ct, got, 1)
    assert got.item() == 7


def test_roster_and_identity_files(tmp_path):
    from pgkernels.runtime.channel import Roster, generate_identity, load_identity, write_roster

    key, pub = generate_identity(tmp_path / "k")
    assert load_identity(tmp_path / "k").public_key().public_bytes_raw().hex() == pub
    with pytest.raises(FileExistsError):
        generate_identity(tmp_path / "k")
    os.chmod(tmp_path / "k", 0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        load_identity(tmp_path / "k")
    _, pub2 = generate_identity()
    r = write_roster(tmp_path / "r.json", 2, [pub, pub2])
    assert Roster.load(tmp_path / "r.json").digest() == r.digest()
    with pytest.raises(ValueError, match="same public key"):
        Roster(2, [pub, pub])
    with pytest.raises(ValueError, match="64 hex digits"):
        Roster(2, [pub, "abcd"])
    with pytest.raises(ValueError, match="2 public keys"):
        Roster(2, [pub])


def test_channel_modes_resolve():
    from pgkernels.runtime.session import _load_secure, resolve_channel

    assert resolve_channel("auto", "file:///tmp/x") == "plain"
    assert resolve_channel("auto", "tcp://127.0.0.1:5") == "plain"
    assert resolve_channel("auto", "tcp://localhost:5") == "plain"
    assert resolve_channel("auto", "tcp://[::1]:5") == "plain"
    assert resolve_channel("auto", "tcp://10.1.2.3:5") == "encrypted"
    assert resolve_channel("auto", "tcp://host-a:5") == "encrypted"
    assert resolve_channel("plain", "tcp://10.1.2.3:5") == "plain"
    with pytest.raises(pgkernels.ConfigError, match="channel must be one of"):
        resolve_channel("tls", "file:///x")
    with pytest.raises(pgkernels.ConfigError, match="needs identity="):
        _load_secure("auto", "tcp://10.1.2.3:5", None, None)
    with pytest.raises(pgkernels.ConfigError, match="channel must be one of"):
        pgkernels.launch(lambda: 0, channel="tls")
