"""pgkernels: fast secure kernels for defending private ML against poisoning.

Importing pgkernels makes CrypTen 0.4.1 importable on current torch; import
CrypTen after it (``import pgkernels, crypten``) or via
``pgkernels.import_crypten()``.
"""

from ._compat import import_crypten, patch_torch_for_crypten
from ._version import __version__

patch_torch_for_crypten()

from .protocols.shares import decode  # noqa: E402
from .protocols.compare import eq, ge, gt, le, lt, ltz, ne, relu, sign, where  # noqa: E402
from .protocols.order import (  # noqa: E402
    argmax, argmin, kthvalue, max, median, min, sort, topk, topk_sum, trimmed_mean)
from .protocols import cost as cost_model  # noqa: E402
from .protocols.linalg import cosine_similarity, gram, pairwise_sq_dist  # noqa: E402
from .protocols.roots import inv_sqrt, norm, sqrt  # noqa: E402
from . import defenses  # noqa: E402,F401
from .runtime.comm import CommStats, reset_stats  # noqa: E402
from .runtime.launch import PartyError, launch  # noqa: E402
from .runtime.link import Link  # noqa: E402
from .runtime.session import ConfigError  # noqa: E402
from .runtime.session import init_from_env as init, shutdown_party as uninit  # noqa: E402


def comm_stats():
    """Rounds, bytes sent and dealer bytes counted in this party so far.

    Rounds include the online round trips to the dealer (also counted apart
    in ``dealer_rounds``); see :mod:`pgkernels.runtime.comm`."""
    from .runtime import comm

    return comm.STATS.snapshot()


__all__ = [
    "ConfigError", "CommStats", "Link", "PartyError", "comm_stats", "decode", "eq", "ge", "gt", "import_crypten",
    "init", "launch", "le", "lt", "ltz", "ne", "relu", "reset_stats", "sign", "uninit", "where",
    "argmax", "argmin", "cosine_similarity", "cost_model", "defenses", "gram", "inv_sqrt", "norm", "sqrt", "pairwise_sq_dist", "kthvalue", "max", "median", "min", "sort", "topk", "topk_sum", "trimmed_mean",
]
