"""The building blocks of the rules: pgkernels' stated protocol API.

The defenses (:mod:`pgkernels.defenses`) and any other code above
``protocols/`` build their protocols from the names in ``__all__`` here (plus
the public functions of :mod:`.compare`, :mod:`.order`, :mod:`.linalg`,
:mod:`.roots`, :mod:`.truncation` and :mod:`.validity`); nothing above
``protocols/`` reaches into a protocol module's private names.

Conventions. A *share* is this party's int64 tensor of an arithmetic sharing
mod 2^64 (``shares.flat_share(x)`` of an MPCTensor ``x``); a *bit share* is a
0/1 arithmetic sharing with scale 1, as the comparisons return. Costs are per
party and per other party (multiply bytes by ``p - 1`` for p parties; 2
parties: as written), with the dealer's material on top (see
:mod:`pgkernels.runtime.dealer`). Every block reveals nothing: the only values
it opens are one-time padded by dealer randomness.

Blocks:

* share plumbing (local, 0 rounds): :func:`check_mpc`, :func:`check_public`,
  :func:`check_operand`, :func:`flat_share`, :func:`raw_share`, :func:`like`,
  :func:`like_shape`, :func:`frac_bits`, :func:`to_mpc`, :func:`mpc_module`,
  :func:`public_share`; and :func:`decode` (an opening: reveals x);
* :func:`compare_shares` -- one batched comparison (``[t >= 0]``,
  ``[t < 0]``, ``[t == 0]``, ``[t != 0]``) on k bits, optionally multiplied
  into payload rows: ``2 + ceil(log2 ceil((k-1)/4))`` rounds (6 at k = 64),
  :func:`compare_cost` bytes per element (13.25 at k = 64 without payloads,
  plus 8 per payload row);
* :func:`mux_shares` -- bit * value rows (bit injection): 1 round, 8 bytes per
  value and 1 bit per element;
* :func:`ranks` -- stable ranks of the columns of an (n, d) share matrix:
  ``n (n - 1) / 2 d`` comparisons in one batch, 6 rounds;
* :func:`network_rows` and :func:`compare_exchange` -- a (pruned) Batcher
  network run in place on share columns: 6 rounds per layer, ``13.25 + 8 E``
  bytes per comparator and column with E payload rows;
* :func:`rank_bits` -- the comparison width for small integers such as ranks;
* :func:`select_rows` -- ``sum_i b_i U_i`` for bit shares b: 1 round, 8.125
  bytes per entry of U;
* :func:`weighted_sum` -- ``sum_i w_i U_i`` for shared weights: one Beaver
  product and d exact truncations (2 rounds).
"""

import torch

from .. import ops
from ..runtime import comm as _comm
from .compare import EQ, LT, MUX, compare_shares, mux_shares
from .cost import compare_cost
from .shares import (check_mpc, check_operand, check_public, decode, flat_share, frac_bits, like, like_shape,
                     mpc_module, raw_share, to_mpc)
from .truncation import exact


def public_share(t):
    """A public int64 tensor as a trivial sharing: party 0 holds ``t``, the
    others zeros. Local (0 rounds, 0 bytes); t is public, so nothing is revealed."""
    t = _on_session_device(t)
    return t if _comm.rank() == 0 else torch.zeros_like(t)


def _on_session_device(t):
    """A public constant moved to where the session's shares live (a no-op on the CPU)."""
    from ..runtime.device import session_device

    dev = session_device()
    return t if t.device == dev else t.to(dev)


def rank_bits(n):
    """Comparison width (bits) that holds every integer in ``[-n, n]``: ranks,
    counts and their differences with public integers up to n. Equality tests
    and comparisons on these bits take 2 rounds for ``n < 8``, 3 below 128 and
    4 from 128 (see :func:`compare_cost`)."""
    return max(2, int(n).bit_length() + 1)


def network_rows(n, outputs=None):
    """Rows ``(layer, i, j)`` (int64 (C, 3)) of Batcher's odd-even merge sort on
    n wires, pruned to the comparators that reach the wires ``outputs`` (all
    wires when None). Public and local: the network's shape depends only on n
    and the wanted positions. Depth ``t (t + 1) / 2`` for ``t = ceil(log2 n)``,
    about ``n t^2 / 4`` comparators unpruned."""
    return ops.sorting_network(n, list(outputs) if outputs is not None else [])


def compare_exchange(X, extra, rows, descending=False, bits=64):
    """Run the comparator network ``rows`` (from :func:`network_rows`) in place
    on the share columns of X (n, d), permuting the payload share matrices
    ``extra[k]`` (n, d) alike (e.g. indices, or the values a key sorts).

    Each layer is one batched comparison whose swap bit ``s = [a > b]`` (or
    ``[a < b]`` descending) is multiplied, in the comparison's own last round,
    into ``a - b`` and into every payload difference: 6 rounds per layer and,
    per comparator and column, ``13.25 + 8 len(extra)`` bytes (2 parties; the
    value row's opening follows from the comparison's own). Asks the dealer for
    the next layer's material while a layer runs. Reveals nothing. Equal values
    may swap their payloads (the network is not stable).

    ``bits``: the comparison width; the caller guarantees every difference of
    two values of a column in ``[-2^(bits-1), 2^(bits-1))`` (ring units; see
    :func:`compare_shares`), else the order is meaningless. Below 64 bits the
    value row's free opening does not hold (it needs the 64-bit mask), so it
    is opened like a payload (8 bytes more per comparator), and a layer takes
    ``2 + ceil(log2 ceil((bits - 1) / 4))`` rounds.
    """
    if rows.numel() == 0:
        return
    d = X.shape[1]
    layer_ids = rows[:, 0]
    width = torch.bincount(layer_ids).tolist()
    P = 1 + len(extra)
    for layer in range(len(width)):
        sel = rows[layer_ids == layer]
        i, j = sel[:, 1].to(X.device), sel[:, 2].to(X.device)  # the network is built on the host
        A, B = X[i], X[j]
        diff = (A - B) if descending else (B - A)  # swap iff it is negative
        pay = [A - B] + [e[i] - e[j] for e in extra]
        # payload row 0, a - b, is -diff (ascending) or diff: its opening is free
        # at 64 bits (its mask is the comparison's own r; below, r has k bits)
        sign = (1 if descending else -1) if bits == 64 else 0
        nxt = (width[layer + 1] * d, bits, LT, P, sign) if layer + 1 < len(width) else None
        out = compare_shares(diff.reshape(-1), LT, bits, negate=True,
                             payloads=torch.stack(pay).reshape(len(pay), -1), prefetch=nxt,
                             self_sign=sign)
        out = out.view(len(pay), len(i), d)
        X[i] = A - out[0]
        X[j] = B + out[0]
        for k, e in enumerate(extra):
            ei, ej = e[i], e[j]
            e[i] = ei - out[1 + k]
            e[j] = ej + out[1 + k]


def ranks(X, descending=False, prefetch=None, bits=64):
    """Stable ranks (n, d) of the columns of the share matrix X (n, d): shares
    with scale 1 (rank 0 = smallest, or largest with ``descending``; equal
    values rank in index order, as ``torch.sort(stable=True)``).

    All ``n (n - 1) / 2`` pairwise comparisons of every column in one batch: 6
    rounds and 13.25 bytes per pair and column (2 parties). ``prefetch``: the
    caller's next :func:`compare_shares` parameters (see there). ``bits``: the
    comparison width, for columns whose pairwise differences the caller
    guarantees in ``[-2^(bits-1), 2^(bits-1))`` ring units (else the ranks are
    meaningless): 5 rounds and 6.4 bytes per pair at 32 bits. Reveals nothing.
    """
    n, d = X.shape
    rank = public_share(torch.arange(n, dtype=torch.long).view(n, 1).expand(n, d).contiguous())
    if n < 2:
        return rank
    iu, ju = torch.triu_indices(n, n, 1, device=X.device)
    # ascending: c = [x_j < x_i] adds to rank_i; descending: c = [x_i < x_j]
    diff = (X[iu] - X[ju]) if descending else (X[ju] - X[iu])
    c = compare_shares(diff.reshape(-1), LT, bits, negate=True, prefetch=prefetch).view(-1, d)
    rank.index_add_(0, iu, c)
    rank.index_add_(0, ju, -c)
    return rank


def select_rows(bits, U):
    """``sum_i bits_i * U_i`` (d,) for bit shares ``bits`` (n,) and a shared
    (n, d) MPCTensor U, with U's encoding: a one-hot picks a row, a 0/1 vector
    sums the chosen rows. One round of bit injection (:func:`mux_shares` on n d
    elements: 8.125 bytes each, 2 parties). Reveals nothing."""
    n, d = U.size()
    flat_bits = bits.reshape(n, 1).expand(n, d).reshape(-1)
    prod = mux_shares(flat_bits, flat_share(U).view(1, -1)).view(n, d)
    return like_shape(prod.sum(0), U.encoder.scale)


def weighted_sum(w, U):
    """``sum_i w_i U_i`` (d,) for shared weights w (n,) and rows U (n, d),
    MPCTensors with the same encoding. One Beaver matrix product (1 round,
    opening the masked w and U: ``8 (n + n d)`` bytes) and d truncations by the
    dealer-assisted exact division of :mod:`.truncation` (1 round, 8 bytes
    each; weighted sums of client data can be large), rather than n d
    truncated products. Reveals nothing."""
    with exact():
        return w.unsqueeze(0).matmul(U).view(U.size(1))


__all__ = [
    "EQ", "LT", "MUX", "check_mpc", "check_operand", "check_public", "compare_cost", "compare_exchange",
    "compare_shares", "decode", "flat_share", "frac_bits", "like", "like_shape", "mpc_module", "mux_shares",
    "network_rows", "public_share", "rank_bits", "ranks", "raw_share", "select_rows", "to_mpc", "weighted_sum",
]
