"""Cost model that picks a protocol per call: rounds, bytes and local work.

    time = rounds * latency + (bytes_sent_per_party + online_dealer_bytes) / bandwidth
           + elements * compute

Rounds include the online round trip to the dealer (:data:`DEALER_ROUNDS`):
a chain of comparisons (a sorting network's layers, a tournament's levels,
ranks then an equality test) asks for its first comparison's material when it
starts and for each next one while the previous one runs (prefetch), so a
chain pays one dealer round trip, not one per comparison.

``latency`` is the cost of one round: in an exchange every party sends at
once and waits for the others' words, so a round costs one *one-way* latency
(plus the local overheads of a round). The dealer's round trip (request out,
answer back) is two one-way latencies, but a comparison awaits the answer
only after its first opening, which runs meanwhile: it adds one round's worth
(:data:`DEALER_ROUNDS` = 1), as the meter counts it.

The defaults were measured on this project's reference machine (2 cores,
parties over loopback TCP): a round of about 0.3 ms, about 1 GB/s per
direction, and about 60 ns of local work per compared element (8 ns per
payload value). For a WAN, set for example ``latency=0.05`` (50 ms one way)
and ``bandwidth=1.25e8`` (1 Gbit/s), through :func:`configure` (or
:func:`configure_link`, which adds the loopback costs that a simulated link,
:mod:`pgkernels.runtime.link`, runs on top of) or the environment variables
``PGKERNELS_LATENCY_S`` and ``PGKERNELS_BANDWIDTH_BPS``; every
``method=None`` call then re-plans with them. ``bench/cost_check.py`` checks
the model against the simulated link.

The sign test has two methods (:func:`choose_ltz`): the comparison tree (7
rounds with the dealer round trip, 13.25 bytes per element) and, for 2
parties, FSS (2 rounds, 8 bytes, but about 2 us of dealer key generation and
1.5 KB of keys per element on the critical path when the keys are asked for
online): FSS wins when latency dominates; with the default constants below
about 400 elements at 0.3 ms per round, 1.2e4 at 10 ms, 6e4 at 50 ms.
"""

import dataclasses
import functools
import math
import os

from .. import ops


# One round and the bandwidth over loopback on the reference machine.
LOOPBACK_LATENCY = 3e-4
LOOPBACK_BANDWIDTH = 1e9


@dataclasses.dataclass
class CostModel:
    latency: float = float(os.environ.get("PGKERNELS_LATENCY_S", LOOPBACK_LATENCY))
    bandwidth: float = float(os.environ.get("PGKERNELS_BANDWIDTH_BPS", LOOPBACK_BANDWIDTH))
    compare_s: float = 6e-8
    payload_s: float = 8e-9
    # FSS comparison, per element and DCF level (k - 1 levels for k-bit
    # values): the dealer's key generation (6 AES blocks) and a party's
    # evaluation (2 AES blocks), measured on VAES at one core.
    fss_gen_s: float = 3e-8
    fss_eval_s: float = 1e-8

    def time(self, rounds, nbytes, compares, payloads, dealer_bytes=0.0):
        """``dealer_bytes``: the corrections an online dealer request sends
        one party (they cross that party's link from the dealer before its
        protocol can go on; prefetched ones travel during earlier rounds)."""
        return (rounds * self.latency + (nbytes + dealer_bytes) / self.bandwidth
                + compares * self.compare_s + payloads * self.payload_s)


MODEL = CostModel()


def configure(latency=None, bandwidth=None, compare_s=None, payload_s=None, fss_gen_s=None, fss_eval_s=None):
    """Set the cost model's constants (seconds, bytes per second)."""
    for name, val in (("latency", latency), ("bandwidth", bandwidth), ("compare_s", compare_s),
                      ("payload_s", payload_s), ("fss_gen_s", fss_gen_s), ("fss_eval_s", fss_eval_s)):
        if val is not None:
            if not (isinstance(val, (int, float)) and val > 0 and math.isfinite(val)):
                raise ValueError(f"{name} must be a positive number, got {val!r}")
            setattr(MODEL, name, float(val))
    return MODEL


def link_constants(latency, bandwidth=None):
    """(round cost, bandwidth) of a simulated link of one-way ``latency`` and
    ``bandwidth`` (bytes/s, None: unlimited) on top of loopback: the link's
    latency plus a loopback round, and both bandwidths in series."""
    bw = LOOPBACK_BANDWIDTH if bandwidth is None else 1.0 / (1.0 / bandwidth + 1.0 / LOOPBACK_BANDWIDTH)
    return LOOPBACK_LATENCY + latency, bw


def configure_link(latency, bandwidth=None):
    """:func:`configure` for a session over a simulated link (see :func:`link_constants`)."""
    lat, bw = link_constants(latency, bandwidth)
    return configure(latency=lat, bandwidth=bw)


# A dealer request made when the op needs it: one round trip (headers out,
# correction back), counted by pgkernels.runtime.comm as a round.
DEALER_ROUNDS = 1


@functools.lru_cache(maxsize=None)
def compare_cost(bits, mode, payloads, self_sign=0, online=True):
    """(rounds, bytes sent per element per peer) of one comparison (mode LT or
    EQ) on ``bits`` bits with ``payloads`` values multiplied into its bit.

    Rounds: ``2 + levels`` between the parties, plus :data:`DEALER_ROUNDS`
    when its material is asked for ``online`` (not prefetched during the
    previous comparison): 7 at 64 bits online, 6 prefetched."""
    lay = ops.cmp_layout(64, bits, mode, payloads, self_sign)  # n = 64: one word per bit plane
    open_planes = lay.open[:lay.levels]  # bits per element opened at each tree level
    c_bytes = next(w for w in (1, 2, 4, 8) if bits <= 8 * w)
    nbytes = c_bytes + 8 * (payloads - (1 if self_sign else 0)) + (sum(open_planes) + 1) / 8
    return 2 + lay.levels + (DEALER_ROUNDS if online else 0), nbytes


@functools.lru_cache(maxsize=None)
def fss_cost(bits, online=True):
    """(rounds, bytes sent per element per peer, key bytes per element the
    dealer sends each party) of the FSS sign test on ``bits`` bits (2 parties).

    Rounds: one opening of ``x + r``, plus :data:`DEALER_ROUNDS` when the
    keys are asked for ``online``: 2 online, 1 prefetched. Key bytes:
    ``8 * dcf_cw_words(bits - 1)``, 1520 at 64 bits (the party's 16-byte root
    seed comes from its PRG stream, not from the dealer)."""
    c_bytes = next(w for w in (1, 2, 4, 8) if bits <= 8 * w)
    return 1 + (DEALER_ROUNDS if online else 0), c_bytes, 8 * ops.dcf_cw_words(bits - 1)


LTZ_METHODS = ("tree", "fss")


def ltz_seconds(method, n, bits=64, parties=2, model=None, online=True, relu=False):
    """Predicted time of one sign test on n elements by ``method``: "tree"
    (the dealer-assisted comparison tree, any number of parties) or "fss" (2
    parties; with ``online`` the dealer's key generation and key transfer sit
    on the critical path, as they do when the keys are not prefetched).
    ``relu``: the ReLU built on it (the tree multiplies x in for free, FSS
    adds a bit-injection round of 8.125 bytes per element)."""
    m = model or MODEL
    if method == "fss":
        rounds, nbytes, key_bytes = fss_cost(bits, online)
        if relu:
            rounds, nbytes = rounds + 1, nbytes + 8.125
        levels = bits - 1
        t = m.time(rounds, nbytes * n * (parties - 1), 0, 0) + n * levels * m.fss_eval_s
        if online:
            t += n * levels * m.fss_gen_s + n * key_bytes / m.bandwidth
        return t
    rounds, nbytes = compare_cost(bits, 0, 0, 0, online)
    return m.time(rounds, nbytes * n * (parties - 1), n, 0)


def choose_ltz(n, bits=64, parties=2, method=None, model=None, relu=False):
    """The sign-test method for n elements: ``method`` if given (ValueError
    for an unknown one, or "fss" with other than 2 parties), else the faster
    of "tree" and (2 parties only) "fss" under the cost model: FSS when
    latency dominates (few elements or a slow link), the tree when the
    dealer's keys (1.5 KB per element at 64 bits) would dominate."""
    if method is not None:
        if method not in LTZ_METHODS:
            raise ValueError(f"method must be one of {list(LTZ_METHODS)} or None, got {method!r}")
        if method == "fss" and parties != 2:
            raise ValueError(f"method='fss' needs exactly 2 parties, the session has {parties}")
        return method
    if parties != 2 or n == 0:
        return "tree"
    return min(LTZ_METHODS, key=lambda meth: ltz_seconds(meth, n, bits, parties, model, relu=relu))


@functools.lru_cache(maxsize=None)
def dealer_bytes(bits, mode, payloads, self_sign=0):
    """Bytes per element the dealer sends the corrected party for one
    comparison (40.4 for a 64-bit LT without payloads)."""
    n = 64 * 1024
    lay = ops.cmp_layout(n, bits, mode, payloads, self_sign)
    return 8 * (lay.total - lay.stream) / n


# Dealer bytes per value of a division by a public integer (truncation.div's
# request: the quotient and top-bit words of its mask).
DIV_DEALER_BYTES = 16


# From this round cost on (a WAN), a large comparison's dealer request is split
# into one per party (pgkernels.protocols.compare): its corrections reach the
# k parties on k links at once.
SPLIT_MIN_LATENCY = 1e-3


# Largest single batched comparison a plan may issue: its correlated randomness
# takes about 55 bytes per element and payload, so 2^25 elements is ~2 GB.
MAX_BATCH = 1 << 25


@dataclasses.dataclass
class Plan:
    method: str
    rounds: int
    bytes_per_column: float
    compares_per_column: int
    payloads_per_column: int
    widest_per_column: int = 0  # elements (comparisons + payloads) of its widest call
    dealer_bytes_per_column: float = 0.0  # online dealer corrections to one party

    def seconds(self, columns, parties=2, model=None):
        m = model or MODEL
        dealer = self.dealer_bytes_per_column * columns
        if m.latency >= SPLIT_MIN_LATENCY:
            dealer /= parties  # split per party (approximately: small batches are not)
        return m.time(self.rounds, self.bytes_per_column * columns * (parties - 1),
                      self.compares_per_column * columns, self.payloads_per_column * columns, dealer)


def choose(plans, columns, parties=2, method=None):
    """The plan named ``method``, or the cheapest one under the cost model."""
    if method is not None:
        for p in plans:
            if p.method == method:
                return p
        raise ValueError(f"method must be one of {[p.method for p in plans]}, got {method!r}")
    fits = [p for p in plans if p.widest_per_column * columns <= MAX_BATCH] or plans
    return min(fits, key=lambda p: p.seconds(columns, parties))
