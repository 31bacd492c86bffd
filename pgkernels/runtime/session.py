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

Channels (``channel=``, :mod:`pgkernels.runtime.channel`):

* ``"encrypted"``: every message between two processes of the session (party
  openings, dealer keys, requests and corrections, CrypTen's own traffic) is
  an AES-256-GCM record under keys from an authenticated X25519 key exchange
  with the public keys pinned in a roster; needs ``identity`` (this process's
  key file) and ``roster`` (the roster file).
* ``"plain"``: gloo in the clear (one host: loopback only).
* ``"auto"`` (default): ``"plain"`` for a ``file://`` rendezvous or a
  loopback ``tcp://`` host, else ``"encrypted"``.

In every mode CrypTen's object messages (``send_obj``/``recv_obj``/
``broadcast_obj``) use a JSON encoding instead of pickle
(:mod:`pgkernels.runtime.communicator`).

Programs that start their parties CrypTen's way (every process gets
``RANK``, ``WORLD_SIZE`` and ``RENDEZVOUS`` in its environment and calls
``crypten.init()``) call :func:`init_from_env` (``pgkernels.init()``) instead
of ``crypten.init()``, and start the dealer as one more process with
:func:`dealer_command`'s command line (``python -m pgkernels.party --role
dealer``); ``crypten.uninit()`` or ``pgkernels.uninit()``
(:func:`shutdown_party`) ends the session.
"""

import atexit
import datetime
import ipaddress
import os
import urllib.parse
import warnings

import torch
import torch.distributed as dist

from .._compat import import_crypten
from . import comm as _comm

DEALERS = ("ttp", "crypten-ttp", "tfp")
CHANNELS = ("auto", "encrypted", "plain")
INSECURE_WARNING = (
    "pgkernels: dealer='tfp' is an INSECURE test mode: party 0 generates every "
    "triple and mask in the clear and can unmask all inputs. Use dealer='ttp'."
)

_STATE = {}
_LINK = [None]  # this process's simulated link (pgkernels.runtime.link), if any


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


def is_local_rendezvous(rendezvous):
    """True for a ``file://`` rendezvous or a ``tcp://`` one on a loopback host."""
    if not isinstance(rendezvous, str):
        raise ConfigError(f"rendezvous must be a string like tcp://HOST:PORT, got {rendezvous!r}")
    url = urllib.parse.urlparse(rendezvous)
    if url.scheme == "file":
        return True
    if url.scheme != "tcp":
        return False
    host = url.hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_channel(channel, rendezvous):
    """``"encrypted"`` or ``"plain"`` for a ``channel`` setting (see the module docstring)."""
    if channel not in CHANNELS:
        raise ConfigError(f"channel must be one of {CHANNELS}, got {channel!r}")
    if channel != "auto":
        return channel
    return "plain" if is_local_rendezvous(rendezvous) else "encrypted"


def _load_secure(channel, rendezvous, identity, roster):
    """(identity key, Roster) for an encrypted session, None for a plain one."""
    from .channel import Roster, load_identity

    mode = resolve_channel(channel, rendezvous)
    if mode == "plain":
        return None
    if identity is None or roster is None:
        why = "" if channel == "encrypted" else (f" (channel='auto' encrypts for the non-loopback "
                                                  f"rendezvous {rendezvous}; pass channel='plain' to "
                                                  "send in the clear)")
        raise ConfigError("an encrypted channel needs identity= (this process's private key file, "
                          "python -m pgkernels.party keygen) and roster= (the roster JSON of every "
                          "process's public key)" + why)
    key = identity if hasattr(identity, "exchange") else load_identity(identity)
    ros = roster if isinstance(roster, Roster) else Roster.load(roster)
    return key, ros


def _setup_communicator(rank, world_size, rendezvous, dealer, timeout, secure=None, link=None):
    from crypten.communicator import DistributedCommunicator as DC

    from . import link as _link
    from .channel import PlainTransport, establish
    from .communicator import ChannelCommunicator, PgkCommunicator, route_crypten_ttp

    sim = _link.make(link)

    total = world_size + (1 if has_dealer_process(dealer) else 0)
    if secure is not None and secure[1].world_size != world_size:
        raise ConfigError(f"the roster is for {secure[1].world_size} compute parties, "
                          f"the session has {world_size}")
    td = datetime.timedelta(seconds=timeout)
    dist.init_process_group("gloo", init_method=rendezvous, world_size=total, rank=rank, timeout=td)
    # Under a simulated link CrypTen's collectives run point-to-point too, so
    # that every message crosses the link.
    cls = PgkCommunicator if secure is None and sim is None else ChannelCommunicator
    inst = cls.__new__(cls)
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
    # Only CrypTen's TTPServer understands the "terminate" that crypten.uninit()
    # sends when this is set; the pgkernels dealer stops on every party's STOP.
    inst.ttp_initialized = dealer == "crypten-ttp"
    if secure is None:
        inst.pgk_tx = PlainTransport(sim)
        if sim is not None:
            route_crypten_ttp(inst.pgk_tx)
    else:
        try:
            inst.pgk_tx = establish(rank, world_size, total, secure[1], secure[0], sim)
        except BaseException:
            dist.destroy_process_group()
            raise
        route_crypten_ttp(inst.pgk_tx)
    if sim is not None:
        import sys

        # the delivery threads need the GIL on time: a 5 ms switch interval
        # would add up to 5 ms to a message due while this thread runs Python
        sys.setswitchinterval(1e-4)
        _LINK[0] = sim
    DC.instance = inst
    from .device import is_cuda_session

    if is_cuda_session():
        from .communicator import stage_crypten_through_host

        stage_crypten_through_host()  # gloo moves only host tensors point-to-point
    for key, val in (("WORLD_SIZE", world_size), ("RANK", rank), ("RENDEZVOUS", rendezvous),
                     ("DISTRIBUTED_BACKEND", "gloo")):
        os.environ[key] = str(val)


def init_party(rank, world_size, rendezvous, dealer="ttp", timeout=300.0, insecure=False,
               channel="auto", identity=None, roster=None, link=None):
    """Join a session as compute party ``rank``; returns the dealer client (or None).

    ``channel``/``identity``/``roster``: see the module docstring (``identity``
    a key file path or an X25519 private key, ``roster`` a path or a Roster).
    ``link``: a simulated :class:`pgkernels.runtime.link.Link` (None: from
    ``PGKERNELS_SIM_LATENCY_S``/``PGKERNELS_SIM_BANDWIDTH_BPS``, unset: none);
    every process of the session must use the same one."""
    crypten = import_crypten()
    from .dealer import DealerClient
    from .provider import NAME, register

    check_dealer(dealer, insecure)
    if world_size < 2:
        raise ConfigError("MPC needs world_size >= 2 (CrypTen short-circuits 1-party runs)")
    from .device import session_device

    dev = session_device()  # ValueError before joining when the session's CUDA is unusable here
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    secure = _load_secure(channel, rendezvous, identity, roster)
    _setup_communicator(rank, world_size, rendezvous, dealer, timeout, secure, link)
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


def dealer_batched(key):
    """:meth:`DealerClient.batched` on this party's dealer (a context that does
    nothing in a session without the pgkernels dealer, e.g. ``crypten-ttp``)."""
    import contextlib

    client = _STATE.get("client")
    return contextlib.nullcontext() if client is None else client.batched(key)


def dealer_command(world_size=None, rendezvous=None, dealer="ttp"):
    """The command line that starts the dealer process of a session
    (``WORLD_SIZE``/``RENDEZVOUS`` from the environment when not given)."""
    world_size = os.environ.get("WORLD_SIZE", "K") if world_size is None else world_size
    rendezvous = os.environ.get("RENDEZVOUS", "URL") if rendezvous is None else rendezvous
    cmd = f"python -m pgkernels.party --role dealer --world-size {world_size} --rendezvous {rendezvous}"
    return cmd if dealer == "ttp" else f"{cmd} --dealer {dealer}"


def _how_to_start():
    return (
        "In a program that starts its parties CrypTen's way (RANK, WORLD_SIZE, RENDEZVOUS in the "
        "environment), call pgkernels.init() instead of crypten.init() in every party and start the dealer "
        f"as one more process: {dealer_command()} . Otherwise run the parties with pgkernels.launch(...) or "
        "python -m pgkernels.party."
    )


def dealer_client():
    """This party's connection to the pgkernels dealer; RuntimeError (saying
    how to get one) when the process has none."""
    client = _STATE.get("client")
    if client is None:
        if not _STATE:
            crypten = import_crypten()
            if crypten.is_initialized():
                raise RuntimeError(
                    "pgkernels kernels need the pgkernels dealer, and this process has none: crypten.init() "
                    "starts no pgkernels dealer. " + _how_to_start()
                )
            raise RuntimeError("pgkernels is not initialised in this process. " + _how_to_start())
        raise RuntimeError(
            f"pgkernels kernels need the pgkernels dealer (dealer='ttp'), not {_STATE['dealer']!r}: start "
            "the session with dealer='ttp', the default of pgkernels.launch, python -m pgkernels.party and "
            "pgkernels.init()"
        )
    return client


def _env(name):
    value = os.environ.get(name)
    if value is None or not value.strip():
        raise ConfigError(
            f"pgkernels.init() reads the session from the environment, as crypten.init() does: set {name} "
            "(RANK: this party, 0..WORLD_SIZE-1; WORLD_SIZE: the number of compute parties; RENDEZVOUS: "
            "tcp://HOST:PORT or file:///path, the same in every party and the dealer)"
        )
    return value.strip()


def _env_int(name):
    value = _env(name)
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be an integer, got {value!r}") from None


def init_from_env(config_file=None, party_name=None, *, dealer="ttp", timeout=300.0, channel="auto",
                  identity=None, roster=None, insecure=False):
    """``pgkernels.init()``: :func:`init_party` configured the way ``crypten.init()`` is.

    Call it in every compute party instead of ``crypten.init()``. It reads
    ``RANK``, ``WORLD_SIZE`` and ``RENDEZVOUS`` (and, if set,
    ``DISTRIBUTED_BACKEND``, which must be ``gloo``) from the environment,
    joins the session's torch.distributed group with the dealer at rank
    ``WORLD_SIZE``, and sets CrypTen up on that group, so CrypTen's own ops
    run as after ``crypten.init()`` (their triples from the same dealer) and
    pgkernels' kernels run too. Start the dealer as one more process with
    :func:`dealer_command` (``python -m pgkernels.party --role dealer
    --world-size K --rendezvous URL``); until it joins, this call waits (at
    most ``timeout`` seconds). ``config_file`` and ``party_name`` are
    ``crypten.init()``'s; ``dealer``, ``timeout``, ``channel``, ``identity``,
    ``roster`` and ``insecure`` are :func:`init_party`'s. End with
    ``pgkernels.uninit()`` (:func:`shutdown_party`) or ``crypten.uninit()``
    (routed to it while this session is open, so that the dealer hears that
    the party is done); a party that calls neither is shut down at
    interpreter exit.

    Returns the dealer client (None for ``dealer="tfp"``)."""
    crypten = import_crypten()
    if _STATE:
        warnings.warn("pgkernels is already initialised in this process.", RuntimeWarning, stacklevel=2)
        return _STATE.get("client")
    if crypten.is_initialized():
        raise ConfigError(
            "CrypTen is already initialised (crypten.init() was called). Call pgkernels.init() instead of "
            "crypten.init(), not after it: it sets CrypTen up itself, on the same RANK/WORLD_SIZE/RENDEZVOUS "
            f"group, with the pgkernels dealer as rank WORLD_SIZE ({dealer_command()})."
        )
    backend = os.environ.get("DISTRIBUTED_BACKEND", "gloo")
    if backend != "gloo":
        raise ConfigError(f"pgkernels sessions run on gloo; DISTRIBUTED_BACKEND is {backend!r}")
    world_size, rank, rendezvous = _env_int("WORLD_SIZE"), _env_int("RANK"), _env("RENDEZVOUS")
    if rank == world_size and has_dealer_process(dealer):
        raise ConfigError(
            f"RANK={rank} is the dealer's rank; start the dealer with "
            f"{dealer_command(world_size, rendezvous, dealer)} instead of calling pgkernels.init() in it"
        )
    if not 0 <= rank < world_size:
        raise ConfigError(f"RANK must be in [0, WORLD_SIZE) = [0, {world_size}), got {rank}")
    if config_file is not None:
        crypten.cfg.load_config(config_file)
    try:
        client = init_party(rank, world_size, rendezvous, dealer, timeout, insecure, channel, identity,
                            roster)
    except ConfigError:
        raise
    except Exception as e:
        if dist.is_initialized() or not has_dealer_process(dealer):
            raise
        # The group never formed: most often the dealer (or a party) was not started.
        raise RuntimeError(
            f"pgkernels.init(): the session at {rendezvous} did not form within {timeout} s ({e}). Every "
            f"compute party (RANK 0..{world_size - 1}) must call pgkernels.init() and the dealer must run: "
            f"{dealer_command(world_size, rendezvous, dealer)}"
        ) from e
    if party_name is not None:
        crypten.communicator.get().set_name(party_name)
    token = _STATE["opened_by"] = object()
    atexit.register(_shutdown_at_exit, token)
    _route_crypten_uninit(crypten)
    return client


def _route_crypten_uninit(crypten):
    """Make ``crypten.uninit()`` (which calls ``crypten.communicator.uninit``)
    end an :func:`init_from_env` session with :func:`shutdown_party`:
    CrypTen's own shutdown would drop the connections without telling the
    dealer, which then fails on the closed connection. Other sessions, and
    CrypTen after this one ends, keep CrypTen's function."""
    comm = crypten.communicator
    if getattr(comm.uninit, "_pgkernels_routed", False):
        return
    crypten_uninit = comm.uninit

    def uninit():
        if _STATE.get("opened_by") is not None:
            return shutdown_party()
        return crypten_uninit()

    uninit._pgkernels_routed = True
    comm.uninit = uninit


def _shutdown_at_exit(token):
    # Only the session this init_from_env call opened, and only if still open.
    if _STATE.get("opened_by") is token:
        shutdown_party()


def shutdown_party():
    """Leave the session: tell the dealer this party is done (every party does;
    the dealer stops when all have) and destroy the process group.
    ``pgkernels.uninit()``; safe to call twice."""
    client = _STATE.pop("client", None)
    dealer = _STATE.pop("dealer", None)
    _STATE.clear()
    try:
        if client is not None and dist.is_initialized():
            client.stop()
        if dealer == "crypten-ttp":
            import crypten.communicator as cc

            c = cc.get()
            if c.get_rank() == 0:
                c.send_obj("terminate", c.get_ttp_rank(), c.ttp_group)
    finally:
        _destroy()


def run_dealer(world_size, rendezvous, dealer="ttp", timeout=300.0, channel="auto", identity=None,
               roster=None, link=None):
    """Run the dealer process (rank ``world_size``) until the parties stop it
    (``link``: as for :func:`init_party`)."""
    crypten = import_crypten()
    if not has_dealer_process(dealer):
        raise ConfigError(f"dealer={dealer!r} has no dealer process")
    secure = _load_secure(channel, rendezvous, identity, roster)
    _setup_communicator(world_size, world_size, rendezvous, dealer, timeout, secure, link)
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

    from .communicator import route_crypten_ttp

    sim, _LINK[0] = _LINK[0], None
    if sim is not None:
        sim.close()  # deliver what is still queued (the dealer's STOP) before the group goes
        import sys

        sys.setswitchinterval(0.005)
    route_crypten_ttp(None)
    DC.instance = None
    if dist.is_initialized():
        dist.destroy_process_group()
