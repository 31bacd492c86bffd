"""Start and stop one process of an MPC session (a compute party or the dealer).

Every process joins one torch.distributed (gloo) group: compute parties are
ranks ``0..world_size-1``; the dealer, when the session has a dealer process,
is rank ``world_size``. CrypTen's communicator is set up on that group, with a
timeout, so that CrypTen's ops and pgkernels' protocols share it.

Dealers (``dealer=``):

* ``"ttp"`` (default, secure): the pgkernels dealer process; it also serves
  CrypTen's own ops through :class:`pgkernels.runtime.provider.DealerProvider`.
* ``"crypten-ttp"``: CrypTen's own ``TTPServer`` (for baselines); pgkernels
  kernels refuse to run under it.
* ``"tfp"`` (insecure): no dealer process; party 0 generates all correlated
  randomness and can unmask every input. Needs ``insecure=True``.
"""

import datetime
import os
import warnings

import torch
import torch.distributed as dist

from .._compat import import_crypten
from . import comm as _comm

DEALERS = ("ttp", "crypten-ttp", "tfp")
INSECURE_WARNING = (
    "pgkernels: dealer='tfp' is an INSECURE test mode: party 0 generates every "
    "triple and mask in the clear and can unmask all inputs. Use dealer='ttp'."
)

_STATE = {}


class ConfigError(ValueError):
    pass


def check_dealer(dealer, insecure):
    if dealer not in DEALERS:
        raise ConfigError(f"dealer must be one of {DEALERS}, got {dealer!r}")
    if dealer == "tfp":
        if not insecure:
            raise ConfigError(
                "dealer='tfp' lets party 0 unmask every input; pass insecure=True "
                "(--insecure) to use it for testing"
            )
        warnings.warn(INSECURE_WARNING, RuntimeWarning, stacklevel=3)


def has_dealer_process(dealer):
    return dealer in ("ttp", "crypten-ttp")


def _setup_communicator(rank, world_size, rendezvous, dealer, timeout):
    from crypten.communicator import DistributedCommunicator as DC

    total = world_size + (1 if has_dealer_process(dealer) else 0)
    td = datetime.timedelta(seconds=timeout)
    dist.init_process_group("gloo", init_method=rendezvous, world_size=total, rank=rank, timeout=td)
    inst = DC.__new__(DC)
    inst.distributed_backend = "gloo"
    inst.rendezvous = rendezvous
    inst.world_size = world_size
    inst.rank = rank
    inst.reset_communication_stats()
    inst._name = f"rank{rank}"
    # Same groups, in the same order, as CrypTen's own initialisation.
    inst.ttp_group = dist.new_group(list(range(total)), timeout=td)
    inst.ttp_comm_group = dist.new_group([0, total - 1], timeout=td)
    inst.main_group = dist.new_group(list(range(world_size)), timeout=td)
    inst.ttp_initialized = has_dealer_process(dealer)
    DC.instance = inst
    for key, val in (("WORLD_SIZE", world_size), ("RANK", rank), ("RENDEZVOUS", rendezvous),
                     ("DISTRIBUTED_BACKEND", "gloo")):
        os.environ[key] = str(val)


def init_party(rank, world_size, rendezvous, dealer="ttp", timeout=300.0, insecure=False):
    """Join a session as compute party ``rank``; returns the dealer client (or None)."""
    crypten = import_crypten()
    from .dealer import DealerClient
    from .provider import NAME, register

    check_dealer(dealer, insecure)
    if world_size < 2:
        raise ConfigError("MPC needs world_size >= 2 (CrypTen short-circuits 1-party runs)")
    _setup_communicator(rank, world_size, rendezvous, dealer, timeout)
    crypten._setup_prng()
    _comm.install_meter()
    client = None
    if dealer == "ttp":
        client = DealerClient("process")
        register(client)
        crypten.cfg.mpc.provider = NAME
    elif dealer == "crypten-ttp":
        crypten.cfg.mpc.provider = "TTP"
        crypten.mpc.provider.ttp_provider.TTPClient._init()
    else:
        client = DealerClient("local")
        crypten.cfg.mpc.provider = "TFP"
    _STATE.update(client=client, dealer=dealer, rank=rank, world_size=world_size)
    return client


def dealer_client():
    client = _STATE.get("client")
    if client is None:
        if not _STATE:
            raise RuntimeError(
                "pgkernels is not initialised in this process: run inside pgkernels.launch(...) "
                "or python -m pgkernels.party"
            )
        raise RuntimeError(
            f"pgkernels kernels need the pgkernels dealer (dealer='ttp'), not {_STATE['dealer']!r}"
        )
    return client


def shutdown_party():
    client = _STATE.pop("client", None)
    dealer = _STATE.pop("dealer", None)
    _STATE.clear()
    if client is not None:
        client.stop()
    if dealer == "crypten-ttp":
        import crypten.communicator as cc

        c = cc.get()
        if c.get_rank() == 0:
            c.send_obj("terminate", c.get_ttp_rank(), c.ttp_group)
    _destroy()


def run_dealer(world_size, rendezvous, dealer="ttp", timeout=300.0):
    """Run the dealer process (rank ``world_size``) until party 0 stops it."""
    crypten = import_crypten()
    if not has_dealer_process(dealer):
        raise ConfigError(f"dealer={dealer!r} has no dealer process")
    _setup_communicator(world_size, world_size, rendezvous, dealer, timeout)
    try:
        if dealer == "ttp":
            from .dealer import serve

            serve(world_size)
        else:
            from crypten.mpc.provider.ttp_provider import TTPServer

            crypten.cfg.mpc.provider = "TTP"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                TTPServer()
    finally:
        _destroy()


def _destroy():
    from crypten.communicator import DistributedCommunicator as DC

    DC.instance = None
    if dist.is_initialized():
        dist.destroy_process_group()
