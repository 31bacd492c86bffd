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
"""

import argparse
import importlib
import importlib.util
import os
import sys
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


def main(argv=None):
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
    ap.add_argument("--result", help="write the cloudpickled result here")
    a = ap.parse_args(argv)

    threads = os.environ.get("PGKERNELS_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))

    from pgkernels.runtime import session

    if a.role == "dealer":
        session.run_dealer(a.world_size, a.rendezvous, a.dealer, a.timeout)
        return 0
    if a.rank is None or not 0 <= a.rank < a.world_size:
        ap.error("--rank must be in [0, world_size)")
    if (a.run is None) == (a.payload is None):
        ap.error("give exactly one of --run and --payload")
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
        session.init_party(a.rank, a.world_size, a.rendezvous, a.dealer, a.timeout, a.insecure)
        try:
            value = fn(*args, **kwargs)
        finally:
            session.shutdown_party()
        outcome = ("ok", value)
    except BaseException:  # report everything, including SystemExit from user code
        outcome = ("error", traceback.format_exc())
    if a.result:
        tmp = a.result + ".tmp"
        try:
            data = cloudpickle.dumps(outcome)
        except Exception:  # an unpicklable return value still reports cleanly
            outcome = ("error", "the party's return value cannot be pickled:\n" + traceback.format_exc())
            data = cloudpickle.dumps(outcome)
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, a.result)
    else:
        print(f"[party {a.rank}] {outcome[0]}: {outcome[1]}", flush=True)
    return 0 if outcome[0] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
