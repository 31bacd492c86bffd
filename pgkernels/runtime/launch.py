"""Run a function as every compute party of an MPC session on this host.

Each party (and the dealer) is a fresh interpreter started with
``python -m pgkernels.party`` -- the same entry point a multi-host deployment
uses -- so nothing is forked from the caller: ``launch`` works after the caller
has used torch's thread pool (a fork would deadlock, as CrypTen's
``run_multiprocess`` does) and from scripts without a ``__main__`` guard. The
function travels by value with cloudpickle, so closures and lambdas work.

Nothing listens on the network: the processes meet through a ``file://``
rendezvous inside a fresh 0700 temporary directory (no TCP store), and gloo is
bound to the loopback interface (``GLOO_SOCKET_IFNAME``). With
``channel="encrypted"`` every process also gets a fresh X25519 identity (a
0600 key file in that directory; only a process's own file is on its command
line) and all of them share the roster of public keys, so even traffic on
loopback is authenticated and encrypted (:mod:`pgkernels.runtime.channel`).
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import cloudpickle

from .session import ConfigError, check_dealer, has_dealer_process, resolve_channel


class PartyError(RuntimeError):
    """A party raised, died, or did not finish in time."""

    def __init__(self, message, rank=None):
        super().__init__(message)
        self.rank = rank


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port():
    """A TCP port on 127.0.0.1 that is free now, for a listener another
    process binds later. Drawn below the kernel's ephemeral range where it
    can, so that no other process's outgoing connection or ``bind(0)`` (gloo,
    concurrent test workers) takes it in between; else the kernel's pick."""
    import random

    low = _ephemeral_low()
    rnd = random.SystemRandom()
    for _ in range(64) if low > 12000 else ():
        port = rnd.randrange(10000, low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
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


def _identities(tmp, world_size, with_dealer):
    """Fresh identity key files (0600) for every process and the roster file."""
    from .channel import generate_identity, write_roster

    files, pubs = {}, {}
    names = list(range(world_size)) + (["dealer"] if with_dealer else [])
    for name in names:
        files[name] = os.path.join(tmp, f"identity-{name}.key")
        _, pubs[name] = generate_identity(files[name])
    roster = os.path.join(tmp, "roster.json")
    write_roster(roster, world_size, [pubs[r] for r in range(world_size)],
                 pubs.get("dealer"))
    return files, roster


def launch(fn, world_size=2, dealer="ttp", timeout=300.0, args=(), kwargs=None, insecure=False,
           threads=1, party_inputs=None, channel="auto", link=None, device="cpu"):
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
        link: None, or a :class:`pgkernels.runtime.link.Link`: every process
            (the dealer too) then runs over that simulated link (one-way latency,
            bandwidth per direction). None leaves ``PGKERNELS_SIM_LATENCY_S`` /
            ``PGKERNELS_SIM_BANDWIDTH_BPS`` as the caller's environment has them.
        device: ``"cpu"`` (default) or ``"cuda"`` (``"cuda:N"``): where every
            party keeps its shares and dealer material and runs the kernels;
            the dealer computes on it too. Messages go through host memory
            over gloo, so all parties may share one GPU
            (:mod:`pgkernels.runtime.device`). ValueError naming ``device``
            when this machine or build has no usable CUDA.

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
    from .device import ENV as DEVICE_ENV, check_device

    dev = check_device(device, "device")
    kwargs = kwargs or {}
    if link is not None:
        from .link import Link

        if not isinstance(link, Link):
            raise TypeError(f"link must be a pgkernels Link (pgkernels.runtime.link.Link), got "
                            f"{type(link).__name__}")
    mode = resolve_channel(channel, "file://")
    if party_inputs is not None:
        if not isinstance(party_inputs, (list, tuple)) or len(party_inputs) != world_size:
            raise ConfigError(f"party_inputs must be a list of world_size={world_size} values")
        if "party_input" in kwargs:
            raise ConfigError("give party_input through party_inputs, not kwargs")
    tmp = tempfile.mkdtemp(prefix="pgkernels-")  # 0700
    try:
        payload = os.path.join(tmp, "payload.pkl")
        with open(payload, "wb") as f:
            cloudpickle.dump((fn, tuple(args), kwargs), f)
        rendezvous = "file://" + os.path.join(tmp, "rendezvous")
        env = _child_env(threads)
        if link is not None:
            env.update(link.env())
        env[DEVICE_ENV] = str(dev)
        from .channel import loopback_interface

        env["GLOO_SOCKET_IFNAME"] = loopback_interface()  # gloo listens on loopback only
        base = [sys.executable, "-m", "pgkernels.party", "--world-size", str(world_size),
                "--rendezvous", rendezvous, "--dealer", dealer, "--timeout", str(timeout),
                "--channel", mode]
        if insecure:
            base.append("--insecure")
        ident = {}
        if mode == "encrypted":
            ident, roster = _identities(tmp, world_size, has_dealer_process(dealer))
            base += ["--roster", roster]
        procs = {}
        for rank in range(world_size):
            cmd = base + ["--rank", str(rank), "--payload", payload,
                          "--result", os.path.join(tmp, f"result{rank}.pkl")]
            if ident:
                cmd += ["--identity", ident[rank]]
            if party_inputs is not None:
                own = os.path.join(tmp, f"input{rank}.pkl")
                fd = os.open(own, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    cloudpickle.dump(party_inputs[rank], f)
                cmd += ["--input", own]
            procs[rank] = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
        if has_dealer_process(dealer):
            cmd = base + ["--role", "dealer", "--result", os.path.join(tmp, "dealer.json")]
            if ident:
                cmd += ["--identity", ident["dealer"]]
            procs["dealer"] = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
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


def _dealer_outcome(tmp):
    """The dealer's own JSON account of how it stopped, or None."""
    import json

    try:
        with open(os.path.join(tmp, "dealer.json")) as f:
            out = json.load(f)
        return out if isinstance(out, dict) else None
    except (OSError, ValueError):
        return None


def _failure(procs, tmp, world_size, grace=3.0):
    """The PartyError to raise once some process failed.

    One failure makes the others fail after it (a peer's connection closes, or
    the dealer refuses a request a failed party no longer makes). Wait up to
    ``grace`` seconds for everyone to stop, then report a crash (a process that
    died without a result) if there is one, else the earliest error by the
    time each process recorded it; the dealer's reason is appended."""
    end = time.monotonic() + grace
    while time.monotonic() < end and any(p.poll() is None for p in procs.values()):
        time.sleep(0.05)
    crashed, errors = [], []
    for rank in range(world_size):
        code = procs[rank].poll()
        res = _read_result(tmp, rank)
        if res is not None and res[0] == "error":
            when = res[2] if len(res) > 2 else float("inf")
            errors.append((when, f"party {rank} raised an exception:\n{res[1]}", rank))
        elif res is None and code is not None:
            crashed.append((f"party {rank} exited with code {code} without a result (killed or crashed)", rank))
    dealer_why = None
    if "dealer" in procs:
        code = procs["dealer"].poll()
        out = _dealer_outcome(tmp)
        if out is not None and out.get("status") == "error":
            dealer_why = str(out.get("error"))
            errors.append((out.get("time", float("inf")),
                           f"the dealer process exited with code {code} before the parties finished: "
                           f"{dealer_why}", "dealer"))
        elif code not in (None, 0):
            crashed.append((f"the dealer process exited with code {code} before the parties finished",
                            "dealer"))
    if crashed:
        message, rank = crashed[0]
    elif errors:
        _, message, rank = min(errors, key=lambda e: e[0])
    else:
        return None
    if dealer_why and rank != "dealer":
        message += f"\n(the dealer stopped too: {dealer_why})"
    return PartyError(message, rank=rank)


def _collect(procs, tmp, world_size, timeout):
    deadline = time.monotonic() + timeout
    results = {}
    try:
        while True:
            failed = False
            for rank, p in procs.items():
                code = p.poll()
                if code is None or rank in results:
                    continue
                if rank == "dealer":
                    if code != 0 and len(results) < world_size:
                        failed = True
                    else:
                        results["dealer"] = code
                    continue
                res = _read_result(tmp, rank)
                if res is None or res[0] != "ok":
                    failed = True
                else:
                    results[rank] = res[1]
            if failed:
                err = _failure(procs, tmp, world_size)
                if err is not None:
                    raise err
            if all(r in results for r in range(world_size)):
                break
            if time.monotonic() > deadline:
                missing = [r for r in range(world_size) if r not in results]
                raise PartyError(f"parties {missing} did not finish within {timeout} s "
                                 "(a party hung or a peer stopped answering)", rank=missing[0])
            time.sleep(0.01)
        # the dealer stops when every party has stopped; give it a moment
        if "dealer" in procs:
            try:
                procs["dealer"].wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        return [results[r] for r in range(world_size)]
    finally:
        _kill(procs)
