"""One process of an MPC session: ``python -m pgkernels.party``.

The same entry point runs parties on one host (``pgkernels.launch`` starts it
once per rank) or on several hosts::

    # host A (party 0)        python -m pgkernels.party --rank 0 --world-size 2 \\
    #                             --rendezvous tcp://HOST_A:29500 --run mymod:main
    # host B (party 1)        python -m pgkernels.party --rank 1 --world-size 2 \\
    #                             --rendezvous tcp://HOST_A:29500 --run mymod:main
    # host C (dealer)         python -m pgkernels.party --role dealer --world-size 2 \\
    #                             --rendezvous tcp://HOST_A:29500

``--run`` names ``module:function`` or ``path/to/file.py:function``; the
function is called with no arguments in every party and its return value is
printed by each party (or written with ``--result``).

Across hosts, encrypt and authenticate every message (``--channel auto``,
the default, does so for any non-loopback rendezvous). Once per process::

    python -m pgkernels.party keygen --out party0.key     # prints the public key
    ...                                                   # (party1.key, dealer.key)
    python -m pgkernels.party roster --world-size 2 --party HEX0 --party HEX1 \
        --dealer HEXD --out roster.json                   # the same file everywhere

then add ``--identity party0.key --roster roster.json`` (each process its own
key) to the commands above. ``--channel plain`` sends in the clear.

A program that starts its parties CrypTen's way (``RANK``, ``WORLD_SIZE``,
``RENDEZVOUS`` in each party's environment) needs only the dealer line above,
with the same world size and rendezvous, and ``pgkernels.init()`` in place of
``crypten.init()`` in every party (:func:`pgkernels.runtime.session.init_from_env`).
"""

import argparse
import importlib
import importlib.util
import os
import sys
import time
import traceback

import cloudpickle


def _load(target):
    if ":" not in target:
        raise SystemExit(f"--run expects module:function or file.py:function, got {target!r}")
    mod_name, fn_name = target.rsplit(":", 1)
    if mod_name.endswith(".py"):
        spec = importlib.util.spec_from_file_location("_pgk_party_target", mod_name)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(mod_name)
    return getattr(module, fn_name)


def _keygen(argv):
    ap = argparse.ArgumentParser(prog="python -m pgkernels.party keygen",
                                 description="Write a new X25519 identity key (0600) and print its public key.")
    ap.add_argument("--out", required=True, help="private key file to create (must not exist)")
    a = ap.parse_args(argv)
    from pgkernels.runtime.channel import generate_identity

    try:
        _, pub = generate_identity(a.out)
    except FileExistsError:
        ap.error(f"{a.out} exists; refusing to overwrite an identity key")
    print(pub)
    return 0


def _roster(argv):
    ap = argparse.ArgumentParser(prog="python -m pgkernels.party roster",
                                 description="Write the roster of a session's public keys.")
    ap.add_argument("--world-size", type=int, required=True)
    ap.add_argument("--party", action="append", default=[], help="public key (hex) of party 0, 1, ... in order")
    ap.add_argument("--dealer", help="public key (hex) of the dealer process (omit for dealer tfp)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    from pgkernels.runtime.channel import write_roster

    try:
        write_roster(a.out, a.world_size, a.party, a.dealer)
    except (ValueError, FileExistsError) as e:
        ap.error(str(e))
    return 0


def _write_json(path, obj):
    import json

    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "keygen":
        return _keygen(argv[1:])
    if argv and argv[0] == "roster":
        return _roster(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m pgkernels.party", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--role", choices=("party", "dealer"), default="party")
    ap.add_argument("--rank", type=int, help="compute party rank (0..world_size-1)")
    ap.add_argument("--world-size", type=int, required=True, help="number of compute parties")
    ap.add_argument("--rendezvous", required=True, help="tcp://HOST:PORT (or file:///path)")
    ap.add_argument("--dealer", default="ttp", help="ttp (default), crypten-ttp, or tfp")
    ap.add_argument("--insecure", action="store_true", help="allow dealer=tfp (test mode)")
    ap.add_argument("--timeout", type=float, default=300.0, help="communication timeout, s")
    ap.add_argument("--run", help="module:function or file.py:function to run in the party")
    ap.add_argument("--payload", help=argparse.SUPPRESS)  # cloudpickled (fn, args, kwargs)
    ap.add_argument("--input", help=argparse.SUPPRESS)  # this party's own private input (launch)
    ap.add_argument("--result", help="write the cloudpickled result here (the dealer: a JSON "
                                     "status, with its error if it stopped on one)")
    ap.add_argument("--channel", default="auto", choices=("auto", "encrypted", "plain"),
                    help="encrypt and authenticate every message (auto: unless the rendezvous "
                         "is file:// or a loopback host)")
    ap.add_argument("--identity", help="this process's private identity key file (keygen)")
    ap.add_argument("--roster", help="the roster JSON of every process's public key")
    ap.add_argument("--device", default=None,
                    help="cpu or cuda: where shares, dealer material and kernels live (default: "
                         "$PGKERNELS_DEVICE, else cpu); messages go through host memory")
    a = ap.parse_args(argv)
    if a.device is not None:
        from pgkernels.runtime.device import ENV, check_device

        try:
            os.environ[ENV] = str(check_device(a.device, "--device"))
        except ValueError as e:
            ap.error(str(e))

    threads = os.environ.get("PGKERNELS_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))

    from pgkernels.runtime import session

    if a.role == "dealer":
        try:
            session.run_dealer(a.world_size, a.rendezvous, a.dealer, a.timeout, a.channel,
                               a.identity, a.roster)
        except BaseException as e:
            traceback.print_exc()
            if a.result:
                _write_json(a.result, {"status": "error", "error": f"{type(e).__name__}: {e}",
                                       "time": time.time()})
            return 1
        if a.result:
            _write_json(a.result, {"status": "ok"})
        return 0
    if a.rank is None or not 0 <= a.rank < a.world_size:
        ap.error("--rank must be in [0, world_size)")
    if (a.run is None) == (a.payload is None):
        ap.error("give exactly one of --run and --payload")
    def report(outcome):
        if a.result:
            tmp = a.result + ".tmp"
            try:
                data = cloudpickle.dumps(outcome)
            except Exception:  # an unpicklable return value still reports cleanly
                outcome = ("error", "the party's return value cannot be pickled:\n" + traceback.format_exc(),
                           time.time())
                data = cloudpickle.dumps(outcome)
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, a.result)
        else:
            print(f"[party {a.rank}] {outcome[0]}: {outcome[1]}", flush=True)
        return 0 if outcome[0] == "ok" else 1

    # An error outcome carries the time it happened: when one party fails the
    # others fail after it, and launch reports the first.
    try:
        if a.payload:
            with open(a.payload, "rb") as f:
                fn, args, kwargs = cloudpickle.load(f)
            if a.input:
                with open(a.input, "rb") as f:
                    kwargs = dict(kwargs, party_input=cloudpickle.load(f))
                try:  # read once; no reason to leave a share lying around
                    os.remove(a.input)
                except OSError:
                    pass
        else:
            fn, args, kwargs = _load(a.run), (), {}
        session.init_party(a.rank, a.world_size, a.rendezvous, a.dealer, a.timeout, a.insecure,
                           a.channel, a.identity, a.roster)
    except BaseException:  # report everything, including SystemExit from user code
        return report(("error", traceback.format_exc(), time.time()))
    try:
        value = fn(*args, **kwargs)
    except BaseException:
        # Report before shutting down: shutting down closes the connections,
        # which makes the peers fail too.
        code = report(("error", traceback.format_exc(), time.time()))
        try:
            session.shutdown_party()
        except BaseException:  # the session may be broken; its first error is reported
            pass
        return code
    try:
        session.shutdown_party()
    except BaseException:
        return report(("error", traceback.format_exc(), time.time()))
    return report(("ok", value))


if __name__ == "__main__":
    sys.exit(main())
