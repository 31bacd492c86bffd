"""What a robust rule can take: the input bound per rule, and the check on shares.

Every rule computes in Z_2^64 on fixed-point values (16 fractional bits).
:func:`input_bound` derives, from the rule's actual arithmetic, the largest
power-of-two bound B such that, for inputs with every coordinate in [-B, B),
no intermediate value of the rule leaves ``[-2^62, 2^62)`` -- so nothing
wraps around, and every truncation (with
:func:`pgkernels.protocols.truncation.install`, as the aggregation servers
run) is exact to 2 units in the last place. With ``X = B 2^16`` (the bound in
ring units), ``L = 2^62 - 1``, n clients and d coordinates, the constraints are:

==============  ==============================================================
(every rule)    differences of two inputs: ``2 X <= L``
fedavg          sum of n rows: ``n X <= L``
median          differences and the sum of the two middle values: ``2 X <= L``
trimmed_mean    sum of up to n rows: ``n X <= L``
norm_clip       exact squared norms at scale 2^32: ``d X^2 <= L``; the weighted
                sum ``sum_i factor_i x_i`` at scale 2^32: ``n X 2^16 <= L``;
                sum of n rows
krum,           Gram entries at scale 2^32: ``d X^2 <= L``; a score sums up to
multi_krum,     n - 3 squared distances (each ``<= 4 d X^2 / 2^16``) and scores
bulyan          are compared by differences: ``8 n d X^2 <= 2^16 L`` (for
                Bulyan the same keeps every live distance below its removal
                offset ``2^61 / n``); sum of n rows
fltrust         squared norms and ``U g`` at scale 2^32: ``d X^2 <= L`` (g under
                the same bound); sum of n rows
flame           the Gram matrix of the cosines and the squared norms:
                ``d X^2 <= L``; sum of n rows
auror           ``2 v (c1 - c0)`` at scale 2^32: ``2 d X^2 <= L``; cluster sums
                times a table inverse at scale 2^32: ``n X 2^16 <= L``; the
                indicative-feature test: ``512 alpha d X <= L``
==============  ==============================================================

B is the largest power of two with ``B 2^16`` at most the smallest of these.
For example Krum with d = 1e5 takes B = 64, with d = 1e3 B = 512; the median
takes 2^44. :func:`validate` checks (or clamps) secret-shared updates against
it, see :func:`pgkernels.protocols.validity.check_rows` for the protocol, its
rounds and bytes, and what it reveals (one bit per client with
``policy="drop"``, nothing with ``"clamp"``). An optional norm bound
``max_norm`` (as ELSA and RoFL enforce) must satisfy ``max_norm^2 2^32 <= L``.
"""

import math

from ..protocols.validity import POLICIES, check_rows
from . import registry

FRAC_BITS = 16
LIMIT = 2 ** 62 - 1
RULES = registry.NAMES  # the bounds below are keyed by the registry's names


def _ring_limits(rule, n, d, alpha=2.0):
    return [LIMIT // 2] + _rule_limits(rule, n, d, alpha)  # any difference of two inputs


def _rule_limits(rule, n, d, alpha):
    L = LIMIT
    n, d = max(int(n), 1), max(int(d), 1)
    sums = L // n
    prod = math.isqrt(L // d)
    weighted = (L >> 16) // n
    if rule == "fedavg":
        return [sums]
    if rule == "median":
        return [L // 2]
    if rule == "trimmed_mean":
        return [sums]
    if rule == "norm_clip":
        return [sums, prod, weighted]
    if rule in ("krum", "multi_krum", "bulyan"):
        return [sums, prod, math.isqrt((L << 16) // (8 * n * d))]
    if rule in ("fltrust", "flame"):
        return [sums, prod, weighted]
    if rule == "auror":
        return [sums, math.isqrt(L // (2 * d)), weighted, int(L // (512 * float(alpha) * d))]
    registry.get(rule)  # an unknown name: ValueError naming the rules
    raise NotImplementedError(f"no input bound for the registered rule {rule!r}: add its constraints here")


def input_bound(rule, n, d, alpha=2.0, frac_bits=FRAC_BITS):
    """The largest power-of-two coordinate bound B (real units) for which
    ``rule`` on n clients and d coordinates cannot wrap (see the module
    docstring for each rule's constraints). ``alpha``: AUROR's threshold."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if isinstance(d, bool) or not isinstance(d, int) or d < 0:
        raise ValueError(f"d must be an int >= 0, got {d!r}")
    X = min(_ring_limits(rule, n, d, alpha))
    if X < 1:
        raise ValueError(f"{rule} on n={n}, d={d} cannot bound its intermediates below 2^62")
    return 2.0 ** (X.bit_length() - 1 - frac_bits)


def compare_bits(bound, rule=None, n=None, d=None, frac_bits=FRAC_BITS, alpha=2.0):
    """The comparison width (bits) for order statistics on inputs checked
    against the coordinate bound ``bound`` (real units, as given to
    :func:`validate`): ``bit_length(2 X) + 1`` with ``X = ceil(bound 2^frac_bits)
    + 2`` ring units (2 units of slack for a truncation's rounding, e.g. the
    norm scaling after a clamp), so that every difference of two checked
    inputs lies in ``[-2^(bits-1), 2^(bits-1))`` (see
    :mod:`pgkernels.protocols.order`, "Reduced width"). Capped at 64; e.g.
    bound 8 -> 22 bits (c in 32-bit words), 2^8 -> 27.

    ``bound`` must be a positive finite number and, with ``rule`` (and n, d),
    at most that rule's :func:`input_bound`: TypeError/ValueError naming
    ``bound`` otherwise. Use it only for inputs that were checked on the
    shares: a value outside the bound makes the order meaningless.
    """
    if isinstance(bound, bool) or not isinstance(bound, (int, float)):
        raise TypeError(f"bound must be a positive finite number, got {type(bound).__name__}")
    if not (bound > 0 and math.isfinite(bound)):
        raise ValueError(f"bound must be a positive finite number, got {bound!r}")
    if rule is not None:
        limit = input_bound(rule, n, d, alpha=alpha, frac_bits=frac_bits)
        if bound > limit:
            raise ValueError(f"bound must be at most {rule}'s input bound {limit} on n={n}, d={d} "
                             f"(larger inputs could wrap around mod 2^64), got {bound!r}")
    X = math.ceil(bound * 2 ** frac_bits) + 2
    return min(64, (2 * X).bit_length() + 1)


def max_norm_limit(frac_bits=FRAC_BITS):
    """The largest ``max_norm`` a check can take (its square at twice the scale within 2^62)."""
    return math.sqrt(LIMIT) / 2 ** frac_bits


def validate(U, rule, bound=None, max_norm=None, policy="drop", **rule_kwargs):
    """Check the shared (n, d) updates U before ``rule`` runs on them.

    ``bound``: the coordinate bound (default and maximum: :func:`input_bound`
    for the rule on U's size; a larger one is refused, as the rule could then
    wrap). ``max_norm``: optional L2 bound per client. ``policy``: ``"drop"``
    returns ``(updates of the valid clients, valid)`` and reveals ``valid``
    (one bit per client); ``"clamp"`` returns ``(clamped updates, None)`` and
    reveals nothing. ``rule_kwargs``: the rule's own arguments (AUROR's
    ``alpha`` enters its bound; the others are ignored).
    """
    n, d = U.size()
    bound = _checked_bound(rule, n, d, bound, rule_kwargs.get("alpha", 2.0))
    if max_norm is not None and not (isinstance(max_norm, (int, float)) and 0 < max_norm <= max_norm_limit()):
        raise ValueError(f"max_norm must be in (0, {max_norm_limit():.6g}], got {max_norm!r}")
    return check_rows(U, bound, max_norm=max_norm, policy=policy)


def _checked_bound(rule, n, d, bound, alpha):
    limit = input_bound(rule, n, d, alpha=alpha)
    if bound is None:
        return limit
    if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not 0 < bound <= limit:
        raise ValueError(f"bound must be in (0, {limit}] for {rule} on n={n}, d={d} (larger inputs could "
                         f"wrap around mod 2^64), got {bound!r}")
    return bound


def validate_plain(U, rule, bound=None, max_norm=None, policy="drop", alpha=2.0):
    """The plaintext counterpart of :func:`validate` on a float (n, d) array, with
    the same decisions on the fixed-point grid (the federated lab's plaintext
    backend uses it, so both backends drop the same clients)."""
    import numpy as np

    from . import reference as R

    U = np.asarray(U, dtype=np.float64)
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    n, d = U.shape
    bound = _checked_bound(rule, n, d, bound, alpha)
    if policy == "clamp":
        return R.clamp_rows(U, bound, max_norm), None
    valid = R.valid_rows(U, bound, max_norm)
    return U[valid], valid


def after_drop(rule, kwargs, dropped):
    """A rule's keyword arguments once ``dropped`` clients were found invalid:
    the parameters that count clients (the registry's ``counts_clients``:
    Multi-Krum's ``to_keep``) shrink by as many (never below 1)."""
    kw = dict(kwargs)
    for k in registry.get(rule).counts_clients if dropped else ():
        if isinstance(kw.get(k), int) and not isinstance(kw[k], bool):
            kw[k] = max(1, kw[k] - dropped)
    return kw


def min_clients(rule, num_malicious=0):
    """The fewest clients ``rule`` accepts with ``num_malicious`` = f (from the registry)."""
    return registry.get(rule).min_clients(num_malicious)


__all__ = ["POLICIES", "RULES", "after_drop", "compare_bits", "input_bound", "max_norm_limit", "min_clients",
           "validate", "validate_plain"]
