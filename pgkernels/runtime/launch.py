"""Run a function as every compute party of an MPC session on this host.

Each party (and the dealer) is a fresh interpreter started with
``python -m pgkernels.party`` -- the same entry point a multi-host deployment
uses -- so nothing is forked from the caller: ``launch`` works after the caller
has used torch's thread pool (a fork would deadlock, as CrypTen's
``run_multiprocess`` does) and from scripts without a ``__main__`` guard. The
function travels by value with cloudpickle, so closures and lambdas work.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import cloudpickle

from .session import ConfigError, check_dealer, has_dealer_process


class PartyError(RuntimeError):
    """A party raised, died, or did not finish in time."""

    def __init__(self, message, rank=None):
        super().__init__(message)
        self.rank = rank


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_env(threads):
    env = dict(os.environ)
    paths = [p for p in sys.path if p]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    if threads is not None:
        env["PGKERNELS_THREADS"] = str(threads)
    # Keep freed multi-megabyte share buffers in glibc's heap instead of
    # returning them to the kernel: re-faulting fresh pages costs more than
    # the kernels (about 20% of a compare-exchange network here).
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(32 << 20))
    env.setdefault("MALLOC_TRIM_THRESHOLD_", str(8 << 30))
    return env


def launch(fn, world_size=2, dealer="ttp", timeout=300.0, args=(), kwargs=None, insecure=False,
           threads=1, party_inputs=None):
    """Run ``fn(*args, **kwargs)`` in every compute party; return the per-rank results.

    Args:
        fn: any callable (closures and lambdas too); it runs after CrypTen and the
            dealer are set up, so it can create ``crypten.cryptensor``s right away.
        world_size: number of compute parties (>= 2).
        dealer: ``"ttp"`` (pgkernels dealer process, the default), ``"crypten-ttp"``
            (CrypTen's TTPServer) or ``"tfp"`` (insecure, needs ``insecure=True``).
        timeout: seconds for the whole session; also the communication timeout
            inside the parties.
        threads: torch intra-op threads per party (1 keeps parties from fighting
            over cores on a small machine; None leaves torch's default).
        party_inputs: None, or a list of ``world_size`` values: party ``r`` then
            runs ``fn(*args, party_input=party_inputs[r], **kwargs)``. Each value
            is written to a file that only party ``r``'s command line names (and
            that the party deletes once read), so no party's process reads
            another's private input -- unlike ``args``/``kwargs``, which every
            party receives. :mod:`pgkernels.runtime.inputs` makes such shares.

    Raises:
        PartyError: a party raised (its traceback is in the message), exited
            without a result, or the session outlived ``timeout``. The other
            processes are killed first, so nothing is left hanging.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if not isinstance(world_size, int) or world_size < 2:
        raise ConfigError(f"world_size must be an int >= 2, got {world_size!r}")
    if timeout is None or timeout <= 0:
        raise ConfigError(f"timeout must be > 0 seconds, got {timeout!r}")
    check_dealer(dealer, insecure)
    kwargs = kwargs or {}
    if party_inputs is not None:
        if not isinstance(party_inputs, (list, tuple)) or len(party_inputs) != world_size:
            raise ConfigError(f"party_inputs must be a list of world_size={world_size} values")
        if "party_input" in kwargs:
            raise ConfigError("give party_input through party_inputs, not kwargs")
    tmp = tempfile.mkdtemp(prefix="pgkernels-")
    try:
        payload = os.path.join(tmp, "payload.pkl")
        with open(payload, "wb") as f:
            cloudpickle.dump((fn, tuple(args), kwargs), f)
        rendezvous = f"tcp://127.0.0.1:{free_port()}"
        env = _child_env(threads)
        base = [sys.executable, "-m", "pgkernels.party", "--world-size", str(world_size),
                "--rendezvous", rendezvous, "--dealer", dealer, "--timeout", str(timeout)]
        if insecure:
            base.append("--insecure")
        procs = {}
        for rank in range(world_size):
            cmd = base + ["--rank", str(rank), "--payload", payload,
                          "--result", os.path.join(tmp, f"result{rank}.pkl")]
            if party_inputs is not None:
                own = os.path.join(tmp, f"input{rank}.pkl")
                fd = os.open(own, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    cloudpickle.dump(party_inputs[rank], f)
                cmd += ["--input", own]
            procs[rank] = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
        if has_dealer_process(dealer):
            procs["dealer"] = subprocess.Popen(base + ["--role", "dealer"], env=env,
                                               stdin=subprocess.DEVNULL)
        return _collect(procs, tmp, world_size, timeout)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read_result(tmp, rank):
    path = os.path.join(tmp, f"result{rank}.pkl")
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        return cloudpickle.load(f)


def _kill(procs):
    for p in procs.values():
        if p.poll() is None:
            p.kill()
    for p in procs.values():
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _collect(procs, tmp, world_size, timeout):
    deadline = time.monotonic() + timeout
    results = {}
    try:
        while True:
            for rank, p in procs.items():
                code = p.poll()
                if code is None or rank in results:
                    continue
                if rank == "dealer":
                    if code != 0 and len(results) < world_size:
                        raise PartyError(f"the dealer process exited with code {code} "
                                         "before the parties finished", rank="dealer")
                    results["dealer"] = code
                    continue
                res = _read_result(tmp, rank)
                if res is None:
                    raise PartyError(f"party {rank} exited with code {code} without a result "
                                     "(killed or crashed)", rank=rank)
                status, value = res
                if status == "error":
                    raise PartyError(f"party {rank} raised an exception:\n{value}", rank=rank)
                results[rank] = value
            if all(r in results for r in range(world_size)):
                break
            if time.monotonic() > deadline:
                missing = [r for r in range(world_size) if r not in results]
                raise PartyError(f"parties {missing} did not finish within {timeout} s "
                                 "(a party hung or a peer stopped answering)", rank=missing[0])
            time.sleep(0.01)
        # the dealer stops when party 0 shuts down; give it a moment
        if "dealer" in procs:
            try:
                procs["dealer"].wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        return [results[r] for r in range(world_size)]
    finally:
        _kill(procs)
