"""pgkernels from a program that starts its parties CrypTen's way.

Each party is a fresh interpreter with RANK, WORLD_SIZE and RENDEZVOUS in its
environment (as CrypTen's launchers set them) that calls pgkernels.init()
where it would call crypten.init(); the dealer is started with
``python -m pgkernels.party --role dealer``.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

import pgkernels
from pgkernels.runtime import session

ROOT = pathlib.Path(__file__).resolve().parents[1]

# The "existing CrypTen program", with crypten.init() replaced by pgkernels.init().
# Party 0 ends with crypten.uninit(), party 1 with pgkernels.uninit(), the
# others not at all (the at-exit shutdown): every way must stop the dealer.
CRYPTEN_PROGRAM = """
import json, os
import torch
import pgkernels
import crypten

pgkernels.init(timeout=120)
x = crypten.cryptensor(torch.tensor([-2.0, -0.5, -1.0 / 65536, 0.0, 1.5, 3.0]))
y = crypten.cryptensor(torch.tensor([1.0, 2.0, 4.0, 3.0, 4.0, -5.0]))
result = {
    "rank": crypten.communicator.get().get_rank(),
    # pgkernels.decode: exact (CrypTen's get_plain_text is a unit off for some negatives)
    "ltz": pgkernels.decode(pgkernels.ltz(x)).tolist(),
    "mul": pgkernels.decode(x * y).tolist(),
    "provider": crypten.cfg.mpc.provider,
}
print("RESULT " + json.dumps(result), flush=True)
if result["rank"] == 0:
    crypten.uninit()
elif result["rank"] == 1:
    pgkernels.uninit()
"""

# crypten.init() alone: no pgkernels dealer, so the kernels must say what to do.
NO_DEALER_PROGRAM = """
import json
import torch
import pgkernels
import crypten

crypten.init()
x = crypten.cryptensor(torch.tensor([-1.0, 2.0]))
out = {}
try:
    pgkernels.ltz(x)
except RuntimeError as e:
    out["kernel"] = str(e)
try:
    pgkernels.init()
except pgkernels.ConfigError as e:
    out["init_after_crypten"] = str(e)
print("RESULT " + json.dumps(out), flush=True)
crypten.uninit()
"""

# pgkernels.init() with no dealer process: the group cannot form.
NO_DEALER_PROCESS_PROGRAM = """
import json
import pgkernels

try:
    pgkernels.init(timeout=3)
    print("RESULT " + json.dumps({"init": "returned"}), flush=True)
except RuntimeError as e:
    print("RESULT " + json.dumps({"init": str(e)}), flush=True)
"""


def _env(rank, world_size, rendezvous):
    env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world_size), RENDEZVOUS=rendezvous,
               DISTRIBUTED_BACKEND="gloo", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT)] + sys.path))
    return env


def _run(procs, timeout=240):
    """(returncode, output) of every process; kills what is left on the way out."""
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


def _result(out):
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    assert len(lines) == 1, out
    return json.loads(lines[0][len("RESULT "):])


def _parties(program, world_size, rendezvous, tmp_path):
    script = tmp_path / "program.py"
    script.write_text(program)
    return [subprocess.Popen([sys.executable, str(script)], env=_env(r, world_size, rendezvous),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for r in range(world_size)]


@pytest.mark.parametrize("world_size", [2, 3], ids=lambda n: f"{n}pc")
def test_crypten_program_with_pgkernels_init_and_cli_dealer(world_size, tmp_path):
    rendezvous = f"file://{tmp_path / 'rendezvous'}"
    procs = _parties(CRYPTEN_PROGRAM, world_size, rendezvous, tmp_path)
    dealer_status = tmp_path / "dealer.json"
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "pgkernels.party", "--role", "dealer", "--world-size", str(world_size),
         "--rendezvous", rendezvous, "--timeout", "120", "--result", str(dealer_status)],
        env=_env(world_size, world_size, rendezvous), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True))
    outs = _run(procs)
    for code, out in outs:
        assert code == 0, out
    assert json.loads(dealer_status.read_text()) == {"status": "ok"}
    want_mul = [-2.0, -1.0, -4.0 / 65536, 0.0, 6.0, -15.0]
    for rank, (_, out) in enumerate(outs[:world_size]):
        res = _result(out)
        assert res["rank"] == rank
        assert res["provider"] == "PGK"  # CrypTen's own triples come from the pgkernels dealer
        assert res["ltz"] == [1, 1, 1, 0, 0, 0]
        assert res["mul"] == pytest.approx(want_mul, abs=1e-3)


def test_kernel_after_crypten_init_says_how_to_get_a_dealer(tmp_path):
    rendezvous = f"file://{tmp_path / 'rendezvous'}"
    outs = _run(_parties(NO_DEALER_PROGRAM, 2, rendezvous, tmp_path))
    command = f"python -m pgkernels.party --role dealer --world-size 2 --rendezvous {rendezvous}"
    for code, out in outs:
        assert code == 0, out
        res = _result(out)
        assert "pgkernels.init() instead of crypten.init()" in res["kernel"]
        assert command in res["kernel"]
        assert "pgkernels.init() instead of" in res["init_after_crypten"]
        assert command in res["init_after_crypten"]


def test_init_without_dealer_process_names_the_dealer_command(tmp_path):
    rendezvous = f"file://{tmp_path / 'rendezvous'}"
    outs = _run(_parties(NO_DEALER_PROCESS_PROGRAM, 2, rendezvous, tmp_path), timeout=120)
    command = f"python -m pgkernels.party --role dealer --world-size 2 --rendezvous {rendezvous}"
    for code, out in outs:
        assert code == 0, out
        msg = _result(out)["init"]
        assert "did not form" in msg and command in msg


def test_kernel_without_any_init_says_how_to_get_a_dealer(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RENDEZVOUS", "tcp://127.0.0.1:29500")
    with pytest.raises(RuntimeError) as err:
        session.dealer_client()
    msg = str(err.value)
    assert "pgkernels.init()" in msg
    assert "python -m pgkernels.party --role dealer --world-size 2 --rendezvous tcp://127.0.0.1:29500" in msg


@pytest.mark.parametrize("env, fragment", [
    ({"RANK": "0", "WORLD_SIZE": "2"}, "set RENDEZVOUS"),
    ({"RANK": "0", "RENDEZVOUS": "file:///tmp/x"}, "set WORLD_SIZE"),
    ({"WORLD_SIZE": "2", "RENDEZVOUS": "file:///tmp/x"}, "set RANK"),
    ({"RANK": "one", "WORLD_SIZE": "2", "RENDEZVOUS": "file:///tmp/x"}, "RANK must be an integer"),
    ({"RANK": "3", "WORLD_SIZE": "2", "RENDEZVOUS": "file:///tmp/x"}, "RANK must be in [0, WORLD_SIZE)"),
    ({"RANK": "2", "WORLD_SIZE": "2", "RENDEZVOUS": "file:///tmp/x"},
     "start the dealer with python -m pgkernels.party --role dealer --world-size 2"),
    ({"RANK": "0", "WORLD_SIZE": "2", "RENDEZVOUS": "file:///tmp/x", "DISTRIBUTED_BACKEND": "nccl"}, "gloo"),
])
def test_init_checks_the_environment(monkeypatch, env, fragment):
    for name in ("RANK", "WORLD_SIZE", "RENDEZVOUS", "DISTRIBUTED_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(pgkernels.ConfigError) as err:
        pgkernels.init()
    assert fragment in str(err.value)
